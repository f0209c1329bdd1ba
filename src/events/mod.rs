//! Balance change events: who hears about committed ledger rows.
//!
//! SQLite (one instance): the ledger announces rows in-process after each
//! commit. PostgreSQL: the triggers append every change to `gw_events` in
//! its transaction, and every instance tails that table in commit order
//! (`store::postgres::tail`, woken by one `NOTIFY` per burst of commits)
//! and feeds its own broker, the originating one included, so there is one
//! path and it crosses instances. The broker hands each change to the
//! single-user subscribers' queues and appends it once to the log every
//! all-users subscriber reads (`broker`).

mod broker;

pub use broker::{BalanceEvent, Broker, Filter, Mark, Next, Subscription};
