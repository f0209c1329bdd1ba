//! Operation limits that async-graphql does not offer: aliases and root
//! fields per operation. Checked right after parsing, for every transport.

use std::sync::Arc;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery};
use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::{ServerError, ServerResult, Variables};

use crate::domain::Code;

pub const MAX_ALIASES: usize = 30;
pub const MAX_ROOT_FIELDS: usize = 20;

pub struct OperationLimits;

impl ExtensionFactory for OperationLimits {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(OperationLimitsExtension)
    }
}

struct OperationLimitsExtension;

pub fn limit_error(message: impl Into<String>) -> ServerError {
    let mut e = ServerError::new(message, None);
    e.extensions
        .get_or_insert_with(Default::default)
        .set("code", Code::LimitExceeded.as_str());
    e
}

fn count_aliases(set: &SelectionSet, doc: &ExecutableDocument, depth: usize) -> usize {
    if depth > 64 {
        return 0;
    }
    set.items
        .iter()
        .map(|s| match &s.node {
            Selection::Field(f) => {
                usize::from(f.node.alias.is_some())
                    + count_aliases(&f.node.selection_set.node, doc, depth + 1)
            }
            Selection::InlineFragment(f) => {
                count_aliases(&f.node.selection_set.node, doc, depth + 1)
            }
            Selection::FragmentSpread(s) => doc
                .fragments
                .get(&s.node.fragment_name.node)
                .map(|f| count_aliases(&f.node.selection_set.node, doc, depth + 1))
                .unwrap_or(0),
        })
        .sum()
}

fn count_root_fields(set: &SelectionSet, doc: &ExecutableDocument, depth: usize) -> usize {
    if depth > 8 {
        return 0;
    }
    set.items
        .iter()
        .map(|s| match &s.node {
            Selection::Field(_) => 1,
            Selection::InlineFragment(f) => {
                count_root_fields(&f.node.selection_set.node, doc, depth + 1)
            }
            Selection::FragmentSpread(s) => doc
                .fragments
                .get(&s.node.fragment_name.node)
                .map(|f| count_root_fields(&f.node.selection_set.node, doc, depth + 1))
                .unwrap_or(0),
        })
        .sum()
}

#[async_trait::async_trait]
impl Extension for OperationLimitsExtension {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let doc = next.run(ctx, query, variables).await?;
        for (_, op) in doc.operations.iter() {
            let set = &op.node.selection_set.node;
            let aliases = count_aliases(set, &doc, 0);
            if aliases > MAX_ALIASES {
                return Err(limit_error(format!(
                    "an operation may use at most {MAX_ALIASES} aliases, this one uses {aliases}"
                )));
            }
            let roots = count_root_fields(set, &doc, 0);
            if roots > MAX_ROOT_FIELDS {
                return Err(limit_error(format!(
                    "an operation may select at most {MAX_ROOT_FIELDS} root fields, this one selects {roots}"
                )));
            }
        }
        Ok(doc)
    }
}
