//! The UsageDetail page's first page (20 rows, its columns) for random
//! users with their own tokens, served by the gateway, by PostGraphile v5
//! (amber preset) on the same database, and as raw SQL by pgbench
//! (`-M prepared`): three legs rotating every round, ratios per round.
//! Both HTTP servers are driven by wrk when it is installed (else by this
//! tool's client), each request a random user's page.
//!
//! PostGraphile runs from `bench/postgraphile` (`npm ci` there first); the
//! scenario says so and skips that leg when it is not installed.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use points_gateway::auth::{Role, TokenKeys};
use points_gateway::config::JwtSecret;
use rand::Rng;
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{json, Value};

use super::{gateway_row, post, post_body, with_cpu, Ctx};
use crate::{cpu, gateway, load};

const GATEWAY_PAGE: &str = "query UsageDetail($after: String) { usageDetails(first: 20, after: $after) { edges { node { createdAt description duration change balanceAfter } } pageInfo { hasNextPage endCursor } } }";

/// The same page in PostGraphile's schema (its generated names).
const PEER_PAGE: &str = "query($u: UUID!) { allMjkPointTransactions(condition: {userId: $u}, orderBy: [CREATED_AT_DESC, PRIMARY_KEY_DESC], first: 20) { nodes { createdAt description duration amount balanceAfter type } pageInfo { hasNextPage endCursor } } }";

const PEER_PORT: u16 = 5678;

/// PostGraphile in a child process, killed on drop.
struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Peer {
    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn peak_rss_mib(&self) -> Option<f64> {
        gateway::status_kib(self.pid(), "VmHWM:").map(|k| k / 1024.0)
    }
}

async fn start_peer(ctx: &Ctx<'_>, uuid: &str) -> Option<Peer> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("postgraphile");
    if !dir.join("node_modules").is_dir() {
        eprintln!(
            "peer: PostGraphile is not installed; run `npm ci` in {} (skipping that leg)",
            dir.display()
        );
        return None;
    }
    let child = Command::new("node")
        .arg("server.mjs")
        .current_dir(&dir)
        .env("DATABASE_URL", ctx.database_url)
        .env("PORT", PEER_PORT.to_string())
        .env("POOL", "16")
        // As it is run in production: grafast's development checks off.
        .env("NODE_ENV", "production")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| eprintln!("peer: cannot start node: {e}"))
        .ok()?;
    let peer = Peer(child);
    let url = format!("http://127.0.0.1:{PEER_PORT}");
    for _ in 0..300 {
        if post(&ctx.client, &url, "", PEER_PAGE, json!({ "u": uuid }))
            .await
            .is_ok()
        {
            return Some(peer);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("peer: PostGraphile did not answer within 30 s (skipping that leg)");
    None
}

/// Adds the rows per concurrency level; returns the ratios.
pub async fn run(
    ctx: &Ctx<'_>,
    concurrency: &[usize],
    rounds: usize,
    rows: &mut Vec<load::Stats>,
) -> anyhow::Result<Vec<Value>> {
    let db = ctx.store.connection();
    let users: Vec<(i32, String)> = db
        .query_all_raw(Statement::from_sql_and_values(
            db.get_database_backend(),
            "SELECT id, CAST(uuid AS TEXT) AS uuid FROM gw_users WHERE id BETWEEN $1 AND $2 ORDER BY id",
            [ctx.lo.into(), ctx.hi.into()],
        ))
        .await?
        .iter()
        .map(|r| Ok((r.try_get("", "id")?, r.try_get("", "uuid")?)))
        .collect::<Result<_, sea_orm::DbErr>>()?;
    anyhow::ensure!(!users.is_empty(), "no users");
    let keys = TokenKeys::new(&JwtSecret::new(gateway::SECRET.as_bytes().to_vec())?);
    let tokens: Vec<String> = users
        .iter()
        .map(|(id, _)| keys.mint(Role::User, Some(*id), chrono::Duration::hours(4)))
        .collect::<Result<_, _>>()?;
    // Each request a random user's page: `(token or "", body)` per user,
    // sent by wrk (a C load generator) when installed, so that neither
    // figure carries this tool's own client's CPU, else by this tool.
    let body = |query: &str, vars: Value| json!({ "query": query, "variables": vars }).to_string();
    let gw_requests: Arc<Vec<(String, String)>> = Arc::new(
        tokens
            .iter()
            .map(|t| (t.clone(), body(GATEWAY_PAGE, json!({}))))
            .collect(),
    );
    let peer_requests: Arc<Vec<(String, String)>> = Arc::new(
        users
            .iter()
            .map(|(_, u)| (String::new(), body(PEER_PAGE, json!({ "u": u }))))
            .collect(),
    );
    let peer = start_peer(ctx, &users[0].1).await;
    let peer_url = format!("http://127.0.0.1:{PEER_PORT}");
    if peer.is_some() {
        // Node compiles hot code as it runs: measured cold, the first round
        // would flatter the gateway. Both servers get the same warm-up.
        for i in 0..2_000 {
            for (url, reqs) in [(&peer_url, &peer_requests), (&ctx.gw.url, &gw_requests)] {
                let (token, body) = &reqs[i % reqs.len()];
                let _ = post_body(&ctx.client, url, token, body.clone()).await;
            }
        }
    }
    let (lo, hi, requests) = (ctx.lo, ctx.hi, ctx.requests);
    let use_wrk = crate::wrk::available();
    let mut ratios = Vec::new();
    for &c in concurrency {
        let (mut gw, mut pg, mut raw) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            for k in 0..3 {
                match (k + round) % 3 {
                    0 => {
                        let reqs = gw_requests.clone();
                        gw.push(page_leg(ctx, &ctx.gw.url, reqs, c, use_wrk).await);
                    }
                    1 => {
                        let Some(p) = &peer else { continue };
                        let before = cpu::process(p.pid());
                        let reqs = peer_requests.clone();
                        let mut m = page_leg(ctx, &peer_url, reqs, c, use_wrk).await;
                        // The server under test in this leg is PostGraphile.
                        m.gateway_cpu = cpu::process(p.pid())
                            .zip(before)
                            .map(|(a, b)| a.saturating_sub(b));
                        pg.push(m);
                    }
                    _ => {
                        let url = ctx.database_url.to_owned();
                        raw.push(
                            super::consume::child_leg(ctx, "pgbench", requests, move || {
                                crate::pgbench::usage_page(&url, c, requests, lo, hi)
                            })
                            .await,
                        );
                    }
                }
            }
        }
        let client = if use_wrk { ", wrk" } else { "" };
        let g = gateway_row(
            ctx.gw,
            &format!("usageDetails first page, user tokens{client}"),
            c,
            &gw,
        );
        let r = load::summarize("the page as raw SQL, pgbench -M prepared", c, &raw);
        let mut ratio = json!({
            "concurrency": c,
            "overall": g.throughput_per_s / r.throughput_per_s,
            "per_round": super::consume::per_round(&gw, &raw),
        });
        rows.push(g.clone());
        if let Some(p) = &peer {
            let mut s = load::summarize(
                &format!("the page from PostGraphile v5 (amber){client}"),
                c,
                &pg,
            );
            s.peak_rss_mib = p.peak_rss_mib();
            ratio["peer_overall"] = json!(g.throughput_per_s / s.throughput_per_s);
            ratio["peer_per_round"] = json!(super::consume::per_round(&gw, &pg));
            rows.push(s);
        }
        rows.push(r);
        ratios.push(ratio);
    }
    Ok(ratios)
}

/// `ctx.requests` pages from `url` (about that many with wrk, which runs
/// for a duration), each one of `reqs` at random, from `c` connections;
/// CPU of the gateway and the database noted.
async fn page_leg(
    ctx: &Ctx<'_>,
    url: &str,
    reqs: Arc<Vec<(String, String)>>,
    c: usize,
    use_wrk: bool,
) -> load::Measured {
    let requests = ctx.requests;
    let url = url.to_owned();
    if use_wrk {
        return super::consume::child_leg(ctx, "wrk", requests, move || {
            crate::wrk::posts(&url, c, requests, &reqs)
        })
        .await;
    }
    let client = ctx.client.clone();
    let leg = load::measure(c, requests, move |_| {
        let (client, url) = (client.clone(), url.clone());
        let (token, body) = reqs[rand::thread_rng().gen_range(0..reqs.len())].clone();
        async move { post_body(&client, &url, &token, body).await.is_ok() }
    });
    with_cpu(ctx.gw, leg).await
}
