//! Hub operations only fault switches use (server/faults.rs). A child module of `hub`, so
//! it sees the channel internals; the clean server never calls any of these.

use std::sync::Arc;

use super::{Channel, Conn, Hub, Present, entry_text};

impl Hub {
    /// Makes `peer_id` present in `name` without a connection (the
    /// `rest-publish-subscribes` fault); it stays until the channel is forgotten.
    pub fn phantom_presence(&self, name: &str, peer_id: &str) {
        let ch = self.channel_or_create(name);
        let mut inner = ch.lock();
        if inner.dead || inner.present.contains_key(peer_id) {
            return;
        }
        let seq = inner.next_seq;
        inner.next_seq += 1;
        let entry: Arc<str> = entry_text(peer_id, None).into();
        let peer: Arc<str> = peer_id.into();
        inner.order.insert(seq, peer.clone());
        inner.present.insert(
            peer,
            Present {
                count: 1,
                seq,
                entry,
            },
        );
    }

    /// Whether channel `name` has subscribers (the `subscribe-needs-existing-channel`
    /// fault refuses the first subscriber).
    pub fn exists(&self, name: &str) -> bool {
        self.channel(name)
            .is_some_and(|ch| !ch.lock().subs.is_empty())
    }

    /// Whether `conn` holds a channel in which peer `peer_id` is present (the
    /// `send-needs-shared-channel` fault).
    pub fn shares_channel(&self, conn: &Conn, peer_id: &str) -> bool {
        let channels: Vec<Arc<Channel>> = self.channels().values().cloned().collect();
        channels.iter().any(|ch| {
            let inner = ch.lock();
            inner.subs.contains_key(&conn.id) && inner.present.contains_key(peer_id)
        })
    }

    /// Removes what the `unsubscribe-keeps-delivering` fault left of `conn` (on its close).
    pub fn drop_ghosts(&self, conn: &Conn) {
        let channels: Vec<(Arc<str>, Arc<Channel>)> = self
            .channels()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (name, ch) in channels {
            let mut inner = ch.lock();
            if inner.subs.get(&conn.id).is_some_and(|s| s.ghost) {
                inner.subs.remove(&conn.id);
                self.forget_if_empty(&name, &ch, &mut inner);
            }
        }
    }
}
