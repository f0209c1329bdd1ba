//! Balance change events: who hears about committed ledger rows.
//!
//! SQLite (one instance): the ledger announces rows in-process after each
//! commit. PostgreSQL: a trigger sends `NOTIFY` at commit and every
//! instance's listener feeds its own broker, the originating one included,
//! so there is one path and it crosses instances.

mod broker;

pub use broker::{BalanceEvent, Broker, Filter, Mark, Next, Subscription};
