use async_graphql::{Context, Object, ID};
use chrono::{DateTime, Utc};
use entity::{point_batch, user};

use super::RechargeKindGql;
use crate::domain::ledger::rules::draw_key;
use crate::domain::source::RechargeKind;
use crate::errors::GqlResult;
use crate::graphql::context::{int, loader};
use crate::graphql::{DuePointsLoader, LiveBatchesLoader};

pub struct User(pub user::Model);

#[Object]
impl User {
    async fn id(&self) -> i32 {
        self.0.id
    }
    async fn uuid(&self) -> uuid::Uuid {
        self.0.uuid
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// The settled balance (the ledger's last `balanceAfter`, less points
    /// past their expiry not swept yet); includes `held`.
    async fn balance(&self, ctx: &Context<'_>) -> async_graphql::Result<i32> {
        let due = loader::<DuePointsLoader>(ctx)?
            .load_one(self.0.id)
            .await
            .gql()?;
        int(self.0.balance - due.unwrap_or(0))
    }
    /// Points reserved by the user's open holds: part of `balance`, not
    /// spendable by anything but their holds' captures.
    async fn held(&self) -> async_graphql::Result<i32> {
        int(self.0.held)
    }
    /// What the user may spend now: `balance - held`.
    async fn available(&self, ctx: &Context<'_>) -> async_graphql::Result<i32> {
        let due = loader::<DuePointsLoader>(ctx)?
            .load_one(self.0.id)
            .await
            .gql()?;
        int(self.0.balance - due.unwrap_or(0) - self.0.held)
    }
    /// The part of `balance` bought with money (the ts platform's 充值积分,
    /// `ts_users.money`): what live paid batches hold, reserved included.
    async fn paid(&self, ctx: &Context<'_>) -> async_graphql::Result<i32> {
        self.funds(ctx, RechargeKind::Paid).await
    }
    /// The part of `balance` that was given (赠送积分, `gift_money`);
    /// `paid + gift = balance`.
    async fn gift(&self, ctx: &Context<'_>) -> async_graphql::Result<i32> {
        self.funds(ctx, RechargeKind::Gift).await
    }
    /// Batches that still hold points, in the order consumes draw them.
    async fn batches(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<PointBatch>> {
        let mut rows = self.live_batches(ctx).await?;
        rows.sort_by_key(|b| draw_key(b.expires_at, b.funds == "gift", b.id));
        Ok(rows.into_iter().map(PointBatch).collect())
    }
}

impl User {
    /// The user's batches that hold points and have not expired (one
    /// statement for every user of the response, by the loader).
    async fn live_batches(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Vec<point_batch::Model>> {
        Ok(loader::<LiveBatchesLoader>(ctx)?
            .load_one(self.0.id)
            .await
            .gql()?
            .unwrap_or_default())
    }

    /// What the user's live batches of `funds` hold, reserved included.
    async fn funds(&self, ctx: &Context<'_>, funds: RechargeKind) -> async_graphql::Result<i32> {
        let rows = self.live_batches(ctx).await?;
        int(rows
            .iter()
            .filter(|b| b.funds == funds.as_str())
            .map(|b| b.remaining + b.reserved)
            .sum())
    }
}

pub struct PointBatch(pub point_batch::Model);

#[Object]
impl PointBatch {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    async fn kind(&self) -> RechargeKindGql {
        RechargeKind::parse(&self.0.kind)
            .unwrap_or(RechargeKind::Gift)
            .into()
    }
    /// Whose money the points are: `PAID` or `GIFT` (an opening balance is
    /// split in one batch of each).
    async fn funds(&self) -> RechargeKindGql {
        RechargeKind::parse(&self.0.funds)
            .unwrap_or(RechargeKind::Paid)
            .into()
    }
    async fn amount(&self) -> async_graphql::Result<i32> {
        int(self.0.amount)
    }
    /// Points left to draw (not counting `reserved`).
    async fn remaining(&self) -> async_graphql::Result<i32> {
        int(self.0.remaining)
    }
    /// Points of this batch reserved by open holds.
    async fn reserved(&self) -> async_graphql::Result<i32> {
        int(self.0.reserved)
    }
    async fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.0.expires_at
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
}
