//! Stable error codes shared by every operation; clients match on these.

/// The `extensions.code` values of DESIGN.md section 4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    InsufficientBalance,
    UserNotFound,
    NotFound,
    IdempotencyConflict,
    RefundExceedsConsumed,
    InvalidInput,
    Unauthenticated,
    Forbidden,
    LimitExceeded,
    UpstreamError,
    Internal,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::InsufficientBalance => "INSUFFICIENT_BALANCE",
            Code::UserNotFound => "USER_NOT_FOUND",
            Code::NotFound => "NOT_FOUND",
            Code::IdempotencyConflict => "IDEMPOTENCY_CONFLICT",
            Code::RefundExceedsConsumed => "REFUND_EXCEEDS_CONSUMED",
            Code::InvalidInput => "INVALID_INPUT",
            Code::Unauthenticated => "UNAUTHENTICATED",
            Code::Forbidden => "FORBIDDEN",
            Code::LimitExceeded => "LIMIT_EXCEEDED",
            Code::UpstreamError => "UPSTREAM_ERROR",
            Code::Internal => "INTERNAL",
        }
    }
}

/// An error that knows its public code. The transport maps any `Coded`
/// error once; `Internal` errors are logged there and returned opaque.
pub trait Coded: std::error::Error {
    fn code(&self) -> Code;
}
