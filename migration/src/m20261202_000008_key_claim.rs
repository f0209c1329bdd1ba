//! One owner per job key: `gw_consume` claims the key before it looks.
//!
//! A job key `(source_type, source_id)` belongs to one consume or one hold
//! (of one user). The two live in different tables, and each checks the
//! other's under its own user's lock, so `hold(A, K)` and `consume(B, K)`
//! at the same moment both saw nothing and both committed. Now every
//! consume and hold first takes a transaction-scoped advisory lock on the
//! key ([`crate::key_claim_sql`]), before any lookup: the second waits for
//! the first's commit, and its lookups (fresh snapshots after the wait)
//! see the first's row. This migration replaces `gw_consume` with the same
//! function plus that claim as its first statement; the general path
//! issues the claim itself (`src/store/ledger.rs`). Nothing on SQLite: its
//! write transactions already run one at a time.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DatabaseBackend;

use crate::m20261126_000007_consume_call::FUNCTION;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261202_000008_key_claim"
    }
}

/// Where the claim goes: the function's first statement.
const FIRST: &str = "  o_outcome := 'other';\n";

/// `gw_consume` with the key claimed first.
pub(crate) fn claiming() -> Result<String, DbErr> {
    if !FUNCTION.contains(FIRST) {
        return Err(DbErr::Migration(
            "gw_consume changed shape: no place for the key claim".into(),
        ));
    }
    let claim = format!(
        "  PERFORM {};\n",
        crate::key_claim_sql("p_source_type", "p_source_id")
    );
    Ok(FUNCTION.replacen(FIRST, &format!("{claim}{FIRST}"), 1))
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() == DatabaseBackend::Postgres {
            crate::pg::in_schema(manager, &claiming()?).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() == DatabaseBackend::Postgres {
            crate::pg::in_schema(manager, FUNCTION).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_claim_is_the_functions_first_statement() {
        let f = super::claiming().expect("the function has its first statement");
        let claim = f.find("pg_advisory_xact_lock").expect("claimed");
        let lock = f.find("FOR UPDATE").expect("user lock");
        let lookup = f.find("gw_holds").expect("hold lookup");
        assert!(claim < lock && claim < lookup);
    }
}
