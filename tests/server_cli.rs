//! `stampede serve` as a process: the banner line scripts parse, SIGTERM, config errors,
//! `--list-faults`.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use stampede::proto::auth;

/// Kills the child if the test fails before it exits on its own.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn stampede() -> Command {
    Command::new(env!("CARGO_BIN_EXE_stampede"))
}

#[tokio::test]
async fn serve_prints_its_url_accepts_the_given_key_and_stops_on_sigterm() {
    let child = stampede()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--key-id",
            "sk_id_cli",
            "--secret",
            "sk_secret_cli",
            "--ip-connect-limit",
            "0",
            "--rate",
            "0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let pid = child.0.id();
    let stdout = child.0.stdout.take().unwrap();
    let url = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next().expect("a line").expect("utf-8");
        std::thread::spawn(move || for _ in lines {});
        first
    });
    let first = tokio::time::timeout(Duration::from_secs(10), url)
        .await
        .expect("banner in time")
        .unwrap();
    let ws = first
        .strip_prefix("listening on ")
        .expect("first line names the URL");
    assert!(
        ws.starts_with("ws://127.0.0.1:") && ws.ends_with("/v1"),
        "{first}"
    );

    let token = auth::mint(
        "sk_id_cli",
        b"sk_secret_cli",
        &json!({"sub": "cli", "exp": now_s() + 60}),
    );
    let mut c = Client::open(&format!("{ws}?token={token}")).await;
    assert_eq!(c.recv().await["peerId"], "cli");
    let dev = auth::mint(
        "sk_id_dev",
        b"sk_secret_dev",
        &json!({"sub": "cli", "exp": now_s() + 60}),
    );
    Client::open(&format!("{ws}?token={dev}"))
        .await
        .expect_close(4001)
        .await;

    // SIGTERM: going_away, 1001, exit 0.
    // SAFETY: kill(2) on the child we started.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let (closed, frames) = c.closed_within(Duration::from_secs(3)).await;
    assert_eq!(closed, Closed::Code(1001));
    assert_eq!(
        frames.last().map(|f| f["type"].clone()),
        Some(json!("going_away"))
    );
    let started = Instant::now();
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "serve did not exit"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn bad_config_names_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[[apps]]\nid = \"a\"\n[[apps.secretKeys]]\nid = \"k\"\nsecret = \"s\"\nactions = [\"fly\"]\n").unwrap();
    let out = stampede()
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:6")
            && err.contains("apps[0].secretKeys[0].actions")
            && err.contains("\"fly\""),
        "{err}"
    );
    let out = stampede()
        .args(["serve", "--config", "/nonexistent/x.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("cannot read config file /nonexistent/x.toml")
    );
    let out = stampede()
        .args(["serve", "--rate", "fast"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("REFILL/BURST"));
}

#[test]
fn list_faults_prints_every_switch() {
    let out = stampede()
        .args(["serve", "--list-faults"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().count() >= 40, "{text}");
    assert!(text.contains("echo-publisher") && text.contains("(PUB-4)"));
}

#[tokio::test]
async fn running_out_of_descriptors_is_stated_plainly_and_survived() {
    let bin = env!("CARGO_BIN_EXE_stampede");
    let child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -n 48 && exec {bin} serve --listen 127.0.0.1:0 --ip-connect-limit 0 --rate 0"
        ))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let stdout = child.0.stdout.take().unwrap();
    let stderr = child.0.stderr.take().unwrap();
    let banner = tokio::task::spawn_blocking(move || {
        let lines: Vec<String> = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .take(13)
            .collect();
        lines
    });
    let (warn_tx, warn_rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = warn_tx.send(line);
        }
    });
    let banner = tokio::time::timeout(Duration::from_secs(10), banner)
        .await
        .unwrap()
        .unwrap();
    let ws = banner[0].strip_prefix("listening on ").unwrap().to_owned();
    assert!(
        banner.iter().any(|l| l.contains("ulimit -n 48")),
        "{banner:?}"
    );
    let addr = ws
        .trim_start_matches("ws://")
        .trim_end_matches("/v1")
        .to_owned();
    // More TCP connections than descriptors: accept() fails with EMFILE.
    let mut held = Vec::new();
    for _ in 0..60 {
        held.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let warning = loop {
        match warn_rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) if line.contains("out of file descriptors") => break line,
            _ if Instant::now() > deadline => panic!("no descriptor warning"),
            _ => {}
        }
    };
    assert!(
        warning.contains("limit 48") && warning.contains("raise ulimit -n"),
        "{warning}"
    );
    // Once descriptors are free again the server serves as before.
    drop(held);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let token = auth::mint(
        "sk_id_dev",
        b"sk_secret_dev",
        &json!({"sub": "after", "exp": now_s() + 60}),
    );
    let mut c = Client::open(&format!("{ws}?token={token}")).await;
    assert_eq!(c.recv().await["peerId"], "after");
}

/// Runs `stampede ARGS` in `dir` that must exit by itself within 10 s.
fn run_to_exit(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    let child = stampede()
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let started = Instant::now();
    while child.0.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "stampede {args:?} did not exit"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut out = std::process::Output {
        status: child.0.wait().unwrap(),
        stdout: Vec::new(),
        stderr: Vec::new(),
    };
    use std::io::Read;
    child
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut out.stdout)
        .unwrap();
    child
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_end(&mut out.stderr)
        .unwrap();
    out
}

#[tokio::test]
async fn serve_tls_self_signed_prints_wss_and_a_cacert_file_that_works() {
    use rustls::pki_types::pem::PemObject;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let child = stampede()
        .args(["serve", "--listen", "127.0.0.1:0", "--tls-self-signed"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut banner = Vec::new();
    let cacert = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no --cacert line in {banner:#?}"));
        if let Some(rest) = line.split("--cacert ").nth(1) {
            break std::path::PathBuf::from(rest.split_whitespace().next().unwrap());
        }
        banner.push(line);
    };
    let ws = banner[0]
        .strip_prefix("listening on ")
        .expect("first line names the URL")
        .to_owned();
    assert!(
        ws.starts_with("wss://127.0.0.1:") && ws.ends_with("/v1"),
        "{banner:?}"
    );
    assert!(
        banner
            .iter()
            .any(|l| l.contains("REST:") && l.contains("https://127.0.0.1:")),
        "{banner:?}"
    );
    let dir = cacert.parent().unwrap().to_owned();
    // Only ever remove what the server said it created.
    assert!(
        dir.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("stampede-tls-"),
        "{}",
        dir.display()
    );
    assert!(cacert.is_file() && dir.join("key.pem").is_file());

    // A client that trusts the printed file reaches the server.
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(&cacert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(stampede::server::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let addr = ws
        .trim_start_matches("wss://")
        .trim_end_matches("/v1")
        .to_owned();
    let response = tokio::time::timeout(Duration::from_secs(5), async {
        let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
            .connect(name, tcp)
            .await
            .unwrap();
        tls.write_all(b"GET /v1 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        let _ = tls.read_to_end(&mut buf).await;
        String::from_utf8_lossy(&buf).into_owned()
    })
    .await
    .expect("an answer in time");
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(response.starts_with("HTTP/1.1 426"), "{response}");
}

#[test]
fn tls_flags_are_checked_and_bad_files_named() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = run_to_exit(dir.path(), args);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        err
    };
    let listen = ["serve", "--listen", "127.0.0.1:0"];
    let err = run(&[
        &listen[..],
        &["--tls-cert", "missing.pem", "--tls-key", "x"],
    ]
    .concat());
    assert!(
        err.contains("cannot read TLS certificate file missing.pem"),
        "{err}"
    );
    let err = run(&[&listen[..], &["--tls-cert", "missing.pem"]].concat());
    assert!(err.contains("--tls-key"), "{err}");
    let err = run(&[&listen[..], &["--tls-client-ca", "ca.pem"]].concat());
    assert!(err.contains("--tls-client-ca needs TLS"), "{err}");
    let err = run(&[
        &listen[..],
        &[
            "--tls-self-signed",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
        ],
    ]
    .concat());
    assert!(err.contains("cannot be used with"), "{err}");
}
