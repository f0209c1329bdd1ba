//! The one shape shared by every keyed ledger operation (consume on its
//! source, recharge on its order, refund on its refund key): run in a write
//! transaction; a retry carrying the same fingerprint gets the original row
//! back; the same key with another payload is a conflict; and when two
//! requests race past the check, the unique index decides and the loser is
//! resolved exactly like a retry.

use std::future::Future;

use super::writer::RowTime;
use super::{Applied, Entry};
use crate::store::ledger::LedgerKey;
use crate::store::{Store, StoreError, WriteTx};

pub(super) trait Keyed: Sync {
    type Error: From<StoreError> + Send;

    /// Hash of the canonical payload, stored on the row it writes.
    fn fingerprint(&self) -> String;

    /// The idempotency key of the row this request writes.
    fn key(&self) -> LedgerKey<'_>;

    /// The error for the same key with a different payload.
    fn conflict(&self) -> Self::Error;

    /// Whether `existing`, a row of the history before the cutover (it
    /// carries no request hash), is what this request would have written:
    /// then a retry, otherwise a conflict.
    fn matches_history(&self, existing: &Entry) -> bool;

    /// The store error inside an operation error, if that is what it is.
    fn store_error(e: &Self::Error) -> Option<&StoreError>;

    /// The operation itself, inside a transaction the caller commits.
    fn apply<'a>(
        &'a self,
        tx: &'a mut WriteTx,
        hash: &'a str,
        at: RowTime,
    ) -> impl Future<Output = Result<Applied, Self::Error>> + Send + 'a;
}

/// Runs a keyed operation in its own transaction.
pub(super) async fn run<R: Keyed>(store: &Store, req: &R) -> Result<Applied, R::Error> {
    run_hashed(store, req, req.fingerprint()).await
}

/// [`run`] with the request's fingerprint already taken.
pub(super) async fn run_hashed<R: Keyed>(
    store: &Store,
    req: &R,
    hash: String,
) -> Result<Applied, R::Error> {
    let mut tx = store.begin_write().await?;
    match req.apply(&mut tx, &hash, RowTime::Now).await {
        Ok(applied) => {
            tx.commit().await?;
            Ok(applied)
        }
        Err(e) => {
            tx.rollback().await?;
            if R::store_error(&e).is_some_and(StoreError::is_unique_violation) {
                if let Some(existing) = store.find(req.key()).await? {
                    return replay(req, existing, &hash);
                }
            }
            Err(e)
        }
    }
}

/// The original row for a true retry; a conflict for a reused key.
pub(super) fn replay<R: Keyed>(req: &R, existing: Entry, hash: &str) -> Result<Applied, R::Error> {
    let same = match existing.request_hash.as_deref() {
        Some(h) => h == hash,
        None => req.matches_history(&existing),
    };
    if same {
        Ok(Applied {
            entry: existing,
            replayed: true,
        })
    } else {
        Err(req.conflict())
    }
}
