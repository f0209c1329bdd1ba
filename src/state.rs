//! The one application state shared by HTTP handlers and the GraphQL schema.

use std::sync::Arc;

use sea_orm::DatabaseConnection;

use crate::auth::TokenKeys;
use crate::config::Settings;
use crate::db::StatementCounter;
use crate::domain::ledger::Committer;
use crate::events::Broker;
use crate::fal::FalPlatform;
use crate::graphql::documents::Documents;
use crate::http::rate_limit::RateLimiter;
use crate::metrics::Metrics;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Cheap to clone; everything behind one `Arc`.
#[derive(Clone)]
pub struct AppState(pub Arc<App>);

pub struct App {
    /// The pool every request and background task uses.
    pub db: DatabaseConnection,
    /// Configuration as loaded at start-up.
    pub settings: Settings,
    /// Keys derived once from the JWT secret.
    pub keys: TokenKeys,
    /// fal's Platform API, behind the concurrency bound and the short cache.
    pub fal: Arc<dyn FalPlatform>,
    /// Counters and histograms behind `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Token buckets per caller.
    pub rate_limiter: RateLimiter,
    /// Cancelled when shutdown begins: WebSockets close, sweeps stop.
    pub shutdown: CancellationToken,
    /// Open WebSocket connections, awaited (bounded) at shutdown.
    pub connections: TaskTracker,
    /// Statements run so far; read by `/metrics` and by tests (no N+1).
    pub statements: Arc<StatementCounter>,
    /// Balance events for `balanceChanged` subscribers.
    pub broker: Arc<Broker>,
    /// How ledger transactions commit: announcing to the broker on SQLite;
    /// plain on PostgreSQL, where the trigger and the listener do it.
    pub committer: Committer,
    /// Parsed GraphQL documents by text, with their limit checks.
    pub documents: Documents,
}

impl std::ops::Deref for AppState {
    type Target = App;
    fn deref(&self) -> &App {
        &self.0
    }
}
