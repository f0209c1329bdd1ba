//! The adoption window (PostgreSQL): `adopt --apply` holds the legacy
//! tables against writes only while it arms and while it closes; between,
//! the legacy systems' writes are recorded and then absorbed
//! (`points_gateway::store::adopt::window`). This adds:
//!
//! - `gw_adoption.kind = 'opening'`: the openings are written and the
//!   recorded writes are being absorbed (the gateway does not serve yet);
//! - `gw_absorb_queue`: one row per legacy write recorded in the window,
//!   with the transaction that made it (a transaction is absorbed whole),
//!   whose it is (a ts user id or an mjk uuid: a user with writes waiting
//!   keeps being recorded until they are absorbed), what it moved of
//!   `ts_users`' paid and gift columns, and why it was refused if it was.
//!
//! SQLite: nothing (no coexistence there, and so no window).

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DatabaseBackend;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261202_000011_adoption_window"
    }
}

const UP: &str = r#"
ALTER TABLE {s}.gw_adoption DROP CONSTRAINT IF EXISTS gw_adoption_kind_check;
ALTER TABLE {s}.gw_adoption ADD CONSTRAINT gw_adoption_kind_check
  CHECK (kind IN ('fresh', 'adopted', 'opening'));
CREATE TABLE IF NOT EXISTS {s}.gw_absorb_queue (
  seq BIGSERIAL PRIMARY KEY,
  xid XID8 NOT NULL DEFAULT pg_current_xact_id(),
  tbl VARCHAR(16) NOT NULL CHECK (tbl IN ('mjk', 'statement', 'ts_users')),
  row_id BIGINT NULL,
  user_id INTEGER NULL,
  uuid UUID NULL,
  d_paid BIGINT NOT NULL DEFAULT 0,
  d_gift BIGINT NOT NULL DEFAULT 0,
  refused TEXT NULL
);
CREATE INDEX IF NOT EXISTS gw_absorb_queue_xid ON {s}.gw_absorb_queue (xid);
CREATE INDEX IF NOT EXISTS gw_absorb_queue_user ON {s}.gw_absorb_queue (user_id) WHERE refused IS NULL;
CREATE INDEX IF NOT EXISTS gw_absorb_queue_uuid ON {s}.gw_absorb_queue (uuid) WHERE refused IS NULL
"#;

const DOWN: &str = r#"
DROP TABLE IF EXISTS {s}.gw_absorb_queue;
ALTER TABLE {s}.gw_adoption DROP CONSTRAINT IF EXISTS gw_adoption_kind_check;
ALTER TABLE {s}.gw_adoption ADD CONSTRAINT gw_adoption_kind_check
  CHECK (kind IN ('fresh', 'adopted'))
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() == DatabaseBackend::Postgres {
            crate::pg::in_schema(manager, UP).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() == DatabaseBackend::Postgres {
            crate::pg::in_schema(manager, DOWN).await?;
        }
        Ok(())
    }
}
