//! What a resolver takes from the context: the state and the caller.

use async_graphql::dataloader::{DataLoader, HashMapCache};
use async_graphql::Context;

use crate::auth::{AuthzError, Caller};
use crate::errors::{to_gql, ReadError};
use crate::state::AppState;
use crate::store::{Store, StoreError};

/// The application state; its absence is a wiring fault (`INTERNAL`).
pub fn state<'a>(ctx: &Context<'a>) -> async_graphql::Result<&'a AppState> {
    ctx.data_opt::<AppState>().ok_or_else(|| {
        to_gql(ReadError::Internal(
            "the schema has no application state".into(),
        ))
    })
}

/// The request's dataloader of `L`; its absence is a wiring fault.
pub fn loader<'a, L: Send + Sync + 'static>(
    ctx: &Context<'a>,
) -> async_graphql::Result<&'a DataLoader<L, HashMapCache>> {
    ctx.data_opt::<DataLoader<L, HashMapCache>>()
        .ok_or_else(|| {
            to_gql(ReadError::Internal(format!(
                "no dataloader {}",
                std::any::type_name::<L>()
            )))
        })
}

/// Whether this operation's reads may go to a read replica: a query's may
/// (set by the transport); a mutation's, and anything not marked, read the
/// primary, so a read never misses what the same operation just wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadRoute {
    Replica,
    Primary,
}

/// Runs a read-side query of this operation: on a fresh replica when the
/// operation may read one (`ReadRoute`), else on the primary. A replica
/// that does not answer is set aside and the primary serves the read, so
/// a replica going away costs no request.
pub async fn read<'a, T, F, Fut>(ctx: &Context<'a>, query: F) -> async_graphql::Result<T>
where
    F: Fn(&'a Store) -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let st = state(ctx)?;
    let replica = match ctx.data_opt::<ReadRoute>() {
        Some(ReadRoute::Replica) => st.replicas.pick(),
        Some(ReadRoute::Primary) | None => None,
    };
    if let Some(replica) = replica {
        match query(replica).await {
            Ok(v) => {
                st.metrics.read(true);
                return Ok(v);
            }
            Err(e) if e.is_unavailable() => st.replicas.set_aside(replica),
            Err(e) => return Err(to_gql(e)),
        }
    }
    if !st.replicas.is_empty() {
        st.metrics.read(false);
    }
    query(&st.store).await.map_err(to_gql)
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
        to_gql(ReadError::Internal(format!(
            "{v} does not fit a GraphQL Int"
        )))
    })
}

/// The ts platform's zone: its tables hold naive local time.
pub fn legacy_zone(ctx: &Context<'_>) -> async_graphql::Result<chrono_tz::Tz> {
    Ok(state(ctx)?.store.legacy_zone())
}
