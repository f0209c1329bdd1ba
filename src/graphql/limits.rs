//! Operation limits that async-graphql does not offer: aliases and root
//! fields per operation. Checked right after parsing, for every transport.
//!
//! Not an async-graphql extension on purpose: with any extension installed,
//! async-graphql runs every field of every response through the extension
//! chain (a registry lookup and a boxed future per field), which cost more
//! CPU than the whole database query on a 20-row UsageDetail page.

use async_graphql::parser::types::{ExecutableDocument, Field, Selection, SelectionSet};
use async_graphql::ServerError;

use crate::domain::Code;

pub const MAX_ALIASES: usize = 30;
pub const MAX_ROOT_FIELDS: usize = 20;

pub fn limit_error(message: impl Into<String>) -> ServerError {
    let mut e = ServerError::new(message, None);
    e.extensions
        .get_or_insert_with(Default::default)
        .set("code", Code::LimitExceeded.as_str());
    e
}

/// Counts the fields reached from `set` that `counts` accepts, following
/// inline fragments and fragment spreads, and nested selections too when
/// `descend`. Fragment cycles are refused by validation after parsing;
/// `max_depth` only keeps this walk finite before that.
fn count_fields(
    set: &SelectionSet,
    doc: &ExecutableDocument,
    depth: usize,
    max_depth: usize,
    descend: bool,
    counts: &dyn Fn(&Field) -> bool,
) -> usize {
    if depth > max_depth {
        return 0;
    }
    let walk =
        |inner: &SelectionSet| count_fields(inner, doc, depth + 1, max_depth, descend, counts);
    set.items
        .iter()
        .map(|s| match &s.node {
            Selection::Field(f) => {
                usize::from(counts(&f.node))
                    + if descend {
                        walk(&f.node.selection_set.node)
                    } else {
                        0
                    }
            }
            Selection::InlineFragment(f) => walk(&f.node.selection_set.node),
            Selection::FragmentSpread(s) => doc
                .fragments
                .get(&s.node.fragment_name.node)
                .map(|f| walk(&f.node.selection_set.node))
                .unwrap_or(0),
        })
        .sum()
}

/// Refuses a document whose operations use too many aliases or select too
/// many root fields. Runs once per distinct document text (see
/// [`super::documents`]), before execution, for every transport.
pub fn check(doc: &ExecutableDocument) -> Result<(), ServerError> {
    for (_, op) in doc.operations.iter() {
        let set = &op.node.selection_set.node;
        let aliases = count_fields(set, doc, 0, 64, true, &|f| f.alias.is_some());
        if aliases > MAX_ALIASES {
            return Err(limit_error(format!(
                "an operation may use at most {MAX_ALIASES} aliases, this one uses {aliases}"
            )));
        }
        let roots = count_fields(set, doc, 0, 8, false, &|_| true);
        if roots > MAX_ROOT_FIELDS {
            return Err(limit_error(format!(
                "an operation may select at most {MAX_ROOT_FIELDS} root fields, this one selects {roots}"
            )));
        }
    }
    Ok(())
}
