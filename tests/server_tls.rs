//! The reference server over TLS: one port for `wss://`, `https://` and the admin hook,
//! certificates a client must trust, client certificates, session resumption, failed
//! handshakes counted. Raw tokio-rustls and hand-written HTTP/1.1, so these tests depend on
//! no WebSocket or HTTP client stack; every wait is bounded.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, HandshakeKind, RootCertStore};
use serde_json::json;
use stampede::embedded::{EmbeddedServer, Options, Tls};
use stampede::server::tls::{self, Generated, Validity};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Bound on a connect + handshake, and on reading one response.
const WAIT: Duration = Duration::from_secs(5);

/// A client config trusting `trust_pem`, presenting `cert` when given; the aws-lc-rs
/// provider is explicit, as in the server.
fn client_config(
    trust_pem: &str,
    cert: Option<&Generated>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(trust_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = ClientConfig::builder_with_provider(tls::provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match cert {
        None => builder.with_no_client_auth(),
        Some(g) => {
            let chain = CertificateDer::pem_slice_iter(g.cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_slice(g.key_pem.as_bytes()).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

fn trusting(trust_pem: &str) -> Arc<ClientConfig> {
    client_config(trust_pem, None, rustls::DEFAULT_VERSIONS)
}

/// TCP connect and TLS handshake to the embedded server, as `name` (SNI and the name the
/// certificate must be valid for).
async fn connect(
    srv: &EmbeddedServer,
    config: &Arc<ClientConfig>,
    name: &str,
) -> io::Result<TlsStream<TcpStream>> {
    let name = ServerName::try_from(name.to_owned()).unwrap();
    timeout(WAIT, async {
        let tcp = TcpStream::connect(srv.addr()).await?;
        TlsConnector::from(config.clone()).connect(name, tcp).await
    })
    .await
    .unwrap_or_else(|_| {
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "handshake timed out",
        ))
    })
}

/// Writes `request` and reads until the server closes (or fails) or `until` shows up in
/// what was read; an error only if nothing at all came back.
async fn exchange(
    stream: &mut TlsStream<TcpStream>,
    request: &str,
    until: Option<&str>,
) -> io::Result<String> {
    stream.write_all(request.as_bytes()).await?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read = timeout(WAIT, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => return Ok(()),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => return Err(e),
            }
            if until.is_some_and(|u| String::from_utf8_lossy(&got).contains(u)) {
                return Ok(());
            }
        }
    })
    .await
    .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "no response")));
    match read {
        Err(e) if got.is_empty() => Err(e),
        _ => Ok(String::from_utf8_lossy(&got).into_owned()),
    }
}

/// `GET path` on a fresh TLS connection; `Connection: close` makes the server end it.
async fn get(
    srv: &EmbeddedServer,
    config: &Arc<ClientConfig>,
    name: &str,
    path: &str,
    bearer: Option<&str>,
) -> io::Result<String> {
    let mut stream = connect(srv, config, name).await?;
    let auth = bearer.map_or(String::new(), |b| format!("Authorization: Bearer {b}\r\n"));
    let request = format!("GET {path} HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n{auth}\r\n");
    exchange(&mut stream, &request, None).await
}

fn status(response: &str) -> u16 {
    response
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP/1.1 response: {response:?}"))
}

fn dev_bearer(srv: &EmbeddedServer) -> String {
    let t = srv.target();
    format!(
        "{}:{}",
        t.key_id.as_deref().unwrap(),
        t.secret.as_deref().unwrap()
    )
}

async fn start(tls: Tls) -> EmbeddedServer {
    EmbeddedServer::start(Options {
        ip_connect_limit: Some(0),
        tls: Some(tls),
        ..Options::default()
    })
    .await
    .expect("embedded TLS server starts")
}

/// Waits (bounded) until the server has counted `n` failed handshakes: it counts after
/// the client has already given up.
async fn expect_failures(srv: &EmbeddedServer, n: u64) {
    let deadline = Instant::now() + WAIT;
    while srv.tls_handshake_failures() < n {
        assert!(
            Instant::now() < deadline,
            "{} failed handshakes counted, expected {n}",
            srv.tls_handshake_failures()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(srv.tls_handshake_failures(), n);
}

fn assert_failed(result: io::Result<impl std::fmt::Debug>, why: &str) -> String {
    match result {
        Ok(r) => panic!("expected a failed handshake ({why}), got {r:?}"),
        Err(e) => {
            let text = e.to_string();
            assert!(text.contains(why), "expected {why:?} in {text:?}");
            text
        }
    }
}

#[tokio::test]
async fn one_port_serves_wss_https_and_the_admin_hook() {
    let srv = start(Tls::SelfSigned).await;
    let t = srv.target().clone();
    let port = srv.addr().port();
    assert_eq!(t.ws_url, format!("wss://127.0.0.1:{port}/v1"));
    assert_eq!(t.rest_url, format!("https://127.0.0.1:{port}/v1"));
    let ca = t.ca_pem.clone().expect("ca_pem for a self-signed server");
    let config = trusting(&ca);

    // Not an upgrade: 426 (CONN-5), as over plain TCP.
    for name in ["127.0.0.1", "localhost"] {
        let r = get(&srv, &config, name, "/v1", None).await.unwrap();
        assert_eq!(status(&r), 426, "{r}");
        assert!(r.contains("upgrade_required"), "{r}");
    }
    // REST with the dev key.
    let r = get(
        &srv,
        &config,
        "127.0.0.1",
        "/v1/usage",
        Some(&dev_bearer(&srv)),
    )
    .await
    .unwrap();
    assert_eq!(status(&r), 200, "{r}");
    let r = get(
        &srv,
        &config,
        "127.0.0.1",
        "/v1/usage",
        Some("sk_id_dev:wrong"),
    )
    .await
    .unwrap();
    assert_eq!(status(&r), 401, "{r}");
    // The admin hook, with the counter of failed handshakes.
    let admin = t.admin_token.clone().unwrap();
    let r = get(&srv, &config, "127.0.0.1", "/_admin/stats", Some(&admin))
        .await
        .unwrap();
    assert_eq!(status(&r), 200, "{r}");
    assert!(r.contains("\"tlsHandshakeFailures\":0"), "{r}");

    // ALPN says HTTP/1.1.
    let stream = connect(&srv, &config, "127.0.0.1").await.unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    drop(stream);

    // A WebSocket upgrade over TLS gets 101 and the server's first frame (`welcome`,
    // unmasked, so its JSON is readable in the raw bytes).
    let token = stampede::proto::auth::mint(
        t.key_id.as_deref().unwrap(),
        t.secret.as_deref().unwrap().as_bytes(),
        &json!({"sub": "tls-peer", "exp": 4_000_000_000i64}),
    );
    let mut stream = connect(&srv, &config, "127.0.0.1").await.unwrap();
    let upgrade = format!(
        "GET /v1?token={token} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    let r = exchange(&mut stream, &upgrade, Some("\"tls-peer\""))
        .await
        .unwrap();
    assert_eq!(status(&r), 101, "{r}");
    assert!(
        r.contains("\"type\":\"welcome\"") && r.contains("\"tls-peer\""),
        "{r}"
    );
    assert_eq!(srv.tls_handshake_failures(), 0);
    drop(stream);
    srv.shutdown().await;
}

#[tokio::test]
async fn clients_that_do_not_trust_the_server_fail_and_are_counted() {
    let srv = start(Tls::SelfSigned).await;
    let stranger = tls::ca("some other CA").unwrap();
    let e = assert_failed(
        connect(&srv, &trusting(stranger.cert_pem()), "127.0.0.1").await,
        "UnknownIssuer",
    );
    assert!(e.contains("invalid peer certificate"), "{e}");
    expect_failures(&srv, 1).await;

    // Plain HTTP on the TLS port: no HTTP answer, the handshake fails and is counted.
    let mut tcp = TcpStream::connect(srv.addr()).await.unwrap();
    tcp.write_all(b"GET /v1 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = timeout(WAIT, tcp.read_to_end(&mut buf))
        .await
        .expect("closed");
    assert!(
        !String::from_utf8_lossy(&buf).contains("HTTP/1.1"),
        "{buf:?}"
    );
    expect_failures(&srv, 2).await;

    // The server still serves clients that trust it.
    let config = trusting(srv.target().ca_pem.as_deref().unwrap());
    let r = get(&srv, &config, "localhost", "/v1", None).await.unwrap();
    assert_eq!(status(&r), 426);
    srv.shutdown().await;
}

#[tokio::test]
async fn wrong_names_and_expired_certificates_fail() {
    let ca = tls::ca("stampede test CA").unwrap();
    let leaf = ca.issue(&["localhost"], Validity::days(1), false).unwrap();
    let srv = start(Tls::Pem {
        cert_pem: leaf.cert_pem,
        key_pem: leaf.key_pem,
        client_ca_pem: None,
        trust_pem: Some(ca.cert_pem().to_owned()),
    })
    .await;
    assert_eq!(srv.target().ca_pem.as_deref(), Some(ca.cert_pem()));
    let config = trusting(ca.cert_pem());
    let r = get(&srv, &config, "localhost", "/v1", None).await.unwrap();
    assert_eq!(status(&r), 426);
    assert_failed(
        connect(&srv, &config, "127.0.0.1").await,
        "not valid for name",
    );
    expect_failures(&srv, 1).await;
    srv.shutdown().await;

    let old = ca
        .issue(&["localhost"], Validity::expired(), false)
        .unwrap();
    let srv = start(Tls::Pem {
        cert_pem: old.cert_pem,
        key_pem: old.key_pem,
        client_ca_pem: None,
        trust_pem: Some(ca.cert_pem().to_owned()),
    })
    .await;
    assert_failed(connect(&srv, &config, "localhost").await, "expired");
    expect_failures(&srv, 1).await;
    srv.shutdown().await;
}

#[tokio::test]
async fn a_client_ca_makes_client_certificates_required() {
    let server_ca = tls::ca("server CA").unwrap();
    let client_ca = tls::ca("client CA").unwrap();
    let leaf = server_ca
        .issue(&["localhost", "127.0.0.1"], Validity::days(1), false)
        .unwrap();
    let srv = start(Tls::Pem {
        cert_pem: leaf.cert_pem,
        key_pem: leaf.key_pem,
        client_ca_pem: Some(client_ca.cert_pem().to_owned()),
        trust_pem: Some(server_ca.cert_pem().to_owned()),
    })
    .await;
    let trust = server_ca.cert_pem();
    let v = rustls::DEFAULT_VERSIONS;

    let good = client_ca
        .issue(&["peer-1"], Validity::days(1), true)
        .unwrap();
    let config = client_config(trust, Some(&good), v);
    let r = get(
        &srv,
        &config,
        "127.0.0.1",
        "/v1/usage",
        Some(&dev_bearer(&srv)),
    )
    .await
    .unwrap();
    assert_eq!(status(&r), 200, "{r}");
    assert_eq!(srv.tls_handshake_failures(), 0);

    // In TLS 1.3 the client finishes its side first; the refusal arrives as an alert
    // instead of the response.
    let none = client_config(trust, None, v);
    assert_failed(
        get(&srv, &none, "127.0.0.1", "/v1", None).await,
        "CertificateRequired",
    );
    expect_failures(&srv, 1).await;

    let foreign = server_ca
        .issue(&["peer-2"], Validity::days(1), true)
        .unwrap();
    let config = client_config(trust, Some(&foreign), v);
    assert_failed(get(&srv, &config, "127.0.0.1", "/v1", None).await, "alert");
    expect_failures(&srv, 2).await;

    // Issued by the right CA, but for servers only (no clientAuth usage).
    let server_only = client_ca
        .issue(&["peer-3"], Validity::days(1), false)
        .unwrap();
    let config = client_config(trust, Some(&server_only), v);
    assert_failed(get(&srv, &config, "127.0.0.1", "/v1", None).await, "alert");
    expect_failures(&srv, 3).await;

    // TLS 1.2 asks for the certificate before finishing: the handshake itself fails.
    let config = client_config(trust, None, &[&rustls::version::TLS12]);
    assert!(get(&srv, &config, "127.0.0.1", "/v1", None).await.is_err());
    expect_failures(&srv, 4).await;
    srv.shutdown().await;
}

/// More clients than rustls' default 256-entry session cache all resume: tickets are
/// stateless. Each client config has its own session store, like a separate peer.
#[tokio::test]
async fn sessions_resume_for_hundreds_of_clients_over_tls13_and_tls12() {
    let srv = start(Tls::SelfSigned).await;
    let ca = srv.target().ca_pem.clone().unwrap();
    const CLIENTS: usize = 300;
    let mut resumed = 0;
    for i in 0..CLIENTS {
        let versions: &[&'static rustls::SupportedProtocolVersion] = if i % 10 == 0 {
            &[&rustls::version::TLS12]
        } else {
            &[&rustls::version::TLS13]
        };
        let config = client_config(&ca, None, versions);
        // The first exchange also delivers the server's tickets to the client.
        let mut first = connect(&srv, &config, "127.0.0.1").await.unwrap();
        assert_eq!(
            first.get_ref().1.handshake_kind(),
            Some(HandshakeKind::Full)
        );
        let r = exchange(
            &mut first,
            "GET /v1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            None,
        )
        .await
        .unwrap();
        assert_eq!(status(&r), 426);
        drop(first);
        let second = connect(&srv, &config, "127.0.0.1").await.unwrap();
        if second.get_ref().1.handshake_kind() == Some(HandshakeKind::Resumed) {
            resumed += 1;
        }
    }
    assert_eq!(resumed, CLIENTS);
    assert_eq!(srv.tls_handshake_failures(), 0);
    srv.shutdown().await;
}
