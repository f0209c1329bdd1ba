//! A PostgreSQL 15 cluster of the test's own, for what the shared test
//! cluster must not suffer: being stopped (outages), later a replica or a
//! pooler in front. Made with the server's own tools (`initdb`, `pg_ctl`)
//! in a temporary directory, on a free loopback port, and removed on drop.
//! As root the cluster runs as the `postgres` user (initdb refuses root).

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct PgCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    user: ServerUser,
    pub port: u16,
}

/// Who runs a server process the tests start (PostgreSQL, PgBouncer):
/// `postgres` when the tests run as root (both refuse root), else the
/// tests' own user.
#[derive(Clone)]
pub struct ServerUser(Option<String>);

impl ServerUser {
    pub fn detect() -> ServerUser {
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        ServerUser(root.then(|| "postgres".to_owned()))
    }

    /// Hands `path` (recursively) to the server's user.
    pub fn own(&self, path: &Path) {
        if let Some(u) = &self.0 {
            let ok = Command::new("chown")
                .args(["-R", u])
                .arg(path)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "chown {}", path.display());
        }
    }

    /// Runs `script` as the server's user; whether it succeeded.
    pub fn sh(&self, script: &str) -> bool {
        match &self.0 {
            Some(u) => Command::new("su")
                .args(["-s", "/bin/sh", u, "-c", script])
                .current_dir("/")
                .status(),
            None => Command::new("sh").args(["-c", script]).status(),
        }
        .is_ok_and(|s| s.success())
    }
}

/// The server binaries: `PG_BIN` (scripts/pg-throwaway.sh exports it), or
/// Debian's layout.
fn pg_bin() -> PathBuf {
    if let Some(b) = std::env::var_os("PG_BIN") {
        return PathBuf::from(b);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
        .pop()
        .filter(|b| b.join("initdb").exists())
        .expect("PostgreSQL server binaries (PG_BIN or /usr/lib/postgresql/*/bin)")
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl PgCluster {
    /// `initdb` and start; the superuser is `gateway`, trusted on loopback.
    pub fn start() -> PgCluster {
        let dir = tempfile::Builder::new()
            .prefix("pg-own-")
            .tempdir_in("/tmp")
            .unwrap();
        let user = ServerUser::detect();
        let c = PgCluster {
            dir,
            bin: pg_bin(),
            user,
            port: free_port(),
        };
        c.user.own(c.dir.path());
        c.run(&format!(
            "'{}' -D '{}' -U gateway --auth=trust -E UTF8 --no-locale >/dev/null",
            c.bin.join("initdb").display(),
            c.data().display()
        ));
        c.start_again();
        c
    }

    /// A streaming replica of this cluster, as an operator makes one:
    /// `pg_basebackup -R -X stream`, then started on a port of its own.
    pub fn replica(&self) -> PgCluster {
        let dir = tempfile::Builder::new()
            .prefix("pg-replica-")
            .tempdir_in("/tmp")
            .unwrap();
        let r = PgCluster {
            dir,
            bin: self.bin.clone(),
            user: self.user.clone(),
            port: free_port(),
        };
        r.user.own(r.dir.path());
        r.run(&format!(
            "'{}' -h 127.0.0.1 -p {} -U gateway -D '{}' -R -X stream >/dev/null",
            r.bin.join("pg_basebackup").display(),
            self.port,
            r.data().display()
        ));
        r.start_again();
        r
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The `postgres` database as `gateway`.
    pub fn url(&self) -> String {
        format!("postgres://gateway@127.0.0.1:{}/postgres", self.port)
    }

    /// `pg_ctl start`, waiting until it accepts connections.
    pub fn start_again(&self) {
        self.run(&format!(
            "'{}' -D '{}' -l '{}' -w -o \"-p {} -k '{}' -c listen_addresses=127.0.0.1 -c fsync=off\" start >/dev/null",
            self.bin.join("pg_ctl").display(),
            self.data().display(),
            self.dir.path().join("server.log").display(),
            self.port,
            self.dir.path().display(),
        ));
    }

    /// `pg_ctl stop -m fast`: sessions are ended, the server goes away.
    pub fn stop(&self) {
        self.run(&format!(
            "'{}' -D '{}' -w -m fast stop >/dev/null",
            self.bin.join("pg_ctl").display(),
            self.data().display()
        ));
    }

    fn run(&self, script: &str) {
        assert!(self.user.sh(script), "failed: {script}");
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.user.sh(&format!(
            "'{}' -D '{}' -m immediate stop >/dev/null 2>&1",
            self.bin.join("pg_ctl").display(),
            self.data().display()
        ));
    }
}
