use std::sync::Arc;

use async_graphql::Object;

use super::{HoldChange, UsageDetail};
use crate::events::BalanceEvent;
use crate::graphql::context::int;

/// One change of a user's balance or holds, pushed to `balanceChanged`
/// subscribers. Within one subscription a user's events come in commit
/// order, so each `entry.balanceBefore` equals the previous `balance`; a
/// hold change moves `held` and `available`, not `balance`. A resync
/// (after the subscriber fell behind or the server lost its database feed)
/// has neither `entry` nor `hold` and carries the figures to continue from.
pub struct BalanceChange(pub Arc<BalanceEvent>);

#[Object]
impl BalanceChange {
    async fn user_id(&self) -> i32 {
        self.0.user_id
    }
    /// The settled balance after this change (the ledger balance, as
    /// `balanceAfter`).
    async fn balance(&self) -> async_graphql::Result<i32> {
        int(self.0.balance)
    }
    /// Points reserved by open holds after this change.
    async fn held(&self) -> async_graphql::Result<i32> {
        int(self.0.held)
    }
    /// What the user may spend after this change: `balance - held`.
    async fn available(&self) -> async_graphql::Result<i32> {
        int(self.0.balance - self.0.held)
    }
    /// The ledger row, for a ledger change.
    async fn entry(&self) -> Option<UsageDetail> {
        self.0.entry.clone().map(UsageDetail)
    }
    /// The hold, for a hold change (placed, captured, released, expired).
    async fn hold(&self) -> Option<HoldChange> {
        self.0.hold.clone().map(HoldChange)
    }
    /// True when this is a resync rather than a change: events may have
    /// been missed before it.
    async fn resync(&self) -> bool {
        self.0.entry.is_none() && self.0.hold.is_none()
    }
}
