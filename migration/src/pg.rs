//! PostgreSQL-only pieces the migrations share.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{DatabaseBackend, Statement};

/// Runs `sql` with `{s}` replaced by the current schema, quoted: functions
/// that name every table with it work whatever the caller's `search_path`
/// (the legacy applications' roles, the gateway's sessions).
pub async fn in_schema(manager: &SchemaManager<'_>, sql: &str) -> Result<(), DbErr> {
    let db = manager.get_connection();
    let schema: String = db
        .query_one_raw(Statement::from_string(
            DatabaseBackend::Postgres,
            "SELECT current_schema() AS s",
        ))
        .await?
        .ok_or_else(|| DbErr::Migration("no current schema".into()))?
        .try_get("", "s")?;
    let quoted = format!("\"{}\"", schema.replace('"', "\"\""));
    db.execute_unprepared(&sql.replace("{s}", &quoted)).await?;
    Ok(())
}
