//! `gw_entries` (the gateway's own): one row per ledger row the gateway
//! wrote. Its idempotency keys (unique here, whatever duplicates legacy
//! history holds), the consume a refund belongs to, the hash of the request
//! that wrote it, and its `ts_points_detail` mirror (or the ts platform's
//! own statement row, for a movement absorbed from it). `origin` is NULL
//! for the gateway's own rows, `mjk` or `ts` for a legacy write absorbed
//! after the cutover. A ledger row after the cutover without one was
//! written by something else and not absorbed.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "gw_entries")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub ledger_id: i64,
    pub user_id: i32,
    #[sea_orm(column_name = "type")]
    pub r#type: String,
    pub source_type: Option<String>,
    pub source_id: Option<String>,
    pub refund_key: Option<String>,
    pub refund_of: Option<i64>,
    pub request_hash: Option<String>,
    pub detail_id: Option<i32>,
    pub origin: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
