//! `gw_source_types`: the job types consumes and holds may name
//! (migration 12).

use sea_orm::{ConnectionTrait, Statement};

use super::{Store, StoreError};
use crate::domain::source::{DurationRule, SourceType};

impl Store {
    /// Every configured source type, by name. A row that no longer passes
    /// the domain's checks (edited by hand) is an error, not skipped: a
    /// type that silently vanished would refuse its jobs.
    pub async fn source_types(&self) -> Result<Vec<SourceType>, StoreError> {
        let rows = self
            .conn()
            .query_all_raw(Statement::from_string(
                self.conn().get_database_backend(),
                "SELECT name, label, duration FROM gw_source_types ORDER BY name",
            ))
            .await?;
        rows.into_iter()
            .map(|r| {
                let name: String = r.try_get("", "name")?;
                let label: String = r.try_get("", "label")?;
                let duration: String = r.try_get("", "duration")?;
                let rule = DurationRule::parse(&duration).ok_or_else(|| {
                    StoreError::custom(format!("source type {name}: duration {duration:?}"))
                })?;
                SourceType::new(&name, &label, rule)
                    .map_err(|e| StoreError::custom(format!("source type {name:?}: {e}")))
            })
            .collect()
    }

    /// Adds a source type or changes its label or duration rule. Rows
    /// already written keep their descriptions; new rows get the new label.
    pub async fn set_source_type(&self, t: &SourceType) -> Result<(), StoreError> {
        let db = self.conn();
        db.execute_raw(Statement::from_sql_and_values(
            db.get_database_backend(),
            "INSERT INTO gw_source_types (name, label, duration) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET label = excluded.label, duration = excluded.duration",
            [
                t.as_str().into(),
                t.label().into(),
                t.duration().as_str().into(),
            ],
        ))
        .await?;
        Ok(())
    }
}
