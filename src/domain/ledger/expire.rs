//! The expiry sweep: an `expire` row for every due batch with points left.

use chrono::{DateTime, Utc};

use super::writer::{RowTime, Writer};
use super::{Entry, ExpireError};
use crate::store::ledger::UserKey;
use crate::store::Store;

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
pub async fn expire_due(store: &Store, now: DateTime<Utc>) -> Result<ExpireReport, ExpireError> {
    let mut report = ExpireReport::default();
    let mut after_user = i32::MIN;
    loop {
        let users =
            crate::store::read::batches::users_with_due(store, now, after_user, SWEEP_PAGE).await?;
        let Some(&last) = users.last() else {
            break;
        };
        after_user = last;
        for user_id in users {
            let mut tx = store.begin_write().await?;
            let Some((mut w, _)) =
                Writer::lock(&mut tx, UserKey::Id(user_id), RowTime::At(now), None).await?
            else {
                tx.rollback().await?;
                continue;
            };
            w.expire_due(&mut tx).await?;
            w.finish(&mut tx).await?;
            let written = tx.commit().await?;
            if !written.is_empty() {
                report.users += 1;
                report.batches += written.len() as i64;
                report.points += written.iter().map(|(_, e)| e.amount).sum::<i64>();
                report.entries.extend(written.into_iter().map(|(_, e)| e));
            }
        }
    }
    Ok(report)
}
