//! One error enum per operation (their public codes: `crate::errors`).

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    #[error("user {0} does not exist")]
    UserNotFound(i32),
    #[error("insufficient balance: {available} points available, {requested} requested")]
    InsufficientBalance { available: i64, requested: i64 },
    #[error("source {0} was already consumed by a different request")]
    IdempotencyConflict(String),
    #[error("database error")]
    Internal(#[from] StoreError),
}

#[derive(Debug, thiserror::Error)]
pub enum RefundError {
    #[error("no consume found for source {0}")]
    ConsumeNotFound(String),
    #[error("refund key {0} was already used by a different request")]
    IdempotencyConflict(String),
    #[error("refund of {requested} points exceeds the {refundable} points still refundable")]
    ExceedsConsumed { refundable: i64, requested: i64 },
    #[error("the refund would take the balance past the maximum of {max} points")]
    BalanceLimit { max: i64 },
    #[error("database error")]
    Internal(#[from] StoreError),
}

#[derive(Debug, thiserror::Error)]
pub enum RechargeError {
    #[error("user {0} does not exist")]
    UserNotFound(i32),
    #[error("order {0} was already recharged by a different request")]
    IdempotencyConflict(String),
    #[error("balance would exceed the maximum of {max} points")]
    BalanceLimit { max: i64 },
    #[error("database error")]
    Internal(#[from] StoreError),
}

#[derive(Debug, thiserror::Error)]
pub enum CreateUserError {
    #[error("a user with uuid {0} already exists with a different name")]
    IdempotencyConflict(uuid::Uuid),
    #[error("user {0} already exists with a different uuid or name")]
    IdTaken(i32),
    #[error("ids are the gateway's to choose on a database it made; a ts platform id is accepted once the platform's database was adopted")]
    NotAdopted,
    #[error("database error")]
    Internal(#[from] StoreError),
}

#[derive(Debug, thiserror::Error)]
pub enum ExpireError {
    #[error("database error")]
    Internal(#[from] StoreError),
}

#[derive(Debug, thiserror::Error)]
pub enum HoldError {
    #[error("user {0} does not exist")]
    UserNotFound(i32),
    #[error("insufficient balance: {available} points available, {requested} requested")]
    InsufficientBalance { available: i64, requested: i64 },
    #[error("source {0} already has a hold or a consume from a different request")]
    IdempotencyConflict(String),
    #[error("database error")]
    Internal(#[from] StoreError),
}

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("no hold found for source {0}")]
    HoldNotFound(String),
    #[error("the hold of source {key} was already {status}")]
    Settled { key: String, status: &'static str },
    #[error("capture of {requested} points exceeds the {held} points held")]
    ExceedsHold { held: i64, requested: i64 },
    #[error("the hold of source {0} was already captured by a different request")]
    IdempotencyConflict(String),
    #[error("database error")]
    Internal(#[from] StoreError),
}

#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("no hold found for source {0}")]
    HoldNotFound(String),
    #[error("the hold of source {key} was already {status}")]
    Settled { key: String, status: &'static str },
    #[error("the hold of source {0} was already released by a different request")]
    IdempotencyConflict(String),
    #[error("database error")]
    Internal(#[from] StoreError),
}
