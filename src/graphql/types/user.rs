use async_graphql::{Context, Object, ID};
use chrono::{DateTime, Utc};
use entity::{point_batch, user};

use super::RechargeKindGql;
use crate::domain::source::RechargeKind;
use crate::graphql::context::{int, state};
use crate::graphql::error::GqlResult;
use crate::queries;

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
    /// Points available now; never includes points past their expiry.
    async fn balance(&self, ctx: &Context<'_>) -> async_graphql::Result<i32> {
        let st = state(ctx)?;
        let b = queries::users::live_balance(&st.db, &self.0, crate::time::now())
            .await
            .gql()?;
        int(b)
    }
    /// Batches that still hold points, in the order consumes draw them.
    async fn batches(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<PointBatch>> {
        let st = state(ctx)?;
        let rows = queries::users::live_batches(&st.db, self.0.id, crate::time::now())
            .await
            .gql()?;
        Ok(rows.into_iter().map(PointBatch).collect())
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
    async fn amount(&self) -> async_graphql::Result<i32> {
        int(self.0.amount)
    }
    async fn remaining(&self) -> async_graphql::Result<i32> {
        int(self.0.remaining)
    }
    async fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.0.expires_at
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
}
