//! falTasks: 100 per page with each task's account and user, through the
//! dataloaders.

use rand::Rng;
use serde_json::json;

use super::{gateway_row, gql_leg, Ctx};
use crate::load;

const TASKS: &str = "query($from: DateTime) { falTasks(first: 100, filter: { from: $from }) { nodes { taskId appName status money costUsd isRefund createdAt account { name maskedKey } user { id name } } pageInfo { endCursor } } }";

pub async fn run(ctx: &Ctx<'_>, concurrency: &[usize], rows: &mut Vec<load::Stats>) {
    for &c in concurrency {
        let leg = gql_leg(
            ctx.gw,
            &ctx.client,
            &ctx.admin,
            TASKS,
            c,
            ctx.requests / 4,
            move |_| {
                let back = rand::thread_rng().gen_range(60..90 * 24 * 60);
                Some(json!({ "from": chrono::Utc::now() - chrono::Duration::minutes(back) }))
            },
        )
        .await;
        rows.push(gateway_row(
            ctx.gw,
            "falTasks 100/page with account+user",
            c,
            &[leg],
        ));
    }
}
