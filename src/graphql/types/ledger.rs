use async_graphql::{Context, Object, ID};
use chrono::{DateTime, Utc};
use entity::{financial_transaction, point_transaction, points_detail};

use super::{TransactionTypeGql, User};
use crate::domain::ledger::ExpireReport;
use crate::domain::source::TxType;
use crate::errors::{to_gql, GqlResult, ReadError};
use crate::graphql::context::caller;
use crate::graphql::context::{int, legacy_zone};
use crate::graphql::loaders::{UserLoader, WriterLoader};

/// One points movement: a row of the UsageDetail page.
pub struct UsageDetail(pub point_transaction::Model);

#[Object]
impl UsageDetail {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    #[graphql(name = "type")]
    async fn tx_type(&self) -> async_graphql::Result<TransactionTypeGql> {
        TxType::parse(&self.0.r#type)
            .map(Into::into)
            .ok_or_else(|| {
                to_gql(ReadError::Internal(format!(
                    "ledger row {}: unknown transaction type",
                    self.0.id
                )))
            })
    }
    async fn source_type(&self) -> Option<&str> {
        self.0.source_type.as_deref()
    }
    async fn source_id(&self) -> Option<&str> {
        self.0.source_id.as_deref()
    }
    /// Positive, as stored.
    async fn amount(&self) -> async_graphql::Result<i32> {
        int(self.0.amount)
    }
    /// Signed: + for recharge and refund, - for consume and expire.
    async fn change(&self) -> async_graphql::Result<i32> {
        int(self.0.balance_after - self.0.balance_before)
    }
    async fn balance_before(&self) -> async_graphql::Result<i32> {
        int(self.0.balance_before)
    }
    async fn balance_after(&self) -> async_graphql::Result<i32> {
        int(self.0.balance_after)
    }
    /// Billed seconds (TTS, video); null for the others.
    async fn duration(&self) -> Option<f64> {
        self.0.duration
    }
    async fn description(&self) -> Option<&str> {
        self.0.description.as_deref()
    }
    /// Who wrote the row (admins): the token subject of the caller
    /// (`service:fal-runner`, `admin`, `user:7`), `gateway` for the expiry
    /// sweep, `legacy:mjk` / `legacy:ts` for a legacy system's write the
    /// gateway absorbed, `adopt` for an opening; null for the history
    /// before the cutover and rows written before writers were recorded.
    async fn written_by(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<String>> {
        caller(ctx)?.must_be_admin().gql()?;
        crate::graphql::context::loader::<WriterLoader>(ctx)?
            .load_one(self.0.id)
            .await
            .gql()
    }
    async fn batch_id(&self) -> Option<ID> {
        self.0.batch_id.map(|b| ID(b.to_string()))
    }
    async fn user(&self, ctx: &Context<'_>) -> async_graphql::Result<User> {
        let loader = crate::graphql::context::loader::<UserLoader>(ctx)?;
        let u = loader
            .load_one(self.0.user_id)
            .await
            .gql()?
            .ok_or_else(|| {
                to_gql(ReadError::Internal(format!(
                    "ledger row {} has no user",
                    self.0.id
                )))
            })?;
        Ok(User(u))
    }
}

/// A row of the older platform's statement (`ts_points_detail`).
pub struct PointsDetail(pub points_detail::Model);

#[Object]
impl PointsDetail {
    async fn id(&self) -> i32 {
        self.0.id
    }
    async fn user_id(&self) -> i32 {
        self.0.user_id
    }
    /// Signed change.
    async fn points(&self) -> i32 {
        self.0.points
    }
    async fn order_id(&self) -> Option<&str> {
        Some(self.0.order_id.as_str())
    }
    async fn title(&self) -> Option<&str> {
        Some(self.0.title.as_str())
    }
    async fn source_type(&self) -> Option<&str> {
        Some(self.0.source_type.as_str())
    }
    async fn balance_before(&self) -> i32 {
        self.0.balance_before
    }
    async fn balance_after(&self) -> i32 {
        self.0.balance_after
    }
    async fn created_at(&self, ctx: &Context<'_>) -> async_graphql::Result<DateTime<Utc>> {
        Ok(self.0.created_at.instant(legacy_zone(ctx)?))
    }
}

/// A money movement in cents (`ts_financial_transactions`).
pub struct FinancialTransaction(pub financial_transaction::Model);

#[Object]
impl FinancialTransaction {
    async fn id(&self) -> i32 {
        self.0.id
    }
    async fn user_id(&self) -> i32 {
        self.0.user_id
    }
    /// Cents; positive is income.
    async fn money(&self) -> i32 {
        self.0.money
    }
    async fn order_id(&self) -> Option<&str> {
        Some(self.0.order_id.as_str())
    }
    async fn title(&self) -> Option<&str> {
        Some(self.0.title.as_str())
    }
    async fn time(&self, ctx: &Context<'_>) -> async_graphql::Result<DateTime<Utc>> {
        Ok(self.0.time.instant(legacy_zone(ctx)?))
    }
    /// 0 recharge/refund, 1 consumption, 3 agent income.
    async fn transaction_type(&self) -> i32 {
        self.0.transaction_type
    }
    async fn pay_type(&self) -> Option<i32> {
        Some(self.0.pay_type)
    }
    async fn is_cash(&self) -> bool {
        self.0.is_cash == 1
    }
}

/// What an expiry sweep did.
pub struct ExpireReportGql(pub ExpireReport);

#[Object(name = "ExpireReport")]
impl ExpireReportGql {
    async fn users_affected(&self) -> i64 {
        self.0.users
    }
    async fn batches_expired(&self) -> i64 {
        self.0.batches
    }
    async fn points_expired(&self) -> i64 {
        self.0.points
    }
    async fn entries(&self) -> Vec<UsageDetail> {
        self.0.entries.iter().cloned().map(UsageDetail).collect()
    }
}
