//! The reqwest client for fal's Platform API (usage, billing events):
//! bounded retries on 429 (honouring `Retry-After`) and 5xx, a timeout per
//! call, a bounded body.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::{header, StatusCode};
use tracing::Instrument;

use std::sync::Arc;

use super::billing::{BillingPage, RawBillingPage, BILLING_PAGE_LIMIT};
use super::usage::{UsagePage, UsageSummary};
use super::{FalError, FalPlatform};
use crate::metrics::Metrics;

/// Pages followed at most for one window; a guard against a cursor loop.
const MAX_PAGES: usize = 1_000;
/// Longest `Retry-After` honoured; longer waits fail the call instead.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);
/// Largest response body read from fal.
const MAX_BODY: usize = 64 << 20;

pub struct FalHttp {
    client: reqwest::Client,
    base_url: String,
    timeout_ms: u64,
    max_attempts: u32,
    backoff: Duration,
    metrics: Arc<Metrics>,
}

impl FalHttp {
    pub fn new(
        base_url: &str,
        timeout_ms: u64,
        max_attempts: u32,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<FalHttp> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(timeout_ms))
            .user_agent(concat!("points-gateway/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(FalHttp {
            client,
            base_url: base_url.trim_end_matches('/').to_owned(),
            timeout_ms,
            max_attempts: max_attempts.max(1),
            backoff: Duration::from_millis(200),
            metrics,
        })
    }

    /// One GET of a Platform API path with the key, retried on 429
    /// (honouring `Retry-After`) and 5xx up to `max_attempts`, its body
    /// read up to [`MAX_BODY`] and parsed as `T`.
    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &'static str,
        api_key: &str,
        query: &[(&str, String)],
    ) -> Result<T, FalError> {
        let url = format!("{}{path}", self.base_url);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let span = tracing::info_span!("fal GET", path, attempt);
            let sent = self
                .client
                .get(&url)
                .headers(span.in_scope(crate::telemetry::outgoing_headers))
                .header(header::AUTHORIZATION, format!("Key {api_key}"))
                .query(query)
                .send()
                .instrument(span)
                .await;
            let resp = match sent {
                Ok(r) => r,
                // reqwest errors can carry the URL (never the key: it is a header).
                Err(e) if e.is_timeout() => {
                    self.metrics.fal_call("timeout");
                    return Err(FalError::Timeout {
                        ms: self.timeout_ms,
                    });
                }
                Err(e) => {
                    self.metrics.fal_call("transport");
                    return Err(FalError::Transport(e.without_url().to_string()));
                }
            };
            let status = resp.status();
            self.metrics.fal_call(status.as_str());
            if status.is_success() {
                let body = self.body(resp).await?;
                return serde_json::from_slice::<T>(&body)
                    .map_err(|e| FalError::Malformed(e.to_string()));
            }
            let retry_after = resp
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let retryable = status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
            if !retryable || attempt >= self.max_attempts {
                return Err(match status {
                    StatusCode::UNAUTHORIZED => FalError::Unauthorized,
                    StatusCode::FORBIDDEN => FalError::Forbidden,
                    StatusCode::TOO_MANY_REQUESTS => FalError::RateLimited { attempts: attempt },
                    s if s.is_server_error() => FalError::Server {
                        status: s.as_u16(),
                        attempts: attempt,
                    },
                    s => FalError::Status { status: s.as_u16() },
                });
            }
            let wait = match retry_after {
                Some(d) if d > MAX_RETRY_AFTER => {
                    return Err(FalError::RateLimited { attempts: attempt })
                }
                Some(d) => d,
                None => self.backoff * 2u32.pow(attempt - 1),
            };
            tracing::debug!(
                path,
                status = status.as_u16(),
                attempt,
                wait_ms = wait.as_millis() as u64,
                "fal: retrying"
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// The body, refused past [`MAX_BODY`]: a page of 10,000 billing
    /// events is about 3 MB, and nothing fal sends may cost unbounded memory.
    async fn body(&self, mut resp: reqwest::Response) -> Result<Vec<u8>, FalError> {
        let failed = |e: reqwest::Error| {
            if e.is_timeout() {
                FalError::Timeout {
                    ms: self.timeout_ms,
                }
            } else {
                FalError::Transport(e.without_url().to_string())
            }
        };
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(failed)? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(FalError::Malformed(format!(
                    "the response is larger than {MAX_BODY} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    async fn usage_page(
        &self,
        api_key: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        cursor: Option<&str>,
    ) -> Result<UsagePage, FalError> {
        let mut query: Vec<(&str, String)> = vec![
            ("expand", "summary".into()),
            ("expand", "auth_method".into()),
            ("start", instant(from)),
            ("end", instant(to)),
            // Exact instants: the local side of the diff uses exactly [from, to).
            ("bound_to_timeframe", "false".into()),
        ];
        if let Some(c) = cursor {
            query.push(("cursor", c.to_owned()));
        }
        self.get_json("/v1/models/usage", api_key, &query).await
    }
}

fn instant(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

#[async_trait::async_trait]
impl FalPlatform for FalHttp {
    async fn usage(
        &self,
        api_key: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<UsageSummary, FalError> {
        let mut summary = UsageSummary::default();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let page = self
                .usage_page(api_key, from, to, cursor.as_deref())
                .await?;
            summary.add(page.summary.unwrap_or_default());
            let more = page.has_more.unwrap_or(page.next_cursor.is_some());
            match (more, page.next_cursor) {
                (true, Some(next)) => cursor = Some(next),
                _ => return Ok(summary),
            }
        }
        Err(FalError::Malformed(format!("more than {MAX_PAGES} pages")))
    }

    async fn billing_events(
        &self,
        api_key: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        cursor: Option<&str>,
    ) -> Result<BillingPage, FalError> {
        let mut query: Vec<(&str, String)> = vec![
            ("start", instant(from)),
            ("end", instant(to)),
            ("limit", BILLING_PAGE_LIMIT.to_string()),
        ];
        if let Some(c) = cursor {
            query.push(("cursor", c.to_owned()));
        }
        let raw: RawBillingPage = self
            .get_json("/v1/models/billing-events", api_key, &query)
            .await?;
        raw.parse()
    }
}
