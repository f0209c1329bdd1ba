//! Creating users: idempotent on the uuid.

use entity::user;
use sea_orm::{
    ActiveModelTrait, ActiveValue::NotSet, ColumnTrait, DatabaseConnection, EntityTrait,
    QueryFilter, Set,
};
use uuid::Uuid;

use super::CreateUserError;
use crate::db::is_unique_violation;
use crate::domain::input::UserName;

#[derive(Debug, Clone)]
pub struct CreateUser {
    pub name: UserName,
    pub uuid: Option<Uuid>,
}

/// Creates a user with a zero balance. Creating the same uuid with the same
/// name again returns the existing user, so services may retry safely.
pub async fn create_user(
    db: &DatabaseConnection,
    req: &CreateUser,
) -> Result<user::Model, CreateUserError> {
    let uuid = req.uuid.unwrap_or_else(Uuid::new_v4);
    let now = crate::time::now();
    let inserted = user::ActiveModel {
        id: NotSet,
        uuid: Set(uuid),
        name: Set(req.name.as_str().to_owned()),
        balance: Set(0),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(db)
    .await;
    match inserted {
        Ok(u) => Ok(u),
        Err(e) if is_unique_violation(&e) => {
            let existing = user::Entity::find()
                .filter(user::Column::Uuid.eq(uuid))
                .one(db)
                .await?
                .ok_or(CreateUserError::Internal(e))?;
            if existing.name == req.name.as_str() {
                Ok(existing)
            } else {
                Err(CreateUserError::IdempotencyConflict(uuid))
            }
        }
        Err(e) => Err(e.into()),
    }
}
