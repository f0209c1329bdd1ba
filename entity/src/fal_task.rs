//! `ts_fal_tasks` (seed 004): one row per job run on fal. `money` is what the
//! user was charged in points; `cost_money` what fal billed, in USD. The ts
//! platform writes its times as naive local time ([`LocalTime`]).
use sea_orm::entity::prelude::*;

use crate::legacy_time::LocalTime;

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
    pub task_type: String,
    pub status: String,
    pub money: i32,
    #[sea_orm(select_as = "DOUBLE PRECISION")]
    pub cost_money: f64,
    pub is_refund: i32,
    pub input_params: Option<String>,
    pub output_params: Option<String>,
    pub created_at: LocalTime,
    pub completed_at: Option<LocalTime>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
