//! The store's one error type, and the one place where database failures
//! are classified.

use sea_orm::{DbErr, SqlErr};

/// A database failure. Opaque to callers except for what the ledger acts
/// on: whether a unique index refused a row (another request with the same
/// idempotency key committed first).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct StoreError(#[from] DbErr);

impl StoreError {
    /// A failure the store detected itself (bad data, unsupported setup).
    pub fn custom(message: impl Into<String>) -> StoreError {
        StoreError(DbErr::Custom(message.into()))
    }

    pub(crate) fn unsupported(message: String) -> StoreError {
        StoreError(DbErr::Custom(message))
    }

    /// The database holds the platforms' tables but was never adopted.
    pub(crate) fn unadopted(message: String) -> StoreError {
        StoreError(DbErr::Custom(message))
    }

    /// PostgreSQL gave up waiting for a lock (`lock_timeout`, SQLSTATE
    /// 55P03). Read from the message: sea-orm classifies only constraint
    /// violations, and the driver's code is not reachable through it
    /// without depending on sqlx here.
    pub(crate) fn is_lock_timeout(e: &DbErr) -> bool {
        e.to_string().contains("lock timeout")
    }

    /// A unique index refused the row: the idempotency race was lost.
    pub fn is_unique_violation(&self) -> bool {
        matches!(self.0.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
    }
}
