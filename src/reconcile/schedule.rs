//! The scheduled pull: every `FAL_RECONCILE_EVERY_SECS` (off by default),
//! the last `FAL_RECONCILE_DAYS` of every account are pulled again, so
//! jobs fal billed late and refunds made since are current.
//!
//! Every instance may run the schedule. An account whose scheduled run
//! started less than half an interval ago (on any instance, as the runs
//! table says) is left alone; two instances racing past that check both
//! publish the same window, and the later publication replaces the
//! earlier one whole.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Reconciler;
use crate::store::billing::RunTrigger;

pub fn spawn_schedule(
    reconciler: Reconciler,
    every: Duration,
    days: u32,
    shutdown: CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    if every.is_zero() || days == 0 {
        return None;
    }
    Some(tokio::spawn(crate::store::in_background(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let to = crate::time::now();
            let from = to - chrono::Duration::days(i64::from(days));
            let accounts = match reconciler.accounts(None).await {
                Ok(a) => a,
                Err(e) => {
                    tracing::error!(error = %e, "fal billing schedule: cannot read the accounts");
                    continue;
                }
            };
            let half = chrono::Duration::from_std(every / 2).unwrap_or(chrono::Duration::zero());
            let mut due = Vec::new();
            for a in accounts {
                match reconciler.store.billing_last_scheduled(a.id).await {
                    Ok(Some(at)) if at > to - half => {}
                    Ok(_) => due.push(a),
                    Err(e) => {
                        tracing::error!(error = %e, "fal billing schedule: cannot read the runs")
                    }
                }
            }
            if due.is_empty() {
                continue;
            }
            let runs = match reconciler.start(&due, from, to, RunTrigger::Schedule).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "fal billing schedule: cannot start the runs");
                    continue;
                }
            };
            let ended = tokio::select! {
                _ = shutdown.cancelled() => return,
                ended = reconciler.drive_all(due.into_iter().zip(runs).collect(), from, to) => ended,
            };
            let failed = ended
                .iter()
                .filter(|r| r.status != crate::store::billing::RunStatus::Done)
                .count();
            tracing::info!(
                runs = ended.len(),
                failed,
                days,
                "fal billing schedule: pulled"
            );
        }
    })))
}
