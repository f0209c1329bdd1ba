//! Building and running the application; the same code serves production
//! and every integration test (bind port 0, read `port()`).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::auth::TokenKeys;
use crate::config::Settings;
use crate::fal::{CachedFal, FalHttp};
use crate::graphql::{build_schema, AppSchema};
use crate::state::{App, AppState};

pub struct Application {
    listener: TcpListener,
    state: AppState,
    schema: AppSchema,
}

impl Application {
    /// Connects, migrates, and binds; nothing is served until `run_until_stopped`.
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        let (db, statements) =
            crate::db::connect(&settings.database_url, settings.db_max_connections)
                .await
                .context("cannot connect to the database")?;
        crate::db::migrate(&db).await.context("migrations failed")?;
        let listener = TcpListener::bind(&settings.bind)
            .await
            .with_context(|| format!("cannot bind {}", settings.bind))?;
        let keys = TokenKeys::new(&settings.jwt_secret);
        let fal_http = FalHttp::new(
            &settings.fal_api_base_url,
            settings.fal_timeout_ms,
            settings.fal_max_attempts,
        )?;
        let fal = Arc::new(CachedFal::new(
            Arc::new(fal_http),
            settings.fal_concurrency,
            Duration::from_secs(settings.fal_cache_secs),
        ));
        let state = AppState(Arc::new(App {
            db,
            settings,
            keys,
            fal,
            statements,
        }));
        let schema = build_schema(state.clone());
        Ok(Application {
            listener,
            state,
            schema,
        })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves, then lets in-flight requests finish.
    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let sweeper = spawn_expiry_sweep(self.state.clone());
        let app = crate::http::router(self.state.clone(), self.schema);
        let result = axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown)
            .await;
        if let Some(h) = sweeper {
            h.abort();
        }
        result.context("server failed")
    }

    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.run_until(shutdown_signal()).await
    }
}

/// The periodic sweep of DESIGN.md invariant 9. Each run is safe alongside
/// other instances' sweeps (per-user locks), so every instance may run one.
fn spawn_expiry_sweep(state: AppState) -> Option<tokio::task::JoinHandle<()>> {
    let secs = state.settings.expiry_sweep_secs;
    if secs == 0 {
        return None;
    }
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(secs));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match crate::domain::ledger::expire_due(&state.db, crate::time::now()).await {
                Ok(r) if r.batches > 0 => tracing::info!(
                    users = r.users,
                    batches = r.batches,
                    points = r.points,
                    "expiry sweep"
                ),
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "expiry sweep failed"),
            }
        }
    }))
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
