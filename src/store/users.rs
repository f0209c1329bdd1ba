//! Writing users (the gateway's identities and cached balances).

use chrono::{DateTime, Utc};
use entity::user;
use sea_orm::{ActiveModelTrait, ActiveValue::NotSet, ColumnTrait, EntityTrait, QueryFilter, Set};
use uuid::Uuid;

use super::{Store, StoreError};

/// What [`insert`] found.
#[derive(Debug, Clone)]
pub enum Inserted {
    New(user::Model),
    /// A user with this uuid already existed (as it is now).
    Existing(user::Model),
}

/// Inserts a user with a zero balance, or returns the one that holds the
/// uuid already (the unique index decides a race).
pub async fn insert(
    store: &Store,
    uuid: Uuid,
    name: &str,
    now: DateTime<Utc>,
) -> Result<Inserted, StoreError> {
    let inserted = user::ActiveModel {
        id: NotSet,
        uuid: Set(uuid),
        name: Set(name.to_owned()),
        balance: Set(0),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(store.conn())
    .await;
    match inserted {
        Ok(u) => Ok(Inserted::New(u)),
        Err(e) => {
            let e = StoreError::from(e);
            if !e.is_unique_violation() {
                return Err(e);
            }
            user::Entity::find()
                .filter(user::Column::Uuid.eq(uuid))
                .one(store.conn())
                .await?
                .map(Inserted::Existing)
                .ok_or(e)
        }
    }
}
