//! A typed WebSocket client for the subscription tests.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::helpers::TestApp;

/// Every field of `balanceChanged` the tests check.
pub const BALANCE_CHANGED: &str = "subscription($u: Int) { balanceChanged(userId: $u) { userId balance resync entry { id type amount change balanceBefore balanceAfter sourceType sourceId } } }";

pub struct WsClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    legacy: bool,
}

/// What arrived: a protocol message, or the server's close frame.
#[derive(Debug)]
pub enum Got {
    Msg(Value),
    Closed(u16, String),
}

impl WsClient {
    pub async fn connect(app: &TestApp, subprotocol: &str) -> WsClient {
        Self::connect_url(&app.url, subprotocol).await
    }

    /// To a gateway at `url` (`http://host:port`).
    pub async fn connect_url(url: &str, subprotocol: &str) -> WsClient {
        let stream = TcpStream::connect(url.trim_start_matches("http://"))
            .await
            .unwrap();
        Self::over(url, subprotocol, stream).await
    }

    /// From the local address `source` (another loopback address, so one
    /// machine plays several clients).
    pub async fn connect_from(url: &str, source: &str) -> Result<WsClient, String> {
        let stream = tcp_from(url, source).await.map_err(|e| e.to_string())?;
        let mut req = (url.replace("http://", "ws://") + "/graphql")
            .into_client_request()
            .map_err(|e| e.to_string())?;
        req.headers_mut().insert(
            "sec-websocket-protocol",
            "graphql-transport-ws".parse().map_err(|_| "header")?,
        );
        let (ws, _) = tokio_tungstenite::client_async(req, MaybeTlsStream::Plain(stream))
            .await
            .map_err(|e| e.to_string())?;
        Ok(WsClient { ws, legacy: false })
    }

    /// Over a socket whose receive buffer is tiny: a client that reads
    /// slowly backs up into the server quickly.
    pub async fn connect_small_buffer(app: &TestApp) -> WsClient {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(2048).unwrap();
        let addr = app.url.trim_start_matches("http://").parse().unwrap();
        let stream = socket.connect(addr).await.unwrap();
        Self::over(&app.url, "graphql-transport-ws", stream).await
    }

    async fn over(url: &str, subprotocol: &str, stream: TcpStream) -> WsClient {
        let mut req = (url.replace("http://", "ws://") + "/graphql")
            .into_client_request()
            .unwrap();
        req.headers_mut()
            .insert("sec-websocket-protocol", subprotocol.parse().unwrap());
        let (ws, resp) = tokio_tungstenite::client_async(req, MaybeTlsStream::Plain(stream))
            .await
            .unwrap();
        assert_eq!(resp.headers()["sec-websocket-protocol"], subprotocol);
        WsClient {
            ws,
            legacy: subprotocol == "graphql-ws",
        }
    }

    pub async fn send(&mut self, v: Value) {
        self.ws.send(Message::text(v.to_string())).await.unwrap();
    }

    pub async fn send_raw(&mut self, m: Message) {
        self.ws.send(m).await.unwrap();
    }

    /// `connection_init` with a bearer token; returns the server's answer.
    pub async fn init(&mut self, token: &str) -> Got {
        self.send(json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {token}") } }))
            .await;
        self.recv().await
    }

    /// Initialises and insists on the acknowledgement.
    pub async fn ready(app: &TestApp, token: &str) -> WsClient {
        let mut c = WsClient::connect(app, "graphql-transport-ws").await;
        match c.init(token).await {
            Got::Msg(m) if m["type"] == "connection_ack" => c,
            other => panic!("expected connection_ack, got {other:?}"),
        }
    }

    pub async fn subscribe(&mut self, id: &str, query: &str, variables: Value) {
        let kind = if self.legacy { "start" } else { "subscribe" };
        self.send(json!({ "id": id, "type": kind, "payload": { "query": query, "variables": variables } }))
            .await;
    }

    /// The next message or close frame (keep-alives skipped, pings
    /// answered); panics after 10 s of silence.
    pub async fn recv(&mut self) -> Got {
        self.recv_within(Duration::from_secs(10))
            .await
            .expect("a message within 10 s")
    }

    pub async fn recv_within(&mut self, wait: Duration) -> Option<Got> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let m = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()?;
            match m {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap();
                    match v["type"].as_str() {
                        Some("ka") => continue,
                        Some("ping") => {
                            self.send(json!({ "type": "pong" })).await;
                            continue;
                        }
                        _ => return Some(Got::Msg(v)),
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    return Some(match frame {
                        Some(f) => Got::Closed(u16::from(f.code), f.reason.to_string()),
                        None => Got::Closed(1005, String::new()),
                    })
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Some(Got::Closed(1006, e.to_string())),
                None => return Some(Got::Closed(1006, "stream ended".into())),
            }
        }
    }

    /// The `payload.data.balanceChanged` of the next `next` message.
    pub async fn change(&mut self) -> Value {
        match self.recv().await {
            Got::Msg(m) if m["type"] == "next" || m["type"] == "data" => {
                assert!(m["payload"]["errors"].is_null(), "{m}");
                m["payload"]["data"]["balanceChanged"].clone()
            }
            other => panic!("expected a balance change, got {other:?}"),
        }
    }

    /// Asserts nothing but keep-alives arrives for a while.
    pub async fn quiet(&mut self, wait: Duration) {
        if let Some(got) = self.recv_within(wait).await {
            panic!("expected silence, got {got:?}");
        }
    }

    /// Reads until the server closes; its code and reason.
    pub async fn closed(&mut self) -> (u16, String) {
        loop {
            match self.recv().await {
                Got::Closed(code, reason) => return (code, reason),
                Got::Msg(_) => continue,
            }
        }
    }
}

/// A TCP connection to the gateway at `url` from the local address `source`.
pub async fn tcp_from(url: &str, source: &str) -> std::io::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(format!("{source}:0").parse().expect("an IPv4 address"))?;
    let addr = url
        .trim_start_matches("http://")
        .parse()
        .expect("host:port");
    socket.connect(addr).await
}

impl TestApp {
    /// Waits until this instance has `n` open subscriptions, so a change
    /// made next is certain to be seen by them.
    pub async fn wait_subscriptions(&self, n: usize) {
        for _ in 0..500 {
            let text = self.metrics_text().await;
            let open = text
                .lines()
                .find_map(|l| l.strip_prefix("gateway_subscriptions "))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if open == n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("never reached {n} open subscriptions");
    }

    pub fn partner_token(&self) -> String {
        self.keys
            .mint(
                points_gateway::auth::Role::Partner,
                None,
                chrono::Duration::hours(1),
            )
            .unwrap()
    }
}
