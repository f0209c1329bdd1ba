//! `ts_fal_tasks` (seed 004): one row per job run on fal. `money` is what the
//! user was charged in points; `cost_money` what fal billed, in USD.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "ts_fal_tasks")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i32,
    pub user_id: i32,
    #[sea_orm(unique)]
    pub task_id: String,
    pub online_task_id: Option<String>,
    pub app_name: String,
    pub api_key: String,
    pub task_type: Option<String>,
    pub status: String,
    pub money: i32,
    pub cost_money: f64,
    pub is_refund: i32,
    pub input_params: Option<String>,
    pub output_params: Option<String>,
    pub created_at: DateTimeUtc,
    pub completed_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
