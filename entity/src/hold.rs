//! `gw_holds` (the gateway's own): points reserved for a job before it
//! runs, keyed like the job's consume by `(source_type, source_id)`; its
//! batches and amounts are in `gw_hold_parts`. A hold is `held` until it is
//! captured (the job's consume row, `entry_id`), released, or expired by
//! the sweep.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "gw_holds")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub user_id: i32,
    pub source_type: String,
    pub source_id: String,
    pub amount: i64,
    pub duration: Option<f64>,
    pub note: Option<String>,
    pub status: String,
    pub request_hash: String,
    pub expires_at: DateTimeUtc,
    pub created_at: DateTimeUtc,
    pub settled_at: Option<DateTimeUtc>,
    pub settle_hash: Option<String>,
    pub captured: Option<i64>,
    pub entry_id: Option<i64>,
    pub reason: Option<String>,
    pub seq: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
