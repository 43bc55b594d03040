//! TLS through the real CLI against the reference server with generated certificates:
//! every certificate problem a user meets exits 2 within seconds naming the URL, the
//! cause and what to do; the flags that fix each one work (`--cacert`,
//! `--tls-server-name`, `--connect-to`, `--client-cert`); `--insecure` connects and the
//! report says so; resumption is off unless asked for, and `per-peer` resumes reconnects.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;
use stampede::embedded::{EmbeddedServer, Options, Tls};
use stampede::server::tls::{self, CertAuthority, Generated, Validity};

/// A CA, the files a user would have, and a scratch directory.
struct Pki {
    dir: tempfile::TempDir,
    ca: CertAuthority,
}

impl Pki {
    fn new() -> Pki {
        Pki {
            dir: tempfile::tempdir().unwrap(),
            ca: tls::ca("stampede test CA").unwrap(),
        }
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn ca_file(&self) -> PathBuf {
        self.write("ca.pem", self.ca.cert_pem())
    }

    fn leaf(&self, names: &[&str], validity: Validity) -> Generated {
        self.ca.issue(names, validity, false).unwrap()
    }
}

/// The reference server with `cert`, optionally requiring client certificates from
/// `client_ca`.
async fn server(cert: &Generated, client_ca: Option<&str>) -> EmbeddedServer {
    EmbeddedServer::start(Options {
        ip_connect_limit: Some(0),
        tls: Some(Tls::Pem {
            cert_pem: cert.cert_pem.clone(),
            key_pem: cert.key_pem.clone(),
            client_ca_pem: client_ca.map(str::to_owned),
            trust_pem: None,
        }),
        ..Default::default()
    })
    .await
    .expect("TLS server starts")
}

/// Runs the CLI off the async runtime (the server under test lives on it).
async fn stampede(args: Vec<String>) -> (Output, Duration) {
    stampede_with_keylog(args, None).await
}

async fn stampede_with_keylog(args: Vec<String>, keylog: Option<PathBuf>) -> (Output, Duration) {
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_stampede"));
        cmd.args(&args).env_remove("SSLKEYLOGFILE");
        if let Some(k) = keylog {
            cmd.env("SSLKEYLOGFILE", k);
        }
        let out = cmd.output().expect("stampede runs");
        (out, started.elapsed())
    })
    .await
    .unwrap()
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// A short smoke run against `url` with extra flags.
fn run_args(url: &str, out: &Path, extra: &[String]) -> Vec<String> {
    let mut a = args(&[
        "run",
        "smoke",
        "--quiet",
        "--peers",
        "40",
        "--duration",
        "2s",
        "--target",
        url,
        "--out",
    ]);
    a.push(path(out));
    a.extend(extra.iter().cloned());
    a
}

fn conform_args(url: &str, extra: &[String]) -> Vec<String> {
    let mut a = args(&["conform", "--only", "sub/*", "--target", url]);
    a.extend(extra.iter().cloned());
    a
}

/// Exit 2 within seconds, naming the URL and every `needles` part.
fn refused(what: &str, (out, took): &(Output, Duration), url: &str, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{what}: {err}");
    assert!(*took < Duration::from_secs(15), "{what}: took {took:?}");
    assert!(err.contains(url), "{what}: no URL in {err}");
    for n in needles {
        assert!(err.contains(n), "{what}: no {n:?} in {err}");
    }
    assert!(!err.contains("panicked"), "{what}: {err}");
}

fn ok(what: &str, (out, _): &(Output, Duration)) {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn summary(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_ca_is_refused_until_cacert_names_it() {
    let pki = Pki::new();
    let srv = server(&pki.leaf(&tls::LOOPBACK_NAMES, Validity::days(1)), None).await;
    let url = srv.target().ws_url.clone();
    assert!(url.starts_with("wss://"), "{url}");
    let out = pki.dir.path().join("run");
    let needles = ["unknown issuer", "--cacert"];
    let r = stampede(run_args(&url, &out, &[])).await;
    refused("run", &r, &url, &needles);
    let r = stampede(conform_args(&url, &[])).await;
    refused("conform", &r, &url, &needles);

    let ca = vec!["--cacert".to_owned(), path(&pki.ca_file())];
    let r = stampede(run_args(&url, &out, &ca)).await;
    ok("run --cacert", &r);
    let s = summary(&out);
    assert_eq!(s["connections"]["failed"], 0, "{}", s["connections"]);
    assert_eq!(s["delivery"]["lost"], 0);
    assert!(s["latency"]["tls_handshake_us"]["count"].as_u64().unwrap() > 0);
    // SSLKEYLOGFILE: the session secrets in NSS key-log format, for Wireshark.
    let keylog = pki.dir.path().join("keys.log");
    let r = stampede_with_keylog(conform_args(&url, &ca), Some(keylog.clone())).await;
    ok("conform --cacert", &r);
    let keys = std::fs::read_to_string(&keylog).expect("SSLKEYLOGFILE written");
    assert!(keys.contains("CLIENT_HANDSHAKE_TRAFFIC_SECRET"), "{keys}");
    srv.shutdown().await;

    // A self-signed certificate is its own unknown issuer (even when the machine's
    // store holds another certificate with the same name, as snakeoil ones do).
    let srv = EmbeddedServer::start(Options {
        tls: Some(Tls::SelfSigned),
        ..Default::default()
    })
    .await
    .unwrap();
    let url = srv.target().ws_url.clone();
    refused(
        "run",
        &stampede(run_args(&url, &out, &[])).await,
        &url,
        &needles,
    );
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_name_is_refused_and_server_name_or_connect_to_fix_it() {
    let pki = Pki::new();
    let srv = server(&pki.leaf(&["api.example.invalid"], Validity::days(1)), None).await;
    let url = srv.target().ws_url.clone();
    let port = srv.addr().port();
    let out = pki.dir.path().join("run");
    let ca = path(&pki.ca_file());
    let r = stampede(run_args(&url, &out, &args(&["--cacert", &ca]))).await;
    refused(
        "run",
        &r,
        &url,
        &[
            "not valid for 127.0.0.1",
            "api.example.invalid",
            "--tls-server-name",
        ],
    );

    let named = args(&["--cacert", &ca, "--tls-server-name", "api.example.invalid"]);
    ok(
        "run --tls-server-name",
        &stampede(run_args(&url, &out, &named)).await,
    );

    // The URL names the host the certificate names; --connect-to dials loopback. The
    // REST control plane (conformance REST cases) follows the same rule.
    let by_name = format!("wss://api.example.invalid:{port}/v1");
    let rule = format!("api.example.invalid:{port}:127.0.0.1:{port}");
    let via = args(&["--cacert", &ca, "--connect-to", &rule]);
    ok(
        "run --connect-to",
        &stampede(run_args(&by_name, &out, &via)).await,
    );
    let mut conform = via.clone();
    conform.extend(args(&["--only", "rest/*"]));
    ok(
        "conform --connect-to (REST)",
        &stampede(conform_args(&by_name, &conform)).await,
    );
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_certificate_is_refused() {
    let pki = Pki::new();
    let srv = server(&pki.leaf(&tls::LOOPBACK_NAMES, Validity::expired()), None).await;
    let url = srv.target().ws_url.clone();
    let ca = args(&["--cacert", &path(&pki.ca_file())]);
    let out = pki.dir.path().join("run");
    let needles = ["expired", "renew"];
    refused(
        "run",
        &stampede(run_args(&url, &out, &ca)).await,
        &url,
        &needles,
    );
    refused(
        "conform",
        &stampede(conform_args(&url, &ca)).await,
        &url,
        &needles,
    );
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_required_client_certificate_is_named_and_accepted_when_given() {
    let pki = Pki::new();
    let clients = tls::ca("client CA").unwrap();
    let srv = server(
        &pki.leaf(&tls::LOOPBACK_NAMES, Validity::days(1)),
        Some(clients.cert_pem()),
    )
    .await;
    let url = srv.target().ws_url.clone();
    let out = pki.dir.path().join("run");
    let ca = path(&pki.ca_file());
    let needles = ["client certificate", "--client-cert"];
    let r = stampede(run_args(&url, &out, &args(&["--cacert", &ca]))).await;
    refused("run", &r, &url, &needles);
    let r = stampede(conform_args(&url, &args(&["--cacert", &ca]))).await;
    refused("conform", &r, &url, &needles);

    let mine = clients
        .issue(&["load-client"], Validity::days(1), true)
        .unwrap();
    let cert = path(&pki.write("client.pem", &mine.cert_pem));
    let key = path(&pki.write("client-key.pem", &mine.key_pem));
    let mutual = args(&[
        "--cacert",
        &ca,
        "--client-cert",
        &cert,
        "--client-key",
        &key,
    ]);
    ok(
        "run with a client certificate",
        &stampede(run_args(&url, &out, &mutual)).await,
    );
    ok(
        "conform with a client certificate",
        &stampede(conform_args(&url, &mutual)).await,
    );
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_connects_and_the_report_says_so() {
    let pki = Pki::new();
    let srv = server(&pki.leaf(&["elsewhere.invalid"], Validity::expired()), None).await;
    let url = srv.target().ws_url.clone();
    let out = pki.dir.path().join("run");
    let r = stampede(run_args(&url, &out, &args(&["--insecure"]))).await;
    ok("run --insecure", &r);
    let err = String::from_utf8_lossy(&r.0.stderr);
    assert!(
        err.contains("--insecure") && err.contains("NOT verified"),
        "{err}"
    );
    let s = summary(&out);
    assert_eq!(s["tls"]["insecure"], true, "{}", s["tls"]);
    let warned = s["warnings"].to_string();
    assert!(warned.contains("--insecure"), "{warned}");
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("--insecure"), "report.html says nothing");
    let r = stampede(conform_args(&url, &args(&["--insecure"]))).await;
    ok("conform --insecure", &r);
    assert!(String::from_utf8_lossy(&r.0.stderr).contains("NOT verified"));
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tls_flags_are_named() {
    let pki = Pki::new();
    let url = "wss://127.0.0.1:9/v1";
    let out = pki.dir.path().join("run");
    let missing = path(&pki.dir.path().join("nope.pem"));
    for (flags, needle) in [
        (args(&["--cacert", &missing]), "nope.pem"),
        (args(&["--connect-to", "a:b"]), "HOST:PORT:ADDR:PORT"),
        (args(&["--tls-resumption", "sometimes"]), "per-peer"),
        (args(&["--client-cert", &missing]), "--client-key"),
    ] {
        let (o, _) = stampede(run_args(url, &out, &flags)).await;
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{flags:?}: {err}");
        assert!(err.contains(needle), "{flags:?}: {err}");
    }
}

/// 1,000 peers, all reconnecting after a storm: full handshakes only with resumption
/// off; with `per-peer` every reconnect resumes its own session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumption_is_off_by_default_and_per_peer_resumes_reconnects() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("storm.toml");
    std::fs::write(
        &scenario,
        r#"name = "tls-storm"
duration = "8s"
grace = "1s"
seed = 2
[[population]]
name = "members"
peers = 1000
room_size = 10
channel = "tls/{room}"
ramp = "1500ms"
[[storm]]
at = "3500ms"
drop = 1.0
mode = "close"
backoff = { initial = "300ms", max = "2s", jitter = 0.2 }
"#,
    )
    .unwrap();
    let run = |mode: &'static str| {
        let out = dir.path().join(mode);
        let a = vec![
            "run".to_owned(),
            path(&scenario),
            "--tls".into(),
            "--quiet".into(),
            "--tls-resumption".into(),
            mode.into(),
            "--out".into(),
            path(&out),
        ];
        async move {
            ok(mode, &stampede(a).await);
            summary(&out)
        }
    };
    let off = run("off").await;
    let connects = off["connections"]["established"].as_u64().unwrap();
    assert!(connects >= 1900, "{}", off["connections"]);
    assert_eq!(off["tls"]["resumption"], "off");
    assert_eq!(off["tls"]["handshakes"]["resumed"], 0, "{}", off["tls"]);
    assert_eq!(off["tls"]["handshakes"]["full"], connects, "{}", off["tls"]);

    let per_peer = run("per-peer").await;
    let connects = per_peer["connections"]["established"].as_u64().unwrap();
    let t = &per_peer["tls"];
    assert_eq!(t["resumption"], "per-peer");
    assert_eq!(
        t["handshakes"]["full"], 1000,
        "first connects are full: {t}"
    );
    assert_eq!(
        t["handshakes"]["resumed"].as_u64().unwrap(),
        connects - 1000,
        "every reconnect resumed: {t}"
    );
    assert!(connects >= 1900, "{}", per_peer["connections"]);
}
