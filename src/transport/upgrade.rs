//! The client's WebSocket upgrade (RFC 6455 §4.1), read here instead of by tungstenite's
//! client handshake: tungstenite reads the response into a 4 KiB chunk that then becomes
//! the connection's read buffer for its whole life, whatever `read_buffer_size` says
//! (4 KiB per idle peer). Here the response head is read into a small buffer and only the
//! bytes after it (a `welcome` the server sent at once) are handed on, so the connection
//! starts with the configured buffer. The request comes from tungstenite
//! (`generate_request`), the checks are those of its client handshake, and failures are
//! its own error values, so they are classified exactly as before.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::{CapacityError, ProtocolError, SubProtocolError};
use tokio_tungstenite::tungstenite::handshake::client::{Request, generate_request};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::http;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error, Result};

use super::ws::{Stream, Ws};

/// The longest response head accepted (a server that never ends its head is refused).
const MAX_HEAD: usize = 64 * 1024;
/// Header lines parsed (tungstenite's limit).
const MAX_HEADERS: usize = 124;
/// Bytes read per call while the head is incomplete.
const READ_CHUNK: usize = 1024;

/// Sends the upgrade request and checks the server's answer; on 101 the WebSocket, with
/// whatever the server sent after the head already in it.
pub async fn client(request: Request, mut stream: Stream, config: WebSocketConfig) -> Result<Ws> {
    let (bytes, key) = generate_request(request)?;
    stream.write_all(&bytes).await?;
    stream.flush().await?;
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    loop {
        match read_head(&buf, &key)? {
            Head::Partial => {}
            Head::Switching(len) => {
                // An exact-size copy of what followed the head: tungstenite grows it to
                // the configured read buffer.
                let tail = buf.split_off(len);
                return Ok(WebSocketStream::from_partially_read(
                    stream,
                    tail,
                    Role::Client,
                    Some(config),
                )
                .await);
            }
            Head::Refused { len, status } => {
                // As tungstenite: the bytes after the head are the error's body.
                let response = http::Response::builder()
                    .status(status)
                    .body(Some(buf.split_off(len)))
                    .map_err(Error::HttpFormat)?;
                return Err(Error::Http(response.into()));
            }
        }
        if buf.len() >= MAX_HEAD {
            return Err(Error::Capacity(CapacityError::MessageTooLong {
                size: buf.len(),
                max_size: MAX_HEAD,
            }));
        }
        buf.reserve(READ_CHUNK);
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(Error::Protocol(ProtocolError::HandshakeIncomplete));
        }
    }
}

/// What the response head read so far says.
enum Head {
    Partial,
    /// 101 and every check passed; the head is `len` bytes.
    Switching(usize),
    /// Another status: the server refused the upgrade.
    Refused {
        len: usize,
        status: u16,
    },
}

/// Parses the head once it is complete and makes the checks of RFC 6455 §4.1 as
/// tungstenite's client makes them.
fn read_head(buf: &[u8], key: &str) -> Result<Head> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp
        .parse(buf)
        .map_err(|e| Error::Protocol(ProtocolError::HttparseError(e)))?
    {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Ok(Head::Partial),
    };
    if resp.version.unwrap_or(0) < 1 {
        return Err(Error::Protocol(ProtocolError::WrongHttpVersion));
    }
    let status = resp.code.unwrap_or(0);
    if status != 101 {
        return Ok(Head::Refused { len, status });
    }
    let header = |name: &str| {
        resp.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let text = |name: &str| header(name).and_then(|v| std::str::from_utf8(v).ok());
    if !text("Upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket")) {
        return Err(Error::Protocol(
            ProtocolError::MissingUpgradeWebSocketHeader,
        ));
    }
    if !text("Connection").is_some_and(|v| v.eq_ignore_ascii_case("Upgrade")) {
        return Err(Error::Protocol(
            ProtocolError::MissingConnectionUpgradeHeader,
        ));
    }
    if header("Sec-WebSocket-Accept") != Some(derive_accept_key(key.as_bytes()).as_bytes()) {
        return Err(Error::Protocol(
            ProtocolError::SecWebSocketAcceptKeyMismatch,
        ));
    }
    // We ask for no subprotocol; a server that picks one anyway is refused.
    if header("Sec-WebSocket-Protocol").is_some() {
        return Err(Error::Protocol(
            ProtocolError::SecWebSocketSubProtocolError(
                SubProtocolError::ServerSentSubProtocolNoneRequested,
            ),
        ));
    }
    Ok(Head::Switching(len))
}
