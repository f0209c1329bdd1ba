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
