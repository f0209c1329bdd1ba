//! The gateway under test runs as its own process (the release binary next
//! to this one), so its memory can be read from /proc.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

pub struct Gateway {
    child: Child,
    pub url: String,
    /// Whether it runs on PostgreSQL (else SQLite, inside the process).
    pub postgres: bool,
}

pub const SECRET: &str = "bench-secret-0123456789abcdef0123456789";

impl Gateway {
    pub fn start(database_url: &str) -> anyhow::Result<Gateway> {
        Self::start_with(database_url, &[])
    }

    /// With extra environment settings for one scenario.
    pub fn start_with(database_url: &str, env: &[(&str, &str)]) -> anyhow::Result<Gateway> {
        let exe = std::env::current_exe()?.with_file_name("points-gateway");
        let mut child = Command::new(&exe)
            .envs(env.iter().copied())
            .arg("serve")
            .env("DATABASE_URL", database_url)
            .env("GATEWAY_BIND", "127.0.0.1:0")
            .env("GATEWAY_JWT_SECRET", SECRET)
            .env("EXPIRY_SWEEP_SECS", "0")
            .env("RATE_LIMIT_SERVICE", "0")
            .env("RATE_LIMIT_ADMIN", "0")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start {}: {e}", exe.display()))?;
        let mut out = BufReader::new(
            child
                .stdout
                .take()
                .ok_or_else(|| anyhow::anyhow!("no stdout"))?,
        );
        let mut first = String::new();
        out.read_line(&mut first)?;
        std::thread::spawn(move || {
            let mut sink = String::new();
            while out.read_line(&mut sink).is_ok_and(|n| n > 0) {
                sink.clear();
            }
        });
        let url = first
            .trim()
            .rsplit_once("listening on ")
            .map(|(_, u)| u.to_owned())
            .ok_or_else(|| anyhow::anyhow!("unexpected first line {first:?}"))?;
        Ok(Gateway {
            child,
            url,
            postgres: database_url.starts_with("postgres"),
        })
    }

    fn status_kib(&self, field: &str) -> Option<f64> {
        status_kib(self.child.id(), field)
    }

    /// Current resident memory, MiB.
    pub fn rss_mib(&self) -> Option<f64> {
        self.status_kib("VmRSS:").map(|k| k / 1024.0)
    }

    /// CPU time the gateway has used so far.
    pub fn cpu(&self) -> Option<std::time::Duration> {
        crate::cpu::process(self.child.id())
    }

    /// Peak resident memory since start, MiB.
    pub fn peak_rss_mib(&self) -> Option<f64> {
        self.status_kib("VmHWM:").map(|k| k / 1024.0)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `/proc/<pid>/status` figure in KiB (`VmRSS:`, `VmHWM:`).
pub fn status_kib(pid: u32, field: &str) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
}
