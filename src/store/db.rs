//! The store's connection: the pool itself, or, behind a pooler in
//! transaction mode (`DATABASE_POOL_MODE=transaction`), the pool with every
//! statement inside a transaction of its own.
//!
//! PgBouncer in transaction mode hands each transaction to whichever
//! server connection is free, and between transactions to another. sqlx
//! (under sea-orm) prepares a statement and binds it in two exchanges
//! with a `Sync` between them (launchbadge/sqlx#67), and names its
//! prepared statements per client connection: outside a transaction the
//! bind could reach another server, and names collide across clients.
//! So in that mode every statement runs inside a transaction (the server
//! stays the same until `COMMIT`), the statement cache is off (no name
//! outlives its transaction), and each transaction starts with the
//! prelude: `DEALLOCATE ALL` (whatever an earlier client left on that
//! server connection goes) and the session settings as `SET LOCAL`, which
//! end with the transaction instead of staying on a shared server session.

use std::sync::Arc;

use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, ExecResult,
    QueryResult, Statement, TransactionTrait,
};

#[derive(Clone)]
pub struct Db {
    pool: DatabaseConnection,
    /// Transaction mode: what every transaction runs first.
    prelude: Option<Arc<str>>,
}

impl Db {
    pub(super) fn new(pool: DatabaseConnection, prelude: Option<String>) -> Db {
        Db {
            pool,
            prelude: prelude.map(Arc::from),
        }
    }

    /// The pool itself.
    pub fn pool(&self) -> &DatabaseConnection {
        &self.pool
    }

    /// A transaction, readied for a transaction-mode pooler when behind one.
    pub async fn begin(&self) -> Result<DatabaseTransaction, DbErr> {
        self.begin_with(None).await
    }

    /// [`Db::begin`] at an isolation level.
    pub async fn begin_with(
        &self,
        isolation: Option<sea_orm::IsolationLevel>,
    ) -> Result<DatabaseTransaction, DbErr> {
        let txn = match isolation {
            None => self.pool.begin().await?,
            Some(level) => self.pool.begin_with_config(Some(level), None).await?,
        };
        if let Some(p) = &self.prelude {
            txn.execute_unprepared(p).await?;
        }
        Ok(txn)
    }

    fn pooled(&self) -> bool {
        self.prelude.is_some()
    }

    /// Whether this runs behind a transaction-mode pooler.
    pub fn transaction_pooling(&self) -> bool {
        self.pooled()
    }
}

#[async_trait::async_trait]
impl ConnectionTrait for Db {
    fn get_database_backend(&self) -> DbBackend {
        self.pool.get_database_backend()
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        if !self.pooled() {
            return self.pool.execute_raw(stmt).await;
        }
        let txn = self.begin().await?;
        let r = txn.execute_raw(stmt).await?;
        txn.commit().await?;
        Ok(r)
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        if !self.pooled() {
            return self.pool.execute_unprepared(sql).await;
        }
        let txn = self.begin().await?;
        let r = txn.execute_unprepared(sql).await?;
        txn.commit().await?;
        Ok(r)
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        if !self.pooled() {
            return self.pool.query_one_raw(stmt).await;
        }
        let txn = self.begin().await?;
        let r = txn.query_one_raw(stmt).await?;
        txn.commit().await?;
        Ok(r)
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        if !self.pooled() {
            return self.pool.query_all_raw(stmt).await;
        }
        let txn = self.begin().await?;
        let r = txn.query_all_raw(stmt).await?;
        txn.commit().await?;
        Ok(r)
    }
}
