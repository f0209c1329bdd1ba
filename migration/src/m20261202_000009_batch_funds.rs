//! Paid and gift points stay apart: every batch says whose money it holds.
//!
//! The ts platform keeps a user's paid points (`ts_users.money`) and gift
//! points (`gift_money`) apart, and its pages show both (充值积分 /
//! 赠送积分). `gw_point_batches.funds` is `paid` or `gift`: a paid recharge
//! is paid, a gift is gift, an opening balance is split into a gift batch
//! and a paid batch as `ts_users` held them. Batches written before this
//! migration are `paid` unless their kind is `gift`.
//!
//! `gw_adoption.ts_columns` records the `ts_users` balance columns an
//! adoption keeps in step with the batches (`PAID,GIFT`; NULL: none).

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DatabaseBackend;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261202_000009_batch_funds"
    }
}

const ADD_SQLITE: &str = "ALTER TABLE gw_point_batches ADD COLUMN funds VARCHAR(8) NOT NULL \
     DEFAULT 'paid' CHECK (funds IN ('paid', 'gift'))";
const ADD_POSTGRES: &str = "ALTER TABLE gw_point_batches ADD COLUMN funds VARCHAR(8) NOT NULL \
     DEFAULT 'paid', ADD CONSTRAINT ck_batches_funds CHECK (funds IN ('paid', 'gift'))";
const BACKFILL: &str = "UPDATE gw_point_batches SET funds = 'gift' WHERE kind = 'gift'";
const ADOPTION: &str = "ALTER TABLE gw_adoption ADD COLUMN ts_columns VARCHAR(200) NULL";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let add = match manager.get_database_backend() {
            DatabaseBackend::Postgres => ADD_POSTGRES,
            _ => ADD_SQLITE,
        };
        db.execute_unprepared(add).await?;
        db.execute_unprepared(BACKFILL).await?;
        db.execute_unprepared(ADOPTION).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared("ALTER TABLE gw_adoption DROP COLUMN ts_columns")
            .await?;
        db.execute_unprepared("ALTER TABLE gw_point_batches DROP COLUMN funds")
            .await?;
        Ok(())
    }
}
