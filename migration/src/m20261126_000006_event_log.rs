//! Balance events without a notification inside the ledger transactions.
//!
//! Migrations 4 and 5 sent `NOTIFY` from the ledger's and the holds'
//! triggers. PostgreSQL takes a global lock when a notifying transaction
//! commits and keeps it until the commit record is flushed, so durable
//! ledger commits queued one behind another's WAL flush. The triggers
//! (same names) now append one row per change to `gw_events`, in the same
//! transaction; every gateway instance tails that table in commit order
//! (`points_gateway::store::postgres::tail`), woken by a `NOTIFY` the
//! writing instance sends after its commit, outside any ledger
//! transaction. `gateway` says whether the gateway's sessions wrote it (a
//! ledger row written by anything else is reported, never announced).
//!
//! The legacy applications keep writing the ledger under their own
//! database roles, which need no privilege on the gateway's tables: the
//! functions run as their owner (`SECURITY DEFINER`), with the gateway's
//! schema, read when the migration runs, written into every name and as
//! the whole `search_path`.
//!
//! The table exists on SQLite too (one schema); nothing writes it there:
//! one instance announces its commits in-process.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DatabaseBackend;

use crate::m20261122_000001_initial::{col, id_i64};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261126_000006_event_log"
    }
}

fn events() -> TableCreateStatement {
    Table::create()
        .table("gw_events")
        .col(id_i64())
        // gw_users.id; null when the row names no user the gateway knows.
        .col(col("user_id").integer().null())
        // A ledger row, or a hold's change.
        .col(col("ledger_id").big_integer().null())
        .col(col("hold_id").big_integer().null())
        .col(col("status").string_len(16).null())
        .col(col("seq").big_integer().null())
        .col(col("captured").big_integer().null())
        // The user's figures right after the change.
        .col(col("balance").big_integer().null())
        .col(col("held").big_integer().null())
        .col(col("gateway").boolean().not_null())
        .col(
            col("created_at")
                .timestamp_with_time_zone()
                .not_null()
                .default(Expr::current_timestamp()),
        )
        .to_owned()
}

pub(crate) const LEDGER_FUNCTION: &str = r#"
CREATE OR REPLACE FUNCTION {s}.points_ledger_notify() RETURNS trigger AS $$
BEGIN
  IF current_setting('points_gateway.notify', true) = 'off' THEN
    RETURN NULL;
  END IF;
  INSERT INTO {s}.gw_events (user_id, ledger_id, balance, held, gateway)
  SELECT u.id, NEW.id, NEW.balance_after, u.held,
         current_setting('application_name') = 'points-gateway'
  FROM (SELECT 1) AS one LEFT JOIN {s}.gw_users u ON u.uuid = NEW.user_id;
  RETURN NULL;
END;
$$ LANGUAGE plpgsql SECURITY DEFINER SET search_path = {s}, pg_temp
"#;

const HOLD_FUNCTION: &str = r#"
CREATE OR REPLACE FUNCTION {s}.points_hold_notify() RETURNS trigger AS $$
BEGIN
  IF current_setting('points_gateway.notify', true) = 'off' THEN
    RETURN NULL;
  END IF;
  INSERT INTO {s}.gw_events (user_id, hold_id, status, seq, captured, balance, held, gateway)
  SELECT NEW.user_id, NEW.id, NEW.status, NEW.seq, NEW.captured, u.balance, u.held,
         current_setting('application_name') = 'points-gateway'
  FROM {s}.gw_users u WHERE u.id = NEW.user_id;
  RETURN NULL;
END;
$$ LANGUAGE plpgsql SECURITY DEFINER SET search_path = {s}, pg_temp
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.create_table(events()).await?;
        let db = manager.get_connection();
        db.execute_unprepared("CREATE INDEX ix_events_created ON gw_events (created_at)")
            .await?;
        if manager.get_database_backend() == DatabaseBackend::Postgres {
            for f in [LEDGER_FUNCTION, HOLD_FUNCTION] {
                crate::pg::in_schema(manager, f).await?;
            }
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() == DatabaseBackend::Postgres {
            // Back to migration 5's notifying triggers.
            let db = manager.get_connection();
            db.execute_unprepared(crate::m20261126_000005_holds::LEDGER_FUNCTION)
                .await?;
            db.execute_unprepared(crate::m20261126_000005_holds::HOLD_FUNCTION)
                .await?;
        }
        manager
            .drop_table(Table::drop().table("gw_events").to_owned())
            .await?;
        Ok(())
    }
}
