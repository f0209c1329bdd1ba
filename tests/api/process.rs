//! The real `points-gateway` binary as a child process, where a test must
//! kill it or read its memory from `/proc`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use points_gateway::auth::{Role, TokenKeys};
use points_gateway::config::JwtSecret;

pub const SECRET: &str = "lifecycle-secret-0123456789abcdef";

pub struct Gateway {
    pub child: Child,
    pub url: String,
}

impl Gateway {
    /// Starts the `points-gateway` binary and waits for its listening line.
    pub fn start(database_url: &str, env: &[(&str, &str)], stderr: Stdio) -> Gateway {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_points-gateway"));
        cmd.arg("serve");
        Gateway::start_command(cmd, database_url, env, stderr)
    }

    /// Starts `cmd` (the binary with its arguments) as [`Gateway::start`]
    /// does.
    pub fn start_command(
        mut cmd: Command,
        database_url: &str,
        env: &[(&str, &str)],
        stderr: Stdio,
    ) -> Gateway {
        cmd.env("DATABASE_URL", database_url)
            .env("GATEWAY_BIND", "127.0.0.1:0")
            .env("GATEWAY_JWT_SECRET", SECRET)
            .env("EXPIRY_SWEEP_SECS", "0")
            .env("RATE_LIMIT_SERVICE", "0")
            .env("RATE_LIMIT_ADMIN", "0")
            .stdout(Stdio::piped())
            .stderr(stderr);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("gateway binary starts");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        out.read_line(&mut first).unwrap();
        // Keep reading: a closed pipe would kill the gateway's next println.
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
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"));
        Gateway { child, url }
    }
}

impl Gateway {
    /// The binary on a fresh SQLite file (kept until the directory drops),
    /// logging nowhere.
    pub async fn on_sqlite(env: &[(&str, &str)]) -> (Gateway, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = crate::helpers::database_url(crate::helpers::Engine::Sqlite, &dir).await;
        (Gateway::start(&url, env, Stdio::null()), dir)
    }
}

/// One GraphQL request to a gateway at `url` (`http://host:port`).
pub async fn post(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    query: &str,
    vars: serde_json::Value,
) -> Result<serde_json::Value, reqwest::Error> {
    client
        .post(format!("{url}/graphql"))
        .bearer_auth(token)
        .json(&serde_json::json!({ "query": query, "variables": vars }))
        .send()
        .await?
        .json()
        .await
}

/// A subcommand of the binary on `url` (`adopt`, `verify`, …): whether it
/// succeeded, and what it printed.
pub fn cli(url: &str, args: &[&str]) -> (bool, String) {
    cli_with(url, args, &[])
}

/// [`cli`] with more environment.
pub fn cli_with(url: &str, args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_points-gateway"))
        .args(args)
        .envs(env.iter().copied())
        .env("DATABASE_URL", url)
        // None of these tools mints or checks a token: no secret.
        .env_remove("GATEWAY_JWT_SECRET")
        .output()
        .unwrap();
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

pub fn token(role: Role) -> String {
    TokenKeys::new(&JwtSecret::new(SECRET.as_bytes().to_vec()).unwrap())
        .mint(role, None, chrono::Duration::hours(1))
        .unwrap()
}

impl Gateway {
    /// A figure of its `/metrics` (read with an admin token): `name` with
    /// its labels as the page writes them (`gateway_reads_total{target="replica"}`);
    /// `None` while the page has no such line.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let text = reqwest::Client::new()
            .get(format!("{}/metrics", self.url))
            .bearer_auth(token(Role::Admin))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }

    /// A figure of `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM`).
    pub fn status_kib(&self, field: &str) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with(field))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse().ok())
            })
            .unwrap_or(0)
    }

    pub fn host(&self) -> String {
        self.url.trim_start_matches("http://").to_owned()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
