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
//! - **The key and hold probes in one statement.** The job key is probed
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

/// The places in migration 12's `gw_consume` this migration rewrites, each
/// with what replaces it.
const PATCHES: [(&str, &str); 5] = [
    (
        "  b record;\n",
        "  v_exists boolean;\n  v_taken boolean;\n  b record;\n",
    ),
    // The job key: on `gw_entries`' unique index (a consume the gateway
    // recorded, absorbed ones included), on the ledger only for the history
    // before the cutover; the hold key in the same statement.
    (
        "  PERFORM 1 FROM {s}.mjk_point_transactions t
    LEFT JOIN {s}.gw_entries g ON g.ledger_id = t.id
   WHERE t.source_id = p_source_id AND t.type = 'consume' AND t.source_type = p_source_type
     AND (g.ledger_id IS NOT NULL
          OR t.id <= (SELECT MAX(a.ledger_cutover_id) FROM {s}.gw_adoption a));
  IF FOUND THEN
    o_outcome := 'exists';
    RETURN;
  END IF;
  PERFORM 1 FROM {s}.gw_holds h WHERE h.source_type = p_source_type AND h.source_id = p_source_id;
  IF FOUND OR ",
        "  SELECT EXISTS (SELECT 1 FROM {s}.gw_entries g
                  WHERE g.type = 'consume' AND g.source_type = p_source_type AND g.source_id = p_source_id)
      OR EXISTS (SELECT 1 FROM {s}.mjk_point_transactions t
                  WHERE t.source_id = p_source_id AND t.type = 'consume' AND t.source_type = p_source_type
                    AND t.id <= (SELECT coalesce(MAX(a.ledger_cutover_id), 0) FROM {s}.gw_adoption a)),
         EXISTS (SELECT 1 FROM {s}.gw_holds h WHERE h.source_type = p_source_type AND h.source_id = p_source_id)
    INTO v_exists, v_taken;
  IF v_exists THEN
    o_outcome := 'exists';
    RETURN;
  END IF;
  IF v_taken OR ",
    ),
    // The transaction is marked for the trigger before the ledger row.
    (
        "  INSERT INTO {s}.mjk_point_transactions (",
        "  PERFORM set_config('points_gateway.event', 'written', true);\n  INSERT INTO {s}.mjk_point_transactions (",
    ),
    // Stamped once the lock is held, as the general path does.
    ("  o_at := greatest(p_at,\n", "  o_at := greatest(clock_timestamp(),\n"),
    // The row's event, written here with what the trigger would look up;
    // the trigger stands aside for this row.
    (
        "    RETURNING id INTO o_id;\n",
        "    RETURNING id INTO o_id;
  PERFORM set_config('points_gateway.event', '', true);
  IF current_setting('points_gateway.notify', true) IS DISTINCT FROM 'off' THEN
    INSERT INTO {s}.gw_events (user_id, ledger_id, balance, held, gateway)
      VALUES (p_user, o_id, o_balance - p_amount, v_held, true);
  END IF;
",
    ),
];

/// `gw_consume` of migration 12 with [`PATCHES`]: the same arguments and
/// answers.
pub(crate) fn consume_function() -> Result<String, DbErr> {
    let mut f = crate::m20261203_000012_callers::consume_function()?;
    for (place, with) in PATCHES {
        if f.matches(place).count() != 1 {
            return Err(DbErr::Migration(format!(
                "gw_consume changed shape: {place:?} is not there once"
            )));
        }
        f = f.replacen(place, with, 1);
    }
    Ok(f)
}

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
        crate::pg::in_schema(manager, &consume_function()?).await?;
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

#[cfg(test)]
mod tests {
    #[test]
    fn the_function_writes_its_event_after_the_ledger_row_and_stamps_after_the_lock() {
        let f = super::consume_function().expect("migration 12's function has every place");
        let at = |what: &str| f.find(what).unwrap_or_else(|| panic!("{what} missing"));
        let mark = at("set_config('points_gateway.event', 'written', true)");
        let row = at("INSERT INTO {s}.mjk_point_transactions");
        let unmark = at("set_config('points_gateway.event', '', true)");
        let event = at("INSERT INTO {s}.gw_events");
        assert!(mark < row && row < unmark && unmark < event);
        assert!(at("FOR UPDATE") < at("clock_timestamp()"));
        assert!(at("pg_advisory_xact_lock") < at("gw_lock_ts(p_user)"));
        assert!(!f.contains("greatest(p_at"), "p_at is no longer read");
        assert!(!f.contains("LEFT JOIN"), "the key is probed on gw_entries");
    }
}
