//! The authorization policy, decided in one place before any SQL runs.
//!
//! - `user`: own rows and balance only.
//! - `service`: mutations, and reads of any user (job runners, payments).
//! - `admin`: everything, including fal accounts and the expiry sweep.
//! - `partner`: balance subscriptions (any user); no ledger reads.

use super::Role;

/// The authenticated caller of one request or WebSocket connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub role: Role,
    /// The token's `sub`: rate limits are kept per subject.
    pub subject: String,
    pub user_id: Option<i32>,
    /// `exp` of the token, in seconds since the epoch.
    pub expires_at: i64,
    /// The token's `jti`, by which it can be revoked; `None` for tokens
    /// minted before tokens had ids (only rotating the secret ends those).
    pub token_id: Option<String>,
}

impl Caller {
    /// What per-caller limits count by (rate, sockets, subscriptions): the
    /// token's subject, per role.
    pub fn subject_key(&self) -> String {
        format!("{:?}:{}", self.role, self.subject)
    }
}

impl Caller {
    /// Who this caller is on the rows it writes (`gw_entries.written_by`):
    /// `user:ID` for a user, the token's subject otherwise (`service`,
    /// `service:fal-runner`, `admin`).
    pub fn writer(&self) -> String {
        match self.role {
            Role::User => format!("user:{}", self.subject),
            Role::Service | Role::Admin | Role::Partner => self.subject.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthzError {
    #[error("authentication required: send `Authorization: Bearer <token>`")]
    Unauthenticated,
    #[error("not allowed for role {0:?}")]
    Forbidden(Role),
    #[error("users may only read their own data")]
    ForeignUser,
    #[error("userId is required for this role")]
    UserRequired,
}

impl Caller {
    /// The user whose ledger a read may touch: users get their own (naming
    /// another is refused), services and admins must name one or have one.
    pub fn ledger_scope(&self, requested: Option<i32>) -> Result<i32, AuthzError> {
        match self.role {
            Role::User => match (self.user_id, requested) {
                (Some(own), None) => Ok(own),
                (Some(own), Some(r)) if r == own => Ok(own),
                _ => Err(AuthzError::ForeignUser),
            },
            Role::Service | Role::Admin => {
                requested.or(self.user_id).ok_or(AuthzError::UserRequired)
            }
            Role::Partner => Err(AuthzError::Forbidden(self.role)),
        }
    }

    /// `me`: the caller's own user, if the token names one. Partners read
    /// nothing but their subscriptions, whatever their token's subject.
    pub fn own_user(&self) -> Result<Option<i32>, AuthzError> {
        match self.role {
            Role::User | Role::Service | Role::Admin => Ok(self.user_id),
            Role::Partner => Err(AuthzError::Forbidden(self.role)),
        }
    }

    /// Reading one user's profile and balance.
    pub fn may_read_user(&self, id: i32) -> Result<(), AuthzError> {
        self.ledger_scope(Some(id)).map(|_| ())
    }

    /// consume, refund, recharge, createUser.
    pub fn may_mutate(&self) -> Result<(), AuthzError> {
        match self.role {
            Role::Service | Role::Admin => Ok(()),
            r => Err(AuthzError::Forbidden(r)),
        }
    }

    /// fal accounts, cost reports, the expiry sweep.
    pub fn must_be_admin(&self) -> Result<(), AuthzError> {
        match self.role {
            Role::Admin => Ok(()),
            r => Err(AuthzError::Forbidden(r)),
        }
    }

    /// Balance subscriptions: users follow their own balance; partners and
    /// admins one named user or (`None`) everyone. Services mutate and have
    /// no use for a feed.
    pub fn balance_feed_scope(&self, requested: Option<i32>) -> Result<Option<i32>, AuthzError> {
        match self.role {
            Role::User => self.ledger_scope(requested).map(Some),
            Role::Partner | Role::Admin => Ok(requested),
            Role::Service => Err(AuthzError::Forbidden(self.role)),
        }
    }

    /// fal task listings: admins and services see all, users their own.
    /// Returns the user filter to force, if any.
    pub fn fal_task_scope(&self, requested: Option<i32>) -> Result<Option<i32>, AuthzError> {
        match self.role {
            Role::Admin | Role::Service => Ok(requested),
            Role::User => self.ledger_scope(requested).map(Some),
            Role::Partner => Err(AuthzError::Forbidden(self.role)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(role: Role, user: Option<i32>) -> Caller {
        Caller {
            role,
            subject: "t".into(),
            user_id: user,
            expires_at: 0,
            token_id: None,
        }
    }

    #[test]
    fn users_read_only_their_own_ledger() {
        let u = caller(Role::User, Some(5));
        assert_eq!(u.ledger_scope(None), Ok(5));
        assert_eq!(u.ledger_scope(Some(5)), Ok(5));
        assert_eq!(u.ledger_scope(Some(6)), Err(AuthzError::ForeignUser));
    }

    #[test]
    fn services_name_a_user_and_partners_read_nothing() {
        assert_eq!(caller(Role::Service, None).ledger_scope(Some(9)), Ok(9));
        assert_eq!(
            caller(Role::Admin, None).ledger_scope(None),
            Err(AuthzError::UserRequired)
        );
        assert!(caller(Role::Partner, None).ledger_scope(Some(1)).is_err());
        assert!(caller(Role::Partner, Some(1)).own_user().is_err());
        assert_eq!(caller(Role::User, Some(1)).own_user(), Ok(Some(1)));
    }

    #[test]
    fn balance_feeds_users_own_partners_and_admins_any_or_all() {
        assert_eq!(
            caller(Role::User, Some(4)).balance_feed_scope(None),
            Ok(Some(4))
        );
        assert_eq!(
            caller(Role::User, Some(4)).balance_feed_scope(Some(4)),
            Ok(Some(4))
        );
        assert_eq!(
            caller(Role::User, Some(4)).balance_feed_scope(Some(5)),
            Err(AuthzError::ForeignUser)
        );
        assert_eq!(
            caller(Role::Partner, None).balance_feed_scope(None),
            Ok(None)
        );
        assert_eq!(
            caller(Role::Admin, None).balance_feed_scope(Some(5)),
            Ok(Some(5))
        );
        assert!(caller(Role::Service, None)
            .balance_feed_scope(Some(5))
            .is_err());
    }

    #[test]
    fn only_services_and_admins_mutate() {
        assert!(caller(Role::Service, None).may_mutate().is_ok());
        assert!(caller(Role::Admin, None).may_mutate().is_ok());
        assert!(caller(Role::User, Some(1)).may_mutate().is_err());
        assert!(caller(Role::Partner, None).may_mutate().is_err());
        assert!(caller(Role::Service, None).must_be_admin().is_err());
    }
}
