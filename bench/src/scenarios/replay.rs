//! Retries: services retry a consume on a timeout, exactly when the
//! database is busiest. Every consume of the first leg is distinct (a first
//! apply); the second leg sends each of them again, same key and payload,
//! and gets the original row back without a write (an idempotency lookup).
//! Reported as two rows of the same run.

use rand::Rng;
use serde_json::json;

use super::{gateway_row, gql_leg, Ctx};
use crate::load;

const CONSUME: &str = "mutation($u: Int!, $id: String!) { consume(input: {userId: $u, amount: 1, sourceType: SCRIPT, sourceId: $id}) { id balanceAfter } }";

pub async fn run(ctx: &Ctx<'_>, concurrency: &[usize], rows: &mut Vec<load::Stats>) {
    let (lo, hi, run_id, requests) = (ctx.lo, ctx.hi, ctx.run_id, ctx.requests);
    for &c in concurrency {
        // Users chosen per key once, so the retry names the same user.
        let users: std::sync::Arc<Vec<i32>> = std::sync::Arc::new(
            (0..requests)
                .map(|_| rand::thread_rng().gen_range(lo..=hi))
                .collect(),
        );
        let vars = move |users: std::sync::Arc<Vec<i32>>| {
            move |i: usize| Some(json!({ "u": users[i], "id": format!("rp-{run_id:08x}-{c}-{i}") }))
        };
        let first = gql_leg(
            ctx.gw,
            &ctx.client,
            &ctx.service,
            CONSUME,
            c,
            requests,
            vars(users.clone()),
        )
        .await;
        rows.push(gateway_row(ctx.gw, "consume, first apply", c, &[first]));
        let again = gql_leg(
            ctx.gw,
            &ctx.client,
            &ctx.service,
            CONSUME,
            c,
            requests,
            vars(users),
        )
        .await;
        rows.push(gateway_row(
            ctx.gw,
            "consume, replay of an applied key",
            c,
            &[again],
        ));
    }
}
