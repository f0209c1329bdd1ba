//! Schema migrations for the points gateway.
//!
//! The five tables from the seed documents keep their exact names, columns
//! and types (an existing platform reads and writes them); everything the
//! gateway adds lives in `gw_*` tables of its own. Everything here must behave identically on
//! SQLite and PostgreSQL, so only portable types, CHECKs and partial indexes
//! (supported by both engines) are used.

pub use sea_orm_migration::prelude::*;

mod m20261122_000001_initial;
mod m20261122_000002_fal_refund_index;
mod m20261122_000003_fal_cost_cover;
mod m20261122_000004_ledger_notify;
mod m20261126_000005_holds;
mod m20261126_000006_event_log;
mod m20261126_000007_consume_call;
mod m20261202_000008_key_claim;
mod m20261202_000009_batch_funds;
mod m20261202_000010_absorb;
mod m20261202_000011_adoption_window;
mod m20261203_000012_callers;
mod m20261203_000013_revoked_tokens;
mod m20261203_000014_fal_billing;
mod m20261203_000015_lean_consume;
mod pg;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261122_000001_initial::Migration),
            Box::new(m20261122_000002_fal_refund_index::Migration),
            Box::new(m20261122_000003_fal_cost_cover::Migration),
            Box::new(m20261122_000004_ledger_notify::Migration),
            Box::new(m20261126_000005_holds::Migration),
            Box::new(m20261126_000006_event_log::Migration),
            Box::new(m20261126_000007_consume_call::Migration),
            Box::new(m20261202_000008_key_claim::Migration),
            Box::new(m20261202_000009_batch_funds::Migration),
            Box::new(m20261202_000010_absorb::Migration),
            Box::new(m20261202_000011_adoption_window::Migration),
            Box::new(m20261203_000012_callers::Migration),
            Box::new(m20261203_000013_revoked_tokens::Migration),
            Box::new(m20261203_000014_fal_billing::Migration),
            Box::new(m20261203_000015_lean_consume::Migration),
        ]
    }
}

pub use m20261203_000012_callers::DEFAULT_SOURCE_TYPES;

/// PostgreSQL: the expression that claims a job key (`source_type`,
/// `source_id` given as SQL expressions) until the transaction ends. Every
/// consume and hold takes it before looking the key up, so one key has one
/// owner across both tables (migration 8). A 64-bit hash: two keys that
/// collide only wait for each other.
pub fn key_claim_sql(source_type: &str, source_id: &str) -> String {
    format!(
        "pg_advisory_xact_lock(hashtextextended({source_type} || chr(31) || {source_id}, 7013))"
    )
}

/// The statements (`CREATE INDEX IF NOT EXISTS …`) of the non-unique
/// indexes the migrations add to the seed tables: `adopt` builds them
/// concurrently before it locks anything, so the migrations find them.
pub fn seed_index_statements() -> Vec<&'static str> {
    m20261122_000001_initial::SEED_INDEXES
        .iter()
        .copied()
        .chain([
            m20261122_000002_fal_refund_index::INDEX,
            m20261122_000003_fal_cost_cover::INDEX,
            m20261203_000014_fal_billing::INDEX,
        ])
        .collect()
}

/// The names of the (non-unique) indexes the migrations add to the seed
/// tables, read from their own statements, for `adopt`'s report.
pub fn seed_index_names() -> Vec<&'static str> {
    seed_index_statements()
        .into_iter()
        .filter_map(|sql| {
            sql.strip_prefix("CREATE INDEX IF NOT EXISTS ")?
                .split_whitespace()
                .next()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_seed_index_is_named() {
        let names = super::seed_index_names();
        assert_eq!(names.len(), 10, "{names:?}");
        assert!(names.contains(&"ix_ledger_source") && names.contains(&"ix_fal_tasks_cost_cover"));
    }
}
