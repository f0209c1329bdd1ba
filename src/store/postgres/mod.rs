//! What only PostgreSQL does: connection settings, the lock statement that
//! reads a user's batches in the same round trip, the spend in one
//! statement, the consume in one call, and the feed of balance events (the tail of `gw_events`).

pub(super) mod consume_call;
pub(super) mod lock;
pub(super) mod spend;
pub mod tail;

use std::time::Duration;

use sea_orm::ConnectOptions;

pub(super) fn connect_options(
    opts: &mut ConnectOptions,
    statement_timeout: Option<Duration>,
    legacy_zone: chrono_tz::Tz,
    read_only: bool,
    transaction_pooling: bool,
) {
    // `application_name` tells the ledger's trigger which rows the gateway
    // wrote (DESIGN.md: a row written by anything else is reported). A
    // startup parameter PgBouncer passes on (and tracks).
    opts.map_sqlx_postgres_opts(move |o| {
        let o = o.application_name(super::APPLICATION_NAME);
        if transaction_pooling {
            // No prepared statement may outlive its transaction (`store::db`).
            o.statement_cache_capacity(0)
        } else {
            o
        }
    });
    if transaction_pooling {
        // The settings go with each transaction instead (`transaction_prelude`):
        // a session setting would stay on a server connection others share.
        return;
    }
    let session = session_settings(statement_timeout, legacy_zone, read_only);
    opts.map_sqlx_postgres_pool_opts(move |p| {
        let session = session.clone();
        p.after_connect(move |conn, _meta| {
            let session = session.clone();
            Box::pin(async move {
                use sea_orm::sqlx::Executor;
                conn.execute(sea_orm::sqlx::AssertSqlSafe(session)).await?;
                Ok(())
            })
        })
    });
}

/// The session's settings, sent as one simple query once each connection
/// is made. Not as startup `options`: PgBouncer refuses a startup
/// parameter it does not know (unless told to drop it, which would drop
/// the settings silently), and passes this query on like any other.
///
/// - `plan_cache_mode = force_generic_plan`: the gateway runs a small fixed
///   set of prepared statements, each with an index path that does not
///   depend on the values bound. Profiling the consume path showed
///   PostgreSQL re-planning them on every execution (custom plans) for a
///   fifth of its CPU.
/// - `jit = off`: JIT pays only for long analytic queries, and a generic
///   plan's estimate over a large table (the event poll's `LIMIT $3` over
///   200,000 events of a busy ten minutes) crossed `jit_above_cost` and
///   spent 17–40 ms compiling a 1 ms poll, every poll: balance delivery
///   went from 2 to 40 ms.
/// - `statement_timeout`: the server aborts a statement running past the
///   request budget, so a request cut off does not leave its query running.
/// - The zone is the ts platform's: PostgreSQL then converts between its
///   naive `timestamp` columns and instants (comparisons, inserts into a
///   column an adopter widened to `timestamptz`) in that zone. sqlx sends
///   `TimeZone=UTC` at startup; this comes after. Instants travel in binary
///   and do not depend on it. A `chrono_tz` name is letters, digits and
///   `/_+-` only: safe to quote.
/// - `default_transaction_read_only` for read-only stores (`adopt`'s dry
///   run): the engine itself refuses every write.
fn session_settings(
    statement_timeout: Option<Duration>,
    legacy_zone: chrono_tz::Tz,
    read_only: bool,
) -> String {
    let mut sql = format!(
        "SET TIME ZONE '{}'; SET plan_cache_mode = force_generic_plan; SET jit = off",
        legacy_zone.name()
    );
    if let Some(t) = statement_timeout {
        sql.push_str(&format!("; SET statement_timeout = {}", t.as_millis()));
    }
    if read_only {
        sql.push_str("; SET default_transaction_read_only = on");
    }
    sql
}

/// What each transaction runs first behind a transaction-mode pooler
/// (`store::db`): `DEALLOCATE ALL`, then the session settings of
/// [`session_settings`] as `SET LOCAL`, one simple query.
pub(super) fn transaction_prelude(
    statement_timeout: Option<Duration>,
    legacy_zone: chrono_tz::Tz,
    read_only: bool,
) -> String {
    let mut sql = format!(
        "DEALLOCATE ALL; SET LOCAL TIME ZONE '{}'; SET LOCAL plan_cache_mode = force_generic_plan; \
         SET LOCAL jit = off",
        legacy_zone.name()
    );
    if let Some(t) = statement_timeout {
        sql.push_str(&format!(
            "; SET LOCAL statement_timeout = {}",
            t.as_millis()
        ));
    }
    if read_only {
        sql.push_str("; SET TRANSACTION READ ONLY");
    }
    sql
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

/// The outage gate's probe (`store::health`): one connection of its own,
/// outside any pool, pinged each time and re-made when it broke. A pool
/// would retry a refused connection until its acquire timeout; this
/// answers at once, so an outage is seen within one probe interval.
pub struct HealthProbe {
    url: String,
    conn: Option<sea_orm::sqlx::PgConnection>,
}

impl HealthProbe {
    pub(crate) fn new(url: &str) -> HealthProbe {
        HealthProbe {
            url: url.to_owned(),
            conn: None,
        }
    }

    /// Whether the database answered within `within`.
    pub async fn answers(&mut self, within: Duration) -> bool {
        use sea_orm::sqlx::{Connection, PgConnection};
        let attempt = async {
            let conn = match &mut self.conn {
                Some(c) => c,
                None => self.conn.insert(PgConnection::connect(&self.url).await?),
            };
            conn.ping().await
        };
        let ok = matches!(tokio::time::timeout(within, attempt).await, Ok(Ok(())));
        if !ok {
            // Broken or stuck: the next probe connects afresh.
            self.conn = None;
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_settings_are_one_query_with_every_setting() {
        let s = session_settings(
            Some(Duration::from_millis(7_000)),
            chrono_tz::Asia::Shanghai,
            false,
        );
        assert_eq!(
            s,
            "SET TIME ZONE 'Asia/Shanghai'; SET plan_cache_mode = force_generic_plan; \
             SET jit = off; SET statement_timeout = 7000"
        );
        let t = transaction_prelude(Some(Duration::from_millis(500)), chrono_tz::UTC, true);
        assert!(
            t.starts_with("DEALLOCATE ALL; SET LOCAL TIME ZONE 'UTC'"),
            "{t}"
        );
        assert!(t.contains("SET LOCAL statement_timeout = 500"), "{t}");
        assert!(t.ends_with("SET TRANSACTION READ ONLY"), "{t}");
        let ro = session_settings(None, chrono_tz::UTC, true);
        assert!(
            ro.ends_with("SET jit = off; SET default_transaction_read_only = on"),
            "{ro}"
        );
        assert!(!ro.contains("statement_timeout"));
    }
}
