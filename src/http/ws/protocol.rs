//! The two GraphQL-over-WebSocket subprotocols: their names, messages and
//! close codes.
//!
//! - `graphql-transport-ws` (github.com/enisdenjo/graphql-ws, PROTOCOL.md):
//!   `connection_init` / `connection_ack`, `ping` / `pong`, `subscribe`,
//!   `next`, `error`, `complete`; protocol errors close the socket with a
//!   4xxx code.
//! - legacy `graphql-ws` (apollographql/subscriptions-transport-ws):
//!   `connection_init` / `connection_ack` / `connection_error`, `ka`,
//!   `start`, `data`, `error`, `complete`, `stop`, `connection_terminate`.

use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    TransportWs,
    LegacyWs,
}

impl Protocol {
    /// Picks from the client's `Sec-WebSocket-Protocol` list, preferring the
    /// current protocol when both are offered.
    pub fn negotiate(offered: &str) -> Option<Protocol> {
        let names: Vec<&str> = offered.split(',').map(str::trim).collect();
        if names
            .iter()
            .any(|n| n.eq_ignore_ascii_case("graphql-transport-ws"))
        {
            Some(Protocol::TransportWs)
        } else if names.iter().any(|n| n.eq_ignore_ascii_case("graphql-ws")) {
            Some(Protocol::LegacyWs)
        } else {
            None
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Protocol::TransportWs => "graphql-transport-ws",
            Protocol::LegacyWs => "graphql-ws",
        }
    }
}

/// Why the server closes a connection, with the code each stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Close {
    /// 4400: a message the protocol does not allow.
    BadMessage(String),
    /// 4401: `subscribe` before the connection was acknowledged.
    Unauthorized,
    /// 4403: `connection_init` refused, or the token expired.
    Forbidden(String),
    /// 4408: no `connection_init` in time.
    InitTimeout,
    /// 4409: a `subscribe` reusing the id of a running operation.
    Duplicate(String),
    /// 4429: a second `connection_init`.
    TooManyInits,
    /// 1001: the server is shutting down.
    GoingAway,
    /// 1008: the client sends messages faster than `WS_MESSAGE_RATE`.
    TooFast,
    /// 1013: the token's subject already holds `WS_MAX_PER_SUBJECT` sockets.
    TooManySockets,
}

/// Close reasons are limited to 123 bytes by RFC 6455.
const MAX_REASON: usize = 123;

impl Close {
    pub fn code(&self) -> u16 {
        match self {
            Close::BadMessage(_) => 4400,
            Close::Unauthorized => 4401,
            Close::Forbidden(_) => 4403,
            Close::InitTimeout => 4408,
            Close::Duplicate(_) => 4409,
            Close::TooManyInits => 4429,
            Close::GoingAway => 1001,
            Close::TooFast => 1008,
            Close::TooManySockets => 1013,
        }
    }

    pub fn reason(&self) -> String {
        let text = match self {
            Close::BadMessage(why) => format!("Bad message: {why}"),
            Close::Unauthorized => "Unauthorized".to_owned(),
            Close::Forbidden(why) => format!("Forbidden: {why}"),
            Close::InitTimeout => "Connection initialisation timeout".to_owned(),
            Close::Duplicate(id) => format!("Subscriber for {id} already exists"),
            Close::TooManyInits => "Too many initialisation requests".to_owned(),
            Close::GoingAway => "server shutting down".to_owned(),
            Close::TooFast => "too many messages: slow down".to_owned(),
            Close::TooManySockets => {
                "too many WebSockets for this token; try again later".to_owned()
            }
        };
        truncate(text, MAX_REASON)
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// A client message, already checked against the protocol in use.
#[derive(Debug)]
pub enum ClientMessage {
    Init(Value),
    Ping,
    Pong,
    Subscribe { id: String, payload: Value },
    Complete { id: String },
    Terminate,
}

/// Reads one text frame; the error is the 4400 reason.
pub fn parse(protocol: Protocol, text: &str) -> Result<ClientMessage, String> {
    let v: Value = serde_json::from_str(text).map_err(|_| "not a JSON object".to_owned())?;
    let Value::Object(mut o) = v else {
        return Err("not a JSON object".into());
    };
    let kind = o
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| "`type` missing".to_owned())?
        .to_owned();
    let id = |o: &serde_json::Map<String, Value>| -> Result<String, String> {
        match o.get("id").and_then(Value::as_str) {
            Some(id) if !id.is_empty() && id.len() <= 128 => Ok(id.to_owned()),
            _ => Err(format!("`{kind}` needs an `id` string of 1 to 128 bytes")),
        }
    };
    let payload = o.remove("payload");
    use Protocol::*;
    Ok(match (protocol, kind.as_str()) {
        (_, "connection_init") => match payload {
            None | Some(Value::Null) => ClientMessage::Init(Value::Object(Default::default())),
            Some(p @ Value::Object(_)) => ClientMessage::Init(p),
            Some(_) => return Err("`connection_init` payload must be an object".into()),
        },
        (TransportWs, "ping") => ClientMessage::Ping,
        (TransportWs, "pong") => ClientMessage::Pong,
        (TransportWs, "subscribe") | (LegacyWs, "start") => {
            let id = id(&o)?;
            match payload {
                Some(p @ Value::Object(_)) => ClientMessage::Subscribe { id, payload: p },
                _ => return Err(format!("`{kind}` needs a payload object")),
            }
        }
        (TransportWs, "complete") | (LegacyWs, "stop") => ClientMessage::Complete { id: id(&o)? },
        (LegacyWs, "connection_terminate") => ClientMessage::Terminate,
        _ => {
            return Err(format!(
                "unknown message type `{}`",
                truncate(kind.clone(), 40)
            ))
        }
    })
}

pub fn ack() -> String {
    json!({"type": "connection_ack"}).to_string()
}

pub fn pong() -> String {
    json!({"type": "pong"}).to_string()
}

/// The server's keep-alive: `ping` (the client answers `pong`) or legacy `ka`.
pub fn keep_alive(protocol: Protocol) -> String {
    match protocol {
        Protocol::TransportWs => json!({"type": "ping"}).to_string(),
        Protocol::LegacyWs => json!({"type": "ka"}).to_string(),
    }
}

/// Legacy only: the init was refused (sent before closing).
pub fn connection_error(message: &str) -> String {
    json!({"type": "connection_error", "payload": {"message": message}}).to_string()
}

/// One result of an operation (`response` is a serialized GraphQL response).
pub fn next(protocol: Protocol, id: &str, response: &str) -> String {
    let kind = match protocol {
        Protocol::TransportWs => "next",
        Protocol::LegacyWs => "data",
    };
    format!(
        r#"{{"type":"{kind}","id":{},"payload":{response}}}"#,
        Value::String(id.to_owned())
    )
}

/// The operation failed as a whole (`errors` is a serialized error array).
/// graphql-transport-ws: `error`, which ends the operation. Legacy: the
/// errors as a result, followed by `complete`.
pub fn failed(protocol: Protocol, id: &str, errors: &str) -> Vec<String> {
    match protocol {
        Protocol::TransportWs => vec![format!(
            r#"{{"type":"error","id":{},"payload":{errors}}}"#,
            Value::String(id.to_owned())
        )],
        Protocol::LegacyWs => vec![
            next(
                protocol,
                id,
                &format!(r#"{{"data":null,"errors":{errors}}}"#),
            ),
            complete(id),
        ],
    }
}

pub fn complete(id: &str) -> String {
    json!({"type": "complete", "id": id}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_prefers_the_current_protocol() {
        assert_eq!(
            Protocol::negotiate("graphql-ws, graphql-transport-ws"),
            Some(Protocol::TransportWs)
        );
        assert_eq!(Protocol::negotiate("graphql-ws"), Some(Protocol::LegacyWs));
        assert_eq!(Protocol::negotiate("mqtt"), None);
    }

    #[test]
    fn close_reasons_fit_in_123_bytes_on_a_char_boundary() {
        let c = Close::Duplicate("界".repeat(100));
        let r = c.reason();
        assert!(r.len() <= 123);
        assert!(r.starts_with("Subscriber for 界"));
    }

    #[test]
    fn messages_of_the_other_protocol_are_refused() {
        assert!(parse(
            Protocol::TransportWs,
            r#"{"type":"start","id":"1","payload":{}}"#
        )
        .is_err());
        assert!(parse(
            Protocol::LegacyWs,
            r#"{"type":"subscribe","id":"1","payload":{}}"#
        )
        .is_err());
        assert!(parse(
            Protocol::TransportWs,
            r#"{"type":"subscribe","payload":{}}"#
        )
        .is_err());
        assert!(parse(Protocol::TransportWs, r#"[1]"#).is_err());
        assert!(matches!(
            parse(Protocol::LegacyWs, r#"{"type":"stop","id":"a"}"#),
            Ok(ClientMessage::Complete { .. })
        ));
    }
}
