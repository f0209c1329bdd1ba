//! PostgreSQL behind PgBouncer in transaction mode against the same
//! gateway connected directly, in one run: the consume and the usage
//! page's first page, legs alternating in rounds (order flipped every
//! round). Debian's PgBouncer (`/usr/sbin/pgbouncer`) is started in front
//! of the benchmark's server with the common configuration
//! (`ignore_startup_parameters = extra_float_digits`), a pool of 20 server
//! connections; the second gateway runs with `DATABASE_POOL_MODE=transaction`
//! and its `LISTEN` direct. Skipped (with a note) without PgBouncer.

use std::process::Command;

use rand::Rng;
use serde_json::{json, Value};

use super::{gateway_row, gql_leg, Ctx};
use crate::{gateway, load};

const CONSUME: &str = "mutation($u: Int!, $id: String!) { consume(input: {userId: $u, amount: 1, sourceType: SCRIPT, sourceId: $id}) { id balanceAfter } }";
const PAGE: &str = "query UsageDetail($u: Int) { usageDetails(userId: $u, first: 20) { edges { node { createdAt description duration change balanceAfter } } pageInfo { hasNextPage endCursor } } }";
const PGBOUNCER: &str = "/usr/sbin/pgbouncer";

/// A PgBouncer process of this run, stopped on drop.
struct Bouncer {
    dir: tempfile::TempDir,
    port: u16,
}

fn as_owner(script: &str) -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let status = if root {
        Command::new("su")
            .args(["-s", "/bin/sh", "postgres", "-c", script])
            .current_dir("/")
            .status()
    } else {
        Command::new("sh").args(["-c", script]).status()
    };
    status.is_ok_and(|s| s.success())
}

impl Bouncer {
    fn start(database_url: &str) -> anyhow::Result<Bouncer> {
        let rest = database_url
            .split_once('@')
            .map_or(database_url, |(_, r)| r);
        let hostport = rest.split(['/', '?']).next().unwrap_or(rest);
        let (host, port) = hostport.rsplit_once(':').unwrap_or((hostport, "5432"));
        let user = database_url
            .split_once("://")
            .and_then(|(_, r)| r.split_once('@'))
            .map(|(u, _)| u.split(':').next().unwrap_or(u).to_owned())
            .unwrap_or_else(|| "postgres".into());
        let dir = tempfile::Builder::new()
            .prefix("bench-pgbouncer-")
            .tempdir_in("/tmp")?;
        let listen = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let d = dir.path().display().to_string();
        std::fs::write(
            dir.path().join("userlist.txt"),
            format!("\"{user}\" \"\"\n"),
        )?;
        std::fs::write(
            dir.path().join("pgbouncer.ini"),
            format!(
                "[databases]\n* = host={host} port={port}\n\n[pgbouncer]\n\
                 listen_addr = 127.0.0.1\nlisten_port = {listen}\nunix_socket_dir =\n\
                 auth_type = trust\nauth_file = {d}/userlist.txt\npool_mode = transaction\n\
                 ignore_startup_parameters = extra_float_digits\nmax_client_conn = 1000\n\
                 default_pool_size = 20\nlogfile = {d}/pgbouncer.log\npidfile = {d}/pgbouncer.pid\n"
            ),
        )?;
        let _ = Command::new("chown")
            .args(["-R", "postgres"])
            .arg(dir.path())
            .status();
        anyhow::ensure!(
            as_owner(&format!("{PGBOUNCER} -d -q '{d}/pgbouncer.ini'")),
            "pgbouncer did not start"
        );
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", listen)).is_ok() {
                return Ok(Bouncer { dir, port: listen });
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        anyhow::bail!("pgbouncer does not listen")
    }

    fn url_for(&self, database_url: &str) -> String {
        let rest = database_url
            .split_once('@')
            .map_or(database_url, |(_, r)| r);
        let hostport = rest.split(['/', '?']).next().unwrap_or(rest);
        database_url.replacen(hostport, &format!("127.0.0.1:{}", self.port), 1)
    }
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.path().join("pgbouncer.pid")) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
    }
}

/// Adds a direct and a pooled row per concurrency level for the consume
/// and the usage page; returns the ratios (pooled / direct).
pub async fn run(
    ctx: &Ctx<'_>,
    concurrency: &[usize],
    rounds: usize,
    rows: &mut Vec<load::Stats>,
) -> anyhow::Result<Vec<Value>> {
    if !std::path::Path::new(PGBOUNCER).exists() || !ctx.gw.postgres {
        eprintln!("pooled: skipped (needs PostgreSQL and Debian's pgbouncer)");
        return Ok(Vec::new());
    }
    let bouncer = Bouncer::start(ctx.database_url)?;
    let pooled = gateway::Gateway::start_with(
        &bouncer.url_for(ctx.database_url),
        &[
            ("DATABASE_POOL_MODE", "transaction"),
            ("DATABASE_LISTEN_URL", ctx.database_url),
        ],
    )?;
    let (lo, hi, run_id, requests) = (ctx.lo, ctx.hi, ctx.run_id, ctx.requests);
    let mut ratios = Vec::new();
    for &c in concurrency {
        let mut runs: [Vec<load::Measured>; 4] = Default::default();
        for round in 0..rounds {
            for k in 0..2 {
                let through_bouncer = (k + round) % 2 == 1;
                let gw = if through_bouncer { &pooled } else { ctx.gw };
                let tag = if through_bouncer { "b" } else { "d" };
                let consume = gql_leg(
                    gw,
                    &ctx.client,
                    &ctx.service,
                    CONSUME,
                    c,
                    requests,
                    move |i| {
                        Some(json!({
                            "u": lo + (i as i32 % (hi - lo + 1)),
                            "id": format!("pool-{run_id}-{c}-{round}-{tag}-{i}"),
                        }))
                    },
                )
                .await;
                let page = gql_leg(gw, &ctx.client, &ctx.admin, PAGE, c, requests, move |_| {
                    Some(json!({ "u": rand::thread_rng().gen_range(lo..=hi) }))
                })
                .await;
                let slot = if through_bouncer { 1 } else { 0 };
                runs[slot].push(consume);
                runs[slot + 2].push(page);
            }
        }
        let names = [
            "consume direct (pooled A/B)",
            "consume via PgBouncer transaction mode",
            "usageDetails first page direct (pooled A/B)",
            "usageDetails first page via PgBouncer transaction mode",
        ];
        let mut stats = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let gw = if i % 2 == 1 { &pooled } else { ctx.gw };
            let s = gateway_row(gw, name, c, &runs[i]);
            stats.push(s.throughput_per_s);
            rows.push(s);
        }
        let (consume, page) = (stats[1] / stats[0], stats[3] / stats[2]);
        println!(
            "c{c}: through PgBouncer (transaction mode) / direct: consume {consume:.2}x, usage page {page:.2}x"
        );
        ratios.push(json!({ "concurrency": c, "consume": consume, "usage_first_page": page }));
    }
    Ok(ratios)
}
