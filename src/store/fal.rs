//! Writing fal accounts and tasks: the ts platform's tables, written by the
//! gateway only when it seeds demo data.

use entity::{fal_account, fal_task};
use sea_orm::{EntityTrait, PaginatorTrait};

use super::{Store, StoreError, WriteTx};

pub async fn insert_account(
    store: &Store,
    account: fal_account::ActiveModel,
) -> Result<(), StoreError> {
    fal_account::Entity::insert(account)
        .exec(store.conn())
        .await?;
    Ok(())
}

pub async fn task_count(store: &Store) -> Result<u64, StoreError> {
    Ok(fal_task::Entity::find().count(store.conn()).await?)
}

impl WriteTx {
    /// Inserts tasks in the same transaction as the ledger rows of their
    /// jobs (a refund of a fal job flags its task, which must exist).
    pub async fn insert_fal_tasks(
        &mut self,
        tasks: Vec<fal_task::ActiveModel>,
    ) -> Result<(), StoreError> {
        if tasks.is_empty() {
            return Ok(());
        }
        fal_task::Entity::insert_many(tasks)
            .exec(self.txn())
            .await?;
        Ok(())
    }
}
