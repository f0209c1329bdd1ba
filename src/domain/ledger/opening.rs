//! The opening balance of a user when the gateway adopts an existing
//! database: the first row of their chain from the cutover on.

use super::writer::{NewRow, RowTime, Writer};
use super::Entry;
use crate::domain::input::MAX_BALANCE;
use crate::domain::source::{describe, RechargeKind, TxType, OPENING_LABEL};
use crate::store::adopt::{open_many, Opening};
use crate::store::ledger::{NewBatch, UserKey};
use crate::store::{StoreError, WriteTx};

/// The openings of every adopted user, `(id, paid, gift, note)`: each as
/// [`open`] writes it, in bulk where the engine has a bulk path. Returns
/// the opening rows written (users with a zero balance get none).
pub async fn open_all(
    tx: &mut WriteTx,
    users: &[(i32, i64, i64, &str)],
) -> Result<usize, StoreError> {
    let mut openings = Vec::with_capacity(users.len());
    for &(user_id, paid, gift, note) in users {
        check(user_id, paid, gift)?;
        if paid + gift > 0 {
            openings.push(Opening {
                user_id,
                paid,
                gift,
                description: describe(OPENING_LABEL, Some(note)),
            });
        }
    }
    if let Some(n) = open_many(tx, &openings).await? {
        if n != openings.len() {
            return Err(StoreError::custom(format!(
                "{} openings asked, {n} written",
                openings.len()
            )));
        }
        return Ok(n);
    }
    let mut n = 0;
    for &(user_id, paid, gift, note) in users {
        if open(tx, user_id, paid, gift, note).await?.is_some() {
            n += 1;
        }
    }
    Ok(n)
}

/// An opening is of points that exist and fit a balance.
fn check(user_id: i32, paid: i64, gift: i64) -> Result<(), StoreError> {
    if paid < 0 || gift < 0 {
        return Err(StoreError::custom(format!(
            "user {user_id}: an opening of {paid} paid and {gift} gift points"
        )));
    }
    if paid + gift > MAX_BALANCE {
        return Err(StoreError::custom(format!(
            "user {user_id}: an opening balance of {} is above the cap of {MAX_BALANCE}",
            paid + gift
        )));
    }
    Ok(())
}

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
    check(user_id, paid, gift)?;
    let amount = paid + gift;
    if amount == 0 {
        return Ok(None);
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
