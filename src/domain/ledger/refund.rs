//! Returning points of a consume to the batches that paid for it.

use std::collections::HashMap;
use std::future::Future;

use chrono::{DateTime, Utc};
use entity::point_transaction::{self, Column};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbErr, EntityTrait,
    QueryFilter, Statement,
};

use super::consume::find_consume;
use super::idempotency::{self, replay, Keyed};
use super::writer::{NewRow, UserRef, Writer};
use super::{Applied, Committer, Entry, RefundError};
use crate::domain::input::RefundRequest;
use crate::domain::source::{describe, SourceType, TxType, REFUND_LABEL};

/// Refunds in its own transaction; idempotent on the refund key.
pub async fn refund(
    db: &DatabaseConnection,
    committer: &Committer,
    req: &RefundRequest,
) -> Result<Applied, RefundError> {
    idempotency::run(db, committer, req).await
}

impl Keyed for RefundRequest {
    type Error = RefundError;

    fn fingerprint(&self) -> String {
        RefundRequest::fingerprint(self)
    }

    fn conflict(&self) -> RefundError {
        RefundError::IdempotencyConflict(self.refund_key.as_str().to_owned())
    }

    fn db_error(e: &RefundError) -> Option<&DbErr> {
        match e {
            RefundError::Internal(e) => Some(e),
            _ => None,
        }
    }

    fn find_existing<'a, C: ConnectionTrait>(
        &'a self,
        conn: &'a C,
    ) -> impl Future<Output = Result<Option<Entry>, DbErr>> + Send + 'a {
        find_refund(conn, self.refund_key.as_str())
    }

    fn apply<'a>(
        &'a self,
        txn: &'a DatabaseTransaction,
        hash: &'a str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Applied, RefundError>> + Send + 'a {
        refund_in(txn, self, hash, now)
    }
}

/// Refunds inside a transaction the caller owns. The cap is cumulative: all
/// refunds of one consume together never exceed what it consumed.
pub async fn refund_in(
    txn: &DatabaseTransaction,
    req: &RefundRequest,
    hash: &str,
    now: DateTime<Utc>,
) -> Result<Applied, RefundError> {
    let source = format!("{}:{}", req.source_type, req.source_id.as_str());
    // A replay needs no lock: refund rows are never updated.
    if let Some(existing) = find_refund(txn, req.refund_key.as_str()).await? {
        return replay(req, existing, hash);
    }
    let consume = find_consume(txn, req.source_type, req.source_id.as_str())
        .await?
        .ok_or_else(|| RefundError::ConsumeNotFound(source.clone()))?;
    let mut w = Writer::lock(txn, UserRef::Uuid(consume.user_id), now)
        .await?
        .ok_or_else(|| DbErr::Custom(format!("consume {} has no user", consume.id)))?;
    // Under the lock: a concurrent identical refund may have committed.
    if let Some(existing) = find_refund(txn, req.refund_key.as_str()).await? {
        return replay(req, existing, hash);
    }
    w.expire_due().await?;

    let backend = txn.get_database_backend();
    let drawn = txn
        .query_all_raw(Statement::from_sql_and_values(
            backend,
            "SELECT batch_id, amount FROM mjk_point_allocations WHERE entry_id = $1 ORDER BY id",
            [consume.id.into()],
        ))
        .await?;
    let returned_rows = txn
        .query_all_raw(Statement::from_sql_and_values(
            backend,
            "SELECT a.batch_id AS batch_id, CAST(SUM(a.amount) AS BIGINT) AS amount \
             FROM mjk_point_allocations a JOIN mjk_point_transactions t ON t.id = a.entry_id \
             WHERE t.refund_of = $1 GROUP BY a.batch_id",
            [consume.id.into()],
        ))
        .await?;
    let mut returned: HashMap<i64, i64> = HashMap::new();
    for r in returned_rows {
        returned.insert(r.try_get("", "batch_id")?, r.try_get("", "amount")?);
    }
    // A consume draws each batch once, so `returned` is per (consume, batch).
    // Refundable per batch, latest-expiring first: a partial refund goes
    // back to the batch the user would keep longest (reverse draw order).
    let mut refundable: Vec<(i64, i64)> = Vec::new();
    for r in drawn.iter().rev() {
        let batch_id: i64 = r.try_get("", "batch_id")?;
        let amount: i64 = r.try_get("", "amount")?;
        let back = returned.get(&batch_id).copied().unwrap_or(0);
        let left = amount - back;
        if left > 0 {
            refundable.push((batch_id, left));
        }
    }
    let total_refundable: i64 = refundable.iter().map(|p| p.1).sum();
    let requested = req.amount.map(|a| a.get()).unwrap_or(total_refundable);
    if requested == 0 || requested > total_refundable {
        return Err(RefundError::ExceedsConsumed {
            refundable: total_refundable,
            requested,
        });
    }
    let mut parts = Vec::new();
    let mut need = requested;
    for (batch_id, left) in refundable {
        if need == 0 {
            break;
        }
        let give = left.min(need);
        parts.push((batch_id, give));
        need -= give;
    }

    let label = SourceType::parse(consume.source_type.as_deref().unwrap_or_default())
        .map(|t| t.label())
        .unwrap_or_default();
    let mut row = NewRow::new(
        TxType::Refund,
        requested,
        describe(
            &format!("{REFUND_LABEL}{label}"),
            req.reason.as_ref().map(|n| n.as_str()),
        ),
        "refund",
    );
    row.source_type = consume.source_type.clone();
    row.source_id = consume.source_id.clone();
    row.batch_id = parts.first().map(|p| p.0);
    row.refund_key = Some(req.refund_key.as_str().to_owned());
    row.refund_of = Some(consume.id);
    row.request_hash = Some(hash.to_owned());
    row.mirror_order = Some(req.refund_key.as_str().to_owned());
    let entry = w.append(row).await?;
    w.allocate(entry.id, &parts).await?;
    for &(batch_id, amount) in &parts {
        w.adjust_batch(batch_id, amount).await?;
    }
    // Points that landed in an already-expired batch expire again now.
    w.expire_due().await?;
    if req.source_type == SourceType::Fal {
        txn.execute_raw(Statement::from_sql_and_values(
            backend,
            "UPDATE ts_fal_tasks SET is_refund = 1 WHERE task_id = $1",
            [req.source_id.as_str().into()],
        ))
        .await?;
    }
    Ok(w.applied(entry).await?)
}

async fn find_refund<C: ConnectionTrait>(conn: &C, key: &str) -> Result<Option<Entry>, DbErr> {
    point_transaction::Entity::find()
        .filter(Column::RefundKey.eq(key))
        .one(conn)
        .await
}
