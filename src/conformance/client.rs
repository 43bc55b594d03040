//! The suite's raw peers: a WebSocket connection that can send anything (typed, raw,
//! binary, invalid UTF-8, padded, fragmented) and records everything that arrives with
//! its arrival time, plus a one-shot HTTP client for the REST control plane.
//!
//! Connections can be bound to a chosen loopback source address (with
//! `IP_BIND_ADDRESS_NO_PORT`, LIMITS.md §A1b) so that the per-IP connect limit (RATE-5)
//! never bites cases that do not test it; against remote targets a [`Pacer`] keeps
//! connects within a budget instead. Every operation has a timeout.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use futures_util::stream::{SplitSink, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{CloseFrame, Frame};
use tokio_tungstenite::tungstenite::{self, Message};

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

/// Shortens text for messages, on a character boundary.
pub fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        text.to_owned()
    } else {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}… ({} bytes)", &text[..end], text.len())
    }
}

/// Why a connection could not be opened.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConnectError {
    /// The server answered the upgrade with an HTTP status instead of 101.
    #[error("upgrade refused with HTTP {status}")]
    Http { status: u16, body: String },
    #[error("cannot connect to {addr}: {why}")]
    Tcp { addr: String, why: String },
    #[error("no answer to the upgrade within {0} ms")]
    Timeout(u64),
    #[error("{0}")]
    Other(String),
}

type Ws = WebSocketStream<TcpStream>;

/// One open WebSocket connection.
pub struct WsConn {
    sink: SplitSink<Ws, Message>,
    rx: mpsc::UnboundedReceiver<Event>,
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

/// Where `url` points: host (for resolution) and port.
fn host_port(uri: &hyper::Uri) -> Result<(String, u16), ConnectError> {
    let host = uri
        .host()
        .ok_or_else(|| ConnectError::Other(format!("no host in {uri}")))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
        Some("wss" | "https") => 443,
        _ => 80,
    });
    Ok((host, port))
}

/// Opens a TCP connection, from `source` when given (port chosen at connect time).
async fn tcp_connect(
    host: &str,
    port: u16,
    source: Option<Ipv4Addr>,
    deadline: Instant,
) -> Result<TcpStream, ConnectError> {
    let label = format!("{host}:{port}");
    let tcp_err = |why: String| ConnectError::Tcp {
        addr: label.clone(),
        why,
    };
    let left = deadline.saturating_duration_since(Instant::now());
    let addrs: Vec<SocketAddr> = tokio::time::timeout(left, tokio::net::lookup_host((host, port)))
        .await
        .map_err(|_| tcp_err("name resolution timed out".into()))?
        .map_err(|e| tcp_err(e.to_string()))?
        .collect();
    let addr = addrs
        .iter()
        .find(|a| source.is_none() || a.is_ipv4())
        .copied()
        .ok_or_else(|| tcp_err("no usable address".into()))?;
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(|e| tcp_err(e.to_string()))?;
    if let Some(ip) = source {
        crate::net::bind_source(&socket, ip).map_err(|e| tcp_err(format!("bind {ip}: {e}")))?;
    }
    let left = deadline.saturating_duration_since(Instant::now());
    let stream = tokio::time::timeout(left, socket.connect(addr))
        .await
        .map_err(|_| tcp_err("connect timed out".into()))?
        .map_err(|e| tcp_err(e.to_string()))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Options of one connect.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    pub origin: Option<String>,
    pub source: Option<Ipv4Addr>,
    pub timeout_ms: u64,
}

impl WsConn {
    /// Opens `url` (which carries the credential in its query).
    pub async fn connect(url: &str, opts: &ConnectOptions) -> Result<WsConn, ConnectError> {
        let deadline = Instant::now() + Duration::from_millis(opts.timeout_ms);
        let mut request = url
            .into_client_request()
            .map_err(|e| ConnectError::Other(format!("bad URL {url}: {e}")))?;
        if let Some(origin) = &opts.origin {
            let value = origin
                .parse()
                .map_err(|_| ConnectError::Other(format!("bad Origin header {origin:?}")))?;
            request.headers_mut().insert("Origin", value);
        }
        let (host, port) = host_port(request.uri())?;
        if request.uri().scheme_str() == Some("wss") {
            return Err(ConnectError::Other(
                "wss:// is not supported by this build (no TLS); use ws://".into(),
            ));
        }
        let stream = tcp_connect(&host, port, opts.source, deadline).await?;
        let left = deadline.saturating_duration_since(Instant::now());
        let handshake =
            tokio_tungstenite::client_async_with_config(request, stream, Some(client_config()));
        let (ws, _response) = match tokio::time::timeout(left, handshake).await {
            Err(_) => return Err(ConnectError::Timeout(opts.timeout_ms)),
            Ok(Err(tungstenite::Error::Http(resp))) => {
                let body = resp
                    .body()
                    .as_deref()
                    .map(|b| clip(&String::from_utf8_lossy(b), 200))
                    .unwrap_or_default();
                return Err(ConnectError::Http {
                    status: resp.status().as_u16(),
                    body,
                });
            }
            Ok(Err(e)) => {
                return Err(ConnectError::Other(format!(
                    "WebSocket handshake failed: {e}"
                )));
            }
            Ok(Ok(pair)) => pair,
        };
        let (sink, mut stream) = ws.split();
        let (tx, rx) = mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            let mut closed = false;
            while let Some(item) = stream.next().await {
                let at = Instant::now();
                let event = match item {
                    Ok(Message::Text(t)) => Event::Text {
                        text: t.as_str().to_owned(),
                        at,
                    },
                    Ok(Message::Binary(b)) => Event::Binary { len: b.len(), at },
                    Ok(Message::Ping(_)) => Event::Ping { at },
                    Ok(Message::Pong(p)) => Event::Pong {
                        payload: p.to_vec(),
                        at,
                    },
                    Ok(Message::Close(frame)) => {
                        closed = true;
                        let (code, reason) = match frame {
                            Some(f) => (Some(u16::from(f.code)), f.reason.as_str().to_owned()),
                            None => (None, String::new()),
                        };
                        // Keep polling so tungstenite flushes its close reply; the
                        // server ends TCP right after (bounded by the connection's life).
                        let _ = tx.send(Event::Closed { code, reason, at });
                        continue;
                    }
                    Ok(Message::Frame(_)) => continue,
                    Err(e) => {
                        if !closed {
                            let _ = tx.send(Event::Dropped {
                                why: describe_ws_error(&e),
                                at,
                            });
                            closed = true;
                        }
                        break;
                    }
                };
                if closed {
                    continue;
                }
                if tx.send(event).is_err() {
                    break;
                }
            }
            if !closed {
                let _ = tx.send(Event::Dropped {
                    why: "connection ended without a close frame (1006)".into(),
                    at: Instant::now(),
                });
            }
        });
        Ok(WsConn {
            sink,
            rx,
            reader,
            pending: VecDeque::new(),
            ended: false,
            send_error: None,
        })
    }

    async fn write(&mut self, message: Message) -> Result<(), String> {
        let result = tokio::time::timeout(Duration::from_secs(5), self.sink.send(message)).await;
        let outcome = match result {
            Err(_) => Err("send timed out after 5 s (the server is not reading)".to_owned()),
            Ok(Err(e)) => Err(format!("send failed: {}", describe_ws_error(&e))),
            Ok(Ok(())) => Ok(()),
        };
        if let Err(e) = &outcome {
            self.send_error = Some(e.clone());
        }
        outcome
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
        let result = tokio::time::timeout(Duration::from_secs(5), self.sink.feed(message)).await;
        match result {
            Err(_) => Err("send timed out after 5 s".to_owned()),
            Ok(Err(e)) => Err(format!("send failed: {}", describe_ws_error(&e))),
            Ok(Ok(())) => Ok(()),
        }
        .inspect_err(|e| self.send_error = Some(e.clone()))
    }

    pub async fn flush(&mut self) -> Result<(), String> {
        let result = tokio::time::timeout(Duration::from_secs(5), self.sink.flush()).await;
        match result {
            Err(_) => Err("flush timed out after 5 s".to_owned()),
            Ok(Err(e)) => Err(format!("send failed: {}", describe_ws_error(&e))),
            Ok(Ok(())) => Ok(()),
        }
        .inspect_err(|e| self.send_error = Some(e.clone()))
    }

    pub async fn send_ping(&mut self, payload: Vec<u8>) -> Result<(), String> {
        self.write(Message::Ping(payload.into())).await
    }

    /// Starts a client close handshake.
    pub async fn close(&mut self, code: u16) -> Result<(), String> {
        self.write(Message::Close(Some(CloseFrame {
            code: code.into(),
            reason: "".into(),
        })))
        .await
    }

    /// The next event, waiting at most until `deadline`; `None` on timeout.
    pub async fn next_event(&mut self, deadline: Instant) -> Option<Event> {
        if let Some(e) = self.pending.pop_front() {
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
            if e.is_end() {
                self.ended = true;
            }
            out.push(e);
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
        // Dropping both halves closes the socket; the reader holds one of them.
        self.reader.abort();
    }
}

fn describe_ws_error(e: &tungstenite::Error) -> String {
    match e {
        tungstenite::Error::Io(io) => match io.kind() {
            std::io::ErrorKind::ConnectionReset => "connection reset by the server".into(),
            std::io::ErrorKind::BrokenPipe => "broken pipe (the server closed the socket)".into(),
            _ => format!("I/O error: {io}"),
        },
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
            "connection already closed".into()
        }
        tungstenite::Error::Protocol(p) => format!("protocol error: {p}"),
        tungstenite::Error::Utf8(u) => {
            format!("the server sent a text frame that is not UTF-8: {u}")
        }
        tungstenite::Error::Capacity(c) => format!("frame too large for the client: {c}"),
        other => other.to_string(),
    }
}

/// Hands out loopback source addresses 127.a.b.c, a different one per call, starting at
/// a per-process random offset so consecutive runs do not reuse each other's addresses.
#[derive(Debug)]
pub struct SourceIps {
    next: AtomicU32,
}

impl Default for SourceIps {
    fn default() -> Self {
        SourceIps {
            next: AtomicU32::new(rand::random::<u32>() % (200 * 65_536)),
        }
    }
}

impl SourceIps {
    pub fn next(&self) -> Ipv4Addr {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        // 254 × 256 × 254 addresses; 127.0.0.0/24 is left alone.
        let c = (n % 254) as u8 + 1;
        let b = ((n / 254) % 256) as u8;
        let a = ((n / (254 * 256)) % 254) as u8 + 1;
        Ipv4Addr::new(127, a, b, c)
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

/// An HTTP response, body collected.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

/// One HTTP/1.1 request on a fresh connection, bounded by `timeout`.
pub async fn http_request(
    url: &str,
    method: &str,
    headers: &[(String, String)],
    body: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<HttpResponse, String> {
    let fut = async {
        let uri: hyper::Uri = url.parse().map_err(|e| format!("bad URL {url}: {e}"))?;
        if uri.scheme_str() == Some("https") {
            return Err("https:// is not supported by this build (no TLS)".to_owned());
        }
        let (host, port) = host_port(&uri).map_err(|e| e.to_string())?;
        let deadline = Instant::now() + timeout;
        let stream = tcp_connect(&host, port, None, deadline)
            .await
            .map_err(|e| e.to_string())?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| format!("HTTP handshake with {host}:{port} failed: {e}"))?;
        let conn_task = tokio::spawn(conn);
        let path = uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/".into());
        let mut builder = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, format!("{host}:{port}"));
        let has_body = body.is_some();
        for (k, v) in headers {
            builder = builder.header(k.as_str(), v.as_str());
        }
        if has_body
            && !headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        {
            builder = builder.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let request = builder
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| format!("cannot build the request: {e}"))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("{method} {url} failed: {e}"))?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("reading the body of {method} {url} failed: {e}"))?
            .to_bytes()
            .to_vec();
        conn_task.abort();
        Ok(HttpResponse { status, body })
    };
    tokio::time::timeout(timeout, fut).await.map_err(|_| {
        format!(
            "{method} {url}: no response within {} ms",
            timeout.as_millis()
        )
    })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_ips_are_loopback_and_distinct() {
        let ips = SourceIps::default();
        let a = ips.next();
        let b = ips.next();
        assert!(a.is_loopback() && b.is_loopback());
        assert_ne!(a, b);
        assert_ne!(a.octets()[3], 0);
    }

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
        let e = WsConn::connect("ws://127.0.0.1:9/v1", &opts)
            .await
            .err()
            .unwrap();
        assert!(matches!(e, ConnectError::Tcp { .. }), "{e}");
    }
}
