//! A job billed with a hold (reserve 2 points, then capture 1: two
//! requests, two transactions) against the same job billed with one
//! consume, and against the flow holds replace, pre-deduct then refund
//! (consume 2, refund 1), all over HTTP from this tool's client, rotating
//! in rounds; every job key distinct. The ratios are jobs per second of
//! the hold flow over each of the other two.

use rand::Rng;
use serde_json::{json, Value};

use super::{gateway_row, gql_leg, post, with_cpu, Ctx};
use crate::load;

const CONSUME: &str = "mutation($u: Int!, $id: String!) { consume(input: {userId: $u, amount: 1, sourceType: VIDEO, sourceId: $id, duration: 4.0}) { id } }";
const HOLD: &str = "mutation($u: Int!, $id: String!) { hold(input: {userId: $u, amount: 2, sourceType: VIDEO, sourceId: $id, duration: 5.0}) { id } }";
const REFUND: &str = "mutation($id: String!) { refund(input: {sourceType: VIDEO, sourceId: $id, refundKey: $id, amount: 1}) { id } }";
const PRE_DEDUCT: &str = "mutation($u: Int!, $id: String!) { consume(input: {userId: $u, amount: 2, sourceType: VIDEO, sourceId: $id, duration: 5.0}) { id } }";
const CAPTURE: &str = "mutation($id: String!) { captureHold(input: {sourceType: VIDEO, sourceId: $id, amount: 1, duration: 4.0}) { entry { id } } }";

/// Adds the two rows per concurrency level; returns the ratios.
pub async fn run(
    ctx: &Ctx<'_>,
    concurrency: &[usize],
    rounds: usize,
    rows: &mut Vec<load::Stats>,
) -> Vec<Value> {
    let (lo, hi, run_id, requests) = (ctx.lo, ctx.hi, ctx.run_id, ctx.requests);
    let mut ratios = Vec::new();
    for &c in concurrency {
        let (mut held, mut consumed, mut refunded) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            for k in 0..3 {
                match (k + round) % 3 {
                    0 => consumed.push(
                        gql_leg(ctx.gw, &ctx.client, &ctx.service, CONSUME, c, requests, move |i| {
                            let u = rand::thread_rng().gen_range(lo..=hi);
                            Some(json!({ "u": u, "id": format!("hc-{run_id:08x}-{c}-{round}-{i}") }))
                        })
                        .await,
                    ),
                    1 => held.push(
                        two_steps(ctx, c, (HOLD, CAPTURE), move |i| {
                            format!("hh-{run_id:08x}-{c}-{round}-{i}")
                        })
                        .await,
                    ),
                    _ => refunded.push(
                        two_steps(ctx, c, (PRE_DEDUCT, REFUND), move |i| {
                            format!("hr-{run_id:08x}-{c}-{round}-{i}")
                        })
                        .await,
                    ),
                }
            }
        }
        let h = gateway_row(ctx.gw, "job via hold + captureHold (HTTP)", c, &held);
        let s = gateway_row(ctx.gw, "job via one consume (HTTP)", c, &consumed);
        let r = gateway_row(ctx.gw, "job via consume + refund (HTTP)", c, &refunded);
        ratios.push(json!({
            "concurrency": c,
            "overall": h.throughput_per_s / s.throughput_per_s,
            "per_round": super::consume::per_round(&held, &consumed),
            "vs_refund_overall": h.throughput_per_s / r.throughput_per_s,
            "vs_refund_per_round": super::consume::per_round(&held, &refunded),
        }));
        rows.push(h);
        rows.push(s);
        rows.push(r);
    }
    ratios
}

/// `requests` jobs from `c` workers, each two requests on one job key
/// (`key(i)`): `first` with a random user, then `second`; a job counts
/// when both succeed.
async fn two_steps(
    ctx: &Ctx<'_>,
    c: usize,
    (first, second): (&'static str, &'static str),
    key: impl Fn(usize) -> String + Send + Sync + 'static,
) -> load::Measured {
    let (lo, hi) = (ctx.lo, ctx.hi);
    let (client, url, token) = (ctx.client.clone(), ctx.gw.url.clone(), ctx.service.clone());
    let leg = load::measure(c, ctx.requests, move |i| {
        let (client, url, token, id) = (client.clone(), url.clone(), token.clone(), key(i));
        async move {
            let u = rand::thread_rng().gen_range(lo..=hi);
            post(&client, &url, &token, first, json!({ "u": u, "id": id }))
                .await
                .is_ok()
                && post(&client, &url, &token, second, json!({ "id": id }))
                    .await
                    .is_ok()
        }
    });
    with_cpu(ctx.gw, leg).await
}
