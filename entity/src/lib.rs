//! SeaORM entities for every table of the gateway.
//!
//! Table and column names of the seed tables are a contract with an existing
//! platform: they are spelled here exactly as the seeds spell them.

pub mod entry;
pub mod fal_account;
pub mod fal_task;
pub mod financial_transaction;
pub mod hold;
pub mod legacy_time;
pub mod point_allocation;
pub mod point_batch;
pub mod point_transaction;
pub mod points_detail;
pub mod user;
