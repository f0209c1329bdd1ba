//! Telling the rest of the process about committed ledger rows (balance
//! subscriptions), without the ledger knowing who listens.

use std::sync::Arc;

use sea_orm::{DatabaseTransaction, DbErr};

use super::Entry;

/// Receives the rows of each committed ledger transaction.
pub trait Announcer: Send + Sync {
    /// `rows` are one transaction's rows for `user_id`, in ledger order.
    /// Called after the commit succeeded; must not block.
    fn committed(&self, user_id: i32, rows: &[Entry]);
}

/// How ledger transactions commit.
///
/// Without an announcer (PostgreSQL, where a trigger sends `NOTIFY` inside
/// the transaction) this is a plain commit. With one (SQLite), commit and
/// announcement happen under one process-wide gate: two transactions of the
/// same user are serialised by the database, but the tasks that committed
/// them could announce in the other order if announcing were a separate
/// step. SQLite has a single writer anyway, so the gate costs nothing there.
#[derive(Clone, Default)]
pub struct Committer {
    announcer: Option<Arc<dyn Announcer>>,
    gate: Arc<tokio::sync::Mutex<()>>,
}

impl Committer {
    /// Commits without telling anyone (tools, seeding, PostgreSQL).
    pub fn silent() -> Self {
        Self::default()
    }

    pub fn announcing(announcer: Arc<dyn Announcer>) -> Self {
        Committer {
            announcer: Some(announcer),
            gate: Arc::default(),
        }
    }

    pub(super) async fn commit(
        &self,
        txn: DatabaseTransaction,
        user_id: Option<i32>,
        rows: &[Entry],
    ) -> Result<(), DbErr> {
        let (Some(announcer), Some(user_id)) = (&self.announcer, user_id) else {
            return txn.commit().await;
        };
        if rows.is_empty() {
            return txn.commit().await;
        }
        let _gate = self.gate.lock().await;
        txn.commit().await?;
        announcer.committed(user_id, rows);
        Ok(())
    }
}
