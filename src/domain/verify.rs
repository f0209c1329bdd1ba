//! `points-gateway verify`: every invariant of DESIGN.md section 3, checked
//! over the whole database. Read-only; each violation names its rows.

use std::collections::HashMap;

use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr, QueryResult, Statement};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Which rule: `chain`, `balance`, `batch`, `allocation`, `refund_cap`, `mirror`, `fal_refund`.
    pub rule: &'static str,
    pub detail: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}] {}", self.rule, self.detail)
    }
}

/// What was checked, for the report line.
#[derive(Debug, Default, Clone)]
pub struct Checked {
    pub users: u64,
    pub ledger_rows: u64,
    pub batches: u64,
}

const CHUNK: i64 = 20_000;

async fn all(db: &DatabaseConnection, sql: &str) -> Result<Vec<QueryResult>, DbErr> {
    db.query_all_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
}

pub async fn verify(db: &DatabaseConnection) -> Result<(Checked, Vec<Violation>), DbErr> {
    let backend = db.get_database_backend();
    let mut v = Vec::new();
    let mut checked = Checked::default();
    let push = |v: &mut Vec<Violation>, rule, detail: String| v.push(Violation { rule, detail });

    // 1. Chains, read in id order per user, a chunk at a time.
    let mut last_after: HashMap<Uuid, i64> = HashMap::new();
    let mut last_id: i64 = 0;
    loop {
        let rows = db
            .query_all_raw(Statement::from_sql_and_values(
                backend,
                "SELECT id, user_id, type, amount, balance_before, balance_after \
                 FROM mjk_point_transactions WHERE id > $1 ORDER BY id LIMIT $2",
                [last_id.into(), CHUNK.into()],
            ))
            .await?;
        if rows.is_empty() {
            break;
        }
        for r in &rows {
            let id: i64 = r.try_get("", "id")?;
            let user: Uuid = r.try_get("", "user_id")?;
            let ty: String = r.try_get("", "type")?;
            let amount: i64 = r.try_get("", "amount")?;
            let before: i64 = r.try_get("", "balance_before")?;
            let after: i64 = r.try_get("", "balance_after")?;
            last_id = id;
            checked.ledger_rows += 1;
            let sign = match crate::domain::source::TxType::parse(&ty) {
                Some(t) => t.sign(),
                None => {
                    push(&mut v, "chain", format!("row {id}: unknown type {ty:?}"));
                    continue;
                }
            };
            if amount <= 0 {
                push(
                    &mut v,
                    "chain",
                    format!("row {id}: amount {amount} is not positive"),
                );
            }
            if after != before + sign * amount {
                push(
                    &mut v,
                    "chain",
                    format!("row {id}: {before} {ty} {amount} gives {after}"),
                );
            }
            if after < 0 {
                push(
                    &mut v,
                    "chain",
                    format!("row {id}: balance_after {after} is negative"),
                );
            }
            let prev = last_after.get(&user).copied().unwrap_or(0);
            if before != prev {
                push(
                    &mut v,
                    "chain",
                    format!("row {id}: balance_before {before} but the previous row of user {user} ended at {prev}"),
                );
            }
            last_after.insert(user, after);
        }
    }

    // 2. Cached balance = last balance_after = sum of batch remaining.
    for r in all(
        db,
        "SELECT u.id AS id, u.uuid AS uuid, u.balance AS balance, \
         CAST(COALESCE((SELECT SUM(b.remaining) FROM mjk_point_batches b WHERE b.user_id = u.id), 0) AS BIGINT) AS in_batches \
         FROM ts_users u ORDER BY u.id",
    )
    .await?
    {
        checked.users += 1;
        let id: i32 = r.try_get("", "id")?;
        let uuid: Uuid = r.try_get("", "uuid")?;
        let balance: i64 = r.try_get("", "balance")?;
        let in_batches: i64 = r.try_get("", "in_batches")?;
        let ledger = last_after.remove(&uuid).unwrap_or(0);
        if balance != ledger {
            push(&mut v, "balance", format!("user {id}: cached balance {balance}, ledger says {ledger}"));
        }
        if balance != in_batches {
            push(&mut v, "balance", format!("user {id}: cached balance {balance}, batches hold {in_batches}"));
        }
    }
    for (uuid, _) in last_after {
        push(
            &mut v,
            "balance",
            format!("ledger rows for unknown user {uuid}"),
        );
    }

    // 3. Each batch: remaining = amount - drawn + returned - expired, within [0, amount].
    for r in all(
        db,
        // Pre-aggregated and joined, not correlated per batch: linear in
        // the ledger's size (there is no index on the ledger's batch_id).
        "SELECT b.id AS id, b.amount AS amount, b.remaining AS remaining, \
         CAST(COALESCE(m.moved, 0) AS BIGINT) AS moved, CAST(COALESCE(x.expired, 0) AS BIGINT) AS expired \
         FROM mjk_point_batches b \
         LEFT JOIN (SELECT a.batch_id AS batch_id, \
                           SUM(CASE WHEN t.type = 'consume' THEN -a.amount ELSE a.amount END) AS moved \
                    FROM mjk_point_allocations a JOIN mjk_point_transactions t ON t.id = a.entry_id \
                    GROUP BY a.batch_id) m ON m.batch_id = b.id \
         LEFT JOIN (SELECT batch_id, SUM(amount) AS expired FROM mjk_point_transactions \
                    WHERE type = 'expire' GROUP BY batch_id) x ON x.batch_id = b.id \
         ORDER BY b.id",
    )
    .await?
    {
        checked.batches += 1;
        let id: i64 = r.try_get("", "id")?;
        let amount: i64 = r.try_get("", "amount")?;
        let remaining: i64 = r.try_get("", "remaining")?;
        let moved: i64 = r.try_get("", "moved")?;
        let expired: i64 = r.try_get("", "expired")?;
        if remaining < 0 || remaining > amount {
            push(
                &mut v,
                "batch",
                format!("batch {id}: remaining {remaining} outside [0, {amount}]"),
            );
        }
        if remaining != amount + moved - expired {
            push(
                &mut v,
                "batch",
                format!("batch {id}: remaining {remaining}, but {amount} {moved:+} moved - {expired} expired"),
            );
        }
    }

    // 4. Allocations sum to every consume and refund.
    for r in all(
        db,
        "SELECT t.id AS id, t.type AS type, t.amount AS amount, \
         CAST(COALESCE(s.allocated, 0) AS BIGINT) AS allocated \
         FROM mjk_point_transactions t \
         LEFT JOIN (SELECT entry_id, SUM(amount) AS allocated FROM mjk_point_allocations GROUP BY entry_id) s \
           ON s.entry_id = t.id \
         WHERE t.type IN ('consume', 'refund') AND t.amount <> COALESCE(s.allocated, 0)",
    )
    .await?
    {
        let id: i64 = r.try_get("", "id")?;
        let ty: String = r.try_get("", "type")?;
        let amount: i64 = r.try_get("", "amount")?;
        let allocated: i64 = r.try_get("", "allocated")?;
        push(&mut v, "allocation", format!("{ty} {id}: amount {amount}, allocations {allocated}"));
    }

    // 5. Refund caps, per consume and per (consume, batch).
    for r in all(
        db,
        "SELECT c.id AS id, c.amount AS amount, CAST(SUM(r.amount) AS BIGINT) AS refunded \
         FROM mjk_point_transactions c JOIN mjk_point_transactions r ON r.refund_of = c.id \
         GROUP BY c.id, c.amount HAVING SUM(r.amount) > c.amount",
    )
    .await?
    {
        let id: i64 = r.try_get("", "id")?;
        let amount: i64 = r.try_get("", "amount")?;
        let refunded: i64 = r.try_get("", "refunded")?;
        push(
            &mut v,
            "refund_cap",
            format!("consume {id}: consumed {amount}, refunded {refunded}"),
        );
    }
    for r in all(
        db,
        "SELECT t.refund_of AS consume_id, a.batch_id AS batch_id, CAST(SUM(a.amount) AS BIGINT) AS back, \
         CAST(COALESCE((SELECT SUM(d.amount) FROM mjk_point_allocations d \
                   WHERE d.entry_id = t.refund_of AND d.batch_id = a.batch_id), 0) AS BIGINT) AS drawn \
         FROM mjk_point_allocations a JOIN mjk_point_transactions t ON t.id = a.entry_id \
         WHERE t.type = 'refund' GROUP BY t.refund_of, a.batch_id",
    )
    .await?
    {
        let consume: i64 = r.try_get("", "consume_id")?;
        let batch: i64 = r.try_get("", "batch_id")?;
        let back: i64 = r.try_get("", "back")?;
        let drawn: i64 = r.try_get("", "drawn")?;
        if back > drawn {
            push(
                &mut v,
                "refund_cap",
                format!("consume {consume}: batch {batch} got {back} back but gave {drawn}"),
            );
        }
    }

    // 6. One ts_points_detail mirror per ledger row, with the same figures.
    for r in all(
        db,
        "SELECT t.id AS id, COUNT(p.id) AS mirrors FROM mjk_point_transactions t \
         LEFT JOIN ts_points_detail p ON p.ledger_id = t.id \
         LEFT JOIN ts_users u ON u.uuid = t.user_id \
         WHERE p.id IS NULL OR p.user_id <> u.id \
            OR p.points <> (CASE WHEN t.type IN ('recharge', 'refund') THEN t.amount ELSE -t.amount END) \
            OR p.balance_before <> t.balance_before OR p.balance_after <> t.balance_after \
         GROUP BY t.id",
    )
    .await?
    {
        let id: i64 = r.try_get("", "id")?;
        push(&mut v, "mirror", format!("ledger row {id}: ts_points_detail mirror missing or different"));
    }

    // 7. Refunded fal jobs are flagged on the task.
    for r in all(
        db,
        "SELECT DISTINCT f.task_id AS task_id FROM mjk_point_transactions t \
         JOIN ts_fal_tasks f ON f.task_id = t.source_id \
         WHERE t.type = 'refund' AND t.source_type = 'fal' AND f.is_refund <> 1",
    )
    .await?
    {
        let task: String = r.try_get("", "task_id")?;
        push(
            &mut v,
            "fal_refund",
            format!("fal task {task} was refunded but is_refund is not 1"),
        );
    }

    Ok((checked, v))
}
