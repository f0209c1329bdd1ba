//! Spending points: draw from live batches in the published order.

use std::future::Future;

use super::idempotency::{self, replay, Keyed};
use super::rules;
use super::writer::{NewRow, RowTime, Writer};
use super::{Applied, ConsumeError, Entry};
use crate::domain::input::ConsumeRequest;
use crate::domain::source::{describe, TxType};
use crate::store::ledger::{LedgerKey, UserKey};
use crate::store::{Store, StoreError, WriteTx};

/// Consumes in its own transaction; idempotent on `(source_type, source_id)`.
pub async fn consume(store: &Store, req: &ConsumeRequest) -> Result<Applied, ConsumeError> {
    idempotency::run(store, req).await
}

impl Keyed for ConsumeRequest {
    type Error = ConsumeError;

    fn fingerprint(&self) -> String {
        ConsumeRequest::fingerprint(self)
    }

    fn key(&self) -> LedgerKey<'_> {
        LedgerKey::Consume {
            source_type: self.source_type.as_str(),
            source_id: self.source_id.as_str(),
        }
    }

    fn conflict(&self) -> ConsumeError {
        ConsumeError::IdempotencyConflict(format!(
            "{}:{}",
            self.source_type,
            self.source_id.as_str()
        ))
    }

    fn matches_history(&self, existing: &Entry) -> bool {
        existing.amount == self.amount.get() && existing.duration == self.duration.map(|d| d.secs())
    }

    fn store_error(e: &ConsumeError) -> Option<&StoreError> {
        match e {
            ConsumeError::Internal(e) => Some(e),
            _ => None,
        }
    }

    fn apply<'a>(
        &'a self,
        tx: &'a mut WriteTx,
        hash: &'a str,
        at: RowTime,
    ) -> impl Future<Output = Result<Applied, ConsumeError>> + Send + 'a {
        consume_in(tx, self, hash, at)
    }
}

/// Consumes inside a transaction the caller owns (and commits).
pub async fn consume_in(
    tx: &mut WriteTx,
    req: &ConsumeRequest,
    hash: &str,
    at: RowTime,
) -> Result<Applied, ConsumeError> {
    // The lock and the idempotency check in one round trip. The check may
    // miss an identical request that committed while this one waited for
    // the lock (PostgreSQL's statement snapshot); then the insert meets the
    // unique index and the caller replays, or the shortfall below re-reads.
    let (mut w, existing) = Writer::lock(tx, UserKey::Id(req.user_id), at, Some(req.key()))
        .await?
        .ok_or(ConsumeError::UserNotFound(req.user_id))?;
    if existing.is_some() {
        if let Some(existing) = tx.find(req.key()).await? {
            // A legacy row under this key is this user's job or a conflict.
            if existing.request_hash.is_none() && existing.user_id != w.user_uuid() {
                return Err(req.conflict());
            }
            return replay(req, existing, hash);
        }
    }
    // The job's key is a hold's: its consume row is the capture's to write.
    let held_key = match w.hold_probed {
        Some(_) => true,
        None if !w.probe_current => tx
            .find_hold(req.source_type.as_str(), req.source_id.as_str())
            .await?
            .is_some(),
        None => false,
    };
    if held_key {
        return Err(req.conflict());
    }
    let live = w.expire_due_then_live(tx).await?;
    let requested = req.amount.get();
    // Held points are not spendable: `live` counts only unreserved ones.
    if w.available() < requested {
        // A retry of a consume that committed while this one waited must
        // get its row back, not a shortfall the original caused.
        if let Some(existing) = tx.find(req.key()).await? {
            return replay(req, existing, hash);
        }
        return Err(ConsumeError::InsufficientBalance {
            available: w.available(),
            requested,
        });
    }
    let parts = rules::draw(&live, requested).map_err(|s| {
        StoreError::custom(format!(
            "user {}: cached balance {} ({} held) but {s}",
            w.user_id, w.balance, w.held
        ))
    })?;
    let mut row = NewRow::new(
        TxType::Consume,
        requested,
        describe(
            req.source_type.label(),
            req.note.as_ref().map(|n| n.as_str()),
        ),
        "consume",
    );
    row.fields.source_type = Some(req.source_type.as_str().to_owned());
    row.fields.source_id = Some(req.source_id.as_str().to_owned());
    row.fields.batch_id = parts.first().map(|p| p.0);
    row.fields.duration = req.duration.map(|d| d.secs());
    row.fields.request_hash = Some(hash.to_owned());
    row.fields.mirror_order = Some(req.source_id.as_str().to_owned());
    let entry = w.append_spend(tx, row, &parts).await?;
    w.finish(tx).await?;
    Ok(Applied {
        entry,
        replayed: false,
    })
}
