//! The routing core of one app: channels with their subscribers and presence, wildcard
//! subscriptions, and the peerId → connections index for directs and kicks.
//!
//! Ordering: every frame for a connection goes through its [`Outbox`] and each sender's
//! frames are pushed synchronously while its request is processed, so per-sender →
//! per-recipient order holds (ORD-5). A subscribe registers, pushes its ack and snapshot
//! and announces the join while holding the channel lock, and a publish pushes to every
//! recipient under the same lock, so the snapshot precedes any message through the new
//! subscription (ORD-4) and nothing arrives after an unsubscribe's ack (UNSUB-5).
//!
//! Lock order: channel map (never held while taking another lock) → channel → wildcard
//! list; the peers index is taken alone.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use serde_json::value::RawValue;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::faults::{Fault, FaultSet};
use super::inject::Injector;
use super::outbox::{Outbox, Pushed};
use super::state::{Scope, Shared};
use crate::proto::frame::message_text;
use crate::proto::limits::is_reserved;
use crate::proto::pattern::Pattern;

mod faulted;

/// The shared half of one WebSocket connection: identity and outbound queue.
#[derive(Debug)]
pub struct Conn {
    pub id: u64,
    pub peer_id: Arc<str>,
    /// `{"peerId":…,"metadata":…}`, this connection's presence entry (PFR-1/2).
    pub entry: Arc<str>,
    /// The `peerMetadata` claim as compact JSON (MSG-2, SEND-6).
    pub peer_metadata: Option<Box<RawValue>>,
    /// Holds the `presence` action: receives presence frames (AUTHZ-6).
    pub presence: bool,
    pub out: Outbox,
}

impl Conn {
    pub fn new(
        id: u64,
        peer_id: &str,
        peer_metadata: Option<Box<RawValue>>,
        presence: bool,
    ) -> Conn {
        let entry = entry_text(peer_id, peer_metadata.as_deref());
        Conn {
            id,
            peer_id: peer_id.into(),
            entry: entry.into(),
            peer_metadata,
            presence,
            out: Outbox::default(),
        }
    }
}

/// A presence entry's JSON text.
pub fn entry_text(peer_id: &str, metadata: Option<&RawValue>) -> String {
    let mut s = String::with_capacity(16 + peer_id.len());
    s.push_str(r#"{"peerId":"#);
    s.push_str(&json_str(peer_id));
    if let Some(m) = metadata {
        s.push_str(r#","metadata":"#);
        s.push_str(m.get());
    }
    s.push('}');
    s
}

/// A string as a JSON string literal.
pub fn json_str(s: &str) -> String {
    // Serializing a &str cannot fail.
    serde_json::to_string(s).expect("strings always serialize")
}

fn presence_text(channel_json: &str, joined: &[&str], left: Option<&[&str]>) -> Utf8Bytes {
    let len = joined.iter().map(|e| e.len() + 1).sum::<usize>()
        + left.map_or(4, |l| l.iter().map(|e| e.len() + 1).sum());
    let mut s = String::with_capacity(48 + channel_json.len() + len);
    s.push_str(r#"{"type":"presence","channel":"#);
    s.push_str(channel_json);
    s.push_str(r#","joined":["#);
    s.push_str(&joined.join(","));
    s.push_str(r#"],"left":"#);
    match left {
        Some(l) => {
            s.push('[');
            s.push_str(&l.join(","));
            s.push(']');
        }
        None => s.push_str("null"),
    }
    s.push('}');
    s.into()
}

/// Pushes one frame, counting a slow-consumer close if it overflows the queue.
pub fn push(sh: &Shared, conn: &Conn, text: Utf8Bytes) {
    push_not_before(sh, conn, text, None);
}

/// [`push`], not written before `due` (an injected capacity's pace).
fn push_not_before(sh: &Shared, conn: &Conn, text: Utf8Bytes, due: Option<Instant>) {
    let text = if sh.faults.is_empty() {
        text
    } else {
        match super::fault_text::outbound(sh.faults, text) {
            Some(t) => t,
            None => return,
        }
    };
    let due = sh.variant_delay().max(due);
    if conn.out.push_due(text, due, sh.limits.queue) == Pushed::Overflow {
        count_overflow(sh, conn);
    }
}

/// `message` copies queued by one publish, added to the server's `copies` stat when it
/// goes out of scope.
struct CopiesQueued<'a> {
    sh: &'a Shared,
    n: std::cell::Cell<u64>,
}

impl<'a> CopiesQueued<'a> {
    fn new(sh: &'a Shared) -> Self {
        CopiesQueued {
            sh,
            n: std::cell::Cell::new(0),
        }
    }
    fn add_one(&self) {
        self.n.set(self.n.get() + 1);
    }
}

impl Drop for CopiesQueued<'_> {
    fn drop(&mut self) {
        let n = self.n.get();
        if n > 0 {
            self.sh
                .stats
                .copies
                .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

fn count_overflow(sh: &Shared, conn: &Conn) {
    sh.stats
        .slow_consumer_closes
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tracing::debug!(conn = conn.id, peer = %conn.peer_id, "outbound queue full: closing 1013");
}

#[derive(Debug)]
struct Sub {
    conn: Arc<Conn>,
    include_meta: bool,
    /// Left by the `unsubscribe-keeps-delivering` fault: acked and announced as left, but
    /// still receives messages (never presence).
    ghost: bool,
}

#[derive(Debug)]
struct Present {
    /// Subscribed connections of this peer (PRES-1).
    count: u32,
    /// Position in `order` (REST-22).
    seq: u64,
    /// The entry the peer was announced with (PRES-7).
    entry: Arc<str>,
}

#[derive(Debug, Default)]
struct ChannelInner {
    /// Set when the channel was removed from the map (CFG-8); holders must look again.
    dead: bool,
    subs: HashMap<u64, Sub>,
    present: HashMap<Arc<str>, Present>,
    order: BTreeMap<u64, Arc<str>>,
    next_seq: u64,
}

#[derive(Debug)]
struct Channel {
    name_json: Box<str>,
    inner: Mutex<ChannelInner>,
}

impl Channel {
    fn lock(&self) -> std::sync::MutexGuard<'_, ChannelInner> {
        // Channel state is updated in whole steps; a panic cannot leave it half-done.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Debug)]
struct WildSub {
    conn: Arc<Conn>,
    pattern: Box<str>,
    matcher: Pattern,
    include_meta: bool,
    scope: Arc<Scope>,
}

/// Why a subscription ends (selects the fault switch that suppresses its leave delta).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leave {
    Unsubscribe,
    Disconnect,
}

/// One app's routing state.
#[derive(Debug, Default)]
pub struct Hub {
    channels: Mutex<HashMap<Arc<str>, Arc<Channel>>>,
    wildcards: RwLock<Vec<WildSub>>,
    peers: Mutex<HashMap<Arc<str>, Vec<Arc<Conn>>>>,
    /// Set by the `over-quota-stops-delivery` fault once the app refused a message.
    pub frozen: std::sync::atomic::AtomicBool,
}

fn entry_for(f: FaultSet, peer_id: &str, entry: &Arc<str>) -> Arc<str> {
    if f.has(Fault::PresenceDropMetadata) {
        entry_text(peer_id, None).into()
    } else {
        entry.clone()
    }
}

impl Hub {
    /// The `over-quota-stops-delivery` fault holds: deliver nothing (bitmask first, so
    /// the clean server never loads the flag).
    fn frozen(&self, f: FaultSet) -> bool {
        f.has(Fault::OverQuotaStopsDelivery)
            && self.frozen.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn channels(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Arc<Channel>>> {
        self.channels.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn peers(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Vec<Arc<Conn>>>> {
        self.peers.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wild_read(&self) -> std::sync::RwLockReadGuard<'_, Vec<WildSub>> {
        self.wildcards.read().unwrap_or_else(|e| e.into_inner())
    }

    fn wild_write(&self) -> std::sync::RwLockWriteGuard<'_, Vec<WildSub>> {
        self.wildcards.write().unwrap_or_else(|e| e.into_inner())
    }

    fn channel_or_create(&self, name: &str) -> Arc<Channel> {
        let mut map = self.channels();
        if let Some(ch) = map.get(name) {
            return ch.clone();
        }
        let ch = Arc::new(Channel {
            name_json: json_str(name).into(),
            inner: Mutex::new(ChannelInner::default()),
        });
        map.insert(name.into(), ch.clone());
        ch
    }

    fn channel(&self, name: &str) -> Option<Arc<Channel>> {
        self.channels().get(name).cloned()
    }

    /// Removes `ch` from the map once it has no subscriber (CFG-8). Called with the
    /// channel locked; the map lock is never held while a channel lock is taken.
    fn forget_if_empty(&self, name: &str, ch: &Arc<Channel>, inner: &mut ChannelInner) {
        if inner.subs.is_empty() {
            inner.dead = true;
            let mut map = self.channels();
            if map.get(name).is_some_and(|c| Arc::ptr_eq(c, ch)) {
                map.remove(name);
            }
        }
    }

    /// A connection was admitted: make it reachable by `send` and kicks.
    pub fn register(&self, conn: &Arc<Conn>) {
        self.peers()
            .entry(conn.peer_id.clone())
            .or_default()
            .push(conn.clone());
    }

    /// The connection is closing: no more directs or kicks reach it.
    pub fn unregister(&self, conn: &Conn) {
        let mut peers = self.peers();
        if let Some(list) = peers.get_mut(&conn.peer_id) {
            list.retain(|c| c.id != conn.id);
            if list.is_empty() {
                peers.remove(&conn.peer_id);
            }
        }
    }

    pub fn connection_count(&self) -> usize {
        self.peers().values().map(Vec::len).sum()
    }

    /// Asks every connection of `peer_id` to close with `code`; returns how many.
    pub fn close_peer(&self, peer_id: &str, code: u16) -> usize {
        let peers = self.peers();
        let list = peers.get(peer_id).map(Vec::as_slice).unwrap_or_default();
        for c in list {
            c.out.request_close(code);
        }
        list.len()
    }

    /// Asks every connection of the app to close with `code`.
    pub fn close_all(&self, code: u16) -> usize {
        let peers = self.peers();
        let mut n = 0;
        for c in peers.values().flatten() {
            c.out.request_close(code);
            n += 1;
        }
        n
    }

    /// Subscribes `conn` to the concrete channel `name` (SUB-5…SUB-8): registers, pushes
    /// the ack (if any) and the snapshot, and announces a join on the 0→1 transition.
    pub fn subscribe(
        &self,
        sh: &Shared,
        conn: &Arc<Conn>,
        name: &str,
        include_meta: bool,
        ack: Option<Utf8Bytes>,
    ) {
        let f = sh.faults;
        loop {
            let ch = self.channel_or_create(name);
            let mut inner = ch.lock();
            if inner.dead {
                continue;
            }
            let inner = &mut *inner;
            let mut again = false;
            let joined = match inner.subs.get_mut(&conn.id) {
                Some(sub) if !sub.ghost => {
                    // SUB-7/8: replace the flag, fresh snapshot, no new announcement.
                    sub.include_meta = include_meta;
                    again = true;
                    f.has(Fault::ResubscribeAnnounces)
                }
                _ => {
                    inner.subs.insert(
                        conn.id,
                        Sub {
                            conn: conn.clone(),
                            include_meta,
                            ghost: false,
                        },
                    );
                    let announce = match inner.present.get_mut(&conn.peer_id) {
                        Some(p) => {
                            p.count += 1;
                            false
                        }
                        None => {
                            let seq = inner.next_seq;
                            inner.next_seq += 1;
                            inner.present.insert(
                                conn.peer_id.clone(),
                                Present {
                                    count: 1,
                                    seq,
                                    entry: conn.entry.clone(),
                                },
                            );
                            inner.order.insert(seq, conn.peer_id.clone());
                            true
                        }
                    };
                    announce || f.has(Fault::PresencePerConnection)
                }
            };
            let snapshot =
                (conn.presence && !(again && f.has(Fault::ResubscribeNoSnapshot))).then(|| {
                    let entries: Vec<Arc<str>> = inner
                        .order
                        .values()
                        .filter(|p| f.has(Fault::SnapshotIncludesSelf) || **p != conn.peer_id)
                        .filter_map(|p| inner.present.get(p))
                        .map(|p| entry_for(f, &conn.peer_id, &p.entry))
                        .collect();
                    let refs: Vec<&str> = entries.iter().map(|e| &**e).collect();
                    (!(entries.is_empty() && f.has(Fault::SnapshotMissingEmpty)))
                        .then(|| presence_text(&ch.name_json, &refs, Some(&[])))
                });
            let snapshot = snapshot.flatten();
            if f.has(Fault::SnapshotBeforeAck) {
                snapshot
                    .into_iter()
                    .chain(ack)
                    .for_each(|t| push(sh, conn, t));
            } else {
                ack.into_iter().for_each(|t| push(sh, conn, t));
                if f.has(Fault::SelfJoinBeforeSnapshot) && snapshot.is_some() {
                    push(
                        sh,
                        conn,
                        presence_text(&ch.name_json, &[&conn.entry], Some(&[])),
                    );
                }
                match snapshot {
                    Some(t) if f.has(Fault::SnapshotLate) => {
                        let (conn, t) = (conn.clone(), t.clone());
                        let queue = sh.limits.queue;
                        tokio::spawn(async move {
                            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                            conn.out.push(t, queue);
                        });
                    }
                    Some(t) => push(sh, conn, t),
                    None => {}
                }
            }
            if joined && !f.has(Fault::PresenceNoJoin) && !self.frozen(f) {
                let entry = match inner.present.get(&conn.peer_id) {
                    Some(p) if !f.has(Fault::PresencePerConnection) => p.entry.clone(),
                    _ => conn.entry.clone(),
                };
                let entry = entry_for(f, &conn.peer_id, &entry);
                let left: Option<&[&str]> = if f.has(Fault::PresenceNullLeft) {
                    None
                } else {
                    Some(&[])
                };
                let delta = presence_text(&ch.name_json, &[&entry], left);
                for sub in inner.subs.values() {
                    if sub.conn.id != conn.id && sub.conn.presence && !sub.ghost {
                        push(sh, &sub.conn, delta.clone());
                        if f.has(Fault::PresenceSampled) {
                            break;
                        }
                    }
                }
                if f.has(Fault::WildcardGetsPresence) {
                    for w in self.wild_read().iter() {
                        if w.conn.id != conn.id && w.conn.presence && w.matcher.matches(name) {
                            push(sh, &w.conn, delta.clone());
                        }
                    }
                }
            }
            return;
        }
    }

    /// Ends `conn`'s subscription to `name` (UNSUB-4, PRES-6); pushes `ack` in order.
    pub fn unsubscribe(
        &self,
        sh: &Shared,
        conn: &Conn,
        name: &str,
        ack: Option<Utf8Bytes>,
        why: Leave,
    ) {
        let f = sh.faults;
        let Some(ch) = self.channel(name) else {
            ack.into_iter().for_each(|t| push(sh, conn, t));
            return;
        };
        let mut guard = ch.lock();
        let inner = &mut *guard;
        let removed = if inner.dead {
            None
        } else {
            inner.subs.remove(&conn.id)
        };
        if let Some(sub) = removed.filter(|s| !s.ghost) {
            let mut announce = f.has(Fault::PresencePerConnection);
            let mut entry = conn.entry.clone();
            if let Some(p) = inner.present.get_mut(&conn.peer_id) {
                p.count -= 1;
                if p.count == 0 {
                    let p = inner.present.remove(&conn.peer_id).expect("present above");
                    inner.order.remove(&p.seq);
                    if !f.has(Fault::PresencePerConnection) {
                        entry = p.entry;
                    }
                    announce = true;
                }
            }
            let suppressed = match why {
                Leave::Unsubscribe => f.has(Fault::PresenceNoLeaveUnsubscribe),
                Leave::Disconnect => f.has(Fault::PresenceNoLeaveDisconnect),
            };
            if let Some(ack) = ack {
                push(sh, conn, ack);
            }
            if announce && !suppressed && !self.frozen(f) {
                let entry = if f.has(Fault::LeaveWithoutMetadata) {
                    entry_text(&conn.peer_id, None).into()
                } else {
                    entry_for(f, &conn.peer_id, &entry)
                };
                let delta = presence_text(&ch.name_json, &[], Some(&[&entry]));
                for sub in inner.subs.values() {
                    if sub.conn.presence && !sub.ghost {
                        push(sh, &sub.conn, delta.clone());
                        if f.has(Fault::PresenceSampled) {
                            break;
                        }
                    }
                }
            }
            if why == Leave::Unsubscribe && f.has(Fault::UnsubscribeKeepsDelivering) {
                let ghost = Sub { ghost: true, ..sub };
                inner.subs.insert(conn.id, ghost);
            }
            self.forget_if_empty(name, &ch, inner);
        } else if let Some(ack) = ack {
            push(sh, conn, ack);
        }
    }

    /// Adds or updates a wildcard subscription (SUB-12): ack, then an empty snapshot
    /// named after the pattern; never announced.
    pub fn subscribe_wildcard(
        &self,
        sh: &Shared,
        conn: &Arc<Conn>,
        pattern: &str,
        include_meta: bool,
        scope: &Arc<Scope>,
        ack: Option<Utf8Bytes>,
    ) {
        let f = sh.faults;
        let mut list = self.wild_write();
        match list
            .iter_mut()
            .find(|w| w.conn.id == conn.id && &*w.pattern == pattern)
        {
            Some(w) => w.include_meta = include_meta,
            None => list.push(WildSub {
                conn: conn.clone(),
                pattern: pattern.into(),
                matcher: Pattern::new(&super::fault_text::faulted_pattern(f, pattern)),
                include_meta,
                scope: scope.clone(),
            }),
        }
        let snapshot = (conn.presence && !f.has(Fault::SnapshotMissingEmpty))
            .then(|| presence_text(&json_str(pattern), &[], Some(&[])));
        if f.has(Fault::SnapshotBeforeAck) {
            snapshot
                .into_iter()
                .chain(ack)
                .for_each(|t| push(sh, conn, t));
        } else {
            ack.into_iter()
                .chain(snapshot)
                .for_each(|t| push(sh, conn, t));
        }
    }

    /// Removes one wildcard subscription; pushes `ack` after it is gone.
    pub fn unsubscribe_wildcard(
        &self,
        sh: &Shared,
        conn: &Conn,
        pattern: &str,
        ack: Option<Utf8Bytes>,
    ) {
        let mut list = self.wild_write();
        list.retain(|w| !(w.conn.id == conn.id && &*w.pattern == pattern));
        if let Some(ack) = ack {
            push(sh, conn, ack);
        }
    }

    /// Drops every wildcard subscription of `conn`.
    pub fn remove_wildcards(&self, conn: &Conn) {
        self.wild_write().retain(|w| w.conn.id != conn.id);
    }

    /// Delivers a `message` on `name` to every subscriber except connection `exclude`
    /// (PUB-4, REST-31); returns the number of connections it was queued for. `origin`
    /// identifies the sender for injected swaps.
    #[allow(clippy::too_many_arguments)]
    pub fn publish(
        &self,
        sh: &Shared,
        exclude: Option<u64>,
        origin: u64,
        name: &str,
        from: &str,
        data: &RawValue,
        from_meta: Option<&RawValue>,
    ) -> usize {
        let f = sh.faults;
        let exclude = exclude.filter(|_| !f.has(Fault::EchoPublisher));
        let mut plain: Option<Utf8Bytes> = None;
        let mut stamped: Option<Utf8Bytes> = None;
        let mut text_for = |include_meta: bool| -> Utf8Bytes {
            let meta = from_meta.filter(|_| {
                (include_meta || f.has(Fault::MetadataAlways)) && !f.has(Fault::MetadataNever)
            });
            let slot = if meta.is_some() {
                &mut stamped
            } else {
                &mut plain
            };
            slot.get_or_insert_with(|| message_text(name, from, data, meta).into())
                .clone()
        };
        let injector = sh.injector.as_ref();
        let injected_due = injector.and_then(Injector::delayed_until);
        let swap = f.has(Fault::ReorderPerPublisher);
        let limited = f.has(Fault::OutboundLimited);
        // Counted once per publish, on whichever path returns (not an atomic per copy).
        let queued = CopiesQueued::new(sh);
        let deliver = |conn: &Conn, text: Utf8Bytes| {
            if limited && text.len() > sh.limits.max_message_size {
                return;
            }
            let due = injected_due.max(sh.variant_delay()).max(sh.capacity_due());
            queued.add_one();
            if conn
                .out
                .push_message(text, origin, due, injector, swap, sh.limits.queue)
                == Pushed::Overflow
            {
                count_overflow(sh, conn);
            }
        };

        if self.frozen(f) {
            return 0;
        }
        // The `same-peer-excluded` fault skips the publisher's other connections too.
        let skip_peer = (exclude.is_some() && f.has(Fault::SamePeerExcluded)).then_some(from);
        let excluded = |c: &Conn| Some(c.id) == exclude || skip_peer == Some(&*c.peer_id);
        let ch = self.channel(name);
        let guard = ch.as_ref().map(|c| c.lock());
        let subs = guard.as_ref().filter(|g| !g.dead).map(|g| &g.subs);
        let wild = self.wild_read();
        let wild_on = !wild.is_empty() && !is_reserved(name);
        let matches = |w: &&WildSub| {
            !excluded(&w.conn)
                && w.matcher.matches(name)
                && (f.has(Fault::IgnoreChannelScope) || w.scope.allows(name))
        };
        if !wild_on || !wild.iter().any(|w| matches(&w)) {
            let Some(subs) = subs else { return 0 };
            let mut n = 0;
            let one = exclude.is_none() && f.has(Fault::RestPublishOneRecipient);
            for sub in subs.values() {
                if !excluded(&sub.conn) {
                    deliver(&sub.conn, text_for(sub.include_meta));
                    n += 1;
                    if one {
                        break;
                    }
                }
            }
            return n;
        }
        // Wildcards match: each connection gets the message once, stamped if any of its
        // matching subscriptions opted in (SUB-12).
        let mut recipients: Vec<(&Arc<Conn>, bool)> = Vec::new();
        let mut index: HashMap<u64, usize> = HashMap::new();
        let exact = subs
            .into_iter()
            .flat_map(|s| s.values())
            .filter(|s| !excluded(&s.conn))
            .map(|s| (&s.conn, s.include_meta));
        let wilds = wild
            .iter()
            .filter(matches)
            .map(|w| (&w.conn, w.include_meta));
        for (conn, meta) in exact.chain(wilds) {
            match index.get(&conn.id) {
                Some(&i) => recipients[i].1 |= meta,
                None => {
                    index.insert(conn.id, recipients.len());
                    recipients.push((conn, meta));
                }
            }
        }
        for (conn, meta) in &recipients {
            deliver(conn, text_for(*meta));
        }
        recipients.len()
    }

    /// Delivers a `direct` to every connection of `to` except `from` (SEND-5); returns
    /// how many. `text` is built only when there is a recipient.
    pub fn send(
        &self,
        sh: &Shared,
        from: &Conn,
        to: &str,
        text: impl FnOnce() -> Utf8Bytes,
    ) -> usize {
        if self.frozen(sh.faults) {
            return 0;
        }
        let peers = self.peers();
        let Some(list) = peers.get(to) else { return 0 };
        let mut text = Some(text);
        let mut built: Option<Utf8Bytes> = None;
        let mut n = 0;
        let injector = sh.injector.as_ref().filter(|i| i.cfg.directs);
        let injected_due = injector.and_then(Injector::delayed_until);
        for c in list.iter().filter(|c| c.id != from.id) {
            let t = built
                .get_or_insert_with(|| (text.take().expect("built once"))())
                .clone();
            if injector.is_some() && sh.faults.is_empty() {
                // Injected truth: the sender connection is the origin of swaps.
                let due = injected_due.max(sh.variant_delay()).max(sh.capacity_due());
                if c.out
                    .push_message(t, from.id, due, injector, false, sh.limits.queue)
                    == Pushed::Overflow
                {
                    count_overflow(sh, c);
                }
            } else {
                // Directs pass the injected capacity queue like channel copies.
                push_not_before(sh, c, t, sh.capacity_due());
            }
            n += 1;
            if sh.faults.has(Fault::DirectFirstConnectionOnly) {
                break;
            }
        }
        sh.stats
            .copies
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        n
    }

    /// Presence entries of `name` in the order peers became present (REST-21/22); with
    /// `per_connection` one entry per subscribed connection (the fault switch).
    pub fn peers_in(&self, name: &str, per_connection: bool) -> Vec<Arc<str>> {
        let Some(ch) = self.channel(name) else {
            return Vec::new();
        };
        let inner = ch.lock();
        if per_connection {
            return inner.subs.values().map(|s| s.conn.entry.clone()).collect();
        }
        inner
            .order
            .values()
            .filter_map(|p| inner.present.get(p))
            .map(|p| p.entry.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests;
