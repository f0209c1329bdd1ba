//! `ts_points_detail` (seed 004): the older platform's signed statement. The
//! gateway mirrors every ledger row here; `ledger_id` links the two.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "ts_points_detail")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i32,
    pub user_id: i32,
    pub points: i32,
    pub order_id: Option<String>,
    pub title: Option<String>,
    pub source_type: Option<String>,
    pub balance_before: i32,
    pub balance_after: i32,
    pub created_at: DateTimeUtc,
    pub ledger_id: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
