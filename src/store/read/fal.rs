//! fal accounts and tasks.

use chrono::{DateTime, Utc};
use entity::{fal_account, fal_task};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, Condition, EntityTrait, Iterable, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect, Select, Value,
};

use super::Page;
use crate::store::{Store, StoreError};

#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    pub user_id: Option<i32>,
    pub account_id: Option<i32>,
    pub status: Option<String>,
    pub app_name: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub refunded: Option<bool>,
}

impl TaskFilter {
    fn select(&self, zone: chrono_tz::Tz) -> Select<fal_task::Entity> {
        let local = |t| entity::legacy_time::LocalTime::of(crate::time::truncate_micros(t), zone);
        let mut cond = Condition::all();
        if let Some(u) = self.user_id {
            cond = cond.add(fal_task::Column::UserId.eq(u));
        }
        if let Some(a) = self.account_id {
            // Tasks name their account by key; the key never leaves SQL.
            cond = cond.add(
                fal_task::Column::ApiKey.in_subquery(
                    sea_orm::sea_query::Query::select()
                        .column(fal_account::Column::ApiKey)
                        .from(fal_account::Entity)
                        .and_where(fal_account::Column::Id.eq(a))
                        .to_owned(),
                ),
            );
        }
        if let Some(s) = &self.status {
            cond = cond.add(fal_task::Column::Status.eq(s.as_str()));
        }
        if let Some(a) = &self.app_name {
            cond = cond.add(fal_task::Column::AppName.eq(a.as_str()));
        }
        if let Some(from) = self.from {
            cond = cond.add(fal_task::Column::CreatedAt.gte(local(from)));
        }
        if let Some(to) = self.to {
            cond = cond.add(fal_task::Column::CreatedAt.lt(local(to)));
        }
        if let Some(r) = self.refunded {
            cond = cond.add(fal_task::Column::IsRefund.eq(if r { 1 } else { 0 }));
        }
        fal_task::Entity::find().filter(cond)
    }
}

pub async fn accounts(store: &Store) -> Result<Vec<fal_account::Model>, StoreError> {
    fal_account::Entity::find()
        .order_by_asc(fal_account::Column::Id)
        .all(store.conn())
        .await
        .map_err(Into::into)
}

/// Every task column except the JSON `input_params` / `output_params`
/// (prompts and results, the widest by far), read as NULL: the API does not
/// expose them, so a page of 100 tasks need not carry them.
fn without_params(sel: Select<fal_task::Entity>) -> Select<fal_task::Entity> {
    use fal_task::Column;
    sel.select_only()
        .columns(
            Column::iter().filter(|c| !matches!(c, Column::InputParams | Column::OutputParams)),
        )
        .expr_as(Expr::value(Value::String(None)), "input_params")
        .expr_as(Expr::value(Value::String(None)), "output_params")
}

pub async fn task_page(
    store: &Store,
    filter: &TaskFilter,
    page: &Page,
) -> Result<(Vec<fal_task::Model>, bool), StoreError> {
    let rows = page
        .apply_local(
            without_params(filter.select(store.legacy_zone())),
            store.legacy_zone(),
            fal_task::Column::CreatedAt,
            fal_task::Column::Id,
        )
        .all(store.conn())
        .await?;
    Ok(page.finish(rows))
}

pub async fn task_count(store: &Store, filter: &TaskFilter) -> Result<u64, StoreError> {
    Ok(filter
        .select(store.legacy_zone())
        .count(store.conn())
        .await?)
}

/// The fal accounts holding `keys` (dataloader batches).
pub async fn accounts_by_key(
    store: &Store,
    keys: &[String],
) -> Result<Vec<fal_account::Model>, StoreError> {
    Ok(fal_account::Entity::find()
        .filter(fal_account::Column::ApiKey.is_in(keys.iter().cloned()))
        .all(store.conn())
        .await?)
}

/// `…` and the last four characters: enough to tell keys apart, never
/// enough to use one.
pub fn mask_key(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() <= 8 {
        return "…".to_owned();
    }
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("…{tail}")
}

#[cfg(test)]
mod tests {
    use super::mask_key;

    #[test]
    fn keys_are_masked_to_their_last_four_characters() {
        assert_eq!(mask_key("fal-key-0123456789abcdef"), "…cdef");
        assert_eq!(mask_key("short"), "…");
    }
}
