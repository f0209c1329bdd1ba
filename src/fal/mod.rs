//! fal's Platform API, as the cost reports need it: per-endpoint usage of
//! one key over a window (`GET /v1/models/usage`) and the per-request
//! billing events (`GET /v1/models/billing-events`).
//!
//! The API key is a secret: it leaves the process only in the
//! `Authorization: Key …` header towards fal, and never appears in an error,
//! a log line or a cache key.

mod billing;
mod cached;
mod http;
mod usage;

pub use billing::{billing_windows, BillingEvent, BillingPage, BILLING_MAX_WINDOW_DAYS};
pub use cached::CachedFal;
pub use http::FalHttp;
pub use usage::{EndpointUsage, UsageSummary};

use chrono::{DateTime, Utc};

/// Why fal's usage could not be had for one account.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum FalError {
    #[error("fal rejected the API key (401 Unauthorized)")]
    Unauthorized,
    #[error("fal refused access (403 Forbidden): the Platform API needs an ADMIN-scope key, and this key is not one")]
    Forbidden,
    #[error("fal kept rate limiting (429) after {attempts} attempts")]
    RateLimited { attempts: u32 },
    #[error("fal answered {status} (server error) after {attempts} attempts")]
    Server { status: u16, attempts: u32 },
    #[error("fal answered {status}")]
    Status { status: u16 },
    #[error("fal did not answer within {ms} ms")]
    Timeout { ms: u64 },
    #[error("fal returned a response that is not the documented JSON: {0}")]
    Malformed(String),
    #[error("fal could not be reached: {0}")]
    Transport(String),
}

impl FalError {
    /// The HTTP status fal answered, when it answered.
    pub fn upstream_status(&self) -> Option<u16> {
        match self {
            FalError::Unauthorized => Some(401),
            FalError::Forbidden => Some(403),
            FalError::RateLimited { .. } => Some(429),
            FalError::Server { status, .. } | FalError::Status { status } => Some(*status),
            _ => None,
        }
    }
}

/// The fal Platform API as the gateway uses it; tests substitute a local
/// stand-in server through `FAL_API_BASE_URL`, not this trait.
#[async_trait::async_trait]
pub trait FalPlatform: Send + Sync {
    /// Usage of the key's workspace in `[from, to)`, every page summed per endpoint.
    async fn usage(
        &self,
        api_key: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<UsageSummary, FalError>;

    /// One page of the billing events of the key's workspace in
    /// `[from, to)` (at most [`BILLING_MAX_WINDOW_DAYS`] long), from
    /// `cursor` on.
    async fn billing_events(
        &self,
        api_key: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        cursor: Option<&str>,
    ) -> Result<BillingPage, FalError>;
}
