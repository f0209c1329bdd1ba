//! The locked user and the only code that appends ledger rows.
//!
//! Holding the user's row lock for the whole transaction is what makes the
//! chain `balance_before == previous balance_after` hold under any number of
//! concurrent writers and gateway instances: every movement of one user is
//! serialised on that lock, and the in-memory balance here is the truth for
//! the rest of the transaction.

use chrono::{DateTime, Utc};
use entity::{point_transaction, points_detail};
use sea_orm::{
    ActiveModelTrait, ActiveValue::NotSet, ConnectionTrait, DatabaseTransaction, DbBackend, DbErr,
    FromQueryResult, Set, Statement,
};
use uuid::Uuid;

use super::{Applied, Entry};
use crate::domain::source::{TxType, EXPIRE_LABEL};

/// Which user to lock: the ts_* tables name users by int id, the ledger by uuid.
pub(super) enum UserRef {
    Id(i32),
    Uuid(Uuid),
}

/// A ledger row about to be written; the writer fills in the balances.
pub(super) struct NewRow {
    pub tx: TxType,
    pub amount: i64,
    pub source_type: Option<String>,
    pub source_id: Option<String>,
    pub batch_id: Option<i64>,
    pub duration: Option<f64>,
    pub description: String,
    pub refund_key: Option<String>,
    pub refund_of: Option<i64>,
    pub request_hash: Option<String>,
    /// `ts_points_detail.source_type`: recharge / gift / consume / refund / expire.
    pub mirror_source: &'static str,
    /// `ts_points_detail.order_id`: the order, source id or refund key.
    pub mirror_order: Option<String>,
}

impl NewRow {
    pub fn new(tx: TxType, amount: i64, description: String, mirror_source: &'static str) -> Self {
        NewRow {
            tx,
            amount,
            source_type: None,
            source_id: None,
            batch_id: None,
            duration: None,
            description,
            refund_key: None,
            refund_of: None,
            request_hash: None,
            mirror_source,
            mirror_order: None,
        }
    }
}

pub(super) struct Writer<'t> {
    txn: &'t DatabaseTransaction,
    pub user_id: i32,
    pub user_uuid: Uuid,
    /// The balance as of the last row this writer appended.
    pub balance: i64,
    pub now: DateTime<Utc>,
    /// Whether `ts_users.balance` already holds `balance` (a combined write
    /// stored it), so `finish` need not.
    balance_stored: bool,
    written: Vec<Entry>,
    /// The user's batches with points left, read by the lock statement when
    /// that read is known to be current; used (once) by the first
    /// [`Self::expire_due_then_live`] instead of a second round trip.
    prefetched: Option<Vec<BatchRow>>,
}

/// `(batch_id, remaining, expires_at)` in the published draw order.
type BatchRow = (i64, i64, Option<DateTime<Utc>>);

/// A scalar subquery for [`Writer::lock_probing`]; its placeholders are
/// numbered from `$1`.
pub(super) struct Probe {
    pub subquery: &'static str,
    pub values: Vec<sea_orm::Value>,
}

impl<'t> Writer<'t> {
    /// Locks the user row for the rest of the transaction; `None` when the
    /// user does not exist.
    pub async fn lock(
        txn: &'t DatabaseTransaction,
        user: UserRef,
        now: DateTime<Utc>,
    ) -> Result<Option<Writer<'t>>, DbErr> {
        Ok(Self::lock_probing(txn, user, now, None)
            .await?
            .map(|(w, _)| w))
    }

    /// Locks the user row and, in the same round trip, runs `probe` (a
    /// scalar subquery, e.g. "is this request's row already written?").
    ///
    /// On PostgreSQL the probe reads the snapshot taken when the statement
    /// started, before any wait for the lock: a row committed by a
    /// concurrent transaction while this one waited is not seen. Callers
    /// must treat `None` as "probably not" and rely on the unique index (or
    /// a fresh read) for the race.
    pub async fn lock_probing(
        txn: &'t DatabaseTransaction,
        user: UserRef,
        now: DateTime<Utc>,
        probe: Option<Probe>,
    ) -> Result<Option<(Writer<'t>, Option<i64>)>, DbErr> {
        let backend = txn.get_database_backend();
        let (column, value): (&str, sea_orm::Value) = match user {
            UserRef::Id(id) => ("id", id.into()),
            UserRef::Uuid(u) => ("uuid", u.into()),
        };
        let (probe_sql, mut values) = match probe {
            Some(p) => (format!(", ({}) AS probe", p.subquery), p.values),
            None => (String::new(), Vec::new()),
        };
        let key = values.len() + 1;
        let pg = backend == DbBackend::Postgres;
        let sql = if pg {
            lock_reading_batches_sql(column, key, &probe_sql)
        } else {
            // SQLite's IMMEDIATE transaction already holds the database's
            // write lock, and its reads are current: nothing to lock or
            // to read ahead.
            format!("SELECT id, uuid, balance{probe_sql} FROM ts_users WHERE {column} = ${key}")
        };
        values.push(value);
        let row = txn
            .query_one_raw(Statement::from_sql_and_values(backend, sql, values))
            .await?;
        let Some(row) = row else { return Ok(None) };
        let probed: Option<i64> = if probe_sql.is_empty() {
            None
        } else {
            row.try_get("", "probe")?
        };
        let prefetched = if pg && row.try_get::<bool>("", "fresh")? {
            let text: Option<String> = row.try_get("", "batches")?;
            Some(parse_batches(text.as_deref())?)
        } else {
            None
        };
        let w = Writer {
            txn,
            user_id: row.try_get("", "id")?,
            user_uuid: row.try_get("", "uuid")?,
            balance: row.try_get("", "balance")?,
            balance_stored: true,
            now,
            written: Vec::new(),
            prefetched,
        };
        Ok(Some((w, probed)))
    }

    /// Appends one ledger row and its `ts_points_detail` mirror, moving the
    /// in-memory balance. The CHECK constraints refuse a row that would
    /// break the chain arithmetic or go negative, as a last line of defence.
    pub async fn append(&mut self, row: NewRow) -> Result<Entry, DbErr> {
        let before = self.balance;
        let after = before + row.tx.sign() * row.amount;
        let entry = point_transaction::ActiveModel {
            id: NotSet,
            user_id: Set(self.user_uuid),
            r#type: Set(row.tx.as_str().to_owned()),
            amount: Set(row.amount),
            balance_before: Set(before),
            balance_after: Set(after),
            source_type: Set(row.source_type),
            source_id: Set(row.source_id),
            batch_id: Set(row.batch_id),
            duration: Set(row.duration),
            description: Set(Some(row.description.clone())),
            refund_key: Set(row.refund_key),
            refund_of: Set(row.refund_of),
            request_hash: Set(row.request_hash),
            created_at: Set(self.now),
            updated_at: Set(self.now),
        }
        .insert(self.txn)
        .await?;
        points_detail::ActiveModel {
            id: NotSet,
            user_id: Set(self.user_id),
            points: Set(to_i32(row.tx.sign() * row.amount)?),
            order_id: Set(row.mirror_order),
            title: Set(Some(row.description)),
            source_type: Set(Some(row.mirror_source.to_owned())),
            balance_before: Set(to_i32(before)?),
            balance_after: Set(to_i32(after)?),
            created_at: Set(self.now),
            ledger_id: Set(Some(entry.id)),
        }
        .insert(self.txn)
        .await?;
        self.balance = after;
        self.balance_stored = false;
        self.prefetched = None;
        self.written.push(entry.clone());
        Ok(entry)
    }

    /// Appends a spending row (consume) drawn from `parts` as
    /// `(batch_id, amount)`: the row, its mirror, the allocations, the batch
    /// decrements and the cached balance. On PostgreSQL all of it is one
    /// statement of data-modifying CTEs, one round trip instead of five or
    /// more; elsewhere (SQLite, in-process) the same writes one by one.
    pub async fn append_spend(
        &mut self,
        row: NewRow,
        parts: &[(i64, i64)],
    ) -> Result<Entry, DbErr> {
        if self.txn.get_database_backend() != DbBackend::Postgres {
            let entry = self.append(row).await?;
            self.allocate(entry.id, parts).await?;
            for &(batch_id, amount) in parts {
                self.adjust_batch(batch_id, -amount).await?;
            }
            return Ok(entry);
        }
        let before = self.balance;
        let after = before + row.tx.sign() * row.amount;
        // The draw goes as parameters, so the statement text never changes
        // (parsed once per connection): `[[batch_id, amount], ...]` in draw
        // order (allocation ids keep that order, refunds rely on it), and
        // the ids as a list for an index lookup of the batches.
        let draw = serde_json::Value::Array(
            parts
                .iter()
                .map(|(b, a)| serde_json::json!([b, a]))
                .collect(),
        )
        .to_string();
        let ids = parts
            .iter()
            .map(|(b, _)| b.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let params: Vec<sea_orm::Value> = vec![
            self.user_uuid.into(),
            row.tx.as_str().into(),
            row.amount.into(),
            before.into(),
            after.into(),
            row.source_type.into(),
            row.source_id.into(),
            row.batch_id.into(),
            row.duration.into(),
            Some(row.description).into(),
            row.refund_key.into(),
            row.refund_of.into(),
            row.request_hash.into(),
            self.now.into(),
            self.user_id.into(),
            to_i32(row.tx.sign() * row.amount)?.into(),
            row.mirror_order.into(),
            row.mirror_source.into(),
            to_i32(before)?.into(),
            to_i32(after)?.into(),
            draw.into(),
            ids.into(),
        ];
        let entry = point_transaction::Model::find_by_statement(Statement::from_sql_and_values(
            DbBackend::Postgres,
            SPEND_SQL,
            params,
        ))
        .one(self.txn)
        .await?
        .ok_or_else(|| DbErr::Custom("the ledger insert returned no row".into()))?;
        self.balance = after;
        self.balance_stored = true;
        self.prefetched = None;
        self.written.push(entry.clone());
        Ok(entry)
    }

    /// Writes an `expire` row for every batch of this user past its expiry
    /// with points left. Runs at the start of every operation (so an expired
    /// batch is never spent) and after a refund (points returned into an
    /// expired batch expire again at once).
    pub async fn expire_due(&mut self) -> Result<(), DbErr> {
        self.expire_due_then_live().await.map(|_| ())
    }

    /// Expires the due batches as [`Self::expire_due`] does and returns the
    /// live ones as `(batch_id, remaining)` in the published draw order —
    /// soonest `expires_at` first, never-expiring last, then oldest — from
    /// one read of the user's batches (a consume needs both).
    pub async fn expire_due_then_live(&mut self) -> Result<Vec<(i64, i64)>, DbErr> {
        let rows = match self.prefetched.take() {
            Some(rows) => rows,
            None => self.read_batches().await?,
        };
        let mut live = Vec::with_capacity(rows.len());
        for (batch_id, remaining, expires_at) in rows {
            if expires_at.is_some_and(|at| at <= self.now) {
                self.expire_batch(batch_id, remaining).await?;
            } else {
                live.push((batch_id, remaining));
            }
        }
        Ok(live)
    }

    async fn read_batches(&self) -> Result<Vec<BatchRow>, DbErr> {
        let backend = self.txn.get_database_backend();
        let rows = self
            .txn
            .query_all_raw(Statement::from_sql_and_values(
                backend,
                format!(
                    "SELECT b.id, b.remaining, b.expires_at FROM mjk_point_batches b \
                     WHERE b.user_id = $1 AND b.remaining > 0 ORDER BY {DRAW_ORDER}"
                ),
                [self.user_id.into()],
            ))
            .await?;
        rows.iter()
            .map(|b| {
                Ok((
                    b.try_get("", "id")?,
                    b.try_get("", "remaining")?,
                    b.try_get("", "expires_at")?,
                ))
            })
            .collect()
    }

    async fn expire_batch(&mut self, batch_id: i64, remaining: i64) -> Result<(), DbErr> {
        self.txn
            .execute_raw(Statement::from_sql_and_values(
                self.txn.get_database_backend(),
                "UPDATE mjk_point_batches SET remaining = 0 WHERE id = $1",
                [batch_id.into()],
            ))
            .await?;
        let mut row = NewRow::new(TxType::Expire, remaining, EXPIRE_LABEL.to_owned(), "expire");
        row.batch_id = Some(batch_id);
        row.mirror_order = Some(format!("batch-{batch_id}"));
        self.append(row).await?;
        Ok(())
    }

    /// Moves `delta` points into (+) or out of (-) one batch.
    pub async fn adjust_batch(&mut self, batch_id: i64, delta: i64) -> Result<(), DbErr> {
        self.prefetched = None;
        let backend = self.txn.get_database_backend();
        self.txn
            .execute_raw(Statement::from_sql_and_values(
                backend,
                "UPDATE mjk_point_batches SET remaining = remaining + $1 WHERE id = $2",
                [delta.into(), batch_id.into()],
            ))
            .await?;
        Ok(())
    }

    pub async fn allocate(&self, entry_id: i64, parts: &[(i64, i64)]) -> Result<(), DbErr> {
        for &(batch_id, amount) in parts {
            entity::point_allocation::ActiveModel {
                id: NotSet,
                entry_id: Set(entry_id),
                batch_id: Set(batch_id),
                amount: Set(amount),
            }
            .insert(self.txn)
            .await?;
        }
        Ok(())
    }

    /// Finishes an operation about `entry`: what its caller commits and
    /// announces.
    pub async fn applied(self, entry: Entry) -> Result<Applied, DbErr> {
        let user_id = self.user_id;
        Ok(Applied {
            entry,
            written: self.finish().await?,
            user_id: Some(user_id),
            replayed: false,
        })
    }

    /// Stores the cached balance; returns every row appended, in order.
    pub async fn finish(self) -> Result<Vec<Entry>, DbErr> {
        if !self.written.is_empty() && !self.balance_stored {
            let backend = self.txn.get_database_backend();
            self.txn
                .execute_raw(Statement::from_sql_and_values(
                    backend,
                    "UPDATE ts_users SET balance = $1, updated_at = $2 WHERE id = $3",
                    [self.balance.into(), self.now.into(), self.user_id.into()],
                ))
                .await?;
        }
        Ok(self.written)
    }
}

/// The published draw order of a user's batches (`mjk_point_batches b`):
/// soonest `expires_at` first, never-expiring last, then oldest.
const DRAW_ORDER: &str = "CASE WHEN b.expires_at IS NULL THEN 1 ELSE 0 END, b.expires_at, b.id";

/// [`Writer::lock_probing`] on PostgreSQL: the user's row (`{column}` =
/// `${key}`) locked, `probe_sql` (empty or `, (…) AS probe`), and in the
/// same round trip the user's batches with points left as JSON
/// `[[id, remaining, expires_at in µs since the epoch or null], ...]` in
/// [`DRAW_ORDER`].
///
/// The batches are read from the statement's snapshot, taken before any
/// wait for the lock, so they are only used when `fresh`: the locked row
/// is the very version that snapshot saw (same `ctid`). Every transaction
/// that changes a user's batches also rewrites that user's row (the cached
/// balance) while holding its lock, so an unchanged row means no such
/// transaction committed after the snapshot and none is still running.
/// Otherwise (a writer of the same user got there first) the writer reads
/// the batches again, after the lock.
fn lock_reading_batches_sql(column: &str, key: usize, probe_sql: &str) -> String {
    format!(
        "WITH s AS (SELECT ctid AS c FROM ts_users WHERE {column} = ${key}), \
         l AS (SELECT ctid AS c, id, uuid, balance FROM ts_users WHERE {column} = ${key} FOR UPDATE) \
         SELECT l.id, l.uuid, l.balance, l.c = s.c AS fresh, \
           (SELECT json_agg(json_build_array(b.id, b.remaining, \
                (extract(epoch FROM b.expires_at) * 1000000)::bigint) ORDER BY {DRAW_ORDER})::text \
            FROM mjk_point_batches b WHERE b.user_id = l.id AND b.remaining > 0) AS batches{probe_sql} \
         FROM l CROSS JOIN s"
    )
}

/// Reads [`lock_reading_batches_sql`]'s batch list (null: none).
fn parse_batches(text: Option<&str>) -> Result<Vec<BatchRow>, DbErr> {
    let Some(text) = text else {
        return Ok(Vec::new());
    };
    let bad = |e: String| {
        DbErr::Custom(format!(
            "unreadable batch list from the lock statement: {e}"
        ))
    };
    let rows: Vec<(i64, i64, Option<i64>)> =
        serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
    rows.into_iter()
        .map(|(id, remaining, micros)| {
            let expires_at = match micros {
                None => None,
                Some(us) => Some(
                    DateTime::<Utc>::from_timestamp_micros(us)
                        .ok_or_else(|| bad(format!("expiry {us} out of range")))?,
                ),
            };
            Ok((id, remaining, expires_at))
        })
        .collect()
}

/// [`Writer::append_spend`] on PostgreSQL: one statement, fixed text.
/// `$1..$14`: the ledger row (`$14` both timestamps); `$15` the user's int
/// id; `$16..$20` the mirror's points, order, source and balances; `$21`
/// the draw as `[[batch_id, amount], ...]`; `$22` the batch ids, comma-joined.
const SPEND_SQL: &str = "WITH e AS (\
               INSERT INTO mjk_point_transactions (user_id, type, amount, balance_before, balance_after, \
                 source_type, source_id, batch_id, duration, description, refund_key, refund_of, \
                 request_hash, created_at, updated_at) \
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14) RETURNING *), \
             m AS (\
               INSERT INTO ts_points_detail (user_id, points, order_id, title, source_type, \
                 balance_before, balance_after, created_at, ledger_id) \
               SELECT $15, $16, $17, $10, $18, $19, $20, $14, e.id FROM e), \
             a AS (INSERT INTO mjk_point_allocations (entry_id, batch_id, amount) \
               SELECT e.id, (p.x ->> 0)::bigint, (p.x ->> 1)::bigint \
               FROM e, jsonb_array_elements($21::jsonb) WITH ORDINALITY AS p(x, n) ORDER BY p.n), \
             b AS (UPDATE mjk_point_batches SET remaining = remaining - \
                 (SELECT (d.x ->> 1)::bigint FROM jsonb_array_elements($21::jsonb) AS d(x) \
                  WHERE (d.x ->> 0)::bigint = mjk_point_batches.id) \
               WHERE id = ANY(string_to_array($22, ',')::bigint[])), \
             u AS (UPDATE ts_users SET balance = $5, updated_at = $14 WHERE id = $15) \
             SELECT * FROM e";

fn to_i32(v: i64) -> Result<i32, DbErr> {
    i32::try_from(v).map_err(|_| DbErr::Custom(format!("{v} does not fit ts_points_detail")))
}
