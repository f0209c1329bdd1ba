//! Dataloaders: one query per batch of keys, never one per row.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::Loader;
use entity::{fal_account, point_batch, user};
use uuid::Uuid;

use crate::store::read::{fal, ledger, users};
use crate::store::{Store, StoreError};

pub struct UserLoader(pub Store);
pub struct AccountByKeyLoader(pub Store);
/// Per user, the points of batches past their expiry but not swept yet
/// (`User.balance` subtracts them).
pub struct DuePointsLoader(pub Store);
/// Per ledger row, who wrote it (`UsageDetail.writtenBy`).
pub struct WriterLoader(pub Store);
/// Per user, the batches still holding points (`User.batches`).
pub struct LiveBatchesLoader(pub Store);

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

impl Loader<i32> for DuePointsLoader {
    type Value = i64;
    type Error = Arc<StoreError>;

    /// Every key gets a value (0 when nothing is due): the loader's cache
    /// keeps only keys that have one.
    async fn load(&self, keys: &[i32]) -> Result<HashMap<i32, i64>, Arc<StoreError>> {
        let due = users::due_points(&self.0, keys, crate::time::now()).await?;
        Ok(keys
            .iter()
            .map(|k| (*k, due.get(k).copied().unwrap_or(0)))
            .collect())
    }
}

impl Loader<i32> for LiveBatchesLoader {
    type Value = Vec<point_batch::Model>;
    type Error = Arc<StoreError>;

    async fn load(
        &self,
        keys: &[i32],
    ) -> Result<HashMap<i32, Vec<point_batch::Model>>, Arc<StoreError>> {
        // Every key gets a value (empty when no batch holds points).
        let mut by_user: HashMap<i32, Vec<point_batch::Model>> =
            keys.iter().map(|k| (*k, Vec::new())).collect();
        for b in users::live_batches(&self.0, keys, crate::time::now()).await? {
            by_user.entry(b.user_id).or_default().push(b);
        }
        Ok(by_user)
    }
}

impl Loader<i64> for WriterLoader {
    type Value = String;
    type Error = Arc<StoreError>;

    async fn load(&self, keys: &[i64]) -> Result<HashMap<i64, String>, Arc<StoreError>> {
        Ok(ledger::writers(&self.0, keys).await?)
    }
}
