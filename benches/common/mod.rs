//! The server under test of the benches: `target/release/stampede serve` as a child
//! process on an ephemeral loopback port, so its CPU and memory are its own.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub struct Server {
    child: Child,
    pub ws_url: String,
    /// With `--tls-self-signed`: the certificate clients must trust.
    pub cacert: Option<String>,
}

impl Server {
    /// Starts `stampede serve` with no per-IP or per-connection limits plus `extra` flags
    /// (`STAMPEDE_BIN` overrides the binary) and waits for its address.
    pub fn start(extra: &[&str]) -> Server {
        let bin =
            std::env::var("STAMPEDE_BIN").unwrap_or_else(|_| "target/release/stampede".into());
        let tls = extra.contains(&"--tls-self-signed");
        let mut child = Command::new(&bin)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--ip-connect-limit",
                "0",
                "--rate",
                "0",
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e} (cargo build --release first)"));
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut ws_url, mut cacert) = (None, None);
        while ws_url.is_none() || (tls && cacert.is_none()) {
            let line = match lines.next() {
                Some(Ok(l)) => l,
                _ => {
                    let _ = child.kill();
                    panic!("the server exited before printing its address");
                }
            };
            if let Some(u) = line.strip_prefix("listening on ") {
                ws_url = Some(u.trim().to_owned());
            }
            if let Some(i) = line.find("--cacert ") {
                cacert = line[i + 9..].split_whitespace().next().map(str::to_owned);
            }
        }
        // Keep draining the banner so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server {
            child,
            ws_url: ws_url.unwrap(),
            cacert,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A `/proc/PID/status` field in kB (`VmRSS:`, `VmHWM:`).
    pub fn status_kb(&self, field: &str) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// User + system CPU of the server so far.
    pub fn cpu(&self) -> Duration {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        // After the parenthesised name, utime and stime are the 12th and 13th fields.
        let after = stat.rsplit(')').next().unwrap_or_default();
        let f: Vec<u64> = after
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        Duration::from_micros((f.get(11).unwrap_or(&0) + f.get(12).unwrap_or(&0)) * 1_000_000 / hz)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

/// A token of the reference server's development app for `sub`, valid for an hour.
pub fn dev_token(sub: &str) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let claims = serde_json::json!({"sub": sub, "exp": exp});
    stampede::proto::auth::mint("sk_id_dev", b"sk_secret_dev", &claims)
}
