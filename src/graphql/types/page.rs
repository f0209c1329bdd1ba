//! Relay connections with keyset cursors; `totalCount` runs its COUNT only
//! when a client selects it.

use async_graphql::connection::{Connection, CursorType, Edge};
use async_graphql::{Context, Object, OutputType};

use super::{FalBillingLine, FalTask, FinancialTransaction, HoldGql, PointsDetail, User};
use crate::graphql::context::read;
use crate::store::read::{self as queries, Cursor, CursorError};

impl CursorType for Cursor {
    type Error = CursorError;

    fn decode_cursor(s: &str) -> Result<Self, Self::Error> {
        Cursor::decode(s)
    }

    fn encode_cursor(&self) -> String {
        self.encode()
    }
}

/// What `totalCount` counts: the same filter as the page, without the cursor.
pub enum TotalCount {
    Usage(queries::ledger::UsageFilter),
    Statement(i32),
    Financial(i32),
    Tasks(queries::fal::TaskFilter),
    Users(queries::users::UserSearch),
    Holds(i32, Option<crate::store::holds::HoldStatus>),
    BillingLines(queries::billing::LineFilter),
}

#[Object]
impl TotalCount {
    /// Rows matching the filter across all pages.
    async fn total_count(&self, ctx: &Context<'_>) -> async_graphql::Result<i64> {
        let n = read(ctx, |db| async move {
            match self {
                TotalCount::Usage(f) => queries::ledger::usage_count(db, f).await,
                TotalCount::Statement(u) => queries::ledger::statement_count(db, *u).await,
                TotalCount::Financial(u) => queries::ledger::financial_count(db, *u).await,
                TotalCount::Tasks(f) => queries::fal::task_count(db, f).await,
                TotalCount::Users(q) => queries::users::search_count(db, q).await,
                TotalCount::Holds(u, status) => db.holds_count(*u, *status).await,
                TotalCount::BillingLines(f) => queries::billing::line_count(db, f).await,
            }
        })
        .await?;
        Ok(n as i64)
    }
}

/// Its nodes are [`super::PageNode`]s: the same GraphQL type, plain
/// fields answered in one pass.
pub type UsageDetailConnection = Connection<Cursor, super::PageNode, TotalCount>;
pub type UserConnection = Connection<Cursor, User, TotalCount>;
pub type PointsDetailConnection = Connection<Cursor, PointsDetail, TotalCount>;
pub type FinancialTransactionConnection = Connection<Cursor, FinancialTransaction, TotalCount>;
pub type FalTaskConnection = Connection<Cursor, FalTask, TotalCount>;
pub type HoldConnection = Connection<Cursor, HoldGql, TotalCount>;
pub type FalBillingLineConnection = Connection<Cursor, FalBillingLine, TotalCount>;

/// Builds a connection from a fetched page; `key` gives each row's cursor.
pub fn connection<R, N: OutputType>(
    rows: Vec<R>,
    has_next: bool,
    total: TotalCount,
    key: impl Fn(&R) -> Cursor,
    node: impl Fn(R) -> N,
) -> Connection<Cursor, N, TotalCount> {
    let mut c = Connection::with_additional_fields(false, has_next, total);
    c.edges = rows
        .into_iter()
        .map(|r| Edge::new(key(&r), node(r)))
        .collect();
    c
}
