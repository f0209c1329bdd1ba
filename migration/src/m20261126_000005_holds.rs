//! Holds: points reserved for a job before it runs, settled after.
//!
//! A hold moves points of a batch from `remaining` to `reserved`, so every
//! draw (which reads `remaining`) passes them by, and the settled balance
//! (`gw_users.balance`, the ledger's last `balance_after`) is unchanged:
//! batch by batch `remaining + reserved` is what the ledger says the batch
//! still holds. `gw_users.held` caches the user's open holds (balance −
//! held is what the user may still spend); `hold_seq` counts the user's hold
//! changes, so a subscriber that resynced can tell an older hold event from
//! a newer one. The CHECKs let the database refuse a reservation the
//! batches cannot cover.
//!
//! On PostgreSQL the ledger's notification also carries the user's `held`
//! figure, and hold changes are announced on the same channel (same
//! transaction, so in commit order with the ledger's rows).

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DatabaseBackend;

use crate::m20261122_000001_initial::{check, col, id_i64};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261126_000005_holds"
    }
}

fn holds() -> TableCreateStatement {
    Table::create()
        .table("gw_holds")
        .col(id_i64())
        .col(col("user_id").integer().not_null())
        .col(col("source_type").string_len(32).not_null())
        .col(col("source_id").string_len(64).not_null())
        .col(col("amount").big_integer().not_null())
        .col(col("duration").double().null())
        .col(col("note").text().null())
        .col(col("status").string_len(16).not_null())
        .col(col("request_hash").string_len(64).not_null())
        .col(col("expires_at").timestamp_with_time_zone().not_null())
        .col(col("created_at").timestamp_with_time_zone().not_null())
        .col(col("settled_at").timestamp_with_time_zone().null())
        // The request hash of the capture or release that settled it.
        .col(col("settle_hash").string_len(64).null())
        .col(col("captured").big_integer().null())
        .col(col("entry_id").big_integer().null())
        .col(col("reason").text().null())
        // The user's `hold_seq` after this hold's last change.
        .col(col("seq").big_integer().not_null())
        .check(check("amount > 0"))
        .check(check(
            "status IN ('held', 'captured', 'released', 'expired')",
        ))
        .check(check(
            "captured IS NULL OR (captured > 0 AND captured <= amount)",
        ))
        .foreign_key(
            ForeignKey::create()
                .from("gw_holds", "user_id")
                .to("gw_users", "id"),
        )
        .foreign_key(
            ForeignKey::create()
                .from("gw_holds", "entry_id")
                .to("gw_entries", "ledger_id"),
        )
        .to_owned()
}

fn hold_parts() -> TableCreateStatement {
    Table::create()
        .table("gw_hold_parts")
        .col(id_i64())
        .col(col("hold_id").big_integer().not_null())
        .col(col("batch_id").big_integer().not_null())
        .col(col("amount").big_integer().not_null())
        .check(check("amount > 0"))
        .foreign_key(
            ForeignKey::create()
                .from("gw_hold_parts", "hold_id")
                .to("gw_holds", "id"),
        )
        .foreign_key(
            ForeignKey::create()
                .from("gw_hold_parts", "batch_id")
                .to("gw_point_batches", "id"),
        )
        .to_owned()
}

const INDEXES: &[&str] = &[
    // A job's key holds one hold, forever (its capture writes the consume
    // under the same key).
    "CREATE UNIQUE INDEX ux_holds_key ON gw_holds (source_type, source_id)",
    "CREATE INDEX ix_holds_user ON gw_holds (user_id, id)",
    // The sweep finds open holds past their expiry.
    "CREATE INDEX ix_holds_due ON gw_holds (expires_at) WHERE status = 'held'",
    "CREATE INDEX ix_hold_parts_hold ON gw_hold_parts (hold_id)",
    "CREATE INDEX ix_hold_parts_batch ON gw_hold_parts (batch_id)",
];

const SQLITE_COLUMNS: &[&str] = &[
    "ALTER TABLE gw_point_batches ADD COLUMN reserved BIGINT NOT NULL DEFAULT 0 \
     CHECK (reserved >= 0 AND remaining + reserved <= amount)",
    "ALTER TABLE gw_users ADD COLUMN held BIGINT NOT NULL DEFAULT 0 \
     CHECK (held >= 0 AND held <= balance)",
    "ALTER TABLE gw_users ADD COLUMN hold_seq BIGINT NOT NULL DEFAULT 0",
];

const POSTGRES_COLUMNS: &[&str] = &[
    "ALTER TABLE gw_point_batches ADD COLUMN reserved BIGINT NOT NULL DEFAULT 0, \
     ADD CONSTRAINT ck_batches_reserved CHECK (reserved >= 0 AND remaining + reserved <= amount)",
    "ALTER TABLE gw_users ADD COLUMN held BIGINT NOT NULL DEFAULT 0, \
     ADD COLUMN hold_seq BIGINT NOT NULL DEFAULT 0, \
     ADD CONSTRAINT ck_users_held CHECK (held >= 0 AND held <= balance)",
];

/// Migration 4's function, its payload extended with the user's `held`.
pub(crate) const LEDGER_FUNCTION: &str = r#"
CREATE OR REPLACE FUNCTION points_ledger_notify() RETURNS trigger AS $$
DECLARE
  payload text;
  uid integer;
  uheld bigint;
BEGIN
  IF current_setting('points_gateway.notify', true) = 'off' THEN
    RETURN NULL;
  END IF;
  SELECT id, held INTO uid, uheld FROM gw_users WHERE uuid = NEW.user_id;
  payload := json_build_object(
    'id', NEW.id,
    'user', uid,
    'held', uheld,
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
      'user', uid,
      'held', uheld,
      'gateway', current_setting('application_name') = 'points-gateway',
      'partial', true
    )::text;
  END IF;
  PERFORM pg_notify('points_ledger', payload);
  RETURN NULL;
END;
$$ LANGUAGE plpgsql
"#;

/// A hold's change, with its user's balance and held figure after it (the
/// keys are at most 96 bytes: the payload stays far below the limit).
pub(crate) const HOLD_FUNCTION: &str = r#"
CREATE OR REPLACE FUNCTION points_hold_notify() RETURNS trigger AS $$
BEGIN
  IF current_setting('points_gateway.notify', true) = 'off' THEN
    RETURN NULL;
  END IF;
  PERFORM pg_notify('points_ledger', json_build_object(
    'kind', 'hold',
    'id', NEW.id,
    'user', NEW.user_id,
    'seq', NEW.seq,
    'status', NEW.status,
    'source_type', NEW.source_type,
    'source_id', NEW.source_id,
    'amount', NEW.amount,
    'captured', NEW.captured,
    'balance', u.balance,
    'held', u.held,
    'gateway', current_setting('application_name') = 'points-gateway'
  )::text)
  FROM gw_users u WHERE u.id = NEW.user_id;
  RETURN NULL;
END;
$$ LANGUAGE plpgsql
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();
        let db = manager.get_connection();
        let columns = match backend {
            DatabaseBackend::Postgres => POSTGRES_COLUMNS,
            DatabaseBackend::Sqlite => SQLITE_COLUMNS,
            _ => {
                return Err(DbErr::Migration(
                    "only PostgreSQL and SQLite are supported".into(),
                ))
            }
        };
        for sql in columns {
            db.execute_unprepared(sql).await?;
        }
        manager.create_table(holds()).await?;
        manager.create_table(hold_parts()).await?;
        for sql in INDEXES {
            db.execute_unprepared(sql).await?;
        }
        if backend == DatabaseBackend::Postgres {
            db.execute_unprepared(LEDGER_FUNCTION).await?;
            db.execute_unprepared(HOLD_FUNCTION).await?;
            db.execute_unprepared(
                "CREATE TRIGGER points_hold_notify AFTER INSERT OR UPDATE ON gw_holds \
                 FOR EACH ROW EXECUTE FUNCTION points_hold_notify()",
            )
            .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        if manager.get_database_backend() == DatabaseBackend::Postgres {
            db.execute_unprepared(
                "DROP TRIGGER IF EXISTS points_hold_notify ON gw_holds; \
                 DROP FUNCTION IF EXISTS points_hold_notify()",
            )
            .await?;
        }
        for table in ["gw_hold_parts", "gw_holds"] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        for sql in [
            "ALTER TABLE gw_point_batches DROP COLUMN reserved",
            "ALTER TABLE gw_users DROP COLUMN held",
            "ALTER TABLE gw_users DROP COLUMN hold_seq",
        ] {
            db.execute_unprepared(sql).await?;
        }
        Ok(())
    }
}
