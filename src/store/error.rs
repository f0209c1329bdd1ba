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

    /// The database did not answer: no connection could be had in time,
    /// the connection broke, or the server is shutting down, starting up
    /// or refusing connections (SQLSTATE classes 08 and 57P, and 53300).
    /// Such a failure is worth retrying with the same key; any other is
    /// not the database's absence.
    pub fn is_unavailable(&self) -> bool {
        use sea_orm::RuntimeErr;
        match &self.0 {
            DbErr::ConnectionAcquire(_) => true,
            DbErr::Conn(RuntimeErr::SqlxError(e))
            | DbErr::Exec(RuntimeErr::SqlxError(e))
            | DbErr::Query(RuntimeErr::SqlxError(e)) => match e.as_ref() {
                sea_orm::sqlx::Error::Io(_)
                | sea_orm::sqlx::Error::PoolTimedOut
                | sea_orm::sqlx::Error::PoolClosed
                | sea_orm::sqlx::Error::WorkerCrashed => true,
                sea_orm::sqlx::Error::Database(d) => d
                    .code()
                    .is_some_and(|c| c.starts_with("08") || c.starts_with("57P") || c == "53300"),
                _ => false,
            },
            _ => false,
        }
    }

    /// A unique index refused the row: the idempotency race was lost.
    pub fn is_unique_violation(&self) -> bool {
        matches!(self.0.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
    }
}
