//! A job billed with a hold (reserve 2 points, then capture 1: two
//! requests, two transactions) against the same job billed with one
//! consume, both over HTTP from this tool's client, alternating in rounds
//! (order flipped every round); every job key distinct. The ratio is jobs
//! per second of the hold flow over the consume flow.

use rand::Rng;
use serde_json::{json, Value};

use super::{gateway_row, gql_leg, post, with_cpu, Ctx};
use crate::load;

const CONSUME: &str = "mutation($u: Int!, $id: String!) { consume(input: {userId: $u, amount: 1, sourceType: VIDEO, sourceId: $id, duration: 4.0}) { id } }";
const HOLD: &str = "mutation($u: Int!, $id: String!) { hold(input: {userId: $u, amount: 2, sourceType: VIDEO, sourceId: $id, duration: 5.0}) { id } }";
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
        let (mut held, mut consumed) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            for k in 0..2 {
                if (k + round) % 2 == 0 {
                    consumed.push(
                        gql_leg(ctx.gw, &ctx.client, &ctx.service, CONSUME, c, requests, move |i| {
                            let u = rand::thread_rng().gen_range(lo..=hi);
                            Some(json!({ "u": u, "id": format!("hc-{run_id:08x}-{c}-{round}-{i}") }))
                        })
                        .await,
                    );
                } else {
                    let (client, url, token) =
                        (ctx.client.clone(), ctx.gw.url.clone(), ctx.service.clone());
                    let leg = load::measure(c, requests, move |i| {
                        let (client, url, token) = (client.clone(), url.clone(), token.clone());
                        async move {
                            let u = rand::thread_rng().gen_range(lo..=hi);
                            let id = format!("hh-{run_id:08x}-{c}-{round}-{i}");
                            post(&client, &url, &token, HOLD, json!({ "u": u, "id": id }))
                                .await
                                .is_ok()
                                && post(&client, &url, &token, CAPTURE, json!({ "id": id }))
                                    .await
                                    .is_ok()
                        }
                    });
                    held.push(with_cpu(ctx.gw, leg).await);
                }
            }
        }
        let h = gateway_row(ctx.gw, "job via hold + captureHold (HTTP)", c, &held);
        let s = gateway_row(ctx.gw, "job via one consume (HTTP)", c, &consumed);
        ratios.push(json!({
            "concurrency": c,
            "overall": h.throughput_per_s / s.throughput_per_s,
            "per_round": super::consume::per_round(&held, &consumed),
        }));
        rows.push(h);
        rows.push(s);
    }
    ratios
}
