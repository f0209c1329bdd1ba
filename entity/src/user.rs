//! `gw_users` (the gateway's own): the int id the ts_* tables use (on an
//! adopted database the ts platform's `ts_users.id`), the uuid the ledger
//! uses, and the cached balance that every ledger operation updates under a
//! row lock. `ts_users` belongs to the ts platform and is never written.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "gw_users")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i32,
    #[sea_orm(unique)]
    pub uuid: Uuid,
    pub name: String,
    pub balance: i64,
    /// Points reserved by the user's open holds (balance − held is spendable).
    pub held: i64,
    /// Counts the user's hold changes (orders hold events after a resync).
    pub hold_seq: i64,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
