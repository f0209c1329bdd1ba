//! `ts_points_detail` (seed 004): the older platform's signed statement, with
//! peewee's types (every column NOT NULL, `created_at` naive local time). The
//! gateway mirrors every ledger row it writes here; `gw_entries.detail_id`
//! links the two.
use sea_orm::entity::prelude::*;

use crate::legacy_time::LocalTime;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "ts_points_detail")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i32,
    pub user_id: i32,
    pub points: i32,
    pub order_id: String,
    pub title: String,
    pub source_type: String,
    pub balance_before: i32,
    pub balance_after: i32,
    pub created_at: LocalTime,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
