use async_graphql::{Context, Object};
use chrono::{DateTime, Utc};
use entity::{fal_account, fal_task};

use super::User;
use crate::errors::{to_gql, GqlResult};
use crate::graphql::context::{caller, legacy_zone};
use crate::graphql::loaders::{AccountByKeyLoader, UserLoader};
use crate::store::read::fal::mask_key;

/// A fal API key of the pool. The key itself is never exposed.
pub struct FalAccount(pub fal_account::Model);

#[Object]
impl FalAccount {
    async fn id(&self) -> i32 {
        self.0.id
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// `…` and the last four characters of the key.
    async fn masked_key(&self) -> String {
        mask_key(&self.0.api_key)
    }
    /// 1 enabled, 0 disabled.
    async fn status(&self) -> i32 {
        self.0.status
    }
    /// Last known balance in USD.
    async fn balance(&self) -> Option<f64> {
        Some(self.0.balance)
    }
    async fn use_count(&self) -> i32 {
        self.0.use_cnt
    }
    async fn error_count(&self) -> i32 {
        self.0.error_cnt
    }
    async fn remark(&self) -> Option<&str> {
        self.0.remark.as_deref()
    }
}

/// One job run on fal.
pub struct FalTask(pub fal_task::Model);

#[Object]
impl FalTask {
    async fn id(&self) -> i32 {
        self.0.id
    }
    async fn task_id(&self) -> &str {
        &self.0.task_id
    }
    /// fal's `request_id`.
    async fn online_task_id(&self) -> Option<&str> {
        self.0.online_task_id.as_deref()
    }
    /// The fal endpoint id, e.g. `fal-ai/flux/dev`.
    async fn app_name(&self) -> &str {
        &self.0.app_name
    }
    async fn task_type(&self) -> Option<&str> {
        Some(self.0.task_type.as_str())
    }
    async fn status(&self) -> &str {
        &self.0.status
    }
    /// Points charged to the user.
    async fn money(&self) -> i32 {
        self.0.money
    }
    /// What fal billed, in USD.
    async fn cost_usd(&self) -> f64 {
        self.0.cost_money
    }
    async fn is_refund(&self) -> bool {
        self.0.is_refund == 1
    }
    async fn created_at(&self, ctx: &Context<'_>) -> async_graphql::Result<DateTime<Utc>> {
        Ok(self.0.created_at.instant(legacy_zone(ctx)?))
    }
    async fn completed_at(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Option<DateTime<Utc>>> {
        let zone = legacy_zone(ctx)?;
        Ok(self.0.completed_at.map(|t| t.instant(zone)))
    }
    /// The pool account that ran the job (admins and services only).
    async fn account(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<FalAccount>> {
        let who = caller(ctx)?;
        if who.role == crate::auth::Role::User {
            return Err(to_gql(crate::auth::AuthzError::Forbidden(who.role)));
        }
        let loader = crate::graphql::context::loader::<AccountByKeyLoader>(ctx)?;
        let a = loader.load_one(self.0.api_key.clone()).await.gql()?;
        Ok(a.map(FalAccount))
    }
    async fn user(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<User>> {
        let loader = crate::graphql::context::loader::<UserLoader>(ctx)?;
        let u = loader.load_one(self.0.user_id).await.gql()?;
        Ok(u.map(User))
    }
}
