use std::sync::Arc;

use async_graphql::Object;

use super::UsageDetail;
use crate::events::BalanceEvent;
use crate::graphql::context::int;

/// One change of a user's balance, pushed to `balanceChanged` subscribers.
/// Within one subscription a user's events come in ledger order, so each
/// `entry.balanceBefore` equals the previous `balance`; a resync (after the
/// subscriber fell behind or the server lost its database feed) has no
/// `entry` and carries the balance to continue from.
pub struct BalanceChange(pub Arc<BalanceEvent>);

#[Object]
impl BalanceChange {
    async fn user_id(&self) -> i32 {
        self.0.user_id
    }
    /// The balance after this change (the ledger balance, as `balanceAfter`).
    async fn balance(&self) -> async_graphql::Result<i32> {
        int(self.0.balance)
    }
    /// The ledger row; null on a resync.
    async fn entry(&self) -> Option<UsageDetail> {
        self.0.entry.clone().map(UsageDetail)
    }
    /// True when this is a resync rather than a ledger row: events may have
    /// been missed before it.
    async fn resync(&self) -> bool {
        self.0.entry.is_none()
    }
}
