//! HTTP on the one listening port: the accept loop, the TLS handshake when TLS is on,
//! hyper serving each connection, the WebSocket upgrade at `/v1` (per-IP limit → 429,
//! then 101), REST under `/v1/…`, the admin hook under `/_admin/…`, 426 / 404 / 503
//! otherwise (CONN-5, SHUT-4).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use serde::ser::SerializeMap;
use serde_json::value::RawValue;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use super::session::{self, LiveGuard};
use super::state::Shared;
use super::{admin, rest, tls};

pub type Resp = Response<Full<Bytes>>;

/// A JSON object whose members serialize in the order written: `json!` sorts them (its
/// map is a BTreeMap without serde_json's `preserve_order`), while SPEC shows the bodies
/// the server writes itself, e.g. REST-42 `{"peerId", "closed"}`, in a fixed order.
#[derive(Debug)]
pub struct Ordered(pub Vec<(&'static str, Box<RawValue>)>);

impl Serialize for Ordered {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// `ordered!({"a": x, "b": y})`: an [`Ordered`] object (nest `ordered!` to keep the order
/// inside members too).
macro_rules! ordered {
    ({ $($k:literal : $v:expr),* $(,)? }) => {
        $crate::server::http::Ordered(vec![$((
            $k,
            // Values are strings, numbers, booleans, raw JSON and `Ordered`: never failing.
            serde_json::value::to_raw_value(&$v).expect("response members serialize"),
        )),*])
    };
}
pub(crate) use ordered;

/// A JSON response.
pub fn json_response<T: Serialize + ?Sized>(status: StatusCode, body: &T) -> Resp {
    // Our bodies are string-keyed maps, structs and raw JSON: serializing cannot fail.
    let text = serde_json::to_string(body).expect("response bodies serialize");
    let mut resp = Response::new(Full::new(Bytes::from(text)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// An error response `{"error","message"}` (REST-6).
pub fn error_response(status: StatusCode, code: &str, message: &str) -> Resp {
    json_response(status, &ordered!({"error": code, "message": message}))
}

/// Binds `addr` with a 4096 backlog (the kernel's somaxconn here; tokio's default is
/// 1024) and SO_REUSEADDR. SO_REUSEPORT is deliberately not set: a second server on the
/// same port would silently split the routing domain (AMB-17).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    TcpListener::from_std(socket.into())
}

/// The process's open-file limit (soft), if known.
pub fn fd_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes into the struct we pass.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 on every platform
    (rc == 0).then_some(lim.rlim_cur as u64)
}

/// Descriptors open in this process now.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// Accepts until `stop` turns true. Out of descriptors, it says so (once every 30 s) and
/// backs off instead of spinning. With `tls`, each connection's handshake runs in its own
/// task, so a slow client never holds up the accept loop.
pub async fn accept_loop(
    listener: TcpListener,
    sh: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    tls: Option<TlsAcceptor>,
) {
    let last_warning = AtomicI64::new(i64::MIN);
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = wait_true(&mut stop) => return,
        };
        match accepted {
            Ok((tcp, peer)) => {
                let _ = tcp.set_nodelay(true);
                match &tls {
                    None => tokio::spawn(serve_http(tcp, peer, sh.clone(), stop.clone())),
                    Some(acceptor) => tokio::spawn(serve_tls(
                        acceptor.clone(),
                        tcp,
                        peer,
                        sh.clone(),
                        stop.clone(),
                    )),
                };
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE)) => {
                let now = sh.clock.now_s();
                if now.saturating_sub(last_warning.load(Ordering::Relaxed)) >= 30 {
                    last_warning.store(now, Ordering::Relaxed);
                    let limit = fd_limit().map_or("unknown".into(), |l| l.to_string());
                    tracing::warn!(
                        "out of file descriptors: {} open, limit {limit}; raise ulimit -n or run more processes",
                        open_fds()
                    );
                    eprintln!(
                        "warning: out of file descriptors: {} open, limit {limit}; raise ulimit -n or run more processes",
                        open_fds()
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => {
                // ECONNABORTED and friends: the client gave up; nothing to do.
                tracing::debug!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
}

/// Resolves once the flag is true (or its sender is gone).
pub async fn wait_true(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// The TLS handshake, bounded, then HTTP over the TLS stream. A failed handshake is
/// the client's problem: counted and logged at debug level, nothing more.
async fn serve_tls(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    sh: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let handshake = tokio::select! {
        r = tokio::time::timeout(tls::HANDSHAKE_TIMEOUT, acceptor.accept(tcp)) => r,
        _ = wait_true(&mut stop) => return,
    };
    let why = match handshake {
        Ok(Ok(stream)) => return serve_http(stream, peer, sh, stop).await,
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("not finished within {:?}", tls::HANDSHAKE_TIMEOUT),
    };
    sh.stats
        .tls_handshake_failures
        .fetch_add(1, Ordering::Relaxed);
    tracing::debug!("TLS handshake with {peer} failed: {why}");
}

/// HTTP/1.1 on one connection, plain TCP or TLS.
async fn serve_http<S>(io: S, peer: SocketAddr, sh: Arc<Shared>, mut stop: watch::Receiver<bool>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req| {
        let sh = sh.clone();
        async move { Ok::<_, Infallible>(route(&sh, req, peer).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        // A client that never finishes its headers must not hold a descriptor forever.
        .header_read_timeout(Duration::from_secs(10))
        .max_buf_size(128 * 1024)
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = wait_true(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(1), conn).await;
        }
    }
}

fn header_has_token(req: &Request<Incoming>, name: header::HeaderName, token: &str) -> bool {
    req.headers().get_all(name).iter().any(|v| {
        v.to_str()
            .unwrap_or_default()
            .split(',')
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    })
}

async fn route(sh: &Arc<Shared>, req: Request<Incoming>, peer: SocketAddr) -> Resp {
    let path = req.uri().path();
    let endpoint = if sh.faults.has(super::faults::Fault::EndpointMoved) {
        path == "/ws"
    } else {
        path == "/v1" || path == "/v1/"
    };
    if endpoint {
        let upgrade = header_has_token(&req, header::UPGRADE, "websocket");
        if sh.is_shutting_down() {
            return error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "internal_error",
                "server is shutting down",
            );
        }
        if !upgrade {
            return if req.method() == Method::GET {
                let mut r = error_response(
                    StatusCode::UPGRADE_REQUIRED,
                    "upgrade_required",
                    "this is the WebSocket endpoint: connect with a WebSocket client",
                );
                r.headers_mut()
                    .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
                r
            } else {
                error_response(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
            };
        }
        return upgrade_ws(sh, req, peer);
    }
    if path.starts_with("/v1/") {
        return rest::handle(sh, req).await;
    }
    if path.starts_with("/_admin/") && sh.admin_token.is_some() {
        return admin::handle(sh, req).await;
    }
    error_response(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

fn upgrade_ws(sh: &Arc<Shared>, mut req: Request<Incoming>, peer: SocketAddr) -> Resp {
    // RATE-5: every upgrade request takes one attempt, before anything else is looked at.
    if !sh.ip_limiter.allow(peer.ip()) && !sh.faults.has(super::faults::Fault::IpLimitOff) {
        sh.stats.ip_limited.fetch_add(1, Ordering::Relaxed);
        return error_response(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_requests",
            "too many connection attempts from this address",
        );
    }
    if req.method() != Method::GET || !header_has_token(&req, header::CONNECTION, "upgrade") {
        return error_response(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "not a WebSocket upgrade request",
        );
    }
    if req
        .headers()
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(|v| v.as_bytes())
        != Some(b"13")
    {
        let mut r = error_response(
            StatusCode::UPGRADE_REQUIRED,
            "upgrade_required",
            "WebSocket version 13 is required",
        );
        r.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return r;
    }
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY) else {
        return error_response(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Sec-WebSocket-Key is missing",
        );
    };
    let accept = derive_accept_key(key.as_bytes());
    let query = req.uri().query().map(str::to_owned);
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let on_upgrade = hyper::upgrade::on(&mut req);
    let guard = LiveGuard::new(sh);
    let subprotocol = sh.faults.has(super::faults::Fault::SubprotocolForced);
    let sh = sh.clone();
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => session::serve(sh, upgraded, query, origin, guard).await,
            Err(e) => tracing::debug!("upgrade failed: {e}"),
        }
    });
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
        if subprotocol {
            h.insert(
                header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_static("metered"),
            );
        }
    }
    resp
}
