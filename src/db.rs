//! Database connection, migrations, write transactions and the one place
//! where constraint violations are classified.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use migration::{Migrator, MigratorTrait};
use sea_orm::{
    ConnectOptions, Database, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, SqlErr,
    SqliteTransactionMode, TransactionOptions, TransactionTrait,
};

/// Counts every SQL statement the pool runs. Tests use it to prove that a
/// query costs a fixed number of statements (no N+1); `/metrics` can expose it.
#[derive(Debug, Default)]
pub struct StatementCounter(AtomicU64);

impl StatementCounter {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Connects with the durability settings DESIGN.md section 1 requires:
/// SQLite in WAL mode with `synchronous=FULL` and a busy timeout (so writers
/// queue instead of failing), PostgreSQL with its defaults.
pub async fn connect(
    url: &str,
    max_connections: u32,
) -> Result<(DatabaseConnection, Arc<StatementCounter>), DbErr> {
    connect_with(url, max_connections, None).await
}

/// Like [`connect`]; on PostgreSQL `statement_timeout` makes the server
/// abort any statement running longer, so a request cut off by its time
/// budget does not leave its query running (SQLite has no such setting; a
/// dropped statement is interrupted when its connection is reused).
pub async fn connect_with(
    url: &str,
    max_connections: u32,
    statement_timeout: Option<Duration>,
) -> Result<(DatabaseConnection, Arc<StatementCounter>), DbErr> {
    let mut opts = ConnectOptions::new(url.to_owned());
    if let Some(t) = statement_timeout {
        opts.statement_timeout(t);
    }
    opts.max_connections(max_connections)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(30))
        .sqlx_logging(false)
        .map_sqlx_sqlite_opts(|o| {
            o.create_if_missing(true)
                .journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(30))
                .foreign_keys(true)
        })
        // The gateway runs a small fixed set of prepared statements, each
        // with an index path that does not depend on the values bound.
        // Profiling the consume path showed PostgreSQL re-planning them on
        // every execution (custom plans) for a fifth of its CPU.
        .map_sqlx_postgres_opts(|o| o.options([("plan_cache_mode", "force_generic_plan")]));
    let mut db = Database::connect(opts).await?;
    let counter = Arc::new(StatementCounter::default());
    let c = counter.clone();
    db.set_metric_callback(move |_info| {
        c.0.fetch_add(1, Ordering::Relaxed);
    });
    Ok((db, counter))
}

/// `(size, idle)` of the connection pool, for `/metrics`.
pub fn pool_usage(db: &DatabaseConnection) -> (u32, usize) {
    match db.get_database_backend() {
        DbBackend::Postgres => {
            let p = db.get_postgres_connection_pool();
            (p.size(), p.num_idle())
        }
        DbBackend::Sqlite => {
            let p = db.get_sqlite_connection_pool();
            (p.size(), p.num_idle())
        }
        _ => (0, 0),
    }
}

pub async fn migrate(db: &DatabaseConnection) -> Result<(), DbErr> {
    Migrator::up(db, None).await
}

/// Begins a transaction that will write. On SQLite it takes the write lock
/// at `BEGIN` (IMMEDIATE), so two writers never both read and then deadlock
/// upgrading their locks: the second waits on the busy timeout instead of
/// failing with "database is locked". On PostgreSQL row locks do that job.
pub async fn begin_write(db: &DatabaseConnection) -> Result<DatabaseTransaction, DbErr> {
    db.begin_with_options(TransactionOptions {
        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
        ..Default::default()
    })
    .await
}

/// The one classification of database failures the ledger relies on: a
/// unique index refusing a row means another request with the same
/// idempotency key committed first.
pub fn is_unique_violation(err: &DbErr) -> bool {
    matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
}
