//! The ledger's write transaction: the port the domain's operations talk
//! to. Every statement that writes ledger rows, batches, allocations, the
//! `ts_points_detail` mirror or the cached balance is here (or, where one
//! engine does it its own way, in that engine's folder).
//!
//! A concrete type rather than a trait: the only variation is the engine,
//! which is this module's own exhaustive `match`, and the tests run the
//! domain against real databases rather than fakes, so a trait would have
//! exactly one implementor and cost generics everywhere.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use entity::legacy_time::LocalTime;
use entity::point_batch;
use sea_orm::{
    ActiveModelTrait, ActiveValue::NotSet, ConnectionTrait, DatabaseTransaction, Set, Statement,
};
use uuid::Uuid;

use super::feed::{Change, Entry, Feed};
use super::sql::{
    find, key_lookup, mirror_int, mirror_values, HISTORY_END, HOLD_PROBE_SQL, LAST_AT_SQL,
};
use super::{postgres, sqlite, Engine, Store, StoreError};

pub use super::rows::{
    BatchRow, ChargeRecord, EntryFields, LastAt, LedgerKey, LockedUser, NewBatch, NewEntry,
    NewPayment, UserKey,
};
pub use super::sql::find_statement;

/// One write transaction. Dropped without [`WriteTx::commit`], it rolls back.
pub struct WriteTx {
    txn: DatabaseTransaction,
    engine: Engine,
    /// The ts platform's zone: its tables hold naive local time.
    zone: Tz,
    feed: Feed,
    /// Every change made (ledger rows, holds), with its user's int id, in
    /// order: announced after commit.
    changes: Vec<(i32, Change)>,
    /// `(user, balance, held)` of each user locked, as of the last change.
    figures: Vec<(i32, i64, i64)>,
}

impl WriteTx {
    pub(super) fn new(txn: DatabaseTransaction, engine: Engine, zone: Tz, feed: Feed) -> WriteTx {
        WriteTx {
            txn,
            engine,
            zone,
            feed,
            changes: Vec::new(),
            figures: Vec::new(),
        }
    }

    fn statement(&self, sql: impl Into<String>, values: Vec<sea_orm::Value>) -> Statement {
        Statement::from_sql_and_values(self.engine.backend(), sql, values)
    }

    pub(super) fn txn(&self) -> &DatabaseTransaction {
        &self.txn
    }

    pub(super) fn engine(&self) -> Engine {
        self.engine
    }

    /// The ts platform's zone, by name (its tables hold naive local time).
    pub(super) fn zone_name(&self) -> &'static str {
        self.zone.name()
    }

    /// Locks the user row for the rest of the transaction and, in the same
    /// round trip, looks `probe` up; `None` when the user does not exist.
    pub async fn lock_user(
        &mut self,
        user: UserKey<'_>,
        probe: Option<LedgerKey<'_>>,
    ) -> Result<Option<LockedUser>, StoreError> {
        let (probe_sql, mut values) = match probe {
            Some(key) => {
                let (sql, values) = key_lookup(key, "t.id");
                let held = match key {
                    // The consume key's own placeholders: `$1` type, `$2` id.
                    LedgerKey::Consume { .. } => format!(", ({}) AS hold_probe", HOLD_PROBE_SQL),
                    _ => String::new(),
                };
                (format!(", ({sql}) AS probe{held}"), values)
            }
            None => (String::new(), Vec::new()),
        };
        let hold_probe = matches!(probe, Some(LedgerKey::Consume { .. }));
        // A job key has one owner, a consume or a hold, whoever's user:
        // claimed before the lookups, which then see a rival's commit.
        if let Some(LedgerKey::Consume {
            source_type,
            source_id,
        }) = probe
        {
            match self.engine {
                Engine::Postgres => {
                    let claim = format!("SELECT {}", migration::key_claim_sql("$1", "$2"));
                    self.txn
                        .execute_raw(
                            self.statement(claim, vec![source_type.into(), source_id.into()]),
                        )
                        .await?;
                }
                // Write transactions run one at a time (BEGIN IMMEDIATE).
                Engine::Sqlite => {}
            }
        }
        let n = values.len() + 1;
        let filter = match user {
            UserKey::Id(id) => {
                values.push(id.into());
                format!("id = ${n}")
            }
            UserKey::Uuid(u) => {
                values.push(u.into());
                format!("uuid = ${n}")
            }
            UserKey::Hold {
                source_type,
                source_id,
            } => {
                values.extend([source_type.into(), source_id.into()]);
                format!(
                    "id = (SELECT h.user_id FROM gw_holds h WHERE h.source_type = ${n} AND h.source_id = ${})",
                    n + 1
                )
            }
        };
        let sql = match self.engine {
            Engine::Postgres => postgres::lock::user_sql(&filter, &probe_sql),
            Engine::Sqlite => sqlite::lock_user_sql(&filter, &probe_sql),
        };
        let Some(row) = self.txn.query_one_raw(self.statement(sql, values)).await? else {
            return Ok(None);
        };
        let probed = if probe_sql.is_empty() {
            None
        } else {
            row.try_get("", "probe")?
        };
        let hold_probed = if hold_probe {
            row.try_get("", "hold_probe")?
        } else {
            None
        };
        // PostgreSQL read both from the statement's snapshot: usable only
        // when that snapshot is current. SQLite's reads are current.
        let (batches, last_at, current) = match self.engine {
            Engine::Postgres => match postgres::lock::batches(&row)? {
                Some(b) => (Some(b), Some(LastAt(row.try_get("", "last_at")?)), true),
                None => (None, None, false),
            },
            Engine::Sqlite => (None, Some(LastAt(row.try_get("", "last_at")?)), true),
        };
        let locked_id: i32 = row.try_get("", "id")?;
        let (balance, held): (i64, i64) = (row.try_get("", "balance")?, row.try_get("", "held")?);
        self.figures.retain(|f| f.0 != locked_id);
        self.figures.push((locked_id, balance, held));
        Ok(Some(LockedUser {
            id: locked_id,
            uuid: row.try_get("", "uuid")?,
            balance,
            held,
            hold_seq: row.try_get("", "hold_seq")?,
            batches,
            last_at,
            locked_at: match self.engine {
                Engine::Postgres => Some(row.try_get("", "locked_at")?),
                Engine::Sqlite => None,
            },
            probed,
            hold_probed,
            current,
        }))
    }

    /// When a locked user's last ledger row was stamped (an index lookup).
    pub async fn last_row_time(&mut self, user_uuid: Uuid) -> Result<LastAt, StoreError> {
        let row = self
            .txn
            .query_one_raw(self.statement(
                format!("SELECT {} AS last_at", LAST_AT_SQL.replace("{uuid}", "$1")),
                vec![user_uuid.into()],
            ))
            .await?;
        Ok(LastAt(match row {
            Some(r) => r.try_get("", "last_at")?,
            None => None,
        }))
    }

    /// A locked user's batches with points left (in no particular order).
    pub async fn batches(&mut self, user_id: i32) -> Result<Vec<BatchRow>, StoreError> {
        let rows = self
            .txn
            .query_all_raw(self.statement(
                "SELECT id, remaining, expires_at, funds = 'gift' AS gift FROM gw_point_batches \
                 WHERE user_id = $1 AND remaining > 0",
                vec![user_id.into()],
            ))
            .await?;
        rows.iter()
            .map(|b| {
                Ok(BatchRow {
                    id: b.try_get("", "id")?,
                    remaining: b.try_get("", "remaining")?,
                    expires_at: b.try_get("", "expires_at")?,
                    gift: b.try_get("", "gift")?,
                })
            })
            .collect()
    }

    /// Appends one ledger row, its mirror and the gateway's record of it
    /// (`gw_entries`: keys, refund link, request hash, mirror id).
    pub async fn append(&mut self, row: &NewEntry) -> Result<Entry, StoreError> {
        let entry = match self.engine {
            Engine::Postgres => {
                postgres::spend::append(&self.txn, row, &[], self.zone, false).await?
            }
            Engine::Sqlite => self.append_rows(row).await?,
        };
        self.wrote(row.user_id, &entry);
        Ok(entry)
    }

    /// Records a ledger row for the announcement after commit.
    fn wrote(&mut self, user_id: i32, entry: &Entry) {
        let held = match self.figures.iter_mut().find(|f| f.0 == user_id) {
            Some(f) => {
                f.1 = entry.balance_after;
                f.2
            }
            None => 0,
        };
        self.changes.push((
            user_id,
            Change::Row {
                entry: entry.clone(),
                held,
            },
        ));
    }

    /// Records a hold change for the announcement after commit.
    pub(super) fn hold_changed(&mut self, user_id: i32, hold: super::feed::HoldNote) {
        let (balance, held) = self
            .figures
            .iter()
            .find(|f| f.0 == user_id)
            .map_or((0, 0), |f| (f.1, f.2));
        self.changes.push((
            user_id,
            Change::Hold {
                hold,
                balance,
                held,
            },
        ));
    }

    /// Notes a locked user's new held figure.
    pub(super) fn held_now(&mut self, user_id: i32, held: i64) {
        if let Some(f) = self.figures.iter_mut().find(|f| f.0 == user_id) {
            f.2 = held;
        }
    }

    /// The three inserts of [`WriteTx::append`], one by one.
    async fn append_rows(&mut self, row: &NewEntry) -> Result<Entry, StoreError> {
        let id = self.returning_id(
            "INSERT INTO mjk_point_transactions (user_id, type, amount, balance_before, balance_after, \
               source_type, source_id, batch_id, duration, description, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11) RETURNING id",
            vec![
                row.user_uuid.into(),
                row.tx_type.into(),
                row.amount.into(),
                row.balance_before.into(),
                row.balance_after.into(),
                row.fields.source_type.clone().into(),
                row.fields.source_id.clone().into(),
                row.fields.batch_id.into(),
                row.fields.duration.into(),
                Some(row.fields.description.clone()).into(),
                row.created_at.into(),
            ],
        )
        .await?;
        let detail = self
            .returning_id(
                "INSERT INTO ts_points_detail (user_id, points, order_id, title, source_type, \
               balance_before, balance_after, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
                mirror_values(row, self.zone)?,
            )
            .await?;
        self.txn
            .execute_raw(self.statement(
                "INSERT INTO gw_entries (ledger_id, user_id, type, source_type, source_id, \
                   refund_key, refund_of, request_hash, detail_id, written_by) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                vec![
                    id.into(),
                    row.user_id.into(),
                    row.tx_type.into(),
                    row.fields.source_type.clone().into(),
                    row.fields.source_id.clone().into(),
                    row.fields.refund_key.clone().into(),
                    row.fields.refund_of.into(),
                    row.fields.request_hash.clone().into(),
                    i32::try_from(detail)
                        .map_err(|_| StoreError::custom("ts_points_detail id out of range"))?
                        .into(),
                    row.fields.written_by.clone().into(),
                ],
            ))
            .await?;
        Ok(row.entry(id))
    }

    async fn returning_id(
        &self,
        sql: &str,
        values: Vec<sea_orm::Value>,
    ) -> Result<i64, StoreError> {
        let row = self
            .txn
            .query_one_raw(self.statement(sql, values))
            .await?
            .ok_or_else(|| StoreError::custom("an insert returned no row"))?;
        // `ts_points_detail.id` is a 32-bit serial, the ledger's 64-bit.
        match row.try_get::<i64>("", "id") {
            Ok(id) => Ok(id),
            Err(_) => Ok(i64::from(row.try_get::<i32>("", "id")?)),
        }
    }

    /// Appends a spending row drawn from `parts` as `(batch_id, amount)`,
    /// in draw order: the row, its mirror, the allocations (their ids keep
    /// that order; refunds rely on it), the batch decrements, and the
    /// cached balance (`balance_after`).
    pub async fn append_spend(
        &mut self,
        row: &NewEntry,
        parts: &[(i64, i64)],
    ) -> Result<Entry, StoreError> {
        let entry = match self.engine {
            // One statement of data-modifying CTEs: one round trip
            // instead of five or more.
            Engine::Postgres => {
                postgres::spend::append(&self.txn, row, parts, self.zone, true).await?
            }
            // In-process: the same writes one by one cost no round trips.
            Engine::Sqlite => {
                let entry = self.append_rows(row).await?;
                self.allocate(entry.id, parts).await?;
                for &(batch_id, amount) in parts {
                    self.adjust_batch(batch_id, -amount).await?;
                }
                self.store_balance(row.user_id, row.balance_after, row.created_at)
                    .await?;
                entry
            }
        };
        self.wrote(row.user_id, &entry);
        Ok(entry)
    }

    /// Records which batches (and how much of each) funded or received
    /// the movement `entry_id`, in the order given.
    pub async fn allocate(
        &mut self,
        entry_id: i64,
        parts: &[(i64, i64)],
    ) -> Result<(), StoreError> {
        for &(batch_id, amount) in parts {
            entity::point_allocation::ActiveModel {
                id: NotSet,
                entry_id: Set(entry_id),
                batch_id: Set(batch_id),
                amount: Set(amount),
            }
            .insert(&self.txn)
            .await?;
        }
        Ok(())
    }

    /// Moves `delta` points into (+) or out of (-) one batch.
    pub async fn adjust_batch(&mut self, batch_id: i64, delta: i64) -> Result<(), StoreError> {
        self.txn
            .execute_raw(self.statement(
                "UPDATE gw_point_batches SET remaining = remaining + $1 WHERE id = $2",
                vec![delta.into(), batch_id.into()],
            ))
            .await?;
        Ok(())
    }

    /// Empties one batch (its points expired).
    pub async fn empty_batch(&mut self, batch_id: i64) -> Result<(), StoreError> {
        self.txn
            .execute_raw(self.statement(
                "UPDATE gw_point_batches SET remaining = 0 WHERE id = $1",
                vec![batch_id.into()],
            ))
            .await?;
        Ok(())
    }

    /// Stores a locked user's cached balance.
    pub async fn store_balance(
        &mut self,
        user_id: i32,
        balance: i64,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.txn
            .execute_raw(self.statement(
                "UPDATE gw_users SET balance = $1, updated_at = $2 WHERE id = $3",
                vec![balance.into(), now.into(), user_id.into()],
            ))
            .await?;
        Ok(())
    }

    /// The row written under `key`, if any (read in this transaction).
    pub async fn find(&mut self, key: LedgerKey<'_>) -> Result<Option<Entry>, StoreError> {
        find(&self.txn, key).await
    }

    /// The allocations of one movement as `(batch_id, amount)`, in the
    /// order they were written (a consume's: its draw order).
    pub async fn allocations(&mut self, entry_id: i64) -> Result<Vec<(i64, i64)>, StoreError> {
        let rows = self
            .txn
            .query_all_raw(self.statement(
                "SELECT batch_id, amount FROM gw_point_allocations WHERE entry_id = $1 ORDER BY id",
                vec![entry_id.into()],
            ))
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("", "batch_id")?, r.try_get("", "amount")?)))
            .collect()
    }

    /// What the refunds of consume `consume_id` returned so far, per batch.
    pub async fn refunded_per_batch(
        &mut self,
        consume_id: i64,
    ) -> Result<Vec<(i64, i64)>, StoreError> {
        let rows = self
            .txn
            .query_all_raw(self.statement(
                "SELECT a.batch_id AS batch_id, CAST(SUM(a.amount) AS BIGINT) AS amount \
                 FROM gw_point_allocations a JOIN gw_entries g ON g.ledger_id = a.entry_id \
                 WHERE g.refund_of = $1 GROUP BY a.batch_id",
                vec![consume_id.into()],
            ))
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("", "batch_id")?, r.try_get("", "amount")?)))
            .collect()
    }

    /// For a consume of the history before the cutover: what every legacy
    /// consume under its key took, and what legacy refunds under that key
    /// returned, as `(took, refunded)`.
    pub async fn history_consumption(&mut self, consume: &Entry) -> Result<(i64, i64), StoreError> {
        let row = self
            .txn
            .query_one_raw(self.statement(
                format!("SELECT CAST(COALESCE(SUM(CASE WHEN t.type = 'consume' THEN t.amount ELSE 0 END), 0) AS BIGINT) AS took, \
                   CAST(COALESCE(SUM(CASE WHEN t.type = 'refund' THEN t.amount ELSE 0 END), 0) AS BIGINT) AS refunded \
                 FROM mjk_point_transactions t \
                 WHERE t.source_id = $1 AND t.type IN ('consume', 'refund') AND t.source_type = $2 \
                   AND t.id <= {HISTORY_END} \
                   AND NOT EXISTS (SELECT 1 FROM gw_entries g WHERE g.ledger_id = t.id)"),
                vec![consume.source_id.clone().into(), consume.source_type.clone().into()],
            ))
            .await?
            .ok_or_else(|| StoreError::custom("an aggregate returned no row"))?;
        Ok((row.try_get("", "took")?, row.try_get("", "refunded")?))
    }

    pub async fn insert_batch(&mut self, b: &NewBatch<'_>) -> Result<i64, StoreError> {
        let batch = point_batch::ActiveModel {
            id: NotSet,
            user_id: Set(b.user_id),
            kind: Set(b.kind.to_owned()),
            funds: Set(b.funds.to_owned()),
            amount: Set(b.amount),
            remaining: Set(b.amount),
            reserved: Set(0),
            expires_at: Set(b.expires_at),
            order_id: Set(b.order_id.to_owned()),
            created_at: Set(b.created_at),
        }
        .insert(&self.txn)
        .await?;
        Ok(batch.id)
    }

    /// A paid recharge's `ts_financial_transactions` row, as the ts
    /// platform writes one (type 0, cash, its local time).
    pub async fn insert_payment(&mut self, p: &NewPayment<'_>) -> Result<(), StoreError> {
        self.txn
            .execute_raw(self.statement(
                "INSERT INTO ts_financial_transactions (user_id, money, order_id, title, \
                   deployment_uuid, time, transaction_type, pay_type, is_cash) \
                 VALUES ($1, $2, $3, $4, NULL, $5, 0, $6, 1)",
                vec![
                    p.user_id.into(),
                    p.money_cents.into(),
                    p.order_id.into(),
                    p.title.into(),
                    LocalTime::of(p.time, self.zone).into(),
                    p.pay_type.into(),
                ],
            ))
            .await?;
        Ok(())
    }

    /// The ts money page's row of a charge: `money` is minus the points,
    /// `transaction_type` 1, `pay_type` and `is_cash` 0, as the old code
    /// wrote them.
    pub async fn insert_charge_record(&mut self, c: &ChargeRecord<'_>) -> Result<(), StoreError> {
        self.txn
            .execute_raw(self.statement(
                "INSERT INTO ts_financial_transactions (user_id, money, order_id, title, \
                   deployment_uuid, time, transaction_type, pay_type, is_cash) \
                 VALUES ($1, $2, $3, $4, NULL, $5, 1, 0, 0)",
                vec![
                    c.user_id.into(),
                    mirror_int(-c.points)?.into(),
                    c.order_id.into(),
                    c.title.into(),
                    LocalTime::of(c.time, self.zone).into(),
                ],
            ))
            .await?;
        Ok(())
    }

    /// Marks a fal task refunded (DESIGN.md invariant 8).
    pub async fn flag_fal_refunded(&mut self, task_id: &str) -> Result<(), StoreError> {
        self.txn
            .execute_raw(self.statement(
                "UPDATE ts_fal_tasks SET is_refund = 1 WHERE task_id = $1",
                vec![task_id.into()],
            ))
            .await?;
        Ok(())
    }

    /// Commits, then announces the changes made (per user, in order) where
    /// the engine's feed is in-process. Returns the ledger rows written.
    pub async fn commit(self) -> Result<Vec<(i32, Entry)>, StoreError> {
        self.feed.commit(self.txn, &self.changes).await?;
        Ok(self
            .changes
            .into_iter()
            .filter_map(|(u, c)| match c {
                Change::Row { entry, .. } => Some((u, entry)),
                Change::Hold { .. } => None,
            })
            .collect())
    }

    pub async fn rollback(self) -> Result<(), StoreError> {
        Ok(self.txn.rollback().await?)
    }
}

impl Store {
    /// The row written under `key`, if any (outside any transaction: the
    /// loser of an idempotency race reads the winner's row).
    pub async fn find(&self, key: LedgerKey<'_>) -> Result<Option<Entry>, StoreError> {
        find(self.conn(), key).await
    }
}
