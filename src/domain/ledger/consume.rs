//! Spending points: draw from live batches, soonest expiry first.

use std::future::Future;

use chrono::{DateTime, Utc};
use entity::point_transaction::{self, Column};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbErr, EntityTrait,
    QueryFilter,
};

use super::idempotency::{self, replay, Keyed};
use super::writer::{NewRow, Probe, UserRef, Writer};
use super::{Applied, Committer, ConsumeError, Entry};
use crate::domain::input::ConsumeRequest;
use crate::domain::source::{describe, SourceType, TxType};

/// Consumes in its own transaction; idempotent on `(source_type, source_id)`.
pub async fn consume(
    db: &DatabaseConnection,
    committer: &Committer,
    req: &ConsumeRequest,
) -> Result<Applied, ConsumeError> {
    idempotency::run(db, committer, req).await
}

impl Keyed for ConsumeRequest {
    type Error = ConsumeError;

    fn fingerprint(&self) -> String {
        ConsumeRequest::fingerprint(self)
    }

    fn conflict(&self) -> ConsumeError {
        ConsumeError::IdempotencyConflict(format!(
            "{}:{}",
            self.source_type,
            self.source_id.as_str()
        ))
    }

    fn db_error(e: &ConsumeError) -> Option<&DbErr> {
        match e {
            ConsumeError::Internal(e) => Some(e),
            _ => None,
        }
    }

    fn find_existing<'a, C: ConnectionTrait>(
        &'a self,
        conn: &'a C,
    ) -> impl Future<Output = Result<Option<Entry>, DbErr>> + Send + 'a {
        find_consume(conn, self.source_type, self.source_id.as_str())
    }

    fn apply<'a>(
        &'a self,
        txn: &'a DatabaseTransaction,
        hash: &'a str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Applied, ConsumeError>> + Send + 'a {
        consume_in(txn, self, hash, now)
    }
}

/// Consumes inside a transaction the caller owns (and commits).
pub async fn consume_in(
    txn: &DatabaseTransaction,
    req: &ConsumeRequest,
    hash: &str,
    now: DateTime<Utc>,
) -> Result<Applied, ConsumeError> {
    // The lock and the idempotency check in one round trip. The check may
    // miss an identical request that committed while this one waited for
    // the lock (PostgreSQL's statement snapshot); then the insert meets the
    // unique index and the caller replays, or the shortfall below re-reads.
    let probe = Probe {
        subquery: "SELECT t.id FROM mjk_point_transactions t \
                   WHERE t.type = 'consume' AND t.source_type = $1 AND t.source_id = $2",
        values: vec![
            req.source_type.as_str().into(),
            req.source_id.as_str().into(),
        ],
    };
    let (mut w, existing) = Writer::lock_probing(txn, UserRef::Id(req.user_id), now, Some(probe))
        .await?
        .ok_or(ConsumeError::UserNotFound(req.user_id))?;
    if existing.is_some() {
        if let Some(existing) = find_consume(txn, req.source_type, req.source_id.as_str()).await? {
            return replay(req, existing, hash);
        }
    }
    let live = w.expire_due_then_live().await?;
    let requested = req.amount.get();
    if w.balance < requested {
        // A retry of a consume that committed while this one waited must
        // get its row back, not a shortfall the original caused.
        if let Some(existing) = find_consume(txn, req.source_type, req.source_id.as_str()).await? {
            return replay(req, existing, hash);
        }
        return Err(ConsumeError::InsufficientBalance {
            available: w.balance,
            requested,
        });
    }
    let parts = draw(&live, w.user_id, requested)?;
    let mut row = NewRow::new(
        TxType::Consume,
        requested,
        describe(
            req.source_type.label(),
            req.note.as_ref().map(|n| n.as_str()),
        ),
        "consume",
    );
    row.source_type = Some(req.source_type.as_str().to_owned());
    row.source_id = Some(req.source_id.as_str().to_owned());
    row.batch_id = parts.first().map(|p| p.0);
    row.duration = req.duration.map(|d| d.secs());
    row.request_hash = Some(hash.to_owned());
    row.mirror_order = Some(req.source_id.as_str().to_owned());
    let entry = w.append_spend(row, &parts).await?;
    Ok(w.applied(entry).await?)
}

/// Picks `(batch_id, amount)` parts covering `amount` from the live
/// batches, which come in the published order: soonest `expires_at` first,
/// never-expiring last, then oldest. Batches past their expiry were
/// excluded (and expired) before this, even if the sweep had not run.
fn draw(live: &[(i64, i64)], user_id: i32, amount: i64) -> Result<Vec<(i64, i64)>, DbErr> {
    let mut need = amount;
    let mut parts = Vec::new();
    for &(id, remaining) in live {
        if need == 0 {
            break;
        }
        let take = remaining.min(need);
        parts.push((id, take));
        need -= take;
    }
    if need != 0 {
        // The cached balance said there was enough: batches and balance
        // disagree, which `verify` reports. Refuse rather than overdraw.
        return Err(DbErr::Custom(format!(
            "user {user_id}: batches hold {need} points less than the cached balance"
        )));
    }
    Ok(parts)
}

pub(super) async fn find_consume<C: ConnectionTrait>(
    conn: &C,
    source_type: SourceType,
    source_id: &str,
) -> Result<Option<Entry>, DbErr> {
    point_transaction::Entity::find()
        .filter(Column::Type.eq(TxType::Consume.as_str()))
        .filter(Column::SourceType.eq(source_type.as_str()))
        .filter(Column::SourceId.eq(source_id))
        .one(conn)
        .await
}
