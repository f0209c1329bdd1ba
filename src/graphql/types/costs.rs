use std::sync::Arc;

use async_graphql::{Context, ErrorExtensions, Object};
use chrono::{DateTime, Utc};

use super::FalAccount;
use crate::errors::to_gql;
use crate::fal::{FalError, UsageSummary};
use crate::graphql::context::{int, state};
use crate::store::read::costs::{AccountFigures, Figures};

/// Rounds USD figures to a micro-dollar so sums of floats compare cleanly.
fn usd(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// One fal account's figures over `[from, to)`.
pub struct AccountCost {
    pub figures: Arc<AccountFigures>,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

#[Object]
impl AccountCost {
    async fn account(&self) -> FalAccount {
        FalAccount(self.figures.account.clone())
    }
    async fn task_count(&self) -> async_graphql::Result<i32> {
        int(self.figures.total.task_count)
    }
    async fn succeeded_count(&self) -> async_graphql::Result<i32> {
        int(self.figures.total.succeeded)
    }
    async fn failed_count(&self) -> async_graphql::Result<i32> {
        int(self.figures.total.failed)
    }
    async fn refunded_count(&self) -> async_graphql::Result<i32> {
        int(self.figures.total.refunded)
    }
    /// Points charged to users for these jobs (before refunds).
    async fn charged_points(&self) -> async_graphql::Result<i32> {
        int(self.figures.total.charged_points)
    }
    async fn refunded_points(&self) -> async_graphql::Result<i32> {
        int(self.figures.total.refunded_points)
    }
    /// What fal billed, by our records (`cost_money`).
    async fn cost_usd(&self) -> f64 {
        usd(self.figures.total.cost_usd)
    }
    /// Net points at `POINTS_PER_USD`, less `costUsd`.
    async fn margin_usd(&self, ctx: &Context<'_>) -> async_graphql::Result<f64> {
        Ok(usd(self
            .figures
            .total
            .margin_usd(state(ctx)?.settings.points_per_usd)))
    }
    async fn by_endpoint(&self) -> Vec<EndpointCost> {
        self.figures
            .by_endpoint
            .iter()
            .map(|(app, f)| EndpointCost {
                app_name: app.clone(),
                figures: f.clone(),
            })
            .collect()
    }
    /// fal's own usage for this key and window, diffed per endpoint against
    /// our `cost_money`. Fetched only when selected; when fal fails, this
    /// field alone carries an `UPSTREAM_ERROR` and other accounts still answer.
    async fn fal_usage(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<FalUsage>> {
        let st = state(ctx)?;
        let account = &self.figures.account;
        match st.fal.usage(&account.api_key, self.from, self.to).await {
            Ok(summary) => Ok(Some(FalUsage::diff(
                &summary,
                &self.figures.by_endpoint,
                st.settings.fal_mismatch_tolerance_usd,
            ))),
            Err(e) => {
                tracing::warn!(account_id = account.id, error = %e, "fal usage call failed");
                let status = e.upstream_status();
                let id = account.id;
                Err(upstream(e).extend_with(|_, ext| {
                    ext.set("accountId", id);
                    if let Some(s) = status {
                        ext.set("upstreamStatus", s);
                    }
                }))
            }
        }
    }
}

fn upstream(e: FalError) -> async_graphql::Error {
    to_gql(e)
}

pub struct EndpointCost {
    app_name: String,
    figures: Figures,
}

#[Object]
impl EndpointCost {
    /// The fal endpoint id (`ts_fal_tasks.app_name`).
    async fn app_name(&self) -> &str {
        &self.app_name
    }
    async fn task_count(&self) -> async_graphql::Result<i32> {
        int(self.figures.task_count)
    }
    async fn succeeded_count(&self) -> async_graphql::Result<i32> {
        int(self.figures.succeeded)
    }
    async fn failed_count(&self) -> async_graphql::Result<i32> {
        int(self.figures.failed)
    }
    async fn refunded_count(&self) -> async_graphql::Result<i32> {
        int(self.figures.refunded)
    }
    async fn charged_points(&self) -> async_graphql::Result<i32> {
        int(self.figures.charged_points)
    }
    async fn refunded_points(&self) -> async_graphql::Result<i32> {
        int(self.figures.refunded_points)
    }
    async fn cost_usd(&self) -> f64 {
        usd(self.figures.cost_usd)
    }
    async fn margin_usd(&self, ctx: &Context<'_>) -> async_graphql::Result<f64> {
        Ok(usd(self
            .figures
            .margin_usd(state(ctx)?.settings.points_per_usd)))
    }
}

pub struct FalUsage {
    total_cost_usd: f64,
    mismatch: bool,
    endpoints: Vec<EndpointUsageDiff>,
}

impl FalUsage {
    /// One row per endpoint seen on either side.
    fn diff(summary: &UsageSummary, local: &[(String, Figures)], tolerance: f64) -> FalUsage {
        let mut names: Vec<&String> = summary.endpoints.keys().collect();
        for (name, _) in local {
            if !summary.endpoints.contains_key(name) {
                names.push(name);
            }
        }
        names.sort();
        let endpoints: Vec<EndpointUsageDiff> = names
            .into_iter()
            .map(|name| {
                let fal = summary.endpoints.get(name);
                let local_cost = local
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, f)| f.cost_usd)
                    .unwrap_or(0.0);
                let fal_cost = fal.map(|f| f.cost_usd).unwrap_or(0.0);
                let diff = usd(fal_cost - local_cost);
                EndpointUsageDiff {
                    endpoint_id: name.clone(),
                    unit: fal.and_then(|f| f.unit.clone()),
                    fal_quantity: fal.map(|f| f.quantity).unwrap_or(0.0),
                    fal_cost_usd: usd(fal_cost),
                    local_cost_usd: usd(local_cost),
                    diff_usd: diff,
                    mismatch: diff.abs() > tolerance,
                }
            })
            .collect();
        FalUsage {
            total_cost_usd: usd(summary.total_cost_usd()),
            mismatch: endpoints.iter().any(|e| e.mismatch),
            endpoints,
        }
    }
}

#[Object]
impl FalUsage {
    async fn total_cost_usd(&self) -> f64 {
        self.total_cost_usd
    }
    /// True when any endpoint differs beyond the tolerance.
    async fn mismatch(&self) -> bool {
        self.mismatch
    }
    async fn endpoints(&self) -> &[EndpointUsageDiff] {
        &self.endpoints
    }
}

#[derive(async_graphql::SimpleObject, Clone)]
pub struct EndpointUsageDiff {
    pub endpoint_id: String,
    pub unit: Option<String>,
    pub fal_quantity: f64,
    pub fal_cost_usd: f64,
    pub local_cost_usd: f64,
    /// fal minus local.
    pub diff_usd: f64,
    pub mismatch: bool,
}
