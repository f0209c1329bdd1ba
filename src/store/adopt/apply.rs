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

/// PostgreSQL: a repeatable-read transaction whose snapshot is taken at
/// once, for the openings of the adoption window: begun while the arming
/// transaction holds the legacy tables, it sees every legacy write before
/// the arming and none after (those are recorded, see [`super::window`]).
pub async fn begin_snapshot(store: &Store) -> Result<WriteTx, StoreError> {
    use sea_orm::IsolationLevel;
    let txn = store
        .conn()
        .begin_with(Some(IsolationLevel::RepeatableRead))
        .await?;
    txn.execute_unprepared("SELECT 1").await?;
    Ok(WriteTx::new(
        txn,
        store.engine,
        store.zone,
        crate::store::Feed::silent(),
    ))
}

/// [`super::ts_columns`] inside `tx`.
pub async fn ts_columns_in(
    tx: &WriteTx,
    wanted: &BalanceColumnsWanted,
) -> Result<Result<Option<super::TsBalanceColumns>, String>, StoreError> {
    super::ts_columns(tx.txn(), wanted).await
}

/// [`standing`] inside `tx`.
pub async fn standing_in(tx: &WriteTx) -> Result<Standing, StoreError> {
    standing(tx.txn()).await
}

/// [`inventory`] inside `tx`; `lock`: the legacy tables are locked first
/// ([`lock_legacy`]; on SQLite the transaction holds the file), so the
/// history, the balances and the cutover are one moment.
pub async fn inventory_in(
    tx: &WriteTx,
    lock: bool,
    wanted: &BalanceColumnsWanted,
) -> Result<Inventory, StoreError> {
    if lock {
        match tx.engine() {
            Engine::Postgres => lock_legacy(tx).await?,
            // The IMMEDIATE transaction holds the file's write lock.
            Engine::Sqlite => {}
        }
    }
    inventory(tx.txn(), wanted).await
}

/// The legacy tables in the order their writers take them (the ts code
/// locks its `ts_users` row, then appends to the statement and the money
/// table), `ts_users` included: `adopt` rewrites its balance columns.
const LOCK_ORDER: [&str; 7] = [
    "ts_users",
    "ts_points_detail",
    "ts_financial_transactions",
    "ts_fal_account",
    "ts_fal_tasks",
    "mjk_users",
    "mjk_point_transactions",
];

/// Locks every legacy table against writes without ever waiting while
/// holding some: a writer holding one table and waiting for another would
/// deadlock with a lock taken table by table. Each attempt waits at most
/// 100 ms (below PostgreSQL's deadlock check) and is undone when it times
/// out; writers' transactions are short, so an attempt soon finds them
/// all free (a waiting lock request also stops new writers queueing ahead).
pub async fn lock_legacy(tx: &WriteTx) -> Result<(), StoreError> {
    debug_assert!(SEED_TABLES.iter().all(|t| LOCK_ORDER.contains(t)));
    let found = existing_tables(tx.txn(), &LOCK_ORDER).await?;
    if found.is_empty() {
        return Ok(());
    }
    let ordered: Vec<&str> = LOCK_ORDER
        .iter()
        .copied()
        .filter(|t| found.iter().any(|f| f == t))
        .collect();
    // EXCLUSIVE mode (plain reads go on): the legacy writers lock a row
    // `FOR UPDATE` first (allowed under SHARE: the ts code its `ts_users`
    // row, the mjk code its newest ledger row), and the adoption rewrites
    // `ts_users` rows and takes the window's ledger and statement rows out
    // to absorb them, which would wait for that row lock while the writer
    // waits for the table.
    let lock = ordered
        .iter()
        .map(|t| format!("LOCK TABLE {t} IN EXCLUSIVE MODE"))
        .collect::<Vec<_>>()
        .join("; ");
    let c = tx.txn();
    c.execute_unprepared("SET LOCAL lock_timeout = '100ms'")
        .await?;
    let mut attempts = 0u32;
    loop {
        c.execute_unprepared("SAVEPOINT gw_adopt_lock").await?;
        match c.execute_unprepared(&lock).await {
            Ok(_) => break,
            Err(e) if attempts < 1800 && StoreError::is_lock_timeout(&e) => {
                attempts += 1;
                c.execute_unprepared("ROLLBACK TO SAVEPOINT gw_adopt_lock")
                    .await?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    c.execute_unprepared("RELEASE SAVEPOINT gw_adopt_lock; SET LOCAL lock_timeout = 0")
        .await?;
    Ok(())
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
    kind: &str,
) -> Result<(), StoreError> {
    let backend = tx.txn().get_database_backend();
    tx.txn()
        .execute_raw(Statement::from_sql_and_values(
            backend,
            "INSERT INTO gw_adoption (kind, cutover_at, ledger_cutover_id, detail_cutover_id, \
               opening_balance, users, report, ts_columns) VALUES ($8, $1, $2, $3, $4, $5, $6, $7)",
            vec![
                chrono::Utc::now().into(),
                inv.ledger_max_id.into(),
                i32::try_from(inv.detail_max_id).unwrap_or(i32::MAX).into(),
                opening.into(),
                i32::try_from(users).unwrap_or(i32::MAX).into(),
                report.into(),
                ts_columns.into(),
                kind.into(),
            ],
        ))
        .await?;
    Ok(())
}

/// One adopted user's opening, as [`open_many`] writes it.
pub struct Opening {
    pub user_id: i32,
    pub paid: i64,
    pub gift: i64,
    /// The opening row's description (label and where the figure came from).
    pub description: String,
}

/// PostgreSQL: the openings of many users in a few statements (one per
/// 5,000 users, data-modifying CTEs over arrays), writing per user exactly
/// what the general path writes for one: the never-expiring batches (gift
/// first, so it is drawn first), the `opening` ledger row stamped now but
/// never before the user's last history row, its mirror, its record and
/// the cached balance. The general path costs seven round trips a user:
/// at 200,000 users most of an adoption. `None` on SQLite (in-process, the
/// general path costs no round trips). Returns the rows written.
pub async fn open_many(tx: &WriteTx, openings: &[Opening]) -> Result<Option<usize>, StoreError> {
    if tx.engine() != Engine::Postgres {
        return Ok(None);
    }
    let backend = tx.txn().get_database_backend();
    let now = chrono::Utc::now();
    let zone = tx.zone_name();
    // Nothing listens yet: the openings are announced to no one (the
    // event trigger skips them, as it does for the gateway's tools).
    tx.txn()
        .execute_unprepared("SET LOCAL points_gateway.notify = 'off'")
        .await?;
    let mut written = 0usize;
    for chunk in openings.chunks(5_000) {
        let ids: Vec<i32> = chunk.iter().map(|o| o.user_id).collect();
        let paid: Vec<i64> = chunk.iter().map(|o| o.paid).collect();
        let gift: Vec<i64> = chunk.iter().map(|o| o.gift).collect();
        let notes: Vec<String> = chunk.iter().map(|o| o.description.clone()).collect();
        let r = tx
            .txn()
            .execute_raw(Statement::from_sql_and_values(
                backend,
                OPEN_MANY,
                vec![
                    ids.into(),
                    paid.into(),
                    gift.into(),
                    notes.into(),
                    now.into(),
                    zone.into(),
                ],
            ))
            .await?;
        written += usize::try_from(r.rows_affected()).unwrap_or(0);
    }
    tx.txn()
        .execute_unprepared("SET LOCAL points_gateway.notify = 'on'")
        .await?;
    Ok(Some(written))
}

const OPEN_MANY: &str = "WITH src AS ( \
    SELECT s.id, s.paid, s.gift, s.note, u.uuid, \
      greatest($5::timestamptz, (SELECT MAX(t.created_at) FROM mjk_point_transactions t \
                                  WHERE t.user_id = u.uuid)) AS at \
    FROM unnest($1::int[], $2::bigint[], $3::bigint[], $4::text[]) AS s(id, paid, gift, note) \
    JOIN gw_users u ON u.id = s.id WHERE s.paid + s.gift > 0), \
  b AS (INSERT INTO gw_point_batches (user_id, kind, funds, amount, remaining, reserved, expires_at, order_id, created_at) \
    SELECT src.id, 'opening', f.funds, f.part, f.part, 0, NULL, f.order_id, src.at \
    FROM src CROSS JOIN LATERAL (VALUES ('gift', src.gift, 'opening:' || src.id || ':gift', 0), \
                                        ('paid', src.paid, 'opening:' || src.id, 1)) AS f(funds, part, order_id, k) \
    WHERE f.part > 0 ORDER BY src.id, f.k RETURNING id, user_id), \
  first AS (SELECT b.user_id, MIN(b.id) AS batch FROM b GROUP BY b.user_id), \
  l AS (INSERT INTO mjk_point_transactions (user_id, type, amount, balance_before, balance_after, \
      source_type, source_id, batch_id, duration, description, created_at, updated_at) \
    SELECT src.uuid, 'opening', src.paid + src.gift, 0, src.paid + src.gift, NULL, 'opening:' || src.id, \
      first.batch, NULL, src.note, src.at, src.at \
    FROM src JOIN first ON first.user_id = src.id ORDER BY src.id RETURNING id, user_id), \
  d AS (INSERT INTO ts_points_detail (user_id, points, order_id, title, source_type, balance_before, \
      balance_after, created_at) \
    SELECT src.id, src.paid + src.gift, 'opening:' || src.id, src.note, 'opening', 0, src.paid + src.gift, \
      src.at AT TIME ZONE $6 \
    FROM src ORDER BY src.id RETURNING id, user_id), \
  e AS (INSERT INTO gw_entries (ledger_id, user_id, type, source_type, source_id, refund_key, refund_of, \
      request_hash, detail_id) \
    SELECT l.id, src.id, 'opening', NULL, 'opening:' || src.id, NULL, NULL, NULL, d.id \
    FROM src JOIN l ON l.user_id = src.uuid JOIN d ON d.user_id = src.id RETURNING 1) \
  UPDATE gw_users u SET balance = src.paid + src.gift, updated_at = src.at FROM src \
  WHERE u.id = src.id AND u.balance = 0";
