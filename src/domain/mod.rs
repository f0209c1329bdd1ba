//! The billing domain: points, keys, the ledger rules and their checker.
//!
//! Nothing here knows about HTTP or GraphQL; the transport layers parse
//! input into these types, call the operations, and map the errors by code.

pub mod adopt;
pub mod hold_input;
pub mod input;
pub mod ledger;
pub mod reconcile;
pub mod source;
pub mod verify;
