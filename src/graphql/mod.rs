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
pub use loaders::{
    AccountByKeyLoader, DuePointsLoader, LiveBatchesLoader, UserLoader, WriterLoader,
};
pub use mutation::MutationRoot;
pub use query::QueryRoot;
pub use subscription::SubscriptionRoot;

pub type AppSchema = Schema<QueryRoot, MutationRoot, SubscriptionRoot>;

fn builder() -> SchemaBuilder<QueryRoot, MutationRoot, SubscriptionRoot> {
    // The gateway checks these itself first (`limits::check`); here they
    // are a backstop with the same values.
    // No "Did you mean …" in errors: they would name fields to callers who
    // may not introspect the schema. (async-graphql decides this for the
    // whole schema; admins have introspection instead.)
    Schema::build(QueryRoot, MutationRoot, SubscriptionRoot)
        .disable_suggestions()
        // The backstop's depth is introspection's: data fields are held to
        // the smaller `limits::MAX_DEPTH` before this runs.
        .limit_depth(limits::MAX_INTROSPECTION_DEPTH)
        .limit_complexity(limits::MAX_COMPLEXITY)
        .limit_recursive_depth(limits::MAX_RECURSION)
        .limit_directives(limits::MAX_DIRECTIVES)
}

/// The schema the server runs, with its state.
pub fn build_schema(state: AppState) -> AppSchema {
    builder().data(state).finish()
}

/// Dataloaders for one request (or one WebSocket operation): one
/// statement per batch of keys, whatever the page size or the aliases. Per
/// request so their cache never serves one request's rows to a later one.
pub fn request_loaders(
    state: &AppState,
    mut req: async_graphql::Request,
) -> async_graphql::Request {
    fn loader<L>(l: L) -> DataLoader<L, HashMapCache>
    where
        L: Send + Sync + 'static,
    {
        DataLoader::with_cache(l, tokio::spawn, HashMapCache::default())
    }
    let store = &state.store;
    req = req
        .data(loader(UserLoader(store.clone())))
        .data(loader(AccountByKeyLoader(store.clone())))
        .data(loader(DuePointsLoader(store.clone())))
        .data(loader(LiveBatchesLoader(store.clone())))
        .data(loader(WriterLoader(store.clone())));
    req
}

/// The SDL committed as `schema.graphql`.
pub fn sdl() -> String {
    builder().finish().sdl()
}
