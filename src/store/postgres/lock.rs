//! Locking a user row and reading that user's batches in one round trip.

use chrono::DateTime;
use sea_orm::QueryResult;

use crate::store::rows::BatchRow;
use crate::store::sql::LAST_AT_SQL;
use crate::store::StoreError;

/// The user's row (the one `filter` selects, e.g. `id = $3`) locked, `probe_sql` (empty or
/// `, (…) AS probe`), and in the same round trip the user's batches with
/// points left as JSON `[[id, remaining, expires_at in µs since the epoch
/// or null], ...]`, the time of the user's last ledger row, and the
/// database's clock read once the lock is held (`locked_at`: rows are
/// stamped then, on this path as in `gw_consume`).
///
/// The batches are read from the statement's snapshot, taken before any
/// wait for the lock, so they are only used when `fresh`: the locked row
/// is the very version that snapshot saw (same `ctid`). Every transaction
/// that changes a user's batches also rewrites that user's row (the cached
/// balance) while holding its lock, so an unchanged row means no such
/// transaction committed after the snapshot and none is still running.
/// Otherwise (a writer of the same user got there first) the batches are
/// read again, after the lock.
///
/// While the legacy systems' writes are absorbed, the user's `ts_users` row
/// is locked first (`gw_lock_ts`, a no-op otherwise; evaluated before the
/// user row is locked, as the user row's filter depends on it): the ts
/// platform's code holds that row when its trigger reaches the user lock.
pub(crate) fn user_sql(filter: &str, probe_sql: &str) -> String {
    let last_at = LAST_AT_SQL.replace("{uuid}", "l.uuid");
    format!(
        "WITH t AS MATERIALIZED (SELECT gw_lock_ts((SELECT id FROM gw_users WHERE {filter})) AS ok), \
         s AS (SELECT ctid AS c FROM gw_users WHERE {filter}), \
         l AS (SELECT ctid AS c, id, uuid, balance, held, hold_seq FROM gw_users \
               WHERE {filter} AND (SELECT ok FROM t) FOR UPDATE) \
         SELECT l.id, l.uuid, l.balance, l.held, l.hold_seq, l.c = s.c AS fresh, \
           (SELECT json_agg(json_build_array(b.id, b.remaining, \
                (extract(epoch FROM b.expires_at) * 1000000)::bigint, b.funds = 'gift'))::text \
            FROM gw_point_batches b WHERE b.user_id = l.id AND b.remaining > 0) AS batches, \
           {last_at} AS last_at, clock_timestamp() AS locked_at{probe_sql} \
         FROM l CROSS JOIN s"
    )
}

/// The batch list of [`user_sql`]'s row, when it is current.
pub(crate) fn batches(row: &QueryResult) -> Result<Option<Vec<BatchRow>>, StoreError> {
    if !row.try_get::<bool>("", "fresh")? {
        return Ok(None);
    }
    let text: Option<String> = row.try_get("", "batches")?;
    parse(text.as_deref()).map(Some)
}

/// Reads the JSON batch list (null: none).
fn parse(text: Option<&str>) -> Result<Vec<BatchRow>, StoreError> {
    let Some(text) = text else {
        return Ok(Vec::new());
    };
    let bad = |e: String| {
        StoreError::custom(format!(
            "unreadable batch list from the lock statement: {e}"
        ))
    };
    let rows: Vec<(i64, i64, Option<i64>, bool)> =
        serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
    rows.into_iter()
        .map(|(id, remaining, micros, gift)| {
            let expires_at = match micros {
                None => None,
                Some(us) => Some(
                    DateTime::from_timestamp_micros(us)
                        .ok_or_else(|| bad(format!("expiry {us} out of range")))?,
                ),
            };
            Ok(BatchRow {
                id,
                remaining,
                expires_at,
                gift,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_batch_list_is_read_with_and_without_expiries() {
        assert_eq!(parse(None).ok(), Some(Vec::new()));
        let rows = parse(Some(
            "[[7, 30, null, false], [8, 5, 1790000000000000, true]]",
        ))
        .expect("valid list");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].expires_at, None);
        assert_eq!(
            rows[1].expires_at.map(|t| t.timestamp()),
            Some(1_790_000_000)
        );
        assert!(rows[1].gift && !rows[0].gift);
        assert!(parse(Some("[[1, 2, null]]")).is_err());
        assert!(parse(Some("[[1, 2, 9223372036854775807, false]]")).is_err());
    }
}
