//! Read replicas (`DATABASE_READ_URL`): PostgreSQL standbys the read side
//! of the API may be served from, each skipped while it lags.
//!
//! Each replica is a read-only [`Store`] of its own. A measurement every
//! [`MEASURE_EVERY`] asks each how far its replay is behind (time since
//! the last transaction it replayed, or 0 when it has replayed everything
//! it received); one that lags beyond the bound, or does not answer within
//! a second, gets no reads until a measurement says otherwise. Reads pick
//! among the fresh ones in turn, and fall back to the primary when none is.

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::Duration;

use sea_orm::{ConnectionTrait, Statement};

use super::{describe, ConnectOptionsSpec, Store, StoreError};

/// How often replicas are measured.
pub const MEASURE_EVERY: Duration = Duration::from_millis(500);

/// Replay lag in milliseconds: 0 on a primary or a standby that has
/// replayed all it received; else the age of the last replayed commit.
const LAG_SQL: &str = "SELECT (CASE \
    WHEN NOT pg_is_in_recovery() THEN 0 \
    WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() THEN 0 \
    ELSE COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()) * 1000, 0) \
    END)::bigint AS lag_ms";

/// Not measured yet, or not answering.
const UNKNOWN: i64 = -1;

struct Member {
    store: Store,
    /// Where it is, without credentials (logs, metrics).
    name: String,
    lag_ms: AtomicI64,
}

/// The configured replicas; empty when none is.
pub struct Replicas {
    members: Vec<Member>,
    max_lag_ms: i64,
    next: AtomicUsize,
}

impl Replicas {
    pub fn none() -> Replicas {
        Replicas {
            members: Vec::new(),
            max_lag_ms: 0,
            next: AtomicUsize::new(0),
        }
    }

    /// Connects to each replica (read-only sessions) and measures them once.
    pub async fn connect(
        urls: &[String],
        spec: ConnectOptionsSpec<'_>,
        max_lag: Duration,
    ) -> Result<Replicas, StoreError> {
        let mut members = Vec::with_capacity(urls.len());
        for url in urls {
            let store = Store::connect_with(ConnectOptionsSpec {
                url,
                read_only: true,
                ..spec.clone()
            })
            .await?;
            members.push(Member {
                store,
                name: describe(url),
                lag_ms: AtomicI64::new(UNKNOWN),
            });
        }
        let r = Replicas {
            members,
            max_lag_ms: i64::try_from(max_lag.as_millis()).unwrap_or(i64::MAX),
            next: AtomicUsize::new(0),
        };
        r.measure().await;
        Ok(r)
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// A replica fresh enough to read from, in turn; `None`: read the
    /// primary.
    pub fn pick(&self) -> Option<&Store> {
        let n = self.members.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| &self.members[(start + i) % n])
            .find(|m| {
                let lag = m.lag_ms.load(Ordering::Relaxed);
                (0..=self.max_lag_ms).contains(&lag)
            })
            .map(|m| &m.store)
    }

    /// Takes a replica out of rotation until its next good measurement
    /// (a read on it found it not answering).
    pub fn set_aside(&self, store: &Store) {
        if let Some(m) = self.members.iter().find(|m| std::ptr::eq(&m.store, store)) {
            if m.lag_ms.swap(UNKNOWN, Ordering::Relaxed) != UNKNOWN {
                tracing::warn!(replica = %m.name, "replica not answering: set aside");
            }
        }
    }

    /// Measures every replica's lag (at most a second each).
    pub async fn measure(&self) {
        for m in &self.members {
            let ask = m.store.conn().query_one_raw(Statement::from_string(
                m.store.conn().get_database_backend(),
                LAG_SQL,
            ));
            let lag = match tokio::time::timeout(Duration::from_secs(1), ask).await {
                Ok(Ok(Some(row))) => row.try_get::<i64>("", "lag_ms").unwrap_or(UNKNOWN),
                _ => UNKNOWN,
            };
            let before = m.lag_ms.swap(lag, Ordering::Relaxed);
            let fresh = |l: i64| (0..=self.max_lag_ms).contains(&l);
            if fresh(before) != fresh(lag) {
                if fresh(lag) {
                    tracing::info!(replica = %m.name, lag_ms = lag, "replica serves reads");
                } else {
                    tracing::warn!(replica = %m.name, lag_ms = lag, max_lag_ms = self.max_lag_ms, "replica skipped: lagging or not answering");
                }
            }
        }
    }

    /// `(name, lag in seconds or None when not answering)` of each replica.
    pub fn lags(&self) -> Vec<(String, Option<f64>)> {
        self.members
            .iter()
            .map(|m| {
                let lag = m.lag_ms.load(Ordering::Relaxed);
                (m.name.clone(), (lag >= 0).then(|| lag as f64 / 1000.0))
            })
            .collect()
    }
}
