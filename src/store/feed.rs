//! Telling the rest of the process about committed ledger rows (balance
//! subscriptions), without the store knowing who listens.

use std::sync::Arc;

use sea_orm::DatabaseTransaction;

use super::StoreError;

pub type Entry = entity::point_transaction::Model;

/// One committed change of a user's points.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A ledger row; `held` is the user's reserved points after it.
    Row { entry: Entry, held: i64 },
    /// A hold was placed or settled; the user's settled balance and held
    /// points after it.
    Hold {
        hold: HoldNote,
        balance: i64,
        held: i64,
    },
}

/// What a balance event tells about a hold.
#[derive(Debug, Clone, PartialEq)]
pub struct HoldNote {
    pub id: i64,
    pub source_type: String,
    pub source_id: String,
    pub amount: i64,
    /// `held`, `captured`, `released` or `expired`.
    pub status: String,
    pub captured: Option<i64>,
    /// The user's hold change count after this change.
    pub seq: i64,
}

/// Receives the ledger's committed changes, from whichever feed the
/// engine has.
pub trait LedgerSink: Send + Sync {
    /// `changes` are one transaction's changes for `user_id`, in order.
    /// Called after the commit succeeded; must not block.
    fn committed(&self, user_id: i32, changes: &[Change]);

    /// Rows of these users may have been missed (the feed was lost): tell
    /// their subscribers where to continue from.
    fn missed(&self, user_ids: &[i32]);
}

/// How ledger transactions commit.
///
/// Silent (tools and seeding) or waking (PostgreSQL, where the triggers
/// append to `gw_events` and [`super::postgres::tail`] feeds the sink) it
/// is a plain commit, then, waking, a signal that something was written. Announcing (SQLite), commit and
/// announcement happen under one process-wide gate: two transactions of
/// the same user are serialised by the database, but the tasks that
/// committed them could announce in the other order if announcing were a
/// separate step. SQLite has a single writer anyway, so the gate costs
/// nothing there.
#[derive(Clone, Default)]
pub struct Feed {
    sink: Option<Arc<dyn LedgerSink>>,
    gate: Arc<tokio::sync::Mutex<()>>,
    /// PostgreSQL: signalled after a commit that changed something, so
    /// the instances' tails look now rather than at their next poll.
    wake: Option<Arc<tokio::sync::Notify>>,
}

impl Feed {
    pub fn silent() -> Self {
        Self::default()
    }

    pub fn announcing(sink: Arc<dyn LedgerSink>) -> Self {
        Feed {
            sink: Some(sink),
            gate: Arc::default(),
            wake: None,
        }
    }

    pub fn waking(wake: Arc<tokio::sync::Notify>) -> Self {
        Feed {
            sink: None,
            gate: Arc::default(),
            wake: Some(wake),
        }
    }

    /// A statement that was its own transaction (the one-call consume)
    /// changed something: the same wake as after [`Feed::commit`]. Only
    /// PostgreSQL has such statements, and its feed is the tail.
    pub(super) fn changed(&self) {
        if let Some(wake) = &self.wake {
            wake.notify_one();
        }
    }

    /// Commits `txn`, which made `changes` (with their users' int ids, in
    /// order), and announces them per user, in that order.
    pub(super) async fn commit(
        &self,
        txn: DatabaseTransaction,
        changes: &[(i32, Change)],
    ) -> Result<(), StoreError> {
        let Some(sink) = &self.sink else {
            txn.commit().await?;
            if let (Some(wake), false) = (&self.wake, changes.is_empty()) {
                wake.notify_one();
            }
            return Ok(());
        };
        if changes.is_empty() {
            return Ok(txn.commit().await?);
        }
        let _gate = self.gate.lock().await;
        txn.commit().await?;
        let mut start = 0;
        while start < changes.len() {
            let user = changes[start].0;
            let end = changes[start..]
                .iter()
                .position(|(u, _)| *u != user)
                .map_or(changes.len(), |n| start + n);
            let run: Vec<Change> = changes[start..end].iter().map(|(_, c)| c.clone()).collect();
            sink.committed(user, &run);
            start = end;
        }
        Ok(())
    }
}
