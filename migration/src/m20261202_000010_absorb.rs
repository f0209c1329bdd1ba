//! Living beside the legacy systems: what absorbing their writes needs in
//! the gateway's own schema.
//!
//! After a cutover the old code keeps writing balances for weeks while its
//! services move over one at a time. `adopt --apply` (PostgreSQL) puts
//! triggers on the legacy tables that absorb those writes into the
//! gateway's batches in the legacy transaction itself
//! (`points_gateway::store::adopt::absorb`); this migration adds what they
//! and the gateway's own writers share:
//!
//! - `gw_entries.origin`: NULL for a row the gateway wrote, `mjk` or `ts`
//!   for a movement absorbed from that system's tables;
//! - `gw_adoption.absorbing` (the triggers are installed) and
//!   `released_at` (the database was handed back, `adopt` may run again);
//! - `gw_lock_ts(user)`: while absorbing with `ts_users` kept in step,
//!   every gateway write locks the user's `ts_users` row before the user's
//!   own row. The ts platform's code locks `ts_users` first and reaches
//!   the gateway's lock only from its trigger; one order for everyone, so
//!   no deadlock. `gw_consume` calls it too;
//! - the ledger's event trigger counts an absorbed row as the gateway's
//!   own (announced on `balanceChanged`), not as a foreign row.
//!
//! SQLite: the columns only. Its legacy writers are refused coexistence
//! (`adopt` says so): a SQLite trigger cannot take the gateway's lock.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DatabaseBackend;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261202_000010_absorb"
    }
}

const COLUMNS: [&str; 3] = [
    "ALTER TABLE gw_entries ADD COLUMN origin VARCHAR(16) NULL",
    "ALTER TABLE gw_adoption ADD COLUMN absorbing BOOLEAN NOT NULL DEFAULT FALSE",
    "ALTER TABLE gw_adoption ADD COLUMN released_at TIMESTAMP WITH TIME ZONE NULL",
];

const LOCK_TS: &str = r#"
CREATE OR REPLACE FUNCTION {s}.gw_lock_ts(p_user integer) RETURNS boolean AS $$
BEGIN
  IF p_user IS NOT NULL AND EXISTS (SELECT 1 FROM {s}.gw_adoption a
                                     WHERE a.absorbing AND a.ts_columns IS NOT NULL) THEN
    PERFORM 1 FROM {s}.ts_users t WHERE t.id = p_user FOR UPDATE;
  END IF;
  RETURN true;
END;
$$ LANGUAGE plpgsql SECURITY DEFINER SET search_path = {s}, pg_temp
"#;

pub(crate) const LEDGER_FUNCTION: &str = r#"
CREATE OR REPLACE FUNCTION {s}.points_ledger_notify() RETURNS trigger AS $$
DECLARE
  v_gateway boolean := current_setting('application_name') = 'points-gateway';
BEGIN
  IF current_setting('points_gateway.notify', true) = 'off' THEN
    RETURN NULL;
  END IF;
  IF NOT v_gateway THEN
    v_gateway := coalesce(current_setting('points_gateway.absorbing', true), '') = 'on'
      OR EXISTS (SELECT 1 FROM {s}.gw_entries g WHERE g.ledger_id = NEW.id AND g.origin IS NOT NULL);
  END IF;
  INSERT INTO {s}.gw_events (user_id, ledger_id, balance, held, gateway)
  SELECT u.id, NEW.id, NEW.balance_after, u.held, v_gateway
  FROM (SELECT 1) AS one LEFT JOIN {s}.gw_users u ON u.uuid = NEW.user_id;
  RETURN NULL;
END;
$$ LANGUAGE plpgsql SECURITY DEFINER SET search_path = {s}, pg_temp
"#;

/// Where the ts lock goes in `gw_consume`: before the user row's lock.
const USER_LOCK: &str = "  SELECT u.uuid, u.balance, u.held INTO o_user, o_balance, v_held\n";

/// `gw_consume` (with the key claim of migration 8) taking the ts lock
/// first.
pub(crate) fn consume_function() -> Result<String, DbErr> {
    let f = crate::m20261202_000008_key_claim::claiming()?;
    if !f.contains(USER_LOCK) {
        return Err(DbErr::Migration(
            "gw_consume changed shape: no place for the ts lock".into(),
        ));
    }
    Ok(f.replacen(
        USER_LOCK,
        &format!("  PERFORM {{s}}.gw_lock_ts(p_user);\n{USER_LOCK}"),
        1,
    ))
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for sql in COLUMNS {
            db.execute_unprepared(sql).await?;
        }
        if manager.get_database_backend() == DatabaseBackend::Postgres {
            crate::pg::in_schema(manager, LOCK_TS).await?;
            crate::pg::in_schema(manager, LEDGER_FUNCTION).await?;
            crate::pg::in_schema(manager, &consume_function()?).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        if manager.get_database_backend() == DatabaseBackend::Postgres {
            crate::pg::in_schema(manager, &crate::m20261202_000008_key_claim::claiming()?).await?;
            crate::pg::in_schema(manager, crate::m20261126_000006_event_log::LEDGER_FUNCTION)
                .await?;
            db.execute_unprepared("DROP FUNCTION IF EXISTS gw_lock_ts(integer)")
                .await?;
        }
        for sql in [
            "ALTER TABLE gw_adoption DROP COLUMN released_at",
            "ALTER TABLE gw_adoption DROP COLUMN absorbing",
            "ALTER TABLE gw_entries DROP COLUMN origin",
        ] {
            db.execute_unprepared(sql).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_ts_lock_comes_after_the_claim_and_before_the_user_lock() {
        let f = super::consume_function().expect("the function has its places");
        let claim = f.find("pg_advisory_xact_lock").expect("claimed");
        let ts = f.find("gw_lock_ts").expect("ts lock");
        let user = f.find("FOR UPDATE").expect("user lock");
        assert!(claim < ts && ts < user);
    }
}
