//! The cost report joins fal tasks to their refund rows by task id.

use sea_orm_migration::prelude::*;

pub(crate) const INDEX: &str =
    "CREATE INDEX IF NOT EXISTS ix_ledger_fal_refunds ON mjk_point_transactions (source_id) \
     WHERE type = 'refund' AND source_type = 'fal'";

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261122_000002_fal_refund_index"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared(INDEX).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP INDEX IF EXISTS ix_ledger_fal_refunds")
            .await?;
        Ok(())
    }
}
