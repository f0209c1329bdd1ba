//! Keeping `ts_users` true: after an adoption under the `platform` policy
//! (each ts user opened with exactly what `ts_users` held), every change of
//! a batch's points moves the user's `ts_users` balance column of the
//! batch's funds by the same amount, in the same transaction, by a trigger
//! on `gw_point_batches`. So `get_user_total_money()` and every old page
//! that reads `ts_users` show the gateway's balance after every commit,
//! whichever path wrote (the general path, `gw_consume`, the sweeps). A
//! hold moves points from `remaining` to `reserved`: no change, as the
//! settled balance does not move either.

use sea_orm::ConnectionTrait;

use super::TsBalanceColumns;
use crate::store::{Engine, Store, StoreError, WriteTx};

/// Installs the trigger that keeps `columns` in step; run by `adopt
/// --apply` after the opening batches, so they do not count twice (on
/// PostgreSQL when it turns absorbing on).
pub async fn follow(tx: &WriteTx, columns: &TsBalanceColumns) -> Result<(), StoreError> {
    let paid = columns.paid_sql();
    let gift = columns.gift_sql().unwrap_or_else(|| paid.clone());
    match tx.engine() {
        Engine::Postgres => {
            let s = super::absorb::schema(tx).await?;
            tx.txn()
                .execute_unprepared(&format!(
                    "CREATE OR REPLACE FUNCTION {s}.gw_ts_users_follow() RETURNS trigger \
                     LANGUAGE plpgsql AS $$ \
                     DECLARE d bigint := NEW.remaining + NEW.reserved; \
                     BEGIN \
                       IF TG_OP = 'UPDATE' THEN d := d - OLD.remaining - OLD.reserved; END IF; \
                       IF d <> 0 AND NEW.funds = 'gift' THEN \
                         UPDATE {s}.ts_users SET {gift} = {gift} + d WHERE id = NEW.user_id; \
                       ELSIF d <> 0 THEN \
                         UPDATE {s}.ts_users SET {paid} = {paid} + d WHERE id = NEW.user_id; \
                       END IF; \
                       RETURN NULL; \
                     END $$; \
                     DROP TRIGGER IF EXISTS gw_ts_users_follow ON {s}.gw_point_batches; \
                     CREATE TRIGGER gw_ts_users_follow AFTER INSERT OR UPDATE OF remaining, reserved \
                       ON {s}.gw_point_batches FOR EACH ROW EXECUTE FUNCTION {s}.gw_ts_users_follow();"
                ))
                .await?;
        }
        Engine::Sqlite => {
            for (name, event, delta) in [
                (
                    "gw_ts_users_follow_insert",
                    "INSERT",
                    "NEW.remaining + NEW.reserved",
                ),
                (
                    "gw_ts_users_follow_update",
                    "UPDATE OF remaining, reserved",
                    "(NEW.remaining + NEW.reserved) - (OLD.remaining + OLD.reserved)",
                ),
            ] {
                tx.txn()
                    .execute_unprepared(&format!(
                        "CREATE TRIGGER {name} AFTER {event} ON gw_point_batches BEGIN \
                           UPDATE ts_users SET {gift} = {gift} + ({delta}) \
                             WHERE id = NEW.user_id AND NEW.funds = 'gift'; \
                           UPDATE ts_users SET {paid} = {paid} + ({delta}) \
                             WHERE id = NEW.user_id AND NEW.funds <> 'gift'; \
                         END"
                    ))
                    .await?;
            }
        }
    }
    Ok(())
}

/// Each user's points held in batches by funds, `(user_id, paid, gift)`,
/// as a derived table: what `ts_users` shows of them. Held points count:
/// a hold moves them from `remaining` to `reserved`, not out of the
/// balance.
const SPLIT: &str = "(SELECT user_id, \
    SUM(CASE WHEN funds = 'gift' THEN 0 ELSE remaining + reserved END) AS paid, \
    SUM(CASE WHEN funds = 'gift' THEN remaining + reserved ELSE 0 END) AS gift \
  FROM gw_point_batches GROUP BY user_id)";

/// Sets every adopted ts user's columns to what their batches hold of
/// each funds (the opening split): under the `ledger` and `sum` policies
/// the old code must read the gateway's figures from the cutover on.
/// Without a gift column every point is paid. PostgreSQL, at the switch of
/// the adoption window: users with legacy writes still waiting there are
/// left to the drain, which sets theirs once it has absorbed them.
pub async fn align(tx: &WriteTx, columns: &TsBalanceColumns) -> Result<(), StoreError> {
    let paid = columns.paid_sql();
    let set = match columns.gift_sql() {
        Some(g) => format!("{paid} = COALESCE(s.paid, 0), {g} = COALESCE(s.gift, 0)"),
        None => format!("{paid} = COALESCE(s.paid, 0) + COALESCE(s.gift, 0)"),
    };
    let differs = match columns.gift_sql() {
        Some(g) => format!(
            "ts_users.{paid} IS DISTINCT FROM COALESCE(s.paid, 0) \
             OR ts_users.{g} IS DISTINCT FROM COALESCE(s.gift, 0)"
        ),
        None => {
            format!("ts_users.{paid} IS DISTINCT FROM COALESCE(s.paid, 0) + COALESCE(s.gift, 0)")
        }
    };
    // One grouped pass over the batches, joined (not a subquery per user);
    // rows already equal are not rewritten (the legacy tables are locked
    // meanwhile).
    // The rows that differ first (materialized), then only those asked
    // whether they wait: the ask is a function call per row.
    tx.txn()
        .execute_unprepared(&format!(
            "WITH d AS MATERIALIZED (SELECT u.id, u.uuid, s.paid, s.gift FROM gw_users u \
               JOIN ts_users ON ts_users.id = u.id LEFT JOIN {SPLIT} s ON s.user_id = u.id \
               WHERE {differs}) \
             UPDATE ts_users SET {set} FROM d s \
             WHERE s.id = ts_users.id AND NOT gw_absorb_pending(s.uuid, s.id)"
        ))
        .await?;
    Ok(())
}

/// The columns an adoption keeps in step, from its record (`None`: none).
pub async fn followed(store: &Store) -> Result<Option<TsBalanceColumns>, StoreError> {
    let rows = store
        .all(
            "SELECT ts_columns FROM gw_adoption WHERE ts_columns IS NOT NULL ORDER BY id DESC",
            Vec::new(),
        )
        .await?;
    let Some(row) = rows.first() else {
        return Ok(None);
    };
    let text: String = row.try_get("", "ts_columns")?;
    TsBalanceColumns::parse(&text)
        .map(Some)
        .map_err(StoreError::custom)
}

/// [`followed`], inside `tx`.
pub async fn followed_in(tx: &WriteTx) -> Result<Option<TsBalanceColumns>, StoreError> {
    let row = tx
        .txn()
        .query_one_raw(sea_orm::Statement::from_string(
            tx.txn().get_database_backend(),
            "SELECT ts_columns FROM gw_adoption WHERE ts_columns IS NOT NULL ORDER BY id DESC LIMIT 1",
        ))
        .await?;
    match row {
        None => Ok(None),
        Some(r) => TsBalanceColumns::parse(&r.try_get::<String>("", "ts_columns")?)
            .map(Some)
            .map_err(StoreError::custom),
    }
}

/// ts users whose `ts_users` columns differ from what their live batches
/// hold of each funds: `(id, paid, gift, ts paid, ts gift)`. Points past
/// their expiry not swept yet count on both sides (the sweep moves both).
pub async fn drift(
    store: &Store,
    columns: &TsBalanceColumns,
) -> Result<Vec<(i32, i64, i64, i64, i64)>, StoreError> {
    let paid = columns.paid_sql();
    let gift = columns.gift_sql();
    let (ts_paid, ts_gift) = match &gift {
        Some(g) => (
            format!("COALESCE(t.{paid}, 0)"),
            format!("COALESCE(t.{g}, 0)"),
        ),
        None => (format!("COALESCE(t.{paid}, 0)"), "0".to_owned()),
    };
    // Without a gift column every point is counted in the paid one.
    let (our_paid, our_gift) = if gift.is_some() {
        ("COALESCE(b.paid, 0)", "COALESCE(b.gift, 0)")
    } else {
        ("COALESCE(b.paid, 0) + COALESCE(b.gift, 0)", "0")
    };
    store
        .rows(
            format!(
                "SELECT u.id AS id, CAST({our_paid} AS BIGINT) AS paid, CAST({our_gift} AS BIGINT) AS gift, \
                   CAST({ts_paid} AS BIGINT) AS ts_paid, CAST({ts_gift} AS BIGINT) AS ts_gift \
                 FROM gw_users u JOIN ts_users t ON t.id = u.id \
                 LEFT JOIN {SPLIT} b ON b.user_id = u.id \
                 WHERE {our_paid} <> {ts_paid} OR {our_gift} <> {ts_gift} ORDER BY u.id"
            ),
            Vec::new(),
            |r| {
                Ok((
                    r.try_get("", "id")?,
                    r.try_get("", "paid")?,
                    r.try_get("", "gift")?,
                    r.try_get("", "ts_paid")?,
                    r.try_get("", "ts_gift")?,
                ))
            },
        )
        .await
}
