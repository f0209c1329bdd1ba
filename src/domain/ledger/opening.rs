//! The opening balance of a user when the gateway adopts an existing
//! database: the first row of their chain from the cutover on.

use super::writer::{NewRow, RowTime, Writer};
use super::Entry;
use crate::domain::input::MAX_BALANCE;
use crate::domain::source::{describe, RechargeKind, TxType, OPENING_LABEL};
use crate::store::ledger::{NewBatch, UserKey};
use crate::store::{StoreError, WriteTx};

/// Writes user `user_id`'s opening row (`balance_before` 0, amount and
/// `balance_after` the opening balance, `paid + gift`) and the
/// never-expiring batches that hold those points: the gift part first (of
/// two never-expiring batches the older is drawn first, as the ts platform
/// spends gift points before paid ones), then the paid part; nothing for a
/// zero balance. `note` says where the figure came from (shown after the
/// label).
pub async fn open(
    tx: &mut WriteTx,
    user_id: i32,
    paid: i64,
    gift: i64,
    note: &str,
) -> Result<Option<Entry>, StoreError> {
    if paid < 0 || gift < 0 {
        return Err(StoreError::custom(format!(
            "user {user_id}: an opening of {paid} paid and {gift} gift points"
        )));
    }
    let amount = paid + gift;
    if amount == 0 {
        return Ok(None);
    }
    if amount > MAX_BALANCE {
        return Err(StoreError::custom(format!(
            "user {user_id}: an opening balance of {amount} is above the cap of {MAX_BALANCE}"
        )));
    }
    let (mut w, _) = Writer::lock(tx, UserKey::Id(user_id), RowTime::Now, None)
        .await?
        .ok_or_else(|| StoreError::custom(format!("user {user_id} was not created")))?;
    if w.balance != 0 {
        return Err(StoreError::custom(format!(
            "user {user_id} already has a balance of {}",
            w.balance
        )));
    }
    let order = format!("opening:{user_id}");
    let mut first = None;
    for (funds, part, order_id) in [
        (RechargeKind::Gift, gift, format!("{order}:gift")),
        (RechargeKind::Paid, paid, order.clone()),
    ] {
        if part == 0 {
            continue;
        }
        let id = tx
            .insert_batch(&NewBatch {
                user_id,
                kind: "opening",
                funds: funds.as_str(),
                amount: part,
                expires_at: None,
                order_id: &order_id,
                created_at: w.now,
            })
            .await?;
        first.get_or_insert(id);
    }
    let batch_id =
        first.ok_or_else(|| StoreError::custom(format!("user {user_id}: no opening batch")))?;
    let mut row = NewRow::new(
        TxType::Opening,
        amount,
        describe(OPENING_LABEL, Some(note)),
        "opening",
    );
    row.fields.source_id = Some(order.clone());
    row.fields.batch_id = Some(batch_id);
    row.fields.mirror_order = Some(order);
    let entry = w.append(tx, row).await?;
    w.finish(tx).await?;
    Ok(Some(entry))
}
