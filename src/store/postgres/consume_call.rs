//! Calling `gw_consume` (migration 7; its arguments as of migration 12): one statement, in a transaction of
//! its own, so BEGIN and COMMIT travel with it.

use chrono_tz::Tz;
use sea_orm::{ConnectionTrait, DbBackend, Statement};

use crate::store::feed::Entry;
use crate::store::rows::{CallOutcome, ConsumeCall};
use crate::store::StoreError;

/// `p_title` (migration 12) is NULL: titled consumes take the general
/// path. `p_at` is NULL: since migration 15 the function stamps the row by
/// the database's clock once the user's lock is held, as the general path
/// does.
const CALL_SQL: &str = "SELECT o_outcome, o_id, o_user, o_balance, o_at, o_batch \
     FROM gw_consume($1, $2, $3, $4, $5, $6, $7, NULL, $8, $9, NULL)";

pub(crate) async fn run(
    db: &crate::store::db::Db,
    call: &ConsumeCall<'_>,
    zone: Tz,
) -> Result<CallOutcome, StoreError> {
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            CALL_SQL,
            [
                call.user_id.into(),
                call.source_type.into(),
                call.source_id.into(),
                call.amount.into(),
                call.duration.into(),
                call.description.into(),
                call.request_hash.into(),
                zone.name().into(),
                call.written_by.into(),
            ],
        ))
        .await?
        .ok_or_else(|| StoreError::custom("gw_consume returned no row"))?;
    let outcome: String = row.try_get("", "o_outcome")?;
    Ok(match outcome.as_str() {
        "done" => {
            let balance_before: i64 = row.try_get("", "o_balance")?;
            let at = row.try_get("", "o_at")?;
            CallOutcome::Done(Box::new(Entry {
                id: row.try_get("", "o_id")?,
                user_id: row.try_get("", "o_user")?,
                r#type: "consume".to_owned(),
                amount: call.amount,
                balance_before,
                balance_after: balance_before - call.amount,
                source_type: Some(call.source_type.to_owned()),
                source_id: Some(call.source_id.to_owned()),
                batch_id: row.try_get("", "o_batch")?,
                duration: call.duration,
                description: Some(call.description.to_owned()),
                refund_key: None,
                refund_of: None,
                request_hash: Some(call.request_hash.to_owned()),
                created_at: at,
                updated_at: at,
            }))
        }
        "exists" => CallOutcome::Exists {
            user_uuid: row.try_get("", "o_user")?,
        },
        "other" => CallOutcome::Declined,
        unknown => {
            return Err(StoreError::custom(format!(
                "gw_consume answered {unknown:?}"
            )))
        }
    })
}
