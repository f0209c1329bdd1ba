//! The cost report scans a window of fal tasks and aggregates a handful of
//! narrow columns; this index covers them, so the scan never touches the
//! wide rows (JSON params). Measured on 1,000,000 tasks, PostgreSQL 15:
//! the report's grouped statement went from 690 ms (parallel seq scan) to
//! an index-only scan.

use sea_orm_migration::prelude::*;

pub(crate) const INDEX: &str =
    "CREATE INDEX IF NOT EXISTS ix_fal_tasks_cost_cover ON ts_fal_tasks \
     (created_at, api_key, app_name, status, money, cost_money, is_refund)";

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261122_000003_fal_cost_cover"
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
            .execute_unprepared("DROP INDEX IF EXISTS ix_fal_tasks_cost_cover")
            .await?;
        Ok(())
    }
}
