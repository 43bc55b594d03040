//! The WebSocket side: the upgrade with our buffer configuration, and the close
//! handshake the way browsers and the official SDKs do it.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};

use super::error::{ConnectError, Stage, TlsFailure};

/// A TCP or TLS stream. The TLS side is boxed: rustls' connection state is ~1.1 KB, and
/// inline (as in tokio-tungstenite's `MaybeTlsStream`) every plain connection would carry
/// that size too, several times over in the peer's task.
#[derive(Debug)]
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// An open WebSocket connection.
pub type Ws = WebSocketStream<Stream>;

/// How long a closing client waits for the server's close frame before it drops TCP
/// (browsers and the official SDKs wait about this long).
pub const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// The TCP socket under a stream (for linger, addresses).
pub fn tcp_of(stream: &Stream) -> &TcpStream {
    match stream {
        Stream::Tls(tls) => tls.get_ref().0,
        Stream::Plain(tcp) => tcp,
    }
}

/// Bytes a peer's connection reads at once (and keeps allocated while idle). Frames the
/// peers receive are mostly a few hundred bytes (presence, messages, candidates); a
/// larger frame grows the buffer for itself. 2 KiB instead of 4 saves 2 KB per idle peer.
pub const PEER_READ_BUFFER: usize = 2 * 1024;

/// The tungstenite configuration of simulated peers: small buffers (read 2 KiB, write
/// 4 KiB: ~5 KB per connection instead of ~138 KB, LIMITS.md), a write limit that fits
/// the largest frame the peer sends, and inbound frames up to `max_inbound`.
pub fn peer_config(largest_frame: usize, max_inbound: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(PEER_READ_BUFFER)
        .write_buffer_size(4 * 1024)
        .max_write_buffer_size((16 * 1024).max(largest_frame + 4 * 1024))
        .max_message_size(Some(max_inbound))
        .max_frame_size(Some(max_inbound))
}

/// Classifies an upgrade failure. TLS errors show up here too: with TLS 1.3 a server
/// that refuses the client certificate says so after the client finished its handshake,
/// on the first read.
pub(super) fn upgrade_error(e: tungstenite::Error, host: &str) -> ConnectError {
    match e {
        tungstenite::Error::Http(resp) => ConnectError::Http {
            status: resp.status().as_u16(),
            body: resp
                .body()
                .as_deref()
                .map(|b| clip(&String::from_utf8_lossy(b), 200))
                .unwrap_or_default(),
        },
        tungstenite::Error::Tls(t) => {
            let cause = match t {
                tungstenite::error::TlsError::Rustls(r) => TlsFailure::from_rustls(&r),
                other => TlsFailure::Other(other.to_string()),
            };
            ConnectError::Tls {
                host: host.to_owned(),
                cause,
            }
        }
        tungstenite::Error::Io(io) => match TlsFailure::from_io(&io) {
            Some(cause) => ConnectError::Tls {
                host: host.to_owned(),
                cause,
            },
            None => ConnectError::Handshake(describe_io(&io)),
        },
        other => ConnectError::Handshake(other.to_string()),
    }
}

/// Closes like a real client: sends a close frame with `code`, waits at most
/// [`CLOSE_WAIT`] for the server's (handing every message that arrives meanwhile to
/// `seen`), then ends TCP. Returns the server's close frame, if one came.
pub async fn close(
    ws: &mut Ws,
    code: u16,
    mut seen: impl FnMut(&Message),
) -> Option<Option<CloseFrame>> {
    let frame = CloseFrame {
        code: code.into(),
        reason: "".into(),
    };
    let deadline = tokio::time::Instant::now() + CLOSE_WAIT;
    let mut answer = None;
    if tokio::time::timeout_at(deadline, ws.close(Some(frame)))
        .await
        .is_ok_and(|r| r.is_ok())
    {
        answer = tokio::time::timeout_at(deadline, async {
            while let Some(Ok(m)) = ws.next().await {
                if let Message::Close(f) = &m {
                    return Some(f.clone());
                }
                seen(&m);
            }
            None
        })
        .await
        .ok()
        .flatten();
    }
    end_tcp(ws).await;
    answer
}

/// After the server's close frame: sends our answer (tungstenite queued it) and ends
/// TCP, both within [`CLOSE_WAIT`].
pub async fn answer_close(ws: &mut Ws) {
    let _ = tokio::time::timeout(CLOSE_WAIT, ws.flush()).await;
    end_tcp(ws).await;
}

/// Ends the connection at the TCP level now: TLS close_notify (bounded), then FIN in
/// both directions, even while the caller still holds the socket. The server sees the
/// client leave at once, whatever the caller does with the value afterwards.
pub async fn end_tcp(ws: &mut Ws) {
    let stream = ws.get_mut();
    if let Stream::Tls(tls) = stream {
        let _ = tokio::time::timeout(Duration::from_millis(200), tls.shutdown()).await;
    }
    let _ = socket2::SockRef::from(tcp_of(ws.get_ref())).shutdown(std::net::Shutdown::Both);
}

/// Makes dropping the connection send RST instead of FIN (no close handshake, no
/// TIME_WAIT left behind): a crashed or abruptly killed client.
pub fn abort_on_drop(ws: &Ws) {
    let _ = tcp_of(ws.get_ref()).set_zero_linger();
}

pub(super) fn describe_io(io: &std::io::Error) -> String {
    match io.kind() {
        std::io::ErrorKind::ConnectionReset => "connection reset by the server".into(),
        std::io::ErrorKind::BrokenPipe => "broken pipe (the server closed the socket)".into(),
        std::io::ErrorKind::UnexpectedEof => {
            "the server closed the connection during the handshake".into()
        }
        _ => format!("I/O error: {io}"),
    }
}

/// Describes a WebSocket error in a user's words.
pub fn describe(e: &tungstenite::Error) -> String {
    match e {
        tungstenite::Error::Io(io) => match TlsFailure::from_io(io) {
            Some(t) => format!("TLS: {t}"),
            None => describe_io(io),
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

/// The stage a connect timed out in.
pub(super) fn timed_out(stage: Stage, after: Duration) -> ConnectError {
    ConnectError::Timeout { stage, after }
}
