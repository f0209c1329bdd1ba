//! The points ledger: consume, refund, recharge, expiry, holds, user
//! creation.
//!
//! Every operation is one database transaction that locks the user row
//! first (see [`writer`]), expires that user's due batches, applies the
//! movement, and writes the ledger row, batch changes, allocations, the
//! `ts_points_detail` mirror and the cached balance together, through the
//! store's write transaction ([`crate::store::WriteTx`]). The arithmetic
//! and the orders are the pure functions of [`rules`].

mod consume;
mod errors;
mod expire;
mod hold;
mod idempotency;
pub mod opening;
mod recharge;
mod refund;
pub mod rules;
mod users;
mod writer;

pub use consume::{consume, consume_in};
pub use errors::{
    CaptureError, ConsumeError, CreateUserError, ExpireError, HoldError, RechargeError,
    RefundError, ReleaseError,
};
pub use expire::{expire_due, ExpireReport};
pub use hold::{capture_hold, expire_holds, hold, release_hold, Captured, Held, HoldSweep};
pub use recharge::{recharge, recharge_in};
pub use refund::{refund, refund_in};
pub use users::{create_user, CreateUser};
pub use writer::RowTime;

pub type Entry = entity::point_transaction::Model;

/// The result of a ledger operation.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The row the operation is about (the consume, refund or recharge).
    pub entry: Entry,
    /// True when an idempotent retry returned the original row.
    pub replayed: bool,
}
