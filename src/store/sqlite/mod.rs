//! What only SQLite does: durable connection settings, write transactions
//! that take the write lock at `BEGIN`, and statements shaped for its
//! planner.

use std::time::Duration;

use sea_orm::{
    ConnectOptions, DatabaseConnection, DatabaseTransaction, DbErr, SqliteTransactionMode,
    TransactionOptions, TransactionTrait,
};

/// WAL mode with `synchronous=FULL` (an acknowledged commit survives a
/// power cut) and a busy timeout, so writers queue instead of failing.
/// `read_only`: the file must exist, is opened read-only, and keeps its
/// journal mode (switching it to WAL would change the file).
pub(super) fn connect_options(opts: &mut ConnectOptions, read_only: bool) {
    if read_only {
        opts.map_sqlx_sqlite_opts(|o| {
            o.create_if_missing(false)
                .read_only(true)
                .busy_timeout(Duration::from_secs(30))
        });
        return;
    }
    opts.map_sqlx_sqlite_pool_opts(|o| {
        o.after_release(|conn, _| Box::pin(async move { Ok(clean(conn).await) }))
    });
    opts.map_sqlx_sqlite_opts(|o| {
        o.create_if_missing(true)
            .journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
            .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true)
    });
}

/// Whether a connection coming back to the pool is outside any
/// transaction, both in sqlx's count and in SQLite itself; `false` closes
/// it and the pool opens a fresh one.
///
/// Why: after an engine error inside a write (a `COMMIT` refused with
/// `SQLITE_FULL` or an I/O error), SQLite may roll the transaction back on
/// its own, and then sqlx's `ROLLBACK` fails and its depth stays at 1; or
/// the transaction stays open. Either way the next `begin` on that
/// connection would open a `SAVEPOINT` inside a transaction that never
/// commits, and "commit" writes that are never on disk while it holds the
/// write lock. A connection whose state is not proven clean is never
/// reused. The check runs when the connection is returned, off the
/// request's path, and after sqlx's queued rollback (the handle lock is
/// queued behind it on the connection's worker).
async fn clean(conn: &mut sea_orm::sqlx::SqliteConnection) -> bool {
    let autocommit = match conn.lock_handle().await {
        // SAFETY: the handle is locked out of the worker thread for the
        // duration of this call, as `as_raw_handle` requires, and
        // `sqlite3_get_autocommit` only reads the connection's flag.
        Ok(mut handle) => unsafe {
            libsqlite3_sys::sqlite3_get_autocommit(handle.as_raw_handle().as_ptr()) != 0
        },
        Err(_) => false,
    };
    let depth = <sea_orm::sqlx::sqlite::SqliteTransactionManager as sqlx_core::transaction::TransactionManager>::get_transaction_depth(conn);
    if !autocommit || depth != 0 {
        tracing::warn!(
            depth,
            autocommit,
            "a SQLite connection left a transaction unfinished; closing it"
        );
        return false;
    }
    true
}

/// Takes the write lock at `BEGIN` (IMMEDIATE), so two writers never both
/// read and then deadlock upgrading their locks: the second waits on the
/// busy timeout instead of failing with "database is locked".
pub async fn begin_immediate(db: &DatabaseConnection) -> Result<DatabaseTransaction, DbErr> {
    db.begin_with_options(TransactionOptions {
        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
        ..Default::default()
    })
    .await
}

/// The user row. The IMMEDIATE transaction already holds the database's
/// write lock and its reads are current: nothing to lock or read ahead.
pub(super) fn lock_user_sql(filter: &str, probe_sql: &str) -> String {
    let last_at = super::sql::LAST_AT_SQL.replace("{uuid}", "u.uuid");
    format!(
        "SELECT u.id, u.uuid, u.balance, u.held, u.hold_seq, {last_at} AS last_at{probe_sql} \
         FROM gw_users u WHERE {filter}"
    )
}

/// The file a `sqlite:` URL names (`None` for an in-memory database).
pub(super) fn file_of(url: &str) -> Option<std::path::PathBuf> {
    let rest = url.strip_prefix("sqlite:")?;
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let path = rest.split('?').next().unwrap_or(rest);
    if path.is_empty() || path == ":memory:" {
        None
    } else {
        Some(std::path::PathBuf::from(path))
    }
}
