//! Read resolvers: authorize, parse, call the read models.

use async_graphql::{Context, InputObject, Object};
use chrono::{DateTime, Utc};

use super::context::{caller, read, state};
use super::types::*;
use super::{AccountByKeyLoader, DuePointsLoader, LiveBatchesLoader, UserLoader};
use crate::domain::input::filter_text;
use crate::domain::reconcile::Flag;
use crate::domain::source::TxType;
use crate::errors::{to_gql, GqlResult, ReadError};
use crate::store::read::{self as queries, Cursor, Page};

#[derive(InputObject, Default)]
pub struct UsageFilter {
    pub types: Option<Vec<TransactionTypeGql>>,
    /// At most 50.
    pub source_types: Option<Vec<SourceTypeName>>,
    /// Inclusive.
    pub from: Option<DateTime<Utc>>,
    /// Exclusive.
    pub to: Option<DateTime<Utc>>,
}

#[derive(InputObject, Default)]
pub struct FalTaskFilter {
    pub user_id: Option<i32>,
    pub account_id: Option<i32>,
    pub status: Option<String>,
    pub app_name: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub refunded: Option<bool>,
}

/// Which reconciled lines (`falBillingLines`, `falBillingTotals`, and the
/// CSV export's query parameters).
#[derive(InputObject)]
pub struct FalBillingFilter {
    /// Inclusive: the task's creation (fal's billing time for a request
    /// without a task).
    pub from: DateTime<Utc>,
    /// Exclusive; at most 366 days after `from`.
    pub to: DateTime<Utc>,
    pub account_ids: Option<Vec<i32>>,
    pub user_id: Option<i32>,
    pub endpoint_id: Option<String>,
    /// Lines raising any of these.
    pub flags: Option<Vec<FalBillingFlagGql>>,
}

impl FalBillingFilter {
    fn parse(self) -> async_graphql::Result<queries::billing::LineFilter> {
        crate::reconcile::line_filter(
            self.from,
            self.to,
            self.account_ids,
            self.user_id,
            self.endpoint_id,
            self.flags.map(|f| f.into_iter().map(Into::into).collect()),
        )
        .gql()
    }
}

/// What `falBillingTotals` groups by.
#[derive(async_graphql::Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum FalBillingGroup {
    Account,
    Endpoint,
    /// Lowest margin first.
    User,
}

fn check_range(
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> async_graphql::Result<()> {
    match (from, to) {
        (Some(f), Some(t)) if f > t => Err(to_gql(ReadError::BadWindow(
            "`from` must not be after `to`",
        ))),
        _ => Ok(()),
    }
}

/// Loads the accounts and users of a page of tasks in one batch each (when
/// selected), so the per-row resolvers are served from the request's
/// dataloader cache: a fixed number of statements whatever the page size.
async fn prefetch_task_relations(
    ctx: &Context<'_>,
    rows: &[entity::fal_task::Model],
) -> async_graphql::Result<()> {
    let selected = |field: &str| {
        let la = ctx.look_ahead();
        la.field("nodes").field(field).exists()
            || la.field("edges").field("node").field(field).exists()
    };
    if selected("account") {
        let loader = super::context::loader::<AccountByKeyLoader>(ctx)?;
        loader
            .load_many(rows.iter().map(|r| r.api_key.clone()))
            .await
            .gql()?;
    }
    if selected("user") {
        let loader = super::context::loader::<UserLoader>(ctx)?;
        loader
            .load_many(rows.iter().map(|r| r.user_id))
            .await
            .gql()?;
    }
    Ok(())
}

/// Loads the user of a ledger page, and their balance and batches, once
/// (when selected): every row of the page names the same user, so the
/// per-row resolvers are served from the request's dataloader cache.
async fn prefetch_ledger_user(
    ctx: &Context<'_>,
    user_id: i32,
    rows: &[entity::point_transaction::Model],
) -> async_graphql::Result<()> {
    let la = ctx.look_ahead();
    let user = |field: &str| {
        la.field("nodes").field("user").field(field).exists()
            || la
                .field("edges")
                .field("node")
                .field("user")
                .field(field)
                .exists()
    };
    let Some(first) = rows.first() else {
        return Ok(());
    };
    let wants_user = la.field("nodes").field("user").exists()
        || la.field("edges").field("node").field("user").exists();
    if wants_user {
        super::context::loader::<UserLoader>(ctx)?
            .load_one(first.user_id)
            .await
            .gql()?;
    }
    if user("balance") {
        super::context::loader::<DuePointsLoader>(ctx)?
            .load_one(user_id)
            .await
            .gql()?;
    }
    if user("batches") {
        super::context::loader::<LiveBatchesLoader>(ctx)?
            .load_one(user_id)
            .await
            .gql()?;
    }
    Ok(())
}

#[derive(Default)]
pub struct QueryRoot;

#[Object]
impl QueryRoot {
    /// The caller's own user (user tokens).
    async fn me(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<User>> {
        let Some(id) = caller(ctx)?.own_user().gql()? else {
            return Ok(None);
        };
        let u = queries::users::by_id(&state(ctx)?.store, id).await.gql()?;
        Ok(u.map(User))
    }

    async fn user(&self, ctx: &Context<'_>, id: i32) -> async_graphql::Result<Option<User>> {
        caller(ctx)?.may_read_user(id).gql()?;
        let u = queries::users::by_id(&state(ctx)?.store, id).await.gql()?;
        Ok(u.map(User))
    }

    /// A user by their mjk ledger uuid (services and admins; a user only
    /// their own): how an mjk call site, which knows people by uuid, finds
    /// the id the other fields take.
    async fn user_by_uuid(
        &self,
        ctx: &Context<'_>,
        uuid: uuid::Uuid,
    ) -> async_graphql::Result<Option<User>> {
        let who = caller(ctx)?;
        let u = super::context::loader::<UserLoader>(ctx)?
            .load_one(uuid)
            .await
            .gql()?;
        match u {
            Some(u) => {
                who.may_read_user(u.id).gql()?;
                Ok(Some(User(u)))
            }
            // Nobody under that uuid: the same answer a user gets for
            // anybody else's, so a user token cannot probe for uuids.
            None => {
                who.own_user().gql()?;
                if who.role == crate::auth::Role::User {
                    return Err(to_gql(crate::auth::AuthzError::ForeignUser));
                }
                Ok(None)
            }
        }
    }

    /// The source types consumes and holds may name, with their labels and
    /// duration rules (any caller but partners).
    async fn source_types(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<SourceTypeInfo>> {
        caller(ctx)?.own_user().gql()?;
        let st = state(ctx)?;
        let all = st.source_types.all(&st.store).await.gql()?;
        Ok(all.into_iter().map(Into::into).collect())
    }

    /// The UsageDetail page: newest first, keyset-paginated.
    #[graphql(complexity = "first.unwrap_or(20).max(1) as usize * child_complexity")]
    async fn usage_details(
        &self,
        ctx: &Context<'_>,
        user_id: Option<i32>,
        first: Option<i32>,
        after: Option<String>,
        filter: Option<UsageFilter>,
    ) -> async_graphql::Result<UsageDetailConnection> {
        let uid = caller(ctx)?.ledger_scope(user_id).gql()?;
        let page = Page::new(first, after.as_deref()).gql()?;
        let f = filter.unwrap_or_default();
        check_range(f.from, f.to)?;
        if f.source_types.as_ref().is_some_and(|v| v.len() > 50) {
            return Err(to_gql(ReadError::BadWindow(
                "filter.sourceTypes names at most 50 source types",
            )));
        }
        let db = &state(ctx)?.store;
        let not_found = || to_gql(ReadError::UserNotFound(uid));
        let user = queries::ledger::LedgerUser::of(db, uid)
            .await
            .gql()?
            .ok_or_else(not_found)?;
        let filter = queries::ledger::UsageFilter {
            user,
            types: f
                .types
                .map(|v| v.into_iter().map(|t| TxType::from(t).as_str()).collect()),
            source_types: f.source_types.map(|v| v.into_iter().map(|t| t.0).collect()),
            from: f.from,
            to: f.to,
        };
        let (rows, more) = read(ctx, |db| queries::ledger::usage_page(db, &filter, &page))
            .await?
            .ok_or_else(not_found)?;
        prefetch_ledger_user(ctx, uid, &rows).await?;
        Ok(connection(
            rows,
            more,
            TotalCount::Usage(filter),
            |r| Cursor {
                at: r.created_at,
                id: r.id,
            },
            |r| PageNode(UsageDetail(r)),
        ))
    }

    /// A user's holds, newest first, optionally of one status; the same
    /// authorization as the ledger (users see their own).
    #[graphql(complexity = "first.unwrap_or(20).max(1) as usize * child_complexity")]
    async fn holds(
        &self,
        ctx: &Context<'_>,
        user_id: Option<i32>,
        status: Option<HoldStatusGql>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<HoldConnection> {
        let uid = caller(ctx)?.ledger_scope(user_id).gql()?;
        let page = Page::new(first, after.as_deref()).gql()?;
        let store = &state(ctx)?.store;
        if queries::users::by_id(store, uid).await.gql()?.is_none() {
            return Err(to_gql(ReadError::UserNotFound(uid)));
        }
        let status = status.map(Into::into);
        let (rows, more) = store.holds_page(uid, status, &page).await.gql()?;
        Ok(connection(
            rows,
            more,
            TotalCount::Holds(uid, status),
            |h| Cursor {
                at: h.created_at,
                id: h.id,
            },
            |hold| HoldGql { hold, entry: None },
        ))
    }

    /// The older platform's signed points statement.
    #[graphql(complexity = "first.unwrap_or(20).max(1) as usize * child_complexity")]
    async fn points_statement(
        &self,
        ctx: &Context<'_>,
        user_id: Option<i32>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<PointsDetailConnection> {
        let uid = caller(ctx)?.ledger_scope(user_id).gql()?;
        let page = Page::new(first, after.as_deref()).gql()?;
        let zone = state(ctx)?.store.legacy_zone();
        let (rows, more) = read(ctx, |db| queries::ledger::statement_page(db, uid, &page)).await?;
        Ok(connection(
            rows,
            more,
            TotalCount::Statement(uid),
            |r| Cursor {
                at: r.created_at.instant(zone),
                id: r.id as i64,
            },
            PointsDetail,
        ))
    }

    #[graphql(complexity = "first.unwrap_or(20).max(1) as usize * child_complexity")]
    async fn financial_transactions(
        &self,
        ctx: &Context<'_>,
        user_id: Option<i32>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<FinancialTransactionConnection> {
        let uid = caller(ctx)?.ledger_scope(user_id).gql()?;
        let page = Page::new(first, after.as_deref()).gql()?;
        let zone = state(ctx)?.store.legacy_zone();
        let (rows, more) = read(ctx, |db| queries::ledger::financial_page(db, uid, &page)).await?;
        Ok(connection(
            rows,
            more,
            TotalCount::Financial(uid),
            |r| Cursor {
                at: r.time.instant(zone),
                id: r.id as i64,
            },
            FinancialTransaction,
        ))
    }

    /// Users found by id, uuid or part of their name (case-insensitive);
    /// all users without `search`. Newest first (admins).
    #[graphql(complexity = "first.unwrap_or(20).max(1) as usize * child_complexity")]
    async fn users(
        &self,
        ctx: &Context<'_>,
        search: Option<String>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<UserConnection> {
        caller(ctx)?.must_be_admin().gql()?;
        let page = Page::new(first, after.as_deref()).gql()?;
        let search = queries::users::UserSearch(filter_text("search", search, 100).gql()?);
        let (rows, more) = read(ctx, |db| queries::users::search_page(db, &search, &page)).await?;
        Ok(connection(
            rows,
            more,
            TotalCount::Users(search),
            |u| Cursor {
                at: u.created_at,
                id: i64::from(u.id),
            },
            User,
        ))
    }

    /// The fal key pool (admins).
    async fn fal_accounts(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<FalAccount>> {
        caller(ctx)?.must_be_admin().gql()?;
        let rows = queries::fal::accounts(&state(ctx)?.store).await.gql()?;
        Ok(rows.into_iter().map(FalAccount).collect())
    }

    /// Per fal account over `[from, to)`: counts, points, fal cost, margin
    /// and a per-endpoint breakdown from grouped SQL; `falUsage` adds fal's
    /// own figures when selected (admins).
    async fn account_costs(
        &self,
        ctx: &Context<'_>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        account_ids: Option<Vec<i32>>,
    ) -> async_graphql::Result<Vec<AccountCost>> {
        caller(ctx)?.must_be_admin().gql()?;
        let (from, to) = crate::reconcile::window(from, to).gql()?;
        let account_ids = crate::reconcile::account_ids(account_ids).gql()?;
        let rows = read(ctx, |db| {
            queries::costs::account_costs(db, from, to, account_ids.as_deref())
        })
        .await?;
        Ok(rows
            .into_iter()
            .map(|f| AccountCost {
                figures: std::sync::Arc::new(f),
                from,
                to,
            })
            .collect())
    }

    /// Reconciled lines, newest first: one per task of the window and per
    /// request fal billed that no task records, as the last published
    /// runs left them (`reconcileFalBilling`; admins).
    async fn fal_billing_lines(
        &self,
        ctx: &Context<'_>,
        filter: FalBillingFilter,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<FalBillingLineConnection> {
        caller(ctx)?.must_be_admin().gql()?;
        let filter = filter.parse()?;
        let page = Page::new(first, after.as_deref()).gql()?;
        let (rows, more) = read(ctx, |db| queries::billing::line_page(db, &filter, &page)).await?;
        Ok(connection(
            rows,
            more,
            TotalCount::BillingLines(filter),
            |r| Cursor {
                at: r.line.at,
                id: r.id,
            },
            FalBillingLine,
        ))
    }

    /// Reconciled lines summed per account, endpoint or user (at most
    /// `first` groups, default 100, at most 1000; admins). Per account and
    /// endpoint, task counts and points equal `accountCosts`' for the
    /// same window.
    async fn fal_billing_totals(
        &self,
        ctx: &Context<'_>,
        filter: FalBillingFilter,
        by: FalBillingGroup,
        first: Option<i32>,
    ) -> async_graphql::Result<Vec<FalBillingTotal>> {
        caller(ctx)?.must_be_admin().gql()?;
        let filter = filter.parse()?;
        let limit = match first {
            None => 100,
            Some(n) if (1..=1_000).contains(&n) => n as u64,
            Some(_) => {
                return Err(to_gql(ReadError::TooBroad(
                    "`first` must be between 1 and 1000".into(),
                )))
            }
        };
        let by = match by {
            FalBillingGroup::Account => queries::billing::GroupBy::Account,
            FalBillingGroup::Endpoint => queries::billing::GroupBy::Endpoint,
            FalBillingGroup::User => queries::billing::GroupBy::User,
        };
        let bits: Vec<i32> = Flag::ALL.iter().map(|f| f.bit()).collect();
        let rows = read(ctx, |db| {
            queries::billing::totals(db, &filter, by, &bits, limit)
        })
        .await?;
        Ok(rows.into_iter().map(FalBillingTotal).collect())
    }

    /// Reconciliation runs, newest first (admins): progress while running,
    /// the error of a failed account.
    async fn fal_billing_runs(
        &self,
        ctx: &Context<'_>,
        account_id: Option<i32>,
        first: Option<i32>,
    ) -> async_graphql::Result<Vec<FalBillingRun>> {
        caller(ctx)?.must_be_admin().gql()?;
        let limit = Page::new(first, None).gql()?.first;
        let rows = state(ctx)?
            .store
            .billing_runs(account_id, limit)
            .await
            .gql()?;
        Ok(rows.into_iter().map(FalBillingRun).collect())
    }

    /// Jobs run on fal; users see only their own.
    #[graphql(complexity = "first.unwrap_or(20).max(1) as usize * child_complexity")]
    async fn fal_tasks(
        &self,
        ctx: &Context<'_>,
        filter: Option<FalTaskFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<FalTaskConnection> {
        let f = filter.unwrap_or_default();
        let who = caller(ctx)?;
        let user_id = who.fal_task_scope(f.user_id).map_err(to_gql)?;
        let page = Page::new(first, after.as_deref()).gql()?;
        check_range(f.from, f.to)?;
        let filter = queries::fal::TaskFilter {
            user_id,
            account_id: f.account_id,
            status: filter_text("status", f.status, 50).gql()?,
            app_name: filter_text("appName", f.app_name, 200).gql()?,
            from: f.from,
            to: f.to,
            refunded: f.refunded,
        };
        let zone = state(ctx)?.store.legacy_zone();
        let (rows, more) = read(ctx, |db| queries::fal::task_page(db, &filter, &page)).await?;
        prefetch_task_relations(ctx, &rows).await?;
        Ok(connection(
            rows,
            more,
            TotalCount::Tasks(filter),
            |r| Cursor {
                at: r.created_at.instant(zone),
                id: r.id as i64,
            },
            FalTask,
        ))
    }
}
