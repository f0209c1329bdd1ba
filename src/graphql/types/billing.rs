//! The per-job reconciliation against fal's billing events: its lines,
//! totals and runs. Field names are the CSV export's columns
//! (`reconcile::CSV_COLUMNS`), in the same units.

use async_graphql::{Context, Enum, Object, ID};
use chrono::{DateTime, Utc};

use crate::domain::reconcile::{Flag, Flags};
use crate::graphql::context::{int, state};
use crate::reconcile::{points, usd};
use crate::store::billing::{RunRow, RunStatus};
use crate::store::read::billing::{LineRow, Totals};

/// A finding on a reconciled line.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(name = "FalBillingFlag")]
pub enum FalBillingFlagGql {
    /// fal billed the request, yet the user got points back or was never charged.
    BilledButRefunded,
    /// The user was charged and fal billed nothing: a refund may be owed, or the job never ran.
    ChargedNotBilled,
    /// fal billed a request no task records.
    UnknownRequest,
    /// `cost_money` is off fal's charge by more than `FAL_JOB_TOLERANCE_USD`.
    CostMismatch,
    /// The points kept are worth less than fal's charge.
    NegativeMargin,
}

impl From<FalBillingFlagGql> for Flag {
    fn from(f: FalBillingFlagGql) -> Flag {
        match f {
            FalBillingFlagGql::BilledButRefunded => Flag::BilledButRefunded,
            FalBillingFlagGql::ChargedNotBilled => Flag::ChargedNotBilled,
            FalBillingFlagGql::UnknownRequest => Flag::UnknownRequest,
            FalBillingFlagGql::CostMismatch => Flag::CostMismatch,
            FalBillingFlagGql::NegativeMargin => Flag::NegativeMargin,
        }
    }
}

impl From<Flag> for FalBillingFlagGql {
    fn from(f: Flag) -> FalBillingFlagGql {
        match f {
            Flag::BilledButRefunded => FalBillingFlagGql::BilledButRefunded,
            Flag::ChargedNotBilled => FalBillingFlagGql::ChargedNotBilled,
            Flag::UnknownRequest => FalBillingFlagGql::UnknownRequest,
            Flag::CostMismatch => FalBillingFlagGql::CostMismatch,
            Flag::NegativeMargin => FalBillingFlagGql::NegativeMargin,
        }
    }
}

/// One job (a task of the window) or one billed request no task records.
pub struct FalBillingLine(pub LineRow);

#[Object]
impl FalBillingLine {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    async fn account_id(&self) -> i32 {
        self.0.line.account_id
    }
    /// The task's creation; for a request without a task, fal's billing time.
    async fn at(&self) -> DateTime<Utc> {
        self.0.line.at
    }
    /// `ts_fal_tasks.task_id`; null for a request without a task.
    async fn task_id(&self) -> Option<&str> {
        self.0.line.task_id.as_deref()
    }
    /// fal's request id (`online_task_id`).
    async fn request_id(&self) -> Option<&str> {
        self.0.line.request_id.as_deref()
    }
    async fn user_id(&self) -> Option<i32> {
        self.0.line.user_id
    }
    async fn endpoint_id(&self) -> &str {
        &self.0.line.endpoint_id
    }
    async fn task_status(&self) -> Option<&str> {
        self.0.line.task_status.as_deref()
    }
    /// `ts_fal_tasks.money`.
    async fn charged_points(&self) -> async_graphql::Result<i32> {
        int(self.0.line.charged_points)
    }
    /// The ledger's refunds of the job where it has any, else the task's
    /// money when `is_refund` is set (the cost report's rule).
    async fn refunded_points(&self) -> async_graphql::Result<i32> {
        int(self.0.line.refunded_points)
    }
    /// `ts_fal_tasks.is_refund`.
    async fn task_refunded(&self) -> bool {
        self.0.line.task_refunded
    }
    /// The ledger's consumes of the job (`source_type` fal).
    async fn ledger_charged_points(&self) -> async_graphql::Result<i32> {
        int(self.0.line.ledger_charged)
    }
    async fn ledger_refunded_points(&self) -> async_graphql::Result<i32> {
        int(self.0.line.ledger_refunded)
    }
    /// The platform's own estimate (`cost_money`).
    async fn cost_money_usd(&self) -> Option<f64> {
        self.0.line.cost_money_nano.map(usd)
    }
    /// What fal billed; null when fal billed nothing for the request.
    async fn fal_cost_usd(&self) -> Option<f64> {
        self.0.line.fal_cost_nano.map(usd)
    }
    /// The same, exact: an integer of nano-USD, as a string.
    async fn fal_cost_nano_usd(&self) -> Option<String> {
        self.0.line.fal_cost_nano.map(|n| n.to_string())
    }
    async fn fal_events(&self) -> i32 {
        self.0.line.fal_events
    }
    async fn fal_quantity(&self) -> Option<f64> {
        self.0.line.fal_quantity
    }
    async fn fal_unit(&self) -> Option<&str> {
        self.0.line.fal_unit.as_deref()
    }
    /// Points kept (charged less refunded) at `POINTS_PER_USD`, less fal's charge.
    async fn margin_usd(&self) -> f64 {
        usd(self.0.line.margin_nano)
    }
    async fn margin_nano_usd(&self) -> String {
        self.0.line.margin_nano.to_string()
    }
    async fn margin_points(&self, ctx: &Context<'_>) -> async_graphql::Result<f64> {
        Ok(points(
            self.0.line.margin_nano,
            state(ctx)?.settings.points_per_usd,
        ))
    }
    async fn flags(&self) -> Vec<FalBillingFlagGql> {
        Flags::from_bits(self.0.line.flags)
            .iter()
            .map(Into::into)
            .collect()
    }
}

/// How many lines raise one flag.
pub struct FalBillingFlagCount {
    flag: Flag,
    lines: i64,
}

#[Object]
impl FalBillingFlagCount {
    async fn flag(&self) -> FalBillingFlagGql {
        self.flag.into()
    }
    async fn lines(&self) -> async_graphql::Result<i32> {
        int(self.lines)
    }
}

/// Sums over a group of lines (an account, an endpoint or a user).
pub struct FalBillingTotal(pub Totals);

#[Object]
impl FalBillingTotal {
    /// Set when grouped by account.
    async fn account_id(&self) -> Option<i32> {
        self.0.account_id
    }
    /// Set when grouped by endpoint.
    async fn endpoint_id(&self) -> Option<&str> {
        self.0.endpoint_id.as_deref()
    }
    /// Set when grouped by user (null: requests without a task).
    async fn user_id(&self) -> Option<i32> {
        self.0.user_id
    }
    async fn lines(&self) -> async_graphql::Result<i32> {
        int(self.0.lines)
    }
    /// Lines of a task (the others are requests without one).
    async fn task_count(&self) -> async_graphql::Result<i32> {
        int(self.0.tasks)
    }
    async fn fal_events(&self) -> async_graphql::Result<i32> {
        int(self.0.fal_events)
    }
    async fn charged_points(&self) -> async_graphql::Result<i32> {
        int(self.0.charged_points)
    }
    async fn refunded_points(&self) -> async_graphql::Result<i32> {
        int(self.0.refunded_points)
    }
    async fn cost_money_usd(&self) -> f64 {
        usd(self.0.cost_money_nano)
    }
    async fn fal_cost_usd(&self) -> f64 {
        usd(self.0.fal_cost_nano)
    }
    /// Exact: the sum of the lines' nano-USD, as a string.
    async fn fal_cost_nano_usd(&self) -> String {
        self.0.fal_cost_nano.to_string()
    }
    async fn margin_usd(&self) -> f64 {
        usd(self.0.margin_nano)
    }
    async fn margin_nano_usd(&self) -> String {
        self.0.margin_nano.to_string()
    }
    async fn margin_points(&self, ctx: &Context<'_>) -> async_graphql::Result<f64> {
        Ok(points(
            self.0.margin_nano,
            state(ctx)?.settings.points_per_usd,
        ))
    }
    /// Lines per flag, every flag listed.
    async fn flagged(&self) -> Vec<FalBillingFlagCount> {
        Flag::ALL
            .iter()
            .zip(self.0.flagged.iter().copied())
            .map(|(f, n)| FalBillingFlagCount { flag: *f, lines: n })
            .collect()
    }
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(name = "FalBillingRunStatus")]
pub enum RunStatusGql {
    Running,
    Done,
    Failed,
    /// Its instance stopped before it ended; nothing it pulled was kept.
    Abandoned,
}

/// One pull of one account's window.
pub struct FalBillingRun(pub RunRow);

#[Object]
impl FalBillingRun {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    async fn account_id(&self) -> i32 {
        self.0.account_id
    }
    async fn from(&self) -> DateTime<Utc> {
        self.0.from
    }
    async fn to(&self) -> DateTime<Utc> {
        self.0.to
    }
    /// `api`, `schedule` or `cli`.
    async fn trigger(&self) -> &str {
        &self.0.trigger
    }
    async fn status(&self) -> RunStatusGql {
        match self.0.status {
            RunStatus::Running => RunStatusGql::Running,
            RunStatus::Done => RunStatusGql::Done,
            RunStatus::Failed => RunStatusGql::Failed,
            RunStatus::Abandoned => RunStatusGql::Abandoned,
        }
    }
    async fn started_at(&self) -> DateTime<Utc> {
        self.0.started_at
    }
    async fn finished_at(&self) -> Option<DateTime<Utc>> {
        self.0.finished_at
    }
    /// Pages of billing events pulled so far.
    async fn pages(&self) -> i32 {
        self.0.pages
    }
    async fn events(&self) -> async_graphql::Result<i32> {
        int(self.0.events)
    }
    /// Lines published (0 until done).
    async fn lines(&self) -> async_graphql::Result<i32> {
        int(self.0.lines)
    }
    /// Why it failed: the `extensions.code` it would have had.
    async fn error_code(&self) -> Option<&str> {
        self.0.error_code.as_deref()
    }
    /// Why it failed, in words (never a key).
    async fn error(&self) -> Option<&str> {
        self.0.error.as_deref()
    }
}
