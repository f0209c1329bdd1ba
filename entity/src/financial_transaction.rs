//! `ts_financial_transactions` (seed 004): money movements in cents, with
//! peewee's types (`time` naive local time, `pay_type` NOT NULL).
use sea_orm::entity::prelude::*;

use crate::legacy_time::LocalTime;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "ts_financial_transactions")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i32,
    pub user_id: i32,
    pub money: i32,
    pub order_id: String,
    pub title: String,
    pub deployment_uuid: Option<String>,
    pub time: LocalTime,
    pub transaction_type: i32,
    pub pay_type: i32,
    pub is_cash: i32,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
