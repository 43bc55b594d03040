//! What the side-by-side bench samples: a process tree's CPU and RSS from /proc, and the
//! server's queued copies from its admin stats.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub at: Instant,
    /// User + system CPU of the tree, µs (None once the tree is gone).
    pub cpu_us: Option<u64>,
    pub rss_bytes: u64,
    pub copies: Option<u64>,
}

pub fn sample(root: u32, stats: &str) -> Sample {
    let tree = tree(root);
    let cpu_us = (!tree.is_empty()).then(|| tree.iter().map(|&p| cpu_us(p)).sum());
    Sample {
        at: Instant::now(),
        cpu_us,
        rss_bytes: tree.iter().map(|&p| rss_bytes(p)).sum(),
        copies: copies(stats),
    }
}

/// `root` and every process descending from it.
fn tree(root: u32) -> Vec<u32> {
    let mut parent = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(f) = stat_fields(pid) {
                parent.push((pid, f.get(1).and_then(|x| x.parse().ok()).unwrap_or(0u32)));
            }
        }
    }
    if !parent.iter().any(|&(p, _)| p == root) {
        return Vec::new();
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        out.extend(parent.iter().filter(|&&(_, pp)| pp == p).map(|&(c, _)| c));
        i += 1;
    }
    out
}

/// The fields after the parenthesised name: state, ppid, … (utime is index 11).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit(')').next()?;
    Some(after.split_whitespace().map(str::to_owned).collect())
}

fn cpu_us(pid: u32) -> u64 {
    let f = stat_fields(pid).unwrap_or_default();
    let field = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    // utime, stime, and the reaped children's cutime, cstime.
    (field(11) + field(12) + field(13) + field(14)) * 1_000_000 / hz
}

fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// The server's queued `message`/`direct` copies so far.
pub fn copies(addr: &str) -> Option<u64> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET /_admin/stats HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer bench\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    let json = body.split("\r\n\r\n").nth(1)?;
    serde_json::from_str::<serde_json::Value>(json).ok()?["copies"].as_u64()
}

/// CPU per delivery over the steady window and the whole run, and the peak RSS.
#[derive(Debug, Default, Clone, Copy)]
pub struct Window {
    pub steady_us: f64,
    pub whole_us: f64,
    pub peak_rss_mb: f64,
    /// Seconds between the 15 % and 85 % samples.
    pub steady_s: f64,
}

pub fn window(samples: &[Sample], final_copies: u64) -> Window {
    let live: Vec<&Sample> = samples.iter().filter(|s| s.cpu_us.is_some()).collect();
    let first_at = |frac: f64| {
        live.iter()
            .find(|s| s.copies.unwrap_or(0) as f64 >= frac * final_copies as f64)
            .copied()
    };
    let mut w = Window {
        peak_rss_mb: live.iter().map(|s| s.rss_bytes).max().unwrap_or(0) as f64 / 1e6,
        ..Default::default()
    };
    if let (Some(a), Some(b)) = (first_at(0.15), first_at(0.85)) {
        let copies = b.copies.unwrap_or(0).saturating_sub(a.copies.unwrap_or(0));
        let cpu = b.cpu_us.unwrap_or(0).saturating_sub(a.cpu_us.unwrap_or(0));
        if copies > 0 {
            w.steady_us = cpu as f64 / copies as f64;
            w.steady_s = (b.at - a.at).as_secs_f64();
        }
    }
    if let Some(last) = live.last()
        && final_copies > 0
    {
        w.whole_us = last.cpu_us.unwrap_or(0) as f64 / final_copies as f64;
    }
    w
}

/// The child's exit (success) and its CPU including reaped descendants, µs, once it
/// ended; None while it runs.
pub fn reap(pid: u32) -> Option<(bool, u64)> {
    wait(pid, libc::WNOHANG)
}

pub fn reap_blocking(pid: u32) -> (bool, u64) {
    wait(pid, 0).unwrap_or((false, 0))
}

fn wait(pid: u32, flags: libc::c_int) -> Option<(bool, u64)> {
    let mut status = 0;
    // SAFETY: wait4 fills the status and rusage we pass, for our own child.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid as libc::pid_t, &mut status, flags, &mut ru) };
    if r <= 0 {
        return None;
    }
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    Some((ok, us(ru.ru_utime) + us(ru.ru_stime)))
}
