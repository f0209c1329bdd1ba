//! The one application state: what every resolver, background task and
//! handler may reach. Transport-only state (rate limiter, parsed-document
//! cache, open WebSockets) is the transport's own (`http::HttpState`).

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::auth::TokenKeys;
use crate::catalog::SourceTypeCatalog;
use crate::config::Settings;
use crate::events::Broker;
use crate::fal::FalPlatform;
use crate::metrics::Metrics;
use crate::reconcile::Reconciler;
use crate::store::replicas::Replicas;
use crate::store::Store;

/// Cheap to clone; everything behind one `Arc`.
#[derive(Clone)]
pub struct AppState(pub Arc<App>);

pub struct App {
    /// The database: every read and every ledger transaction goes through
    /// it. On SQLite it also announces committed ledger rows to `broker`.
    pub store: Store,
    /// Read replicas for the read side (`DATABASE_READ_URL`); empty when
    /// none is configured.
    pub replicas: Arc<Replicas>,
    /// Configuration as loaded at start-up.
    pub settings: Settings,
    /// Keys derived once from the JWT secret, to verify and mint tokens.
    pub keys: TokenKeys,
    /// fal's Platform API, behind the concurrency bound and the short
    /// cache; the cost report's `falUsage` asks it.
    pub fal: Arc<dyn FalPlatform>,
    /// Counters, histograms and gauges behind `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Cancelled when shutdown begins: subscriptions end, sweeps stop.
    pub shutdown: CancellationToken,
    /// Balance events for `balanceChanged` subscribers, fed by the store.
    pub broker: Arc<Broker>,
    /// The source types consumes and holds may name.
    pub source_types: SourceTypeCatalog,
    /// The per-job reconciliation against fal's billing events (the
    /// admin mutation starts its runs; the schedule uses it too).
    pub reconciler: Reconciler,
}

impl std::ops::Deref for AppState {
    type Target = App;
    fn deref(&self) -> &App {
        &self.0
    }
}
