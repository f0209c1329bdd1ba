//! `/graphql` over HTTP, per the GraphQL-over-HTTP specification:
//! `Accept` negotiation (406 when neither JSON type is acceptable), POST
//! bodies only as `application/json` (415 otherwise), 400 for requests that
//! are not well-formed, GET for queries only (405 with `Allow: POST`), and
//! status codes per media type for GraphQL request errors.

use std::net::SocketAddr;
use std::time::Instant;

use async_graphql::http::GraphiQLSource;
use async_graphql::parser::types::{DocumentOperations, OperationType};
use async_graphql::{BatchRequest, ServerError};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use futures_util::stream::{FuturesOrdered, StreamExt};
use serde_json::Value;

use super::media::{is_json_body, negotiate, Media, JSON};
use super::{HttpState, MAX_BATCH};
use crate::auth::{AuthError, Caller, Role};
use crate::domain::{Code, Coded};

fn error_body(code: Code, message: &str) -> Value {
    serde_json::json!({ "errors": [{ "message": message, "extensions": { "code": code.as_str() } }] })
}

/// A response carrying only errors (no `data`: nothing was executed).
pub fn error_response(status: StatusCode, media: Media, code: Code, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, media.content_type())],
        error_body(code, message).to_string(),
    )
        .into_response()
}

fn not_acceptable() -> Response {
    error_response(
        StatusCode::NOT_ACCEPTABLE,
        Media::Json,
        Code::InvalidInput,
        "Accept must allow application/graphql-response+json or application/json",
    )
}

/// `None` for an anonymous request; an error for a bad or expired token.
fn authenticate(s: &HttpState, headers: &HeaderMap) -> Result<Option<Caller>, AuthError> {
    match headers.get(header::AUTHORIZATION) {
        None => Ok(None),
        Some(v) => {
            let v = v.to_str().map_err(|_| AuthError::Malformed)?;
            s.app.keys.verify_header(v).map(Some)
        }
    }
}

/// Why a request is turned away before it is read.
enum Refused {
    Token(AuthError),
    RateLimited(std::time::Duration),
}

impl Refused {
    fn into_response(self, media: Media) -> Response {
        match self {
            Refused::Token(e) => {
                error_response(StatusCode::UNAUTHORIZED, media, e.code(), &e.to_string())
            }
            Refused::RateLimited(wait) => {
                let secs = wait.as_secs().max(1);
                let mut r = error_response(
                    StatusCode::TOO_MANY_REQUESTS,
                    media,
                    Code::LimitExceeded,
                    &format!("rate limit exceeded; retry in {secs} s"),
                );
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
                r
            }
        }
    }
}

/// Authentication and rate limiting, shared by GET and POST.
fn admit(s: &HttpState, headers: &HeaderMap, peer: SocketAddr) -> Result<Option<Caller>, Refused> {
    let caller = authenticate(s, headers).map_err(Refused::Token)?;
    let (role, key) = match &caller {
        Some(c) => (Some(c.role), format!("{:?}:{}", c.role, c.subject)),
        None => (None, format!("ip:{}", peer.ip())),
    };
    s.app
        .rate_limiter
        .check(role, &key, Instant::now())
        .map_err(Refused::RateLimited)?;
    Ok(caller)
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

fn parse_body(bytes: &[u8]) -> Result<BatchRequest, String> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| format!("malformed JSON: {e}"))?;
    match &value {
        Value::Array(items) => {
            if items.is_empty() {
                return Err("an empty batch".into());
            }
            if items.len() > MAX_BATCH {
                return Err(format!("at most {MAX_BATCH} operations per batch"));
            }
            items.iter().try_for_each(well_formed)?;
        }
        v => well_formed(v)?,
    }
    serde_json::from_value(value).map_err(|e| format!("malformed GraphQL request: {e}"))
}

pub async fn post(
    State(s): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Some(media) = negotiate(&headers) else {
        return not_acceptable();
    };
    let caller = match admit(&s, &headers, peer) {
        Ok(c) => c,
        Err(r) => return r.into_response(media),
    };
    if !is_json_body(&headers) {
        return error_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            media,
            Code::InvalidInput,
            "POST bodies must be sent as Content-Type: application/json",
        );
    }
    let bytes = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                media,
                Code::LimitExceeded,
                &format!(
                    "request bodies are limited to {} bytes",
                    super::MAX_BODY_BYTES
                ),
            )
        }
        Err(e) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                media,
                Code::InvalidInput,
                &e.body_text(),
            )
        }
    };
    let batch = match parse_body(&bytes) {
        Ok(b) => b,
        Err(msg) => {
            let code = if msg.contains("per batch") {
                Code::LimitExceeded
            } else {
                Code::InvalidInput
            };
            return error_response(StatusCode::BAD_REQUEST, media, code, &msg);
        }
    };
    execute(&s, media, caller, batch).await
}

pub async fn get(
    State(s): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    if req.headers().contains_key(header::SEC_WEBSOCKET_PROTOCOL) {
        return super::ws::upgrade(s, req).await;
    }
    let headers = req.headers().clone();
    let query_string = req.uri().query().unwrap_or_default().to_owned();
    let browser = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    if browser && !query_string.contains("query=") {
        return Html(GraphiQLSource::build().endpoint("/graphql").finish()).into_response();
    }
    let Some(media) = negotiate(&headers) else {
        return not_acceptable();
    };
    let caller = match admit(&s, &headers, peer) {
        Ok(c) => c,
        Err(r) => return r.into_response(media),
    };
    let params: Vec<(String, String)> = match serde_urlencoded_pairs(&query_string) {
        Some(p) => p,
        None => {
            return error_response(
                StatusCode::BAD_REQUEST,
                media,
                Code::InvalidInput,
                "malformed query string",
            )
        }
    };
    let mut obj = serde_json::Map::new();
    for (k, v) in params {
        let value = match k.as_str() {
            "query" | "operationName" => Value::String(v),
            "variables" | "extensions" => match serde_json::from_str(&v) {
                Ok(j) => j,
                Err(e) => {
                    return error_response(
                        StatusCode::BAD_REQUEST,
                        media,
                        Code::InvalidInput,
                        &format!("`{k}` is not JSON: {e}"),
                    )
                }
            },
            _ => continue,
        };
        obj.insert(k, value);
    }
    let value = Value::Object(obj);
    if let Err(msg) = well_formed(&value) {
        return error_response(StatusCode::BAD_REQUEST, media, Code::InvalidInput, &msg);
    }
    let request: async_graphql::Request = match serde_json::from_value(value) {
        Ok(r) => r,
        Err(e) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                media,
                Code::InvalidInput,
                &e.to_string(),
            )
        }
    };
    // A mutation over GET would let any page a browser visits spend points.
    if is_mutation(&s, &request.query, request.operation_name.as_deref()) {
        let mut resp = error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            media,
            Code::InvalidInput,
            "mutations must be sent with POST",
        );
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return resp;
    }
    execute(&s, media, caller, BatchRequest::Single(request)).await
}

fn serde_urlencoded_pairs(q: &str) -> Option<Vec<(String, String)>> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Some((percent_decode(k)?, percent_decode(v)?))
        })
        .collect()
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

fn is_mutation(s: &HttpState, query: &str, operation: Option<&str>) -> bool {
    let checked = s.app.documents.checked(query);
    let Ok(doc) = &*checked else {
        return false;
    };
    match &doc.operations {
        DocumentOperations::Single(op) => op.node.ty == OperationType::Mutation,
        DocumentOperations::Multiple(ops) => ops.iter().any(|(name, op)| {
            operation.is_none_or(|o| o == name.as_str()) && op.node.ty == OperationType::Mutation
        }),
    }
}

/// One response as JSON text, serialized once. Only a request error (small)
/// goes through a JSON tree: nothing was executed, so the spec has no
/// `data` entry, and it is removed.
fn response_json(r: &async_graphql::Response, request_error: bool) -> String {
    let internal = || error_body(Code::Internal, "internal error").to_string();
    if !request_error {
        return serde_json::to_string(r).unwrap_or_else(|_| internal());
    }
    match serde_json::to_value(r) {
        Ok(mut body) => {
            if let Some(o) = body.as_object_mut() {
                o.remove("data");
            }
            body.to_string()
        }
        Err(_) => internal(),
    }
}

/// The name of the document's first operation (`query Name …`), for
/// metrics when the client did not send `operationName`. A cheap scan, not
/// a parse: comments and whitespace are skipped, nothing else is trusted.
fn first_operation_name(query: &str) -> Option<String> {
    let mut rest = query;
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == ',');
        if let Some(comment) = rest.strip_prefix('#') {
            rest = comment.split_once('\n').map(|x| x.1).unwrap_or("");
            continue;
        }
        break;
    }
    let after = ["query", "mutation", "subscription"]
        .iter()
        .find_map(|k| rest.strip_prefix(k))?;
    if !after.starts_with(char::is_whitespace) {
        return None;
    }
    let name: String = after
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty()).then_some(name)
}

/// Readies one request for the schema: its parsed document (or the error
/// that ends it before execution), its dataloaders, the caller, and
/// introspection only for admins.
pub(super) fn prepare(
    s: &HttpState,
    r: async_graphql::Request,
    caller: &Option<Caller>,
) -> Result<async_graphql::Request, ServerError> {
    let r = s.app.documents.attach(r)?;
    let mut r = crate::graphql::request_loaders(&s.app, r);
    let is_admin = caller.as_ref().is_some_and(|c| c.role == Role::Admin);
    if let Some(c) = caller {
        r = r.data(c.clone());
    }
    if !is_admin && !s.app.settings.introspection_for_all {
        r = r.disable_introspection();
    }
    Ok(r)
}

/// Executes one prepared request; a request refused while preparing gets
/// its error as the whole response, as async-graphql would answer it.
async fn execute_one(
    s: &HttpState,
    r: Result<async_graphql::Request, ServerError>,
) -> async_graphql::Response {
    match r {
        Ok(r) => s.schema.execute(r).await,
        Err(e) => async_graphql::Response::from_errors(vec![e]),
    }
}

async fn execute(
    s: &HttpState,
    media: Media,
    caller: Option<Caller>,
    batch: BatchRequest,
) -> Response {
    let started = Instant::now();
    let label = |r: &async_graphql::Request| {
        r.operation_name
            .clone()
            .or_else(|| first_operation_name(&r.query))
    };
    let names: Vec<Option<String>> = match &batch {
        BatchRequest::Single(r) => vec![label(r)],
        BatchRequest::Batch(v) => v.iter().map(label).collect(),
    };
    let run = async {
        match batch {
            BatchRequest::Single(r) => vec![execute_one(s, prepare(s, r, &caller)).await],
            BatchRequest::Batch(v) => {
                v.into_iter()
                    .map(|r| execute_one(s, prepare(s, r, &caller)))
                    .collect::<FuturesOrdered<_>>()
                    .collect()
                    .await
            }
        }
    };
    let budget = std::time::Duration::from_millis(s.app.settings.request_timeout_ms);
    // Past the budget the execution future is dropped: its queries are
    // cancelled and an open transaction rolls back (a mutation is then
    // either committed before or not at all; a retry with its key tells).
    let mut responses = match tokio::time::timeout(budget, run).await {
        Ok(r) => r,
        Err(_) => {
            for n in &names {
                s.app.metrics.request(
                    n.as_deref(),
                    Code::LimitExceeded.as_str(),
                    started.elapsed(),
                );
            }
            return error_response(
                StatusCode::GATEWAY_TIMEOUT,
                media,
                Code::LimitExceeded,
                &format!("the request exceeded its {} ms budget", budget.as_millis()),
            );
        }
    };
    let single = names.len() == 1;
    let mut bodies = Vec::with_capacity(responses.len());
    let mut any_request_error = false;
    for (r, name) in responses.iter_mut().zip(&names) {
        let request_error = assign_codes(r);
        any_request_error |= request_error;
        let outcome = r
            .errors
            .first()
            .and_then(|e| e.extensions.as_ref())
            .and_then(|x| x.get("code"))
            .map(|c| c.to_string().trim_matches('"').to_owned())
            .unwrap_or_else(|| "ok".to_owned());
        s.app
            .metrics
            .request(name.as_deref(), &outcome, started.elapsed());
        bodies.push(response_json(r, request_error));
    }
    let body = if single {
        bodies.pop().unwrap_or_default()
    } else {
        format!("[{}]", bodies.join(","))
    };
    let status = if single {
        media.status(any_request_error)
    } else {
        StatusCode::OK
    };
    let content_type = if single { media.content_type() } else { JSON };
    (status, [(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// Gives every error a code and tells whether the request failed before
/// execution (no path on any error). Every error our resolvers raise
/// already has a code; an error without one comes from async-graphql
/// itself and is about the client's document or input (syntax, validation,
/// variable coercion, limits), except a missing context value, which is
/// our fault.
pub(super) fn assign_codes(r: &mut async_graphql::Response) -> bool {
    let request_error = matches!(r.data, async_graphql::Value::Null)
        && !r.errors.is_empty()
        && r.errors.iter().all(|e| e.path.is_empty());
    for e in &mut r.errors {
        if has_code(e) {
            continue;
        }
        let m = e.message.as_str();
        let code = if m.contains("nested too deep")
            || m.contains("too complex")
            || m.contains("recursion depth")
            || m.contains("too many directives")
        {
            Code::LimitExceeded
        } else if m.starts_with("Data `") && m.ends_with("does not exist.") {
            tracing::error!(error = m, "missing context data");
            Code::Internal
        } else {
            Code::InvalidInput
        };
        e.extensions
            .get_or_insert_with(Default::default)
            .set("code", code.as_str());
    }
    request_error
}

fn has_code(e: &ServerError) -> bool {
    e.extensions
        .as_ref()
        .is_some_and(|x| x.get("code").is_some())
}

#[cfg(test)]
mod tests {
    use super::first_operation_name;

    #[test]
    fn operation_names_are_read_from_the_document() {
        assert_eq!(
            first_operation_name("query UsageDetail($a: Int) { x }").as_deref(),
            Some("UsageDetail")
        );
        assert_eq!(
            first_operation_name("# c\n  mutation Pay { x }").as_deref(),
            Some("Pay")
        );
        assert_eq!(first_operation_name("{ x }"), None);
        assert_eq!(first_operation_name("query { x }"), None);
        assert_eq!(first_operation_name("queryX { x }"), None);
    }
}
