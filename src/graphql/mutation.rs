//! Write resolvers: authorize, parse into domain requests, call the ledger.

use async_graphql::{Context, InputObject, Object};
use chrono::{DateTime, Utc};

use super::context::{caller, state};
use super::types::*;
use crate::domain::input::{
    ConsumeRequest, PlatformUserId, RechargeDraft, RechargeRequest, RefundRequest, UserName,
};
use crate::domain::ledger::{self, CreateUser};
use crate::errors::Coded;
use crate::errors::GqlResult;

#[derive(InputObject)]
pub struct ConsumeInput {
    pub user_id: i32,
    /// Points to spend (> 0).
    pub amount: i32,
    pub source_type: SourceTypeGql,
    /// With `sourceType`, the idempotency key of this consume.
    pub source_id: String,
    /// Billed seconds: required for TTS and VIDEO, refused otherwise.
    pub duration: Option<f64>,
    /// Appended to the description label.
    pub note: Option<String>,
}

#[derive(InputObject)]
pub struct RefundInput {
    pub source_type: SourceTypeGql,
    pub source_id: String,
    /// The idempotency key of this refund.
    pub refund_key: String,
    /// Points to return; omitted = everything not refunded yet.
    pub amount: Option<i32>,
    pub reason: Option<String>,
}

#[derive(InputObject)]
pub struct RechargeInput {
    pub user_id: i32,
    pub amount: i32,
    /// The idempotency key of this recharge.
    pub order_id: String,
    #[graphql(default)]
    pub kind: RechargeKindGql,
    /// What the user paid, in cents (required for PAID).
    pub money_cents: Option<i32>,
    pub pay_type: Option<i32>,
    /// When the points of this batch expire; never when omitted.
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(InputObject)]
pub struct CreateUserInput {
    pub name: String,
    /// Generated when omitted; creating the same uuid and name twice returns the user.
    pub uuid: Option<uuid::Uuid>,
    /// On an adopted database: the ts platform's id of a user it registered
    /// after the cutover (1..999999999). Omitted: the gateway picks the id.
    pub id: Option<i32>,
}

/// Counts a ledger operation by outcome: `applied`, `replayed` or its code.
fn record<E: Coded>(ctx: &Context<'_>, kind: &str, result: &Result<ledger::Applied, E>) {
    let outcome = match result {
        Ok(a) if a.replayed => "replayed",
        Ok(_) => "applied",
        Err(e) => e.code().as_str(),
    };
    if let Ok(st) = state(ctx) {
        st.metrics.ledger(kind, outcome);
        if let Ok(a) = result {
            if !a.replayed {
                tracing::info!(
                    kind,
                    entry_id = a.entry.id,
                    amount = a.entry.amount,
                    balance_after = a.entry.balance_after,
                    "ledger"
                );
            }
        }
    }
}

#[derive(Default)]
pub struct MutationRoot;

#[Object]
impl MutationRoot {
    async fn create_user(
        &self,
        ctx: &Context<'_>,
        input: CreateUserInput,
    ) -> async_graphql::Result<User> {
        caller(ctx)?.may_mutate().gql()?;
        let req = CreateUser {
            name: UserName::new(&input.name).gql()?,
            uuid: input.uuid,
            id: input.id.map(PlatformUserId::new).transpose().gql()?,
        };
        let u = ledger::create_user(&state(ctx)?.store, &req).await.gql()?;
        Ok(User(u))
    }

    async fn recharge(
        &self,
        ctx: &Context<'_>,
        input: RechargeInput,
    ) -> async_graphql::Result<UsageDetail> {
        caller(ctx)?.may_mutate().gql()?;
        let draft = RechargeDraft {
            user_id: input.user_id,
            amount: input.amount.into(),
            order_id: &input.order_id,
            kind: input.kind.into(),
            money_cents: input.money_cents,
            pay_type: input.pay_type,
            expires_at: input.expires_at,
        };
        let req = RechargeRequest::new(draft, crate::time::now()).gql()?;
        let st = state(ctx)?;
        let applied = ledger::recharge(&st.store, &req).await;
        record(ctx, "recharge", &applied);
        let applied = applied.gql()?;
        Ok(UsageDetail(applied.entry))
    }

    async fn consume(
        &self,
        ctx: &Context<'_>,
        input: ConsumeInput,
    ) -> async_graphql::Result<UsageDetail> {
        caller(ctx)?.may_mutate().gql()?;
        let req = ConsumeRequest::new(
            input.user_id,
            input.amount.into(),
            input.source_type.into(),
            &input.source_id,
            input.duration,
            input.note.as_deref(),
        )
        .gql()?;
        let st = state(ctx)?;
        let applied = ledger::consume(&st.store, &req).await;
        record(ctx, "consume", &applied);
        let applied = applied.gql()?;
        Ok(UsageDetail(applied.entry))
    }

    async fn refund(
        &self,
        ctx: &Context<'_>,
        input: RefundInput,
    ) -> async_graphql::Result<UsageDetail> {
        caller(ctx)?.may_mutate().gql()?;
        let req = RefundRequest::new(
            input.source_type.into(),
            &input.source_id,
            &input.refund_key,
            input.amount.map(Into::into),
            input.reason.as_deref(),
        )
        .gql()?;
        let st = state(ctx)?;
        let applied = ledger::refund(&st.store, &req).await;
        record(ctx, "refund", &applied);
        let applied = applied.gql()?;
        Ok(UsageDetail(applied.entry))
    }

    /// Runs the expiry sweep now (admins).
    async fn expire_points(&self, ctx: &Context<'_>) -> async_graphql::Result<ExpireReportGql> {
        caller(ctx)?.must_be_admin().gql()?;
        let st = state(ctx)?;
        let report = ledger::expire_due(&st.store, crate::time::now())
            .await
            .gql()?;
        for _ in 0..report.batches {
            st.metrics.ledger("expire", "applied");
        }
        Ok(ExpireReportGql(report))
    }
}
