//! The WebSocket transport on `/graphql`, same schema as HTTP. The caller
//! authenticates in the `connection_init` payload
//! (`{"authorization": "Bearer <token>"}`); the connection ends when the
//! token expires. Connections are tracked so shutdown closes them with 1001.
//!
//! One task per connection reads client messages and writes every frame;
//! each operation runs in its own task and hands frames to the connection
//! through a bounded queue. A client that stops reading therefore stalls
//! only its own operations, whose broker queues then overflow into resyncs:
//! the ledger and other subscribers never wait for it.

mod protocol;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, FromRequestParts, Request};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{SplitSink, StreamExt};
use futures_util::SinkExt;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};

use super::operation::{assign_codes, error_body, prepare, well_formed};
use super::rate_limit::Bucket;
use super::HttpState;
use crate::auth::{AuthError, Caller};
use crate::errors::Refusal;
use crate::places::Place;
use protocol::{ClientMessage, Close, Protocol};

/// Largest client message accepted (the HTTP body limit).
const MAX_MESSAGE: usize = 256 * 1024;
/// Read buffer per socket (a bigger message still arrives, in pieces).
const SOCKET_BUFFER: usize = 4 * 1024;
/// Operations one connection may run at once.
const MAX_OPERATIONS: usize = 100;
/// Frames waiting for the socket, per connection.
const OUT_QUEUE: usize = 64;
/// A write the client does not take within this time closes the socket.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn upgrade(s: HttpState, req: Request) -> Response {
    let (mut parts, _) = req.into_parts();
    let offered = parts
        .headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let Some(protocol) = Protocol::negotiate(offered) else {
        return (
            StatusCode::BAD_REQUEST,
            "WebSocket subprotocol must be graphql-transport-ws or graphql-ws",
        )
            .into_response();
    };
    // Browsers send their page's origin on a WebSocket upgrade and do not
    // apply CORS to it: a page of another site must not ride a user's
    // connection. Refused unless same-origin or configured.
    if !super::origin_allowed(&s, &parts.headers) {
        return (
            StatusCode::FORBIDDEN,
            "WebSocket upgrades are refused from this origin (GATEWAY_CORS_ORIGINS)",
        )
            .into_response();
    }
    // Until its `connection_init` is accepted a socket holds a place of
    // the small anonymous budget (per address and in all), never one of
    // the authenticated callers' places.
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
    let Ok(anonymous) = s.ws_anonymous.take(peer) else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "5")],
            "too many WebSockets waiting to authenticate; try again later",
        )
            .into_response();
    };
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &s).await {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    upgrade
        .protocols([protocol.name()])
        .max_message_size(MAX_MESSAGE)
        // tungstenite's default 128 KiB read and write buffers per socket
        // would cost 1.25 GiB at 5,000 subscribers; frames here are small.
        .read_buffer_size(SOCKET_BUFFER)
        .write_buffer_size(0)
        .on_upgrade(move |socket| {
            let tracker = s.connections.clone();
            tracker.track_future(Connection::new(s, protocol, anonymous).run(socket))
        })
}

/// A frame from an operation task to the socket.
enum Out {
    Frame(String),
    /// The operation's last frames; its id is free again after them.
    Finished {
        id: String,
        frames: Vec<String>,
    },
}

type Sink = SplitSink<WebSocket, Message>;

struct Connection {
    s: HttpState,
    protocol: Protocol,
    init_received: bool,
    caller: Option<Caller>,
    /// The socket's place while it has not authenticated (per address).
    anonymous: Option<Place<IpAddr>>,
    /// The caller's place among authenticated sockets (per subject and in
    /// all); released on drop.
    seat: Option<Place<String>>,
    operations: HashMap<String, AbortHandle>,
    tasks: JoinSet<()>,
    /// The connection's own message rate (`WS_MESSAGE_RATE`).
    messages: Bucket,
}

impl Connection {
    fn new(s: HttpState, protocol: Protocol, anonymous: Place<IpAddr>) -> Self {
        let rate = s.app.settings.ws_message_rate;
        Connection {
            s,
            protocol,
            init_received: false,
            caller: None,
            anonymous: Some(anonymous),
            seat: None,
            operations: HashMap::new(),
            tasks: JoinSet::new(),
            messages: Bucket::full(rate, Instant::now()),
        }
    }

    async fn run(mut self, socket: WebSocket) {
        let (mut sink, mut stream) = socket.split();
        let (tx, mut rx) = mpsc::channel::<Out>(OUT_QUEUE);
        let settings = &self.s.app.settings;
        let init_deadline = tokio::time::sleep(Duration::from_millis(settings.ws_init_timeout_ms));
        tokio::pin!(init_deadline);
        let keep_alive_every = Duration::from_secs(settings.ws_keepalive_secs.max(1));
        let mut keep_alive = tokio::time::interval_at(
            tokio::time::Instant::now() + keep_alive_every,
            keep_alive_every,
        );
        let keep_alive_on = settings.ws_keepalive_secs > 0;
        let shutdown = self.s.app.shutdown.clone();
        // Armed once, when `connection_init` is accepted.
        let expiry = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(expiry);
        let mut expiry_armed = false;
        // A revocation (DESIGN.md section 5) reaches this instance's list
        // within its refresh interval; open sockets look at that pace too.
        let mut revocation_check = tokio::time::interval(crate::auth::REVOCATION_REFRESH);
        revocation_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let close = loop {
            // Finished and cancelled operations are freed at once, not
            // when the socket closes.
            while self.tasks.try_join_next().is_some() {}
            if !expiry_armed {
                if let Some(c) = &self.caller {
                    expiry.as_mut().reset(token_deadline(c));
                    expiry_armed = true;
                }
            }
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break Some(Close::GoingAway),
                msg = stream.next() => match msg {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break None,
                    Some(Ok(Message::Text(text))) => {
                        let rate = self.s.app.settings.ws_message_rate;
                        if rate > 0.0 && self.messages.take(rate, 1.0, Instant::now()).is_err() {
                            break Some(Close::TooFast);
                        }
                        if let Err(close) = self.handle(text.as_str(), &tx, &mut sink).await {
                            break close;
                        }
                    }
                    Some(Ok(Message::Binary(_))) => {
                        break Some(Close::BadMessage("binary frames are not supported".into()))
                    }
                    Some(Ok(_)) => {} // WebSocket-level ping/pong
                },
                Some(out) = rx.recv() => {
                    let frames = match out {
                        Out::Frame(f) => vec![f],
                        // Nothing more for an operation the client completed.
                        Out::Finished { id, frames } => match self.operations.remove(&id) {
                            Some(_) => frames,
                            None => continue,
                        },
                    };
                    // A client that stops reading cannot hold the socket
                    // (or outlive its token) by stalling a write.
                    let limit = write_deadline(expiry_armed.then(|| expiry.deadline()));
                    match tokio::time::timeout_at(limit, send_all(&mut sink, frames)).await {
                        Ok(Ok(())) => {}
                        _ => break None,
                    }
                }
                _ = &mut init_deadline, if !self.init_received => break Some(Close::InitTimeout),
                _ = keep_alive.tick(), if keep_alive_on && self.caller.is_some() => {
                    let limit = write_deadline(expiry_armed.then(|| expiry.deadline()));
                    let ka = send(&mut sink, protocol::keep_alive(self.protocol));
                    match tokio::time::timeout_at(limit, ka).await {
                        Ok(Ok(())) => {}
                        _ => break None,
                    }
                }
                _ = &mut expiry, if expiry_armed => break Some(Close::Forbidden("token expired".into())),
                _ = revocation_check.tick(), if self.caller.as_ref().is_some_and(|c| c.token_id.is_some()) => {
                    if self.caller.as_ref().is_some_and(|c| self.s.app.keys.is_revoked(c)) {
                        break Some(Close::Forbidden("token revoked".into()));
                    }
                }
            }
        };
        self.tasks.abort_all();
        // Every write below is bounded too: a client that stopped reading
        // must not hold the connection open through its close.
        let bound = Duration::from_secs(1);
        if let Some(close) = close {
            let frame = sink.send(Message::Close(Some(CloseFrame {
                code: close.code(),
                reason: close.reason().into(),
            })));
            let _ = tokio::time::timeout(bound, frame).await;
            // The closing handshake: what the client still sends is read
            // and dropped until its own close (a second at most), so that
            // unread data does not turn the close frame into a reset.
            let _ = tokio::time::timeout(bound, async {
                while let Some(Ok(m)) = stream.next().await {
                    if matches!(m, Message::Close(_)) {
                        break;
                    }
                }
            })
            .await;
        }
        let _ = tokio::time::timeout(bound, sink.close()).await;
    }

    /// One client message; `Err` closes the connection (`None`: silently).
    async fn handle(
        &mut self,
        text: &str,
        tx: &mpsc::Sender<Out>,
        sink: &mut Sink,
    ) -> Result<(), Option<Close>> {
        let msg =
            protocol::parse(self.protocol, text).map_err(|why| Some(Close::BadMessage(why)))?;
        match msg {
            ClientMessage::Init(payload) => {
                if self.init_received {
                    return Err(Some(Close::TooManyInits));
                }
                self.init_received = true;
                match self.authenticate(&payload) {
                    Ok(caller) => {
                        let seat = self
                            .s
                            .ws_subjects
                            .take(caller.subject_key())
                            .map_err(|_| Some(Close::TooManySockets))?;
                        self.seat = Some(seat);
                        self.anonymous = None;
                        self.caller = Some(caller);
                        send(sink, protocol::ack()).await.map_err(|_| None)?;
                        if self.protocol == Protocol::LegacyWs {
                            send(sink, protocol::keep_alive(self.protocol))
                                .await
                                .map_err(|_| None)?;
                        }
                    }
                    Err(e) => {
                        if self.protocol == Protocol::LegacyWs {
                            let _ = send(sink, protocol::connection_error(&e.to_string())).await;
                        }
                        return Err(Some(Close::Forbidden(e.to_string())));
                    }
                }
            }
            ClientMessage::Ping => send(sink, protocol::pong()).await.map_err(|_| None)?,
            ClientMessage::Pong => {}
            ClientMessage::Subscribe { id, payload } => {
                let Some(caller) = self.caller.clone() else {
                    return Err(Some(Close::Unauthorized));
                };
                if self.operations.contains_key(&id) {
                    return Err(Some(Close::Duplicate(id)));
                }
                let request = parse_request(payload).map_err(|why| Some(Close::BadMessage(why)))?;
                if self.operations.len() >= MAX_OPERATIONS {
                    let errors = error_body(&Refusal::OverLimit(format!(
                        "at most {MAX_OPERATIONS} operations per connection"
                    )))["errors"]
                        .to_string();
                    send_all(sink, protocol::failed(self.protocol, &id, &errors))
                        .await
                        .map_err(|_| None)?;
                    return Ok(());
                }
                // The same limits as HTTP: the subject's rate (an operation
                // costs one, a mutation one per root field) and, for
                // queries and mutations, the request time budget.
                let facts = match &*self.s.documents.checked(&request.query) {
                    Ok(parsed) => parsed.facts.get(request.operation_name.as_deref()),
                    Err(_) => Default::default(),
                };
                let (cost, subscription) = (facts.rate_cost, facts.subscription);
                if let Err(wait) = self.s.rate_limiter.take(
                    Some(caller.role),
                    &caller.subject_key(),
                    cost,
                    Instant::now(),
                ) {
                    let errors = error_body(&Refusal::RateLimited(wait))["errors"].to_string();
                    send_all(sink, protocol::failed(self.protocol, &id, &errors))
                        .await
                        .map_err(|_| None)?;
                    return Ok(());
                }
                let budget = (!subscription)
                    .then(|| Duration::from_millis(self.s.app.settings.request_timeout_ms));
                let request = match prepare(&self.s, request, &Some(caller)) {
                    Ok(r) => r,
                    Err(e) => {
                        let mut r = async_graphql::Response::from_errors(vec![e]);
                        assign_codes(&mut r);
                        send_all(sink, failed(self.protocol, &id, &r))
                            .await
                            .map_err(|_| None)?;
                        return Ok(());
                    }
                };
                let handle = self.tasks.spawn(operate(
                    self.s.schema.clone(),
                    self.protocol,
                    id.clone(),
                    request,
                    tx.clone(),
                    budget,
                ));
                self.operations.insert(id, handle);
            }
            ClientMessage::Complete { id } => {
                if let Some(handle) = self.operations.remove(&id) {
                    handle.abort();
                    if self.protocol == Protocol::LegacyWs {
                        send(sink, protocol::complete(&id))
                            .await
                            .map_err(|_| None)?;
                    }
                }
            }
            ClientMessage::Terminate => return Err(None),
        }
        Ok(())
    }

    /// The token of `connection_init`: `{"authorization": "Bearer …"}`, or
    /// as Apollo clients send it, `{"headers": {"Authorization": "Bearer …"}}`.
    fn authenticate(&self, payload: &Value) -> Result<Caller, AuthError> {
        let field = |v: &Value| {
            v.get("authorization")
                .or_else(|| v.get("Authorization"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let header = field(payload)
            .or_else(|| payload.get("headers").and_then(field))
            .ok_or(AuthError::MissingInit)?;
        self.s.app.keys.verify_header(&header)
    }
}

/// When the caller's token expires, on the runtime's clock, to the
/// millisecond (`exp` is whole seconds; counting from whole seconds of now
/// fired up to a second late).
fn token_deadline(c: &Caller) -> tokio::time::Instant {
    let left_ms = c
        .expires_at
        .saturating_mul(1000)
        .saturating_sub(chrono::Utc::now().timestamp_millis());
    tokio::time::Instant::now() + Duration::from_millis(u64::try_from(left_ms).unwrap_or(0))
}

/// How long one write to the socket may take: `WRITE_TIMEOUT`, and never
/// past the token's expiry.
fn write_deadline(expiry: Option<tokio::time::Instant>) -> tokio::time::Instant {
    let limit = tokio::time::Instant::now() + WRITE_TIMEOUT;
    expiry.map_or(limit, |e| e.min(limit))
}

fn parse_request(payload: Value) -> Result<async_graphql::Request, String> {
    well_formed(&payload)?;
    serde_json::from_value(payload).map_err(|e| format!("invalid request: {e}"))
}

/// The frames ending operation `id` that failed as a whole (`r` carries
/// only errors, codes assigned).
fn failed(protocol: Protocol, id: &str, r: &async_graphql::Response) -> Vec<String> {
    let errors = serde_json::to_string(&r.errors).unwrap_or_else(|_| "[]".into());
    protocol::failed(protocol, id, &errors)
}

/// Runs one operation and hands its frames to the connection. A first
/// result without data is the operation failing as a whole (invalid
/// document, refused subscription): an `error` message, not `next`.
async fn operate(
    schema: crate::graphql::AppSchema,
    protocol: Protocol,
    id: String,
    request: async_graphql::Request,
    tx: mpsc::Sender<Out>,
    budget: Option<Duration>,
) {
    let Some(budget) = budget else {
        return run_operation(schema, protocol, id, request, tx).await;
    };
    let run = run_operation(schema, protocol, id.clone(), request, tx.clone());
    if tokio::time::timeout(budget, run).await.is_err() {
        // Past the budget the execution is dropped, as over HTTP: its
        // queries are cancelled and an open transaction rolls back.
        let errors = error_body(&Refusal::OverBudget(budget))["errors"].to_string();
        let frames = protocol::failed(protocol, &id, &errors);
        let _ = tx.send(Out::Finished { id, frames }).await;
    }
}

async fn run_operation(
    schema: crate::graphql::AppSchema,
    protocol: Protocol,
    id: String,
    request: async_graphql::Request,
    tx: mpsc::Sender<Out>,
) {
    let mut results = schema.execute_stream(request);
    let mut first = true;
    while let Some(mut r) = results.next().await {
        assign_codes(&mut r);
        if first && matches!(r.data, async_graphql::Value::Null) && !r.errors.is_empty() {
            let frames = failed(protocol, &id, &r);
            let _ = tx.send(Out::Finished { id, frames }).await;
            return;
        }
        first = false;
        let body = match serde_json::to_string(&r) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "cannot serialize a subscription result");
                break;
            }
        };
        if tx
            .send(Out::Frame(protocol::next(protocol, &id, &body)))
            .await
            .is_err()
        {
            return;
        }
    }
    let frames = vec![protocol::complete(&id)];
    let _ = tx.send(Out::Finished { id, frames }).await;
}

async fn send(sink: &mut Sink, text: String) -> Result<(), axum::Error> {
    sink.send(Message::Text(text.into())).await
}

async fn send_all(sink: &mut Sink, frames: Vec<String>) -> Result<(), axum::Error> {
    for f in frames {
        sink.feed(Message::Text(f.into())).await?;
    }
    sink.flush().await
}
