//! The error policy, in one file: which `extensions.code` every failure
//! gets, and how an error becomes a GraphQL error.
//!
//! - Each operation has its own error enum (the domain's, the store's,
//!   authentication's, fal's, the transport's); the `impl Coded` blocks
//!   below are the only place where a variant is given a [`Code`], each an
//!   exhaustive `match`, so a new variant does not compile until it has one.
//! - `INTERNAL` errors are logged here with their cause chain and answered
//!   opaquely: no SQL, no secrets, no stack.
//! - Errors async-graphql raises itself carry no code. Every limit that
//!   needs `LIMIT_EXCEEDED` is checked by the gateway before async-graphql
//!   sees the document (`graphql::limits`), and every error the
//!   gateway's own code raises has a code, so what is left without one is,
//!   by kind, async-graphql's verdict on the client's document or input
//!   (syntax, validation, variable and argument coercion): `INVALID_INPUT`.
//!   No message text is inspected.

use std::time::Duration;

use async_graphql::{ErrorExtensions, ServerError};

use crate::auth::{AuthError, AuthzError};
use crate::catalog::CatalogError;
use crate::domain::input::InputError;
use crate::domain::ledger::{
    CaptureError, ConsumeError, CreateUserError, ExpireError, HoldError, RechargeError,
    RefundError, ReleaseError,
};
use crate::fal::FalError;
use crate::store::read::CursorError;
use crate::store::StoreError;

/// The `extensions.code` values of DESIGN.md section 4; clients match on
/// these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    InsufficientBalance,
    UserNotFound,
    NotFound,
    IdempotencyConflict,
    RefundExceedsConsumed,
    /// A capture or release of a hold that was settled otherwise already.
    HoldSettled,
    InvalidInput,
    Unauthenticated,
    Forbidden,
    LimitExceeded,
    UpstreamError,
    /// The database does not answer (stopped, failing over, unreachable):
    /// nothing was committed, or it was and a retry with the same key
    /// replays it. HTTP 503 with `Retry-After`.
    Unavailable,
    Internal,
}

impl Code {
    pub const ALL: [Code; 13] = [
        Code::InsufficientBalance,
        Code::UserNotFound,
        Code::NotFound,
        Code::IdempotencyConflict,
        Code::RefundExceedsConsumed,
        Code::HoldSettled,
        Code::InvalidInput,
        Code::Unauthenticated,
        Code::Forbidden,
        Code::LimitExceeded,
        Code::UpstreamError,
        Code::Unavailable,
        Code::Internal,
    ];

    /// The code a stable string names.
    pub fn parse(s: &str) -> Option<Code> {
        Code::ALL.into_iter().find(|c| c.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Code::InsufficientBalance => "INSUFFICIENT_BALANCE",
            Code::UserNotFound => "USER_NOT_FOUND",
            Code::NotFound => "NOT_FOUND",
            Code::IdempotencyConflict => "IDEMPOTENCY_CONFLICT",
            Code::RefundExceedsConsumed => "REFUND_EXCEEDS_CONSUMED",
            Code::HoldSettled => "HOLD_SETTLED",
            Code::InvalidInput => "INVALID_INPUT",
            Code::Unauthenticated => "UNAUTHENTICATED",
            Code::Forbidden => "FORBIDDEN",
            Code::LimitExceeded => "LIMIT_EXCEEDED",
            Code::UpstreamError => "UPSTREAM_ERROR",
            Code::Unavailable => "UNAVAILABLE",
            Code::Internal => "INTERNAL",
        }
    }
}

/// An error that knows its public code.
pub trait Coded: std::error::Error {
    fn code(&self) -> Code;
}

impl Coded for ConsumeError {
    fn code(&self) -> Code {
        match self {
            ConsumeError::UserNotFound(_) => Code::UserNotFound,
            ConsumeError::InsufficientBalance { .. } => Code::InsufficientBalance,
            ConsumeError::IdempotencyConflict(_) => Code::IdempotencyConflict,
            ConsumeError::Internal(e) => e.code(),
        }
    }
}

impl Coded for RefundError {
    fn code(&self) -> Code {
        match self {
            RefundError::ConsumeNotFound(_) => Code::NotFound,
            RefundError::IdempotencyConflict(_) => Code::IdempotencyConflict,
            RefundError::ExceedsConsumed { .. } => Code::RefundExceedsConsumed,
            RefundError::BalanceLimit { .. } => Code::InvalidInput,
            RefundError::Internal(e) => e.code(),
        }
    }
}

impl Coded for RechargeError {
    fn code(&self) -> Code {
        match self {
            RechargeError::UserNotFound(_) => Code::UserNotFound,
            RechargeError::IdempotencyConflict(_) => Code::IdempotencyConflict,
            RechargeError::BalanceLimit { .. } => Code::InvalidInput,
            RechargeError::Internal(e) => e.code(),
        }
    }
}

impl Coded for HoldError {
    fn code(&self) -> Code {
        match self {
            HoldError::UserNotFound(_) => Code::UserNotFound,
            HoldError::InsufficientBalance { .. } => Code::InsufficientBalance,
            HoldError::IdempotencyConflict(_) => Code::IdempotencyConflict,
            HoldError::Internal(e) => e.code(),
        }
    }
}

impl Coded for CaptureError {
    fn code(&self) -> Code {
        match self {
            CaptureError::HoldNotFound(_) => Code::NotFound,
            CaptureError::Settled { .. } => Code::HoldSettled,
            CaptureError::ExceedsHold { .. } => Code::InvalidInput,
            CaptureError::IdempotencyConflict(_) => Code::IdempotencyConflict,
            CaptureError::Internal(e) => e.code(),
        }
    }
}

impl Coded for ReleaseError {
    fn code(&self) -> Code {
        match self {
            ReleaseError::HoldNotFound(_) => Code::NotFound,
            ReleaseError::Settled { .. } => Code::HoldSettled,
            ReleaseError::IdempotencyConflict(_) => Code::IdempotencyConflict,
            ReleaseError::Internal(e) => e.code(),
        }
    }
}

impl Coded for CreateUserError {
    fn code(&self) -> Code {
        match self {
            CreateUserError::IdempotencyConflict(_) | CreateUserError::IdTaken(_) => {
                Code::IdempotencyConflict
            }
            CreateUserError::NotAdopted => Code::InvalidInput,
            CreateUserError::Internal(e) => e.code(),
        }
    }
}

impl Coded for ExpireError {
    fn code(&self) -> Code {
        match self {
            ExpireError::Internal(e) => e.code(),
        }
    }
}

impl Coded for InputError {
    fn code(&self) -> Code {
        Code::InvalidInput
    }
}

impl Coded for CatalogError {
    fn code(&self) -> Code {
        match self {
            CatalogError::Unknown(_) => Code::InvalidInput,
            CatalogError::Store(e) => e.code(),
        }
    }
}

/// The dataloaders' error (shared by every key of a batch): classified as
/// the store error it wraps, so a database outage stays `UNAVAILABLE`.
impl Coded for std::sync::Arc<StoreError> {
    fn code(&self) -> Code {
        self.as_ref().code()
    }
}

impl Coded for StoreError {
    fn code(&self) -> Code {
        if self.is_unavailable() {
            Code::Unavailable
        } else {
            Code::Internal
        }
    }
}

impl Coded for AuthError {
    fn code(&self) -> Code {
        match self {
            AuthError::Expired
            | AuthError::Invalid
            | AuthError::Revoked
            | AuthError::TooLong(_)
            | AuthError::Malformed
            | AuthError::MissingInit => Code::Unauthenticated,
        }
    }
}

impl Coded for AuthzError {
    fn code(&self) -> Code {
        match self {
            AuthzError::Unauthenticated => Code::Unauthenticated,
            AuthzError::Forbidden(_) | AuthzError::ForeignUser => Code::Forbidden,
            AuthzError::UserRequired => Code::InvalidInput,
        }
    }
}

impl Coded for FalError {
    fn code(&self) -> Code {
        match self {
            FalError::Unauthorized
            | FalError::Forbidden
            | FalError::RateLimited { .. }
            | FalError::Server { .. }
            | FalError::Status { .. }
            | FalError::Timeout { .. }
            | FalError::Malformed(_)
            | FalError::Transport(_) => Code::UpstreamError,
        }
    }
}

impl Coded for CursorError {
    fn code(&self) -> Code {
        match self {
            CursorError::Malformed => Code::InvalidInput,
            CursorError::PageSize => Code::LimitExceeded,
        }
    }
}

/// Why a read resolver refuses its arguments, or finds data it cannot show.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("user {0} does not exist")]
    UserNotFound(i32),
    #[error("{0}")]
    BadWindow(&'static str),
    #[error("{0}")]
    TooBroad(String),
    /// Data the API cannot represent, or a resolver missing its context.
    #[error("{0}")]
    Internal(String),
}

impl Coded for ReadError {
    fn code(&self) -> Code {
        match self {
            ReadError::UserNotFound(_) => Code::UserNotFound,
            ReadError::BadWindow(_) => Code::InvalidInput,
            ReadError::TooBroad(_) => Code::LimitExceeded,
            ReadError::Internal(_) => Code::Internal,
        }
    }
}

/// Why the transport turns a request (or a WebSocket operation) away before
/// or instead of executing it.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("Accept must allow application/graphql-response+json or application/json")]
    NotAcceptable,
    #[error("POST bodies must be sent as Content-Type: application/json")]
    UnsupportedMediaType,
    #[error("{0}")]
    Malformed(String),
    #[error("request bodies are limited to {0} bytes")]
    BodyTooLarge(usize),
    #[error("at most {0} operations per batch")]
    BatchTooLarge(usize),
    #[error("rate limit exceeded; retry in {} s", .0.as_secs().max(1))]
    RateLimited(Duration),
    #[error("the request exceeded its {} ms budget", .0.as_millis())]
    OverBudget(Duration),
    #[error("the request body did not arrive within {} ms", .0.as_millis())]
    SlowBody(Duration),
    #[error("mutations must be sent with POST")]
    MutationOverGet,
    #[error("introspection is for admins")]
    Introspection,
    /// The database does not answer ([`crate::store::health`]).
    #[error("the database is unavailable; retry shortly (with the same key)")]
    Unavailable,
    /// An operation limit (aliases, root fields, depth, complexity, …).
    #[error("{0}")]
    OverLimit(String),
    #[error(transparent)]
    Token(#[from] AuthError),
}

impl Coded for Refusal {
    fn code(&self) -> Code {
        match self {
            Refusal::NotAcceptable
            | Refusal::UnsupportedMediaType
            | Refusal::Malformed(_)
            | Refusal::MutationOverGet => Code::InvalidInput,
            Refusal::BodyTooLarge(_)
            | Refusal::BatchTooLarge(_)
            | Refusal::RateLimited(_)
            | Refusal::OverBudget(_)
            | Refusal::SlowBody(_)
            | Refusal::OverLimit(_) => Code::LimitExceeded,
            Refusal::Token(e) => e.code(),
            Refusal::Introspection => Code::Forbidden,
            Refusal::Unavailable => Code::Unavailable,
        }
    }
}

/// Why one account's billing reconciliation run failed (recorded on the
/// run with its code; `reconcile`).
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Fal(#[from] FalError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("fal's cursor did not advance (page {0})")]
    CursorLoop(u32),
    #[error("the run was abandoned before it could publish")]
    Abandoned,
}

impl Coded for ReconcileError {
    fn code(&self) -> Code {
        match self {
            ReconcileError::Fal(e) => e.code(),
            ReconcileError::Store(e) => e.code(),
            ReconcileError::CursorLoop(_) => Code::UpstreamError,
            ReconcileError::Abandoned => Code::Internal,
        }
    }
}

/// Why the CSV export (`GET /admin/fal-billing.csv`) refuses a request.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("an admin token is required")]
    Unauthenticated,
    #[error("the export is for admins")]
    Forbidden,
    #[error("{0}")]
    Input(String),
    #[error("too many requests: retry after {0} s")]
    RateLimited(u64),
    #[error(transparent)]
    Read(#[from] ReadError),
}

impl Coded for ExportError {
    fn code(&self) -> Code {
        match self {
            ExportError::Unauthenticated => Code::Unauthenticated,
            ExportError::Forbidden => Code::Forbidden,
            ExportError::Input(_) => Code::InvalidInput,
            ExportError::RateLimited(_) => Code::LimitExceeded,
            ExportError::Read(e) => e.code(),
        }
    }
}

/// A GraphQL error with `extensions.code`.
pub fn to_gql<E: Coded>(e: E) -> async_graphql::Error {
    let code = e.code();
    let message = public_message(code, &e);
    async_graphql::Error::new(message).extend_with(|_, ext| ext.set("code", code.as_str()))
}

/// A request-level error (no path) with `extensions.code`.
pub fn to_server_error<E: Coded>(e: &E) -> ServerError {
    let code = e.code();
    let message = public_message(code, e);
    let mut se = ServerError::new(message, None);
    se.extensions
        .get_or_insert_with(Default::default)
        .set("code", code.as_str());
    se
}

/// What the client reads: the error's own message, except for failures
/// inside the gateway or its database, which are logged here and answered
/// without their details (SQL, hosts, drivers' words).
pub(crate) fn public_message<E: Coded + ?Sized>(code: Code, e: &E) -> String {
    match code {
        Code::Internal => {
            log_internal(e);
            "internal error".to_owned()
        }
        Code::Unavailable => {
            tracing::warn!(error = %e, "database unavailable");
            Refusal::Unavailable.to_string()
        }
        _ => e.to_string(),
    }
}

fn log_internal<E: Coded + ?Sized>(e: &E) {
    let mut chain = Vec::new();
    let mut src: Option<&dyn std::error::Error> = e.source();
    while let Some(s) = src {
        chain.push(s.to_string());
        src = s.source();
    }
    tracing::error!(error = %e, cause = ?chain, "internal error");
}

/// The code an error of a response carries, giving one to those that have
/// none (async-graphql's own, about the client's input: see the module
/// doc).
pub fn assign_code(e: &mut ServerError) -> Code {
    if let Some(code) = e
        .extensions
        .as_ref()
        .and_then(|x| x.get("code"))
        .and_then(|v| match v {
            async_graphql::Value::String(s) => Some(s.as_str()),
            _ => None,
        })
        .and_then(Code::parse)
    {
        return code;
    }
    e.extensions
        .get_or_insert_with(Default::default)
        .set("code", Code::InvalidInput.as_str());
    Code::InvalidInput
}

/// `result.gql()?` in resolvers.
pub trait GqlResult<T> {
    fn gql(self) -> async_graphql::Result<T>;
}

impl<T, E: Coded> GqlResult<T> for Result<T, E> {
    fn gql(self) -> async_graphql::Result<T> {
        self.map_err(to_gql)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_reads_back() {
        for c in Code::ALL {
            assert_eq!(Code::parse(c.as_str()), Some(c));
        }
        assert_eq!(Code::parse("internal"), None);
    }

    #[test]
    fn library_errors_without_a_code_are_the_clients_input() {
        let mut e = ServerError::new("Unknown field \"x\" on type \"Query\".", None);
        assert_eq!(assign_code(&mut e), Code::InvalidInput);
        let mut ours = to_server_error(&Refusal::OverLimit("too deep".into()));
        assert_eq!(assign_code(&mut ours), Code::LimitExceeded);
    }

    #[test]
    fn internal_errors_are_answered_opaquely() {
        let e = to_gql(StoreError::custom("SELECT secret FROM t"));
        assert_eq!(e.message, "internal error");
    }
}
