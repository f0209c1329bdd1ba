//! Users, their batches and live balances.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use entity::{point_batch, user};
use sea_orm::sea_query::ExprTrait;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use uuid::Uuid;

use crate::store::{Store, StoreError};

pub async fn by_id(store: &Store, id: i32) -> Result<Option<user::Model>, StoreError> {
    Ok(user::Entity::find_by_id(id).one(store.conn()).await?)
}

/// What an admin looks a user up by: an id, a uuid, or part of a name.
#[derive(Debug, Clone, Default)]
pub struct UserSearch(pub Option<String>);

impl UserSearch {
    fn select(&self) -> sea_orm::Select<user::Entity> {
        let q = user::Entity::find();
        let Some(text) = self.0.as_deref().map(str::trim).filter(|t| !t.is_empty()) else {
            return q;
        };
        // Names match case-insensitively, anywhere; LIKE's wildcards in the
        // text are matched literally.
        let escaped = text
            .to_lowercase()
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        let name = sea_orm::sea_query::Expr::expr(sea_orm::sea_query::Func::lower(
            sea_orm::sea_query::Expr::col(user::Column::Name),
        ))
        .like(sea_orm::sea_query::LikeExpr::new(format!("%{escaped}%")).escape('\\'));
        let mut any = sea_orm::Condition::any().add(name);
        if let Ok(id) = text.parse::<i32>() {
            any = any.add(user::Column::Id.eq(id));
        }
        if let Ok(uuid) = text.parse::<Uuid>() {
            any = any.add(user::Column::Uuid.eq(uuid));
        }
        q.filter(any)
    }
}

/// One page of users matching `search`, newest first.
pub async fn search_page(
    store: &Store,
    search: &UserSearch,
    page: &super::Page,
) -> Result<(Vec<user::Model>, bool), StoreError> {
    let rows = page
        .apply(search.select(), user::Column::CreatedAt, user::Column::Id)
        .all(store.conn())
        .await?;
    Ok(page.finish(rows))
}

pub async fn search_count(store: &Store, search: &UserSearch) -> Result<u64, StoreError> {
    use sea_orm::PaginatorTrait;
    Ok(search.select().count(store.conn()).await?)
}

/// Users whose name starts with `prefix`.
pub async fn count_named(store: &Store, prefix: &str) -> Result<u64, StoreError> {
    use sea_orm::PaginatorTrait;
    Ok(user::Entity::find()
        .filter(user::Column::Name.starts_with(prefix))
        .count(store.conn())
        .await?)
}

/// Users by int id (dataloader batches).
pub async fn by_ids(store: &Store, ids: &[i32]) -> Result<Vec<user::Model>, StoreError> {
    Ok(user::Entity::find()
        .filter(user::Column::Id.is_in(ids.iter().copied()))
        .all(store.conn())
        .await?)
}

/// Users by uuid (dataloader batches).
pub async fn by_uuids(store: &Store, uuids: &[Uuid]) -> Result<Vec<user::Model>, StoreError> {
    Ok(user::Entity::find()
        .filter(user::Column::Uuid.is_in(uuids.iter().copied()))
        .all(store.conn())
        .await?)
}

/// Per user, the points of batches past their expiry but not swept yet:
/// what a client must not be shown (invariant 3). Users without any are
/// absent. One statement for any number of users.
pub async fn due_points(
    store: &Store,
    user_ids: &[i32],
    now: DateTime<Utc>,
) -> Result<HashMap<i32, i64>, StoreError> {
    if user_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let mut values: Vec<sea_orm::Value> = vec![now.into()];
    let placeholders: Vec<String> = user_ids
        .iter()
        .map(|&id| {
            values.push(id.into());
            format!("${}", values.len())
        })
        .collect();
    let rows = store
        .all(
            format!(
                "SELECT user_id, CAST(SUM(remaining) AS BIGINT) AS due FROM gw_point_batches \
                 WHERE user_id IN ({}) AND remaining > 0 AND expires_at IS NOT NULL \
                 AND expires_at <= $1 GROUP BY user_id",
                placeholders.join(", ")
            ),
            values,
        )
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("", "user_id")?, r.try_get("", "due")?)))
        .collect()
}

/// The users' batches that still hold points and have not expired, in no
/// particular order (the domain's draw order sorts them); one statement
/// for any number of users.
pub async fn live_batches(
    store: &Store,
    user_ids: &[i32],
    now: DateTime<Utc>,
) -> Result<Vec<point_batch::Model>, StoreError> {
    Ok(point_batch::Entity::find()
        .filter(point_batch::Column::UserId.is_in(user_ids.iter().copied()))
        .filter(
            sea_orm::Condition::any()
                .add(point_batch::Column::Remaining.gt(0))
                .add(point_batch::Column::Reserved.gt(0)),
        )
        .filter(
            sea_orm::Condition::any()
                .add(point_batch::Column::ExpiresAt.is_null())
                .add(point_batch::Column::ExpiresAt.gt(now)),
        )
        .all(store.conn())
        .await?)
}

/// A user's cached balance and the id of the ledger row that set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BalanceMark {
    pub user_id: i32,
    pub balance: i64,
    /// 0 when the user has no ledger rows yet.
    pub last_entry_id: i64,
    pub held: i64,
    pub hold_seq: i64,
}

/// Current balances for a balance-subscription resync, in one statement.
/// The cached balance (not the live one) so that the next event's
/// `balanceBefore` continues from it; both values come from one snapshot.
pub async fn balance_marks(store: &Store, ids: &[i32]) -> Result<Vec<BalanceMark>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let placeholders: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
    let sql = format!(
        "SELECT u.id, u.balance, u.held, u.hold_seq, COALESCE((SELECT t.id FROM mjk_point_transactions t \
           WHERE t.user_id = u.uuid ORDER BY t.created_at DESC, t.id DESC LIMIT 1), 0) AS last_id \
         FROM gw_users u WHERE u.id IN ({}) ORDER BY u.id",
        placeholders.join(", ")
    );
    let rows = store
        .all(sql, ids.iter().map(|&i| i.into()).collect())
        .await?;
    rows.iter()
        .map(|r| {
            Ok(BalanceMark {
                user_id: r.try_get("", "id")?,
                balance: r.try_get("", "balance")?,
                last_entry_id: r.try_get("", "last_id")?,
                held: r.try_get("", "held")?,
                hold_seq: r.try_get("", "hold_seq")?,
            })
        })
        .collect()
}
