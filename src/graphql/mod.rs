//! The GraphQL schema: one instance serves every transport.

pub mod context;
pub mod documents;
pub mod error;
mod limits;
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

/// Deepest query accepted (the API itself needs about 6).
pub const MAX_DEPTH: usize = 12;
/// Highest complexity accepted; connection fields multiply by their page size.
pub const MAX_COMPLEXITY: usize = 5_000;
/// Deepest nesting the parser accepts (guards the stack, not the query).
pub const MAX_RECURSION: usize = 32;
/// Most directives on one field.
pub const MAX_DIRECTIVES: usize = 10;

fn builder() -> SchemaBuilder<QueryRoot, MutationRoot, SubscriptionRoot> {
    Schema::build(QueryRoot, MutationRoot, SubscriptionRoot)
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY)
        .limit_recursive_depth(MAX_RECURSION)
        .limit_directives(MAX_DIRECTIVES)
}

/// The schema the server runs, with its state.
pub fn build_schema(state: AppState) -> AppSchema {
    builder().data(state).finish()
}

/// Dataloaders for one WebSocket connection.
pub fn connection_loaders(state: &AppState, data: &mut async_graphql::Data) {
    data.insert(DataLoader::with_cache(
        UserLoader(state.db.clone()),
        tokio::spawn,
        HashMapCache::default(),
    ));
    data.insert(DataLoader::with_cache(
        AccountByKeyLoader(state.db.clone()),
        tokio::spawn,
        HashMapCache::default(),
    ));
}

/// Dataloaders for one request (or one WebSocket operation). Per request so
/// their cache never serves one request's rows to a later one.
pub fn request_loaders(state: &AppState, req: async_graphql::Request) -> async_graphql::Request {
    let db = &state.db;
    req.data(DataLoader::with_cache(
        UserLoader(db.clone()),
        tokio::spawn,
        HashMapCache::default(),
    ))
    .data(DataLoader::with_cache(
        AccountByKeyLoader(db.clone()),
        tokio::spawn,
        HashMapCache::default(),
    ))
}

/// The SDL committed as `schema.graphql`.
pub fn sdl() -> String {
    builder().finish().sdl()
}
