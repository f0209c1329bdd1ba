//! accountCosts, the local part (no falUsage): 30 days, every account.

use serde_json::json;

use super::{gateway_row, gql_leg, Ctx};
use crate::load;

const COSTS: &str = "query($from: DateTime!, $to: DateTime!) { accountCosts(from: $from, to: $to) { account { id name } taskCount succeededCount failedCount refundedCount chargedPoints refundedPoints costUsd marginUsd byEndpoint { appName taskCount chargedPoints costUsd } } }";

/// At concurrency up to 16 (a report is an admin's request, not a load).
pub async fn run(ctx: &Ctx<'_>, concurrency: &[usize], rows: &mut Vec<load::Stats>) {
    let to = chrono::Utc::now();
    let from = to - chrono::Duration::days(30);
    for &c in concurrency.iter().filter(|&&c| c <= 16) {
        let vars = json!({ "from": from, "to": to });
        let total = (ctx.requests / 20).max(20);
        let leg = gql_leg(
            ctx.gw,
            &ctx.client,
            &ctx.admin,
            COSTS,
            c,
            total,
            move |_| Some(vars.clone()),
        )
        .await;
        rows.push(gateway_row(
            ctx.gw,
            "accountCosts 30 days, all accounts",
            c,
            &[leg],
        ));
    }
}
