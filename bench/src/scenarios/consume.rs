//! consume over HTTP against the same consume as direct SQL (the
//! baseline), alternating in rounds (order flipped every round) so that
//! drift on a shared machine (autovacuum, checkpoints, the other tenant of
//! the cores) falls on both. On PostgreSQL the baseline is run by pgbench
//! (`-M prepared`, one call per consume of `gw_consume`, the function the
//! gateway itself calls: the same rows, the same locks) when
//! it is installed; otherwise, and on SQLite, by this tool in-process.
//! When wrk is installed, a third leg drives the same consumes over HTTP
//! from wrk (a C load generator), so the client's cost is not this tool's.
//! On PostgreSQL a fourth leg runs them through a second gateway whose
//! consumes take the general path (`PG_CONSUME_CALL=false`): the A/B of
//! the one-call consume in the same run. With pgbench, a fifth leg runs
//! the minimal write (`minimal-write.sql`: only the rows a consume needs),
//! and every leg is also reported as a ratio of it.

use std::sync::Arc;
use std::time::Duration;

use points_gateway::store::Engine;

use rand::Rng;
use serde_json::{json, Value};

use super::{gateway_row, gql_leg, with_cpu, Ctx};
use crate::{baseline, load};

const CONSUME: &str = "mutation($u: Int!, $id: String!) { consume(input: {userId: $u, amount: 1, sourceType: SCRIPT, sourceId: $id}) { id balanceAfter } }";

/// The legs of one round, rotated every round.
#[derive(Clone, Copy, PartialEq)]
enum Leg {
    /// This tool's HTTP client against the gateway.
    Http,
    /// The same consume without HTTP and GraphQL (pgbench or in-process).
    Baseline,
    /// wrk against the gateway.
    Wrk,
    /// PostgreSQL: a second gateway with `PG_CONSUME_CALL=false`, every
    /// consume through the general path (four round trips): the A/B of
    /// the one-call consume.
    General,
    /// pgbench: the minimal write, the floor of a consume's database work.
    Minimal,
}

/// Adds the HTTP and baseline rows per concurrency level; returns the
/// ratios (overall and per round).
pub async fn run(
    ctx: &Ctx<'_>,
    concurrency: &[usize],
    rounds: usize,
    rows: &mut Vec<load::Stats>,
) -> anyhow::Result<Vec<Value>> {
    let (lo, hi, run_id, requests) = (ctx.lo, ctx.hi, ctx.run_id, ctx.requests);
    let postgres = ctx.store.engine() == Engine::Postgres;
    let use_pgbench = postgres && crate::pgbench::available();
    let baseline_name = if use_pgbench {
        "consume, pgbench -M prepared gw_consume (baseline)"
    } else {
        "consume via direct SQL (baseline)"
    };
    let general = if postgres {
        Some(crate::gateway::Gateway::start_with(
            ctx.database_url,
            &[("PG_CONSUME_CALL", "false")],
        )?)
    } else {
        None
    };
    let mut legs = vec![Leg::Http, Leg::Baseline];
    if crate::wrk::available() {
        legs.push(Leg::Wrk);
    }
    if general.is_some() {
        legs.push(Leg::General);
    }
    if use_pgbench {
        crate::pgbench::install_minimal(ctx.database_url).await?;
        legs.push(Leg::Minimal);
    }
    let mut ratios = Vec::new();
    for &c in concurrency {
        let (mut http, mut direct, mut wrk, mut slow, mut minimal) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            for k in 0..legs.len() {
                match legs[(k + round) % legs.len()] {
                    Leg::Wrk => {
                        let (url, token) = (ctx.gw.url.clone(), ctx.service.clone());
                        let tag = format!("bw-{run_id:08x}-{c}-{round}");
                        wrk.push(
                            child_leg(ctx, "wrk", requests, move || {
                                crate::wrk::consume(&url, &token, c, requests, (lo, hi), &tag)
                            })
                            .await,
                        );
                    }
                    Leg::Http => http.push(
                        http_leg(ctx, ctx.gw, c, &format!("bh-{run_id:08x}-{c}-{round}")).await,
                    ),
                    Leg::General => {
                        if let Some(gw) = &general {
                            let tag = format!("bg-{run_id:08x}-{c}-{round}");
                            slow.push(http_leg(ctx, gw, c, &tag).await);
                        }
                    }
                    Leg::Minimal => {
                        minimal.push(
                            pgbench_leg(ctx, crate::pgbench::Write::Minimal, c, requests, (lo, hi))
                                .await,
                        );
                    }
                    Leg::Baseline if use_pgbench => {
                        direct.push(
                            pgbench_leg(
                                ctx,
                                crate::pgbench::Write::GwConsume,
                                c,
                                requests,
                                (lo, hi),
                            )
                            .await,
                        );
                    }
                    Leg::Baseline => {
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
        }
        let s = gateway_row(ctx.gw, "consume via HTTP", c, &http);
        let s_throughput = s.throughput_per_s;
        let b = load::summarize(baseline_name, c, &direct);
        let mut ratio = json!({
            "concurrency": c,
            "overall": s.throughput_per_s / b.throughput_per_s,
            "per_round": per_round(&http, &direct),
        });
        rows.push(s);
        if !wrk.is_empty() {
            let w = gateway_row(ctx.gw, "consume via HTTP, wrk", c, &wrk);
            ratio["wrk_overall"] = json!(w.throughput_per_s / b.throughput_per_s);
            ratio["wrk_per_round"] = json!(per_round(&wrk, &direct));
            rows.push(w);
        }
        if let Some(gw) = &general {
            let g = gateway_row(
                gw,
                "consume via HTTP, general path (PG_CONSUME_CALL=false)",
                c,
                &slow,
            );
            ratio["general_overall"] = json!(g.throughput_per_s / b.throughput_per_s);
            ratio["one_call_over_general_per_round"] = json!(per_round(&http, &slow));
            rows.push(g);
        }
        if !minimal.is_empty() {
            let m = load::summarize(
                "consume, pgbench -M prepared minimal write (floor)",
                c,
                &minimal,
            );
            ratio["gw_consume_over_minimal"] = json!(b.throughput_per_s / m.throughput_per_s);
            ratio["gw_consume_over_minimal_per_round"] = json!(per_round(&direct, &minimal));
            ratio["http_over_minimal"] = json!(s_throughput / m.throughput_per_s);
            ratio["http_over_minimal_per_round"] = json!(per_round(&http, &minimal));
            if !wrk.is_empty() {
                ratio["wrk_over_minimal_per_round"] = json!(per_round(&wrk, &minimal));
            }
            rows.push(m);
        }
        ratios.push(ratio);
        rows.push(b);
    }
    Ok(ratios)
}

/// `requests` distinct consumes of one point on random users through
/// `gw` from this tool's client, keys prefixed `tag`.
pub(super) async fn http_leg(
    ctx: &Ctx<'_>,
    gw: &crate::gateway::Gateway,
    c: usize,
    tag: &str,
) -> load::Measured {
    let (lo, hi, tag) = (ctx.lo, ctx.hi, tag.to_owned());
    gql_leg(
        gw,
        &ctx.client,
        &ctx.service,
        CONSUME,
        c,
        ctx.requests,
        move |i| {
            let u = rand::thread_rng().gen_range(lo..=hi);
            Some(json!({ "u": u, "id": format!("{tag}-{i}") }))
        },
    )
    .await
}

/// Throughput of each round of `legs` over the same round of `baseline`.
pub(super) fn per_round(legs: &[load::Measured], baseline: &[load::Measured]) -> Vec<f64> {
    legs.iter()
        .zip(baseline)
        .map(|(l, b)| l.throughput() / b.throughput())
        .collect()
}

/// One pgbench leg of `requests` consumes of `write` at concurrency `c`
/// on users `lo..=hi`.
async fn pgbench_leg(
    ctx: &Ctx<'_>,
    write: crate::pgbench::Write,
    c: usize,
    requests: usize,
    (lo, hi): (i32, i32),
) -> load::Measured {
    let url = ctx.database_url.to_owned();
    child_leg(ctx, "pgbench", requests, move || {
        crate::pgbench::consume(&url, write, c, requests, lo, hi)
    })
    .await
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
