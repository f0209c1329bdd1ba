//! One error enum per operation; each variant knows its public code.

use sea_orm::DbErr;

use crate::domain::code::{Code, Coded};

#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    #[error("user {0} does not exist")]
    UserNotFound(i32),
    #[error("insufficient balance: {available} points available, {requested} requested")]
    InsufficientBalance { available: i64, requested: i64 },
    #[error("source {0} was already consumed by a different request")]
    IdempotencyConflict(String),
    #[error("database error")]
    Internal(#[from] DbErr),
}

impl Coded for ConsumeError {
    fn code(&self) -> Code {
        match self {
            ConsumeError::UserNotFound(_) => Code::UserNotFound,
            ConsumeError::InsufficientBalance { .. } => Code::InsufficientBalance,
            ConsumeError::IdempotencyConflict(_) => Code::IdempotencyConflict,
            ConsumeError::Internal(_) => Code::Internal,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RefundError {
    #[error("no consume found for source {0}")]
    ConsumeNotFound(String),
    #[error("refund key {0} was already used by a different request")]
    IdempotencyConflict(String),
    #[error("refund of {requested} points exceeds the {refundable} points still refundable")]
    ExceedsConsumed { refundable: i64, requested: i64 },
    #[error("database error")]
    Internal(#[from] DbErr),
}

impl Coded for RefundError {
    fn code(&self) -> Code {
        match self {
            RefundError::ConsumeNotFound(_) => Code::NotFound,
            RefundError::IdempotencyConflict(_) => Code::IdempotencyConflict,
            RefundError::ExceedsConsumed { .. } => Code::RefundExceedsConsumed,
            RefundError::Internal(_) => Code::Internal,
        }
    }
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
    Internal(#[from] DbErr),
}

impl Coded for RechargeError {
    fn code(&self) -> Code {
        match self {
            RechargeError::UserNotFound(_) => Code::UserNotFound,
            RechargeError::IdempotencyConflict(_) => Code::IdempotencyConflict,
            RechargeError::BalanceLimit { .. } => Code::InvalidInput,
            RechargeError::Internal(_) => Code::Internal,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CreateUserError {
    #[error("a user with uuid {0} already exists with a different name")]
    IdempotencyConflict(uuid::Uuid),
    #[error("database error")]
    Internal(#[from] DbErr),
}

impl Coded for CreateUserError {
    fn code(&self) -> Code {
        match self {
            CreateUserError::IdempotencyConflict(_) => Code::IdempotencyConflict,
            CreateUserError::Internal(_) => Code::Internal,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExpireError {
    #[error("database error")]
    Internal(#[from] DbErr),
}

impl Coded for ExpireError {
    fn code(&self) -> Code {
        Code::Internal
    }
}
