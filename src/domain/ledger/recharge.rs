//! Adding points: every recharge or gift is a new batch.

use std::future::Future;

use chrono::{DateTime, Utc};
use entity::point_transaction::{self, Column};
use entity::{financial_transaction, point_batch};
use sea_orm::{
    ActiveModelTrait, ActiveValue::NotSet, ColumnTrait, ConnectionTrait, DatabaseConnection,
    DatabaseTransaction, DbErr, EntityTrait, QueryFilter, Set,
};

use super::idempotency::{self, replay, Keyed};
use super::writer::{NewRow, UserRef, Writer};
use super::{Applied, Committer, Entry, RechargeError};
use crate::domain::input::{RechargeRequest, MAX_BALANCE};
use crate::domain::source::{RechargeKind, TxType};

/// Recharges in its own transaction; idempotent on the order id.
pub async fn recharge(
    db: &DatabaseConnection,
    committer: &Committer,
    req: &RechargeRequest,
) -> Result<Applied, RechargeError> {
    idempotency::run(db, committer, req).await
}

impl Keyed for RechargeRequest {
    type Error = RechargeError;

    fn fingerprint(&self) -> String {
        RechargeRequest::fingerprint(self)
    }

    fn conflict(&self) -> RechargeError {
        RechargeError::IdempotencyConflict(self.order_id.as_str().to_owned())
    }

    fn db_error(e: &RechargeError) -> Option<&DbErr> {
        match e {
            RechargeError::Internal(e) => Some(e),
            _ => None,
        }
    }

    fn find_existing<'a, C: ConnectionTrait>(
        &'a self,
        conn: &'a C,
    ) -> impl Future<Output = Result<Option<Entry>, DbErr>> + Send + 'a {
        find_recharge(conn, self.order_id.as_str())
    }

    fn apply<'a>(
        &'a self,
        txn: &'a DatabaseTransaction,
        hash: &'a str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Applied, RechargeError>> + Send + 'a {
        recharge_in(txn, self, hash, now)
    }
}

/// Recharges inside a transaction the caller owns: a batch, the ledger row,
/// its mirror, and for paid recharges the `ts_financial_transactions` row.
pub async fn recharge_in(
    txn: &DatabaseTransaction,
    req: &RechargeRequest,
    hash: &str,
    now: DateTime<Utc>,
) -> Result<Applied, RechargeError> {
    let mut w = Writer::lock(txn, UserRef::Id(req.user_id), now)
        .await?
        .ok_or(RechargeError::UserNotFound(req.user_id))?;
    if let Some(existing) = find_recharge(txn, req.order_id.as_str()).await? {
        return replay(req, existing, hash);
    }
    w.expire_due().await?;
    let amount = req.amount.get();
    if w.balance + amount > MAX_BALANCE {
        return Err(RechargeError::BalanceLimit { max: MAX_BALANCE });
    }
    let batch = point_batch::ActiveModel {
        id: NotSet,
        user_id: Set(w.user_id),
        kind: Set(req.kind.as_str().to_owned()),
        amount: Set(amount),
        remaining: Set(amount),
        expires_at: Set(req.expires_at),
        order_id: Set(req.order_id.as_str().to_owned()),
        created_at: Set(now),
    }
    .insert(txn)
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
    row.source_type = Some(req.kind.as_str().to_owned());
    row.source_id = Some(req.order_id.as_str().to_owned());
    row.batch_id = Some(batch.id);
    row.request_hash = Some(hash.to_owned());
    row.mirror_order = Some(req.order_id.as_str().to_owned());
    let entry = w.append(row).await?;
    if let (RechargeKind::Paid, Some(cents)) = (req.kind, req.money_cents) {
        financial_transaction::ActiveModel {
            id: NotSet,
            user_id: Set(w.user_id),
            money: Set(cents),
            order_id: Set(Some(req.order_id.as_str().to_owned())),
            title: Set(Some(req.kind.label().to_owned())),
            deployment_uuid: Set(None),
            time: Set(now),
            transaction_type: Set(0),
            pay_type: Set(req.pay_type),
            is_cash: Set(1),
        }
        .insert(txn)
        .await?;
    }
    Ok(w.applied(entry).await?)
}

async fn find_recharge<C: ConnectionTrait>(
    conn: &C,
    order_id: &str,
) -> Result<Option<Entry>, DbErr> {
    point_transaction::Entity::find()
        .filter(Column::Type.eq(TxType::Recharge.as_str()))
        .filter(Column::SourceId.eq(order_id))
        .one(conn)
        .await
}
