//! One WebSocket connection, from the upgrade to the close: connect-time checks (CONN-6),
//! `welcome`, then one task that selects over the socket, its outbound queue, close
//! requests and one timer (heartbeat HB-1/2, token expiry EXP-1, delayed frames).
//!
//! Inbound frames are checked in the order of SPEC §7.1: the token bucket (1), the size
//! (2) and the opcode / UTF-8 (3) here, JSON shape and fields (4-7) in
//! `proto::frame::parse_request`, then authorization, limits, quota and routing (8-14)
//! here. Each frame's responses are queued before the next frame is read (FRAME-12).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};
use tokio_rustls::server::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::admit::{Admitted, Refusal, authenticate};
use super::closing::{
    CLOSE_HANDSHAKE, Transport, close_reason, close_with, finish, linger_until_tcp_closes,
    write_batch,
};
use super::config::RateLimit;
use super::fault_text;
use super::faults::Fault;
use super::hub::{Conn, entry_text, push};
use super::outbox::{ABORT, Item};
use super::state::{App, Scope, Shared};
use super::variant_io::{Chunked, Wire};
use super::variants::Variant;
use crate::proto::auth::EXPIRY_LEAD_MS;
use crate::proto::frame::{self};
use crate::proto::{Action, Actions, ErrorCode, ServerFrame, close};

/// How late the `close-late` variant answers a client's close: inside the 1 s a real
/// client waits for it.
const CLOSE_LATE: Duration = Duration::from_millis(900);
/// How long the `writes-coalesced` variant holds frames to write them together.
const COALESCE: Duration = Duration::from_millis(25);
/// Control Ping cadence of the `pings-frequent` variant.
const FREQUENT_PING: Duration = Duration::from_millis(200);
/// Frames written per turn before the session looks at its socket again.
const WRITE_BATCH: usize = 256;
/// tungstenite write buffer: larger buffers batch broadcast frames into fewer syscalls
/// (LIMITS.md A2: +35% fan-out throughput over 4 KiB). Allocated lazily.
const WRITE_BUFFER: usize = 64 * 1024;
/// tungstenite read buffer, allocated eagerly per connection: the main per-connection
/// memory cost (LIMITS.md A1).
const READ_BUFFER: usize = 4 * 1024;

/// The tungstenite configuration for a connection of `app`. The library's own size cap is
/// the protocol's (so oversize is detected before buffering more), and we send 1009.
fn ws_config(sh: &Shared, max_message_size: usize) -> WebSocketConfig {
    let cap = if sh.faults.has(Fault::NoSizeLimit) {
        16 << 20
    } else {
        max_message_size
    };
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        // Outbound frames may exceed maxMessageSize (LIM-2): room for a few of them.
        .max_write_buffer_size(WRITE_BUFFER + 4 * max_message_size + (1 << 20))
        .max_message_size(Some(cap))
        .max_frame_size(Some(cap))
}

/// Counts one upgraded WebSocket task for the shutdown drain.
pub struct LiveGuard(Arc<Shared>);

impl LiveGuard {
    pub fn new(sh: &Arc<Shared>) -> LiveGuard {
        sh.live_sessions.fetch_add(1, Ordering::AcqRel);
        LiveGuard(sh.clone())
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        if self.0.live_sessions.fetch_sub(1, Ordering::AcqRel) == 1 {
            // The last connection took its queued copies with it: an injected capacity's
            // backlog is gone too, so the next run starts from an idle server.
            if let Some(i) = &self.0.injector {
                i.capacity_idle();
            }
        }
    }
}

/// Runs a connection whose HTTP upgrade completed.
pub async fn serve(
    sh: Arc<Shared>,
    upgraded: Upgraded,
    query: Option<String>,
    origin: Option<String>,
    guard: LiveGuard,
) {
    let admitted = authenticate(&sh, query.as_deref(), origin.as_deref());
    drop((query, origin));
    let max = admitted
        .as_ref()
        .map_or(sh.limits.max_message_size, |a| a.app.max_message_size);
    let cfg = Some(ws_config(&sh, max));
    // Unwrap hyper's upgrade box to the stream we gave hyper (TCP, or TLS over TCP): fewer
    // layers per read, less memory.
    let upgraded = match unwrap_upgraded::<TcpStream>(upgraded) {
        Ok((tcp, leftover)) => return over(sh, tcp, leftover, cfg, admitted, guard).await,
        Err(upgraded) => upgraded,
    };
    let upgraded = match unwrap_upgraded::<TlsStream<TcpStream>>(upgraded) {
        Ok((tls, leftover)) => return over(sh, tls, leftover, cfg, admitted, guard).await,
        Err(upgraded) => upgraded,
    };
    let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, cfg).await;
    start_session(sh, ws, admitted, guard).await
}

/// The stream under hyper's upgrade box if it is an `S`, with the bytes hyper read past
/// the request.
fn unwrap_upgraded<S>(upgraded: Upgraded) -> Result<(S, Option<Vec<u8>>), Upgraded>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let parts = upgraded.downcast::<TokioIo<S>>()?;
    // `read_buf` may be a slice of hyper's whole read buffer: copy what is left and drop it
    // now, or every connection keeps that buffer alive (8 KB+ each).
    let leftover = (!parts.read_buf.is_empty()).then(|| parts.read_buf.to_vec());
    drop(parts.read_buf);
    Ok((parts.io.into_inner(), leftover))
}

/// Starts the WebSocket over the unwrapped stream (in tiny writes for `writes-split`).
async fn over<S: Transport>(
    sh: Arc<Shared>,
    io: S,
    leftover: Option<Vec<u8>>,
    cfg: Option<WebSocketConfig>,
    admitted: Result<Admitted, Refusal>,
    guard: LiveGuard,
) {
    if sh.variants.has(Variant::WritesSplit) {
        let io = Chunked::new(io);
        return Box::pin(over_stream(sh, io, leftover, cfg, admitted, guard)).await;
    }
    over_stream(sh, io, leftover, cfg, admitted, guard).await
}

async fn over_stream<S: Transport>(
    sh: Arc<Shared>,
    io: S,
    leftover: Option<Vec<u8>>,
    cfg: Option<WebSocketConfig>,
    admitted: Result<Admitted, Refusal>,
    guard: LiveGuard,
) {
    let ws = match leftover {
        None => WebSocketStream::from_raw_socket(io, Role::Server, cfg).await,
        Some(bytes) => WebSocketStream::from_partially_read(io, bytes, Role::Server, cfg).await,
    };
    start_session(sh, ws, admitted, guard).await
}

/// Applies the connect-time gates (CONN-6 steps 3-6); an admitted connection continues in
/// a task of its own, so the long-lived future holds only what the session needs (async
/// functions keep their arguments and locals, which would add ~1.3 KB per connection).
async fn start_session<S: Transport>(
    sh: Arc<Shared>,
    mut ws: WebSocketStream<S>,
    admitted: Result<Admitted, Refusal>,
    guard: LiveGuard,
) {
    let a = match admitted {
        Ok(a) => a,
        Err((code, reason)) => {
            let code_name = match code {
                close::INVALID_TOKEN => Some("invalid_token"),
                close::TOKEN_EXPIRED => Some("token_expired"),
                close::ACCOUNT_SUSPENDED => Some("account_suspended"),
                _ => None,
            };
            if let Some(name) =
                code_name.filter(|_| sh.faults.has(Fault::ErrorFrameBeforeAuthClose))
            {
                let e = format!(r#"{{"type":"error","code":"{name}"}}"#);
                let _ = timeout(CLOSE_HANDSHAKE, ws.send(Message::Text(e.into()))).await;
            }
            if sh.faults.has(Fault::WelcomeBeforeRefusal) {
                let w = frame::welcome_text("refused", Some(None), sh.clock.now_s(), 65536, None);
                let _ = timeout(CLOSE_HANDSHAKE, ws.send(Message::Text(w.into()))).await;
            }
            return close_with(&mut ws, code, reason).await;
        }
    };
    let f = sh.faults;
    // CONN-6 steps 4 and 5.
    if a.app.suspended.load(Ordering::Acquire) && !f.has(Fault::SuspendedAdmitted) {
        return close_with(
            &mut ws,
            close::ACCOUNT_SUSPENDED,
            close_reason(close::ACCOUNT_SUSPENDED),
        )
        .await;
    }
    if !a.app.admit() {
        if f.has(Fault::ConcurrencyLimitOff) {
            a.app.usage.concurrent.fetch_add(1, Ordering::AcqRel);
        } else {
            return close_with(
                &mut ws,
                close::OVER_CONCURRENT_LIMIT,
                close_reason(close::OVER_CONCURRENT_LIMIT),
            )
            .await;
        }
    }
    let mut conn = Conn::new(
        sh.next_id(),
        &a.peer_id,
        a.peer_metadata.clone(),
        a.actions.contains(Action::Presence) || f.has(Fault::PresenceWithoutAction),
    );
    if sh.faults.has(Fault::MetadataLeaks) && a.metadata.is_some() {
        conn.entry = entry_text(&a.peer_id, a.metadata.as_deref()).into();
    }
    let conn = Arc::new(conn);
    let mut s = Session {
        sh: sh.clone(),
        app: a.app.clone(),
        conn: conn.clone(),
        scope: a.scope.clone(),
        actions: a.actions,
        subs: Vec::new(),
        bucket: a.app.rate.map(|r| {
            let mut b = Bucket::new(r);
            if f.has(Fault::RateBucketHalf) {
                b.tokens /= 2.0;
            }
            b
        }),
        published: false,
    };
    // The welcome is queued before the connection becomes reachable, so it is first (ORD-1).
    if f.has(Fault::FrameBeforeWelcome) {
        push(
            &sh,
            &conn,
            ServerFrame::Pong { request_id: None }.to_text().into(),
        );
    }
    push(&sh, &conn, welcome_text(&sh, &a).into());
    if f.has(Fault::WelcomeTwice) {
        push(&sh, &conn, welcome_text(&sh, &a).into());
    }
    if f.has(Fault::AppPings) {
        push(&sh, &conn, r#"{"type":"ping"}"#.into());
    }
    if f.has(Fault::KeepalivePong) {
        push(&sh, &conn, r#"{"type":"pong"}"#.into());
    }
    a.app.hub.register(&conn);
    if f.has(Fault::SubscriptionsRestored) {
        s.restore_subscriptions();
    }
    sh.stats.connections_total.fetch_add(1, Ordering::Relaxed);
    // Registered after a shutdown or a suspension swept the hub: close like everyone else.
    if sh.is_shutting_down() {
        conn.out.request_close(close::GOING_AWAY);
    } else if a.app.suspended.load(Ordering::Acquire) && !f.has(Fault::SuspendedAdmitted) {
        conn.out.request_close(close::ACCOUNT_SUSPENDED);
    }
    let publishable_expiry = (a.expires_at.is_none() && f.has(Fault::PublishableExpires))
        .then(|| Instant::now() + Duration::from_secs(1));
    let expiry = a
        .expires_at
        .filter(|_| !a.expired_admitted && !sh.faults.has(Fault::NoExpiryClose))
        .and_then(|exp| {
            let left_ms = exp.saturating_mul(1000) - EXPIRY_LEAD_MS - sh.clock.now_ms();
            // An `exp` centuries away does not fit an Instant: such a token never expires here.
            Instant::now().checked_add(Duration::from_millis(left_ms.max(0) as u64))
        })
        .or(publishable_expiry);
    drop(a);
    tokio::spawn(live(ws, s, expiry, guard));
}

/// The long-lived part of a connection: the main loop, then the close.
async fn live<S: Transport>(
    mut ws: WebSocketStream<S>,
    mut s: Session,
    expiry: Option<Instant>,
    guard: LiveGuard,
) {
    let mut end = s.run_loop(&mut ws, expiry).await;
    if let End::Close(code) = end
        && !s.sh.faults.is_empty()
    {
        end = End::Close(fault_text::close_code(s.sh.faults, code));
    }
    if end == End::PeerClosed && s.sh.variants.has(Variant::CloseLate) {
        // tungstenite queued the reply close; it goes out with the next write, after this.
        tokio::time::sleep(CLOSE_LATE).await;
    }
    if end == End::PeerClosed && s.sh.variants.has(Variant::LeaveOnTcpClose) {
        Box::pin(linger_until_tcp_closes(&mut ws)).await;
    }
    // Presence leaves go out as soon as the close is decided (CLOSE-18).
    s.leave();
    // Boxed: the closing path runs once, so it need not widen every connection's future.
    Box::pin(finish(&s.sh, &mut ws, &s.conn, end)).await;
    drop(guard);
}

fn welcome_text(sh: &Shared, a: &Admitted) -> String {
    let f = sh.faults;
    let omit_expires = a.expires_at.is_none() && f.has(Fault::WelcomeMissingExpires);
    let mut expires_at = a.expires_at;
    let mut max = a.app.max_message_size as u64;
    let mut peer_id = std::borrow::Cow::Borrowed(a.peer_id.as_str());
    let mut metadata = a.metadata.as_deref();
    let empty: Option<Box<serde_json::value::RawValue>>;
    if !f.is_empty() {
        if f.has(Fault::ExpiresAtMs) {
            expires_at = expires_at.map(|e| e.saturating_mul(1000));
        }
        if f.has(Fault::WelcomeMaxSizeLies) {
            max += 1000;
        }
        if f.has(Fault::WelcomePeerIdMangled) {
            peer_id = format!("{}-w", a.peer_id).into();
        }
        if f.has(Fault::WelcomeEmptyMetadata) && metadata.is_none() {
            empty = serde_json::value::RawValue::from_string("{}".into()).ok();
            metadata = empty.as_deref();
        }
    }
    frame::welcome_text(
        &peer_id,
        (!omit_expires).then_some(expires_at),
        sh.clock.now_s(),
        max,
        metadata,
    )
}

/// How the main loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum End {
    /// Close with this code (handshake follows).
    Close(u16),
    /// The client sent a close frame.
    PeerClosed,
    /// Drop TCP without a handshake (dead peer, I/O error, abort).
    Drop,
}

/// Per-connection token bucket (RATE-1/2).
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
    burst: f64,
    per_sec: f64,
}

impl Bucket {
    fn new(r: RateLimit) -> Bucket {
        Bucket {
            tokens: r.burst as f64,
            at: Instant::now(),
            burst: r.burst as f64,
            per_sec: r.refill_per_sec as f64,
        }
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * self.per_sec)
            .min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The session-private state of one admitted connection (its requests are handled in
/// `requests.rs`).
pub(super) struct Session {
    pub(super) sh: Arc<Shared>,
    pub(super) app: Arc<App>,
    pub(super) conn: Arc<Conn>,
    pub(super) scope: Arc<Scope>,
    pub(super) actions: Actions,
    /// Held subscriptions, exact and wildcard, as the client named them (≤ 100).
    pub(super) subs: Vec<Box<str>>,
    bucket: Option<Bucket>,
    /// A publish was accepted (the `close-1011` fault closes after the first).
    pub(super) published: bool,
}

impl Session {
    async fn run_loop<S>(&mut self, ws: &mut WebSocketStream<S>, expiry: Option<Instant>) -> End
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let conn = self.conn.clone();
        let variants = self.sh.variants;
        let wire = Wire::new(variants, self.sh.faults);
        let coalesce = variants.has(Variant::WritesCoalesced);
        let ping_every = if variants.has(Variant::PingsFrequent) {
            FREQUENT_PING
        } else {
            self.sh.limits.ping_interval
        };
        let grace = self.sh.limits.pong_grace;
        let mut next_ping = Instant::now() + ping_every;
        let mut pong_deadline: Option<Instant> = None;
        let mut batch: VecDeque<Item> = VecDeque::new();
        let sleep = tokio::time::sleep_until(next_ping);
        tokio::pin!(sleep);
        let mut armed = next_ping;
        // The due time last handed to the delay thread (injected delays only).
        let mut registered: Option<Instant> = None;
        // When frames held by `writes-coalesced` go out.
        let mut flush_at: Option<Instant> = None;
        loop {
            if let Some(code) = conn.out.close_requested() {
                return if code == ABORT {
                    End::Drop
                } else {
                    End::Close(code)
                };
            }
            let now = Instant::now();
            // Only `writes-coalesced` keeps frames in `batch` from one turn to the next.
            let room = WRITE_BATCH - batch.len();
            let due = conn.out.take(now, &mut batch, room);
            if let Some(d) = due.filter(|_| self.sh.precise_delays)
                && registered != Some(d)
            {
                super::delay::wake_at(d.into_std(), conn.clone());
                registered = Some(d);
            }
            let more = batch.len() == WRITE_BATCH;
            // `writes-coalesced` holds frames up to COALESCE to write them together, still
            // reading meanwhile (a server that stopped reading would dodge the rate limit).
            let hold = coalesce
                && !more
                && !batch.is_empty()
                && *flush_at.get_or_insert(now + COALESCE) > now;
            if !batch.is_empty() && !hold {
                flush_at = None;
                let written = tokio::select! {
                    biased;
                    _ = conn.out.close_signal() => continue,
                    r = write_batch(ws, &mut batch, wire) => r,
                };
                if written.is_err() {
                    return End::Drop;
                }
                if batch.capacity() > 32 {
                    // Bursts are rare for most connections: do not keep 10 KB per connection.
                    batch.shrink_to(0);
                }
            }
            let mut wake = pong_deadline.unwrap_or(next_ping).min(next_ping);
            if let Some(e) = expiry {
                wake = wake.min(e);
            }
            if let Some(d) = due.into_iter().chain(flush_at).min() {
                wake = wake.min(d);
            }
            if wake != armed {
                sleep.as_mut().reset(wake);
                armed = wake;
            }
            tokio::select! {
                biased;
                _ = conn.out.close_signal() => {}
                msg = ws.next() => {
                    pong_deadline = None;
                    match msg {
                        Some(Ok(msg)) => {
                            if let Some(end) = self.on_message(msg) {
                                return end;
                            }
                        }
                        Some(Err(e)) => return self.on_error(e),
                        None => return End::Drop,
                    }
                }
                _ = conn.out.pushed(), if !more => {}
                _ = std::future::ready(()), if more => {}
                () = &mut sleep => {
                    let now = Instant::now();
                    if expiry.is_some_and(|e| e <= now) {
                        return End::Close(close::TOKEN_EXPIRED);
                    }
                    if pong_deadline.is_some_and(|d| d <= now) {
                        // HB-2: silent for the grace period after a Ping: drop, no handshake.
                        self.sh.stats.heartbeat_drops.fetch_add(1, Ordering::Relaxed);
                        return End::Drop;
                    }
                    if next_ping <= now {
                        if timeout(grace, ws.send(Message::Ping(Default::default()))).await.is_err() {
                            return End::Drop;
                        }
                        // The first unanswered Ping sets the deadline: pings more often than
                        // the grace period must not push it back (HB-2).
                        pong_deadline.get_or_insert(now + grace);
                        next_ping = now + ping_every;
                        self.sh.stats.pings.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }

    /// Check 1 of §7.1: every text or binary frame takes a token (RATE-2).
    fn rate_ok(&mut self) -> bool {
        match &mut self.bucket {
            Some(b) if !self.sh.faults.has(Fault::NoRateLimit) => {
                let ok = b.take();
                if !ok {
                    self.sh.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
                }
                ok
            }
            _ => true,
        }
    }

    fn on_error(&mut self, e: WsError) -> End {
        match e {
            WsError::Capacity(_) => {
                if !self.rate_ok() {
                    return End::Close(close::OVER_MESSAGE_RATE);
                }
                End::Close(close::TOO_BIG)
            }
            WsError::Utf8(_) => {
                if !self.rate_ok() {
                    return End::Close(close::OVER_MESSAGE_RATE);
                }
                End::Close(close::INVALID_PAYLOAD)
            }
            WsError::Protocol(_) => End::Close(1002),
            _ => End::Drop,
        }
    }

    fn on_message(&mut self, msg: Message) -> Option<End> {
        let (len, text) = match msg {
            Message::Text(t) => (t.len(), Some(t)),
            Message::Binary(b) => (b.len(), None),
            Message::Close(_) => return Some(End::PeerClosed),
            // Pings are answered by tungstenite; pongs only prove liveness.
            Message::Pong(_) => {
                self.sh.stats.pongs.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            Message::Ping(_) | Message::Frame(_) => return None,
        };
        if !self.rate_ok() {
            if self.sh.faults.has(Fault::RateErrorFrame) {
                self.push(r#"{"type":"error","code":"over_message_rate"}"#.into());
                return None;
            }
            return Some(End::Close(close::OVER_MESSAGE_RATE));
        }
        let max = self.app.max_message_size;
        let f = self.sh.faults;
        let too_big = if f.has(Fault::NoSizeLimit) {
            false
        } else if f.has(Fault::SizeLimitOffByOne) {
            len >= max
        } else {
            len > max
        };
        if too_big {
            return Some(End::Close(close::TOO_BIG));
        }
        match text {
            Some(t) => self.on_text(&t),
            None => {
                self.error(
                    ErrorCode::MalformedMessage,
                    None,
                    "binary frames are not accepted; send JSON text",
                );
                None
            }
        }
    }
}
