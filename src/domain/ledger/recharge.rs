//! Adding points: every recharge or gift is a new batch.

use chrono::{DateTime, Utc};
use entity::point_transaction::{self, Column};
use entity::{financial_transaction, point_batch};
use sea_orm::{
    ActiveModelTrait, ActiveValue::NotSet, ColumnTrait, ConnectionTrait, DatabaseConnection,
    DatabaseTransaction, DbErr, EntityTrait, QueryFilter, Set,
};

use super::writer::{NewRow, UserRef, Writer};
use super::{Applied, Entry, RechargeError};
use crate::db::{begin_write, is_unique_violation};
use crate::domain::input::{RechargeRequest, MAX_BALANCE};
use crate::domain::source::{RechargeKind, TxType};

pub async fn recharge(
    db: &DatabaseConnection,
    req: &RechargeRequest,
) -> Result<Applied, RechargeError> {
    let hash = req.fingerprint();
    let txn = begin_write(db).await?;
    match recharge_in(&txn, req, &hash, crate::time::now()).await {
        Ok(applied) => {
            txn.commit().await?;
            Ok(applied)
        }
        Err(RechargeError::Internal(e)) if is_unique_violation(&e) => {
            txn.rollback().await?;
            let existing = find_recharge(db, req.order_id.as_str())
                .await?
                .ok_or(RechargeError::Internal(e))?;
            replay(existing, &hash, req)
        }
        Err(e) => {
            txn.rollback().await?;
            Err(e)
        }
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
        return replay(existing, hash, req);
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
    let written = w.finish().await?;
    Ok(Applied {
        entry,
        written,
        replayed: false,
    })
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

fn replay(existing: Entry, hash: &str, req: &RechargeRequest) -> Result<Applied, RechargeError> {
    if existing.request_hash.as_deref() == Some(hash) {
        Ok(Applied {
            entry: existing,
            written: Vec::new(),
            replayed: true,
        })
    } else {
        Err(RechargeError::IdempotencyConflict(
            req.order_id.as_str().to_owned(),
        ))
    }
}
