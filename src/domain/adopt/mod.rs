//! `points-gateway adopt`: taking over a database the platforms already
//! run. What is found ([`Inventory`], read by the store), what would be done
//! about it ([`plan`]: users, identities, opening balances, or the reasons
//! it cannot proceed), and the report that says both ([`report`]). Pure:
//! the store reads and writes, this decides.

pub mod plan;
pub mod report;
pub mod user_map;

pub use plan::{plan, OpeningBalance, Plan, PlannedUser};
pub use user_map::UserMap;

pub use crate::store::adopt::{Anomaly, Difference, Inventory, TableFound};
