//! SQL both engines share: the lookup of a row by its key, the ledger
//! row's columns as read, the probes the lock runs, and the mirror's
//! values. The engines' folders and the write transaction import it; it
//! imports neither.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use entity::legacy_time::LocalTime;
use sea_orm::{ConnectionTrait, FromQueryResult, Statement};
use uuid::Uuid;

use super::feed::Entry;
use super::rows::{LedgerKey, NewEntry};
use super::StoreError;

/// The row under `key`: the same lookup as the lock's probe. The row type
/// is written as a literal, so the index serves it under any plan cache
/// mode (a bound type made PostgreSQL's generic plan scan the ledger: a
/// replay cost time growing with the table).
pub(crate) async fn find<C: ConnectionTrait>(
    conn: &C,
    key: LedgerKey<'_>,
) -> Result<Option<Entry>, StoreError> {
    let (sql, values) = key_lookup(key, ENTRY_COLUMNS);
    Ok(KeyedRow::find_by_statement(Statement::from_sql_and_values(
        conn.get_database_backend(),
        sql,
        values,
    ))
    .one(conn)
    .await?
    .map(KeyedRow::into_entry))
}

/// The statement that finds the row under `key` (placeholders from `$1`),
/// for checks of its query plan.
pub fn find_statement(key: LedgerKey<'_>) -> String {
    key_lookup(key, ENTRY_COLUMNS).0
}

/// A ledger row with the gateway's record of it (`t` the ledger, `g`
/// `gw_entries`); amounts cast, so `integer` and `bigint` columns read alike.
pub(crate) const ENTRY_COLUMNS: &str = "t.id AS id, t.user_id AS user_id, t.type AS type, \
    CAST(t.amount AS BIGINT) AS amount, CAST(t.balance_before AS BIGINT) AS balance_before, \
    CAST(t.balance_after AS BIGINT) AS balance_after, t.source_type AS source_type, \
    t.source_id AS source_id, t.batch_id AS batch_id, t.duration AS duration, \
    t.description AS description, g.refund_key AS refund_key, g.refund_of AS refund_of, \
    g.request_hash AS request_hash, t.created_at AS created_at, t.updated_at AS updated_at";

/// [`ENTRY_COLUMNS`] as read.
#[derive(Debug, FromQueryResult)]
pub(crate) struct KeyedRow {
    id: i64,
    user_id: Uuid,
    r#type: String,
    amount: i64,
    balance_before: i64,
    balance_after: i64,
    source_type: Option<String>,
    source_id: Option<String>,
    batch_id: Option<i64>,
    duration: Option<f64>,
    description: Option<String>,
    refund_key: Option<String>,
    refund_of: Option<i64>,
    request_hash: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl KeyedRow {
    pub(crate) fn into_entry(self) -> Entry {
        Entry {
            id: self.id,
            user_id: self.user_id,
            r#type: self.r#type,
            amount: self.amount,
            balance_before: self.balance_before,
            balance_after: self.balance_after,
            source_type: self.source_type,
            source_id: self.source_id,
            batch_id: self.batch_id,
            duration: self.duration,
            description: self.description,
            refund_key: self.refund_key,
            refund_of: self.refund_of,
            request_hash: self.request_hash,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

/// The last ledger id of the history before the cutover (a scalar
/// subquery; 0 on a database the gateway made).
pub(crate) const HISTORY_END: &str = "(SELECT MAX(a.ledger_cutover_id) FROM gw_adoption a)";

/// A query selecting `columns` of the row under `key`, with its values
/// (placeholders from `$1`); usable as a scalar subquery when `columns` is
/// one column. A row the gateway wrote comes first; otherwise a row of the
/// history before the cutover holds the key (the earliest, where the
/// legacy system charged one key twice). A row written after the cutover
/// by anything else never does: `verify` reports it.
pub(crate) fn key_lookup(key: LedgerKey<'_>, columns: &str) -> (String, Vec<sea_orm::Value>) {
    let keyed = |filter: &str| {
        format!(
            "SELECT {columns} FROM mjk_point_transactions t \
             LEFT JOIN gw_entries g ON g.ledger_id = t.id \
             WHERE {filter} AND (g.ledger_id IS NOT NULL \
               OR t.id <= {HISTORY_END}) \
             ORDER BY g.ledger_id IS NULL, t.id LIMIT 1"
        )
    };
    match key {
        LedgerKey::Consume {
            source_type,
            source_id,
        } => (
            keyed("t.source_id = $2 AND t.type = 'consume' AND t.source_type = $1"),
            vec![source_type.into(), source_id.into()],
        ),
        LedgerKey::Recharge { order_id } => (
            keyed("t.source_id = $1 AND t.type = 'recharge'"),
            vec![order_id.into()],
        ),
        LedgerKey::Refund { refund_key } => (
            format!(
                "SELECT {columns} FROM gw_entries g \
                 JOIN mjk_point_transactions t ON t.id = g.ledger_id WHERE g.refund_key = $1"
            ),
            vec![refund_key.into()],
        ),
    }
}

/// The hold under a consume key (`$1` source type, `$2` source id).
pub(crate) const HOLD_PROBE_SQL: &str =
    "SELECT h.id FROM gw_holds h WHERE h.source_type = $1 AND h.source_id = $2";

/// A scalar subquery: the time of the last ledger row of the user whose
/// uuid is `{uuid}` (an index lookup on `(user_id, created_at, id)`).
pub(crate) const LAST_AT_SQL: &str =
    "(SELECT MAX(t.created_at) FROM mjk_point_transactions t WHERE t.user_id = {uuid})";

/// The mirror's values, `$1..$8` of its insert: the ts platform's
/// vocabulary, every NOT NULL column filled, its local time.
pub(crate) fn mirror_values(row: &NewEntry, zone: Tz) -> Result<Vec<sea_orm::Value>, StoreError> {
    Ok(vec![
        row.user_id.into(),
        mirror_int(row.mirror_points)?.into(),
        row.fields.mirror_order.clone().unwrap_or_default().into(),
        row.fields
            .mirror_title
            .clone()
            .unwrap_or_else(|| row.fields.description.clone())
            .into(),
        row.fields.mirror_source.into(),
        mirror_int(row.balance_before)?.into(),
        mirror_int(row.balance_after)?.into(),
        LocalTime::of(row.created_at, zone).into(),
    ])
}

/// `ts_points_detail` keeps 32-bit figures.
pub(crate) fn mirror_int(v: i64) -> Result<i32, StoreError> {
    i32::try_from(v).map_err(|_| StoreError::custom(format!("{v} does not fit ts_points_detail")))
}
