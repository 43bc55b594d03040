//! Interop test: the official JavaScript SDK (`@metered-ca/realtime`) against
//! the reference server (`stampede serve`).
//!
//! The JS side lives in `tests/interop/` (see its README). This test starts the
//! reference server on an ephemeral loopback port, runs
//! `node tests/interop/interop.mjs` against it and requires exit status 0.
//!
//! Without `tests/interop/node_modules` the test is skipped (and passes) on a
//! developer machine; when the `CI` environment variable is set, a missing
//! `node_modules` is a failure, since CI runs `npm ci` in `tests/interop` first.
//! `NODE` may name the node executable (default: `node` on `PATH`).

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const KEY_ID: &str = "sk_id_interop";
const SECRET: &str = "sk_secret_interop";
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(90);

/// Kills and reaps the child when dropped, including on panic.
struct ChildGuard {
    child: Child,
}

impl ChildGuard {
    fn new(child: Child) -> Self {
        ChildGuard { child }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

type SharedLog = Arc<Mutex<String>>;

fn append(log: &SharedLog, line: &str) {
    let mut l = log.lock().unwrap_or_else(|e| e.into_inner());
    l.push_str(line);
    l.push('\n');
}

fn snapshot(log: &SharedLog) -> String {
    log.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// The last `max` bytes of `s` (on a char boundary), for failure messages.
fn tail(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// Copies every line of `reader` into `log`, optionally forwarding it on `tx`.
fn drain<R: Read + Send + 'static>(
    reader: R,
    log: SharedLog,
    tx: Option<mpsc::Sender<String>>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut reader = BufReader::new(reader);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf);
                    let line = line.trim_end_matches(['\n', '\r']);
                    append(&log, line);
                    if let Some(tx) = &tx {
                        // The receiver goes away once the address is known; keep draining.
                        let _ = tx.send(line.to_string());
                    }
                }
            }
        }
    })
}

/// Extracts `HOST:PORT` from a line containing `listening on ws://HOST:PORT/v1` (or
/// `wss://`).
fn parse_listen_addr(line: &str) -> Option<String> {
    let idx = line.find("listening on ")?;
    let rest = &line[idx + "listening on ".len()..];
    let rest = rest
        .strip_prefix("ws://")
        .or_else(|| rest.strip_prefix("wss://"))?;
    let end = rest.find("/v1")?;
    let hostport = &rest[..end];
    let valid = !hostport.is_empty()
        && hostport.contains(':')
        && hostport
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '[' | ']' | '-'));
    valid.then(|| hostport.to_string())
}

fn is_ci() -> bool {
    match std::env::var("CI") {
        Ok(v) => {
            let v = v.trim();
            !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false")
        }
        Err(_) => false,
    }
}

fn wait_with_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() >= deadline => return None,
            Ok(None) => thread::sleep(Duration::from_millis(100)),
            Err(e) => panic!("waiting for child process failed: {e}"),
        }
    }
}

#[test]
fn js_sdk_interop() {
    run_interop(false);
}

/// The same script over `wss://` and `https://`: Node's `ws` and `fetch` trust the
/// server's generated certificate through NODE_EXTRA_CA_CERTS, as a user's would.
#[test]
fn js_sdk_interop_over_wss() {
    run_interop(true);
}

/// The path in the server's `clients trust it: --cacert PATH` banner line.
fn parse_cacert(line: &str) -> Option<String> {
    let idx = line.find("--cacert ")?;
    let path = line[idx + "--cacert ".len()..].split_whitespace().next()?;
    Some(path.to_string())
}

fn run_interop(tls: bool) {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let interop_dir: PathBuf = manifest.join("tests").join("interop");
    let script = interop_dir.join("interop.mjs");
    let node_modules = interop_dir.join("node_modules");

    if !node_modules.is_dir() {
        if is_ci() {
            panic!(
                "{} is missing but CI is set: CI must run `npm ci` in tests/interop before `cargo test`",
                node_modules.display()
            );
        }
        eprintln!(
            "SKIPPED js_sdk_interop: {} not found; run `npm ci` in tests/interop to enable the JS SDK interop test",
            node_modules.display()
        );
        return;
    }
    assert!(script.is_file(), "{} is missing", script.display());

    // ---- start the reference server -------------------------------------
    let server_log: SharedLog = Arc::new(Mutex::new(String::new()));
    let mut server = Command::new(env!("CARGO_BIN_EXE_stampede"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--key-id",
            KEY_ID,
            "--secret",
            SECRET,
            "--ip-connect-limit",
            "0",
            "--rate",
            "0",
        ])
        .args(if tls { &["--tls-self-signed"][..] } else { &[] })
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("failed to start `stampede serve`");
    let server_stdout = server.stdout.take().expect("server stdout");
    let server_stderr = server.stderr.take().expect("server stderr");
    let mut server = ChildGuard::new(server);

    let (tx, rx) = mpsc::channel::<String>();
    let _out_thread = drain(server_stdout, server_log.clone(), Some(tx));
    let _err_thread = drain(server_stderr, server_log.clone(), None);

    let deadline = Instant::now() + LISTEN_TIMEOUT;
    let mut hostport = None;
    let mut cacert = None;
    let hostport = loop {
        if let Some(addr) = hostport.as_ref().filter(|_| !tls || cacert.is_some()) {
            break String::clone(addr);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                hostport = hostport.or_else(|| parse_listen_addr(&line));
                cacert = cacert.or_else(|| parse_cacert(&line));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                "server printed no `listening on ws://HOST:PORT/v1` line within {LISTEN_TIMEOUT:?}\n--- server output ---\n{}",
                tail(&snapshot(&server_log), 8192)
            ),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = server.child.try_wait().ok().flatten();
                panic!(
                    "server stdout closed before it reported its address (exit status: {status:?})\n--- server output ---\n{}",
                    tail(&snapshot(&server_log), 8192)
                );
            }
        }
    };
    drop(rx);
    let http = format!("{}://{hostport}", if tls { "https" } else { "http" });

    // ---- run the JS SDK script -------------------------------------------
    let node = std::env::var("NODE").unwrap_or_else(|_| "node".to_string());
    let script_log: SharedLog = Arc::new(Mutex::new(String::new()));
    let mut js = Command::new(&node)
        .arg(&script)
        .current_dir(&interop_dir)
        .env("STAMPEDE_HTTP", &http)
        .envs(cacert.iter().map(|c| ("NODE_EXTRA_CA_CERTS", c)))
        .env("STAMPEDE_KEY_ID", KEY_ID)
        .env("STAMPEDE_SECRET", SECRET)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("failed to run `{node} {}`: {e}", script.display()));
    let js_stdout = js.stdout.take().expect("node stdout");
    let js_stderr = js.stderr.take().expect("node stderr");
    let mut js = ChildGuard::new(js);
    let t_out = drain(js_stdout, script_log.clone(), None);
    let t_err = drain(js_stderr, script_log.clone(), None);

    let status = wait_with_timeout(&mut js.child, SCRIPT_TIMEOUT);
    if status.is_none() {
        let _ = js.child.kill();
        let _ = js.child.wait();
    }
    // The pipes close once node has exited; collect everything it printed.
    let _ = t_out.join();
    let _ = t_err.join();
    let output = snapshot(&script_log);
    println!("--- interop.mjs output (server {http}) ---\n{output}");

    let server_tail = || tail(&snapshot(&server_log), 8192).to_string();
    match status {
        None => panic!(
            "interop.mjs did not finish within {SCRIPT_TIMEOUT:?}\n--- interop.mjs output ---\n{output}\n--- server output ---\n{}",
            server_tail()
        ),
        Some(st) => assert!(
            st.success(),
            "interop.mjs failed ({st})\n--- interop.mjs output ---\n{output}\n--- server output ---\n{}",
            server_tail()
        ),
    }
    // `server` (and `js`) are killed and reaped by their guards here.
}

#[test]
fn parse_listen_addr_examples() {
    assert_eq!(
        parse_listen_addr(
            "stampede: listening on ws://127.0.0.1:43210/v1 (rest http://127.0.0.1:43210/v1)"
        ),
        Some("127.0.0.1:43210".to_string())
    );
    assert_eq!(
        parse_listen_addr("\x1b[32mINFO\x1b[0m listening on ws://127.0.0.1:9/v1"),
        Some("127.0.0.1:9".to_string())
    );
    assert_eq!(parse_listen_addr("listening on ws:///v1"), None);
    assert_eq!(
        parse_listen_addr("listening on wss://127.0.0.1:9/v1"),
        Some("127.0.0.1:9".to_string())
    );
    assert_eq!(
        parse_cacert("  clients trust it: --cacert /tmp/x/cert.pem").as_deref(),
        Some("/tmp/x/cert.pem")
    );
    assert_eq!(parse_listen_addr("starting up"), None);
}
