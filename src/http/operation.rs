//! What both transports do with one GraphQL request: check its shape,
//! ready it for the schema (parsed document, dataloaders, caller,
//! introspection), and give every error of its response a code.

use async_graphql::parser::types::{DocumentOperations, ExecutableDocument, OperationType};
use async_graphql::ServerError;
use serde_json::Value;

use super::HttpState;
use crate::auth::{Caller, Role};
use crate::errors::{assign_code, to_server_error, Code, Coded, Refusal};
use crate::graphql::context::ReadRoute;

/// `{"errors": [...]}` with one coded error.
pub(super) fn error_body<E: Coded>(e: &E) -> Value {
    serde_json::json!({ "errors": [{ "message": e.to_string(), "extensions": { "code": e.code().as_str() } }] })
}

/// Checks the shape of one request object: `query` a string, `variables`
/// and `extensions` objects, `operationName` a string (or null).
pub(super) fn well_formed(v: &Value) -> Result<(), String> {
    let Some(o) = v.as_object() else {
        return Err("a request must be a JSON object".into());
    };
    match o.get("query") {
        Some(Value::String(_)) => {}
        Some(_) => return Err("`query` must be a string".into()),
        None => return Err("`query` is required".into()),
    }
    for key in ["variables", "extensions"] {
        if !matches!(
            o.get(key),
            None | Some(Value::Null) | Some(Value::Object(_))
        ) {
            return Err(format!("`{key}` must be an object"));
        }
    }
    if !matches!(
        o.get("operationName"),
        None | Some(Value::Null) | Some(Value::String(_))
    ) {
        return Err("`operationName` must be a string".into());
    }
    Ok(())
}

/// Readies one request for the schema: its parsed document (or the error
/// that ends it before execution), its dataloaders, the caller,
/// introspection only for admins, and whether its reads may go to a
/// replica (queries only: a mutation reads what it wrote, on the primary).
pub(super) fn prepare(
    s: &HttpState,
    r: async_graphql::Request,
    caller: &Option<Caller>,
) -> Result<async_graphql::Request, ServerError> {
    let is_admin = caller.as_ref().is_some_and(|c| c.role == Role::Admin);
    let may_introspect = is_admin || s.app.settings.introspection_for_all;
    let mut route = ReadRoute::Primary;
    if let Ok(parsed) = &*s.documents.checked(&r.query) {
        // A clear refusal rather than a silent `__schema: null`.
        if !may_introspect && parsed.facts.get(r.operation_name.as_deref()).introspects {
            return Err(to_server_error(&Refusal::Introspection));
        }
        if selected_type(&parsed.doc, r.operation_name.as_deref()) == Some(OperationType::Query) {
            route = ReadRoute::Replica;
        }
    }
    let r = s.documents.attach(r)?.data(route);
    let mut r = crate::graphql::request_loaders(&s.app, r);
    if let Some(c) = caller {
        r = r.data(c.clone());
    }
    if !may_introspect {
        r = r.disable_introspection();
    }
    Ok(r)
}

/// The type of the operation a request runs (`None` when the name matches
/// none: async-graphql then refuses the request itself).
fn selected_type(doc: &ExecutableDocument, name: Option<&str>) -> Option<OperationType> {
    match (&doc.operations, name) {
        (DocumentOperations::Single(op), _) => Some(op.node.ty),
        (DocumentOperations::Multiple(ops), Some(name)) => ops
            .iter()
            .find(|(n, _)| n.as_str() == name)
            .map(|(_, op)| op.node.ty),
        (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => {
            ops.values().next().map(|op| op.node.ty)
        }
        (DocumentOperations::Multiple(_), None) => None,
    }
}

/// Gives every error a code and tells whether the request failed before
/// execution (no path on any error): see `crate::errors` for the policy.
pub(super) fn assign_codes(r: &mut async_graphql::Response) -> bool {
    let request_error = matches!(r.data, async_graphql::Value::Null)
        && !r.errors.is_empty()
        && r.errors.iter().all(|e| e.path.is_empty());
    for e in &mut r.errors {
        assign_code(e);
    }
    request_error
}

/// The code of a response's first error, or `ok`.
pub(super) fn outcome(r: &async_graphql::Response) -> &'static str {
    r.errors
        .first()
        .and_then(|e| e.extensions.as_ref())
        .and_then(|x| x.get("code"))
        .and_then(|v| match v {
            async_graphql::Value::String(s) => Code::parse(s),
            _ => None,
        })
        .map(Code::as_str)
        .unwrap_or("ok")
}
