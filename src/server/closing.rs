//! The closing half of a connection and the write path: the stream a WebSocket runs
//! over ([`Transport`]), the close handshake (CLOSE-18), the graceful-shutdown close
//! (SHUT-1, `going_away` then 1001), and writing a batch of queued frames. Split from
//! `session.rs`, which owns the main loop.

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};
use tokio_rustls::server::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::faults::Fault;
use super::hub::Conn;
use super::outbox::Item;
use super::session::End;
use super::state::Shared;
use super::variant_io::{Chunked, Wire};
use crate::proto::{ServerFrame, close};

/// How long the server waits for the client's close frame (CLOSE-18).
pub(super) const CLOSE_HANDSHAKE: Duration = Duration::from_secs(1);

/// A stream a WebSocket runs over, and how it ends after the close handshake.
pub(super) trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Called once the WebSocket is done with the stream, before it is dropped.
    fn end(&mut self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

// TCP needs nothing: dropping the socket closes it.
impl Transport for TcpStream {}
impl Transport for TokioIo<Upgraded> {}

impl<S: Transport> Transport for Chunked<S> {
    async fn end(&mut self) {
        self.get_mut().end().await
    }
}

impl Transport for TlsStream<TcpStream> {
    /// Sends close_notify (RFC 8446 §6.1), so a client sees the end of the stream rather
    /// than a truncation. Bounded: a client that stopped reading must not hold the task.
    async fn end(&mut self) {
        let _ = timeout(Duration::from_millis(250), self.shutdown()).await;
    }
}

pub(super) fn close_reason(code: u16) -> &'static str {
    match code {
        close::GOING_AWAY => "server shutting down",
        close::INVALID_PAYLOAD => "invalid UTF-8 in text frame",
        close::TOO_BIG => "frame larger than maxMessageSize",
        close::INTERNAL => "internal error",
        close::TOKEN_EXPIRED => "token expired",
        close::CHANNEL_NOT_AUTHORIZED => "channel not authorized",
        close::OVER_CONCURRENT_LIMIT => "over concurrent connection limit",
        close::OVER_MESSAGE_RATE => "over message rate",
        close::ACCOUNT_SUSPENDED => "account suspended",
        close::ADMIN_DISCONNECT => "admin disconnect",
        close::NORMAL => "closed by server",
        1002 => "protocol error",
        1013 => "slow consumer: outbound queue full",
        _ => "closing",
    }
}

/// Sends a close frame and waits (bounded) for the client's (CLOSE-18); the caller then
/// drops TCP.
pub(super) async fn close_with<S: Transport>(ws: &mut WebSocketStream<S>, code: u16, reason: &str) {
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    };
    let _ = timeout(CLOSE_HANDSHAKE, async {
        if ws.send(Message::Close(Some(frame))).await.is_err() {
            return;
        }
        while let Some(Ok(msg)) = ws.next().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
    ws.get_mut().end().await;
}

/// The `leave-on-tcp-close` variant, as servers on Node's `ws` behave: answer the
/// client's close, end our side, and consider the connection (and the peer's presence)
/// over only when the client's TCP connection closes, or after 30 s (`ws`'s
/// closeTimeout).
pub(super) async fn linger_until_tcp_closes<S: Transport>(ws: &mut WebSocketStream<S>) {
    let _ = timeout(CLOSE_HANDSHAKE, ws.flush()).await;
    let _ = timeout(Duration::from_millis(250), ws.get_mut().shutdown()).await;
    let _ = timeout(Duration::from_secs(30), async {
        let mut buf = [0u8; 256];
        while matches!(ws.get_mut().read(&mut buf).await, Ok(n) if n > 0) {}
    })
    .await;
}

/// Completes the close the main loop decided on.
pub(super) async fn finish<S: Transport>(
    sh: &Shared,
    ws: &mut WebSocketStream<S>,
    conn: &Conn,
    end: End,
) {
    match end {
        End::Close(close::GOING_AWAY) => {
            let mut batch = VecDeque::new();
            conn.out.take(Instant::now(), &mut batch, usize::MAX);
            // Frames already queued go out first, briefly bounded: the drain is 5 s in all.
            let wire = Wire::new(sh.variants, sh.faults);
            let _ = timeout(
                Duration::from_millis(250),
                write_batch(ws, &mut batch, wire),
            )
            .await;
            let f = sh.faults;
            if !f.has(Fault::NoGoingAway) {
                let retry_after_ms = if f.has(Fault::GoingAwayZeroRetry) {
                    0
                } else {
                    sh.limits.going_away_retry_after_ms
                };
                let ga = ServerFrame::GoingAway { retry_after_ms }.to_text();
                let mut last = VecDeque::from([Item {
                    text: ga.into(),
                    due: None,
                }]);
                if f.has(Fault::FramesAfterGoingAway) {
                    last.push_back(Item {
                        text: r#"{"type":"pong"}"#.into(),
                        due: None,
                    });
                }
                let _ = timeout(Duration::from_millis(100), write_batch(ws, &mut last, wire)).await;
            }
            let code = if f.has(Fault::GoingAwayCloses1000) {
                close::NORMAL
            } else {
                close::GOING_AWAY
            };
            close_with(ws, code, close_reason(code)).await;
        }
        End::Close(close::TOKEN_EXPIRED) if sh.faults.has(Fault::ExpiryGoingAway) => {
            let ga = ServerFrame::GoingAway {
                retry_after_ms: sh.limits.going_away_retry_after_ms,
            };
            let text = ga.to_text().into();
            let _ = timeout(CLOSE_HANDSHAKE, ws.send(Message::Text(text))).await;
            close_with(ws, close::TOKEN_EXPIRED, close_reason(close::TOKEN_EXPIRED)).await;
        }
        End::Close(code) => close_with(ws, code, close_reason(code)).await,
        End::PeerClosed => {
            // tungstenite queued the reply close; write it out.
            let _ = timeout(CLOSE_HANDSHAKE, ws.flush()).await;
            ws.get_mut().end().await;
        }
        End::Drop => {}
    }
}

/// Writes the batch and flushes once (frames queued together share TCP writes).
pub(super) async fn write_batch<S>(
    ws: &mut WebSocketStream<S>,
    batch: &mut VecDeque<Item>,
    wire: Wire,
) -> Result<(), WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    while let Some(item) = batch.pop_front() {
        if wire.plain() {
            ws.feed(Message::Text(item.text)).await?;
        } else {
            for frame in wire.frames(item.text) {
                ws.feed(Message::Frame(frame)).await?;
            }
        }
    }
    ws.flush().await
}
