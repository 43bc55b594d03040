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
    let head_len = loop {
        if let Some(n) = head_end(&buf)? {
            break n;
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
    };
    // An exact-size copy of what followed the head: tungstenite grows it to the
    // configured read buffer.
    let tail = buf.split_off(head_len);
    let tail = verify(&buf, &key, tail)?;
    Ok(WebSocketStream::from_partially_read(stream, tail, Role::Client, Some(config)).await)
}

/// Where the response head ends, once it is complete.
fn head_end(buf: &[u8]) -> Result<Option<usize>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    match resp
        .parse(buf)
        .map_err(|e| Error::Protocol(ProtocolError::HttparseError(e)))?
    {
        httparse::Status::Complete(n) => Ok(Some(n)),
        httparse::Status::Partial => Ok(None),
    }
}

/// The checks of RFC 6455 §4.1 as tungstenite's client makes them. A status other than
/// 101 is `Error::Http` with the bytes after the head as its body.
fn verify(head: &[u8], key: &str, tail: Vec<u8>) -> Result<Vec<u8>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    resp.parse(head)
        .map_err(|e| Error::Protocol(ProtocolError::HttparseError(e)))?;
    if resp.version.unwrap_or(0) < 1 {
        return Err(Error::Protocol(ProtocolError::WrongHttpVersion));
    }
    let status = resp.code.unwrap_or(0);
    if status != 101 {
        let response = http::Response::builder()
            .status(status)
            .body(Some(tail))
            .map_err(Error::HttpFormat)?;
        return Err(Error::Http(response.into()));
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
    Ok(tail)
}
