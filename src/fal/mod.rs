//! fal's Platform API, as the cost report needs it: per-endpoint usage of
//! one key over a window (`GET /v1/models/usage`).
//!
//! The API key is a secret: it leaves the process only in the
//! `Authorization: Key …` header towards fal, and never appears in an error,
//! a log line or a cache key.

mod cached;
mod http;
mod usage;

pub use cached::CachedFal;
pub use http::FalHttp;
pub use usage::{EndpointUsage, UsageSummary};

use chrono::{DateTime, Utc};

/// Why fal's usage could not be had for one account.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum FalError {
    #[error("fal rejected the API key (401 Unauthorized)")]
    Unauthorized,
    #[error("fal refused access (403 Forbidden): the usage API needs an ADMIN-scope key, and this key is not one")]
    Forbidden,
    #[error("fal kept rate limiting (429) after {attempts} attempts")]
    RateLimited { attempts: u32 },
    #[error("fal answered {status} (server error) after {attempts} attempts")]
    Server { status: u16, attempts: u32 },
    #[error("fal answered {status}")]
    Status { status: u16 },
    #[error("fal did not answer within {ms} ms")]
    Timeout { ms: u64 },
    #[error("fal returned a response that is not the documented usage JSON: {0}")]
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
}
