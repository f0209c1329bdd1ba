//! `mjk_point_transactions`: the points ledger (seed 000), one row per movement.
//!
//! Columns after `description` are the gateway's own: the refund key and the
//! consume a refund belongs to, and a hash of the request that wrote the row
//! so an idempotent retry can be told apart from a conflicting reuse of a key.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "mjk_point_transactions")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub user_id: Uuid,
    #[sea_orm(column_name = "type")]
    pub r#type: String,
    pub amount: i64,
    pub balance_before: i64,
    pub balance_after: i64,
    pub source_type: Option<String>,
    pub source_id: Option<String>,
    pub batch_id: Option<i64>,
    pub duration: Option<f64>,
    pub description: Option<String>,
    pub refund_key: Option<String>,
    pub refund_of: Option<i64>,
    pub request_hash: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
