//! The HTTP surface: `/graphql` (POST, GET, GraphiQL, WebSocket), `/healthz`, `/readyz`.

use async_graphql::http::GraphiQLSource;
use async_graphql::http::ALL_WEBSOCKET_PROTOCOLS;
use async_graphql::parser::types::{DocumentOperations, OperationType};
use async_graphql::{BatchRequest, BatchResponse, ParseRequestError, ServerError};
use async_graphql_axum::{GraphQLBatchRequest, GraphQLProtocol, GraphQLWebSocket};
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::json;

use crate::auth::{AuthError, Caller};
use crate::domain::{Code, Coded};
use crate::graphql::AppSchema;
use crate::state::AppState;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// Most operations in one batched request.
pub const MAX_BATCH: usize = 10;

#[derive(Clone)]
pub struct HttpState {
    pub app: AppState,
    pub schema: AppSchema,
}

pub fn router(app: AppState, schema: AppSchema) -> Router {
    Router::new()
        .route("/graphql", get(graphql_get).post(graphql_post))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(HttpState { app, schema })
}

async fn readyz(State(s): State<HttpState>) -> Response {
    match s.app.db.ping().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "database not reachable");
            (StatusCode::SERVICE_UNAVAILABLE, "database unreachable").into_response()
        }
    }
}

fn error_body(code: Code, message: &str) -> serde_json::Value {
    json!({ "errors": [{ "message": message, "extensions": { "code": code.as_str() } }] })
}

fn json_error(status: StatusCode, code: Code, message: &str) -> Response {
    let mut r = (status, axum::Json(error_body(code, message))).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// Request bodies that cannot be read as GraphQL get a GraphQL-shaped error.
pub struct BadRequest(ParseRequestError);

impl From<ParseRequestError> for BadRequest {
    fn from(e: ParseRequestError) -> Self {
        BadRequest(e)
    }
}

impl IntoResponse for BadRequest {
    fn into_response(self) -> Response {
        match self.0 {
            ParseRequestError::PayloadTooLarge => json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                Code::LimitExceeded,
                "request body too large",
            ),
            e => json_error(
                StatusCode::BAD_REQUEST,
                Code::InvalidInput,
                &format!("malformed GraphQL request: {e}"),
            ),
        }
    }
}

/// `None` for an anonymous request; an error for a bad or expired token.
fn authenticate(app: &AppState, headers: &HeaderMap) -> Result<Option<Caller>, AuthError> {
    match headers.get(header::AUTHORIZATION) {
        None => Ok(None),
        Some(v) => {
            let v = v.to_str().map_err(|_| AuthError::Malformed)?;
            app.keys.verify_header(v).map(Some)
        }
    }
}

fn wants_graphql_response(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/graphql-response+json"))
}

async fn graphql_post(
    State(s): State<HttpState>,
    headers: HeaderMap,
    req: Result<GraphQLBatchRequest<BadRequest>, BadRequest>,
) -> Response {
    let batch = match req {
        Ok(r) => r.into_inner(),
        Err(e) => return e.into_response(),
    };
    execute(&s, &headers, batch).await
}

async fn graphql_get(State(s): State<HttpState>, req: Request) -> Response {
    if req.headers().contains_key(header::SEC_WEBSOCKET_PROTOCOL) {
        return websocket(s, req).await;
    }
    let headers = req.headers().clone();
    let browser = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    if browser && !req.uri().query().unwrap_or_default().contains("query=") {
        return Html(GraphiQLSource::build().endpoint("/graphql").finish()).into_response();
    }
    let batch = match GraphQLBatchRequest::<BadRequest>::from_request(req, &s).await {
        Ok(r) => r.into_inner(),
        Err(e) => return e.into_response(),
    };
    // A mutation over GET would let any page a browser visits spend points.
    if let BatchRequest::Single(r) = &batch {
        if is_mutation(&r.query, r.operation_name.as_deref()) {
            let mut resp = json_error(
                StatusCode::METHOD_NOT_ALLOWED,
                Code::InvalidInput,
                "mutations must be sent with POST",
            );
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
            return resp;
        }
    }
    execute(&s, &headers, batch).await
}

/// The WebSocket transport (`graphql-transport-ws` and legacy `graphql-ws`)
/// on the same path and the same schema. The caller authenticates in the
/// `connection_init` payload: `{"authorization": "Bearer <token>"}`.
async fn websocket(s: HttpState, req: Request) -> Response {
    let (mut parts, _) = req.into_parts();
    let protocol = match GraphQLProtocol::from_request_parts(&mut parts, &s).await {
        Ok(p) => p,
        Err(status) => return status.into_response(),
    };
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &s).await {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    let HttpState { app, schema } = s;
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |socket| {
            GraphQLWebSocket::new(socket, schema, protocol)
                .on_connection_init(move |payload| async move {
                    let header = payload
                        .get("authorization")
                        .or_else(|| payload.get("Authorization"))
                        .and_then(|v| v.as_str())
                        .ok_or_else(|| crate::graphql::error::to_gql(AuthError::Malformed))?;
                    let caller = app
                        .keys
                        .verify_header(header)
                        .map_err(crate::graphql::error::to_gql)?;
                    let mut data = async_graphql::Data::default();
                    data.insert(caller);
                    crate::graphql::connection_loaders(&app, &mut data);
                    Ok(data)
                })
                .serve()
        })
}

fn is_mutation(query: &str, operation: Option<&str>) -> bool {
    let Ok(doc) = async_graphql::parser::parse_query(query) else {
        return false;
    };
    match doc.operations {
        DocumentOperations::Single(op) => op.node.ty == OperationType::Mutation,
        DocumentOperations::Multiple(ops) => ops.iter().any(|(name, op)| {
            operation.is_none_or(|o| o == name.as_str()) && op.node.ty == OperationType::Mutation
        }),
    }
}

async fn execute(s: &HttpState, headers: &HeaderMap, batch: BatchRequest) -> Response {
    let caller = match authenticate(&s.app, headers) {
        Ok(c) => c,
        Err(e) => return json_error(StatusCode::UNAUTHORIZED, e.code(), &e.to_string()),
    };
    if let BatchRequest::Batch(v) = &batch {
        if v.len() > MAX_BATCH {
            return json_error(
                StatusCode::BAD_REQUEST,
                Code::LimitExceeded,
                &format!("at most {MAX_BATCH} operations per batch"),
            );
        }
    }
    let is_admin = caller
        .as_ref()
        .is_some_and(|c| c.role == crate::auth::Role::Admin);
    let batch = match batch {
        BatchRequest::Single(r) => BatchRequest::Single(prepare(&s.app, r, &caller, is_admin)),
        BatchRequest::Batch(v) => BatchRequest::Batch(
            v.into_iter()
                .map(|r| prepare(&s.app, r, &caller, is_admin))
                .collect(),
        ),
    };
    let mut resp = s.schema.execute_batch(batch).await;
    let request_error = match &mut resp {
        BatchResponse::Single(r) => assign_codes(r),
        BatchResponse::Batch(v) => {
            // Every response gets its codes; no short-circuit.
            let mut any = false;
            for r in v.iter_mut() {
                any |= assign_codes(r);
            }
            any
        }
    };
    let graphql_media = wants_graphql_response(headers);
    let status = if graphql_media && request_error {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    let body = serde_json::to_string(&resp)
        .unwrap_or_else(|_| error_body(Code::Internal, "internal error").to_string());
    let content_type = if graphql_media {
        "application/graphql-response+json"
    } else {
        "application/json"
    };
    (status, [(header::CONTENT_TYPE, content_type)], body).into_response()
}

fn prepare(
    app: &AppState,
    r: async_graphql::Request,
    caller: &Option<Caller>,
    is_admin: bool,
) -> async_graphql::Request {
    let mut r = crate::graphql::request_loaders(app, r);
    if let Some(c) = caller {
        r = r.data(c.clone());
    }
    if !is_admin {
        r = r.disable_introspection();
    }
    r
}

/// Gives every error a code. Errors raised before execution (syntax,
/// validation, variable coercion, limits) carry none from async-graphql;
/// they are the client's fault. Returns whether the request failed before
/// execution (no `data`).
fn assign_codes(r: &mut async_graphql::Response) -> bool {
    // Errors of a request that never executed have no path; an execution
    // error that nulls `data` (a failed non-null root field) has one.
    let request_error = matches!(r.data, async_graphql::Value::Null)
        && !r.errors.is_empty()
        && r.errors.iter().all(|e| e.path.is_empty());
    for e in &mut r.errors {
        if has_code(e) {
            continue;
        }
        let code = if e.message.contains("nested too deep") || e.message.contains("too complex") {
            Code::LimitExceeded
        } else if request_error
            || e.message.starts_with("Failed to parse")
            || e.message.starts_with("Invalid value")
        {
            // Input coercion of variables happens when the field runs, so
            // these carry a path; they are still the client's input.
            Code::InvalidInput
        } else {
            Code::Internal
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
