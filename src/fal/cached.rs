//! Bounds concurrent calls to fal and remembers recent usage answers, so a
//! report over many accounts neither floods fal nor refetches the same key
//! and window within a short time.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tokio::sync::{Mutex, Semaphore};

use super::{BillingPage, FalError, FalPlatform, UsageSummary};

/// The cache is keyed by a hash of the API key, never the key itself.
type CacheKey = ([u8; 32], i64, i64);

pub struct CachedFal {
    inner: Arc<dyn FalPlatform>,
    permits: Semaphore,
    ttl: Duration,
    cache: Mutex<HashMap<CacheKey, (Instant, UsageSummary)>>,
}

impl CachedFal {
    pub fn new(inner: Arc<dyn FalPlatform>, concurrency: usize, ttl: Duration) -> CachedFal {
        CachedFal {
            inner,
            permits: Semaphore::new(concurrency.max(1)),
            ttl,
            cache: Mutex::new(HashMap::new()),
        }
    }
}

impl CachedFal {
    /// One of the `FAL_CONCURRENCY` places, held for a call.
    async fn permit(&self) -> Result<tokio::sync::SemaphorePermit<'_>, FalError> {
        self.permits
            .acquire()
            .await
            .map_err(|_| FalError::Transport("shutting down".into()))
    }
}

#[async_trait::async_trait]
impl FalPlatform for CachedFal {
    async fn usage(
        &self,
        api_key: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<UsageSummary, FalError> {
        let key: CacheKey = (
            Sha256::digest(api_key.as_bytes()).into(),
            from.timestamp_micros(),
            to.timestamp_micros(),
        );
        if let Some((at, hit)) = self.cache.lock().await.get(&key) {
            if at.elapsed() < self.ttl {
                return Ok(hit.clone());
            }
        }
        let _permit = self.permit().await?;
        let fresh = self.inner.usage(api_key, from, to).await?;
        let mut cache = self.cache.lock().await;
        cache.retain(|_, (at, _)| at.elapsed() < self.ttl);
        cache.insert(key, (Instant::now(), fresh.clone()));
        Ok(fresh)
    }

    /// Bounded like usage calls, never cached: a reconciliation pulls each
    /// page once and stores the result itself.
    async fn billing_events(
        &self,
        api_key: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        cursor: Option<&str>,
    ) -> Result<BillingPage, FalError> {
        let _permit = self.permit().await?;
        self.inner.billing_events(api_key, from, to, cursor).await
    }
}
