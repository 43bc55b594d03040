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
