//! Creating users: idempotent on the uuid (and on the id, when the ts
//! platform's id is given).

use entity::user;
use uuid::Uuid;

use super::CreateUserError;
use crate::domain::input::{PlatformUserId, UserName, UserUuid};
use crate::store::users::Inserted;
use crate::store::Store;

#[derive(Debug, Clone)]
pub struct CreateUser {
    pub name: UserName,
    pub uuid: Option<UserUuid>,
    /// A ts platform user registered after adoption keeps the platform's id.
    pub id: Option<PlatformUserId>,
}

/// Creates a user with a zero balance. Creating the same uuid with the same
/// name again returns the existing user, so services may retry safely.
/// With a ts platform id, the same id (with the same name, and uuid when
/// given) returns the existing user.
pub async fn create_user(store: &Store, req: &CreateUser) -> Result<user::Model, CreateUserError> {
    if req.id.is_some() && !crate::store::users::adopted(store).await? {
        return Err(CreateUserError::NotAdopted);
    }
    let uuid = req.uuid.map_or_else(Uuid::new_v4, UserUuid::get);
    let id = req.id.map(PlatformUserId::get);
    match crate::store::users::insert(store, id, uuid, req.name.as_str(), crate::time::now())
        .await?
    {
        Inserted::New(u) => Ok(u),
        Inserted::Existing(u) => {
            let same = u.name == req.name.as_str()
                && id.is_none_or(|i| i == u.id)
                && (req.uuid.is_none_or(|g| g.get() == u.uuid));
            match (same, id) {
                (true, _) => Ok(u),
                (false, Some(i)) => Err(CreateUserError::IdTaken(i)),
                (false, None) => Err(CreateUserError::IdempotencyConflict(uuid)),
            }
        }
    }
}
