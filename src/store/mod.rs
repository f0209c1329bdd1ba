//! The store: the only module that knows which database engine runs and
//! the only one that writes SQL.
//!
//! Everything engine-specific is decided by an exhaustive `match` on
//! [`Engine`]; adding an engine means a new folder beside `postgres/` and
//! `sqlite/` plus the arms the compiler then asks for. Nothing outside this
//! module compares database backends.
//!
//! - [`Store`]: the pool, its engine, the statement counter, how ledger
//!   transactions announce their rows ([`feed`]).
//! - [`ledger`]: [`WriteTx`], the ledger's write transaction (the port the
//!   domain's operations talk to).
//! - [`read`]: the read models behind every list and lookup of the API.
//! - [`audit`]: the reads behind `verify`.
//! - [`postgres`] / [`sqlite`]: what only one engine does.

pub mod adopt;
pub mod audit;
pub mod billing;
pub mod consume_call;
pub mod db;
mod error;
pub mod fal;
pub mod feed;
pub mod health;
pub mod holds;
pub mod ledger;
pub mod postgres;
pub mod read;
pub mod replicas;
pub mod rows;
pub mod schema;
pub mod source_types;
pub mod sql;
pub mod sqlite;
pub mod tokens;
pub mod users;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono_tz::Tz;
use migration::{Migrator, MigratorTrait};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement,
};

pub use error::StoreError;
pub use feed::{Feed, LedgerSink};
pub use ledger::WriteTx;

/// PostgreSQL: the lock `migrate` takes for its transaction. The two-key
/// form, whose keys never meet the one-key locks of job keys (migration 8).
const MIGRATION_LOCK_SQL: &str = "SELECT pg_advisory_xact_lock(1886351476, 1)";

/// The database engines the gateway runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// Production and scale-out: many gateway instances on one database.
    Postgres,
    /// The embedded default: one gateway instance, one file.
    Sqlite,
}

impl Engine {
    /// The engine a `DATABASE_URL` names, from its scheme.
    pub fn of_url(url: &str) -> Result<Engine, StoreError> {
        let scheme = url.split(':').next().unwrap_or_default();
        match scheme {
            "postgres" | "postgresql" => Ok(Engine::Postgres),
            "sqlite" => Ok(Engine::Sqlite),
            _ => Err(StoreError::unsupported(format!(
                "unsupported database URL scheme {scheme:?} (postgres:// or sqlite:)"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Engine::Postgres => "postgres",
            Engine::Sqlite => "sqlite",
        }
    }

    fn backend(self) -> DbBackend {
        match self {
            Engine::Postgres => DbBackend::Postgres,
            Engine::Sqlite => DbBackend::Sqlite,
        }
    }
}

/// Counts the SQL statements the pool runs for requests. Tests use it to
/// prove that a query costs a fixed number of statements (no N+1);
/// `/metrics` shows it. The timers' statements ([`in_background`]) are not
/// counted: a request measured across a tick of the revocation refresh
/// would otherwise count one statement too many now and then.
#[derive(Debug, Default)]
pub struct StatementCounter(AtomicU64);

tokio::task_local! {
    /// Set while a timer's work runs ([`in_background`]).
    static BACKGROUND: ();
}

/// Runs `work` (a timer's: the revocation refresh, the expiry sweep, the
/// scheduled reconciliation) with its statements left out of
/// [`Store::statements`]. sea-orm calls the metric callback inside the
/// statement's future, so the task-local is seen there; work spawned onto
/// other tasks from `work` would be counted.
pub async fn in_background<F: std::future::Future>(work: F) -> F::Output {
    BACKGROUND.scope((), work).await
}

impl StatementCounter {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The database: a connection pool of one engine. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: db::Db,
    engine: Engine,
    /// Where it connected (the PostgreSQL listener opens its own
    /// connection there).
    url: String,
    statements: Arc<StatementCounter>,
    feed: Feed,
    /// The ts platform's zone (`LEGACY_TIMEZONE`): its tables hold naive
    /// local time.
    zone: Tz,
    /// Connected read-only ([`ConnectOptionsSpec::read_only`]).
    read_only: bool,
    /// Whether consumes try the engine's one-call path first
    /// ([`Store::consume_call`]).
    consume_call: bool,
    /// Whether the database answers ([`health`]); shared by every clone.
    health: Arc<health::Health>,
}

/// The zone the ts platform writes its naive times in, when not configured.
pub const DEFAULT_LEGACY_ZONE: Tz = chrono_tz::Asia::Shanghai;

/// The name the gateway's PostgreSQL sessions carry: the ledger's trigger
/// tells the gateway's rows from anyone else's by it.
pub const APPLICATION_NAME: &str = "points-gateway";

/// How to connect: the settings that matter to the store.
#[derive(Debug, Clone)]
pub struct ConnectOptionsSpec<'a> {
    pub url: &'a str,
    pub max_connections: u32,
    /// On PostgreSQL `statement_timeout`: the server aborts any statement
    /// running longer, so a request cut off by its time budget does not
    /// leave its query running (SQLite has no such setting; a dropped
    /// statement is interrupted when its connection is reused).
    pub statement_timeout: Option<Duration>,
    /// `LEGACY_TIMEZONE`.
    pub legacy_zone: Tz,
    /// Only read: the engine refuses every write (`adopt`'s dry run). On
    /// SQLite the file is opened read-only and its journal mode is left as
    /// it is.
    pub read_only: bool,
    /// How long a query waits for a pooled connection; `None`: 10 s. A
    /// read replica's pool waits a second: a stopped replica must not hold
    /// a read that the primary can serve.
    pub acquire_timeout: Option<Duration>,
    /// PostgreSQL behind a pooler in transaction mode
    /// (`DATABASE_POOL_MODE=transaction`): every statement in a
    /// transaction of its own, no statement cache, settings per
    /// transaction ([`db`]).
    pub transaction_pooling: bool,
}

impl Store {
    /// Connects with the durability settings DESIGN.md section 1 requires
    /// (see each engine's `connect_options`).
    pub async fn connect(url: &str, max_connections: u32) -> Result<Store, StoreError> {
        Self::connect_with(ConnectOptionsSpec {
            url,
            max_connections,
            statement_timeout: None,
            legacy_zone: DEFAULT_LEGACY_ZONE,
            read_only: false,
            acquire_timeout: None,
            transaction_pooling: false,
        })
        .await
    }

    pub async fn connect_with(spec: ConnectOptionsSpec<'_>) -> Result<Store, StoreError> {
        let engine = Engine::of_url(spec.url)?;
        let mut opts = ConnectOptions::new(spec.url.to_owned());
        // Fail fast and say where: an unreachable server is an error within
        // seconds, naming host and port (never credentials), not a long
        // silence ending in "pool timed out". 10 s is also the default
        // request budget, so a request never waits longer for a connection.
        opts.max_connections(spec.max_connections)
            .min_connections(1)
            .connect_timeout(Duration::from_secs(5))
            .acquire_timeout(spec.acquire_timeout.unwrap_or(Duration::from_secs(10)))
            .sqlx_logging(false);
        match engine {
            Engine::Postgres => postgres::connect_options(
                &mut opts,
                spec.statement_timeout,
                spec.legacy_zone,
                spec.read_only,
                spec.transaction_pooling,
            ),
            Engine::Sqlite => sqlite::connect_options(&mut opts, spec.read_only),
        }
        match engine {
            Engine::Postgres => postgres::probe(spec.url).await.map_err(|e| {
                StoreError::custom(format!("cannot connect to {}: {e}", describe(spec.url)))
            })?,
            Engine::Sqlite => {}
        }
        let mut db = Database::connect(opts).await.map_err(|e| {
            StoreError::custom(format!("cannot connect to {}: {e}", describe(spec.url)))
        })?;
        let statements = Arc::new(StatementCounter::default());
        let c = statements.clone();
        db.set_metric_callback(move |info| {
            if BACKGROUND.try_with(|_| ()).is_err() {
                c.0.fetch_add(1, Ordering::Relaxed);
            }
            crate::telemetry::statement(&info.statement.sql, info.elapsed, info.failed);
        });
        let prelude = (spec.transaction_pooling && engine == Engine::Postgres).then(|| {
            postgres::transaction_prelude(spec.statement_timeout, spec.legacy_zone, spec.read_only)
        });
        Ok(Store {
            db: db::Db::new(db, prelude),
            engine,
            url: spec.url.to_owned(),
            statements,
            feed: Feed::silent(),
            zone: spec.legacy_zone,
            read_only: spec.read_only,
            consume_call: engine == Engine::Postgres,
            health: Arc::default(),
        })
    }

    /// The same pool, with every committed ledger row delivered to `sink`
    /// (the balance-event broker), and the task that feeds it, if the
    /// engine needs one:
    /// - PostgreSQL: the triggers append every change to `gw_events` in
    ///   its transaction and [`postgres::tail`] (started before this
    ///   returns) tails that table on every instance, woken after each
    ///   commit, so changes committed through any instance reach every
    ///   instance's sink. `catch_up`: how long before a lost connection a
    ///   transaction may have stamped rows it committed after; `listen_url`
    ///   where its `LISTEN` connects (default: the store's URL).
    /// - SQLite (one instance): each write transaction announces its rows
    ///   in-process right after its commit; no task.
    pub async fn feeding(
        mut self,
        sink: Arc<dyn LedgerSink>,
        catch_up: Duration,
        listen_url: Option<&str>,
        stop: tokio_util::sync::CancellationToken,
    ) -> Result<(Store, Option<tokio::task::JoinHandle<()>>), StoreError> {
        match self.engine {
            Engine::Postgres => {
                let url = self.url.clone();
                // `LISTEN` needs a session of its own: behind a pooler in
                // transaction mode it must bypass the pooler
                // (`DATABASE_LISTEN_URL`).
                let listen_url = listen_url.unwrap_or(&url).to_owned();
                let wake = Arc::new(tokio::sync::Notify::new());
                self.feed = Feed::waking(wake.clone());
                // A pool of its own: the tail's polls neither wait for the
                // requests' connections nor count as their statements.
                let own = Store::connect_with(ConnectOptionsSpec {
                    url: &url,
                    max_connections: 2,
                    statement_timeout: None,
                    legacy_zone: self.zone,
                    read_only: false,
                    acquire_timeout: None,
                    transaction_pooling: self.db.transaction_pooling(),
                })
                .await?;
                let task =
                    postgres::tail::start(own, listen_url, sink, wake, catch_up, stop).await?;
                Ok((self, Some(task)))
            }
            Engine::Sqlite => {
                self.feed = Feed::announcing(sink);
                Ok((self, None))
            }
        }
    }

    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// The ts platform's zone (`LEGACY_TIMEZONE`).
    pub fn legacy_zone(&self) -> Tz {
        self.zone
    }

    /// The pool itself, for tools and tests that run their own SQL.
    pub fn connection(&self) -> &DatabaseConnection {
        self.db.pool()
    }

    /// Where the store's own statements run: the pool, each statement in a
    /// transaction of its own behind a transaction-mode pooler.
    pub(crate) fn conn(&self) -> &db::Db {
        &self.db
    }

    /// Statements run so far for requests (every connection; not the
    /// timers' own, [`in_background`]).
    pub fn statements(&self) -> u64 {
        self.statements.get()
    }

    /// Applies pending migrations, all in one transaction (a failure
    /// leaves the database as it was, on SQLite too). On a database that
    /// holds the platforms' tables but was never adopted it refuses and
    /// points to `adopt`: creating the gateway's tables beside live
    /// history without an opening balance would show every user at zero.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let txn = self.begin_schema().await?;
        // Instances started together on one PostgreSQL database migrate one
        // after the other: the others wait here for the first's commit, then
        // (read committed: every statement a fresh snapshot) find nothing
        // left to apply. Without it they created the same tables at once and
        // all but one failed (`pg_type_typname_nsp_index`). SQLite's write
        // transaction is already one at a time.
        match self.engine {
            Engine::Postgres => {
                txn.execute_raw(Statement::from_string(
                    DbBackend::Postgres,
                    MIGRATION_LOCK_SQL.to_owned(),
                ))
                .await?;
            }
            Engine::Sqlite => {}
        }
        if let Some(refusal) = adopt::standing(&txn).await?.refusal(true) {
            return Err(StoreError::unadopted(refusal));
        }
        Migrator::up(&txn, None).await?;
        adopt::record_fresh(&txn).await?;
        Ok(txn.commit().await?)
    }

    /// Before connecting to serve or migrate: refuses, saying why, a SQLite
    /// file that holds the platforms' tables but was never adopted, read
    /// through a read-only connection, so that even the refusal leaves the
    /// file as it was (connecting for writing switches it to WAL). On
    /// PostgreSQL [`Store::migrate`] refuses inside its transaction.
    pub async fn refuse_unadopted(url: &str) -> Result<(), StoreError> {
        match Engine::of_url(url)? {
            Engine::Postgres => Ok(()),
            Engine::Sqlite => {
                let exists = sqlite::file_of(url).is_some_and(|p| p.exists());
                if !exists {
                    return Ok(());
                }
                let reader = Self::connect_with(ConnectOptionsSpec {
                    url,
                    max_connections: 1,
                    statement_timeout: None,
                    legacy_zone: DEFAULT_LEGACY_ZONE,
                    read_only: true,
                    acquire_timeout: None,
                    transaction_pooling: false,
                })
                .await?;
                let standing = adopt::standing(&reader.db).await;
                reader.db.pool().clone().close().await.ok();
                match standing?.refusal(true) {
                    Some(refusal) => Err(StoreError::unadopted(refusal)),
                    None => Ok(()),
                }
            }
        }
    }

    /// Refuses, saying why, unless the gateway owns this database's
    /// schema (migrated by it, or adopted).
    pub async fn ensure_adopted(&self) -> Result<(), StoreError> {
        match adopt::standing(&self.db).await?.refusal(false) {
            Some(refusal) => Err(StoreError::unadopted(refusal)),
            None => Ok(()),
        }
    }

    /// A transaction for schema changes: on SQLite it takes the write lock
    /// at once, so two processes migrating one file do not both proceed.
    pub(crate) async fn begin_schema(&self) -> Result<sea_orm::DatabaseTransaction, StoreError> {
        Ok(match (self.engine, self.read_only) {
            (Engine::Postgres, _) | (Engine::Sqlite, true) => self.db.begin().await?,
            (Engine::Sqlite, false) => sqlite::begin_immediate(self.db.pool()).await?,
        })
    }

    /// PostgreSQL: the values of `settings` as a transaction of this store
    /// sees them (behind a transaction-mode pooler, set by its prelude).
    pub async fn settings_in_a_transaction(
        &self,
        settings: &[&str],
    ) -> Result<Vec<String>, StoreError> {
        let txn = self.db.begin().await?;
        let mut values = Vec::with_capacity(settings.len());
        for s in settings {
            let row = txn
                .query_one_raw(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "SELECT current_setting($1) AS v",
                    [(*s).into()],
                ))
                .await?
                .ok_or_else(|| StoreError::custom("no row"))?;
            values.push(row.try_get::<String>("", "v")?);
        }
        txn.commit().await?;
        Ok(values)
    }

    /// Whether the database answered its last probe ([`health`]).
    pub fn health(&self) -> &health::Health {
        &self.health
    }

    /// The outage gate's probe, on PostgreSQL (SQLite is a file: it does
    /// not go away).
    pub fn health_probe(&self) -> Option<postgres::HealthProbe> {
        match self.engine {
            Engine::Postgres => Some(postgres::HealthProbe::new(&self.url)),
            Engine::Sqlite => None,
        }
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        Ok(self.db.pool().ping().await?)
    }

    /// `(size, idle)` of the connection pool, for `/metrics`.
    pub fn pool_usage(&self) -> (u32, usize) {
        match self.engine {
            Engine::Postgres => {
                let p = self.db.pool().get_postgres_connection_pool();
                (p.size(), p.num_idle())
            }
            Engine::Sqlite => {
                let p = self.db.pool().get_sqlite_connection_pool();
                (p.size(), p.num_idle())
            }
        }
    }

    /// Begins a transaction that will write ledger rows.
    pub async fn begin_write(&self) -> Result<WriteTx, StoreError> {
        let txn = self.begin_plain_write().await?;
        Ok(WriteTx::new(txn, self.engine, self.zone, self.feed.clone()))
    }

    /// A write transaction without the ledger's bookkeeping (SQLite:
    /// IMMEDIATE, so it queues behind other writers instead of failing).
    pub(crate) async fn begin_plain_write(
        &self,
    ) -> Result<sea_orm::DatabaseTransaction, StoreError> {
        Ok(match self.engine {
            Engine::Postgres => self.db.begin().await?,
            Engine::Sqlite => sqlite::begin_immediate(self.db.pool()).await?,
        })
    }

    /// A read-only statement in a transaction of its own (one snapshot).
    pub(crate) async fn read_txn(&self) -> Result<sea_orm::DatabaseTransaction, StoreError> {
        Ok(self.db.begin().await?)
    }

    fn statement(&self, sql: impl Into<String>, values: Vec<sea_orm::Value>) -> Statement {
        Statement::from_sql_and_values(self.engine.backend(), sql, values)
    }

    pub(crate) async fn all(
        &self,
        sql: impl Into<String>,
        values: Vec<sea_orm::Value>,
    ) -> Result<Vec<sea_orm::QueryResult>, StoreError> {
        Ok(self.db.query_all_raw(self.statement(sql, values)).await?)
    }

    /// Every row of `sql`, each read by `row`.
    pub(crate) async fn rows<T>(
        &self,
        sql: impl Into<String>,
        values: Vec<sea_orm::Value>,
        row: impl Fn(&sea_orm::QueryResult) -> Result<T, sea_orm::DbErr>,
    ) -> Result<Vec<T>, StoreError> {
        let rows = self.all(sql, values).await?;
        Ok(rows.iter().map(row).collect::<Result<_, _>>()?)
    }
}

/// Where the store is connected, without credentials.
pub fn describe_store(store: &Store) -> String {
    describe(&store.url)
}

/// Where a database URL points, without credentials or options:
/// `postgres://host:port/db`, or the SQLite file.
pub fn describe(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let rest = rest.split('?').next().unwrap_or(rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    if scheme.is_empty() {
        rest.to_owned()
    } else {
        format!("{scheme}://{rest}")
    }
}

#[cfg(test)]
mod tests {
    use super::{describe, Engine};

    #[test]
    fn a_url_is_described_without_credentials() {
        assert_eq!(
            describe("postgres://gw:s3cret@db.internal:5433/points?sslmode=require"),
            "postgres://db.internal:5433/points"
        );
        assert_eq!(
            describe("sqlite://data/gw.sqlite?mode=rwc"),
            "sqlite://data/gw.sqlite"
        );
    }

    #[test]
    fn the_engine_comes_from_the_url_scheme() {
        assert_eq!(
            Engine::of_url("postgres://u@h/db").ok(),
            Some(Engine::Postgres)
        );
        assert_eq!(
            Engine::of_url("postgresql://u@h/db").ok(),
            Some(Engine::Postgres)
        );
        assert_eq!(
            Engine::of_url("sqlite://x.sqlite?mode=rwc").ok(),
            Some(Engine::Sqlite)
        );
        assert!(Engine::of_url("mysql://u@h/db").is_err());
        assert!(Engine::of_url("").is_err());
    }

    #[tokio::test]
    async fn timers_statements_are_not_counted_as_requests() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("c.sqlite").display()
        );
        let store = super::Store::connect(&url, 2).await.unwrap();
        let before = store.statements();
        store.all("SELECT 1", Vec::new()).await.unwrap();
        assert_eq!(store.statements() - before, 1);
        super::in_background(async {
            store.all("SELECT 1", Vec::new()).await.unwrap();
            store.all("SELECT 2", Vec::new()).await.unwrap();
        })
        .await;
        assert_eq!(store.statements() - before, 1);
        store.all("SELECT 3", Vec::new()).await.unwrap();
        assert_eq!(store.statements() - before, 2);
    }
}
