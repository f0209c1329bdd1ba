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

/// Whether the platforms' database was adopted (not made by the gateway).
pub async fn adopted(store: &Store) -> Result<bool, StoreError> {
    Ok(super::adopt::adoption_row(store.conn())
        .await?
        .is_some_and(|a| a.adopted()))
}

/// Inserts a user with a zero balance (with `id`, or the next id), or
/// returns the one that holds the id or uuid already (the unique indexes
/// decide a race).
pub async fn insert(
    store: &Store,
    id: Option<i32>,
    uuid: Uuid,
    name: &str,
    now: DateTime<Utc>,
) -> Result<Inserted, StoreError> {
    let inserted = user::ActiveModel {
        id: match id {
            Some(i) => Set(i),
            None => NotSet,
        },
        uuid: Set(uuid),
        name: Set(name.to_owned()),
        balance: Set(0),
        held: Set(0),
        hold_seq: Set(0),
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
            let holder = match id {
                Some(i) => sea_orm::Condition::any()
                    .add(user::Column::Id.eq(i))
                    .add(user::Column::Uuid.eq(uuid)),
                None => sea_orm::Condition::all().add(user::Column::Uuid.eq(uuid)),
            };
            user::Entity::find()
                .filter(holder)
                .one(store.conn())
                .await?
                .map(Inserted::Existing)
                .ok_or(e)
        }
    }
}
