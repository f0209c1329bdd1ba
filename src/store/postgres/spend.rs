//! A ledger row's writes in one statement.

use chrono_tz::Tz;
use sea_orm::{ConnectionTrait, DatabaseTransaction, DbBackend, Statement};

use crate::store::feed::Entry;
use crate::store::rows::NewEntry;
use crate::store::sql::mirror_values;
use crate::store::StoreError;

/// The ledger row, its mirror and its `gw_entries` record; for a spend
/// (`spend`) also the allocations, the batch decrements and the cached
/// balance, each in time linear in the number of batches drawn (the
/// decrements join the draw, not a lookup into it per batch). The draw goes
/// as parameters, so the statement text never changes (parsed once per
/// connection): `[[batch_id, amount], ...]` in draw order (allocation ids
/// keep that order), and the ids as a list for an index lookup of the
/// batches.
pub(crate) async fn append(
    txn: &DatabaseTransaction,
    row: &NewEntry,
    parts: &[(i64, i64)],
    zone: Tz,
    spend: bool,
) -> Result<Entry, StoreError> {
    let mut params: Vec<sea_orm::Value> = mirror_values(row, zone)?;
    params.extend([
        row.user_uuid.into(),
        row.tx_type.into(),
        row.amount.into(),
        row.fields.source_type.clone().into(),
        row.fields.source_id.clone().into(),
        row.fields.batch_id.into(),
        row.fields.duration.into(),
        row.created_at.into(),
        row.fields.refund_key.clone().into(),
        row.fields.refund_of.into(),
        row.fields.request_hash.clone().into(),
        row.balance_after.into(),
        row.fields.description.clone().into(),
        row.fields.written_by.clone().into(),
    ]);
    let sql = if spend {
        let draw = serde_json::Value::Array(
            parts
                .iter()
                .map(|(b, a)| serde_json::json!([b, a]))
                .collect(),
        )
        .to_string();
        let ids = parts
            .iter()
            .map(|(b, _)| b.to_string())
            .collect::<Vec<_>>()
            .join(",");
        params.extend([draw.into(), ids.into()]);
        SPEND_SQL
    } else {
        APPEND_SQL
    };
    let id: i64 = txn
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            sql,
            params,
        ))
        .await?
        .ok_or_else(|| StoreError::custom("the ledger insert returned no row"))?
        .try_get("", "id")?;
    Ok(row.entry(id))
}

/// `$1..$8` the mirror (user's int id, points, order, title, source,
/// balances, local time); `$9..$16` the ledger row (uuid, type, amount,
/// source type and id, batch, duration, time; its balances are the
/// mirror's `$6`/`$7`); `$17..$19` the record's refund key, refund link and
/// request hash; `$20` the cached balance after; `$21` the ledger's
/// description; `$22` who wrote it.
macro_rules! head {
    () => {
        "WITH e AS (\
           INSERT INTO mjk_point_transactions (user_id, type, amount, balance_before, balance_after, \
             source_type, source_id, batch_id, duration, description, created_at, updated_at) \
           VALUES ($9, $10, $11, $6, $7, $12, $13, $14, $15, $21, $16, $16) RETURNING id), \
         m AS (\
           INSERT INTO ts_points_detail (user_id, points, order_id, title, source_type, \
             balance_before, balance_after, created_at) \
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id), \
         g AS (\
           INSERT INTO gw_entries (ledger_id, user_id, type, source_type, source_id, refund_key, \
             refund_of, request_hash, detail_id, written_by) \
           SELECT e.id, $1, $10, $12, $13, $17, $18, $19, m.id, $22 FROM e, m RETURNING ledger_id)"
    };
}

const APPEND_SQL: &str = concat!(head!(), " SELECT ledger_id AS id FROM g");

/// [`APPEND_SQL`] plus `$23` the draw as `[[batch_id, amount], ...]` and
/// `$24` the batch ids, comma-joined.
const SPEND_SQL: &str = concat!(
    head!(),
    ", a AS (INSERT INTO gw_point_allocations (entry_id, batch_id, amount) \
       SELECT g.ledger_id, (p.x ->> 0)::bigint, (p.x ->> 1)::bigint \
       FROM g, jsonb_array_elements($23::jsonb) WITH ORDINALITY AS p(x, n) ORDER BY p.n), \
     b AS (UPDATE gw_point_batches mb SET remaining = mb.remaining - d.amount \
       FROM (SELECT (p.x ->> 0)::bigint AS id, (p.x ->> 1)::bigint AS amount \
             FROM jsonb_array_elements($23::jsonb) AS p(x)) d \
       WHERE mb.id = d.id AND mb.id = ANY(string_to_array($24, ',')::bigint[])), \
     u AS (UPDATE gw_users SET balance = $20, updated_at = $16 WHERE id = $1) \
     SELECT ledger_id AS id FROM g"
);
