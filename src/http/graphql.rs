//! `/graphql` over HTTP, per the GraphQL-over-HTTP specification:
//! `Accept` negotiation (406 when neither JSON type is acceptable), POST
//! bodies only as `application/json` (415 otherwise), 400 for requests that
//! are not well-formed, GET for queries only (405 with `Allow: POST`), and
//! status codes per media type for GraphQL request errors.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use async_graphql::parser::types::{DocumentOperations, OperationType};
use async_graphql::{BatchRequest, ServerError};
use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{FuturesOrdered, StreamExt};
use serde_json::Value;
use tracing::Instrument;

use super::media::{is_json_body, negotiate, Media, JSON};
use super::operation::{assign_codes, error_body, outcome, prepare, well_formed};
use super::{HttpState, MAX_BATCH, MAX_BODY_BYTES};
use crate::auth::{AuthError, Caller, Role};
use crate::errors::{to_server_error, Code, Coded, ReadError, Refusal};

/// A role as logs name it.
fn role_name(role: Role) -> &'static str {
    match role {
        Role::User => "user",
        Role::Service => "service",
        Role::Admin => "admin",
        Role::Partner => "partner",
    }
}

/// The status a refusal is answered with, over HTTP.
fn status(r: &Refusal) -> StatusCode {
    match r {
        Refusal::NotAcceptable => StatusCode::NOT_ACCEPTABLE,
        Refusal::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        Refusal::Malformed(_) | Refusal::BatchTooLarge(_) | Refusal::OverLimit(_) => {
            StatusCode::BAD_REQUEST
        }
        Refusal::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        Refusal::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
        Refusal::OverBudget(_) => StatusCode::GATEWAY_TIMEOUT,
        Refusal::SlowBody(_) => StatusCode::REQUEST_TIMEOUT,
        Refusal::MutationOverGet => StatusCode::METHOD_NOT_ALLOWED,
        Refusal::Token(_) => StatusCode::UNAUTHORIZED,
        Refusal::Introspection => StatusCode::FORBIDDEN,
        Refusal::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// How long a client should wait before retrying when the database does
/// not answer: the outage gate probes every half second.
const UNAVAILABLE_RETRY_AFTER_SECS: u32 = 1;

/// A response carrying only the refusal (no `data`: nothing was executed).
fn refuse(media: Media, r: Refusal) -> Response {
    let mut resp = (
        status(&r),
        [(header::CONTENT_TYPE, media.content_type())],
        error_body(&r).to_string(),
    )
        .into_response();
    match r {
        Refusal::RateLimited(wait) => {
            resp.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(wait.as_secs().max(1)),
            );
        }
        Refusal::MutationOverGet => {
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
        }
        Refusal::Unavailable => {
            resp.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(UNAVAILABLE_RETRY_AFTER_SECS),
            );
        }
        _ => {}
    }
    resp
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

/// Who is asking, and whose rate limit they spend.
struct Admitted {
    caller: Option<Caller>,
    /// The rate limiter's key: the token's subject, or the client address.
    key: String,
}

/// Authentication and rate limiting, shared by GET and POST: one token is
/// taken before the body is read (so unreadable floods are limited too),
/// the rest of the operations' cost once they are parsed ([`charge`]).
fn admit(s: &HttpState, headers: &HeaderMap, peer: SocketAddr) -> Result<Admitted, Refusal> {
    let caller = authenticate(s, headers)?;
    let key = match &caller {
        Some(c) => c.subject_key(),
        None => format!("ip:{}", peer.ip()),
    };
    s.rate_limiter
        .check(caller.as_ref().map(|c| c.role), &key, Instant::now())
        .map_err(Refusal::RateLimited)?;
    Ok(Admitted { caller, key })
}

/// Rate limits count operations, not HTTP requests: every operation of a
/// batch costs one, a mutation one per root field (each is a ledger
/// operation); [`admit`] already took one.
fn charge(s: &HttpState, who: &Admitted, batch: &BatchRequest) -> Result<(), Refusal> {
    let cost = |r: &async_graphql::Request| match &*s.documents.checked(&r.query) {
        Ok(parsed) => parsed.facts.get(r.operation_name.as_deref()).rate_cost,
        Err(_) => 1,
    };
    let total: usize = match batch {
        BatchRequest::Single(r) => cost(r),
        BatchRequest::Batch(v) => v.iter().map(cost).sum(),
    };
    s.rate_limiter
        .take(
            who.caller.as_ref().map(|c| c.role),
            &who.key,
            total.saturating_sub(1),
            Instant::now(),
        )
        .map_err(Refusal::RateLimited)
}

fn parse_body(bytes: &[u8]) -> Result<BatchRequest, Refusal> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| Refusal::Malformed(format!("malformed JSON: {e}")))?;
    match &value {
        Value::Array(items) => {
            if items.is_empty() {
                return Err(Refusal::Malformed("an empty batch".into()));
            }
            if items.len() > MAX_BATCH {
                return Err(Refusal::BatchTooLarge(MAX_BATCH));
            }
            items
                .iter()
                .try_for_each(well_formed)
                .map_err(Refusal::Malformed)?;
        }
        v => well_formed(v).map_err(Refusal::Malformed)?,
    }
    serde_json::from_value(value)
        .map_err(|e| Refusal::Malformed(format!("malformed GraphQL request: {e}")))
}

pub async fn post(
    State(s): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    let headers = req.headers().clone();
    let Some(media) = negotiate(&headers) else {
        return unread(refuse(Media::Json, Refusal::NotAcceptable));
    };
    let who = match admit(&s, &headers, peer) {
        Ok(w) => w,
        Err(r) => return unread(refuse(media, r)),
    };
    if !is_json_body(&headers) {
        return unread(refuse(media, Refusal::UnsupportedMediaType));
    }
    // The body is read within the request's time budget: a client that
    // trickles it holds a connection no longer than a slow query would.
    let budget = Duration::from_millis(s.app.settings.request_timeout_ms);
    let bytes = match tokio::time::timeout(budget, Bytes::from_request(req, &s)).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return unread(refuse(media, Refusal::BodyTooLarge(MAX_BODY_BYTES)))
        }
        Ok(Err(e)) => return unread(refuse(media, Refusal::Malformed(e.body_text()))),
        Err(_) => return unread(refuse(media, Refusal::SlowBody(budget))),
    };
    let batch = match parse_body(&bytes) {
        Ok(batch) => batch,
        Err(r) => return refuse(media, r),
    };
    if let Err(r) = charge(&s, &who, &batch) {
        return refuse(media, r);
    }
    execute(&s, media, who.caller, batch).await
}

/// A refusal sent before the request's body was read (whole): the
/// connection cannot carry another request (hyper closes it rather than
/// read an unknown rest), so the response says so. Without it a client
/// that pools connections sends its next request on a socket the gateway
/// is closing and gets no answer at all: the Python client's rate-limit
/// test saw `Server disconnected without sending a response` after a 429.
fn unread(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

pub async fn get(
    State(s): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    let headers = req.headers().clone();
    let query_string = req.uri().query().unwrap_or_default().to_owned();
    let browser = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    if browser && !query_string.contains("query=") {
        return super::graphiql::page();
    }
    let Some(media) = negotiate(&headers) else {
        return refuse(Media::Json, Refusal::NotAcceptable);
    };
    let who = match admit(&s, &headers, peer) {
        Ok(w) => w,
        Err(r) => return refuse(media, r),
    };
    let params: Vec<(String, String)> = match serde_urlencoded_pairs(&query_string) {
        Some(p) => p,
        None => return refuse(media, Refusal::Malformed("malformed query string".into())),
    };
    let mut obj = serde_json::Map::new();
    for (k, v) in params {
        let value = match k.as_str() {
            "query" | "operationName" => Value::String(v),
            "variables" | "extensions" => match serde_json::from_str(&v) {
                Ok(j) => j,
                Err(e) => {
                    return refuse(media, Refusal::Malformed(format!("`{k}` is not JSON: {e}")))
                }
            },
            _ => continue,
        };
        obj.insert(k, value);
    }
    let value = Value::Object(obj);
    if let Err(msg) = well_formed(&value) {
        return refuse(media, Refusal::Malformed(msg));
    }
    let request: async_graphql::Request = match serde_json::from_value(value) {
        Ok(r) => r,
        Err(e) => return refuse(media, Refusal::Malformed(e.to_string())),
    };
    // A mutation over GET would let any page a browser visits spend points.
    if is_mutation(&s, &request.query, request.operation_name.as_deref()) {
        return refuse(media, Refusal::MutationOverGet);
    }
    let batch = BatchRequest::Single(request);
    if let Err(r) = charge(&s, &who, &batch) {
        return refuse(media, r);
    }
    execute(&s, media, who.caller, batch).await
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
    let checked = s.documents.checked(query);
    let Ok(parsed) = &*checked else {
        return false;
    };
    match &parsed.doc.operations {
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
    let internal = || {
        let e = to_server_error(&ReadError::Internal("cannot serialize a response".into()));
        serde_json::json!({ "errors": [e] }).to_string()
    };
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
    let caller_role = caller.as_ref().map(|c| c.role);
    let authenticated = caller_role.is_some();
    let label = |r: &async_graphql::Request| {
        r.operation_name
            .clone()
            .or_else(|| first_operation_name(&r.query))
    };
    let names: Vec<Option<String>> = match &batch {
        BatchRequest::Single(r) => vec![label(r)],
        BatchRequest::Batch(v) => v.iter().map(label).collect(),
    };
    // One span per operation (a trace shows which statements it ran).
    let op_span = |n: &Option<String>| {
        tracing::info_span!(
            "graphql operation",
            operation = n.as_deref().unwrap_or("anonymous")
        )
    };
    let run = async {
        match batch {
            BatchRequest::Single(r) => vec![
                execute_one(s, prepare(s, r, &caller))
                    .instrument(op_span(&names[0]))
                    .await,
            ],
            BatchRequest::Batch(v) => {
                v.into_iter()
                    .zip(&names)
                    .map(|(r, n)| execute_one(s, prepare(s, r, &caller)).instrument(op_span(n)))
                    .collect::<FuturesOrdered<_>>()
                    .collect()
                    .await
            }
        }
    };
    let budget = Duration::from_millis(s.app.settings.request_timeout_ms);
    let health = s.app.store.health();
    // Past the budget, or once the database stops answering, the execution
    // future is dropped: its queries are cancelled and an open transaction
    // rolls back (a mutation is then either committed before or not at
    // all; a retry with its key tells).
    let executed = if health.is_down() {
        Err(Refusal::Unavailable)
    } else {
        tokio::select! {
            r = tokio::time::timeout(budget, run) => r.map_err(|_| Refusal::OverBudget(budget)),
            () = health.went_down() => Err(Refusal::Unavailable),
        }
    };
    let mut responses = match executed {
        Ok(r) => r,
        Err(refusal) => {
            for n in &names {
                s.app.metrics.request(
                    n.as_deref(),
                    authenticated,
                    refusal.code().as_str(),
                    started.elapsed(),
                );
            }
            return refuse(media, refusal);
        }
    };
    let single = names.len() == 1;
    let mut bodies = Vec::with_capacity(responses.len());
    let mut any_request_error = false;
    let mut unavailable = false;
    let role = caller_role.map_or("anonymous", role_name);
    for (r, name) in responses.iter_mut().zip(&names) {
        let request_error = assign_codes(r);
        any_request_error |= request_error;
        let (outcome, elapsed) = (outcome(r), started.elapsed());
        unavailable |= outcome == Code::Unavailable.as_str();
        s.app
            .metrics
            .request(name.as_deref(), authenticated, outcome, elapsed);
        // One line per operation (the request's span adds its request id).
        tracing::info!(
            operation = name.as_deref().unwrap_or("anonymous"),
            role,
            outcome,
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            "graphql operation"
        );
        bodies.push(response_json(r, request_error));
    }
    let body = if single {
        bodies.pop().unwrap_or_default()
    } else {
        format!("[{}]", bodies.join(","))
    };
    let status = if unavailable {
        // Whatever the media type: a proxy or client that knows nothing of
        // GraphQL should still see "come back shortly".
        StatusCode::SERVICE_UNAVAILABLE
    } else if single {
        media.status(any_request_error)
    } else {
        StatusCode::OK
    };
    let content_type = if single { media.content_type() } else { JSON };
    let mut resp = (status, [(header::CONTENT_TYPE, content_type)], body).into_response();
    if unavailable {
        resp.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(UNAVAILABLE_RETRY_AFTER_SECS),
        );
    }
    resp
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
