//! Telling the rest of the process about committed ledger rows (balance
//! subscriptions), without the store knowing who listens.

use std::sync::Arc;

use sea_orm::DatabaseTransaction;

use super::StoreError;

pub type Entry = entity::point_transaction::Model;

/// Receives the ledger's committed rows, from whichever feed the engine has.
pub trait LedgerSink: Send + Sync {
    /// `rows` are one transaction's rows for `user_id`, in ledger order.
    /// Called after the commit succeeded; must not block.
    fn committed(&self, user_id: i32, rows: &[Entry]);

    /// Rows of these users may have been missed (the feed was lost): tell
    /// their subscribers where to continue from.
    fn missed(&self, user_ids: &[i32]);
}

/// How ledger transactions commit.
///
/// Silent (PostgreSQL, where a trigger sends `NOTIFY` inside the
/// transaction and [`super::postgres::listen`] feeds the sink; tools and
/// seeding) it is a plain commit. Announcing (SQLite), commit and
/// announcement happen under one process-wide gate: two transactions of
/// the same user are serialised by the database, but the tasks that
/// committed them could announce in the other order if announcing were a
/// separate step. SQLite has a single writer anyway, so the gate costs
/// nothing there.
#[derive(Clone, Default)]
pub struct Feed {
    sink: Option<Arc<dyn LedgerSink>>,
    gate: Arc<tokio::sync::Mutex<()>>,
}

impl Feed {
    pub fn silent() -> Self {
        Self::default()
    }

    pub fn announcing(sink: Arc<dyn LedgerSink>) -> Self {
        Feed {
            sink: Some(sink),
            gate: Arc::default(),
        }
    }

    /// Commits `txn`, which wrote `rows` (with their users' int ids, in
    /// ledger order), and announces them per user, in that order.
    pub(super) async fn commit(
        &self,
        txn: DatabaseTransaction,
        rows: &[(i32, Entry)],
    ) -> Result<(), StoreError> {
        let Some(sink) = &self.sink else {
            return Ok(txn.commit().await?);
        };
        if rows.is_empty() {
            return Ok(txn.commit().await?);
        }
        let _gate = self.gate.lock().await;
        txn.commit().await?;
        let mut start = 0;
        while start < rows.len() {
            let user = rows[start].0;
            let end = rows[start..]
                .iter()
                .position(|(u, _)| *u != user)
                .map_or(rows.len(), |n| start + n);
            let entries: Vec<Entry> = rows[start..end].iter().map(|(_, e)| e.clone()).collect();
            sink.committed(user, &entries);
            start = end;
        }
        Ok(())
    }
}
