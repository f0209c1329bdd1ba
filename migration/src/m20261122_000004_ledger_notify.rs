//! PostgreSQL: every committed ledger row is announced on the `points_ledger`
//! channel, so a subscriber on any gateway instance hears about a change made
//! through any other (DESIGN.md section 4, `balanceChanged`).
//!
//! A trigger rather than a statement in the gateway: `NOTIFY` is
//! transactional (sent at commit, never for a rollback), notifications of
//! different transactions arrive in commit order, and the trigger costs the
//! ledger no extra round trip. A session may turn it off for bulk loads with
//! `SET points_gateway.notify = 'off'`. `gateway` tells the listener whether
//! the gateway wrote the row (its connections name themselves
//! `points-gateway`): one written by anything else is logged, not announced. SQLite has one instance by
//! definition; there the gateway announces rows in-process after commit.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DatabaseBackend;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261122_000004_ledger_notify"
    }
}

/// The payload must stay under PostgreSQL's 8,000-byte limit; a row whose
/// description would push it over is announced by id and read back.
const FUNCTION: &str = r#"
CREATE OR REPLACE FUNCTION points_ledger_notify() RETURNS trigger AS $$
DECLARE
  payload text;
BEGIN
  IF current_setting('points_gateway.notify', true) = 'off' THEN
    RETURN NULL;
  END IF;
  payload := json_build_object(
    'id', NEW.id,
    'user', (SELECT id FROM gw_users WHERE uuid = NEW.user_id),
    'user_uuid', NEW.user_id,
    'type', NEW.type,
    'amount', NEW.amount,
    'balance_before', NEW.balance_before,
    'balance_after', NEW.balance_after,
    'source_type', NEW.source_type,
    'source_id', NEW.source_id,
    'batch_id', NEW.batch_id,
    'duration', NEW.duration,
    'description', NEW.description,
    'gateway', current_setting('application_name') = 'points-gateway',
    'created_us', (extract(epoch FROM NEW.created_at) * 1000000)::bigint
  )::text;
  IF octet_length(payload) > 7900 THEN
    payload := json_build_object(
      'id', NEW.id,
      'user', (SELECT id FROM gw_users WHERE uuid = NEW.user_id),
      'gateway', current_setting('application_name') = 'points-gateway',
      'partial', true
    )::text;
  END IF;
  PERFORM pg_notify('points_ledger', payload);
  RETURN NULL;
END;
$$ LANGUAGE plpgsql
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DatabaseBackend::Postgres {
            return Ok(());
        }
        let db = manager.get_connection();
        db.execute_unprepared(FUNCTION).await?;
        db.execute_unprepared(
            "CREATE TRIGGER points_ledger_notify AFTER INSERT ON mjk_point_transactions \
             FOR EACH ROW EXECUTE FUNCTION points_ledger_notify()",
        )
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DatabaseBackend::Postgres {
            return Ok(());
        }
        manager
            .get_connection()
            .execute_unprepared(
                "DROP TRIGGER IF EXISTS points_ledger_notify ON mjk_point_transactions; \
                 DROP FUNCTION IF EXISTS points_ledger_notify()",
            )
            .await?;
        Ok(())
    }
}
