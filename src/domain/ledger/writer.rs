//! The locked user and the only code that appends ledger rows.
//!
//! Holding the user's row lock for the whole transaction is what makes the
//! chain `balance_before == previous balance_after` hold under any number of
//! concurrent writers and gateway instances: every movement of one user is
//! serialised on that lock, and the in-memory balance here is the truth for
//! the rest of the transaction. One transaction may hold several writers
//! (one per user it moves points of).

use chrono::{DateTime, Utc};

use super::rules::{self, BatchRow};
use super::Entry;
use crate::domain::input::Author;
use crate::domain::source::{TxType, EXPIRE_LABEL};
use crate::store::ledger::{EntryFields, LastAt, LedgerKey, NewEntry, UserKey};
use crate::store::{StoreError, WriteTx};

/// A ledger row about to be written; the writer fills in the user, the
/// balances and the time.
pub(super) struct NewRow {
    pub tx: TxType,
    pub amount: i64,
    pub fields: EntryFields,
}

impl NewRow {
    /// `mirror_source`: `ts_points_detail.source_type` (recharge / gift /
    /// consume / refund / expire).
    pub fn new(tx: TxType, amount: i64, description: String, mirror_source: &'static str) -> Self {
        NewRow {
            tx,
            amount,
            fields: EntryFields::new(description, mirror_source),
        }
    }
}

/// When an operation's rows are stamped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowTime {
    /// The clock, read once the user's row is locked: a request that waited
    /// for the lock is stamped after the one that held it.
    Now,
    /// A given instant (demo data with a history).
    At(DateTime<Utc>),
}

pub(super) struct Writer {
    pub user_id: i32,
    user_uuid: uuid::Uuid,
    /// The balance as of the last row this writer appended.
    pub balance: i64,
    /// Points reserved by the user's open holds (spendable: balance − held).
    pub held: i64,
    /// The user's hold change count.
    pub hold_seq: i64,
    /// With a consume key probed: the hold under that key, as the lock
    /// statement saw it (see [`Self::probe_current`]).
    pub hold_probed: Option<i64>,
    /// Whether the probes' `None` can be trusted; otherwise a transaction
    /// of this user committed while this one waited for the lock, and the
    /// key must be looked up again.
    pub probe_current: bool,
    pub now: DateTime<Utc>,
    /// Whether `gw_users.balance` already holds `balance`.
    balance_stored: bool,
    /// The user's batches, read by the lock statement when that read is
    /// known to be current; used (once) by the first
    /// [`Self::expire_due_then_live`] instead of a second round trip, and
    /// dropped at the first write.
    prefetched: Option<Vec<BatchRow>>,
}

impl Writer {
    /// The locked user's ledger uuid.
    pub fn user_uuid(&self) -> uuid::Uuid {
        self.user_uuid
    }

    /// Locks the user row for the rest of the transaction and, in the same
    /// round trip, looks up the row under `probe` (see
    /// [`crate::store::ledger::LockedUser::probed`] for what its answer
    /// means); `None` when the user does not exist.
    ///
    /// The rows it writes are stamped at `at` (`Now`: once the lock is
    /// held, by the database's clock on PostgreSQL as `gw_consume` does),
    /// but never earlier than the user's last row: in ledger order a user's rows are in time order,
    /// whatever the clocks of the instances that wrote them.
    pub async fn lock(
        tx: &mut WriteTx,
        user: UserKey<'_>,
        at: RowTime,
        probe: Option<LedgerKey<'_>>,
    ) -> Result<Option<(Writer, Option<i64>)>, StoreError> {
        let Some(locked) = tx.lock_user(user, probe).await? else {
            return Ok(None);
        };
        let LastAt(last) = match locked.last_at {
            Some(known) => known,
            None => tx.last_row_time(locked.uuid).await?,
        };
        let at = match at {
            RowTime::Now => locked.locked_at.unwrap_or_else(crate::time::now),
            RowTime::At(t) => t,
        };
        let w = Writer {
            user_id: locked.id,
            user_uuid: locked.uuid,
            balance: locked.balance,
            held: locked.held,
            hold_seq: locked.hold_seq,
            hold_probed: locked.hold_probed,
            probe_current: locked.current,
            now: rules::row_time(at, last),
            balance_stored: true,
            prefetched: locked.batches,
        };
        Ok(Some((w, locked.probed)))
    }

    fn entry(&self, row: NewRow) -> NewEntry {
        let change = row.tx.sign() * row.amount;
        NewEntry {
            user_id: self.user_id,
            user_uuid: self.user_uuid,
            tx_type: row.tx.as_str(),
            amount: row.amount,
            balance_before: self.balance,
            balance_after: self.balance + change,
            created_at: self.now,
            mirror_points: change,
            fields: row.fields,
        }
    }

    /// Appends one ledger row and its mirror, moving the in-memory balance.
    pub async fn append(&mut self, tx: &mut WriteTx, row: NewRow) -> Result<Entry, StoreError> {
        let new = self.entry(row);
        let entry = tx.append(&new).await?;
        self.balance = new.balance_after;
        self.balance_stored = false;
        self.prefetched = None;
        Ok(entry)
    }

    /// Appends a spending row drawn from `parts` (in draw order), with its
    /// allocations, batch decrements and the cached balance.
    pub async fn append_spend(
        &mut self,
        tx: &mut WriteTx,
        row: NewRow,
        parts: &[(i64, i64)],
    ) -> Result<Entry, StoreError> {
        let new = self.entry(row);
        let entry = tx.append_spend(&new, parts).await?;
        self.balance = new.balance_after;
        self.balance_stored = true;
        self.prefetched = None;
        Ok(entry)
    }

    /// Writes an `expire` row for every batch of this user past its expiry
    /// with points left. Runs at the start of every operation (so an expired
    /// batch is never spent) and after a refund (points returned into an
    /// expired batch expire again at once).
    pub async fn expire_due(&mut self, tx: &mut WriteTx) -> Result<(), StoreError> {
        self.expire_due_then_live(tx).await.map(|_| ())
    }

    /// Expires the due batches as [`Self::expire_due`] does and returns the
    /// live ones in the published draw order, from one read of the user's
    /// batches (a consume needs both).
    pub async fn expire_due_then_live(
        &mut self,
        tx: &mut WriteTx,
    ) -> Result<Vec<BatchRow>, StoreError> {
        let batches = match self.prefetched.take() {
            Some(rows) => rows,
            None => tx.batches(self.user_id).await?,
        };
        let (due, live) = rules::split_due(batches, self.now);
        for b in due {
            tx.empty_batch(b.id).await?;
            let mut row = NewRow::new(
                TxType::Expire,
                b.remaining,
                EXPIRE_LABEL.to_owned(),
                "expire",
            );
            row.fields.batch_id = Some(b.id);
            row.fields.mirror_order = Some(format!("batch-{}", b.id));
            // The gateway's rule wrote it, whichever request came by.
            row.fields.written_by = Some(Author::gateway().as_str().to_owned());
            self.append(tx, row).await?;
        }
        Ok(live)
    }

    /// Points the user may spend: the balance less what holds reserve.
    pub fn available(&self) -> i64 {
        self.balance - self.held
    }

    /// Moves `delta` points into (+) or out of (-) one batch.
    pub async fn adjust_batch(
        &mut self,
        tx: &mut WriteTx,
        batch_id: i64,
        delta: i64,
    ) -> Result<(), StoreError> {
        self.prefetched = None;
        tx.adjust_batch(batch_id, delta).await
    }

    /// Gives every point a hold reserves back to its batch's `remaining`.
    pub async fn unreserve_hold(
        &mut self,
        tx: &mut WriteTx,
        hold_id: i64,
    ) -> Result<(), StoreError> {
        self.prefetched = None;
        tx.unreserve_hold(hold_id).await
    }

    /// Stores the cached balance if a row moved it since it was stored.
    pub async fn finish(self, tx: &mut WriteTx) -> Result<(), StoreError> {
        if !self.balance_stored {
            tx.store_balance(self.user_id, self.balance, self.now)
                .await?;
        }
        Ok(())
    }
}
