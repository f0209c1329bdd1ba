//! The UsageDetail page's nodes, resolved in one synchronous pass.
//!
//! A page is 20 rows of plain columns, and the derived resolver spends a
//! boxed future and a trip through the field map per field per row: about
//! an eighth of a page's CPU in a profile of the first page at c16 (issue
//! 28). [`PageNode`] answers a selection of plain fields directly and hands
//! anything else — a fragment, a directive, a field with arguments or a
//! selection of its own (`user`), `writtenBy` (a loader and a role check),
//! a value that is an error (an amount past `Int`) — to the derived
//! resolver of [`UsageDetail`], so the schema, the answers and the errors
//! are the same; the test below compares the two on each kind of
//! selection.

use std::borrow::Cow;

use async_graphql::indexmap::IndexMap;
use async_graphql::parser::types::{Field, Selection};
use async_graphql::registry::Registry;
use async_graphql::resolver_utils::enum_value;
use async_graphql::{
    ContextSelectionSet, Name, OutputType, Positioned, ScalarType, ServerResult, Value,
};

use super::{TransactionTypeGql, UsageDetail};
use crate::domain::source::TxType;
use crate::graphql::context::int;

/// A UsageDetail as a page's node: the same GraphQL type.
pub struct PageNode(pub UsageDetail);

impl PageNode {
    /// The node's value when every selected field is a plain column;
    /// `None` sends the selection to the derived resolver.
    fn plain(&self, ctx: &ContextSelectionSet<'_>) -> Option<Value> {
        let row = &self.0 .0;
        let mut out = IndexMap::with_capacity(ctx.item.node.items.len());
        for selection in &ctx.item.node.items {
            let Selection::Field(field) = &selection.node else {
                return None;
            };
            let f = &field.node;
            if !f.directives.is_empty()
                || !f.arguments.is_empty()
                || !f.selection_set.node.items.is_empty()
            {
                return None;
            }
            // Past `Int` is the derived resolver's error: fall back.
            let int = |v: i64| int(v).ok().map(Value::from);
            let text = |v: &Option<String>| v.as_deref().map_or(Value::Null, Value::from);
            let value = match f.name.node.as_str() {
                "__typename" => Value::from(UsageDetail::type_name().as_ref()),
                "id" => Value::from(row.id.to_string()),
                "createdAt" => row.created_at.to_value(),
                "type" => enum_value(TransactionTypeGql::from(TxType::parse(&row.r#type)?)),
                "sourceType" => text(&row.source_type),
                "sourceId" => text(&row.source_id),
                "amount" => int(row.amount)?,
                "change" => int(row.balance_after - row.balance_before)?,
                "balanceBefore" => int(row.balance_before)?,
                "balanceAfter" => int(row.balance_after)?,
                "duration" => row.duration.map_or(Value::Null, |d| d.to_value()),
                "description" => text(&row.description),
                "batchId" => row
                    .batch_id
                    .map_or(Value::Null, |b| Value::from(b.to_string())),
                _ => return None,
            };
            out.insert(Name::new(f.response_key().node.as_str()), value);
        }
        #[cfg(test)]
        tests::ANSWERED.with(|n| n.set(n.get() + 1));
        Some(Value::Object(out))
    }
}

impl OutputType for PageNode {
    fn type_name() -> Cow<'static, str> {
        UsageDetail::type_name()
    }

    fn create_type_info(registry: &mut Registry) -> String {
        UsageDetail::create_type_info(registry)
    }

    async fn resolve(
        &self,
        ctx: &ContextSelectionSet<'_>,
        field: &Positioned<Field>,
    ) -> ServerResult<Value> {
        match self.plain(ctx) {
            Some(value) => Ok(value),
            None => self.0.resolve(ctx, field).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use async_graphql::{EmptyMutation, EmptySubscription, Object, Schema};
    use chrono::TimeZone;
    use entity::point_transaction::Model;

    use super::*;

    thread_local! {
        /// How many nodes the one-pass resolver answered itself (per
        /// thread: each test runs its schema on its own).
        pub(super) static ANSWERED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    fn row(amount: i64, description: Option<&str>) -> Model {
        let at = chrono::Utc
            .timestamp_micros(1_796_000_000_123_456)
            .single()
            .expect("instant");
        Model {
            id: 42,
            user_id: uuid::Uuid::nil(),
            r#type: "consume".into(),
            amount,
            balance_before: 100,
            balance_after: 100 - amount.min(100),
            refund_key: None,
            refund_of: None,
            request_hash: None,
            source_type: Some("tts".into()),
            source_id: Some("job-1".into()),
            batch_id: Some(7),
            description: description.map(Into::into),
            created_at: at,
            updated_at: at,
            duration: Some(2.5),
        }
    }

    struct Q;

    #[Object]
    impl Q {
        async fn fast(&self, amount: i64) -> PageNode {
            PageNode(UsageDetail(row(amount, Some("【配音合成】"))))
        }
        async fn derived(&self, amount: i64) -> UsageDetail {
            UsageDetail(row(amount, Some("【配音合成】")))
        }
        async fn fast_bare(&self) -> PageNode {
            let mut r = row(1, None);
            r.duration = None;
            r.batch_id = None;
            r.source_type = None;
            PageNode(UsageDetail(r))
        }
        async fn derived_bare(&self) -> UsageDetail {
            let mut r = row(1, None);
            r.duration = None;
            r.batch_id = None;
            r.source_type = None;
            UsageDetail(r)
        }
    }

    /// The same selection through both resolvers gives the same answer.
    async fn same(selection: &str, amount: i64) -> usize {
        let before = ANSWERED.with(|n| n.get());
        let schema = Schema::new(Q, EmptyMutation, EmptySubscription);
        // Variables and fragments are declared only where used (an unused
        // one fails validation).
        let vars = if selection.contains("$v") {
            "($v: Boolean = true)"
        } else {
            ""
        };
        let fragment = if selection.contains("...F") {
            "fragment F on UsageDetail { id change }"
        } else {
            ""
        };
        let q = format!(
            "query{vars} {{ fast(amount: {amount}) {selection} derived(amount: {amount}) {selection} \
             fastBare {selection} derivedBare {selection} }} {fragment}"
        );
        let r = schema.execute(q.as_str()).await;
        let json = serde_json::to_value(&r).expect("json");
        assert_eq!(
            json["data"]["fast"], json["data"]["derived"],
            "{selection}: {json}"
        );
        assert_eq!(
            json["data"]["fastBare"], json["data"]["derivedBare"],
            "{selection}: {json}"
        );
        let errors: Vec<_> = r.errors.iter().map(|e| e.message.clone()).collect();
        let paths: Vec<_> = r.errors.iter().map(|e| format!("{:?}", e.path)).collect();
        assert_eq!(
            errors.len() % 2,
            0,
            "{selection}: errors come in pairs: {errors:?} {paths:?}"
        );
        ANSWERED.with(|n| n.get()) - before
    }

    #[tokio::test]
    async fn both_resolvers_answer_every_kind_of_selection_alike() {
        // Plain fields (with aliases and __typename) are answered in one
        // pass, both nodes of the query; the rest by the derived resolver.
        for (selection, answered) in [
            ("{ id createdAt type sourceType sourceId amount change balanceBefore balanceAfter duration description batchId }", 2),
            ("{ __typename a: id b: change id }", 2),
            ("{ duration batchId sourceType }", 2),
            ("{ createdAt ...F }", 0),
            ("{ ... on UsageDetail { id } amount }", 0),
            // The executor applies @skip/@include before resolving.
            ("{ id amount @include(if: $v) description @skip(if: $v) }", 2),
        ] {
            assert_eq!(same(selection, 30).await, answered, "{selection}");
        }
    }

    #[tokio::test]
    async fn a_value_past_int_is_the_derived_resolvers_error() {
        let past = i64::from(i32::MAX) + 1;
        // The bare rows' amount is 1: only they are answered in one pass.
        assert_eq!(same("{ id amount }", past).await, 1);
        let schema = Schema::new(Q, EmptyMutation, EmptySubscription);
        let r = schema
            .execute(format!("{{ fast(amount: {past}) {{ amount }} }}"))
            .await;
        // Past Int is an error at the field, from the derived resolver.
        assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
        let e = serde_json::to_value(&r.errors[0]).expect("json");
        assert_eq!(e["extensions"]["code"], "INTERNAL", "{e}");
        assert_eq!(e["path"], serde_json::json!(["fast", "amount"]), "{e}");
    }
}
