//! Read models: the SQL behind every list and lookup of the API. Filters
//! (including the caller's scope) are part of the SQL, never applied after
//! fetching.

pub mod batches;
pub mod billing;
pub mod costs;
pub mod cursor;
pub mod fal;
pub mod ledger;
pub mod users;

pub use cursor::{Cursor, CursorError, Page};
