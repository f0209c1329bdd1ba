//! What `adopt --apply` writes, in the one transaction [`begin`] opens.

use sea_orm::{ConnectionTrait, Statement};

use super::{
    existing_tables, inventory, standing, AdoptedUser, BalanceColumnsWanted, Inventory, Standing,
    SEED_TABLES,
};
use crate::store::{Engine, Store, StoreError, WriteTx};

/// A write transaction for `adopt`: schema, users and opening rows commit
/// together or not at all (SQLite: the write lock is taken at `BEGIN`).
pub async fn begin(store: &Store) -> Result<WriteTx, StoreError> {
    let txn = store.begin_schema().await?;
    Ok(WriteTx::new(
        txn,
        store.engine,
        store.zone,
        crate::store::Feed::silent(),
    ))
}

/// [`standing`] inside `tx`.
pub async fn standing_in(tx: &WriteTx) -> Result<Standing, StoreError> {
    standing(tx.txn()).await
}

/// [`inventory`] inside `tx`. Applying, the seed tables are locked first
/// (PostgreSQL, `SHARE`: the platforms' writers wait until the adoption
/// commits), so the history, the balances and the cutover are one moment.
pub async fn inventory_in(
    tx: &WriteTx,
    lock: bool,
    wanted: &BalanceColumnsWanted,
) -> Result<Inventory, StoreError> {
    if lock {
        match tx.engine() {
            Engine::Postgres => {
                let found = existing_tables(tx.txn(), &SEED_TABLES).await?;
                if !found.is_empty() {
                    tx.txn()
                        .execute_unprepared(&format!(
                            "LOCK TABLE {} IN SHARE MODE",
                            found.join(", ")
                        ))
                        .await?;
                }
            }
            // The IMMEDIATE transaction holds the file's write lock.
            Engine::Sqlite => {}
        }
    }
    inventory(tx.txn(), wanted).await
}

/// Creates what is missing (the gateway's tables, missing seed tables,
/// indexes, the trigger) inside `tx`.
pub async fn install(tx: &WriteTx) -> Result<(), StoreError> {
    use migration::{Migrator, MigratorTrait};
    Migrator::up(tx.txn(), None).await?;
    Ok(())
}

/// The adopted users, with zero balances; later ids the gateway gives out
/// continue from `first_free` (above any id the ts platform will reach).
pub async fn insert_users(
    tx: &WriteTx,
    users: &[AdoptedUser],
    first_free: i32,
) -> Result<(), StoreError> {
    let now = chrono::Utc::now();
    let backend = tx.txn().get_database_backend();
    for chunk in users.chunks(500) {
        let mut values: Vec<sea_orm::Value> = Vec::with_capacity(chunk.len() * 4 + 1);
        values.push(now.into());
        let rows: Vec<String> = chunk
            .iter()
            .map(|u| {
                values.push(u.id.into());
                values.push(u.uuid.into());
                values.push(u.name.clone().into());
                let n = values.len();
                format!("(${}, ${}, ${}, 0, $1, $1)", n - 2, n - 1, n)
            })
            .collect();
        tx.txn()
            .execute_raw(Statement::from_sql_and_values(
                backend,
                format!(
                    "INSERT INTO gw_users (id, uuid, name, balance, created_at, updated_at) VALUES {}",
                    rows.join(", ")
                ),
                values,
            ))
            .await?;
    }
    let floor = first_free - 1;
    let sql = match tx.engine() {
        Engine::Postgres => format!(
            "SELECT setval(pg_get_serial_sequence('gw_users', 'id'), \
             GREATEST(COALESCE((SELECT MAX(id) FROM gw_users), 0), {floor}))"
        ),
        Engine::Sqlite => {
            tx.txn()
                .execute_unprepared(&format!(
                    "INSERT INTO sqlite_sequence (name, seq) SELECT 'gw_users', {floor} \
                     WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'gw_users')"
                ))
                .await?;
            format!("UPDATE sqlite_sequence SET seq = MAX(seq, {floor}) WHERE name = 'gw_users'")
        }
    };
    tx.txn().execute_unprepared(&sql).await?;
    Ok(())
}

/// The adoption record: the cutover, the policy, the report.
pub async fn record(
    tx: &WriteTx,
    inv: &Inventory,
    opening: &str,
    users: usize,
    report: &str,
    ts_columns: Option<String>,
) -> Result<(), StoreError> {
    let backend = tx.txn().get_database_backend();
    tx.txn()
        .execute_raw(Statement::from_sql_and_values(
            backend,
            "INSERT INTO gw_adoption (kind, cutover_at, ledger_cutover_id, detail_cutover_id, \
               opening_balance, users, report, ts_columns) VALUES ('adopted', $1, $2, $3, $4, $5, $6, $7)",
            vec![
                chrono::Utc::now().into(),
                inv.ledger_max_id.into(),
                i32::try_from(inv.detail_max_id).unwrap_or(i32::MAX).into(),
                opening.into(),
                i32::try_from(users).unwrap_or(i32::MAX).into(),
                report.into(),
                ts_columns.into(),
            ],
        ))
        .await?;
    Ok(())
}
