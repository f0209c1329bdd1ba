//! The GraphQL schema: one instance serves every transport.

pub mod context;
pub mod limits;
mod loaders;
mod mutation;
mod query;
mod subscription;
pub mod types;

use async_graphql::dataloader::{DataLoader, HashMapCache};
use async_graphql::{Schema, SchemaBuilder};

use crate::state::AppState;
pub use loaders::{AccountByKeyLoader, UserLoader};
pub use mutation::MutationRoot;
pub use query::QueryRoot;
pub use subscription::SubscriptionRoot;

pub type AppSchema = Schema<QueryRoot, MutationRoot, SubscriptionRoot>;

fn builder() -> SchemaBuilder<QueryRoot, MutationRoot, SubscriptionRoot> {
    // The gateway checks these itself first (`limits::check`); here they
    // are a backstop with the same values.
    Schema::build(QueryRoot, MutationRoot, SubscriptionRoot)
        .limit_depth(limits::MAX_DEPTH)
        .limit_complexity(limits::MAX_COMPLEXITY)
        .limit_recursive_depth(limits::MAX_RECURSION)
        .limit_directives(limits::MAX_DIRECTIVES)
}

/// The schema the server runs, with its state.
pub fn build_schema(state: AppState) -> AppSchema {
    builder().data(state).finish()
}

/// Dataloaders for one WebSocket connection.
pub fn connection_loaders(state: &AppState, data: &mut async_graphql::Data) {
    data.insert(DataLoader::with_cache(
        UserLoader(state.store.clone()),
        tokio::spawn,
        HashMapCache::default(),
    ));
    data.insert(DataLoader::with_cache(
        AccountByKeyLoader(state.store.clone()),
        tokio::spawn,
        HashMapCache::default(),
    ));
}

/// Dataloaders for one request (or one WebSocket operation). Per request so
/// their cache never serves one request's rows to a later one.
pub fn request_loaders(state: &AppState, req: async_graphql::Request) -> async_graphql::Request {
    let store = &state.store;
    req.data(DataLoader::with_cache(
        UserLoader(store.clone()),
        tokio::spawn,
        HashMapCache::default(),
    ))
    .data(DataLoader::with_cache(
        AccountByKeyLoader(store.clone()),
        tokio::spawn,
        HashMapCache::default(),
    ))
}

/// The SDL committed as `schema.graphql`.
pub fn sdl() -> String {
    builder().finish().sdl()
}
