//! Building and running the application; the same code serves production
//! and every integration test (bind port 0, read `port()`).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::auth::TokenKeys;
use crate::catalog::SourceTypeCatalog;
use crate::config::Settings;
use crate::domain::reconcile::Terms;
use crate::events::Broker;
use crate::fal::{CachedFal, FalHttp};
use crate::graphql::build_schema;
use crate::http::serve::{serve, Limits};
use crate::http::HttpState;
use crate::metrics::Metrics;
use crate::reconcile::Reconciler;
use crate::state::{App, AppState};
use crate::store::{ConnectOptionsSpec, Store};

pub struct Application {
    listener: TcpListener,
    /// `METRICS_BIND`'s listener, when configured.
    metrics_listener: Option<TcpListener>,
    http: HttpState,
    /// The PostgreSQL event tail (`gw_events`); stops with `shutdown`.
    feed_tail: Option<tokio::task::JoinHandle<()>>,
    /// PostgreSQL: the probe behind the outage gate (`store::health`).
    health_watch: Option<tokio::task::JoinHandle<()>>,
    /// The measurement of the read replicas' lag, when there are any.
    replica_watch: Option<tokio::task::JoinHandle<()>>,
}

impl Application {
    /// Connects, migrates, and binds; nothing is served until
    /// `run_until_stopped`. `keys` mint and check tokens (the CLI builds
    /// them from `AuthSettings`, tests from a fixed secret).
    pub async fn build(settings: Settings, keys: TokenKeys) -> anyhow::Result<Application> {
        if settings.transaction_pooling && settings.database_listen_url.is_none() {
            // LISTEN keeps a session; a transaction-mode pooler gives none.
            anyhow::bail!(
                "DATABASE_POOL_MODE=transaction needs DATABASE_LISTEN_URL: a connection for the \
                 balance-event tail's LISTEN that bypasses the pooler (or goes through it in \
                 session mode)"
            );
        }
        Store::refuse_unadopted(&settings.database_url).await?;
        let store = Store::connect_with(ConnectOptionsSpec {
            url: &settings.database_url,
            max_connections: settings.db_max_connections,
            statement_timeout: Some(Duration::from_millis(settings.request_timeout_ms)),
            legacy_zone: settings.legacy_zone,
            read_only: false,
            acquire_timeout: None,
            transaction_pooling: settings.transaction_pooling,
        })
        .await
        .context("cannot connect to the database")?;
        let store = if settings.pg_consume_call {
            store
        } else {
            store.without_consume_call()
        };
        if settings.migrate_on_start {
            store.migrate().await.context("migrations failed")?;
        } else {
            refuse_an_older_schema(&store).await?;
        }
        let listener = TcpListener::bind(&settings.bind)
            .await
            .with_context(|| format!("cannot bind {}", settings.bind))?;
        // Revoked tokens are refused from the first request on.
        keys.revocations().replace(
            store
                .revoked_token_ids()
                .await
                .context("cannot read the revoked tokens")?,
        );
        let metrics =
            Arc::new(Metrics::new(store.engine().name()).context("cannot register metrics")?);
        let fal = fal_platform(&settings, metrics.clone())?;
        let shutdown = CancellationToken::new();
        let broker = Broker::new(
            settings.subscriber_queue,
            settings.subscriptions_per_subject,
        );
        // Budget plus slack: how long before a lost feed connection a
        // transaction may have stamped rows it committed after.
        let catch_up = Duration::from_millis(settings.request_timeout_ms) + Duration::from_secs(5);
        let (store, feed_tail) = store
            .feeding(
                broker.clone(),
                catch_up,
                settings.database_listen_url.as_deref(),
                shutdown.clone(),
            )
            .await
            .context("cannot start the balance-event feed")?;
        let health_watch = store
            .health_probe()
            .map(|probe| spawn_health_watch(store.clone(), probe, shutdown.clone()));
        let replicas = Arc::new(connect_replicas(&settings).await?);
        let replica_watch =
            (!replicas.is_empty()).then(|| spawn_replica_watch(replicas.clone(), shutdown.clone()));
        let source_types = SourceTypeCatalog::load(&store)
            .await
            .context("cannot read the source types")?;
        let reconciler = Reconciler::new(
            store.clone(),
            fal.clone(),
            metrics.clone(),
            reconcile_terms(&settings),
        );
        let state = AppState(Arc::new(App {
            store,
            replicas,
            settings,
            keys,
            fal,
            metrics,
            shutdown,
            broker,
            source_types,
            reconciler,
        }));
        let schema = build_schema(state.clone());
        let metrics_listener = match &state.settings.metrics_bind {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot bind METRICS_BIND {addr}"))?,
            ),
            None => None,
        };
        Ok(Application {
            listener,
            metrics_listener,
            http: HttpState::new(state, schema),
            feed_tail,
            health_watch,
            replica_watch,
        })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    pub fn state(&self) -> &AppState {
        &self.http.app
    }

    /// Serves until `shutdown` resolves. Then: stop accepting, let in-flight
    /// requests (and their transactions) finish within the grace period,
    /// close WebSockets with a 1001 close frame, and return. A request still
    /// running after the grace period is dropped, so its transaction rolls
    /// back: a mutation is committed and answered, or it never happened.
    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let state = self.http.app.clone();
        let connections = self.http.connections.clone();
        let sweeper = spawn_expiry_sweep(state.clone());
        let jwks = state
            .keys
            .jwks()
            .cloned()
            .map(|j| spawn_jwks_refresh(j, state.shutdown.clone()));
        let revocations = spawn_revocation_refresh(state.clone());
        let billing_schedule = crate::reconcile::spawn_schedule(
            state.reconciler.clone(),
            Duration::from_secs(state.settings.fal_reconcile_every_secs),
            state.settings.fal_reconcile_days,
            state.shutdown.clone(),
        );
        let limits = Limits {
            header_timeout: Duration::from_millis(state.settings.header_timeout_ms),
            first_byte_timeout: Duration::from_millis(state.settings.first_byte_timeout_ms),
            max_connections: state.settings.max_connections,
            per_address: state.settings.max_connections_per_address,
        };
        let token = state.shutdown.clone();
        let signalled = token.clone();
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!("shutdown: no new connections; finishing in-flight requests");
            signalled.cancel();
        });
        if let Some(listener) = self.metrics_listener {
            let router = crate::http::metrics_router(self.http.clone());
            tokio::spawn(serve(listener, router, limits, token.clone()));
        }
        let serve = serve(
            self.listener,
            crate::http::router(self.http),
            limits,
            token.clone(),
        );
        let grace = Duration::from_secs(state.settings.shutdown_grace_secs);
        let deadline = async {
            token.cancelled().await;
            tokio::time::sleep(grace).await;
        };
        let result = tokio::select! {
            () = serve => Ok(()),
            _ = deadline => {
                tracing::warn!(grace_secs = grace.as_secs(), "shutdown: grace period over, dropping in-flight requests");
                Ok(())
            }
        };
        if let Some(h) = sweeper {
            h.abort();
        }
        revocations.abort();
        if let Some(h) = billing_schedule {
            h.abort();
        }
        if let Some(h) = jwks {
            h.abort();
        }
        if let Some(h) = self.feed_tail {
            h.abort();
        }
        if let Some(h) = self.health_watch {
            h.abort();
        }
        if let Some(h) = self.replica_watch {
            h.abort();
        }
        connections.close();
        if tokio::time::timeout(Duration::from_secs(5), connections.wait())
            .await
            .is_err()
        {
            tracing::warn!(open = connections.len(), "shutdown: WebSockets still open");
        }
        result
    }

    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.run_until(shutdown_signal()).await
    }
}

/// fal's Platform API as configured: the HTTP client behind the
/// concurrency bound and the usage cache.
pub fn fal_platform(
    settings: &Settings,
    metrics: Arc<Metrics>,
) -> anyhow::Result<Arc<dyn crate::fal::FalPlatform>> {
    let http = FalHttp::new(
        &settings.fal_api_base_url,
        settings.fal_timeout_ms,
        settings.fal_max_attempts,
        metrics,
    )?;
    Ok(Arc::new(CachedFal::new(
        Arc::new(http),
        settings.fal_concurrency,
        Duration::from_secs(settings.fal_cache_secs),
    )))
}

/// The billing reconciliation's conversion and tolerance, as configured.
pub fn reconcile_terms(settings: &Settings) -> Terms {
    Terms {
        points_per_usd: settings.points_per_usd,
        tolerance_nano: (settings.fal_job_tolerance_usd * 1e9).round() as i64,
    }
}

fn spawn_revocation_refresh(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(crate::store::in_background(async move {
        let mut tick = tokio::time::interval(crate::auth::REVOCATION_REFRESH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stop = state.shutdown.clone();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => return,
            }
            match state.store.revoked_token_ids().await {
                Ok(ids) => state.keys.revocations().replace(ids),
                // The list this instance has stays in force.
                Err(e) => tracing::warn!(error = %e, "cannot refresh the revoked tokens"),
            }
        }
    }))
}

/// Keeps the identity provider's key set (`GATEWAY_JWKS_URL`) current:
/// fetched at once, every [`REFETCH_EVERY`], and when a token names an
/// unknown key, at most every [`REFETCH_AT_MOST_EVERY`]. A failed fetch
/// keeps the set it had.
///
/// [`REFETCH_EVERY`]: crate::auth::REFETCH_EVERY
/// [`REFETCH_AT_MOST_EVERY`]: crate::auth::REFETCH_AT_MOST_EVERY
fn spawn_jwks_refresh(
    jwks: Arc<crate::auth::Jwks>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client = match reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot build the JWKS client");
                return;
            }
        };
        loop {
            let fetched = tokio::time::Instant::now();
            match fetch_jwks(&client, jwks.url()).await {
                Ok(set) => {
                    let n = jwks.replace(&set);
                    tracing::info!(keys = n, "identity provider keys fetched");
                }
                Err(e) => tracing::warn!(error = %e, "cannot fetch the identity provider's keys"),
            }
            tokio::select! {
                _ = tokio::time::sleep(crate::auth::REFETCH_EVERY) => {}
                _ = jwks.wanted() => {
                    tokio::time::sleep_until(fetched + crate::auth::REFETCH_AT_MOST_EVERY).await;
                }
                _ = stop.cancelled() => return,
            }
        }
    })
}

/// One fetch of a key set: at most 256 KiB, JSON.
async fn fetch_jwks(
    client: &reqwest::Client,
    url: &str,
) -> anyhow::Result<jsonwebtoken::jwk::JwkSet> {
    const LIMIT: usize = 256 * 1024;
    let mut resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.without_url()))?
        .error_for_status()
        .map_err(|e| anyhow::anyhow!("{}", e.without_url()))?;
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.without_url()))?
    {
        if body.len() + chunk.len() > LIMIT {
            anyhow::bail!("the key set is larger than {LIMIT} bytes");
        }
        body.extend_from_slice(&chunk);
    }
    Ok(serde_json::from_slice(&body)?)
}

/// The read replicas of `DATABASE_READ_URL` (PostgreSQL only).
async fn connect_replicas(settings: &Settings) -> anyhow::Result<crate::store::replicas::Replicas> {
    use crate::store::replicas::Replicas;
    if settings.database_read_urls.is_empty() {
        return Ok(Replicas::none());
    }
    if crate::store::Engine::of_url(&settings.database_url)? != crate::store::Engine::Postgres {
        anyhow::bail!("DATABASE_READ_URL needs PostgreSQL (DATABASE_URL is SQLite)");
    }
    Replicas::connect(
        &settings.database_read_urls,
        ConnectOptionsSpec {
            url: &settings.database_url,
            max_connections: settings.db_max_connections,
            statement_timeout: Some(Duration::from_millis(settings.request_timeout_ms)),
            legacy_zone: settings.legacy_zone,
            read_only: true,
            acquire_timeout: Some(Duration::from_secs(1)),
            transaction_pooling: settings.transaction_pooling,
        },
        Duration::from_millis(settings.read_max_lag_ms),
    )
    .await
    .context("cannot connect to a read replica (DATABASE_READ_URL)")
}

fn spawn_replica_watch(
    replicas: Arc<crate::store::replicas::Replicas>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(crate::store::replicas::MEASURE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => return,
            }
            replicas.measure().await;
        }
    })
}

/// Probes the database every [`PROBE_EVERY`] on `probe`'s own connection
/// and opens or closes `main`'s outage gate (`store::health`).
fn spawn_health_watch(
    main: Store,
    mut probe: crate::store::postgres::HealthProbe,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    use crate::store::health::{PROBE_EVERY, PROBE_TIMEOUT};
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(PROBE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => return,
            }
            let answered = probe.answers(PROBE_TIMEOUT).await;
            if main.health().record(answered) {
                if answered {
                    tracing::info!("the database answers again: serving");
                } else {
                    tracing::warn!(
                        "the database does not answer: requests get UNAVAILABLE until it does"
                    );
                }
            }
        }
    })
}

/// `serve --no-migrate` (a rollout that runs `migrate` as its own step):
/// a database lacking any of this build's migrations is refused, naming
/// them, before anything is served; one migrated by a newer build is
/// served, with a warning (the migrations only add).
async fn refuse_an_older_schema(store: &Store) -> anyhow::Result<()> {
    let standing = store
        .schema_standing()
        .await
        .context("cannot read the schema's migrations")?;
    if let Some(first) = standing.missing.first() {
        anyhow::bail!(
            "the database schema is older than this build needs: {} migration(s) not applied \
             (from {first}); run `points-gateway migrate` first (README, Deployment)",
            standing.missing.len()
        );
    }
    if !standing.newer.is_empty() {
        tracing::warn!(
            newer = ?standing.newer,
            "the schema has migrations this build does not know (a newer build applied them); serving"
        );
    }
    Ok(())
}

/// The periodic sweep of DESIGN.md invariant 9, and of holds past their
/// expiry. Each run is safe alongside
/// other instances' sweeps (per-user locks), so every instance may run one.
fn spawn_expiry_sweep(state: AppState) -> Option<tokio::task::JoinHandle<()>> {
    let secs = state.settings.expiry_sweep_secs;
    if secs == 0 {
        return None;
    }
    Some(tokio::spawn(crate::store::in_background(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(secs));
        let stop = state.shutdown.clone();
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => return,
            }
            match crate::domain::ledger::expire_due(&state.store, crate::time::now()).await {
                Ok(r) if r.batches > 0 => {
                    for _ in 0..r.batches {
                        state.metrics.ledger("expire", "applied");
                    }
                    tracing::info!(
                        users = r.users,
                        batches = r.batches,
                        points = r.points,
                        "expiry sweep"
                    );
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "expiry sweep failed"),
            }
            match crate::domain::ledger::expire_holds(&state.store, crate::time::now()).await {
                Ok(r) if r.holds > 0 => {
                    for _ in 0..r.holds {
                        state.metrics.ledger("hold_expire", "applied");
                    }
                    tracing::info!(holds = r.holds, points = r.points, "hold sweep");
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "hold sweep failed"),
            }
        }
    })))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}
