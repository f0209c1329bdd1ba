//! The store's row vocabulary: the keys, rows and records the ledger's
//! write transaction (`ledger.rs`), the engines' own statements
//! (`postgres/`, `sqlite/`) and the domain pass each other. Nothing here
//! runs a statement.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::feed::Entry;

/// Which user to lock: the ts_* tables name users by int id, the ledger by
/// uuid, a hold's settlement by the hold's key.
#[derive(Debug, Clone, Copy)]
pub enum UserKey<'a> {
    Id(i32),
    Uuid(Uuid),
    /// The user of the hold under this job key (none if no such hold).
    Hold {
        source_type: &'a str,
        source_id: &'a str,
    },
}

/// The idempotency key of a ledger row: each is unique among the rows the
/// gateway wrote (partial unique indexes of `gw_entries`); a consume or
/// recharge key may also name a row of the history before the cutover
/// (where duplicates exist: the earliest). Each lookup is an index lookup.
#[derive(Debug, Clone, Copy)]
pub enum LedgerKey<'a> {
    Consume {
        source_type: &'a str,
        source_id: &'a str,
    },
    Recharge {
        order_id: &'a str,
    },
    Refund {
        refund_key: &'a str,
    },
}

/// A user's batch with points left, as the draw needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchRow {
    pub id: i64,
    pub remaining: i64,
    pub expires_at: Option<DateTime<Utc>>,
    /// Given points (`funds = 'gift'`), drawn before paid ones expiring alike.
    pub gift: bool,
}

/// A locked user row.
#[derive(Debug, Clone)]
pub struct LockedUser {
    pub id: i32,
    pub uuid: Uuid,
    /// The cached balance.
    pub balance: i64,
    /// The user's batches with points left, in no particular order, when
    /// the engine read them in the same round trip as the lock and knows
    /// them to be current (PostgreSQL); `None`: read them with
    /// [`WriteTx::batches`].
    pub batches: Option<Vec<BatchRow>>,
    /// When the user's last ledger row was stamped, if the lock statement
    /// could read it current; `None`: read it with
    /// [`WriteTx::last_row_time`]. New rows are stamped no earlier, so a
    /// user's rows in ledger order are in time order too.
    pub last_at: Option<LastAt>,
    /// The database's clock once the lock was held (PostgreSQL: one clock
    /// for every instance, the same one `gw_consume` stamps by); `None`:
    /// this process's clock, read under SQLite's write lock.
    pub locked_at: Option<DateTime<Utc>>,
    /// The id of the row under the probed key, as seen by the lock
    /// statement. On PostgreSQL that is the snapshot taken before any wait
    /// for the lock: a row committed meanwhile is not seen, so `None` means
    /// "probably not"; the unique index (or a fresh [`WriteTx::find`])
    /// settles the race.
    pub probed: Option<i64>,
    /// With a consume key probed: the id of the hold under that key, as
    /// seen by the lock statement (same snapshot caveat as `probed`).
    pub hold_probed: Option<i64>,
    /// Points reserved by the user's open holds, and the count of the
    /// user's hold changes (both current: read from the locked row).
    pub held: i64,
    pub hold_seq: i64,
    /// Whether the probes read a snapshot in which no transaction of this
    /// user committed after it (SQLite: always; PostgreSQL: the locked row
    /// is the version the statement's snapshot saw). When false, a probe's
    /// `None` must be checked again before it is trusted.
    pub current: bool,
}

/// The time of a user's last ledger row (`None`: the user has none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastAt(pub Option<DateTime<Utc>>);

/// What an operation decides about a ledger row and its mirror; the
/// writer adds the user, the balances and the time ([`NewEntry`]).
#[derive(Debug, Clone)]
pub struct EntryFields {
    pub source_type: Option<String>,
    pub source_id: Option<String>,
    pub batch_id: Option<i64>,
    pub duration: Option<f64>,
    pub description: String,
    pub refund_key: Option<String>,
    pub refund_of: Option<i64>,
    pub request_hash: Option<String>,
    /// `ts_points_detail.source_type`.
    pub mirror_source: &'static str,
    /// `ts_points_detail.order_id`.
    pub mirror_order: Option<String>,
    /// `ts_points_detail.title` when the caller gave the legacy title;
    /// the description otherwise.
    pub mirror_title: Option<String>,
    /// `gw_entries.written_by`: the caller's subject, or `gateway`.
    pub written_by: Option<String>,
}

impl EntryFields {
    pub fn new(description: String, mirror_source: &'static str) -> EntryFields {
        EntryFields {
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
            mirror_title: None,
            written_by: None,
        }
    }
}

/// A ledger row and its `ts_points_detail` mirror, about to be written.
#[derive(Debug, Clone)]
pub struct NewEntry {
    pub user_id: i32,
    pub user_uuid: Uuid,
    pub tx_type: &'static str,
    pub amount: i64,
    pub balance_before: i64,
    pub balance_after: i64,
    pub created_at: DateTime<Utc>,
    /// `ts_points_detail.points`: the signed change.
    pub mirror_points: i64,
    pub fields: EntryFields,
}

impl NewEntry {
    /// The row as read back, once its id is known.
    pub(super) fn entry(&self, id: i64) -> Entry {
        Entry {
            id,
            user_id: self.user_uuid,
            r#type: self.tx_type.to_owned(),
            amount: self.amount,
            balance_before: self.balance_before,
            balance_after: self.balance_after,
            source_type: self.fields.source_type.clone(),
            source_id: self.fields.source_id.clone(),
            batch_id: self.fields.batch_id,
            duration: self.fields.duration,
            description: Some(self.fields.description.clone()),
            refund_key: self.fields.refund_key.clone(),
            refund_of: self.fields.refund_of,
            request_hash: self.fields.request_hash.clone(),
            created_at: self.created_at,
            updated_at: self.created_at,
        }
    }
}

/// A new batch of points (a recharge or gift).
#[derive(Debug, Clone)]
pub struct NewBatch<'a> {
    pub user_id: i32,
    pub kind: &'a str,
    /// `paid` or `gift`.
    pub funds: &'a str,
    pub amount: i64,
    pub expires_at: Option<DateTime<Utc>>,
    pub order_id: &'a str,
    pub created_at: DateTime<Utc>,
}

/// A `ts_financial_transactions` consumption row (type 1), as the ts
/// platform's old `deduct_user_money_by_id` wrote one per charge: written
/// for a consume that carries the ts statement's title.
#[derive(Debug, Clone)]
pub struct ChargeRecord<'a> {
    pub user_id: i32,
    pub points: i64,
    pub order_id: &'a str,
    pub title: &'a str,
    pub time: DateTime<Utc>,
}

/// A `ts_financial_transactions` row for a paid recharge.
#[derive(Debug, Clone)]
pub struct NewPayment<'a> {
    pub user_id: i32,
    pub money_cents: i32,
    pub order_id: &'a str,
    pub title: &'a str,
    pub pay_type: i32,
    pub time: DateTime<Utc>,
}

/// Everything a consume writes that does not depend on the user's state.
#[derive(Debug, Clone, Copy)]
pub struct ConsumeCall<'a> {
    pub user_id: i32,
    pub source_type: &'a str,
    pub source_id: &'a str,
    pub amount: i64,
    pub duration: Option<f64>,
    /// The ledger row's description, also the mirror's title (a titled
    /// consume never comes here: it writes a money-page row the call does
    /// not know).
    pub description: &'a str,
    /// `gw_entries.written_by`.
    pub written_by: Option<&'a str>,
    pub request_hash: &'a str,
}

/// What the one call did.
#[derive(Debug, Clone, PartialEq)]
pub enum CallOutcome {
    /// Wrote the consume (committed).
    Done(Box<Entry>),
    /// A row already holds the job's key; nothing written. The user's
    /// ledger uuid, for telling a legacy row of another user.
    Exists { user_uuid: Uuid },
    /// Nothing written: a case the general path decides (unknown user, a
    /// hold under the key, too few points available, a batch due to expire,
    /// figures the mirror cannot hold).
    Declined,
}
