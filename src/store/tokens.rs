//! `gw_revoked_tokens` (migration 13): the revoked token ids every
//! instance refuses.

use std::collections::HashSet;

use sea_orm::{ConnectionTrait, Statement};

use super::{Store, StoreError};

impl Store {
    /// Records a revocation; `false` when the id was revoked already.
    /// Rows of tokens expired a day ago are pruned on the way.
    pub async fn revoke_token(
        &self,
        id: &str,
        expires_at: i64,
        revoked_by: &str,
    ) -> Result<bool, StoreError> {
        let db = self.conn();
        let backend = db.get_database_backend();
        let now = chrono::Utc::now().timestamp();
        db.execute_raw(Statement::from_sql_and_values(
            backend,
            "DELETE FROM gw_revoked_tokens WHERE expires_at < $1",
            [(now - 86_400).into()],
        ))
        .await?;
        let r = db
            .execute_raw(Statement::from_sql_and_values(
                backend,
                "INSERT INTO gw_revoked_tokens (id, expires_at, revoked_at, revoked_by) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING",
                [id.into(), expires_at.into(), now.into(), revoked_by.into()],
            ))
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// The ids of revoked tokens that have not expired yet.
    pub async fn revoked_token_ids(&self) -> Result<HashSet<String>, StoreError> {
        let db = self.conn();
        let rows = db
            .query_all_raw(Statement::from_sql_and_values(
                db.get_database_backend(),
                "SELECT id FROM gw_revoked_tokens WHERE expires_at >= $1",
                [chrono::Utc::now().timestamp().into()],
            ))
            .await?;
        rows.into_iter()
            .map(|r| Ok(r.try_get::<String>("", "id")?))
            .collect()
    }
}
