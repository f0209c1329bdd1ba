//! Debian's PgBouncer (`/usr/sbin/pgbouncer`, the `pgbouncer` package) in
//! front of a PostgreSQL server, as most managed setups run it: a config
//! of its own in a temporary directory, a free loopback port, the common
//! `ignore_startup_parameters = extra_float_digits` and nothing else bent
//! for the gateway. As root it runs as `postgres` (it refuses root).

use std::path::PathBuf;
use std::process::Command;

use crate::pg_cluster::{free_port, ServerUser};

pub struct PgBouncer {
    dir: tempfile::TempDir,
    user: ServerUser,
    pub port: u16,
}

/// `session` or `transaction`.
#[derive(Debug, Clone, Copy)]
pub enum PoolMode {
    Session,
    Transaction,
}

impl PoolMode {
    fn as_str(self) -> &'static str {
        match self {
            PoolMode::Session => "session",
            PoolMode::Transaction => "transaction",
        }
    }

    /// Server connections per database and user: few in transaction mode,
    /// so the gateway's connections (10 in the tests) share them and
    /// consecutive transactions of one client land on different servers.
    fn pool_size(self) -> u32 {
        match self {
            PoolMode::Session => 40,
            PoolMode::Transaction => 4,
        }
    }
}

impl PgBouncer {
    /// One PgBouncer in transaction mode in front of `TEST_DATABASE_URL`'s
    /// server for the whole test binary (`helpers::spawn_pooled`). A static
    /// is never dropped, so it watches this process and exits after it.
    pub fn shared() -> &'static PgBouncer {
        static SHARED: std::sync::OnceLock<PgBouncer> = std::sync::OnceLock::new();
        SHARED.get_or_init(|| {
            let server = std::env::var("TEST_DATABASE_URL").expect("TEST_DATABASE_URL");
            PgBouncer::launch(&server, PoolMode::Transaction, Some(std::process::id()))
        })
    }

    /// In front of the server `server_url` points at (any database name
    /// passes through to the same name).
    pub fn start(server_url: &str, mode: PoolMode) -> PgBouncer {
        PgBouncer::launch(server_url, mode, None)
    }

    /// Starts it; with `outlive_not`, a watcher stops it once that process
    /// has gone.
    fn launch(server_url: &str, mode: PoolMode, outlive_not: Option<u32>) -> PgBouncer {
        let (host, port) = host_port(server_url);
        let dir = tempfile::Builder::new()
            .prefix("pgbouncer-")
            .tempdir_in("/tmp")
            .unwrap();
        let user = ServerUser::detect();
        let listen = free_port();
        let d = dir.path().display().to_string();
        std::fs::write(dir.path().join("userlist.txt"), "\"gateway\" \"\"\n").unwrap();
        std::fs::write(
            dir.path().join("pgbouncer.ini"),
            format!(
                "[databases]\n* = host={host} port={port}\n\n[pgbouncer]\n\
                 listen_addr = 127.0.0.1\nlisten_port = {listen}\nunix_socket_dir =\n\
                 auth_type = trust\nauth_file = {d}/userlist.txt\n\
                 pool_mode = {mode}\nignore_startup_parameters = extra_float_digits\n\
                 max_client_conn = 1000\ndefault_pool_size = {size}\n\
                 logfile = {d}/pgbouncer.log\npidfile = {d}/pgbouncer.pid\n",
                mode = mode.as_str(),
                size = mode.pool_size()
            ),
        )
        .unwrap();
        let b = PgBouncer {
            dir,
            user,
            port: listen,
        };
        b.user.own(b.dir.path());
        if let Some(pid) = outlive_not {
            let watcher = format!(
                "while [ -d /proc/{pid} ]; do sleep 1; done; kill $(cat '{d}/pgbouncer.pid') 2>/dev/null"
            );
            let _ = Command::new("sh")
                .args(["-c", &watcher])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn();
        }
        assert!(
            b.user
                .sh(&format!("/usr/sbin/pgbouncer -d -q '{d}/pgbouncer.ini'")),
            "pgbouncer (Debian's `pgbouncer` package) did not start: {}",
            std::fs::read_to_string(b.dir.path().join("pgbouncer.log")).unwrap_or_default()
        );
        // Wait until it accepts connections.
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", listen)).is_ok() {
                return b;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("pgbouncer does not listen on {listen}");
    }

    /// `url` (a database on the server behind) through this PgBouncer.
    pub fn url_for(&self, url: &str) -> String {
        let (host, port) = host_port(url);
        url.replacen(
            &format!("{host}:{port}"),
            &format!("127.0.0.1:{}", self.port),
            1,
        )
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pgbouncer.log")).unwrap_or_default()
    }

    fn pidfile(&self) -> PathBuf {
        self.dir.path().join("pgbouncer.pid")
    }
}

/// `host` and `port` of a `postgres://user@host:port/db` URL.
fn host_port(url: &str) -> (String, u16) {
    let rest = url.split_once('@').map_or(url, |(_, r)| r);
    let hostport = rest.split(['/', '?']).next().unwrap_or(rest);
    let (host, port) = hostport.rsplit_once(':').unwrap_or((hostport, "5432"));
    (host.to_owned(), port.parse().unwrap_or(5432))
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.pidfile()) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
    }
}
