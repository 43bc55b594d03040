//! The suite's raw peers: a WebSocket connection (through [`crate::transport`]) that can
//! send anything (typed, raw, binary, invalid UTF-8, padded, fragmented) and records
//! everything that arrives with its arrival time.
//!
//! Connections can be bound to a chosen loopback source address (with
//! `IP_BIND_ADDRESS_NO_PORT`, LIMITS.md §A1b) so that the per-IP connect limit (RATE-5)
//! never bites cases that do not test it; against remote targets a [`Pacer`] keeps
//! connects within a budget instead. Every operation has a timeout, every queue a bound.

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use futures_util::stream::{SplitSink, SplitStream, StreamExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{CloseFrame, Frame};
use tokio_tungstenite::tungstenite::{self, Message};

use crate::transport::{Connector, Dial, Ws, ws};

/// Something that happened on a connection, stamped on arrival.
#[derive(Debug, Clone)]
pub enum Event {
    Text {
        text: String,
        at: Instant,
    },
    Binary {
        len: usize,
        at: Instant,
    },
    Ping {
        at: Instant,
    },
    Pong {
        payload: Vec<u8>,
        at: Instant,
    },
    /// The server's close frame (code `None` when the frame had no code).
    Closed {
        code: Option<u16>,
        reason: String,
        at: Instant,
    },
    /// The connection ended without a close frame (EOF, reset, protocol error).
    Dropped {
        why: String,
        at: Instant,
    },
}

impl Event {
    pub fn at(&self) -> Instant {
        match self {
            Event::Text { at, .. }
            | Event::Binary { at, .. }
            | Event::Ping { at }
            | Event::Pong { at, .. }
            | Event::Closed { at, .. }
            | Event::Dropped { at, .. } => *at,
        }
    }

    /// The kind, for counting (`text`, `ping`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Text { .. } => "text",
            Event::Binary { .. } => "binary",
            Event::Ping { .. } => "ping",
            Event::Pong { .. } => "pong",
            Event::Closed { .. } => "close",
            Event::Dropped { .. } => "dropped",
        }
    }

    pub fn is_end(&self) -> bool {
        matches!(self, Event::Closed { .. } | Event::Dropped { .. })
    }

    /// One line for transcripts.
    pub fn describe(&self) -> String {
        match self {
            Event::Text { text, .. } => clip(text, 300),
            Event::Binary { len, .. } => format!("(binary frame, {len} bytes)"),
            Event::Ping { .. } => "(ping control frame)".into(),
            Event::Pong { payload, .. } => {
                format!(
                    "(pong control frame {:?})",
                    String::from_utf8_lossy(payload)
                )
            }
            Event::Closed {
                code: Some(c),
                reason,
                ..
            } => format!(
                "(close {c} {}{})",
                crate::proto::close::name(*c),
                if reason.is_empty() {
                    String::new()
                } else {
                    format!(" \"{reason}\"")
                }
            ),
            Event::Closed { code: None, .. } => "(close without code)".into(),
            Event::Dropped { why, .. } => format!("(connection dropped: {why})"),
        }
    }
}

pub use crate::transport::ws::clip;
pub use crate::transport::{ConnectError, socket::SourceIps};

/// Events a connection buffers for the runner. When the runner does not read them the
/// reader stops reading the socket, and TCP flow control holds the server back: a
/// flooding server cannot grow the harness's memory.
const EVENT_QUEUE: usize = 1024;

/// How long a send may take before the server counts as not reading.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

type Sink = Arc<tokio::sync::Mutex<Option<SplitSink<Ws, Message>>>>;

/// One open WebSocket connection: a reader task stamps everything that arrives, the
/// runner writes through the shared sink. The connection ends like a real client's:
/// after the server's close frame (answered) or our own close (at most 1 s for the
/// server's), TCP goes away.
pub struct WsConn {
    /// The writing half; `None` once the connection is over. The reader takes it to
    /// end the connection when the server closes.
    sink: Sink,
    rx: mpsc::Receiver<Event>,
    reader: JoinHandle<()>,
    /// Events taken from the reader but not yet consumed by a step.
    pending: VecDeque<Event>,
    ended: bool,
    /// Last send failure: writes can fail while the close that explains them is still
    /// in flight (a 1009 close followed by a reset), so it is a note, not a verdict.
    pub send_error: Option<String>,
}

/// Client buffers: small (LIMITS.md recommendation 1), but accepting frames up to 2 MiB
/// since servers may send frames larger than `maxMessageSize` (LIM-2).
fn client_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(4 * 1024 * 1024)
        .max_message_size(Some(2 * 1024 * 1024))
        .max_frame_size(Some(2 * 1024 * 1024))
}

/// Options of one connect.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    pub origin: Option<String>,
    pub source: Option<Ipv4Addr>,
    pub timeout_ms: u64,
}

type SinkOp<'s> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<(), tungstenite::Error>> + Send + 's>,
>;

impl WsConn {
    /// Opens `url` (which carries the credential in its query).
    pub async fn connect(
        connector: &Connector,
        url: &str,
        opts: &ConnectOptions,
    ) -> Result<WsConn, ConnectError> {
        let dial = Dial {
            source: opts.source,
            origin: opts.origin.as_deref(),
            ..Dial::new(url, Duration::from_millis(opts.timeout_ms))
        };
        let connected = connector.dial(dial, client_config()).await?;
        let (sink, stream) = connected.ws.split();
        let sink: Sink = Arc::new(tokio::sync::Mutex::new(Some(sink)));
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        let reader = tokio::spawn(read(stream, sink.clone(), tx));
        Ok(WsConn {
            sink,
            rx,
            reader,
            pending: VecDeque::new(),
            ended: false,
            send_error: None,
        })
    }

    /// Runs one sink operation under the send timeout; a failure is kept as a note.
    async fn on_sink<F>(&mut self, what: &str, op: F) -> Result<(), String>
    where
        F: for<'s> FnOnce(&'s mut SplitSink<Ws, Message>) -> SinkOp<'s>,
    {
        let mut guard = self.sink.lock().await;
        let outcome = match guard.as_mut() {
            None => Err(format!("{what} failed: the connection is closed")),
            Some(s) => match tokio::time::timeout(SEND_TIMEOUT, op(s)).await {
                Err(_) => Err(format!(
                    "{what} timed out after {} s (the server is not reading)",
                    SEND_TIMEOUT.as_secs()
                )),
                Ok(Err(e)) => Err(format!("{what} failed: {}", ws::describe(&e))),
                Ok(Ok(())) => Ok(()),
            },
        };
        drop(guard);
        if let Err(e) = &outcome {
            self.send_error = Some(e.clone());
        }
        outcome
    }

    async fn write(&mut self, message: Message) -> Result<(), String> {
        self.on_sink("send", |s| Box::pin(s.send(message))).await
    }

    pub async fn send_text(&mut self, text: String) -> Result<(), String> {
        self.write(Message::text(text)).await
    }

    pub async fn send_binary(&mut self, bytes: Vec<u8>) -> Result<(), String> {
        self.write(Message::binary(bytes)).await
    }

    /// A text frame with arbitrary bytes (possibly invalid UTF-8, FRAME-11).
    pub async fn send_text_bytes(&mut self, bytes: Vec<u8>) -> Result<(), String> {
        self.write(Message::Frame(Frame::message(
            bytes,
            OpCode::Data(Data::Text),
            true,
        )))
        .await
    }

    /// A text message split into `pieces` fragments.
    pub async fn send_fragmented(&mut self, text: String, pieces: usize) -> Result<(), String> {
        if pieces <= 1 {
            return self.send_text(text).await;
        }
        let bytes = text.into_bytes();
        let chunk = bytes.len().div_ceil(pieces).max(1);
        let chunks: Vec<&[u8]> = bytes.chunks(chunk).collect();
        let last = chunks.len() - 1;
        for (i, part) in chunks.iter().enumerate() {
            let opcode = if i == 0 {
                OpCode::Data(Data::Text)
            } else {
                OpCode::Data(Data::Continue)
            };
            self.feed(Message::Frame(Frame::message(
                part.to_vec(),
                opcode,
                i == last,
            )))
            .await?;
        }
        self.flush().await
    }

    /// Queues without flushing (for bursts); `flush` sends.
    pub async fn feed(&mut self, message: Message) -> Result<(), String> {
        self.on_sink("send", |s| Box::pin(s.feed(message))).await
    }

    pub async fn flush(&mut self) -> Result<(), String> {
        self.on_sink("flush", |s| Box::pin(s.flush())).await
    }

    pub async fn send_ping(&mut self, payload: Vec<u8>) -> Result<(), String> {
        self.write(Message::Ping(payload.into())).await
    }

    /// Closes like a real client: our close frame, at most 1 s for the server's (kept
    /// as an event, with whatever arrives meanwhile), then TCP goes away.
    pub async fn close(&mut self, code: u16) -> Result<(), String> {
        let sent = self
            .write(Message::Close(Some(CloseFrame {
                code: code.into(),
                reason: "".into(),
            })))
            .await;
        let deadline = tokio::time::Instant::now() + ws::CLOSE_WAIT;
        while !self.reader.is_finished() {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                e = self.rx.recv() => match e {
                    Some(e) => self.pending.push_back(e),
                    None => break,
                },
            }
        }
        if !self.reader.is_finished() {
            // No close from the server in time: drop TCP ourselves.
            self.reader.abort();
            self.sink.lock().await.take();
        }
        while let Ok(e) = self.rx.try_recv() {
            self.pending.push_back(e);
        }
        sent
    }

    /// The next event, waiting at most until `deadline`; `None` on timeout.
    pub async fn next_event(&mut self, deadline: Instant) -> Option<Event> {
        if let Some(e) = self.pending.pop_front() {
            if e.is_end() {
                self.ended = true;
            }
            return Some(e);
        }
        if self.ended {
            return None;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, self.rx.recv()).await {
            Ok(Some(e)) => {
                if e.is_end() {
                    self.ended = true;
                }
                Some(e)
            }
            Ok(None) => {
                self.ended = true;
                None
            }
            Err(_) => None,
        }
    }

    /// Puts events back at the front, in order (for steps that look without consuming).
    pub fn unread(&mut self, events: Vec<Event>) {
        for e in events.into_iter().rev() {
            self.pending.push_front(e);
        }
    }

    /// Everything already received, without waiting.
    pub fn drain_now(&mut self) -> Vec<Event> {
        let mut out: Vec<Event> = self.pending.drain(..).collect();
        while let Ok(e) = self.rx.try_recv() {
            out.push(e);
        }
        if out.iter().any(Event::is_end) {
            self.ended = true;
        }
        out
    }

    /// Whether the end of the connection has been received.
    pub fn ended(&self) -> bool {
        self.ended
    }
}

impl Drop for WsConn {
    fn drop(&mut self) {
        // The reader holds the other half; with both gone the socket closes (FIN).
        self.reader.abort();
    }
}

/// The reader task: stamps every arrival; on the server's close frame it answers and
/// ends TCP, on an error or EOF it drops the connection.
async fn read(mut stream: SplitStream<Ws>, sink: Sink, tx: mpsc::Sender<Event>) {
    loop {
        let item = stream.next().await;
        let at = Instant::now();
        let event = match item {
            Some(Ok(Message::Text(t))) => Event::Text {
                text: t.as_str().to_owned(),
                at,
            },
            Some(Ok(Message::Binary(b))) => Event::Binary { len: b.len(), at },
            Some(Ok(Message::Ping(_))) => Event::Ping { at },
            Some(Ok(Message::Pong(p))) => Event::Pong {
                payload: p.to_vec(),
                at,
            },
            Some(Ok(Message::Frame(_))) => continue,
            Some(Ok(Message::Close(frame))) => {
                let (code, reason) = match frame {
                    Some(f) => (Some(u16::from(f.code)), f.reason.as_str().to_owned()),
                    None => (None, String::new()),
                };
                // Answer first: the server sees the client leave whatever the runner
                // is doing (the event keeps its arrival time).
                let half = sink.lock().await.take();
                if let Some(Ok(mut ws)) = half.map(|h| stream.reunite(h)) {
                    ws::answer_close(&mut ws).await;
                }
                let _ = tx.send(Event::Closed { code, reason, at }).await;
                return;
            }
            Some(Err(e)) => Event::Dropped {
                why: ws::describe(&e),
                at,
            },
            None => Event::Dropped {
                why: "connection ended without a close frame (1006)".into(),
                at,
            },
        };
        let end = event.is_end();
        if tx.send(event).await.is_err() || end {
            sink.lock().await.take();
            return;
        }
    }
}

/// Keeps connects within `per_minute` per sliding 60 s window, so a remote server's
/// per-IP limit (RATE-5) is not hit by the suite itself.
#[derive(Debug)]
pub struct Pacer {
    per_minute: u32,
    window: Mutex<VecDeque<Instant>>,
    /// How many tasks wait right now, and since when someone has been waiting: the
    /// reported cost is wall time with at least one waiter, not the sum of all waits.
    waiting: Mutex<(u32, Option<Instant>)>,
    waited_ms: AtomicU64,
}

impl Pacer {
    pub fn new(per_minute: u32) -> Pacer {
        Pacer {
            per_minute: per_minute.max(1),
            window: Mutex::new(VecDeque::new()),
            waiting: Mutex::new((0, None)),
            waited_ms: AtomicU64::new(0),
        }
    }

    /// Waits until a connect fits the budget, then records it.
    pub async fn acquire(&self) {
        const WINDOW: Duration = Duration::from_secs(60);
        loop {
            let wait = {
                let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                while w.front().is_some_and(|t| now.duration_since(*t) >= WINDOW) {
                    w.pop_front();
                }
                if (w.len() as u32) < self.per_minute {
                    w.push_back(now);
                    return;
                }
                (w[0] + WINDOW).saturating_duration_since(now) + Duration::from_millis(10)
            };
            self.sleep(wait).await;
        }
    }

    /// Sleeps and counts the time as pacing cost (also when the sleep is cancelled).
    pub async fn sleep(&self, d: Duration) {
        struct Waiting<'p>(&'p Pacer);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                let mut w = self.0.waiting.lock().unwrap_or_else(|p| p.into_inner());
                w.0 -= 1;
                if w.0 == 0
                    && let Some(since) = w.1.take()
                {
                    self.0
                        .waited_ms
                        .fetch_add(since.elapsed().as_millis() as u64, Ordering::Relaxed);
                }
            }
        }
        {
            let mut w = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
            if w.0 == 0 {
                w.1 = Some(Instant::now());
            }
            w.0 += 1;
        }
        let _guard = Waiting(self);
        tokio::time::sleep(d).await;
    }

    /// Total time connects waited for the budget or for a 429 to pass.
    pub fn waited(&self) -> Duration {
        Duration::from_millis(self.waited_ms.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pacer_admits_the_budget_at_once() {
        let p = Pacer::new(3);
        let start = Instant::now();
        for _ in 0..3 {
            p.acquire().await;
        }
        assert!(start.elapsed() < Duration::from_millis(100));
        assert_eq!(p.waited(), Duration::ZERO);
    }

    #[tokio::test]
    async fn unreachable_is_a_tcp_error() {
        let opts = ConnectOptions {
            timeout_ms: 2000,
            ..Default::default()
        };
        let e = WsConn::connect(&Connector::default(), "ws://127.0.0.1:9/v1", &opts)
            .await
            .err()
            .unwrap();
        assert!(matches!(e, ConnectError::Tcp { .. }), "{e}");
    }
}
