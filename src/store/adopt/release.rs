//! The way back (`points-gateway release`): what it reads for its report
//! and what it writes, in one transaction, to hand a PostgreSQL database
//! back to the legacy systems as the gateway's books stand.
//!
//! The old code reads a user's balance from the last `balance_after` of the
//! mjk ledger and from `ts_users`; the gateway already keeps both equal to
//! its balance. Two things remain: a user both systems know (joined) would
//! hold their points twice once both resume, so one side is brought to 0
//! by a row of its own; and every trigger and function of the gateway's
//! leaves the legacy tables, while the gateway's own tables move aside
//! into a schema of their own (kept, not dropped: batches, holds and
//! request hashes are the only record of what the gateway knew), so the
//! database is unadopted again and `adopt` can run on it.

use sea_orm::{ConnectionTrait, Statement};

use super::existing_tables;
use crate::store::sql::HISTORY_END;
use crate::store::{Store, StoreError, WriteTx};

/// Which system keeps a joined user's points after the release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinedTo {
    /// `ts_users` keeps them (paid and gift apart); the mjk ledger gets a
    /// row to 0.
    Ts,
    /// The mjk ledger keeps them; `ts_users` is set to 0 with a statement
    /// row.
    Mjk,
}

/// What the release would do, read in its transaction.
#[derive(Debug, Clone, Default)]
pub struct Handback {
    pub users: i64,
    /// `(gateway id, balance)` of users both systems know.
    pub joined: Vec<(i32, i64)>,
    pub open_holds: i64,
    /// Users whose last ledger `balance_after` is not their balance.
    pub ledger_off: i64,
    /// Rows the gateway wrote or absorbed, by vocabulary:
    /// `(ledger type, source type, rows)`.
    pub ledger_vocabulary: Vec<(String, String, i64)>,
    /// `(statement source type, rows)` of the statement rows it wrote.
    pub statement_vocabulary: Vec<(String, i64)>,
}

/// SQL of the users both systems know: a ts user whose uuid the mjk
/// system used before the cutover (or knows in `mjk_users`).
async fn joined_sql(tx: &WriteTx) -> Result<Option<String>, StoreError> {
    let found = existing_tables(tx.txn(), &["ts_users", "mjk_users"]).await?;
    if !found.iter().any(|t| t == "ts_users") {
        return Ok(None);
    }
    let mjk_users = if found.iter().any(|t| t == "mjk_users") {
        " OR EXISTS (SELECT 1 FROM mjk_users mu WHERE mu.id = u.uuid)"
    } else {
        ""
    };
    Ok(Some(format!(
        "SELECT u.id, u.uuid, u.balance FROM gw_users u JOIN ts_users ts ON ts.id = u.id \
         WHERE EXISTS (SELECT 1 FROM mjk_point_transactions m WHERE m.user_id = u.uuid \
                         AND m.id <= {HISTORY_END}){mjk_users}"
    )))
}

async fn scalar(tx: &WriteTx, sql: &str) -> Result<i64, StoreError> {
    let row = tx
        .txn()
        .query_one_raw(Statement::from_string(
            tx.txn().get_database_backend(),
            sql.to_owned(),
        ))
        .await?
        .ok_or_else(|| StoreError::custom("an aggregate returned no row"))?;
    Ok(row.try_get("", "n")?)
}

/// Reads what [`hand_back`] would do. Locks the gateway's users first
/// (`EXCLUSIVE`: a gateway still running waits, the report stays true).
pub async fn survey(tx: &WriteTx) -> Result<Handback, StoreError> {
    let backend = tx.txn().get_database_backend();
    tx.txn()
        .execute_unprepared("LOCK TABLE gw_users IN EXCLUSIVE MODE")
        .await?;
    let mut h = Handback {
        users: scalar(tx, "SELECT COUNT(*) AS n FROM gw_users").await?,
        open_holds: scalar(
            tx,
            "SELECT COUNT(*) AS n FROM gw_holds WHERE status = 'held'",
        )
        .await?,
        ledger_off: scalar(
            tx,
            "SELECT COUNT(*) AS n FROM gw_users u WHERE u.balance <> COALESCE((SELECT CAST(t.balance_after AS BIGINT) \
               FROM mjk_point_transactions t WHERE t.user_id = u.uuid ORDER BY t.id DESC LIMIT 1), 0)",
        )
        .await?,
        ..Handback::default()
    };
    if let Some(sql) = joined_sql(tx).await? {
        let rows = tx
            .txn()
            .query_all_raw(Statement::from_string(
                backend,
                format!("SELECT j.id, j.balance FROM ({sql}) j ORDER BY j.id"),
            ))
            .await?;
        for r in rows {
            h.joined
                .push((r.try_get("", "id")?, r.try_get("", "balance")?));
        }
    }
    for r in tx
        .txn()
        .query_all_raw(Statement::from_string(
            backend,
            "SELECT t.type AS ty, COALESCE(t.source_type, '') AS st, COUNT(*) AS n \
             FROM mjk_point_transactions t JOIN gw_entries g ON g.ledger_id = t.id \
             GROUP BY 1, 2 ORDER BY 1, 2",
        ))
        .await?
    {
        h.ledger_vocabulary.push((
            r.try_get("", "ty")?,
            r.try_get("", "st")?,
            r.try_get("", "n")?,
        ));
    }
    for r in tx
        .txn()
        .query_all_raw(Statement::from_string(
            backend,
            "SELECT p.source_type AS st, COUNT(*) AS n FROM ts_points_detail p \
             JOIN gw_entries g ON g.detail_id = p.id GROUP BY 1 ORDER BY 1",
        ))
        .await?
    {
        h.statement_vocabulary
            .push((r.try_get("", "st")?, r.try_get("", "n")?));
    }
    Ok(h)
}

/// Writes the hand-back in `tx`: `ts_users` set to the books, joined
/// users' points left on one side, the gateway's functions and triggers
/// dropped, its tables moved into schema `archive`. The caller commits.
pub async fn hand_back(
    tx: &WriteTx,
    columns: Option<&super::TsBalanceColumns>,
    joined_to: JoinedTo,
    archive: &str,
    zone: &str,
) -> Result<(), StoreError> {
    if let Some(c) = columns {
        super::ts_users::align(tx, c).await?;
    }
    if let Some(joined) = joined_sql(tx).await? {
        let sql = match joined_to {
            JoinedTo::Ts => format!(
                "INSERT INTO mjk_point_transactions (user_id, type, amount, balance_before, balance_after, \
                   source_type, source_id, batch_id, duration, description, created_at, updated_at) \
                 SELECT j.uuid, 'consume', j.balance, j.balance, 0, 'transfer', 'release:' || j.id, NULL, NULL, \
                   '【积分转至ts平台】', s.at, s.at \
                 FROM ({joined}) j CROSS JOIN LATERAL (SELECT greatest(now(), \
                   (SELECT MAX(t.created_at) FROM mjk_point_transactions t WHERE t.user_id = j.uuid)) AS at) s \
                 WHERE j.balance > 0 ORDER BY j.id"
            ),
            JoinedTo::Mjk => {
                let zero = match columns {
                    Some(c) => {
                        let mut set = format!("{} = 0", c.paid_sql());
                        if let Some(g) = c.gift_sql() {
                            set.push_str(&format!(", {g} = 0"));
                        }
                        format!(
                            "UPDATE ts_users SET {set} WHERE id IN (SELECT j.id FROM ({joined}) j);\n"
                        )
                    }
                    None => String::new(),
                };
                let zone = zone.replace('\'', "''");
                format!(
                    "INSERT INTO ts_points_detail (user_id, points, order_id, title, source_type, \
                       balance_before, balance_after, created_at) \
                     SELECT j.id, -j.balance, 'release:' || j.id, '【积分转至mjk系统】', 'transfer', \
                       j.balance, 0, now() AT TIME ZONE '{zone}' \
                     FROM ({joined}) j WHERE j.balance > 0 ORDER BY j.id;\n{zero}"
                )
            }
        };
        tx.txn().execute_unprepared(&sql).await?;
    }
    let archive = super::quoted(archive);
    tx.txn()
        .execute_unprepared(&format!(
            "DO $$ DECLARE f record; t record; c record; BEGIN {DROP_FUNCTIONS} \
               FOR c IN SELECT con.conname, cl.relname FROM pg_constraint con \
                          JOIN pg_class cl ON cl.oid = con.conrelid \
                          JOIN pg_class rf ON rf.oid = con.confrelid \
                         WHERE con.contype = 'f' AND cl.relnamespace = current_schema()::regnamespace \
                           AND cl.relname LIKE 'gw\\_%' AND rf.relname NOT LIKE 'gw\\_%' LOOP \
                 EXECUTE format('ALTER TABLE %I DROP CONSTRAINT %I', c.relname, c.conname); \
               END LOOP; \
               EXECUTE 'CREATE SCHEMA {archive}'; \
               FOR t IN SELECT tablename FROM pg_tables WHERE schemaname = current_schema() \
                          AND (tablename LIKE 'gw\\_%' OR tablename = 'seaql_migrations') LOOP \
                 EXECUTE format('ALTER TABLE %I SET SCHEMA {archive}', t.tablename); \
               END LOOP; \
             END $$"
        ))
        .await?;
    Ok(())
}

/// The body of a `DO` block (declaring `f record`) that drops every
/// function of the gateway's in the current schema, and with them
/// (`CASCADE`) every trigger that calls one, legacy tables' included.
pub(super) const DROP_FUNCTIONS: &str = "\
    FOR f IN SELECT p.oid::regprocedure AS sig FROM pg_proc p \
              WHERE p.pronamespace = current_schema()::regnamespace \
                AND (p.proname LIKE 'gw\\_%' OR p.proname IN ('points_ledger_event', 'points_hold_event', 'points_ledger_notify', 'points_hold_notify')) LOOP \
      EXECUTE 'DROP FUNCTION ' || f.sig || ' CASCADE'; \
    END LOOP;";

/// Schemas of earlier releases (`gw_released_…`), newest last.
pub async fn archives(store: &Store) -> Result<Vec<String>, StoreError> {
    store
        .rows(
            "SELECT nspname::text AS n FROM pg_namespace WHERE nspname LIKE 'gw\\_released\\_%' ORDER BY 1",
            Vec::new(),
            |r| r.try_get("", "n"),
        )
        .await
}
