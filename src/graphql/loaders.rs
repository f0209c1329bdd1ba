//! Dataloaders: one query per batch of keys, never one per row.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::Loader;
use entity::{fal_account, user};
use sea_orm::{ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter};
use uuid::Uuid;

pub struct UserLoader(pub DatabaseConnection);
pub struct AccountByKeyLoader(pub DatabaseConnection);

impl Loader<i32> for UserLoader {
    type Value = user::Model;
    type Error = Arc<DbErr>;

    async fn load(&self, keys: &[i32]) -> Result<HashMap<i32, user::Model>, Arc<DbErr>> {
        let rows = user::Entity::find()
            .filter(user::Column::Id.is_in(keys.iter().copied()))
            .all(&self.0)
            .await?;
        Ok(rows.into_iter().map(|u| (u.id, u)).collect())
    }
}

impl Loader<Uuid> for UserLoader {
    type Value = user::Model;
    type Error = Arc<DbErr>;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, user::Model>, Arc<DbErr>> {
        let rows = user::Entity::find()
            .filter(user::Column::Uuid.is_in(keys.iter().copied()))
            .all(&self.0)
            .await?;
        Ok(rows.into_iter().map(|u| (u.uuid, u)).collect())
    }
}

impl Loader<String> for AccountByKeyLoader {
    type Value = fal_account::Model;
    type Error = Arc<DbErr>;

    async fn load(
        &self,
        keys: &[String],
    ) -> Result<HashMap<String, fal_account::Model>, Arc<DbErr>> {
        let rows = fal_account::Entity::find()
            .filter(fal_account::Column::ApiKey.is_in(keys.iter().cloned()))
            .all(&self.0)
            .await?;
        Ok(rows.into_iter().map(|a| (a.api_key.clone(), a)).collect())
    }
}
