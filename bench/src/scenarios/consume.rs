//! consume over HTTP against the same consume as direct SQL (the
//! baseline), alternating in rounds (order flipped every round) so that
//! drift on a shared machine (autovacuum, checkpoints, the other tenant of
//! the cores) falls on both. On PostgreSQL the baseline is run by pgbench
//! (`-M prepared`, one call of the server-side function per consume) when
//! it is installed; otherwise, and on SQLite, by this tool in-process.
//! When wrk is installed, a third leg drives the same consumes over HTTP
//! from wrk (a C load generator), so the client's cost is not this tool's.

use std::sync::Arc;
use std::time::Duration;

use points_gateway::store::Engine;

use rand::Rng;
use serde_json::{json, Value};

use super::{gateway_row, gql_leg, with_cpu, Ctx};
use crate::{baseline, load};

const CONSUME: &str = "mutation($u: Int!, $id: String!) { consume(input: {userId: $u, amount: 1, sourceType: SCRIPT, sourceId: $id}) { id balanceAfter } }";

/// Adds the HTTP and baseline rows per concurrency level; returns the
/// ratios (overall and per round).
pub async fn run(
    ctx: &Ctx<'_>,
    concurrency: &[usize],
    rounds: usize,
    rows: &mut Vec<load::Stats>,
) -> anyhow::Result<Vec<Value>> {
    baseline::prepare(ctx.store).await?;
    let (lo, hi, run_id, requests) = (ctx.lo, ctx.hi, ctx.run_id, ctx.requests);
    let use_pgbench = match ctx.store.engine() {
        Engine::Postgres => crate::pgbench::available(),
        Engine::Sqlite => false,
    };
    let baseline_name = if use_pgbench {
        "consume, pgbench -M prepared (baseline)"
    } else {
        "consume via direct SQL (baseline)"
    };
    let use_wrk = crate::wrk::available();
    let legs: Vec<usize> = if use_wrk { vec![0, 1, 2] } else { vec![0, 1] };
    let mut ratios = Vec::new();
    for &c in concurrency {
        let (mut http, mut direct, mut wrk) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            for k in 0..legs.len() {
                let leg = legs[(k + round) % legs.len()];
                if leg == 2 {
                    let (url, token) = (ctx.gw.url.clone(), ctx.service.clone());
                    let tag = format!("bw-{run_id:08x}-{c}-{round}");
                    wrk.push(
                        child_leg(ctx, "wrk", requests, move || {
                            crate::wrk::consume(&url, &token, c, requests, (lo, hi), &tag)
                        })
                        .await,
                    );
                } else if leg == 0 {
                    http.push(
                        gql_leg(
                            ctx.gw,
                            &ctx.client,
                            &ctx.service,
                            CONSUME,
                            c,
                            requests,
                            move |i| {
                                let u = rand::thread_rng().gen_range(lo..=hi);
                                let id = format!("bh-{run_id:08x}-{c}-{round}-{i}");
                                Some(json!({ "u": u, "id": id }))
                            },
                        )
                        .await,
                    );
                } else if use_pgbench {
                    let url = ctx.database_url.to_owned();
                    direct.push(
                        child_leg(ctx, "pgbench", requests, move || {
                            crate::pgbench::consume(&url, c, requests, lo, hi)
                        })
                        .await,
                    );
                } else {
                    let store = Arc::new(ctx.store.clone());
                    direct.push(
                        with_cpu(
                            ctx.gw,
                            load::measure(c, requests, move |i| {
                                let store = store.clone();
                                async move {
                                    let u = rand::thread_rng().gen_range(lo..=hi);
                                    let sid = format!("bs-{run_id:08x}-{c}-{round}-{i}");
                                    baseline::consume(&store, u, 1, &sid).await.is_ok()
                                }
                            }),
                        )
                        .await,
                    );
                }
            }
        }
        let s = gateway_row(ctx.gw, "consume via HTTP", c, &http);
        let b = load::summarize(baseline_name, c, &direct);
        let mut ratio = json!({
            "concurrency": c,
            "overall": s.throughput_per_s / b.throughput_per_s,
            "per_round": per_round(&http, &direct),
        });
        rows.push(s);
        if use_wrk {
            let w = gateway_row(ctx.gw, "consume via HTTP, wrk", c, &wrk);
            ratio["wrk_overall"] = json!(w.throughput_per_s / b.throughput_per_s);
            ratio["wrk_per_round"] = json!(per_round(&wrk, &direct));
            rows.push(w);
        }
        ratios.push(ratio);
        rows.push(b);
    }
    Ok(ratios)
}

/// Throughput of each round of `legs` over the same round of `baseline`.
pub(super) fn per_round(legs: &[load::Measured], baseline: &[load::Measured]) -> Vec<f64> {
    legs.iter()
        .zip(baseline)
        .map(|(l, b)| l.throughput() / b.throughput())
        .collect()
}

/// A leg run by a load client in a child process (`run` blocks), with the
/// gateway's and the database's CPU; a failed client is reported and
/// counted as `requests` errors in one second.
pub(super) async fn child_leg(
    ctx: &Ctx<'_>,
    client: &'static str,
    requests: usize,
    run: impl FnOnce() -> anyhow::Result<load::Measured> + Send + 'static,
) -> load::Measured {
    with_cpu(ctx.gw, async move {
        tokio::task::spawn_blocking(run)
            .await
            .map_err(anyhow::Error::from)
            .and_then(|r| r)
            .unwrap_or_else(|e| {
                eprintln!("{client}: {e}");
                load::Measured::from_parts(Vec::new(), requests, Duration::from_secs(1))
            })
    })
    .await
}
