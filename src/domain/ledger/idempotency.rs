//! The one shape shared by every keyed ledger operation (consume on its
//! source, recharge on its order, refund on its refund key): run in a write
//! transaction; a retry carrying the same fingerprint gets the original row
//! back; the same key with another payload is a conflict; and when two
//! requests race past the check, the unique index decides and the loser is
//! resolved exactly like a retry.

use std::future::Future;

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbErr};

use super::{Applied, Committer, Entry};
use crate::db::{begin_write, is_unique_violation};

pub(super) trait Keyed: Sync {
    type Error: From<DbErr> + Send;

    /// Hash of the canonical payload, stored on the row it writes.
    fn fingerprint(&self) -> String;

    /// The error for the same key with a different payload.
    fn conflict(&self) -> Self::Error;

    /// The database error inside an operation error, if that is what it is.
    fn db_error(e: &Self::Error) -> Option<&DbErr>;

    /// The row already written under this request's key, if any.
    fn find_existing<'a, C: ConnectionTrait>(
        &'a self,
        conn: &'a C,
    ) -> impl Future<Output = Result<Option<Entry>, DbErr>> + Send + 'a;

    /// The operation itself, inside a transaction the caller commits.
    fn apply<'a>(
        &'a self,
        txn: &'a DatabaseTransaction,
        hash: &'a str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Applied, Self::Error>> + Send + 'a;
}

/// Runs a keyed operation in its own transaction.
pub(super) async fn run<R: Keyed>(
    db: &DatabaseConnection,
    committer: &Committer,
    req: &R,
) -> Result<Applied, R::Error> {
    let hash = req.fingerprint();
    let txn = begin_write(db).await?;
    match req.apply(&txn, &hash, crate::time::now()).await {
        Ok(applied) => {
            committer
                .commit(txn, applied.user_id, &applied.written)
                .await?;
            Ok(applied)
        }
        Err(e) => {
            txn.rollback().await?;
            if R::db_error(&e).is_some_and(is_unique_violation) {
                if let Some(existing) = req.find_existing(db).await? {
                    return replay(req, existing, &hash);
                }
            }
            Err(e)
        }
    }
}

/// The original row for a true retry; a conflict for a reused key.
pub(super) fn replay<R: Keyed>(req: &R, existing: Entry, hash: &str) -> Result<Applied, R::Error> {
    if existing.request_hash.as_deref() == Some(hash) {
        Ok(Applied {
            entry: existing,
            written: Vec::new(),
            user_id: None,
            replayed: true,
        })
    } else {
        Err(req.conflict())
    }
}
