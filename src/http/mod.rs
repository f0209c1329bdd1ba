//! The HTTP surface: `/graphql` (POST, GET, GraphiQL, WebSocket),
//! `/healthz`, `/readyz`, `/metrics`; every request gets a request id.

pub mod documents;
mod export;
mod graphiql;
mod graphql;
pub mod media;
mod operation;
pub mod rate_limit;
pub mod serve;
mod ws;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tracing::Instrument;

use std::net::IpAddr;
use std::sync::Arc;

use tokio_util::task::TaskTracker;

use crate::graphql::AppSchema;
use crate::metrics::Gauges;
use crate::places::Places;
use crate::state::AppState;
use documents::Documents;
use rate_limit::RateLimiter;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// Most operations in one batched request.
pub const MAX_BATCH: usize = 10;

/// The transport's state: the application's, plus what only the transport
/// needs. Cheap to clone (every field is shared).
#[derive(Clone)]
pub struct HttpState {
    pub app: AppState,
    /// The one schema, for HTTP and WebSocket alike.
    pub schema: AppSchema,
    /// Token buckets per caller (per client address when anonymous).
    pub rate_limiter: Arc<RateLimiter>,
    /// Parsed GraphQL documents by text, with their limit checks.
    pub documents: Arc<Documents>,
    /// Open WebSocket connections, awaited (bounded) at shutdown.
    pub connections: TaskTracker,
    /// Authenticated WebSockets per token subject (`WS_MAX_PER_SUBJECT`),
    /// and in all (`WS_MAX_CONNECTIONS`).
    pub ws_subjects: Arc<Places<String>>,
    /// WebSockets that have not authenticated yet, per client address
    /// (`WS_ANONYMOUS_PER_ADDRESS`) and in all (`WS_ANONYMOUS_MAX`): they
    /// never hold an authenticated caller's place.
    pub ws_anonymous: Arc<Places<IpAddr>>,
}

impl HttpState {
    pub fn new(app: AppState, schema: AppSchema) -> HttpState {
        let rates = app.settings.rates;
        HttpState {
            ws_subjects: Arc::new(Places::new(
                app.settings.ws_max_per_subject,
                app.settings.ws_max_connections,
            )),
            ws_anonymous: Arc::new(Places::new(
                app.settings.ws_anonymous_per_address,
                app.settings.ws_anonymous_max,
            )),
            app,
            schema,
            rate_limiter: Arc::new(RateLimiter::new(rates)),
            documents: Arc::new(Documents::new()),
            connections: TaskTracker::new(),
        }
    }
}

pub fn router(state: HttpState) -> Router {
    let cors = cors(&state.app.settings.cors_origins);
    Router::new()
        .route("/", get(root))
        .route("/graphql", get(graphql_get).post(graphql::post))
        .route("/graphiql/{name}", get(graphiql::asset))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/admin/fal-billing.csv", get(export::fal_billing_csv))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(cors)
        .layer(middleware::from_fn(request_id))
        .with_state(state)
}

/// CORS for the configured origins only (none by default), through
/// tower-http: preflights answered (and cached by browsers for ten
/// minutes), credentials allowed, `X-Request-Id` readable by pages.
fn cors(origins: &[String]) -> tower_http::cors::CorsLayer {
    use axum::http::Method;
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::ACCEPT,
            axum::http::HeaderName::from_static("x-request-id"),
        ])
        .allow_credentials(true)
        .expose_headers([axum::http::HeaderName::from_static("x-request-id")])
        .max_age(std::time::Duration::from_secs(600))
}

/// Whether a browser page of `origin` may use the API: a configured
/// origin, or the gateway's own (GraphiQL). Requests without `Origin` come
/// from no browser page.
pub fn origin_allowed(s: &HttpState, headers: &axum::http::HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let same = host.is_some_and(|h| origin.split_once("://").is_some_and(|(_, rest)| rest == h));
    same || s.app.settings.cors_origins.iter().any(|o| o == origin)
}

/// `GET /`: where the API is.
async fn root() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        "<!doctype html><title>points-gateway</title>\
         <p>This is the points gateway. The GraphQL API is at \
         <a href=\"/graphql\">/graphql</a> (POST, or GET in a browser for GraphiQL; \
         WebSocket subscriptions on the same path).</p>",
    )
        .into_response()
}

/// `GET /graphql`: a WebSocket upgrade, GraphiQL, or a query.
async fn graphql_get(
    state: State<HttpState>,
    peer: axum::extract::ConnectInfo<std::net::SocketAddr>,
    req: Request,
) -> Response {
    if req.headers().contains_key(header::SEC_WEBSOCKET_PROTOCOL) {
        return ws::upgrade(state.0, req).await;
    }
    graphql::get(state, peer, req).await
}

/// Ready when the database answers, decided within a second: at once while
/// the outage gate is down, else by a ping bounded by the probe's timeout
/// (a load balancer's check must not hang on a dead database).
async fn readyz(State(s): State<HttpState>) -> Response {
    let unreachable = || (StatusCode::SERVICE_UNAVAILABLE, "database unreachable").into_response();
    if s.app.store.health().is_down() {
        return unreachable();
    }
    match tokio::time::timeout(crate::store::health::PROBE_TIMEOUT, s.app.store.ping()).await {
        Ok(Ok(())) => (StatusCode::OK, "ready").into_response(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "database not reachable");
            unreachable()
        }
        Err(_) => {
            tracing::warn!("database did not answer within a second");
            unreachable()
        }
    }
}

/// `/metrics` on the API port: for admins (a Prometheus scrape sends an
/// admin token as its bearer credentials), or on `METRICS_BIND` for anyone
/// who can reach that address.
async fn metrics(State(s): State<HttpState>, headers: axum::http::HeaderMap) -> Response {
    let admin = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| s.app.keys.verify_header(v).ok())
        .is_some_and(|c| c.role == crate::auth::Role::Admin);
    if !admin {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "metrics need an admin token (or METRICS_BIND)",
        )
            .into_response();
    }
    metrics_text(&s)
}

/// The metrics router for `METRICS_BIND`: `/metrics` without a token.
pub fn metrics_router(state: HttpState) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(s): State<HttpState>| async move { metrics_text(&s) }),
        )
        .with_state(state)
}

fn metrics_text(s: &HttpState) -> Response {
    let (size, idle) = s.app.store.pool_usage();
    let text = s.app.metrics.render(&Gauges {
        websocket_connections: s.connections.len(),
        websocket_unauthenticated: s.ws_anonymous.taken(),
        subscriptions: s.app.broker.subscribers(),
        db_pool_size: size,
        db_pool_idle: idle,
        sql_statements: s.app.store.statements(),
        replica_lags: s.app.replicas.lags(),
    });
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// Takes the caller's `X-Request-Id` when it is a sane token, else makes
/// one; every log line of the request carries it, and so does the response.
async fn request_id(req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        })
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let span = tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path());
    crate::telemetry::adopt_parent(&span, req.headers());
    let started = std::time::Instant::now();
    let mut resp = next.run(req).instrument(span.clone()).await;
    span.in_scope(|| {
        tracing::info!(
            status = resp.status().as_u16(),
            latency_ms = started.elapsed().as_millis() as u64,
            "request done"
        );
    });
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}
