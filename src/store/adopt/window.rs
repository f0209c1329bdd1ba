//! The adoption window (PostgreSQL): what lets `adopt --apply` hold the
//! legacy tables against writes only briefly, however much history there
//! is and however busy the legacy writers are.
//!
//! 1. **Arm**, under a hold: the gateway's tables, the absorbing triggers
//!    (idle) and, on each legacy table, a trigger that records every write
//!    from then on in `gw_absorb_queue` with its transaction and its user.
//!    The openings are read from a snapshot taken under that hold, so each
//!    legacy write is either in the snapshot or recorded: never both,
//!    never neither.
//! 2. **Open**, without a lock: inventory, plan and openings from that
//!    snapshot, committed with the adoption record in kind [`OPENING`]
//!    (`serve` refuses the database until the close).
//! 3. **Drain**, without a lock, in short transactions: each recorded
//!    legacy transaction, oldest first, is absorbed whole as if it were
//!    written now. Its rows are taken out and inserted again through the
//!    absorbing triggers (numbered, chained and stamped under the user's
//!    lock, drawn, mirrored, announced); an edit of `ts_users` with no
//!    statement row is replayed as that edit. One the live triggers would
//!    refuse (points not free, a job charged twice) keeps its rows as
//!    written and stays in the queue with the reason: reported, and
//!    `verify` lists its rows.
//! 4. **Switch**, under a brief hold: absorbing on, `ts_users` set to the
//!    books for every user with nothing waiting. From then on a legacy
//!    write is absorbed live unless its user still has recorded writes
//!    waiting (`gw_absorb_live`): those are recorded too, so each user's
//!    writes are absorbed in order, and the record only shrinks.
//! 5. **Close**, under a brief hold: drain what is left, mark the adoption
//!    done. The recording triggers, idle by then, are dropped after.
//!
//! A row written in the window is absorbed when drained, so it gets a new
//! id and the time of its absorption (at most the apply's length later),
//! as a row absorbed live gets them when it is inserted.

use sea_orm::{ConnectionTrait, Statement};

use super::TsBalanceColumns;
use crate::store::{Engine, Store, StoreError, WriteTx};

/// The table of legacy writes recorded while `adopt --apply` runs.
pub const QUEUE: &str = "gw_absorb_queue";

/// `gw_adoption.kind` from the openings' commit to the close.
pub const OPENING: &str = "opening";

const RECORD: &str = r#"
CREATE OR REPLACE FUNCTION {s}.gw_absorb_record() RETURNS trigger AS $$
BEGIN
  IF current_setting('application_name') = 'points-gateway' OR pg_trigger_depth() > 1 THEN
    RETURN NULL;
  END IF;
  IF TG_TABLE_NAME = 'mjk_point_transactions' THEN
    IF NOT gw_absorb_live(NEW.user_id, NULL) THEN
      INSERT INTO gw_absorb_queue (tbl, row_id, uuid) VALUES ('mjk', NEW.id, NEW.user_id);
    END IF;
  ELSIF NOT gw_absorb_live(NULL, NEW.user_id) THEN
    INSERT INTO gw_absorb_queue (tbl, row_id, user_id) VALUES ('statement', NEW.id, NEW.user_id);
  END IF;
  RETURN NULL;
END $$ LANGUAGE plpgsql SECURITY DEFINER SET search_path = {s}, pg_temp;

CREATE OR REPLACE TRIGGER gw_absorb_record AFTER INSERT ON {s}.mjk_point_transactions
  FOR EACH ROW WHEN (current_setting('application_name') <> 'points-gateway')
  EXECUTE FUNCTION {s}.gw_absorb_record();
CREATE OR REPLACE TRIGGER gw_absorb_record AFTER INSERT ON {s}.ts_points_detail
  FOR EACH ROW WHEN (current_setting('application_name') <> 'points-gateway')
  EXECUTE FUNCTION {s}.gw_absorb_record();
"#;

/// Where `ts_users` is kept in step: its edits, as what they moved.
const RECORD_TS_USERS: &str = r#"
CREATE OR REPLACE FUNCTION {s}.gw_absorb_record_ts_users() RETURNS trigger AS $$
BEGIN
  IF current_setting('application_name') = 'points-gateway' OR pg_trigger_depth() > 1
     OR gw_absorb_live(NULL, NEW.id) THEN
    RETURN NULL;
  END IF;
  IF TG_OP = 'INSERT' THEN
    INSERT INTO gw_absorb_queue (tbl, user_id, d_paid, d_gift)
      VALUES ('ts_users', NEW.id, COALESCE(NEW.{paid}, 0), {gift_new});
  ELSE
    INSERT INTO gw_absorb_queue (tbl, user_id, d_paid, d_gift)
      VALUES ('ts_users', NEW.id, COALESCE(NEW.{paid}, 0) - COALESCE(OLD.{paid}, 0), {gift_moved});
  END IF;
  RETURN NULL;
END $$ LANGUAGE plpgsql SECURITY DEFINER SET search_path = {s}, pg_temp;

CREATE OR REPLACE TRIGGER gw_absorb_record AFTER INSERT OR UPDATE ON {s}.ts_users
  FOR EACH ROW WHEN (current_setting('application_name') <> 'points-gateway')
  EXECUTE FUNCTION {s}.gw_absorb_record_ts_users();
"#;

/// One drain: up to `p_limit` recorded transactions, oldest first, each
/// absorbed whole or refused whole (a subtransaction each).
const DRAIN: &str = r#"
CREATE OR REPLACE FUNCTION {s}.gw_absorb_drain(p_limit integer,
  OUT o_absorbed integer, OUT o_refused integer, OUT o_left bigint) AS $$
DECLARE
  g record;
  e record;
  u record;
  m mjk_point_transactions%ROWTYPE;
  d ts_points_detail%ROWTYPE;
  v_paid bigint;
  v_gift bigint;
BEGIN
  o_absorbed := 0;
  o_refused := 0;
  FOR g IN SELECT q.xid, MIN(q.seq) AS first FROM gw_absorb_queue q WHERE q.refused IS NULL
            GROUP BY q.xid ORDER BY 2 LIMIT p_limit LOOP
    BEGIN
      FOR e IN SELECT * FROM gw_absorb_queue q WHERE q.xid = g.xid ORDER BY q.seq LOOP
        IF e.tbl = 'mjk' THEN
          DELETE FROM mjk_point_transactions t WHERE t.id = e.row_id RETURNING * INTO m;
          IF FOUND THEN
            INSERT INTO mjk_point_transactions SELECT (m).*;
          END IF;
        ELSIF e.tbl = 'statement' THEN
          DELETE FROM ts_points_detail x WHERE x.id = e.row_id RETURNING * INTO d;
          IF FOUND THEN
            INSERT INTO ts_points_detail SELECT (d).*;
          END IF;
        ELSIF NOT EXISTS (SELECT 1 FROM gw_absorb_queue q
                           WHERE q.xid = g.xid AND q.tbl = 'statement' AND q.user_id = e.user_id) THEN
          -- An edit with no statement row: the same edit on the books'
          -- figures, which the ts_users trigger absorbs as one movement.
          PERFORM gw_absorb_user(NULL, e.user_id);
          IF e.d_paid <> 0 OR e.d_gift <> 0 THEN
            SELECT o_paid, o_gift INTO v_paid, v_gift FROM gw_absorb_split(e.user_id);
            UPDATE ts_users SET {replay} WHERE id = e.user_id;
          END IF;
        END IF;
      END LOOP;
      -- The columns show the books from here on (where ts_users is kept
      -- in step).
      FOR u IN SELECT DISTINCT gu.id FROM gw_absorb_queue q
                 JOIN gw_users gu ON gu.uuid = q.uuid OR gu.id = q.user_id
                WHERE q.xid = g.xid LOOP
        SELECT o_paid, o_gift INTO v_paid, v_gift FROM gw_absorb_split(u.id);
        {align}
      END LOOP;
      DELETE FROM gw_absorb_queue q WHERE q.xid = g.xid;
      o_absorbed := o_absorbed + 1;
    EXCEPTION WHEN check_violation OR unique_violation THEN
      UPDATE gw_absorb_queue q SET refused = left(SQLERRM, 500) WHERE q.xid = g.xid;
      o_refused := o_refused + 1;
    END;
  END LOOP;
  SELECT COUNT(*) INTO o_left FROM gw_absorb_queue q WHERE q.refused IS NULL;
END $$ LANGUAGE plpgsql SECURITY DEFINER SET search_path = {s}, pg_temp;
"#;

/// The SQL of [`arm`]'s recording part: `schema` quoted, the `ts_users`
/// part only where its columns are kept in step.
fn record_sql(schema: &str, columns: Option<&TsBalanceColumns>) -> String {
    let mut sql = RECORD.to_owned();
    let (replay, align) = match columns {
        Some(c) => {
            let paid = c.paid_sql();
            let (gift_new, gift_moved, replay, align) = match c.gift_sql() {
                Some(g) => (
                    format!("COALESCE(NEW.{g}, 0)"),
                    format!("COALESCE(NEW.{g}, 0) - COALESCE(OLD.{g}, 0)"),
                    format!("{paid} = v_paid + e.d_paid, {g} = v_gift + e.d_gift"),
                    format!(
                        "UPDATE ts_users SET {paid} = v_paid, {g} = v_gift WHERE id = u.id \
                         AND ({paid} IS DISTINCT FROM v_paid OR {g} IS DISTINCT FROM v_gift);"
                    ),
                ),
                None => (
                    "0".to_owned(),
                    "0".to_owned(),
                    format!("{paid} = v_paid + v_gift + e.d_paid"),
                    format!(
                        "UPDATE ts_users SET {paid} = v_paid + v_gift WHERE id = u.id \
                         AND {paid} IS DISTINCT FROM v_paid + v_gift;"
                    ),
                ),
            };
            sql.push_str(
                &RECORD_TS_USERS
                    .replace("{gift_new}", &gift_new)
                    .replace("{gift_moved}", &gift_moved)
                    .replace("{paid}", &paid),
            );
            (replay, align)
        }
        // No ts_users columns kept: nothing records an edit of them.
        None => ("id = id".to_owned(), "NULL;".to_owned()),
    };
    sql.push_str(
        &DRAIN
            .replace("{replay}", &replay)
            .replace("{align}", &align),
    );
    sql.replace("{s}", schema)
}

/// Builds the indexes the migrations add to the seed tables, concurrently
/// and before anything is locked: on a million rows each takes seconds,
/// during which a plain `CREATE INDEX` holds the table against writes.
/// The migrations then find them. A table that does not exist yet is left
/// to the migrations (which create it empty).
pub async fn build_seed_indexes(store: &Store) -> Result<(), StoreError> {
    // `CREATE INDEX CONCURRENTLY` cannot run in a transaction: it goes to
    // the pool itself, as one simple query (one exchange, so a
    // transaction-mode pooler keeps it on one server); the lookups go
    // through the store.
    let conn = store.connection();
    for sql in migration::seed_index_statements() {
        let Some(rest) = sql.strip_prefix("CREATE INDEX IF NOT EXISTS ") else {
            continue;
        };
        let name = rest.split_whitespace().next().unwrap_or_default();
        let table = rest
            .split(" ON ")
            .nth(1)
            .and_then(|t| t.split_whitespace().next())
            .unwrap_or_default();
        if super::existing_tables(store.conn(), &[table])
            .await?
            .is_empty()
        {
            continue;
        }
        let concurrent = format!("CREATE INDEX CONCURRENTLY IF NOT EXISTS {rest}");
        if let Err(e) = conn.execute_unprepared(&concurrent).await {
            // A failed concurrent build leaves an invalid index, which the
            // migrations' IF NOT EXISTS would keep.
            conn.execute_unprepared(&format!("DROP INDEX CONCURRENTLY IF EXISTS {name}"))
                .await
                .ok();
            return Err(e.into());
        }
    }
    Ok(())
}

/// Step 1 (in the locked transaction): the absorbing triggers, idle, and
/// the recording triggers.
pub async fn arm(
    tx: &WriteTx,
    columns: Option<&TsBalanceColumns>,
    zone: &str,
) -> Result<(), StoreError> {
    if tx.engine() != Engine::Postgres {
        return Err(StoreError::custom("the adoption window needs PostgreSQL"));
    }
    super::absorb::install(tx, columns, zone).await?;
    let s = super::absorb::schema(tx).await?;
    tx.txn()
        .execute_unprepared(&record_sql(&s, columns))
        .await?;
    Ok(())
}

/// What one drain did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drained {
    /// Legacy transactions absorbed.
    pub absorbed: i64,
    /// Legacy transactions the absorbing triggers refused.
    pub refused: i64,
    /// Recorded transactions' entries still waiting.
    pub left: i64,
}

/// Step 3: absorbs up to `limit` recorded legacy transactions in `tx`
/// (a session that is not the gateway's to the triggers, with their
/// deferred checks run at once so a refusal undoes only its own).
pub async fn drain(tx: &WriteTx, limit: i32) -> Result<Drained, StoreError> {
    let c = tx.txn();
    c.execute_unprepared(
        "SET LOCAL application_name = 'points-gateway adopt'; \
         SELECT set_config('points_gateway.drain', 'on', true); \
         SET CONSTRAINTS ALL IMMEDIATE",
    )
    .await?;
    let row = c
        .query_one_raw(Statement::from_sql_and_values(
            c.get_database_backend(),
            "SELECT CAST(o_absorbed AS BIGINT) AS absorbed, CAST(o_refused AS BIGINT) AS refused, \
               o_left AS left_over FROM gw_absorb_drain($1)",
            vec![limit.into()],
        ))
        .await?
        .ok_or_else(|| StoreError::custom("gw_absorb_drain returned nothing"))?;
    let out = Drained {
        absorbed: row.try_get("", "absorbed")?,
        refused: row.try_get("", "refused")?,
        left: row.try_get("", "left_over")?,
    };
    c.execute_unprepared(
        "SELECT set_config('points_gateway.drain', 'off', true); \
         SET CONSTRAINTS ALL DEFERRED",
    )
    .await?;
    Ok(out)
}

/// The legacy transactions refused while draining: `(entries, reason)`,
/// a few examples of each reason.
pub async fn refused(tx: &WriteTx) -> Result<Vec<(i64, String)>, StoreError> {
    let c = tx.txn();
    let rows = c
        .query_all_raw(Statement::from_string(
            c.get_database_backend(),
            "SELECT COUNT(*) AS n, MIN(refused) AS reason FROM gw_absorb_queue \
             WHERE refused IS NOT NULL GROUP BY xid ORDER BY MIN(seq) LIMIT 50",
        ))
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("", "n")?, r.try_get("", "reason")?)))
        .collect()
}

/// Step 4a (in a locked transaction): absorbing on. A user with recorded
/// writes still waiting goes on being recorded until they are drained
/// (`gw_absorb_live`), so theirs stay in order; every other legacy write
/// is absorbed live from this commit on.
pub async fn switch(tx: &WriteTx, columns: Option<&TsBalanceColumns>) -> Result<(), StoreError> {
    // From here on every change of a batch moves ts_users (not before: the
    // openings' and the drains' batches would cost a trigger each, and the
    // drains set the columns of the users they absorb themselves).
    if let Some(c) = columns {
        super::ts_users::follow(tx, c).await?;
    }
    super::absorb::start(tx).await
}

/// Step 4b (in a locked transaction, after the last drain): the adoption
/// done; the gateway may serve. The recording triggers idle from here on
/// (nothing waits, so nothing is recorded); dropping one needs the table's
/// ACCESS EXCLUSIVE lock, which a legacy transaction that has read the
/// table and waits behind this one's lock would deadlock with: [`retire`]
/// drops them after the commit.
pub async fn close(tx: &WriteTx) -> Result<(), StoreError> {
    tx.txn()
        .execute_unprepared("UPDATE gw_adoption SET kind = 'adopted'")
        .await?;
    Ok(())
}

/// Drops the idle recording triggers, each waiting for its table at most
/// 200 ms an attempt (a waiting DROP holds new legacy writers behind it).
/// Returns whether all are gone; those left stay idle.
pub async fn retire(store: &Store) -> Result<bool, StoreError> {
    for table in ["mjk_point_transactions", "ts_points_detail", "ts_users"] {
        let mut dropped = false;
        for _ in 0..50 {
            let tx = super::begin(store).await?;
            let s = super::absorb::schema(&tx).await?;
            let sql = format!(
                "SET LOCAL lock_timeout = '200ms'; \
                 DO $$ BEGIN IF to_regclass('{table}') IS NOT NULL THEN \
                   DROP TRIGGER IF EXISTS gw_absorb_record ON {s}.{table}; END IF; END $$"
            );
            match tx.txn().execute_unprepared(&sql).await {
                Ok(_) => {
                    tx.commit().await?;
                    dropped = true;
                    break;
                }
                Err(e) if StoreError::is_lock_timeout(&e) => {
                    tx.rollback().await?;
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        if !dropped {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Undoes an armed window whose openings never committed (an `adopt
/// --apply` interrupted or refused after arming): every function, trigger
/// and table of the gateway's in the schema, which hold nothing yet. The
/// seed indexes stay (they only speed the legacy code up).
pub async fn disarm(tx: &WriteTx) -> Result<(), StoreError> {
    let s = super::absorb::schema(tx).await?;
    tx.txn()
        .execute_unprepared(&format!(
            "DO $$ DECLARE f record; t record; BEGIN {} \
               FOR t IN SELECT tablename FROM pg_tables WHERE schemaname = current_schema() \
                          AND (tablename LIKE 'gw\\_%' OR tablename = 'seaql_migrations') LOOP \
                 EXECUTE format('DROP TABLE IF EXISTS {s}.%I CASCADE', t.tablename); \
               END LOOP; \
             END $$",
            super::release::DROP_FUNCTIONS
        ))
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_placeholder_is_filled() {
        for cols in [
            None,
            Some(TsBalanceColumns::platform()),
            Some(TsBalanceColumns::parse("points").expect("a name")),
        ] {
            let sql = record_sql("\"public\"", cols.as_ref());
            for p in [
                "{s}",
                "{paid}",
                "{gift_new}",
                "{gift_moved}",
                "{replay}",
                "{align}",
            ] {
                assert!(!sql.contains(p), "{p} left in {cols:?}");
            }
            assert_eq!(sql.contains("gw_absorb_record_ts_users"), cols.is_some());
        }
    }
}
