//! The reads behind `verify`: the whole database, a chunk or an aggregate
//! at a time. Which rows break a rule is decided by the domain
//! (`domain::verify`); these only gather the figures, each in one pass.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Store, StoreError};

/// One ledger row's chain figures.
#[derive(Debug, Clone)]
pub struct ChainRow {
    pub id: i64,
    pub user: Uuid,
    pub tx_type: String,
    pub amount: i64,
    pub before: i64,
    pub after: i64,
    pub created_at: DateTime<Utc>,
    /// Whether the gateway wrote it (it has a `gw_entries` record).
    pub gateway: bool,
}

/// The last ledger id of the history before the gateway took over (0 on a
/// database the gateway made): the invariants hold from the next row on.
pub async fn cutover(store: &Store) -> Result<i64, StoreError> {
    Ok(super::adopt::adoption_row(store.conn())
        .await?
        .map_or(0, |a| a.ledger_cutover_id))
}

/// Up to `limit` ledger rows with ids above `after_id`, in id order.
pub async fn chain_chunk(
    store: &Store,
    after_id: i64,
    limit: i64,
) -> Result<Vec<ChainRow>, StoreError> {
    store
        .rows(
            "SELECT t.id AS id, t.user_id AS user_id, t.type AS type, \
               CAST(t.amount AS BIGINT) AS amount, CAST(t.balance_before AS BIGINT) AS balance_before, \
               CAST(t.balance_after AS BIGINT) AS balance_after, t.created_at AS created_at, \
               CASE WHEN g.ledger_id IS NULL THEN 0 ELSE 1 END AS gateway \
             FROM mjk_point_transactions t LEFT JOIN gw_entries g ON g.ledger_id = t.id \
             WHERE t.id > $1 ORDER BY t.id LIMIT $2",
            vec![after_id.into(), limit.into()],
            |r| {
                Ok(ChainRow {
                    id: r.try_get("", "id")?,
                    user: r.try_get("", "user_id")?,
                    tx_type: r.try_get("", "type")?,
                    amount: r.try_get("", "amount")?,
                    before: r.try_get("", "balance_before")?,
                    after: r.try_get("", "balance_after")?,
                    created_at: r.try_get("", "created_at")?,
                    gateway: r.try_get::<i32>("", "gateway")? == 1,
                })
            },
        )
        .await
}

/// A user's cached balance beside what their batches hold.
#[derive(Debug, Clone)]
pub struct UserFigures {
    pub id: i32,
    pub uuid: Uuid,
    pub balance: i64,
    /// What the batches hold: `remaining + reserved`.
    pub in_batches: i64,
    /// The cached `held`, the batches' `reserved` and the open holds' sum.
    pub held: i64,
    pub reserved: i64,
    pub open_holds: i64,
}

pub async fn users(store: &Store) -> Result<Vec<UserFigures>, StoreError> {
    store
        .rows(
            "SELECT u.id AS id, u.uuid AS uuid, u.balance AS balance, \
             CAST(COALESCE((SELECT SUM(b.remaining + b.reserved) FROM gw_point_batches b WHERE b.user_id = u.id), 0) AS BIGINT) AS in_batches, \
             u.held AS held, \
             CAST(COALESCE((SELECT SUM(b.reserved) FROM gw_point_batches b WHERE b.user_id = u.id), 0) AS BIGINT) AS reserved, \
             CAST(COALESCE((SELECT SUM(h.amount) FROM gw_holds h WHERE h.user_id = u.id AND h.status = 'held'), 0) AS BIGINT) AS open_holds \
             FROM gw_users u ORDER BY u.id",
            Vec::new(),
            |r| {
            Ok(UserFigures {
                id: r.try_get("", "id")?,
                uuid: r.try_get("", "uuid")?,
                balance: r.try_get("", "balance")?,
                in_batches: r.try_get("", "in_batches")?,
                held: r.try_get("", "held")?,
                reserved: r.try_get("", "reserved")?,
                open_holds: r.try_get("", "open_holds")?,
            })
        },
        )
        .await
}

/// A batch with what moved through it: `moved` = returned by refunds
/// minus drawn by consumes (from the allocations), `expired` = its
/// `expire` rows.
#[derive(Debug, Clone)]
pub struct BatchFigures {
    pub id: i64,
    pub amount: i64,
    pub remaining: i64,
    pub reserved: i64,
    /// What the parts of open holds reserve in this batch.
    pub held_parts: i64,
    pub moved: i64,
    pub expired: i64,
}

pub async fn batches(store: &Store) -> Result<Vec<BatchFigures>, StoreError> {
    store
        .rows(
            // Pre-aggregated and joined, not correlated per batch: linear in
            // the ledger's size (there is no index on the ledger's batch_id).
            // A `restored` batch is created holding what the refund of a
            // consume from before the cutover returned: that refund's
            // allocation is its amount, not a movement on top of it. An
            // `expire` row the gateway wrote names its one batch; one
            // absorbed from the legacy ledger drew like a consume.
            "SELECT b.id AS id, b.amount AS amount, b.remaining AS remaining, b.reserved AS reserved, \
             CAST(COALESCE(p.held, 0) AS BIGINT) AS held_parts, \
             CAST(COALESCE(m.moved, 0) AS BIGINT) AS moved, CAST(COALESCE(x.expired, 0) AS BIGINT) AS expired \
             FROM gw_point_batches b \
             LEFT JOIN (SELECT a.batch_id AS batch_id, \
                               SUM(CASE WHEN t.type IN ('consume', 'expire') THEN -a.amount ELSE a.amount END) AS moved \
                        FROM gw_point_allocations a JOIN gw_entries t ON t.ledger_id = a.entry_id \
                        JOIN gw_point_batches ab ON ab.id = a.batch_id \
                        WHERE NOT (ab.kind = 'restored' AND t.type = 'refund' \
                                   AND ab.order_id = 'restored:' || t.refund_key) \
                        GROUP BY a.batch_id) m ON m.batch_id = b.id \
             LEFT JOIN (SELECT t.batch_id AS batch_id, SUM(t.amount) AS expired \
                        FROM mjk_point_transactions t JOIN gw_entries g ON g.ledger_id = t.id \
                        WHERE g.type = 'expire' AND g.origin IS NULL GROUP BY t.batch_id) x ON x.batch_id = b.id \
             LEFT JOIN (SELECT hp.batch_id AS batch_id, SUM(hp.amount) AS held \
                        FROM gw_hold_parts hp JOIN gw_holds h ON h.id = hp.hold_id \
                        WHERE h.status = 'held' GROUP BY hp.batch_id) p ON p.batch_id = b.id \
             ORDER BY b.id",
            Vec::new(),
            |r| {
            Ok(BatchFigures {
                id: r.try_get("", "id")?,
                amount: r.try_get("", "amount")?,
                remaining: r.try_get("", "remaining")?,
                reserved: r.try_get("", "reserved")?,
                held_parts: r.try_get("", "held_parts")?,
                moved: r.try_get("", "moved")?,
                expired: r.try_get("", "expired")?,
            })
        },
        )
        .await
}

/// Consumes and refunds whose allocations do not add up to their amount,
/// as `(id, type, amount, allocated)`.
pub async fn misallocated(store: &Store) -> Result<Vec<(i64, String, i64, i64)>, StoreError> {
    store
        .rows(
            "SELECT t.id AS id, t.type AS type, CAST(t.amount AS BIGINT) AS amount, \
             CAST(COALESCE(s.allocated, 0) AS BIGINT) AS allocated \
             FROM mjk_point_transactions t JOIN gw_entries g ON g.ledger_id = t.id \
             LEFT JOIN (SELECT entry_id, SUM(amount) AS allocated FROM gw_point_allocations GROUP BY entry_id) s \
               ON s.entry_id = t.id \
             WHERE t.type IN ('consume', 'refund') AND t.amount <> COALESCE(s.allocated, 0)",
            Vec::new(),
            |r| {
            Ok((
                r.try_get("", "id")?,
                r.try_get("", "type")?,
                r.try_get("", "amount")?,
                r.try_get("", "allocated")?,
            ))
        },
        )
        .await
}

/// Consumes refunded more than they took, as `(id, amount, refunded)`.
pub async fn over_refunded(
    store: &Store,
    cutover: i64,
) -> Result<Vec<(i64, i64, i64)>, StoreError> {
    store
        .rows(
            // A consume of the history before the cutover took what every
            // legacy consume under its key took (the old system charged
            // some keys twice), and its legacy refunds count too.
            "SELECT s.id AS id, CAST(s.took AS BIGINT) AS amount, CAST(s.back AS BIGINT) AS refunded FROM (\
               SELECT c.id AS id, \
                 CASE WHEN c.id <= $1 THEN (SELECT SUM(l.amount) FROM mjk_point_transactions l \
                     WHERE l.source_id = c.source_id AND l.type = 'consume' \
                       AND l.source_type = c.source_type AND l.id <= $1) ELSE MAX(c.amount) END AS took, \
                 SUM(r.amount) + CASE WHEN c.id <= $1 THEN COALESCE((SELECT SUM(l.amount) \
                     FROM mjk_point_transactions l WHERE l.source_id = c.source_id AND l.type = 'refund' \
                       AND l.source_type = c.source_type AND l.id <= $1), 0) ELSE 0 END AS back \
               FROM gw_entries g JOIN mjk_point_transactions r ON r.id = g.ledger_id \
               JOIN mjk_point_transactions c ON c.id = g.refund_of \
               GROUP BY c.id, c.source_id, c.source_type) s WHERE s.back > s.took",
            vec![cutover.into()],
            |r| {
                Ok((
                    r.try_get("", "id")?,
                    r.try_get("", "amount")?,
                    r.try_get("", "refunded")?,
                ))
            },
        )
        .await
}

/// Per refunded consume and batch, `(consume_id, batch_id, returned,
/// drawn)`. Refunds of consumes before the cutover (which drew from no
/// batch of the gateway's) are left out: their points go to a batch of
/// their own.
pub async fn refunds_per_batch(
    store: &Store,
    cutover: i64,
) -> Result<Vec<(i64, i64, i64, i64)>, StoreError> {
    store
        .rows(
            "SELECT t.refund_of AS consume_id, a.batch_id AS batch_id, CAST(SUM(a.amount) AS BIGINT) AS back, \
             CAST(COALESCE((SELECT SUM(d.amount) FROM gw_point_allocations d \
                       WHERE d.entry_id = t.refund_of AND d.batch_id = a.batch_id), 0) AS BIGINT) AS drawn \
             FROM gw_point_allocations a JOIN gw_entries t ON t.ledger_id = a.entry_id \
             WHERE t.type = 'refund' AND t.refund_of > $1 GROUP BY t.refund_of, a.batch_id",
            vec![cutover.into()],
            |r| {
            Ok((
                r.try_get("", "consume_id")?,
                r.try_get("", "batch_id")?,
                r.try_get("", "back")?,
                r.try_get("", "drawn")?,
            ))
        },
        )
        .await
}

/// Entries without their ledger row or user, allocations without their
/// entry or batch: `(what, id)`, at most 1,000.
pub async fn orphans(store: &Store) -> Result<Vec<(String, i64)>, StoreError> {
    store
        .rows(
            "SELECT 'entry' AS what, g.ledger_id AS id FROM gw_entries g \
             WHERE NOT EXISTS (SELECT 1 FROM mjk_point_transactions t WHERE t.id = g.ledger_id) \
                OR NOT EXISTS (SELECT 1 FROM gw_users u WHERE u.id = g.user_id) \
             UNION ALL \
             SELECT 'allocation' AS what, a.id AS id FROM gw_point_allocations a \
             WHERE NOT EXISTS (SELECT 1 FROM gw_entries g WHERE g.ledger_id = a.entry_id) \
                OR NOT EXISTS (SELECT 1 FROM gw_point_batches b WHERE b.id = a.batch_id) \
             LIMIT 1000",
            Vec::new(),
            |r| Ok((r.try_get("", "what")?, r.try_get("", "id")?)),
        )
        .await
}

/// Ledger rows whose `ts_points_detail` mirror is missing or differs.
pub async fn unmirrored(store: &Store) -> Result<Vec<i64>, StoreError> {
    store
        .rows(
            "SELECT t.id AS id FROM gw_entries g \
             JOIN mjk_point_transactions t ON t.id = g.ledger_id \
             LEFT JOIN ts_points_detail p ON p.id = g.detail_id \
             WHERE p.id IS NULL OR p.user_id <> g.user_id \
                OR p.points <> (CASE WHEN t.type IN ('recharge', 'refund', 'opening') THEN t.amount ELSE -t.amount END) \
                OR p.balance_before <> t.balance_before OR p.balance_after <> t.balance_after",
            Vec::new(),
            |r| r.try_get("", "id"),
        )
        .await
}

/// fal tasks refunded in the ledger but not flagged `is_refund = 1`.
pub async fn unflagged_fal_refunds(store: &Store) -> Result<Vec<String>, StoreError> {
    store
        .rows(
            "SELECT DISTINCT f.task_id AS task_id FROM mjk_point_transactions t \
             JOIN gw_entries g ON g.ledger_id = t.id \
             JOIN ts_fal_tasks f ON f.task_id = t.source_id \
             WHERE t.type = 'refund' AND t.source_type = 'fal' AND f.is_refund <> 1",
            Vec::new(),
            |r| r.try_get("", "task_id"),
        )
        .await
}

/// One allocation of a consume with its batch's draw figures.
#[derive(Debug, Clone)]
pub struct DrawStep {
    pub entry_id: i64,
    pub allocation_id: i64,
    pub batch_id: i64,
    pub expires_at: Option<DateTime<Utc>>,
    pub gift: bool,
}

/// Up to `limit` allocations of consumes after `(entry_id, allocation_id)`,
/// in that order: each consume's allocations together, in the order they
/// were written (its draw order).
pub async fn draw_steps(
    store: &Store,
    after: (i64, i64),
    limit: i64,
) -> Result<Vec<DrawStep>, StoreError> {
    store
        .rows(
            "SELECT a.entry_id AS entry_id, a.id AS id, b.id AS batch_id, b.expires_at AS expires_at, \
               b.funds = 'gift' AS gift \
             FROM gw_point_allocations a \
             JOIN mjk_point_transactions t ON t.id = a.entry_id AND t.type = 'consume' \
             JOIN gw_point_batches b ON b.id = a.batch_id \
             WHERE a.entry_id > $1 OR (a.entry_id = $1 AND a.id > $2) \
             ORDER BY a.entry_id, a.id LIMIT $3",
            vec![after.0.into(), after.1.into(), limit.into()],
            |r| {
                Ok(DrawStep {
                    entry_id: r.try_get("", "entry_id")?,
                    allocation_id: r.try_get("", "id")?,
                    batch_id: r.try_get("", "batch_id")?,
                    expires_at: r.try_get("", "expires_at")?,
                    gift: r.try_get("", "gift")?,
                })
            },
        )
        .await
}

/// Holds that break their own rules, each described: parts that do not
/// add up to the hold; a settlement's fields that do not fit its status; a
/// capture whose consume row is missing, of another key or amount, or drew
/// from a batch (or more of it) than the hold reserved.
pub async fn hold_mismatches(store: &Store) -> Result<Vec<String>, StoreError> {
    let parts = store
        .rows(
            "SELECT h.id AS id, h.amount AS amount, \
               CAST(COALESCE((SELECT SUM(p.amount) FROM gw_hold_parts p WHERE p.hold_id = h.id), 0) AS BIGINT) AS parts \
             FROM gw_holds h",
            Vec::new(),
            |r| {
                Ok((
                    r.try_get::<i64>("", "id")?,
                    r.try_get::<i64>("", "amount")?,
                    r.try_get::<i64>("", "parts")?,
                ))
            },
        )
        .await?;
    let mut out: Vec<String> = parts
        .into_iter()
        .filter(|(_, amount, parts)| amount != parts)
        .map(|(id, amount, parts)| format!("hold {id}: amount {amount}, parts {parts}"))
        .collect();
    let states = store
        .rows(
            "SELECT h.id AS id, h.status AS status FROM gw_holds h WHERE \
               (h.status = 'held' AND (h.settled_at IS NOT NULL OR h.entry_id IS NOT NULL OR h.captured IS NOT NULL)) \
               OR (h.status <> 'held' AND h.settled_at IS NULL) \
               OR (h.status = 'captured' AND (h.entry_id IS NULL OR h.captured IS NULL)) \
               OR (h.status IN ('released', 'expired') AND (h.entry_id IS NOT NULL OR h.captured IS NOT NULL))",
            Vec::new(),
            |r| {
                Ok(format!(
                    "hold {}: {} with settlement fields that do not fit it",
                    r.try_get::<i64>("", "id")?,
                    r.try_get::<String>("", "status")?
                ))
            },
        )
        .await?;
    out.extend(states);
    let captures = store
        .rows(
            "SELECT h.id AS id FROM gw_holds h \
             LEFT JOIN mjk_point_transactions t ON t.id = h.entry_id \
             WHERE h.status = 'captured' AND (t.id IS NULL OR t.type <> 'consume' \
               OR CAST(t.amount AS BIGINT) <> h.captured OR t.source_type <> h.source_type \
               OR t.source_id <> h.source_id)",
            Vec::new(),
            |r| {
                Ok(format!(
                    "hold {}: its capture's consume row is missing or differs from the capture",
                    r.try_get::<i64>("", "id")?
                ))
            },
        )
        .await?;
    out.extend(captures);
    let drawn = store
        .rows(
            "SELECT h.id AS id, a.batch_id AS batch_id FROM gw_holds h \
             JOIN gw_point_allocations a ON a.entry_id = h.entry_id \
             LEFT JOIN gw_hold_parts p ON p.hold_id = h.id AND p.batch_id = a.batch_id \
             WHERE h.status = 'captured' AND (p.id IS NULL OR a.amount > p.amount)",
            Vec::new(),
            |r| {
                Ok(format!(
                    "hold {}: its capture drew batch {} beyond what the hold reserved there",
                    r.try_get::<i64>("", "id")?,
                    r.try_get::<i64>("", "batch_id")?
                ))
            },
        )
        .await?;
    out.extend(drawn);
    Ok(out)
}

/// Job keys with two owners: a hold and a consume row that is not that
/// hold's own capture (of any user, before or after the cutover).
pub async fn shared_job_keys(store: &Store) -> Result<Vec<String>, StoreError> {
    store
        .rows(
            "SELECT h.id AS hold_id, t.id AS row_id, h.source_type AS st, h.source_id AS si \
             FROM gw_holds h JOIN mjk_point_transactions t \
               ON t.type = 'consume' AND t.source_type = h.source_type AND t.source_id = h.source_id \
             WHERE h.entry_id IS NULL OR t.id <> h.entry_id",
            Vec::new(),
            |r| {
                Ok(format!(
                    "job key {}/{}: hold {} and consume row {}",
                    r.try_get::<String>("", "st")?,
                    r.try_get::<String>("", "si")?,
                    r.try_get::<i64>("", "hold_id")?,
                    r.try_get::<i64>("", "row_id")?
                ))
            },
        )
        .await
}
