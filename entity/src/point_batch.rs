//! `gw_point_batches` (the gateway's own): every recharge or grant is a batch that consumes draw
//! from and refunds return to; `remaining` reaches 0 by consumption or expiry.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "gw_point_batches")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub user_id: i32,
    pub kind: String,
    /// Whose money the points are: `paid` or `gift` (kept apart, as the ts
    /// platform keeps `money` and `gift_money`).
    pub funds: String,
    pub amount: i64,
    pub remaining: i64,
    /// Points of this batch reserved by open holds (not in `remaining`).
    pub reserved: i64,
    pub expires_at: Option<DateTimeUtc>,
    #[sea_orm(unique)]
    pub order_id: String,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
