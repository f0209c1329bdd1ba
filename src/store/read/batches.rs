//! Batches across users: what the expiry sweep walks.

use chrono::{DateTime, Utc};

use crate::store::{Store, StoreError};

/// Up to `limit` users with a batch due at `now` and points left, with ids
/// above `after`, in id order (the sweep pages through them).
pub async fn users_with_due(
    store: &Store,
    now: DateTime<Utc>,
    after: i32,
    limit: i64,
) -> Result<Vec<i32>, StoreError> {
    let rows = store
        .all(
            "SELECT DISTINCT user_id FROM gw_point_batches \
             WHERE remaining > 0 AND expires_at IS NOT NULL AND expires_at <= $1 AND user_id > $2 \
             ORDER BY user_id LIMIT $3",
            vec![now.into(), after.into(), limit.into()],
        )
        .await?;
    rows.iter()
        .map(|r| Ok(r.try_get::<i32>("", "user_id")?))
        .collect()
}
