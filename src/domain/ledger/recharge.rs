//! Adding points: every recharge or gift is a new batch.

use std::future::Future;

use super::idempotency::{self, replay, Keyed};
use super::writer::{NewRow, RowTime, Writer};
use super::{Applied, Entry, RechargeError};
use crate::domain::input::{RechargeRequest, MAX_BALANCE};
use crate::domain::source::{RechargeKind, TxType};
use crate::store::ledger::{LedgerKey, NewBatch, NewPayment, UserKey};
use crate::store::{Store, StoreError, WriteTx};

/// Recharges in its own transaction; idempotent on the order id.
pub async fn recharge(store: &Store, req: &RechargeRequest) -> Result<Applied, RechargeError> {
    idempotency::run(store, req).await
}

impl Keyed for RechargeRequest {
    type Error = RechargeError;

    fn fingerprint(&self) -> String {
        RechargeRequest::fingerprint(self)
    }

    fn key(&self) -> LedgerKey<'_> {
        LedgerKey::Recharge {
            order_id: self.order_id.as_str(),
        }
    }

    fn conflict(&self) -> RechargeError {
        RechargeError::IdempotencyConflict(self.order_id.as_str().to_owned())
    }

    fn matches_history(&self, existing: &Entry) -> bool {
        existing.amount == self.amount.get()
    }

    fn store_error(e: &RechargeError) -> Option<&StoreError> {
        match e {
            RechargeError::Internal(e) => Some(e),
            _ => None,
        }
    }

    fn apply<'a>(
        &'a self,
        tx: &'a mut WriteTx,
        hash: &'a str,
        at: RowTime,
    ) -> impl Future<Output = Result<Applied, RechargeError>> + Send + 'a {
        recharge_in(tx, self, hash, at)
    }
}

/// Recharges inside a transaction the caller owns: a batch, the ledger row,
/// its mirror, and for paid recharges the `ts_financial_transactions` row.
pub async fn recharge_in(
    tx: &mut WriteTx,
    req: &RechargeRequest,
    hash: &str,
    at: RowTime,
) -> Result<Applied, RechargeError> {
    let (mut w, _) = Writer::lock(tx, UserKey::Id(req.user_id), at, None)
        .await?
        .ok_or(RechargeError::UserNotFound(req.user_id))?;
    if let Some(existing) = tx.find(req.key()).await? {
        // A legacy row under this order is this user's recharge or a conflict.
        if existing.request_hash.is_none() && existing.user_id != w.user_uuid() {
            return Err(req.conflict());
        }
        return replay(req, existing, hash);
    }
    w.expire_due(tx).await?;
    let amount = req.amount.get();
    if w.balance + amount > MAX_BALANCE {
        return Err(RechargeError::BalanceLimit { max: MAX_BALANCE });
    }
    let batch_id = tx
        .insert_batch(&NewBatch {
            user_id: w.user_id,
            kind: req.kind.as_str(),
            funds: req.kind.as_str(),
            amount,
            expires_at: req.expires_at,
            order_id: req.order_id.as_str(),
            created_at: w.now,
        })
        .await?;
    let mirror_source = match req.kind {
        RechargeKind::Paid => "recharge",
        RechargeKind::Gift => "gift",
    };
    let mut row = NewRow::new(
        TxType::Recharge,
        amount,
        req.kind.label().to_owned(),
        mirror_source,
    );
    row.fields.source_type = Some(req.kind.as_str().to_owned());
    row.fields.source_id = Some(req.order_id.as_str().to_owned());
    row.fields.batch_id = Some(batch_id);
    row.fields.request_hash = Some(hash.to_owned());
    row.fields.mirror_order = Some(req.order_id.as_str().to_owned());
    row.fields.mirror_title = req.title.as_ref().map(|t| t.as_str().to_owned());
    row.fields.written_by = req.by.as_ref().map(|a| a.as_str().to_owned());
    let entry = w.append(tx, row).await?;
    if let (RechargeKind::Paid, Some(cents)) = (req.kind, req.money_cents) {
        tx.insert_payment(&NewPayment {
            user_id: w.user_id,
            money_cents: cents,
            order_id: req.order_id.as_str(),
            title: req.title.as_ref().map_or(req.kind.label(), |t| t.as_str()),
            // peewee's default: 0.
            pay_type: req.pay_type.unwrap_or(0),
            time: w.now,
        })
        .await?;
    }
    w.finish(tx).await?;
    Ok(Applied {
        entry,
        replayed: false,
    })
}
