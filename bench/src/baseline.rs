//! The baseline: the same consume (same rows written, same locking) issued
//! directly as SQL, no HTTP and no GraphQL. On PostgreSQL it is one call of
//! `gw_consume`, the function the gateway calls (one round trip); on
//! SQLite, in-process, the same
//! statements in one IMMEDIATE transaction with cached prepared statements.

use points_gateway::store::{Engine, Store};
use sea_orm::{ConnectionTrait, Statement};

fn hash(sid: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(sid.as_bytes()))
}

/// One consume of `amount` points by `user`, keyed by `sid`.
pub async fn consume(store: &Store, user: i32, amount: i64, sid: &str) -> anyhow::Result<()> {
    let db = store.connection();
    let backend = db.get_database_backend();
    match store.engine() {
        Engine::Postgres => {
            db.query_one_raw(Statement::from_sql_and_values(
                backend,
                "SELECT o_outcome FROM gw_consume($1, 'script', $2, $3, NULL, '【脚本生成】', $4, \
                 clock_timestamp(), 'Asia/Shanghai')",
                [user.into(), sid.into(), amount.into(), hash(sid).into()],
            ))
            .await?;
            return Ok(());
        }
        Engine::Sqlite => {}
    }
    let txn = points_gateway::store::sqlite::begin_immediate(db).await?;
    let now = points_gateway::time::now();
    let q =
        |sql: &'static str, v: Vec<sea_orm::Value>| Statement::from_sql_and_values(backend, sql, v);
    let u = txn
        .query_one_raw(q(
            "SELECT uuid, balance FROM gw_users WHERE id = $1",
            vec![user.into()],
        ))
        .await?
        .ok_or_else(|| anyhow::anyhow!("no user"))?;
    let uuid: uuid::Uuid = u.try_get("", "uuid")?;
    let bal: i64 = u.try_get("", "balance")?;
    txn.query_one_raw(q(
        "SELECT 1 AS x FROM mjk_point_transactions WHERE source_id = $1 AND type = 'consume' AND source_type = 'script'",
        vec![sid.into()],
    ))
    .await?;
    txn.query_all_raw(q(
        "SELECT id FROM gw_point_batches WHERE user_id = $1 AND remaining > 0 AND expires_at IS NOT NULL AND expires_at <= $2",
        vec![user.into(), now.into()],
    ))
    .await?;
    anyhow::ensure!(bal >= amount, "insufficient");
    let batches = txn
        .query_all_raw(q(
            "SELECT id, remaining FROM gw_point_batches WHERE user_id = $1 AND remaining > 0 AND (expires_at IS NULL OR expires_at > $2) \
             ORDER BY CASE WHEN expires_at IS NULL THEN 1 ELSE 0 END, expires_at, id",
            vec![user.into(), now.into()],
        ))
        .await?;
    let first: i64 = batches
        .first()
        .ok_or_else(|| anyhow::anyhow!("no batch"))?
        .try_get("", "id")?;
    let e = txn
        .query_one_raw(q(
            "INSERT INTO mjk_point_transactions (user_id, type, amount, balance_before, balance_after, source_type, source_id, batch_id, description, created_at, updated_at) \
             VALUES ($1, 'consume', $2, $3, $4, 'script', $5, $6, '【脚本生成】', $7, $7) RETURNING id",
            vec![uuid.into(), amount.into(), bal.into(), (bal - amount).into(), sid.into(), first.into(), now.into()],
        ))
        .await?
        .ok_or_else(|| anyhow::anyhow!("no id"))?;
    let eid: i64 = e.try_get("", "id")?;
    let d = txn
        .query_one_raw(q(
            "INSERT INTO ts_points_detail (user_id, points, order_id, title, source_type, balance_before, balance_after, created_at) \
             VALUES ($1, $2, $3, '【脚本生成】', 'consume', $4, $5, $6) RETURNING id",
            vec![user.into(), (-(amount as i32)).into(), sid.into(), (bal as i32).into(), ((bal - amount) as i32).into(),
                 entity::legacy_time::LocalTime::of(now, points_gateway::store::DEFAULT_LEGACY_ZONE).into()],
        ))
        .await?
        .ok_or_else(|| anyhow::anyhow!("no id"))?;
    let did: i32 = d.try_get("", "id")?;
    txn.execute_raw(q(
        "INSERT INTO gw_entries (ledger_id, user_id, type, source_type, source_id, request_hash, detail_id) \
         VALUES ($1, $2, 'consume', 'script', $3, $4, $5)",
        vec![eid.into(), user.into(), sid.into(), hash(sid).into(), did.into()],
    ))
    .await?;
    let mut need = amount;
    for b in batches {
        let id: i64 = b.try_get("", "id")?;
        let rem: i64 = b.try_get("", "remaining")?;
        let take = rem.min(need);
        txn.execute_raw(q(
            "INSERT INTO gw_point_allocations (entry_id, batch_id, amount) VALUES ($1, $2, $3)",
            vec![eid.into(), id.into(), take.into()],
        ))
        .await?;
        txn.execute_raw(q(
            "UPDATE gw_point_batches SET remaining = remaining - $1 WHERE id = $2",
            vec![take.into(), id.into()],
        ))
        .await?;
        need -= take;
        if need == 0 {
            break;
        }
    }
    txn.execute_raw(q(
        "UPDATE gw_users SET balance = $1, updated_at = $2 WHERE id = $3",
        vec![(bal - amount).into(), now.into(), user.into()],
    ))
    .await?;
    txn.commit().await?;
    Ok(())
}
