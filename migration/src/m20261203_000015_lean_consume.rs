//! Less database work per consume (PostgreSQL; SQLite is untouched).
//!
//! Measured against the minimal write (`bench run --scenarios consume`,
//! the pgbench leg of a server-side function writing only what a consume
//! needs), `gw_consume` spent about half again its CPU per consume. What
//! this migration removes from the path, each piece measured:
//!
//! - **The ledger trigger's work for the gateway's own consume.** The
//!   trigger read the session's settings, looked the user up by uuid and
//!   wrote the event in a PL/pgSQL call per row. `gw_consume` knows the
//!   user, the balance and what is held: it writes the event itself and
//!   marks the transaction so the trigger, now with a `WHEN` clause
//!   evaluated without calling it, is skipped for that row. Every other
//!   writer (the general path, the sweeps, the legacy applications) is
//!   announced by the trigger exactly as before.
//! - **`ix_events_created`**, an index every event paid for and only the
//!   pruning read: the tail now prunes by id (`store::postgres::tail`).
//! - **`ix_entries_user`** (`gw_entries (user_id, ledger_id)`), an index
//!   every ledger write paid for: no statement reads entries by user, and
//!   with the foreign key to `gw_users` gone no check does either.
//! - **Four foreign-key checks per ledger write** (`gw_entries` to the
//!   ledger row and the user, `gw_point_allocations` to the entry and the
//!   batch). Each is a query the writer runs on rows it has just read under
//!   the user's lock or written in the same transaction, so it proves
//!   nothing the writer does not already know; `verify` checks that no
//!   entry or allocation lacks its row (`orphans`).
//! - **Two probes and a lookup folded into one statement.** The adoption
//!   row is read once (the ts lock and the cutover), the job key is probed
//!   on `gw_entries`' unique index (the ledger's own index only for rows
//!   older than the cutover), and the hold probe rides along.
//!
//! The triggers are renamed for what they do now (`points_ledger_event`,
//! `points_hold_event`): they have not notified since migration 6.
//!
//! **One stamping rule.** Rows are stamped once the user's lock is held:
//! `gw_consume` reads the database's clock after taking it, as the general
//! path does (its lock statement returns the same clock). `p_at` stays in
//! the signature so instances of the previous release keep calling it
//! during a rolling upgrade; it is no longer read.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DatabaseBackend;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261203_000015_lean_consume"
    }
}

const FOREIGN_KEYS: [(&str, &str, &str, &str); 4] = [
    (
        "gw_entries",
        "gw_entries_ledger_id_fkey",
        "ledger_id",
        "mjk_point_transactions(id)",
    ),
    (
        "gw_entries",
        "gw_entries_user_id_fkey",
        "user_id",
        "gw_users(id)",
    ),
    (
        "gw_point_allocations",
        "gw_point_allocations_entry_id_fkey",
        "entry_id",
        "gw_entries(ledger_id)",
    ),
    (
        "gw_point_allocations",
        "gw_point_allocations_batch_id_fkey",
        "batch_id",
        "gw_point_batches(id)",
    ),
];

const RENAMES: &str = r#"
ALTER FUNCTION {s}.points_ledger_notify() RENAME TO points_ledger_event;
ALTER TRIGGER points_ledger_notify ON {s}.mjk_point_transactions RENAME TO points_ledger_event;
ALTER FUNCTION {s}.points_hold_notify() RENAME TO points_hold_event;
ALTER TRIGGER points_hold_notify ON {s}.gw_holds RENAME TO points_hold_event;
DROP TRIGGER points_ledger_event ON {s}.mjk_point_transactions;
CREATE TRIGGER points_ledger_event AFTER INSERT ON {s}.mjk_point_transactions
  FOR EACH ROW WHEN (current_setting('points_gateway.event', true) IS DISTINCT FROM 'written')
  EXECUTE FUNCTION {s}.points_ledger_event();
DROP INDEX IF EXISTS {s}.ix_events_created;
DROP INDEX IF EXISTS {s}.ix_entries_user;
"#;

const RENAMES_BACK: &str = r#"
DROP TRIGGER points_ledger_event ON {s}.mjk_point_transactions;
CREATE TRIGGER points_ledger_event AFTER INSERT ON {s}.mjk_point_transactions
  FOR EACH ROW EXECUTE FUNCTION {s}.points_ledger_event();
ALTER FUNCTION {s}.points_ledger_event() RENAME TO points_ledger_notify;
ALTER TRIGGER points_ledger_event ON {s}.mjk_point_transactions RENAME TO points_ledger_notify;
ALTER FUNCTION {s}.points_hold_event() RENAME TO points_hold_notify;
ALTER TRIGGER points_hold_event ON {s}.gw_holds RENAME TO points_hold_notify;
CREATE INDEX IF NOT EXISTS ix_events_created ON {s}.gw_events (created_at);
CREATE INDEX IF NOT EXISTS ix_entries_user ON {s}.gw_entries (user_id, ledger_id);
"#;

/// `gw_consume` with the same arguments and answers as migration 12's.
pub(crate) const CONSUME: &str = r#"
CREATE OR REPLACE FUNCTION {s}.gw_consume(
  p_user integer, p_source_type text, p_source_id text, p_amount bigint,
  p_duration double precision, p_description text, p_hash text,
  p_at timestamptz, p_zone text, p_written_by text, p_title text,
  OUT o_outcome text, OUT o_id bigint, OUT o_user uuid, OUT o_balance bigint,
  OUT o_at timestamptz, OUT o_batch bigint)
LANGUAGE plpgsql AS $$
DECLARE
  v_held bigint;
  v_need bigint := p_amount;
  v_ids bigint[] := '{}';
  v_takes bigint[] := '{}';
  v_detail integer;
  v_take bigint;
  v_lock_ts boolean;
  v_cutover bigint;
  v_exists boolean;
  v_taken boolean;
  b record;
BEGIN
  -- One owner per job key (migration 8), before anything is looked at.
  PERFORM pg_advisory_xact_lock(hashtextextended(p_source_type || chr(31) || p_source_id, 7013));
  o_outcome := 'other';
  SELECT coalesce(bool_or(a.absorbing AND a.ts_columns IS NOT NULL), false),
         coalesce(max(a.ledger_cutover_id), 0)
    INTO v_lock_ts, v_cutover FROM {s}.gw_adoption a;
  -- While absorbing, the ts row first, as the ts platform's code does.
  IF v_lock_ts THEN
    PERFORM 1 FROM {s}.ts_users t WHERE t.id = p_user FOR UPDATE;
  END IF;
  SELECT u.uuid, u.balance, u.held INTO o_user, o_balance, v_held
    FROM {s}.gw_users u WHERE u.id = p_user FOR UPDATE;
  IF NOT FOUND THEN
    RETURN;
  END IF;
  -- The key is taken by a consume the gateway recorded (absorbed ones
  -- included) or one of the history before the cutover.
  SELECT EXISTS (SELECT 1 FROM {s}.gw_entries g
                  WHERE g.type = 'consume' AND g.source_type = p_source_type AND g.source_id = p_source_id)
      OR (v_cutover > 0 AND EXISTS (SELECT 1 FROM {s}.mjk_point_transactions t
                  WHERE t.source_id = p_source_id AND t.type = 'consume'
                    AND t.source_type = p_source_type AND t.id <= v_cutover)),
         EXISTS (SELECT 1 FROM {s}.gw_holds h WHERE h.source_type = p_source_type AND h.source_id = p_source_id)
    INTO v_exists, v_taken;
  IF v_exists THEN
    o_outcome := 'exists';
    RETURN;
  END IF;
  IF v_taken OR p_amount NOT BETWEEN 1 AND 2147483647 OR o_balance - v_held < p_amount OR o_balance > 2147483647 THEN
    RETURN;
  END IF;
  -- Stamped now that the lock is held, never before the user's last row.
  o_at := greatest(clock_timestamp(),
    (SELECT MAX(t.created_at) FROM {s}.mjk_point_transactions t WHERE t.user_id = o_user));
  -- Due batches sort before every live one that expires, and before the
  -- never-expiring ones: the first rows decide whether any is due.
  FOR b IN SELECT pb.id, pb.remaining, pb.expires_at FROM {s}.gw_point_batches pb
            WHERE pb.user_id = p_user AND pb.remaining > 0
            ORDER BY pb.expires_at IS NULL, pb.expires_at, pb.funds <> 'gift', pb.id LOOP
    IF b.expires_at <= o_at THEN
      RETURN;
    END IF;
    EXIT WHEN v_need = 0;
    v_take := least(b.remaining, v_need);
    v_ids := v_ids || b.id;
    v_takes := v_takes || v_take;
    v_need := v_need - v_take;
  END LOOP;
  IF v_need > 0 THEN
    RETURN;
  END IF;
  o_batch := v_ids[1];
  -- The event is written here, with what the trigger would look up.
  PERFORM set_config('points_gateway.event', 'written', true);
  INSERT INTO {s}.mjk_point_transactions (user_id, type, amount, balance_before, balance_after,
      source_type, source_id, batch_id, duration, description, created_at, updated_at)
    VALUES (o_user, 'consume', p_amount, o_balance, o_balance - p_amount,
      p_source_type, p_source_id, o_batch, p_duration, p_description, o_at, o_at)
    RETURNING id INTO o_id;
  PERFORM set_config('points_gateway.event', '', true);
  IF current_setting('points_gateway.notify', true) IS DISTINCT FROM 'off' THEN
    INSERT INTO {s}.gw_events (user_id, ledger_id, balance, held, gateway)
      VALUES (p_user, o_id, o_balance - p_amount, v_held, true);
  END IF;
  INSERT INTO {s}.ts_points_detail (user_id, points, order_id, title, source_type,
      balance_before, balance_after, created_at)
    VALUES (p_user, -p_amount, p_source_id, coalesce(p_title, p_description), 'consume',
      o_balance, o_balance - p_amount, o_at AT TIME ZONE p_zone)
    RETURNING id INTO v_detail;
  INSERT INTO {s}.gw_entries (ledger_id, user_id, type, source_type, source_id, request_hash, detail_id, written_by)
    VALUES (o_id, p_user, 'consume', p_source_type, p_source_id, p_hash, v_detail, p_written_by);
  FOR i IN 1 .. array_length(v_ids, 1) LOOP
    INSERT INTO {s}.gw_point_allocations (entry_id, batch_id, amount)
      VALUES (o_id, v_ids[i], v_takes[i]);
    UPDATE {s}.gw_point_batches SET remaining = remaining - v_takes[i] WHERE id = v_ids[i];
  END LOOP;
  UPDATE {s}.gw_users SET balance = o_balance - p_amount, updated_at = o_at WHERE id = p_user;
  o_outcome := 'done';
END;
$$
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DatabaseBackend::Postgres {
            return Ok(());
        }
        let db = manager.get_connection();
        for (table, name, _, _) in FOREIGN_KEYS {
            db.execute_unprepared(&format!(
                "ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {name}"
            ))
            .await?;
        }
        crate::pg::in_schema(manager, RENAMES).await?;
        crate::pg::in_schema(manager, CONSUME).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DatabaseBackend::Postgres {
            return Ok(());
        }
        let db = manager.get_connection();
        crate::pg::in_schema(
            manager,
            &crate::m20261203_000012_callers::consume_function()?,
        )
        .await?;
        crate::pg::in_schema(manager, RENAMES_BACK).await?;
        for (table, name, column, target) in FOREIGN_KEYS {
            db.execute_unprepared(&format!(
                "ALTER TABLE {table} ADD CONSTRAINT {name} FOREIGN KEY ({column}) REFERENCES {target}"
            ))
            .await?;
        }
        Ok(())
    }
}
