//! Which of this build's migrations a database has: `serve --no-migrate`
//! refuses a schema older than the build needs instead of failing on its
//! first query.

use migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectionTrait, Statement};

use super::{adopt, Store, StoreError};

/// Where the schema stands against this build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaStanding {
    /// This build's migrations the database lacks, in order.
    pub missing: Vec<String>,
    /// Migrations the database has that this build does not know: a newer
    /// build migrated it (a rollout in progress, or a rollback of the
    /// binary). The migrations only add, so this build can still serve.
    pub newer: Vec<String>,
}

impl Store {
    pub async fn schema_standing(&self) -> Result<SchemaStanding, StoreError> {
        let db = self.conn();
        let known: Vec<String> = Migrator::migrations()
            .iter()
            .map(|m| m.name().to_owned())
            .collect();
        let applied: Vec<String> = if adopt::existing_tables(db, &["seaql_migrations"])
            .await?
            .is_empty()
        {
            Vec::new()
        } else {
            db.query_all_raw(Statement::from_string(
                db.get_database_backend(),
                "SELECT version FROM seaql_migrations ORDER BY version",
            ))
            .await?
            .iter()
            .map(|r| r.try_get::<String>("", "version"))
            .collect::<Result<_, _>>()?
        };
        Ok(SchemaStanding {
            missing: known
                .iter()
                .filter(|k| !applied.contains(k))
                .cloned()
                .collect(),
            newer: applied
                .iter()
                .filter(|a| !known.contains(a))
                .cloned()
                .collect(),
        })
    }
}
