//! What a resolver takes from the context: the state and the caller.

use async_graphql::Context;

use super::error::to_gql;
use crate::auth::{AuthzError, Caller};
use crate::state::AppState;

pub fn state<'a>(ctx: &Context<'a>) -> async_graphql::Result<&'a AppState> {
    ctx.data::<AppState>()
}

/// The authenticated caller; `UNAUTHENTICATED` for an anonymous request.
pub fn caller<'a>(ctx: &Context<'a>) -> async_graphql::Result<&'a Caller> {
    ctx.data_opt::<Caller>()
        .ok_or_else(|| to_gql(AuthzError::Unauthenticated))
}

/// Converts a stored figure to the public 32-bit `Int`. Balances and
/// amounts are capped at `i32::MAX` on write, so this only fails on data
/// written outside the gateway.
pub fn int(v: i64) -> async_graphql::Result<i32> {
    i32::try_from(v).map_err(|_| {
        to_gql(super::error::DbFailure(sea_orm::DbErr::Custom(format!(
            "{v} does not fit a GraphQL Int"
        ))))
    })
}
