//! Shared helpers for the server integration tests: an embedded server on port 0, a raw
//! WebSocket test client whose every receive times out (2 s), token minting and a tiny
//! REST client. Nothing here can hang a test.
#![allow(dead_code)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde_json::{Value, json};
use stampede::embedded::{EmbeddedServer, Options};
use stampede::proto::auth;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Bytes as WsBytes, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long any single receive may take.
pub const RECV: Duration = Duration::from_secs(2);

/// The embedded server with test-friendly limits: no per-IP limit, default rate limit.
pub async fn start_server() -> EmbeddedServer {
    start_with(Options {
        ip_connect_limit: Some(0),
        ..Options::default()
    })
    .await
}

pub async fn start_with(opts: Options) -> EmbeddedServer {
    EmbeddedServer::start(opts)
        .await
        .expect("embedded server starts")
}

pub fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A token signed with the dev key; `claims` gets `exp` = now + 1 h unless it has one.
pub fn token(srv: &EmbeddedServer, mut claims: Value) -> String {
    let t = srv.target();
    if claims.get("exp").is_none() {
        claims["exp"] = json!(now_s() + 3600);
    }
    auth::mint(
        t.key_id.as_deref().unwrap(),
        t.secret.as_deref().unwrap().as_bytes(),
        &claims,
    )
}

/// `ws://…/v1?token=…` for `claims`.
pub fn token_url(srv: &EmbeddedServer, claims: Value) -> String {
    format!("{}?token={}", srv.target().ws_url, token(srv, claims))
}

/// A raw WebSocket client.
pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// What a close looked like from the client side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closed {
    Code(u16),
    /// The TCP connection ended without a close frame (1006).
    Abnormal,
}

impl Client {
    /// Opens a WebSocket (panics if the upgrade fails).
    pub async fn open(url: &str) -> Client {
        Self::try_open(url).await.expect("WebSocket upgrade")
    }

    pub async fn try_open(url: &str) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
        let req = url.into_client_request()?;
        Self::open_request(req).await
    }

    pub async fn open_request(
        req: tokio_tungstenite::tungstenite::handshake::client::Request,
    ) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
        let (ws, _) = timeout(RECV, tokio_tungstenite::connect_async(req))
            .await
            .expect("connect timed out")?;
        Ok(Client { ws })
    }

    /// Opens with a token for `claims` and returns the client and its welcome.
    pub async fn connect(srv: &EmbeddedServer, claims: Value) -> (Client, Value) {
        let mut c = Client::open(&token_url(srv, claims)).await;
        let welcome = c.recv().await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        (c, welcome)
    }

    /// A peer with `sub` = `peer` and every permission.
    pub async fn peer(srv: &EmbeddedServer, peer: &str) -> Client {
        Client::connect(srv, json!({"sub": peer})).await.0
    }

    pub async fn send(&mut self, v: Value) {
        self.send_text(&v.to_string()).await
    }

    pub async fn send_text(&mut self, text: &str) {
        timeout(RECV, self.ws.send(Message::text(text)))
            .await
            .expect("send timed out")
            .expect("send");
    }

    pub async fn send_binary(&mut self, data: Vec<u8>) {
        timeout(RECV, self.ws.send(Message::Binary(WsBytes::from(data))))
            .await
            .expect("send timed out")
            .expect("send");
    }

    /// The next application frame within `d`, or `Err(closed)` / `Ok(None)` on timeout.
    pub async fn next_within(&mut self, d: Duration) -> Result<Option<Value>, Closed> {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match timeout(left, self.ws.next()).await {
                Err(_) => return Ok(None),
                Ok(None) | Ok(Some(Err(_))) => return Err(Closed::Abnormal),
                Ok(Some(Ok(Message::Text(t)))) => {
                    return Ok(Some(serde_json::from_str(&t).unwrap_or_else(|e| {
                        panic!("server sent invalid JSON {t:?}: {e}")
                    })));
                }
                Ok(Some(Ok(Message::Close(frame)))) => {
                    return Err(Closed::Code(
                        frame.map_or(1005, |f: CloseFrame| f.code.into()),
                    ));
                }
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    /// The next application frame; panics after 2 s or on a close.
    pub async fn recv(&mut self) -> Value {
        match self.next_within(RECV).await {
            Ok(Some(v)) => v,
            Ok(None) => panic!("no frame within {RECV:?}"),
            Err(c) => panic!("connection closed ({c:?}) while waiting for a frame"),
        }
    }

    /// The next frame of type `ty`, skipping others (bounded).
    pub async fn recv_type(&mut self, ty: &str) -> Value {
        for _ in 0..1000 {
            let v = self.recv().await;
            if v["type"] == ty {
                return v;
            }
        }
        panic!("no {ty} frame in 1000 frames")
    }

    /// Asserts nothing arrives for `ms` milliseconds.
    pub async fn expect_silence(&mut self, ms: u64) {
        match self.next_within(Duration::from_millis(ms)).await {
            Ok(None) => {}
            Ok(Some(v)) => panic!("expected silence, got {v}"),
            Err(c) => panic!("expected silence, connection closed: {c:?}"),
        }
    }

    /// Reads until the connection closes (within `d`); returns how. Frames before the
    /// close are returned too.
    pub async fn closed_within(&mut self, d: Duration) -> (Closed, Vec<Value>) {
        let mut frames = Vec::new();
        let deadline = tokio::time::Instant::now() + d;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_within(left).await {
                Ok(Some(v)) => frames.push(v),
                Ok(None) => panic!("no close within {d:?}; frames: {frames:?}"),
                Err(c) => return (c, frames),
            }
        }
    }

    /// Expects a close with `code` (within 2 s) and no application frame before it.
    pub async fn expect_close(&mut self, code: u16) {
        let (closed, frames) = self.closed_within(RECV).await;
        assert_eq!(
            closed,
            Closed::Code(code),
            "frames before the close: {frames:?}"
        );
        assert!(frames.is_empty(), "frames before close {code}: {frames:?}");
    }

    /// Subscribes and returns (ack, snapshot).
    pub async fn subscribe(&mut self, channel: &str) -> (Value, Value) {
        self.send(
            json!({"type": "subscribe", "channel": channel, "requestId": format!("s-{channel}")}),
        )
        .await;
        let ack = self.recv().await;
        assert_eq!(
            ack,
            json!({"type": "ack", "requestId": format!("s-{channel}")})
        );
        let snapshot = self.recv().await;
        assert_eq!(snapshot["type"], "presence", "{snapshot}");
        (ack, snapshot)
    }

    /// Sends `frame` with requestId `rid` and expects the matching error `code`.
    pub async fn expect_error(&mut self, mut frame: Value, rid: &str, code: &str) {
        frame["requestId"] = json!(rid);
        self.send(frame).await;
        let e = self.recv().await;
        assert_eq!(e["type"], "error", "{e}");
        assert_eq!(e["code"], code, "{e}");
        assert_eq!(e["requestId"], rid, "{e}");
    }

    pub async fn close(mut self) {
        let _ = timeout(RECV, self.ws.close(None)).await;
        let _ = timeout(RECV, async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }
}

/// A REST response: status and JSON body (`Value::Null` when empty / not JSON).
pub async fn rest(
    srv: &EmbeddedServer,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: Option<&str>,
) -> (u16, Value) {
    let (status, text) = http(srv, method, path, auth, body).await;
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// The dev key's REST credential.
pub fn dev_auth(srv: &EmbeddedServer) -> String {
    let t = srv.target();
    format!(
        "{}:{}",
        t.key_id.as_deref().unwrap(),
        t.secret.as_deref().unwrap()
    )
}

/// One HTTP/1.1 request on a fresh connection; returns status and body text.
pub async fn http(
    srv: &EmbeddedServer,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    timeout(Duration::from_secs(5), async {
        let tcp = TcpStream::connect(srv.addr()).await.expect("connect");
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                .await
                .expect("handshake");
        tokio::spawn(conn);
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", srv.addr().to_string());
        if let Some(b) = bearer {
            req = req.header("authorization", format!("Bearer {b}"));
        }
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default().to_owned())))
            .unwrap();
        let resp = sender.send_request(req).await.expect("request");
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    })
    .await
    .expect("HTTP request timed out")
}

/// An admin-hook request.
pub async fn admin(
    srv: &EmbeddedServer,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let token = srv.target().admin_token.clone().unwrap();
    let body = body.map(|b| b.to_string());
    rest(srv, method, path, Some(&token), body.as_deref()).await
}

/// A fresh isolated app from the admin hook: (appId, keyId, secret, publishableKey).
pub async fn new_app(srv: &EmbeddedServer, spec: Value) -> (String, String, String, String) {
    let (status, v) = admin(srv, "POST", "/_admin/apps", Some(spec)).await;
    assert_eq!(status, 200, "{v}");
    let s = |k: &str| v[k].as_str().unwrap().to_owned();
    (s("appId"), s("keyId"), s("secret"), s("publishableKey"))
}

/// A token URL for an arbitrary key.
pub fn url_for(srv: &EmbeddedServer, key_id: &str, secret: &str, mut claims: Value) -> String {
    if claims.get("exp").is_none() {
        claims["exp"] = json!(now_s() + 3600);
    }
    format!(
        "{}?token={}",
        srv.target().ws_url,
        auth::mint(key_id, secret.as_bytes(), &claims)
    )
}
