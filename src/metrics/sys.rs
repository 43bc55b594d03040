//! CPU time and memory of this process, so a report can say whether the numbers describe
//! the server or the harness's own saturation. Linux `/proc` first, `getrusage` as the
//! fallback.

use std::time::Duration;

/// Name prefix of the load engine's runtime threads; their CPU time is the harness's,
/// apart from an in-process server running on other threads.
pub const LOAD_THREAD_NAME: &str = "stampede-load";

fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// CPU time (user + system) of the threads whose name starts with `prefix`; `None` when
/// `/proc/self/task` cannot be read.
pub fn threads_cpu(prefix: &str) -> Option<Duration> {
    let tick = clock_ticks_per_sec();
    let mut ticks = 0u64;
    for entry in std::fs::read_dir("/proc/self/task").ok()? {
        let Ok(entry) = entry else { continue };
        let dir = entry.path();
        let Ok(comm) = std::fs::read_to_string(dir.join("comm")) else {
            continue;
        };
        if !comm.trim_end().starts_with(prefix) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(dir.join("stat")) else {
            continue;
        };
        ticks += stat_cpu_ticks(&stat).unwrap_or(0);
    }
    Some(Duration::from_secs_f64(ticks as f64 / tick))
}

/// utime + stime from a `/proc/.../stat` line (fields 14 and 15; the name in parens may
/// contain spaces, so fields are counted after the last `)`).
fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, so utime (14) is index 11 here.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// CPU time of the whole process.
pub fn process_cpu() -> Duration {
    // SAFETY: getrusage writes into the struct we pass; zeroed is a valid rusage.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } == 0;
    if !ok {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// CPU time of the load engine: its named threads when `/proc` allows, else the process.
pub fn harness_cpu() -> Duration {
    threads_cpu(LOAD_THREAD_NAME)
        .filter(|d| !d.is_zero())
        .unwrap_or_else(process_cpu)
}

/// Resident set size of this process in bytes.
pub fn rss_bytes() -> u64 {
    let page = {
        // SAFETY: sysconf has no preconditions.
        let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if p > 0 { p as u64 } else { 4096 }
    };
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map(|pages| pages * page)
        .unwrap_or(0)
}

/// Busy and total CPU ticks of the whole machine since boot (`/proc/stat`), to tell a
/// starved harness (the machine was busy) from a slow server.
pub fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal …: idle + iowait are not busy.
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

/// The soft limit on open file descriptors of this process (RLIMIT_NOFILE).
pub fn max_open_files() -> Option<u64> {
    // SAFETY: getrlimit writes into the struct we pass.
    let mut r: libc::rlimit = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } == 0;
    (ok && r.rlim_cur != libc::RLIM_INFINITY).then_some(r.rlim_cur as u64)
}

/// Cores this process may use.
pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_spaces_in_the_name() {
        let line = "123 (tokio rt (x)) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0";
        assert_eq!(stat_cpu_ticks(line), Some(300));
    }

    #[test]
    fn reads_this_process() {
        assert!(rss_bytes() > 0);
        let mut x = 0u64;
        for i in 0..3_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(process_cpu() > Duration::ZERO);
        assert!(cores() >= 1);
    }
}
