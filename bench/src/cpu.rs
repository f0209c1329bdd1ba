//! CPU time spent by the gateway and by the local PostgreSQL, read from
//! /proc. Throughput on a shared two-core machine drifts from minute to
//! minute; CPU time per request is the work itself and drifts far less, so
//! the report gives both.

use std::time::Duration;

/// /proc reports times in USER_HZ, which Linux fixes at 100 for user space.
const TICKS_PER_SEC: f64 = 100.0;

fn ticks(stat: &str) -> Option<(String, u64)> {
    ticks_of(stat).map(|(comm, own, _)| (comm, own))
}

/// `(name, own ticks, ticks of exited children it waited for)`.
fn ticks_of(stat: &str) -> Option<(String, u64, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_owned();
    let mut rest = stat.get(close + 2..)?.split_whitespace();
    // After the name: state is field 3; utime, stime, cutime, cstime are
    // fields 14 to 17.
    let utime: u64 = rest.nth(11)?.parse().ok()?;
    let stime: u64 = rest.next()?.parse().ok()?;
    let cutime: u64 = rest.next()?.parse().ok()?;
    let cstime: u64 = rest.next()?.parse().ok()?;
    Some((comm, utime + stime, cutime + cstime))
}

fn as_duration(t: u64) -> Duration {
    Duration::from_secs_f64(t as f64 / TICKS_PER_SEC)
}

/// CPU time used so far by one process (all its threads).
pub fn process(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    ticks(&stat).map(|(_, t)| as_duration(t))
}

/// CPU time used so far by every process named `postgres` on this machine
/// (the server and its backends), with the time of backends that exited
/// (the server's waited-for children: pgbench's connections end with its
/// run); `None` when there is none, e.g. a remote database.
pub fn postgres() -> Option<Duration> {
    let mut total = 0;
    let mut seen = false;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if let Some((comm, own, children)) = ticks_of(&stat) {
            if comm == "postgres" {
                total += own + children;
                seen = true;
            }
        }
    }
    seen.then(|| as_duration(total))
}

/// `(all, steal)` ticks of the whole machine so far, from /proc/stat.
/// Steal is time the hypervisor gave this VM's virtual CPUs to someone
/// else: when it is high, every figure of the run is low.
pub fn machine() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is
    // already counted in user).
    let all = fields.iter().take(8).sum();
    Some((all, *fields.get(7)?))
}

/// Steal as a share of all CPU time between two [`machine`] readings.
pub fn steal_share(before: (u64, u64), after: (u64, u64)) -> f64 {
    let all = after.0.saturating_sub(before.0).max(1);
    after.1.saturating_sub(before.1) as f64 / all as f64
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_name_and_the_times() {
        let stat = "42 (postgres: x (y)) S 1 2 3 4 5 6 7 8 9 10 250 50 7 3 20 0";
        assert_eq!(super::ticks(stat), Some(("postgres: x (y)".into(), 300)));
        assert_eq!(
            super::ticks_of(stat),
            Some(("postgres: x (y)".into(), 300, 10))
        );
    }
}
