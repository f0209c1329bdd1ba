//! The UsageDetail ledger, the older points statement and financial rows.

use chrono::{DateTime, Utc};
use entity::{financial_transaction as fin, point_transaction as tx, points_detail as pd, user};
use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{
    ColumnTrait, Condition, DatabaseConnection, DbErr, EntityTrait, PaginatorTrait, QueryFilter,
    Select,
};

use super::Page;
use crate::domain::source::{SourceType, TxType};

/// Filters of `usageDetails`; the user is always set (the caller's scope).
#[derive(Debug, Clone, Default)]
pub struct UsageFilter {
    /// `ts_users.id`; the ledger names users by uuid, looked up by the same
    /// statement (one round trip per page instead of two).
    pub user_id: i32,
    pub types: Option<Vec<TxType>>,
    pub source_types: Option<Vec<SourceType>>,
    /// Inclusive lower bound.
    pub from: Option<DateTime<Utc>>,
    /// Exclusive upper bound.
    pub to: Option<DateTime<Utc>>,
}

impl UsageFilter {
    fn select(&self) -> Select<tx::Entity> {
        // A scalar subquery, evaluated once before the scan, so the page
        // is still an ordered range of the (user_id, created_at, id) index.
        let uuid = Query::select()
            .column(user::Column::Uuid)
            .from(user::Entity)
            .and_where(Expr::col(user::Column::Id).eq(self.user_id))
            .to_owned();
        let mut cond = Condition::all().add(
            Expr::col((tx::Entity, tx::Column::UserId))
                .eq(Expr::SubQuery(None, Box::new(uuid.into()))),
        );
        if let Some(types) = &self.types {
            cond = cond.add(tx::Column::Type.is_in(types.iter().map(|t| t.as_str())));
        }
        if let Some(sources) = &self.source_types {
            cond = cond.add(tx::Column::SourceType.is_in(sources.iter().map(|t| t.as_str())));
        }
        if let Some(from) = self.from {
            cond = cond.add(tx::Column::CreatedAt.gte(crate::time::truncate_micros(from)));
        }
        if let Some(to) = self.to {
            cond = cond.add(tx::Column::CreatedAt.lt(crate::time::truncate_micros(to)));
        }
        tx::Entity::find().filter(cond)
    }
}

pub async fn usage_page(
    db: &DatabaseConnection,
    filter: &UsageFilter,
    page: &Page,
) -> Result<(Vec<tx::Model>, bool), DbErr> {
    let rows = page
        .apply(filter.select(), tx::Column::CreatedAt, tx::Column::Id)
        .all(db)
        .await?;
    Ok(page.finish(rows))
}

pub async fn usage_count(db: &DatabaseConnection, filter: &UsageFilter) -> Result<u64, DbErr> {
    filter.select().count(db).await
}

pub async fn statement_page(
    db: &DatabaseConnection,
    user_id: i32,
    page: &Page,
) -> Result<(Vec<pd::Model>, bool), DbErr> {
    let sel = pd::Entity::find().filter(pd::Column::UserId.eq(user_id));
    let rows = page
        .apply(sel, pd::Column::CreatedAt, pd::Column::Id)
        .all(db)
        .await?;
    Ok(page.finish(rows))
}

pub async fn statement_count(db: &DatabaseConnection, user_id: i32) -> Result<u64, DbErr> {
    pd::Entity::find()
        .filter(pd::Column::UserId.eq(user_id))
        .count(db)
        .await
}

pub async fn financial_page(
    db: &DatabaseConnection,
    user_id: i32,
    page: &Page,
) -> Result<(Vec<fin::Model>, bool), DbErr> {
    let sel = fin::Entity::find().filter(fin::Column::UserId.eq(user_id));
    let rows = page
        .apply(sel, fin::Column::Time, fin::Column::Id)
        .all(db)
        .await?;
    Ok(page.finish(rows))
}

pub async fn financial_count(db: &DatabaseConnection, user_id: i32) -> Result<u64, DbErr> {
    fin::Entity::find()
        .filter(fin::Column::UserId.eq(user_id))
        .count(db)
        .await
}
