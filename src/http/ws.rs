//! The WebSocket transport (`graphql-transport-ws` and legacy `graphql-ws`)
//! on `/graphql`, same schema. The caller authenticates in the
//! `connection_init` payload: `{"authorization": "Bearer <token>"}`.
//! Connections are tracked so shutdown can close them with a close frame.

use async_graphql::http::ALL_WEBSOCKET_PROTOCOLS;
use async_graphql_axum::{GraphQLProtocol, GraphQLWebSocket};
use axum::extract::ws::{CloseFrame, Message, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};

use super::HttpState;
use crate::auth::AuthError;
use crate::graphql::error::to_gql;

/// Close code 1001: the server is going away.
const GOING_AWAY: u16 = 1001;

pub async fn upgrade(s: HttpState, req: Request) -> Response {
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
            let tracker = app.connections.clone();
            let shutdown = app.shutdown.clone();
            tracker.track_future(async move {
                let (mut sink, stream) = socket.split();
                let stream = stream.take_until(shutdown.clone().cancelled_owned());
                let init_app = app.clone();
                GraphQLWebSocket::new_with_pair(&mut sink, stream, schema, protocol)
                    .on_connection_init(move |payload| async move {
                        let header = payload
                            .get("authorization")
                            .or_else(|| payload.get("Authorization"))
                            .and_then(|v| v.as_str())
                            .ok_or_else(|| to_gql(AuthError::Malformed))?;
                        let caller = init_app.keys.verify_header(header).map_err(to_gql)?;
                        let mut data = async_graphql::Data::default();
                        data.insert(caller);
                        crate::graphql::connection_loaders(&init_app, &mut data);
                        Ok(data)
                    })
                    .serve()
                    .await;
                if shutdown.is_cancelled() {
                    let _ = sink
                        .send(Message::Close(Some(CloseFrame {
                            code: GOING_AWAY,
                            reason: "server shutting down".into(),
                        })))
                        .await;
                }
            })
        })
}
