//! Shared helpers for the server integration tests: an embedded server on port 0, a raw
//! WebSocket test client whose every receive times out (2 s), token minting and REST
//! calls, all through the harness's one transport (so `wss://` works the same). Nothing
//! here can hang a test.
#![allow(dead_code)]

pub mod hostile;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use stampede::embedded::{EmbeddedServer, Options};
use stampede::proto::auth;
use stampede::transport::{ConnectError, Connector, Dial, Ws, ws};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Bytes as WsBytes, Message};

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

/// The client side of `srv`: trusts its certificate when it serves TLS.
pub fn connector(srv: &EmbeddedServer) -> Connector {
    match &srv.target().ca_pem {
        Some(pem) => Connector::with_roots(Some(pem)),
        None => Connector::default(),
    }
}

/// A raw WebSocket client.
pub struct Client {
    pub ws: Ws,
}

/// What a close looked like from the client side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closed {
    Code(u16),
    /// The TCP connection ended without a close frame (1006).
    Abnormal,
}

impl Client {
    /// Opens a plain `ws://` WebSocket (panics if the upgrade fails).
    pub async fn open(url: &str) -> Client {
        Self::try_open(url).await.expect("WebSocket upgrade")
    }

    pub async fn try_open(url: &str) -> Result<Client, ConnectError> {
        Self::open_with(&Connector::default(), url, None).await
    }

    /// Opens through `connector` (TLS), with an `Origin` header when given.
    pub async fn open_with(
        connector: &Connector,
        url: &str,
        origin: Option<&str>,
    ) -> Result<Client, ConnectError> {
        let dial = Dial {
            origin,
            ..Dial::new(url, RECV)
        };
        // tungstenite's defaults: tests send frames far over any limit on purpose.
        let c = connector.dial(dial, WebSocketConfig::default()).await?;
        Ok(Client { ws: c.ws })
    }

    /// Opens with a token for `claims` and returns the client and its welcome.
    pub async fn connect(srv: &EmbeddedServer, claims: Value) -> (Client, Value) {
        let mut c = Client::open_with(&connector(srv), &token_url(srv, claims), None)
            .await
            .expect("WebSocket upgrade");
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

    /// Closes like a real client (close 1000, at most 1 s for the answer, TCP gone).
    pub async fn close(mut self) {
        ws::close(&mut self.ws, 1000, |_| {}).await;
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

/// One HTTP/1.1 request on a fresh connection to `srv` (`http://` or `https://`);
/// returns status and body text.
pub async fn http(
    srv: &EmbeddedServer,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let scheme = if srv.target().rest_url.starts_with("https://") {
        "https"
    } else {
        "http"
    };
    let url = format!("{scheme}://{}{path}", srv.addr());
    let headers: Vec<(String, String)> = bearer
        .map(|b| vec![("authorization".to_owned(), format!("Bearer {b}"))])
        .unwrap_or_default();
    let r = connector(srv)
        .http(
            &url,
            method,
            &headers,
            body.map(|b| b.as_bytes().to_vec()),
            Duration::from_secs(5),
        )
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    (r.status, r.text())
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

/// Runs `sc` against an embedded server that perturbs deliveries as `inject` says (no
/// per-IP limit) and judges it: the summary and what the server injected. The truth tests
/// compare the two.
pub async fn run_injected(
    inject: stampede::embedded::Inject,
    sc: stampede::load::scenario::Scenario,
) -> (
    stampede::report::Summary,
    stampede::embedded::InjectedCounts,
) {
    let server = start_with(Options {
        ip_connect_limit: Some(0),
        inject,
        ..Default::default()
    })
    .await;
    let (_keep, stop) = stampede::shutdown::Stop::never();
    let data = stampede::load::run_scenario(sc.clone(), server.target(), stop)
        .await
        .expect("run completes");
    let counts = server.injected();
    server.shutdown().await;
    let (s, _) = stampede::load::verdict::judge(&sc, &data);
    (s, counts)
}
