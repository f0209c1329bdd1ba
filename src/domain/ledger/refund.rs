//! Returning points of a consume to the batches that paid for it.

use std::future::Future;

use super::idempotency::{self, replay, Keyed};
use super::rules;
use super::writer::{NewRow, RowTime, Writer};
use super::{Applied, Entry, RefundError};
use crate::domain::input::{RefundRequest, MAX_BALANCE};
use crate::domain::source::{describe, RechargeKind, TxType, REFUND_LABEL};
use crate::store::ledger::{LedgerKey, NewBatch, UserKey};
use crate::store::{Store, StoreError, WriteTx};

/// Refunds in its own transaction; idempotent on the refund key.
pub async fn refund(store: &Store, req: &RefundRequest) -> Result<Applied, RefundError> {
    idempotency::run(store, req).await
}

impl Keyed for RefundRequest {
    type Error = RefundError;

    fn fingerprint(&self) -> String {
        RefundRequest::fingerprint(self)
    }

    fn key(&self) -> LedgerKey<'_> {
        LedgerKey::Refund {
            refund_key: self.refund_key.as_str(),
        }
    }

    fn conflict(&self) -> RefundError {
        RefundError::IdempotencyConflict(self.refund_key.as_str().to_owned())
    }

    /// Refund keys exist only on rows the gateway wrote.
    fn matches_history(&self, _existing: &Entry) -> bool {
        false
    }

    fn store_error(e: &RefundError) -> Option<&StoreError> {
        match e {
            RefundError::Internal(e) => Some(e),
            _ => None,
        }
    }

    fn apply<'a>(
        &'a self,
        tx: &'a mut WriteTx,
        hash: &'a str,
        at: RowTime,
    ) -> impl Future<Output = Result<Applied, RefundError>> + Send + 'a {
        refund_in(tx, self, hash, at)
    }
}

/// Refunds inside a transaction the caller owns. The cap is cumulative: all
/// refunds of one consume together never exceed what it consumed.
pub async fn refund_in(
    tx: &mut WriteTx,
    req: &RefundRequest,
    hash: &str,
    at: RowTime,
) -> Result<Applied, RefundError> {
    let source = format!("{}:{}", req.source_type, req.source_id.as_str());
    // A replay needs no lock: refund rows are never updated.
    if let Some(existing) = tx.find(req.key()).await? {
        return replay(req, existing, hash);
    }
    let consume_key = LedgerKey::Consume {
        source_type: req.source_type.as_str(),
        source_id: req.source_id.as_str(),
    };
    let consume = tx
        .find(consume_key)
        .await?
        .ok_or_else(|| RefundError::ConsumeNotFound(source.clone()))?;
    let (mut w, _) = Writer::lock(tx, UserKey::Uuid(consume.user_id), at, None)
        .await?
        .ok_or_else(|| StoreError::custom(format!("consume {} has no user", consume.id)))?;
    // Under the lock: a concurrent identical refund may have committed.
    if let Some(existing) = tx.find(req.key()).await? {
        return replay(req, existing, hash);
    }
    w.expire_due(tx).await?;

    let returned = tx.refunded_per_batch(consume.id).await?;
    // A consume the gateway wrote has a request hash; one of the history
    // before the cutover has none, and drew from no batch of the gateway's.
    // A legacy consume absorbed after the cutover has no hash either, but
    // drew from batches like the gateway's own: refunded like them.
    let drawn = tx.allocations(consume.id).await?;
    let history = consume.request_hash.is_none() && drawn.is_empty();
    let parts = if history {
        // Up to what it took (every legacy consume under its key: the old
        // system charged some twice) minus every refund of it so far; the
        // points go to a never-expiring batch of their own.
        let (took, refunded) = tx.history_consumption(&consume).await?;
        let refunded = refunded + returned.iter().map(|p| p.1).sum::<i64>();
        let refundable = (took - refunded).max(0);
        let requested = req.amount.map_or(refundable, |a| a.get());
        if requested > refundable || requested <= 0 {
            return Err(RefundError::ExceedsConsumed {
                refundable,
                requested,
            });
        }
        let order = format!("restored:{}", req.refund_key.as_str());
        let batch = tx
            .insert_batch(&NewBatch {
                user_id: w.user_id,
                kind: "restored",
                // What the old code charged is not known to have been
                // gift or paid: given back as paid points.
                funds: RechargeKind::Paid.as_str(),
                amount: requested,
                expires_at: None,
                order_id: &order,
                created_at: w.now,
            })
            .await?;
        vec![(batch, requested)]
    } else {
        rules::refund_plan(&drawn, &returned, req.amount.map(|a| a.get())).map_err(|e| {
            RefundError::ExceedsConsumed {
                refundable: e.refundable,
                requested: e.requested,
            }
        })?
    };
    let requested: i64 = parts.iter().map(|p| p.1).sum();
    // Balances are capped (the public Int); a refund into a balance near
    // the cap is refused like a recharge would be, never wrapped.
    if w.balance + requested > MAX_BALANCE {
        return Err(RefundError::BalanceLimit { max: MAX_BALANCE });
    }

    // The request's type is the consume's (its key found the consume).
    let label = req.source_type.label();
    let mut row = NewRow::new(
        TxType::Refund,
        requested,
        describe(
            &format!("{REFUND_LABEL}{label}"),
            req.reason.as_ref().map(|n| n.as_str()),
        ),
        "refund",
    );
    row.fields.source_type = consume.source_type.clone();
    row.fields.source_id = consume.source_id.clone();
    row.fields.batch_id = parts.first().map(|p| p.0);
    row.fields.refund_key = Some(req.refund_key.as_str().to_owned());
    row.fields.refund_of = Some(consume.id);
    row.fields.request_hash = Some(hash.to_owned());
    row.fields.mirror_order = Some(req.refund_key.as_str().to_owned());
    row.fields.written_by = req.by.as_ref().map(|a| a.as_str().to_owned());
    let entry = w.append(tx, row).await?;
    tx.allocate(entry.id, &parts).await?;
    // A restored batch was created holding its points.
    if !history {
        for &(batch_id, amount) in &parts {
            w.adjust_batch(tx, batch_id, amount).await?;
        }
    }
    // Points that landed in an already-expired batch expire again now.
    w.expire_due(tx).await?;
    if req.source_type.is_fal() {
        tx.flag_fal_refunded(req.source_id.as_str()).await?;
    }
    w.finish(tx).await?;
    Ok(Applied {
        entry,
        replayed: false,
    })
}
