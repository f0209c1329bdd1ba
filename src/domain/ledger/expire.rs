//! The expiry sweep: an `expire` row for every due batch with points left.

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};

use super::writer::{UserRef, Writer};
use super::{Committer, Entry, ExpireError};
use crate::db::begin_write;

/// What one sweep did.
#[derive(Debug, Clone, Default)]
pub struct ExpireReport {
    pub users: i64,
    pub batches: i64,
    pub points: i64,
    pub entries: Vec<Entry>,
}

/// Users with due batches per round; bounds one sweep's memory.
const SWEEP_PAGE: i64 = 500;

/// Expires every batch due at `now`, one short transaction per user so a
/// sweep never holds many locks. Safe with several instances sweeping at
/// once: each user's due batches are re-read under that user's lock, so a
/// batch already expired by another sweep is simply not found again.
pub async fn expire_due(
    db: &DatabaseConnection,
    committer: &Committer,
    now: DateTime<Utc>,
) -> Result<ExpireReport, ExpireError> {
    let backend = db.get_database_backend();
    let mut report = ExpireReport::default();
    let mut after_user = i32::MIN;
    loop {
        let users = db
            .query_all_raw(Statement::from_sql_and_values(
                backend,
                "SELECT DISTINCT user_id FROM mjk_point_batches \
                 WHERE remaining > 0 AND expires_at IS NOT NULL AND expires_at <= $1 AND user_id > $2 \
                 ORDER BY user_id LIMIT $3",
                [now.into(), after_user.into(), SWEEP_PAGE.into()],
            ))
            .await?;
        if users.is_empty() {
            break;
        }
        for u in &users {
            let user_id: i32 = u.try_get("", "user_id")?;
            after_user = user_id;
            let txn = begin_write(db).await?;
            let Some(mut w) = Writer::lock(&txn, UserRef::Id(user_id), now).await? else {
                txn.rollback().await?;
                continue;
            };
            w.expire_due().await?;
            let user = w.user_id;
            let written = w.finish().await?;
            committer.commit(txn, Some(user), &written).await?;
            if !written.is_empty() {
                report.users += 1;
                report.batches += written.len() as i64;
                report.points += written.iter().map(|e| e.amount).sum::<i64>();
                report.entries.extend(written);
            }
        }
    }
    Ok(report)
}
