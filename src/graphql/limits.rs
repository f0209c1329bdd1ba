//! Operation limits, checked right after parsing and before async-graphql
//! sees the document, for every transport: depth, complexity (page size as
//! a multiplier), parser nesting, directives per field, aliases and root
//! fields per operation.
//!
//! The gateway checks them itself, rather than leaving depth and
//! complexity to async-graphql, for two reasons. Its answer must carry the
//! code `LIMIT_EXCEEDED`, and async-graphql's limit errors can only be told
//! apart from other validation errors by their English text (see
//! `crate::errors`). And the walk is linear in the document's size: each
//! fragment is measured once and its figures reused at every spread, so a
//! document whose fragments spread each other exponentially is measured in
//! time proportional to its text and refused before any walk that would
//! expand it. async-graphql's own limits stay configured with the same
//! values as a backstop; they never refuse what passed here.
//!
//! Not an async-graphql extension on purpose: with any extension installed,
//! async-graphql runs every field of every response through the extension
//! chain (a registry lookup and a boxed future per field), which cost more
//! CPU than the whole database query on a 20-row UsageDetail page.

use std::collections::HashMap;

use async_graphql::parser::types::{
    ExecutableDocument, Field, OperationDefinition, OperationType, Selection, SelectionSet,
};
use async_graphql::{Name, Positioned, ServerError, Value};

use crate::errors::{to_server_error, Refusal};

/// Deepest field nesting accepted (the API itself needs about 6).
pub const MAX_DEPTH: usize = 12;
/// Deepest nesting under `__schema` / `__type`: the standard introspection
/// query (graphql-js `getIntrospectionQuery()`, used by GraphiQL, Apollo,
/// codegen) nests 15; introspection reads the in-memory schema only, so
/// its own bound is a little above that instead of the data limit.
pub const MAX_INTROSPECTION_DEPTH: usize = 20;
/// Highest complexity accepted; connection fields multiply by their page size.
pub const MAX_COMPLEXITY: usize = 5_000;
/// Deepest nesting of selection sets, fragments included (guards stacks).
pub const MAX_RECURSION: usize = 32;
/// Most directives on one field.
pub const MAX_DIRECTIVES: usize = 10;
pub const MAX_ALIASES: usize = 30;
pub const MAX_ROOT_FIELDS: usize = 20;
/// The page size a connection field is costed at when `first` is omitted
/// (its default).
const DEFAULT_PAGE: usize = 20;

fn limit(message: String) -> ServerError {
    to_server_error(&Refusal::OverLimit(message))
}

/// What one selection set costs, fragments expanded (arithmetically).
#[derive(Debug, Clone, Copy, Default)]
struct Figures {
    /// Deepest field nesting below (a field counts 1), outside introspection.
    depth: usize,
    /// Deepest field nesting below, under `__schema` / `__type`.
    introspection_depth: usize,
    /// Whether `__schema` or `__type` is selected below.
    introspects: bool,
    /// Deepest selection-set nesting below (fragments count too).
    nesting: usize,
    complexity: usize,
    aliases: usize,
    /// Fields at this level, through fragments.
    fields: usize,
}

struct Walk<'a> {
    doc: &'a ExecutableDocument,
    op: &'a OperationDefinition,
    /// Each fragment's figures, measured once.
    done: HashMap<&'a Name, Figures>,
    /// Fragments being measured: a spread of one of them is a cycle, which
    /// validation refuses later; here it counts nothing.
    open: Vec<&'a Name>,
}

impl<'a> Walk<'a> {
    fn set(&mut self, set: &'a SelectionSet) -> Figures {
        let mut f = Figures::default();
        for item in &set.items {
            let inner = match &item.node {
                Selection::Field(field) => {
                    let below = self.set(&field.node.selection_set.node);
                    let complexity = match self.page_size(&field.node) {
                        Some(n) => n.saturating_mul(below.complexity),
                        None => below.complexity.saturating_add(1),
                    };
                    let intro = matches!(field.node.name.node.as_str(), "__schema" | "__type");
                    let nested = below.depth.max(below.introspection_depth).saturating_add(1);
                    Figures {
                        depth: if intro {
                            0
                        } else {
                            below.depth.saturating_add(1)
                        },
                        introspection_depth: if intro {
                            nested
                        } else {
                            below
                                .introspection_depth
                                .saturating_add(usize::from(below.introspection_depth > 0))
                        },
                        introspects: intro || below.introspects,
                        nesting: if field.node.selection_set.node.items.is_empty() {
                            0
                        } else {
                            below.nesting.saturating_add(1)
                        },
                        complexity,
                        aliases: below
                            .aliases
                            .saturating_add(usize::from(field.node.alias.is_some())),
                        fields: 1,
                    }
                }
                Selection::InlineFragment(frag) => {
                    let below = self.set(&frag.node.selection_set.node);
                    Figures {
                        nesting: below.nesting.saturating_add(1),
                        ..below
                    }
                }
                Selection::FragmentSpread(spread) => {
                    let below = self.fragment(&spread.node.fragment_name.node);
                    Figures {
                        nesting: below.nesting.saturating_add(1),
                        ..below
                    }
                }
            };
            f.depth = f.depth.max(inner.depth);
            f.introspection_depth = f.introspection_depth.max(inner.introspection_depth);
            f.introspects |= inner.introspects;
            f.nesting = f.nesting.max(inner.nesting);
            f.complexity = f.complexity.saturating_add(inner.complexity);
            f.aliases = f.aliases.saturating_add(inner.aliases);
            f.fields = f.fields.saturating_add(inner.fields);
        }
        f
    }

    fn fragment(&mut self, name: &'a Name) -> Figures {
        if let Some(f) = self.done.get(name) {
            return *f;
        }
        if self.open.contains(&name) {
            return Figures::default();
        }
        let Some(def) = self.doc.fragments.get(name) else {
            return Figures::default();
        };
        self.open.push(name);
        let f = self.set(&def.node.selection_set.node);
        self.open.pop();
        self.done.insert(name, f);
        f
    }

    /// A connection field's page size: `first` as written, or the
    /// variable's default, or the field's default; at least 1. `None` for
    /// a field without `first`.
    fn page_size(&self, field: &Field) -> Option<usize> {
        let value = field.get_argument("first")?;
        let op = self.op;
        let value = value.node.clone().into_const_with(|var| {
            op.variable_definitions
                .iter()
                .find(|d| d.node.name.node == var)
                .and_then(|d| d.node.default_value.as_ref())
                .map(|c| c.node.clone())
                .ok_or(())
        });
        let n = match value {
            Ok(Value::Number(n)) => n
                .as_i64()
                .map(|n| usize::try_from(n.max(1)).unwrap_or(usize::MAX))
                .unwrap_or(1),
            _ => DEFAULT_PAGE,
        };
        Some(n.max(1))
    }
}

/// What the transports need to know about one operation, measured by the
/// same walk as its limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OperationFacts {
    /// What it costs against the caller's rate limit: a mutation one per
    /// root field, fragments followed (each is a ledger operation); a
    /// query or subscription one.
    pub rate_cost: usize,
    /// Whether it selects `__schema` or `__type` (fragments followed).
    /// `__typename` is not introspection of the schema: free for everyone.
    pub introspects: bool,
    /// A subscription: long-lived, no request time budget.
    pub subscription: bool,
}

impl Default for OperationFacts {
    /// An operation the document does not name: execution refuses it.
    fn default() -> Self {
        OperationFacts {
            rate_cost: 1,
            introspects: false,
            subscription: false,
        }
    }
}

/// The facts of every operation of a document that passed its limits.
#[derive(Debug, Clone, Default)]
pub struct DocumentFacts {
    /// By operation name (`None`: an anonymous operation).
    operations: Vec<(Option<String>, OperationFacts)>,
}

impl DocumentFacts {
    /// The operation a request runs: the one named, or the document's only
    /// one.
    pub fn get(&self, name: Option<&str>) -> OperationFacts {
        match (self.operations.as_slice(), name) {
            ([(_, only)], _) => *only,
            (ops, Some(n)) => ops
                .iter()
                .find(|(op, _)| op.as_deref() == Some(n))
                .map(|(_, f)| *f)
                .unwrap_or_default(),
            (_, None) => OperationFacts::default(),
        }
    }
}

/// Refuses a document any of whose operations breaks a limit, in time and
/// memory linear in the document; else each operation's facts. Runs once
/// per distinct document text (see `crate::http::documents`), before
/// execution, for every transport.
pub fn check(doc: &ExecutableDocument) -> Result<DocumentFacts, ServerError> {
    check_directives(doc)?;
    let mut facts = DocumentFacts::default();
    for (name, op) in doc.operations.iter() {
        let mut walk = Walk {
            doc,
            op: &op.node,
            done: HashMap::new(),
            open: Vec::new(),
        };
        let f = walk.set(&op.node.selection_set.node);
        if f.nesting > MAX_RECURSION {
            return Err(limit(format!(
                "selections may nest at most {MAX_RECURSION} deep"
            )));
        }
        if f.depth > MAX_DEPTH {
            return Err(limit(format!(
                "fields may nest at most {MAX_DEPTH} deep, this operation nests {}",
                f.depth
            )));
        }
        if f.introspection_depth > MAX_INTROSPECTION_DEPTH {
            return Err(limit(format!(
                "introspection may nest at most {MAX_INTROSPECTION_DEPTH} deep, this operation nests {}",
                f.introspection_depth
            )));
        }
        if f.complexity > MAX_COMPLEXITY {
            return Err(limit(format!(
                "an operation may cost at most {MAX_COMPLEXITY}, this one costs {} (page sizes multiply)",
                f.complexity
            )));
        }
        if f.aliases > MAX_ALIASES {
            return Err(limit(format!(
                "an operation may use at most {MAX_ALIASES} aliases, this one uses {}",
                f.aliases
            )));
        }
        if f.fields > MAX_ROOT_FIELDS {
            return Err(limit(format!(
                "an operation may select at most {MAX_ROOT_FIELDS} root fields, this one selects {}",
                f.fields
            )));
        }
        facts.operations.push((
            name.map(|n| n.to_string()),
            OperationFacts {
                rate_cost: match op.node.ty {
                    OperationType::Mutation => f.fields.max(1),
                    OperationType::Query | OperationType::Subscription => 1,
                },
                introspects: f.introspects,
                subscription: op.node.ty == OperationType::Subscription,
            },
        ));
    }
    Ok(facts)
}

/// Directives per field, over every selection set written in the document
/// (each once).
fn check_directives(doc: &ExecutableDocument) -> Result<(), ServerError> {
    fn walk(set: &Positioned<SelectionSet>) -> Result<(), ServerError> {
        for item in &set.node.items {
            match &item.node {
                Selection::Field(f) => {
                    if f.node.directives.len() > MAX_DIRECTIVES {
                        return Err(limit(format!(
                            "a field may carry at most {MAX_DIRECTIVES} directives"
                        )));
                    }
                    walk(&f.node.selection_set)?;
                }
                Selection::InlineFragment(f) => walk(&f.node.selection_set)?,
                Selection::FragmentSpread(_) => {}
            }
        }
        Ok(())
    }
    for (_, op) in doc.operations.iter() {
        walk(&op.node.selection_set)?;
    }
    for frag in doc.fragments.values() {
        walk(&frag.node.selection_set)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_graphql::parser::parse_query;

    fn verdict(q: &str) -> Result<(), String> {
        facts(q).map(|_| ())
    }

    fn facts(q: &str) -> Result<DocumentFacts, String> {
        let doc = parse_query(q).map_err(|e| e.to_string())?;
        check(&doc).map_err(|e| e.message)
    }

    #[test]
    fn page_size_multiplies_the_rows_cost() {
        let row = "id amount change balanceAfter description";
        assert!(verdict(&format!(
            "{{ usageDetails(first: 100) {{ nodes {{ {row} }} }} }}"
        ))
        .is_ok());
        let wide: String = (0..50).map(|i| format!("f{i} ")).collect();
        let e = verdict(&format!(
            "{{ usageDetails(first: 100) {{ nodes {{ {wide} }} }} }}"
        ))
        .expect_err("100 x 51");
        assert!(e.contains("cost"), "{e}");
        // A variable costs its default, or the field's default page.
        assert!(verdict(&format!(
            "query Q($n: Int = 100) {{ usageDetails(first: $n) {{ nodes {{ {wide} }} }} }}"
        ))
        .is_err());
        assert!(verdict(&format!(
            "query Q($n: Int) {{ usageDetails(first: $n) {{ nodes {{ {wide} }} }} }}"
        ))
        .is_ok());
    }

    #[test]
    fn depth_counts_fields_through_fragments() {
        let mut deep = "id".to_owned();
        for _ in 0..12 {
            deep = format!("a {{ {deep} }}");
        }
        assert!(verdict(&format!("{{ {deep} }}")).is_err());
        let frag = format!("fragment F on Query {{ {deep} }} {{ ...F }}");
        assert!(verdict(&frag).is_err());
    }

    #[test]
    fn aliases_and_root_fields_count_through_fragments() {
        let aliases: String = (0..31).map(|i| format!("a{i}: id ")).collect();
        assert!(verdict(&format!("{{ me {{ {aliases} }} }}"))
            .expect_err("31 aliases")
            .contains("aliases"));
        let roots = "me { id } ".repeat(7);
        let q = format!("fragment R on Query {{ {roots} }} {{ ...R ...R ...R }}");
        assert!(verdict(&q).expect_err("21 roots").contains("root fields"));
    }

    #[test]
    fn fragments_that_spread_each_other_are_measured_not_expanded() {
        // F0 spreads F1 twice, F1 spreads F2 twice, ... : 2^40 fields if
        // expanded. Measured once each, refused at once.
        let n = 40;
        let mut q = String::from("{ ...F0 }\n");
        for i in 0..n {
            q.push_str(&format!(
                "fragment F{i} on Query {{ a{i}: me {{ ...F{next} }} b{i}: me {{ ...F{next} }} }}\n",
                next = i + 1
            ));
        }
        q.push_str(&format!("fragment F{n} on User {{ id }}\n"));
        let started = std::time::Instant::now();
        assert!(verdict(&q).is_err());
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn fragment_cycles_are_left_to_validation() {
        assert!(
            verdict("fragment A on Query { ...B } fragment B on Query { ...A } { ...A }").is_ok()
        );
    }

    #[test]
    fn mutations_cost_one_per_root_field_through_fragments() {
        let f = facts(
            "fragment Two on Mutation { a: consume { id } b: consume { id } } \
             mutation M { ...Two c: refund { id } } query Q { me { id } }",
        )
        .expect("within limits");
        assert_eq!(f.get(Some("M")).rate_cost, 3);
        assert_eq!(f.get(Some("Q")).rate_cost, 1);
        assert_eq!(f.get(None).rate_cost, 1);
        assert!(!f.get(Some("M")).subscription);
        let sub = facts("subscription S { balanceChanged { balance } }").expect("ok");
        assert!(sub.get(None).subscription);
    }

    #[test]
    fn introspection_has_its_own_depth_bound() {
        // The shape of graphql-js getIntrospectionQuery(): 15 levels.
        let mut type_ref = "kind name".to_owned();
        for _ in 0..9 {
            type_ref = format!("kind name ofType {{ {type_ref} }}");
        }
        let q = format!(
            "{{ __schema {{ types {{ fields {{ args {{ type {{ ...T }} }} }} }} }} }} \
             fragment T on __Type {{ {type_ref} }}"
        );
        let f = facts(&q).expect("within limits");
        assert!(f.get(None).introspects);
        assert!(
            !facts("{ __typename me { id } }")
                .expect("ok")
                .get(None)
                .introspects
        );
        let mut deep = "name".to_owned();
        for _ in 0..30 {
            deep = format!("ofType {{ {deep} }}");
        }
        let q = format!("{{ __schema {{ types {{ {deep} }} }} }}");
        assert!(verdict(&q).expect_err("too deep").contains("introspection"));
        // Data fields keep their own limit even beside introspection.
        let mut data = "id".to_owned();
        for _ in 0..12 {
            data = format!("a {{ {data} }}");
        }
        assert!(verdict(&format!("{{ __schema {{ queryType {{ name }} }} {data} }}")).is_err());
    }

    #[test]
    fn too_many_directives_are_refused() {
        let d = "@include(if: true) ".repeat(11);
        assert!(verdict(&format!("{{ me {d} {{ id }} }}")).is_err());
    }
}
