//! Spending points: draw from live batches in the published order.

use std::future::Future;

use super::idempotency::{self, replay, Keyed};
use super::rules;
use super::writer::{NewRow, RowTime, Writer};
use super::{Applied, ConsumeError, Entry};
use crate::domain::input::ConsumeRequest;
use crate::domain::source::{describe, TxType};
use crate::store::consume_call::{CallOutcome, ConsumeCall};
use crate::store::ledger::{ChargeRecord, LedgerKey, UserKey};
use crate::store::{Store, StoreError, WriteTx};

/// Consumes in its own transaction; idempotent on `(source_type, source_id)`.
///
/// Where the store has a one-call consume (PostgreSQL) it goes first: it
/// writes the common case in one round trip and declines, writing nothing,
/// every case these rules decide (see [`CallOutcome::Declined`]); those run
/// through [`consume_in`] as before.
pub async fn consume(store: &Store, req: &ConsumeRequest) -> Result<Applied, ConsumeError> {
    let hash = req.fingerprint();
    // A titled consume (a ts call site) also writes the ts money page's
    // consumption row, which the one-call consume does not know.
    if req.title.is_some() {
        return idempotency::run_hashed(store, req, hash).await;
    }
    let description = description(req);
    let call = ConsumeCall {
        user_id: req.user_id,
        source_type: req.source_type.as_str(),
        source_id: req.source_id.as_str(),
        amount: req.amount.get(),
        duration: req.duration.map(|d| d.secs()),
        description: &description,
        written_by: req.by.as_ref().map(|a| a.as_str()),
        request_hash: &hash,
    };
    match store.consume_call(&call).await {
        Ok(Some(CallOutcome::Done(entry))) => {
            return Ok(Applied {
                entry: *entry,
                replayed: false,
            })
        }
        Ok(Some(CallOutcome::Exists { user_uuid })) => {
            if let Some(existing) = store.find(req.key()).await? {
                return existing_row(req, existing, user_uuid, &hash);
            }
        }
        Ok(Some(CallOutcome::Declined) | None) => {}
        // Another user's consume of the same job key won the race.
        Err(e) if e.is_unique_violation() => {
            return match store.find(req.key()).await? {
                Some(existing) => replay(req, existing, &hash),
                None => Err(e.into()),
            };
        }
        Err(e) => return Err(e.into()),
    }
    idempotency::run_hashed(store, req, hash).await
}

/// The ledger row's description (and the mirror's title).
fn description(req: &ConsumeRequest) -> String {
    describe(
        req.source_type.label(),
        req.note.as_ref().map(|n| n.as_str()),
    )
}

/// A row already under the job's key, found while `user_uuid` was locked:
/// a legacy row (no request hash) of another user is a conflict; otherwise
/// a retry gets it back, another payload is a conflict.
fn existing_row(
    req: &ConsumeRequest,
    existing: Entry,
    user_uuid: uuid::Uuid,
    hash: &str,
) -> Result<Applied, ConsumeError> {
    if existing.request_hash.is_none() && existing.user_id != user_uuid {
        return Err(req.conflict());
    }
    replay(req, existing, hash)
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
            return existing_row(req, existing, w.user_uuid(), hash);
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
    let mut row = NewRow::new(TxType::Consume, requested, description(req), "consume");
    row.fields.source_type = Some(req.source_type.as_str().to_owned());
    row.fields.source_id = Some(req.source_id.as_str().to_owned());
    row.fields.batch_id = parts.first().map(|p| p.0);
    row.fields.duration = req.duration.map(|d| d.secs());
    row.fields.request_hash = Some(hash.to_owned());
    row.fields.mirror_order = Some(req.source_id.as_str().to_owned());
    row.fields.mirror_title = req.title.as_ref().map(|t| t.as_str().to_owned());
    row.fields.written_by = req.by.as_ref().map(|a| a.as_str().to_owned());
    let entry = w.append_spend(tx, row, &parts).await?;
    if let Some(title) = &req.title {
        tx.insert_charge_record(&ChargeRecord {
            user_id: w.user_id,
            points: requested,
            order_id: req.source_id.as_str(),
            title: title.as_str(),
            time: entry.created_at,
        })
        .await?;
    }
    w.finish(tx).await?;
    Ok(Applied {
        entry,
        replayed: false,
    })
}
