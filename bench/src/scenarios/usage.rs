//! usageDetails: the UsageDetail page's first page for random users, and
//! a page deep in the history (after 80 rows) through a keyset cursor.

use std::sync::Arc;

use rand::Rng;
use serde_json::json;

use super::{gateway_row, gql_leg, post, Ctx};
use crate::load;

const PAGE: &str = "query UsageDetail($u: Int, $after: String) { usageDetails(userId: $u, first: 20, after: $after) { edges { node { createdAt description duration change balanceAfter } } pageInfo { hasNextPage endCursor } } }";

pub async fn run(ctx: &Ctx<'_>, concurrency: &[usize], rows: &mut Vec<load::Stats>) {
    let (lo, hi, requests) = (ctx.lo, ctx.hi, ctx.requests);
    // Deep cursors: 80 rows into the history of some users.
    let mut deep = Vec::new();
    for _ in 0..100 {
        let u = rand::thread_rng().gen_range(lo..=hi);
        let q = "query($u: Int) { usageDetails(userId: $u, first: 80) { pageInfo { endCursor } } }";
        if let Ok(v) = post(&ctx.client, &ctx.gw.url, &ctx.admin, q, json!({ "u": u })).await {
            if let Some(c) = v["data"]["usageDetails"]["pageInfo"]["endCursor"].as_str() {
                deep.push((u, c.to_owned()));
            }
        }
    }
    let deep = Arc::new(deep);
    for &c in concurrency {
        let first = gql_leg(
            ctx.gw,
            &ctx.client,
            &ctx.admin,
            PAGE,
            c,
            requests,
            move |_| Some(json!({ "u": rand::thread_rng().gen_range(lo..=hi) })),
        )
        .await;
        rows.push(gateway_row(ctx.gw, "usageDetails first page", c, &[first]));
        let deep = deep.clone();
        let deep_leg = gql_leg(
            ctx.gw,
            &ctx.client,
            &ctx.admin,
            PAGE,
            c,
            requests,
            move |i| {
                let (u, cursor) = deep.get(i % deep.len().max(1))?;
                Some(json!({ "u": u, "after": cursor }))
            },
        )
        .await;
        rows.push(gateway_row(
            ctx.gw,
            "usageDetails deep page (row 80+)",
            c,
            &[deep_leg],
        ));
    }
}
