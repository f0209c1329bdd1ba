//! `gw_source_types`: the job types consumes and holds may name
//! (migration 12), as stored; the catalog (`crate::catalog`) checks them
//! into the domain's `SourceType`.

use sea_orm::{ConnectionTrait, Statement};

use super::{Store, StoreError};

/// One row of `gw_source_types`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceTypeRow {
    pub name: String,
    pub label: String,
    /// `required`, `optional` or `refused` (a CHECK keeps it so).
    pub duration: String,
}

impl Store {
    /// Every configured source type, by name.
    pub async fn source_type_rows(&self) -> Result<Vec<SourceTypeRow>, StoreError> {
        let rows = self
            .conn()
            .query_all_raw(Statement::from_string(
                self.conn().get_database_backend(),
                "SELECT name, label, duration FROM gw_source_types ORDER BY name",
            ))
            .await?;
        rows.into_iter()
            .map(|r| {
                Ok(SourceTypeRow {
                    name: r.try_get("", "name")?,
                    label: r.try_get("", "label")?,
                    duration: r.try_get("", "duration")?,
                })
            })
            .collect()
    }

    /// Adds a source type or changes its label or duration rule. Rows
    /// already written keep their descriptions; new rows get the new label.
    pub async fn set_source_type_row(&self, row: &SourceTypeRow) -> Result<(), StoreError> {
        let db = self.conn();
        db.execute_raw(Statement::from_sql_and_values(
            db.get_database_backend(),
            "INSERT INTO gw_source_types (name, label, duration) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET label = excluded.label, duration = excluded.duration",
            [
                row.name.clone().into(),
                row.label.clone().into(),
                row.duration.clone().into(),
            ],
        ))
        .await?;
        Ok(())
    }
}
