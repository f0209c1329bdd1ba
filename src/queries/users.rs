//! Users and their live balance.

use chrono::{DateTime, Utc};
use entity::{point_batch, user};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder,
    Statement,
};

pub async fn by_id(db: &DatabaseConnection, id: i32) -> Result<Option<user::Model>, DbErr> {
    user::Entity::find_by_id(id).one(db).await
}

/// The balance a client may see: the cached balance less any batch that is
/// past its expiry but not swept yet (invariant 3: never show expired points).
pub async fn live_balance(
    db: &DatabaseConnection,
    user: &user::Model,
    now: DateTime<Utc>,
) -> Result<i64, DbErr> {
    let backend = db.get_database_backend();
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            backend,
            "SELECT CAST(COALESCE(SUM(remaining), 0) AS BIGINT) AS due FROM mjk_point_batches \
             WHERE user_id = $1 AND remaining > 0 AND expires_at IS NOT NULL AND expires_at <= $2",
            [user.id.into(), now.into()],
        ))
        .await?;
    let due: i64 = match row {
        Some(r) => r.try_get("", "due")?,
        None => 0,
    };
    Ok(user.balance - due)
}

/// A user's batches that still hold points and have not expired.
pub async fn live_batches(
    db: &DatabaseConnection,
    user_id: i32,
    now: DateTime<Utc>,
) -> Result<Vec<point_batch::Model>, DbErr> {
    point_batch::Entity::find()
        .filter(point_batch::Column::UserId.eq(user_id))
        .filter(point_batch::Column::Remaining.gt(0))
        .filter(
            sea_orm::Condition::any()
                .add(point_batch::Column::ExpiresAt.is_null())
                .add(point_batch::Column::ExpiresAt.gt(now)),
        )
        .order_by_asc(point_batch::Column::ExpiresAt)
        .order_by_asc(point_batch::Column::Id)
        .all(db)
        .await
}

/// A user's cached balance and the id of the ledger row that set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BalanceMark {
    pub user_id: i32,
    pub balance: i64,
    /// 0 when the user has no ledger rows yet.
    pub last_entry_id: i64,
}

/// Current balances for a balance-subscription resync, in one statement.
/// The cached balance (not the live one) so that the next event's
/// `balanceBefore` continues from it; both values come from one snapshot.
pub async fn balance_marks(
    db: &DatabaseConnection,
    ids: &[i32],
) -> Result<Vec<BalanceMark>, DbErr> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let placeholders: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
    let sql = format!(
        "SELECT u.id, u.balance, COALESCE((SELECT t.id FROM mjk_point_transactions t \
           WHERE t.user_id = u.uuid ORDER BY t.created_at DESC, t.id DESC LIMIT 1), 0) AS last_id \
         FROM ts_users u WHERE u.id IN ({}) ORDER BY u.id",
        placeholders.join(", ")
    );
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            db.get_database_backend(),
            sql,
            ids.iter().map(|&i| i.into()),
        ))
        .await?;
    rows.iter()
        .map(|r| {
            Ok(BalanceMark {
                user_id: r.try_get("", "id")?,
                balance: r.try_get("", "balance")?,
                last_entry_id: r.try_get("", "last_id")?,
            })
        })
        .collect()
}
