//! The per-job reconciliation against fal's bill: for each fal account,
//! pull its billing events over a window (every page, windows cut at 90
//! days), stage them, judge every task of the window and every event no
//! task records (`domain::reconcile`), and publish the lines in place of
//! the window's previous ones (`store::billing`).
//!
//! One account failing (fal's 403, a 500 after the retries, a malformed
//! page) fails that account's run only; its earlier lines stay.

mod filter;
mod present;
mod schedule;

pub use filter::{account_ids, line_filter, window, MAX_ACCOUNTS as MAX_ACCOUNTS_NAMED};
pub use present::{csv_record, flag_names, points, usd, CSV_COLUMNS};

pub use schedule::spawn_schedule;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use entity::fal_account;
use futures_util::StreamExt;

use crate::domain::reconcile::{judge, FalSide, JobSide, Terms};
use crate::errors::{Coded, ReconcileError};
use crate::fal::{billing_windows, BillingEvent, FalError, FalPlatform};
use crate::metrics::Metrics;
use crate::store::billing::{
    Billed, LineDraft, RunRow, RunStatus, RunTrigger, StagedEvent, TaskBatchRow, UnmatchedEvent,
};
use crate::store::{Store, StoreError};

/// How long after a window's end its jobs' events are still looked for:
/// fal bills a request when it completes, which can be after the window
/// the task was created in. Events found there belong to the window's
/// tasks only; the next window's run sees them again.
pub const LATE_EVENTS: chrono::Duration = chrono::Duration::hours(24);

/// Tasks (or unmatched requests) judged per batch.
const BATCH: u64 = 5_000;
/// Pages followed at most in one 90-day window: 100 million events.
const MAX_PAGES: u32 = 10_000;
/// Accounts pulled at once (fal calls are also bounded by `FAL_CONCURRENCY`).
const ACCOUNTS_AT_ONCE: usize = 4;

#[derive(Clone)]
pub struct Reconciler {
    store: Store,
    fal: Arc<dyn FalPlatform>,
    metrics: Arc<Metrics>,
    terms: Terms,
}

impl Reconciler {
    pub fn new(
        store: Store,
        fal: Arc<dyn FalPlatform>,
        metrics: Arc<Metrics>,
        terms: Terms,
    ) -> Reconciler {
        Reconciler {
            store,
            fal,
            metrics,
            terms,
        }
    }

    /// The accounts to pull: those named (unknown ids are skipped), or all.
    pub async fn accounts(
        &self,
        ids: Option<&[i32]>,
    ) -> Result<Vec<fal_account::Model>, StoreError> {
        let all = crate::store::read::fal::accounts(&self.store).await?;
        Ok(match ids {
            None => all,
            Some(ids) => all.into_iter().filter(|a| ids.contains(&a.id)).collect(),
        })
    }

    /// Records a run per account, without pulling anything yet (runs
    /// that lost their instance are abandoned first).
    pub async fn start(
        &self,
        accounts: &[fal_account::Model],
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        trigger: RunTrigger,
    ) -> Result<Vec<i64>, StoreError> {
        self.store.billing_abandon_stale().await?;
        let mut runs = Vec::with_capacity(accounts.len());
        for a in accounts {
            runs.push(
                self.store
                    .billing_run_start(a.id, from, to, trigger)
                    .await?,
            );
        }
        Ok(runs)
    }

    /// Drives started runs to their end, a few accounts at once; returns
    /// each run as it ended.
    pub async fn drive_all(
        &self,
        runs: Vec<(fal_account::Model, i64)>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Vec<RunRow> {
        futures_util::stream::iter(runs)
            .map(|(account, run)| async move {
                self.drive(&account, run, from, to).await;
                self.store.billing_run(run).await.ok().flatten()
            })
            .buffer_unordered(ACCOUNTS_AT_ONCE)
            .filter_map(|r| async move { r })
            .collect()
            .await
    }

    /// Starts and drives runs for `accounts` (all when `None`).
    pub async fn run(
        &self,
        account_ids: Option<&[i32]>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        trigger: RunTrigger,
    ) -> Result<Vec<RunRow>, StoreError> {
        let accounts = self.accounts(account_ids).await?;
        let runs = self.start(&accounts, from, to, trigger).await?;
        let mut rows = self
            .drive_all(accounts.into_iter().zip(runs).collect(), from, to)
            .await;
        rows.sort_by_key(|r| r.account_id);
        Ok(rows)
    }

    /// Pulls, judges and publishes one account's run; a failure ends the
    /// run `failed` with its code and message (never the key).
    async fn drive(
        &self,
        account: &fal_account::Model,
        run: i64,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) {
        let started = std::time::Instant::now();
        match self.pull_and_publish(account, run, from, to).await {
            Ok(lines) => {
                self.metrics.billing("runs_done", 1);
                tracing::info!(
                    account_id = account.id,
                    run,
                    lines,
                    ms = started.elapsed().as_millis() as u64,
                    "fal billing: run published"
                );
            }
            Err(e) => {
                self.metrics.billing("runs_failed", 1);
                let code = e.code();
                tracing::warn!(account_id = account.id, run, code = code.as_str(), error = %e, "fal billing: run failed");
                let status = match e {
                    ReconcileError::Abandoned => RunStatus::Abandoned,
                    _ => RunStatus::Failed,
                };
                // Shown to admins: a database failure's details stay in the log.
                let message = crate::errors::public_message(code, &e);
                if let Err(e) = self
                    .store
                    .billing_run_end(run, status, Some((code.as_str(), &message)))
                    .await
                {
                    tracing::error!(run, error = %e, "fal billing: could not record the failure");
                }
            }
        }
    }

    async fn pull_and_publish(
        &self,
        account: &fal_account::Model,
        run: i64,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<i64, ReconcileError> {
        let events_to = to + LATE_EVENTS;
        for (wf, wt) in billing_windows(from, events_to) {
            self.pull_window(account, run, wf, wt).await?;
        }
        let mut lines = 0i64;
        let mut after = None;
        loop {
            let batch = self
                .store
                .billing_task_batch(run, &account.api_key, from, to, after, BATCH)
                .await?;
            let Some(last) = batch.last() else { break };
            after = Some((last.local_created_at, last.row_id));
            let drafts: Vec<LineDraft> = batch
                .into_iter()
                .map(|t| self.task_line(account.id, t))
                .collect();
            lines += drafts.len() as i64;
            self.store.billing_insert_lines(run, drafts).await?;
        }
        let mut after: Option<String> = None;
        loop {
            let batch = self
                .store
                .billing_unmatched(run, from, to, after.as_deref(), BATCH)
                .await?;
            let Some(last) = batch.last() else { break };
            after = Some(last.request_id.clone());
            let drafts: Vec<LineDraft> = batch
                .into_iter()
                .map(|e| self.unknown_line(account.id, e))
                .collect();
            lines += drafts.len() as i64;
            self.store.billing_insert_lines(run, drafts).await?;
        }
        self.metrics.billing("lines", lines as u64);
        if !self
            .store
            .billing_publish(run, account.id, from, to, events_to, lines)
            .await?
        {
            return Err(ReconcileError::Abandoned);
        }
        Ok(lines)
    }

    /// Every page of one window (at most 90 days) into the run's staging.
    async fn pull_window(
        &self,
        account: &fal_account::Model,
        run: i64,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<(), ReconcileError> {
        let mut cursor: Option<String> = None;
        for page_no in 1..=MAX_PAGES {
            let page = self
                .fal
                .billing_events(&account.api_key, from, to, cursor.as_deref())
                .await?;
            let n = page.events.len();
            let staged = page.events.into_iter().map(staged).collect();
            self.store
                .billing_stage_events(run, account.id, staged)
                .await?;
            self.store.billing_run_progress(run, 1, n as i64).await?;
            self.metrics.billing("pages", 1);
            self.metrics.billing("events", n as u64);
            tracing::info!(
                account_id = account.id,
                run,
                page = page_no,
                events = n,
                window_start = %from,
                "fal billing: page pulled"
            );
            match page.next_cursor {
                None => return Ok(()),
                Some(next) if cursor.as_deref() == Some(next.as_str()) => {
                    return Err(ReconcileError::CursorLoop(page_no))
                }
                Some(next) => cursor = Some(next),
            }
        }
        Err(ReconcileError::Fal(FalError::Malformed(format!(
            "more than {MAX_PAGES} pages in one window"
        ))))
    }

    fn task_line(&self, account_id: i32, t: TaskBatchRow) -> LineDraft {
        // The ledger's refunds of the job where it has any (the gateway's
        // own), else the task's money when the platform flagged it: the
        // cost report's rule.
        let refunded = if t.ledger_refunds > 0 {
            t.ledger_refunded
        } else if t.is_refund {
            t.money
        } else {
            0
        };
        let cost_money_nano = (t.cost_money * 1e9).round() as i64;
        let job = JobSide {
            charged_points: t.money,
            refunded_points: refunded,
            cost_money_nano: Some(cost_money_nano),
        };
        let fal = t.billed.as_ref().map(fal_side);
        let verdict = judge(Some(&job), fal.as_ref(), &self.terms);
        let billed = t.billed;
        LineDraft {
            account_id,
            at: t.created_at,
            task_row_id: Some(t.row_id),
            task_id: Some(t.task_id),
            request_id: t.request_id,
            user_id: Some(t.user_id),
            endpoint_id: t.app_name,
            task_status: Some(t.status),
            charged_points: t.money,
            refunded_points: refunded,
            task_refunded: t.is_refund,
            ledger_charged: t.ledger_charged,
            ledger_refunded: t.ledger_refunded,
            cost_money_nano: Some(cost_money_nano),
            fal_cost_nano: billed.as_ref().map(|b| b.cost_nano),
            fal_events: billed.as_ref().map(|b| b.events as i32).unwrap_or(0),
            fal_quantity: billed.as_ref().and_then(|b| b.quantity),
            fal_unit: billed.and_then(|b| b.unit),
            margin_nano: verdict.margin_nano,
            flags: verdict.flags.bits(),
        }
    }

    fn unknown_line(&self, account_id: i32, e: UnmatchedEvent) -> LineDraft {
        let verdict = judge(None, Some(&fal_side(&e.billed)), &self.terms);
        LineDraft {
            account_id,
            at: e.billed_at,
            task_row_id: None,
            task_id: None,
            request_id: Some(e.request_id),
            user_id: None,
            endpoint_id: e.endpoint_id,
            task_status: None,
            charged_points: 0,
            refunded_points: 0,
            task_refunded: false,
            ledger_charged: 0,
            ledger_refunded: 0,
            cost_money_nano: None,
            fal_cost_nano: Some(e.billed.cost_nano),
            fal_events: e.billed.events as i32,
            fal_quantity: e.billed.quantity,
            fal_unit: e.billed.unit,
            margin_nano: verdict.margin_nano,
            flags: verdict.flags.bits(),
        }
    }
}

fn staged(e: BillingEvent) -> StagedEvent {
    StagedEvent {
        request_id: e.request_id,
        endpoint_id: e.endpoint_id,
        billed_at: e.billed_at,
        cost_nano: e.cost_nano,
        quantity: e.quantity,
        unit: e.unit,
        unit_price: e.unit_price,
        percent_discount: e.percent_discount,
        tags: e.tags,
    }
}

fn fal_side(b: &Billed) -> FalSide {
    FalSide {
        cost_nano: b.cost_nano,
        events: b.events.clamp(0, u32::MAX as i64) as u32,
    }
}
