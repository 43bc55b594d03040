//! The requests of one session (SPEC §8): dispatch of a parsed frame, then checks 8-14
//! of §7.1 (reserved names, actions, scope, limits, quota, routing) and the effects,
//! with the fault switches that break them. Split from `session.rs`, which owns the
//! socket loop.

use std::sync::atomic::Ordering;

use serde_json::value::RawValue;
use serde_json::{Map, Value};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::fault_text;
use super::faults::Fault;
use super::hub::{Leave, push};
use super::session::{End, Session};
use crate::proto::frame::{Request, direct_text, parse_request};
use crate::proto::limits::is_reserved;
use crate::proto::pattern::is_wildcard;
use crate::proto::{Action, ErrorCode, ServerFrame, close};

impl Session {
    pub(super) fn push(&self, text: String) {
        push(&self.sh, &self.conn, text.into());
    }

    pub(super) fn error(&self, code: ErrorCode, request_id: Option<String>, message: &str) {
        let f = self.sh.faults;
        let code = if code == ErrorCode::UnknownType && f.has(Fault::UnknownTypeAsMalformed) {
            ErrorCode::MalformedMessage
        } else {
            code
        };
        let request_id = request_id.filter(|_| !f.has(Fault::ErrorDropsRequestId));
        if request_id.is_none() && f.has(Fault::ErrorsUncorrelatedDropped) {
            return;
        }
        self.push(ServerFrame::error(code, request_id, message).to_text());
        if f.has(Fault::ErrorCloses) {
            self.conn.out.request_close(close::NORMAL);
        }
    }

    /// The ack for a successful request (ACK-1, FRAME-4/5), or none.
    fn ack(&self, request_id: &Option<String>, missing: Option<Fault>) -> Option<Utf8Bytes> {
        let f = self.sh.faults;
        if missing.is_some_and(|m| f.has(m)) {
            return None;
        }
        let id = match request_id {
            Some(id) if f.has(Fault::AckWrongRequestId) => format!("{id}-wrong"),
            Some(id) => id.clone(),
            None if f.has(Fault::AckUnrequested) => String::new(),
            None => return None,
        };
        Some(ServerFrame::Ack { request_id: id }.to_text().into())
    }

    pub(super) fn on_text(&mut self, text: &str) -> Option<End> {
        let f = self.sh.faults;
        let rewritten = if f.is_empty() {
            None
        } else {
            if let Some(r) = fault_text::refuse_inbound(f, text) {
                self.error(r.code, r.request_id, &r.message);
                return None;
            }
            fault_text::rewrite_inbound(f, text)
        };
        let text = rewritten.as_deref().unwrap_or(text);
        let inbound = match parse_request(text) {
            Ok(i) => i,
            Err(r) => {
                let long = (r.code == ErrorCode::InvalidChannel && !f.is_empty())
                    .then(|| fault_text::parse_loose_channel(f, text))
                    .flatten();
                match long {
                    Some(i) => i,
                    None => {
                        let r = if f.is_empty() {
                            Some(r)
                        } else {
                            fault_text::rejection(f, text, r)
                        };
                        if let Some(r) = r {
                            self.error(r.code, r.request_id, &r.message);
                        }
                        return None;
                    }
                }
            }
        };
        let rid = inbound.request_id;
        match inbound.request {
            Request::Subscribe {
                channel,
                include_sender_metadata,
            } => self.subscribe(rid, channel, include_sender_metadata),
            Request::Unsubscribe { channel } => {
                self.unsubscribe(rid, &channel);
                None
            }
            Request::Publish { channel, data } => self.publish(rid, &channel, data),
            Request::Send { to, data } => {
                self.send(rid, &to, data);
                None
            }
            Request::Ping => {
                if f.has(Fault::PingCountsQuota) {
                    self.app.charge_message();
                }
                if f.has(Fault::PingAcked)
                    && let Some(id) = &rid
                {
                    self.push(
                        ServerFrame::Ack {
                            request_id: id.clone(),
                        }
                        .to_text(),
                    );
                }
                self.push(ServerFrame::Pong { request_id: rid }.to_text());
                None
            }
        }
    }

    /// The `subscriptions-restored` fault: a peer's new connection silently gets every
    /// channel an earlier connection of the peer subscribed to (remembered at subscribe
    /// time, so it does not matter when the old connection's close is processed).
    pub(super) fn restore_subscriptions(&mut self) {
        let key = (self.app.id.clone(), self.conn.peer_id.to_string());
        let held = {
            let restore = self
                .sh
                .fault_state
                .restore
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            restore.get(&key).cloned().unwrap_or_default()
        };
        for channel in held {
            self.app
                .hub
                .subscribe(&self.sh, &self.conn, &channel, false, None);
            self.subs.push(channel);
        }
    }

    /// Checks 8-10 of §7.1 for subscribe and publish.
    fn authorize(
        &self,
        rid: &Option<String>,
        channel: &str,
        action: Action,
    ) -> Result<(), ErrorCode> {
        let f = self.sh.faults;
        if is_reserved(channel) && !f.has(Fault::AllowReserved) {
            self.error(
                ErrorCode::ChannelReserved,
                rid.clone(),
                "reserved channel prefix",
            );
            return Err(ErrorCode::ChannelReserved);
        }
        if !self.actions.contains(action) && !f.has(Fault::IgnorePermissions) {
            self.error(
                ErrorCode::ActionNotPermitted,
                rid.clone(),
                &format!("this credential lacks the `{}` action", action.as_str()),
            );
            return Err(ErrorCode::ActionNotPermitted);
        }
        if !self.scope.allows(channel) && !f.has(Fault::IgnoreChannelScope) {
            return Err(ErrorCode::ChannelNotAuthorized);
        }
        Ok(())
    }

    fn subscribe(
        &mut self,
        rid: Option<String>,
        channel: String,
        include_meta: bool,
    ) -> Option<End> {
        let f = self.sh.faults;
        match self.authorize(&rid, &channel, Action::Subscribe) {
            Ok(()) => {}
            Err(ErrorCode::ChannelNotAuthorized) => {
                if self.app.compat.unauthorized_subscribe_closes
                    || f.has(Fault::UnauthorizedSubscribeCloses4003)
                {
                    return Some(End::Close(close::CHANNEL_NOT_AUTHORIZED));
                }
                self.error(
                    ErrorCode::ChannelNotAuthorized,
                    rid,
                    "channel is outside this credential's patterns",
                );
                return None;
            }
            Err(_) => return None,
        }
        let held = self.subs.iter().any(|s| **s == *channel);
        if (!held || f.has(Fault::ResubscribeCounts))
            && self.subs.len() >= self.sh.limits.max_subscriptions
            && !f.has(Fault::NoChannelLimit)
        {
            self.error(
                ErrorCode::ChannelLimitExceeded,
                rid,
                "at most 100 subscriptions per connection",
            );
            return None;
        }
        if f.has(Fault::InternalError) {
            self.error(
                ErrorCode::InternalError,
                rid,
                "injected internal error (fault switch)",
            );
            return None;
        }
        if f.has(Fault::SubscribeNeedsExistingChannel) && !held && !self.app.hub.exists(&channel) {
            self.error(
                ErrorCode::ChannelNotAuthorized,
                rid,
                "no such channel (fault switch)",
            );
            return None;
        }
        let ack = self.ack(&rid, Some(Fault::AckMissingSubscribe));
        let hub = &self.app.hub;
        if f.has(Fault::SubscriptionLate) && !is_wildcard(&channel) {
            // Acked now, effective later: a publish in between is lost for this subscriber.
            ack.into_iter().for_each(|a| push(&self.sh, &self.conn, a));
            let (sh, app, conn) = (self.sh.clone(), self.app.clone(), self.conn.clone());
            let name = channel.clone();
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                if conn.out.close_requested().is_none() {
                    app.hub.subscribe(&sh, &conn, &name, include_meta, None);
                }
            });
        } else if is_wildcard(&channel) {
            hub.subscribe_wildcard(
                &self.sh,
                &self.conn,
                &channel,
                include_meta,
                &self.scope,
                ack,
            );
        } else {
            hub.subscribe(&self.sh, &self.conn, &channel, include_meta, ack);
        }
        if f.has(Fault::SubscriptionsRestored) && !is_wildcard(&channel) {
            let key = (self.app.id.clone(), self.conn.peer_id.to_string());
            let mut restore = self
                .sh
                .fault_state
                .restore
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let held = restore.entry(key).or_default();
            if !held.iter().any(|c| **c == *channel) {
                held.push(channel.as_str().into());
            }
        }
        if !held {
            self.subs.push(channel.into());
        }
        None
    }

    fn unsubscribe(&mut self, rid: Option<String>, channel: &str) {
        if self.sh.faults.has(Fault::UnsubscribeChecksScope)
            && self.authorize(&rid, channel, Action::Subscribe).is_err()
        {
            return;
        }
        let ack = self.ack(&rid, Some(Fault::AckMissingUnsubscribe));
        let Some(i) = self.subs.iter().position(|s| **s == *channel) else {
            // UNSUB-2: idempotent.
            if let Some(ack) = ack {
                push(&self.sh, &self.conn, ack);
            }
            return;
        };
        self.subs.swap_remove(i);
        let hub = &self.app.hub;
        if is_wildcard(channel) {
            hub.unsubscribe_wildcard(&self.sh, &self.conn, channel, ack);
        } else {
            hub.unsubscribe(&self.sh, &self.conn, channel, ack, Leave::Unsubscribe);
        }
    }

    /// Checks 12 and the injected backend fault for publish and send.
    fn charge(&self, rid: &Option<String>) -> bool {
        let f = self.sh.faults;
        // Only the `overages-refused` fault needs to know whether this one was an overage.
        let usage = &self.app.usage;
        let overages = f
            .has(Fault::OveragesRefused)
            .then(|| usage.overage_messages.load(Ordering::Relaxed));
        let ok = self.app.charge_message() || f.has(Fault::QuotaIgnored);
        let overage =
            overages.is_some_and(|before| usage.overage_messages.load(Ordering::Relaxed) != before);
        if !ok && f.has(Fault::OverQuotaStopsDelivery) {
            self.app.hub.frozen.store(true, Ordering::Relaxed);
        }
        if !ok || overage {
            self.error(
                ErrorCode::OverMessageQuota,
                rid.clone(),
                "message quota exhausted for this period",
            );
            return false;
        }
        if self.sh.faults.has(Fault::BackendError) {
            self.error(
                ErrorCode::BackendError,
                rid.clone(),
                "injected backend error (fault switch)",
            );
            return false;
        }
        true
    }

    fn publish(&mut self, rid: Option<String>, channel: &str, data: &RawValue) -> Option<End> {
        let f = self.sh.faults;
        let changed = if f.is_empty() {
            None
        } else {
            self.faulted_data(&rid, data).ok()?
        };
        let data = changed.as_deref().unwrap_or(data);
        match self.authorize(&rid, channel, Action::Publish) {
            Ok(()) => {}
            Err(ErrorCode::ChannelNotAuthorized) => {
                self.error(
                    ErrorCode::ChannelNotAuthorized,
                    rid,
                    "channel is outside this credential's patterns",
                );
                return None;
            }
            Err(_) => return None,
        }
        if f.has(Fault::PublishNeedsSubscription) && !self.subs.iter().any(|s| **s == *channel) {
            self.error(
                ErrorCode::ChannelNotAuthorized,
                rid,
                "not subscribed to this channel (fault switch)",
            );
            return None;
        }
        if !self.charge(&rid) {
            return None;
        }
        let ack = self.ack(&rid, Some(Fault::AckMissingPublish));
        let ack_after = f.has(Fault::PublishToEmptyUnacked);
        if !ack_after && let Some(ack) = ack.clone() {
            push(&self.sh, &self.conn, ack);
        }
        let spoofed = f
            .has(Fault::FromSpoofable)
            .then(|| {
                serde_json::from_str::<Map<String, Value>>(data.get())
                    .ok()
                    .and_then(|m| m.get("from").and_then(Value::as_str).map(str::to_owned))
            })
            .flatten();
        let from = spoofed.as_deref().unwrap_or(&self.conn.peer_id);
        let n = self.app.hub.publish(
            &self.sh,
            Some(self.conn.id),
            self.conn.id,
            channel,
            from,
            data,
            self.conn.peer_metadata.as_deref(),
        );
        if !f.is_empty() {
            if ack_after
                && n > 0
                && let Some(ack) = ack
            {
                push(&self.sh, &self.conn, ack);
            }
            if f.has(Fault::PublishCountsRecipients) {
                (1..n).for_each(|_| {
                    self.app.charge_message();
                });
            }
            if f.has(Fault::CrossAppRouting) {
                for app in self.sh.apps().iter().filter(|a| a.id != self.app.id) {
                    app.hub
                        .publish(&self.sh, None, self.conn.id, channel, from, data, None);
                }
            }
        }
        let first = !self.published;
        self.published = true;
        (first && f.has(Fault::Close1011)).then_some(End::Close(close::INTERNAL))
    }

    fn send(&mut self, rid: Option<String>, to: &str, data: &RawValue) {
        let f = self.sh.faults;
        let changed = if f.is_empty() {
            None
        } else {
            match self.faulted_data(&rid, data) {
                Ok(c) => c,
                Err(()) => return,
            }
        };
        let data = changed.as_deref().unwrap_or(data);
        if !self.actions.contains(Action::Send) && !f.has(Fault::IgnorePermissions) {
            self.error(
                ErrorCode::ActionNotPermitted,
                rid,
                "this credential lacks the `send` action",
            );
            return;
        }
        if !f.has(Fault::SendNotCounted) && !self.charge(&rid) {
            return;
        }
        let meta = self
            .conn
            .peer_metadata
            .as_deref()
            .filter(|_| !f.has(Fault::DirectNoMetadata));
        let peer_id = &self.conn.peer_id;
        let shared =
            !f.has(Fault::SendNeedsSharedChannel) || self.app.hub.shares_channel(&self.conn, to);
        let n = if shared {
            self.app.hub.send(&self.sh, &self.conn, to, || {
                direct_text(peer_id, data, meta).into()
            })
        } else {
            0
        };
        if n == 0 && f.has(Fault::QuotaCountsDeliveredOnly) {
            self.app.usage.messages_used.fetch_sub(1, Ordering::Relaxed);
        }
        if n == 0 && !f.has(Fault::PeerNotFoundAcked) {
            let shown: String = to.chars().take(40).collect();
            self.error(
                ErrorCode::PeerNotFound,
                rid,
                &format!("peer {shown} is not connected"),
            );
        } else if let Some(ack) = self.ack(&rid, Some(Fault::AckMissingSend)) {
            push(&self.sh, &self.conn, ack);
        }
    }

    /// `data` as the faults change it: refused when null (`null-data-refused`, `Err`),
    /// or parsed into doubles and written again (`data-rounded`).
    fn faulted_data(
        &self,
        rid: &Option<String>,
        data: &RawValue,
    ) -> Result<Option<Box<RawValue>>, ()> {
        let f = self.sh.faults;
        if f.has(Fault::NullDataRefused) && data.get() == "null" {
            self.error(ErrorCode::MissingData, rid.clone(), "`data` is required");
            return Err(());
        }
        if !f.has(Fault::DataRounded) {
            return Ok(None);
        }
        let rounded = rounded(data.get());
        Ok(RawValue::from_string(rounded).ok())
    }

    /// Ends every subscription (leave deltas, PRES-6), unregisters and releases the
    /// admission slot.
    pub(super) fn leave(&mut self) {
        let hub = &self.app.hub;
        hub.unregister(&self.conn);
        let mut wild = false;
        for channel in self.subs.drain(..) {
            if is_wildcard(&channel) {
                wild = true;
            } else {
                hub.unsubscribe(&self.sh, &self.conn, &channel, None, Leave::Disconnect);
            }
        }
        if wild {
            hub.remove_wildcards(&self.conn);
        }
        if self.sh.faults.has(Fault::UnsubscribeKeepsDelivering) {
            hub.drop_ghosts(&self.conn);
        }
        if !self.sh.faults.has(Fault::ConcurrentNotReleased) {
            self.app.release();
        }
    }
}

/// `text` (valid JSON) with every number parsed into a double and written back, as a
/// server that parses `data` into JavaScript-like numbers would (the `data-rounded` fault).
fn rounded(text: &str) -> String {
    fn walk(v: Value) -> Value {
        match v {
            Value::Number(n) => n
                .as_f64()
                .and_then(serde_json::Number::from_f64)
                .map_or(Value::Null, Value::Number),
            Value::Array(a) => Value::Array(a.into_iter().map(walk).collect()),
            Value::Object(m) => Value::Object(m.into_iter().map(|(k, v)| (k, walk(v))).collect()),
            other => other,
        }
    }
    serde_json::from_str::<Value>(text).map_or_else(|_| text.to_owned(), |v| walk(v).to_string())
}
