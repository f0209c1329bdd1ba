//! `mjk_point_transactions`: the points ledger (seed 000), one row per movement,
//! with the seed's columns and types (`integer` amounts on a legacy database;
//! reads cast them, so a wider `bigint` an adopter has reads the same).
//!
//! The gateway's own facts about a row it wrote (refund key, the consume a
//! refund belongs to, the hash of the request) live in `gw_entries`; they are
//! carried here, not selected from this table, for the rows the store reads
//! with that join.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "mjk_point_transactions")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub user_id: Uuid,
    #[sea_orm(column_name = "type")]
    pub r#type: String,
    #[sea_orm(select_as = "BIGINT")]
    pub amount: i64,
    #[sea_orm(select_as = "BIGINT")]
    pub balance_before: i64,
    #[sea_orm(select_as = "BIGINT")]
    pub balance_after: i64,
    pub source_type: Option<String>,
    pub source_id: Option<String>,
    pub batch_id: Option<i64>,
    pub duration: Option<f64>,
    pub description: Option<String>,
    #[sea_orm(ignore)]
    pub refund_key: Option<String>,
    #[sea_orm(ignore)]
    pub refund_of: Option<i64>,
    #[sea_orm(ignore)]
    pub request_hash: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
