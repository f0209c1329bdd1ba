//! What only PostgreSQL does: connection settings, the lock statement that
//! reads a user's batches in the same round trip, the spend in one
//! statement, and the feed of balance events (`LISTEN`).

pub mod listen;
pub(super) mod lock;
pub(super) mod spend;

use std::time::Duration;

use sea_orm::ConnectOptions;

pub(super) fn connect_options(opts: &mut ConnectOptions, statement_timeout: Option<Duration>) {
    if let Some(t) = statement_timeout {
        opts.statement_timeout(t);
    }
    // The gateway runs a small fixed set of prepared statements, each with
    // an index path that does not depend on the values bound. Profiling the
    // consume path showed PostgreSQL re-planning them on every execution
    // (custom plans) for a fifth of its CPU.
    opts.map_sqlx_postgres_opts(|o| o.options([("plan_cache_mode", "force_generic_plan")]));
}

/// One connection, made and closed, so that an unreachable or refusing
/// server is reported with its cause (refused, unknown host, bad password)
/// within seconds; the pool would only say that it timed out.
pub(super) async fn probe(url: &str) -> Result<(), String> {
    use sea_orm::sqlx::{Connection, PgConnection};
    match tokio::time::timeout(Duration::from_secs(5), PgConnection::connect(url)).await {
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            Ok(())
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within 5 s".to_owned()),
    }
}
