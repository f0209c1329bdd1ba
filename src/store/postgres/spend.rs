//! A consume's writes in one statement.

use sea_orm::{DatabaseTransaction, DbBackend, FromQueryResult, Statement};

use crate::store::feed::Entry;
use crate::store::ledger::{mirror_int, NewEntry};
use crate::store::StoreError;

/// The ledger row, its mirror, the allocations, the batch decrements and
/// the cached balance, each in time linear in the number of batches drawn
/// (the decrements join the draw, not a lookup into it per batch). The
/// draw goes as parameters, so the statement text
/// never changes (parsed once per connection): `[[batch_id, amount], ...]`
/// in draw order (allocation ids keep that order), and the ids as a list
/// for an index lookup of the batches.
pub(crate) async fn append(
    txn: &DatabaseTransaction,
    row: &NewEntry,
    parts: &[(i64, i64)],
) -> Result<Entry, StoreError> {
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
    let params: Vec<sea_orm::Value> = vec![
        row.user_uuid.into(),
        row.tx_type.into(),
        row.amount.into(),
        row.balance_before.into(),
        row.balance_after.into(),
        row.fields.source_type.clone().into(),
        row.fields.source_id.clone().into(),
        row.fields.batch_id.into(),
        row.fields.duration.into(),
        Some(row.fields.description.clone()).into(),
        row.fields.refund_key.clone().into(),
        row.fields.refund_of.into(),
        row.fields.request_hash.clone().into(),
        row.created_at.into(),
        row.user_id.into(),
        mirror_int(row.mirror_points)?.into(),
        row.fields.mirror_order.clone().into(),
        row.fields.mirror_source.into(),
        mirror_int(row.balance_before)?.into(),
        mirror_int(row.balance_after)?.into(),
        draw.into(),
        ids.into(),
    ];
    Entry::find_by_statement(Statement::from_sql_and_values(
        DbBackend::Postgres,
        SPEND_SQL,
        params,
    ))
    .one(txn)
    .await?
    .ok_or_else(|| StoreError::custom("the ledger insert returned no row"))
}

/// `$1..$14`: the ledger row (`$14` both timestamps); `$15` the user's int
/// id; `$16..$20` the mirror's points, order, source and balances; `$21`
/// the draw as `[[batch_id, amount], ...]`; `$22` the batch ids, comma-joined.
const SPEND_SQL: &str = "WITH e AS (\
               INSERT INTO mjk_point_transactions (user_id, type, amount, balance_before, balance_after, \
                 source_type, source_id, batch_id, duration, description, refund_key, refund_of, \
                 request_hash, created_at, updated_at) \
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14) RETURNING *), \
             m AS (\
               INSERT INTO ts_points_detail (user_id, points, order_id, title, source_type, \
                 balance_before, balance_after, created_at, ledger_id) \
               SELECT $15, $16, $17, $10, $18, $19, $20, $14, e.id FROM e), \
             a AS (INSERT INTO mjk_point_allocations (entry_id, batch_id, amount) \
               SELECT e.id, (p.x ->> 0)::bigint, (p.x ->> 1)::bigint \
               FROM e, jsonb_array_elements($21::jsonb) WITH ORDINALITY AS p(x, n) ORDER BY p.n), \
             b AS (UPDATE mjk_point_batches mb SET remaining = mb.remaining - d.amount \
               FROM (SELECT (p.x ->> 0)::bigint AS id, (p.x ->> 1)::bigint AS amount \
                     FROM jsonb_array_elements($21::jsonb) AS p(x)) d \
               WHERE mb.id = d.id AND mb.id = ANY(string_to_array($22, ',')::bigint[])), \
             u AS (UPDATE ts_users SET balance = $5, updated_at = $14 WHERE id = $15) \
             SELECT * FROM e";
