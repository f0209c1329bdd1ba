//! The points ledger: consume, refund, recharge, expiry, user creation.
//!
//! Every operation is one database transaction that locks the user row
//! first (see [`writer`]), expires that user's due batches, applies the
//! movement, and writes the ledger row, batch changes, allocations, the
//! `ts_points_detail` mirror and the cached balance together. Callers get
//! back every row written, to publish after commit.

mod announce;
mod consume;
mod errors;
mod expire;
mod idempotency;
mod recharge;
mod refund;
mod users;
mod writer;

pub use announce::{Announcer, Committer};
pub use consume::{consume, consume_in};
pub use errors::{ConsumeError, CreateUserError, ExpireError, RechargeError, RefundError};
pub use expire::{expire_due, ExpireReport};
pub use recharge::{recharge, recharge_in};
pub use refund::{refund, refund_in};
pub use users::{create_user, CreateUser};

pub type Entry = entity::point_transaction::Model;

/// The result of a ledger operation.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The row the operation is about (the consume, refund or recharge).
    pub entry: Entry,
    /// Every row this call committed, in ledger order (a refund into an
    /// expired batch also writes an expire row). Empty on a replay.
    pub written: Vec<Entry>,
    /// The user's `ts_users.id`, known when rows were written.
    pub user_id: Option<i32>,
    /// True when an idempotent retry returned the original row.
    pub replayed: bool,
}
