//! `ts_fal_account` (seed 004): the pool of fal API keys. `api_key` is a
//! secret: it never leaves the process except towards fal.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "ts_fal_account")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i32,
    pub name: String,
    #[sea_orm(unique)]
    pub api_key: String,
    /// `real` (peewee `FloatField`) on a legacy database: read as double.
    #[sea_orm(select_as = "DOUBLE PRECISION")]
    pub balance: f64,
    pub use_cnt: i32,
    pub error_cnt: i32,
    pub status: i32,
    pub remark: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
