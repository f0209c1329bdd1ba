//! Write resolvers: authorize, parse into domain requests, call the ledger.

use async_graphql::{Context, InputObject, Object};
use chrono::{DateTime, Utc};

use super::context::{caller, state};
use super::types::*;
use crate::auth::TokenId;
use crate::domain::hold_input::{CaptureRequest, HoldDraft, HoldRequest, ReleaseRequest};
use crate::domain::input::{
    Author, ConsumeRequest, InputError, PlatformUserId, RechargeDraft, RechargeRequest,
    RefundRequest, UserName, UserUuid,
};
use crate::domain::ledger::{self, CreateUser};
use crate::domain::source::SourceType;
use crate::errors::Coded;
use crate::errors::GqlResult;
use crate::store::billing::RunTrigger;

#[derive(InputObject)]
pub struct ConsumeInput {
    pub user_id: i32,
    /// Points to spend (> 0).
    pub amount: i32,
    pub source_type: SourceTypeName,
    /// With `sourceType`, the idempotency key of this consume.
    pub source_id: String,
    /// Billed seconds: required for TTS and VIDEO (source types whose
    /// rule is `REQUIRED`), refused where it is `REFUSED`.
    pub duration: Option<f64>,
    /// Appended to the description label.
    pub note: Option<String>,
    /// The title the ts platform's statement shows (`ts_points_detail`), as
    /// its old code wrote it; the description keeps the `【…】` label.
    /// Given, the consume also writes the ts money page's consumption row
    /// (`ts_financial_transactions`, type 1), as the old
    /// `deduct_user_money_by_id` did. Omitted: the description, no such row.
    pub title: Option<String>,
}

#[derive(InputObject)]
pub struct RefundInput {
    pub source_type: SourceTypeName,
    pub source_id: String,
    /// The idempotency key of this refund. Omitted: the job's one keyless
    /// refund (`refund:<sourceType>:<sourceId>`); a second keyless refund
    /// of the job replays the first, or is an `IDEMPOTENCY_CONFLICT` if it
    /// differs. Give keys to refund one job in several parts.
    pub refund_key: Option<String>,
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
    /// The title the ts platform's statement shows, as its old code wrote
    /// it. Omitted: the `【…】` label.
    pub title: Option<String>,
}

#[derive(InputObject)]
pub struct HoldInput {
    pub user_id: i32,
    /// Points to reserve (> 0): the job's estimate.
    pub amount: i32,
    pub source_type: SourceTypeName,
    /// With `sourceType`, the job's key: of this hold, and of the consume
    /// row its capture writes.
    pub source_id: String,
    /// Estimated seconds: required for TTS and VIDEO, refused otherwise.
    pub duration: Option<f64>,
    pub note: Option<String>,
    /// Seconds until the sweep releases the hold if nobody settles it:
    /// 1 to 604800 (7 days); 86400 when omitted.
    pub expires_in_secs: Option<i32>,
}

#[derive(InputObject)]
pub struct CaptureHoldInput {
    pub source_type: SourceTypeName,
    pub source_id: String,
    /// The job's actual cost, at most the points held; the rest goes back.
    pub amount: i32,
    /// Billed seconds (TTS, VIDEO); the hold's estimate when omitted.
    pub duration: Option<f64>,
    /// The consume row's note; the hold's when omitted.
    pub note: Option<String>,
}

#[derive(InputObject)]
pub struct ReleaseHoldInput {
    pub source_type: SourceTypeName,
    pub source_id: String,
    pub reason: Option<String>,
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

/// The configured source type a request names.
async fn source_type(
    ctx: &Context<'_>,
    name: &SourceTypeName,
) -> async_graphql::Result<SourceType> {
    let st = state(ctx)?;
    st.source_types.resolve(&st.store, &name.0).await.gql()
}

/// The caller, once allowed to write, as the rows it writes name it.
fn writer(ctx: &Context<'_>) -> async_graphql::Result<Author> {
    let who = caller(ctx)?;
    who.may_mutate().gql()?;
    Author::new(&who.writer()).gql()
}

/// Counts a hold operation by outcome: `applied`, `replayed` or its code.
fn record_hold<T, E: Coded>(
    ctx: &Context<'_>,
    kind: &str,
    result: &Result<T, E>,
    replayed: impl Fn(&T) -> bool,
) {
    let outcome = match result {
        Ok(t) if replayed(t) => "replayed",
        Ok(_) => "applied",
        Err(e) => e.code().as_str(),
    };
    if let Ok(st) = state(ctx) {
        st.metrics.ledger(kind, outcome);
    }
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
            uuid: input.uuid.map(UserUuid::new).transpose().gql()?,
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
        let by = writer(ctx)?;
        let draft = RechargeDraft {
            user_id: input.user_id,
            amount: input.amount.into(),
            order_id: &input.order_id,
            kind: input.kind.into(),
            money_cents: input.money_cents,
            pay_type: input.pay_type,
            expires_at: input.expires_at,
        };
        let mut req = RechargeRequest::new(draft, crate::time::now())
            .and_then(|r| r.titled(input.title.as_deref()))
            .gql()?;
        req.by = Some(by);
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
        let by = writer(ctx)?;
        let mut req = ConsumeRequest::new(
            input.user_id,
            input.amount.into(),
            source_type(ctx, &input.source_type).await?,
            &input.source_id,
            input.duration,
            input.note.as_deref(),
        )
        .and_then(|r| r.titled(input.title.as_deref()))
        .gql()?;
        req.by = Some(by);
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
        let by = writer(ctx)?;
        let mut req = RefundRequest::new(
            source_type(ctx, &input.source_type).await?,
            &input.source_id,
            input.refund_key.as_deref(),
            input.amount.map(Into::into),
            input.reason.as_deref(),
        )
        .gql()?;
        req.by = Some(by);
        let st = state(ctx)?;
        let applied = ledger::refund(&st.store, &req).await;
        record(ctx, "refund", &applied);
        let applied = applied.gql()?;
        Ok(UsageDetail(applied.entry))
    }

    /// Reserves points for a job before it runs (services, admins).
    /// Idempotent on `(sourceType, sourceId)`; `INSUFFICIENT_BALANCE` when
    /// the available balance (balance − held) is short.
    async fn hold(&self, ctx: &Context<'_>, input: HoldInput) -> async_graphql::Result<HoldGql> {
        caller(ctx)?.may_mutate().gql()?;
        let req = HoldRequest::new(HoldDraft {
            user_id: input.user_id,
            amount: input.amount.into(),
            source_type: source_type(ctx, &input.source_type).await?,
            source_id: &input.source_id,
            duration: input.duration,
            note: input.note.as_deref(),
            expires_in_secs: input.expires_in_secs.map(Into::into),
        })
        .gql()?;
        let st = state(ctx)?;
        let held = ledger::hold(&st.store, &req).await;
        record_hold(ctx, "hold", &held, |h| h.replayed);
        Ok(HoldGql {
            hold: held.gql()?.hold,
            entry: None,
        })
    }

    /// Settles a hold for the job's actual amount: writes its one consume
    /// row from the held batches and returns the rest to them.
    async fn capture_hold(
        &self,
        ctx: &Context<'_>,
        input: CaptureHoldInput,
    ) -> async_graphql::Result<HoldGql> {
        let by = writer(ctx)?;
        let mut req = CaptureRequest::new(
            source_type(ctx, &input.source_type).await?,
            &input.source_id,
            input.amount.into(),
            input.duration,
            input.note.as_deref(),
        )
        .gql()?;
        req.by = Some(by);
        let st = state(ctx)?;
        let captured = ledger::capture_hold(&st.store, &req).await;
        record_hold(ctx, "capture", &captured, |c| c.replayed);
        let c = captured.gql()?;
        Ok(HoldGql {
            hold: c.hold,
            entry: Some(c.entry),
        })
    }

    /// Releases a hold (the job failed or was cancelled): every point goes
    /// back; no ledger row.
    async fn release_hold(
        &self,
        ctx: &Context<'_>,
        input: ReleaseHoldInput,
    ) -> async_graphql::Result<HoldGql> {
        caller(ctx)?.may_mutate().gql()?;
        let req = ReleaseRequest::new(
            source_type(ctx, &input.source_type).await?,
            &input.source_id,
            input.reason.as_deref(),
        )
        .gql()?;
        let st = state(ctx)?;
        let released = ledger::release_hold(&st.store, &req).await;
        record_hold(ctx, "release", &released, |h| h.replayed);
        Ok(HoldGql {
            hold: released.gql()?.hold,
            entry: None,
        })
    }

    /// Runs the hold sweep now (admins): every open hold past its expiry
    /// is released as EXPIRED. Returns how many.
    async fn expire_holds(&self, ctx: &Context<'_>) -> async_graphql::Result<i32> {
        caller(ctx)?.must_be_admin().gql()?;
        let st = state(ctx)?;
        let sweep = ledger::expire_holds(&st.store, crate::time::now())
            .await
            .gql()?;
        for _ in 0..sweep.holds {
            st.metrics.ledger("hold_expire", "applied");
        }
        Ok(i32::try_from(sweep.holds).unwrap_or(i32::MAX))
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

    /// Revokes a token by its id (`jti`, printed by `points-gateway
    /// token`), admins only: this instance refuses it at once, every other
    /// within 2 s, until it expires. `false` when it was revoked already.
    async fn revoke_token(&self, ctx: &Context<'_>, id: String) -> async_graphql::Result<bool> {
        let who = caller(ctx)?;
        who.must_be_admin().gql()?;
        let id = TokenId::new(&id).map_err(InputError).gql()?;
        let st = state(ctx)?;
        let until = chrono::Utc::now().timestamp() + st.keys.max_lifetime_secs();
        let new = st
            .store
            .revoke_token(id.as_str(), until, &who.writer())
            .await
            .gql()?;
        st.keys.revocations().insert(id.as_str().to_owned());
        Ok(new)
    }

    /// Reconciles every fal job of `[from, to)` against fal's billing
    /// events, per account (all when `accountIds` is not given; admins).
    /// Returns the runs started; they pull and publish in the background
    /// (`falBillingRuns` shows their progress), and each replaces the
    /// account's lines of the window when it is done.
    async fn reconcile_fal_billing(
        &self,
        ctx: &Context<'_>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        account_ids: Option<Vec<i32>>,
    ) -> async_graphql::Result<Vec<FalBillingRun>> {
        caller(ctx)?.must_be_admin().gql()?;
        let (from, to) = crate::reconcile::window(from, to).gql()?;
        let account_ids = crate::reconcile::account_ids(account_ids).gql()?;
        let st = state(ctx)?;
        let reconciler = st.reconciler.clone();
        let accounts = reconciler.accounts(account_ids.as_deref()).await.gql()?;
        let runs = reconciler
            .start(&accounts, from, to, RunTrigger::Api)
            .await
            .gql()?;
        let mut rows = Vec::with_capacity(runs.len());
        for run in &runs {
            if let Some(r) = st.store.billing_run(*run).await.gql()? {
                rows.push(FalBillingRun(r));
            }
        }
        // Side effects after the runs are recorded: the pulls outlive the
        // request, and stop with the process.
        let shutdown = st.shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = reconciler.drive_all(accounts.into_iter().zip(runs).collect(), from, to) => {}
            }
        });
        Ok(rows)
    }
}
