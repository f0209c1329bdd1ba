//! Creating users: idempotent on the uuid.

use entity::user;
use uuid::Uuid;

use super::CreateUserError;
use crate::domain::input::UserName;
use crate::store::users::Inserted;
use crate::store::Store;

#[derive(Debug, Clone)]
pub struct CreateUser {
    pub name: UserName,
    pub uuid: Option<Uuid>,
}

/// Creates a user with a zero balance. Creating the same uuid with the same
/// name again returns the existing user, so services may retry safely.
pub async fn create_user(store: &Store, req: &CreateUser) -> Result<user::Model, CreateUserError> {
    let uuid = req.uuid.unwrap_or_else(Uuid::new_v4);
    match crate::store::users::insert(store, uuid, req.name.as_str(), crate::time::now()).await? {
        Inserted::New(u) => Ok(u),
        Inserted::Existing(u) if u.name == req.name.as_str() => Ok(u),
        Inserted::Existing(_) => Err(CreateUserError::IdempotencyConflict(uuid)),
    }
}
