//! Dataloaders: one query per batch of keys, never one per row.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::Loader;
use entity::{fal_account, user};
use uuid::Uuid;

use crate::store::read::{fal, users};
use crate::store::{Store, StoreError};

pub struct UserLoader(pub Store);
pub struct AccountByKeyLoader(pub Store);

impl Loader<i32> for UserLoader {
    type Value = user::Model;
    type Error = Arc<StoreError>;

    async fn load(&self, keys: &[i32]) -> Result<HashMap<i32, user::Model>, Arc<StoreError>> {
        let rows = users::by_ids(&self.0, keys).await?;
        Ok(rows.into_iter().map(|u| (u.id, u)).collect())
    }
}

impl Loader<Uuid> for UserLoader {
    type Value = user::Model;
    type Error = Arc<StoreError>;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, user::Model>, Arc<StoreError>> {
        let rows = users::by_uuids(&self.0, keys).await?;
        Ok(rows.into_iter().map(|u| (u.uuid, u)).collect())
    }
}

impl Loader<String> for AccountByKeyLoader {
    type Value = fal_account::Model;
    type Error = Arc<StoreError>;

    async fn load(
        &self,
        keys: &[String],
    ) -> Result<HashMap<String, fal_account::Model>, Arc<StoreError>> {
        let rows = fal::accounts_by_key(&self.0, keys).await?;
        Ok(rows.into_iter().map(|a| (a.api_key.clone(), a)).collect())
    }
}
