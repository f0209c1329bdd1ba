//! The UsageDetail ledger, the older points statement and financial rows.

use chrono::{DateTime, Utc};
use entity::{financial_transaction as fin, point_transaction as tx, points_detail as pd, user};
use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{ColumnTrait, Condition, EntityTrait, PaginatorTrait, QueryFilter, Select};

use super::Page;
use crate::store::{Engine, Store, StoreError};

/// Whose ledger: the ledger names users by uuid, the API by int id.
#[derive(Debug, Clone, Copy)]
pub enum LedgerUser {
    /// Looked up inside the page statement: one round trip instead of two
    /// (PostgreSQL).
    Id(i32),
    /// Looked up before. On SQLite (in-process, no round trip to save) a
    /// scalar subquery next to the keyset `OR` made deep pages several
    /// times slower under load, so SQLite gets the uuid.
    Uuid(uuid::Uuid),
}

impl LedgerUser {
    /// How a page statement names user `id` on this engine; `None` when
    /// the user is already known not to exist.
    pub async fn of(store: &Store, id: i32) -> Result<Option<LedgerUser>, StoreError> {
        match store.engine() {
            Engine::Postgres => Ok(Some(LedgerUser::Id(id))),
            Engine::Sqlite => Ok(super::users::by_id(store, id)
                .await?
                .map(|u| LedgerUser::Uuid(u.uuid))),
        }
    }
}

/// Filters of `usageDetails`; the user is always set (the caller's scope).
#[derive(Debug, Clone)]
pub struct UsageFilter {
    pub user: LedgerUser,
    /// Ledger `type` values (`consume`, `recharge`, ...).
    pub types: Option<Vec<&'static str>>,
    /// Ledger `source_type` values (`tts`, `fal`, ...).
    pub source_types: Option<Vec<String>>,
    /// Inclusive lower bound.
    pub from: Option<DateTime<Utc>>,
    /// Exclusive upper bound.
    pub to: Option<DateTime<Utc>>,
}

impl UsageFilter {
    fn select(&self) -> Select<tx::Entity> {
        let mut cond = match self.user {
            // A scalar subquery, evaluated once before the scan, so the page
            // is still an ordered range of the (user_id, created_at) index.
            LedgerUser::Id(id) => {
                let uuid = Query::select()
                    .column(user::Column::Uuid)
                    .from(user::Entity)
                    .and_where(Expr::col(user::Column::Id).eq(id))
                    .to_owned();
                Condition::all().add(
                    Expr::col((tx::Entity, tx::Column::UserId))
                        .eq(Expr::SubQuery(None, Box::new(uuid.into()))),
                )
            }
            LedgerUser::Uuid(uuid) => Condition::all().add(tx::Column::UserId.eq(uuid)),
        };
        if let Some(types) = &self.types {
            cond = cond.add(tx::Column::Type.is_in(types.iter().copied()));
        }
        if let Some(sources) = &self.source_types {
            cond = cond.add(tx::Column::SourceType.is_in(sources.iter().cloned()));
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

/// Who wrote each of the ledger rows `ids`: the caller's subject the
/// gateway recorded, `legacy:mjk` / `legacy:ts` for a legacy write it
/// absorbed, `adopt` for an opening. Rows with none of these (the history
/// before the cutover, rows written before writers were recorded) are
/// missing from the answer.
pub async fn writers(
    store: &Store,
    ids: &[i64],
) -> Result<std::collections::HashMap<i64, String>, StoreError> {
    use sea_orm::{ConnectionTrait, Statement};
    if ids.is_empty() {
        return Ok(Default::default());
    }
    let list = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
    // The ids are integers formatted here, never client text.
    let sql = format!(
        "SELECT g.ledger_id AS id, COALESCE(g.written_by, \
           CASE WHEN g.origin IS NOT NULL THEN 'legacy:' || g.origin \
                WHEN g.type = 'opening' THEN 'adopt' END) AS by \
         FROM gw_entries g WHERE g.ledger_id IN ({list})"
    );
    let rows = store
        .conn()
        .query_all_raw(Statement::from_string(
            store.conn().get_database_backend(),
            sql,
        ))
        .await?;
    let mut out = std::collections::HashMap::new();
    for r in rows {
        let id: i64 = r.try_get("", "id")?;
        if let Some(by) = r.try_get::<Option<String>>("", "by")? {
            out.insert(id, by);
        }
    }
    Ok(out)
}

/// One page of the filter's ledger; `None` when its user does not exist.
pub async fn usage_page(
    store: &Store,
    filter: &UsageFilter,
    page: &Page,
) -> Result<Option<(Vec<tx::Model>, bool)>, StoreError> {
    let rows = page
        .apply(filter.select(), tx::Column::CreatedAt, tx::Column::Id)
        .all(store.conn())
        .await?;
    // Looked up inside the statement, the user may be missing: an empty
    // page is the only case that needs asking.
    if let (true, LedgerUser::Id(id)) = (rows.is_empty(), filter.user) {
        if super::users::by_id(store, id).await?.is_none() {
            return Ok(None);
        }
    }
    Ok(Some(page.finish(rows)))
}

pub async fn usage_count(store: &Store, filter: &UsageFilter) -> Result<u64, StoreError> {
    Ok(filter.select().count(store.conn()).await?)
}

pub async fn statement_page(
    store: &Store,
    user_id: i32,
    page: &Page,
) -> Result<(Vec<pd::Model>, bool), StoreError> {
    let sel = pd::Entity::find().filter(pd::Column::UserId.eq(user_id));
    let rows = page
        .apply_local(
            sel,
            store.legacy_zone(),
            pd::Column::CreatedAt,
            pd::Column::Id,
        )
        .all(store.conn())
        .await?;
    Ok(page.finish(rows))
}

pub async fn statement_count(store: &Store, user_id: i32) -> Result<u64, StoreError> {
    pd::Entity::find()
        .filter(pd::Column::UserId.eq(user_id))
        .count(store.conn())
        .await
        .map_err(Into::into)
}

pub async fn financial_page(
    store: &Store,
    user_id: i32,
    page: &Page,
) -> Result<(Vec<fin::Model>, bool), StoreError> {
    let sel = fin::Entity::find().filter(fin::Column::UserId.eq(user_id));
    let rows = page
        .apply_local(sel, store.legacy_zone(), fin::Column::Time, fin::Column::Id)
        .all(store.conn())
        .await?;
    Ok(page.finish(rows))
}

pub async fn financial_count(store: &Store, user_id: i32) -> Result<u64, StoreError> {
    fin::Entity::find()
        .filter(fin::Column::UserId.eq(user_id))
        .count(store.conn())
        .await
        .map_err(Into::into)
}
