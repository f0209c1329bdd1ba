//! Consumes while a partner holds 64 WebSockets × 100 all-users
//! `balanceChanged` subscriptions and never reads (the attack of issue 23),
//! against the same consumes with no subscriber, alternating in rounds on
//! one gateway. Every consume's key is distinct. The figure is throughput
//! (and p99) with the stuck partner over without.
//!
//! The scenario starts its own gateway with `SUBSCRIPTIONS_PER_SUBJECT`
//! raised to 6,400 and the partner's rate and message limits off (the
//! defaults would refuse most of the attack's subscriptions): this measures
//! what 6,400 subscriptions that got in cost the writers.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use points_gateway::auth::{Role, TokenKeys};
use points_gateway::config::JwtSecret;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message};

use super::{gateway_row, Ctx};
use crate::{gateway, load};

const ALL_USERS: &str =
    "subscription { balanceChanged { userId balance entry { id amount balanceAfter } } }";
const SOCKETS: usize = 64;
const PER_SOCKET: usize = 100;

type Stuck =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Adds the two rows at concurrency `c`; returns the ratios.
pub async fn run(
    ctx: &Ctx<'_>,
    c: usize,
    rounds: usize,
    rows: &mut Vec<load::Stats>,
) -> anyhow::Result<Value> {
    let gw = gateway::Gateway::start_with(
        ctx.database_url,
        &[
            ("SUBSCRIPTIONS_PER_SUBJECT", "6400"),
            ("RATE_LIMIT_PARTNER", "0"),
            ("WS_MESSAGE_RATE", "0"),
        ],
    )?;
    let keys = TokenKeys::new(&JwtSecret::new(gateway::SECRET.as_bytes().to_vec())?);
    let partner = keys.mint(Role::Partner, None, chrono::Duration::hours(4))?;
    let run_id = ctx.run_id;
    let (mut calm, mut attacked) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        for k in 0..2 {
            let stuck = (k + round) % 2 == 1;
            let sockets = if stuck {
                let s = open_stuck(&gw.url, &partner).await?;
                wait_subscriptions(&ctx.client, &gw.url, &ctx.admin, SOCKETS * PER_SOCKET).await;
                s
            } else {
                Vec::new()
            };
            let tag = if stuck { "s" } else { "n" };
            let prefix = format!("st-{run_id:08x}-{tag}-{round}");
            let m = super::consume::http_leg(ctx, &gw, c, &prefix).await;
            if stuck {
                attacked.push(m);
            } else {
                calm.push(m);
            }
            drop(sockets);
            wait_subscriptions(&ctx.client, &gw.url, &ctx.admin, 0).await;
        }
    }
    let a = gateway_row(
        &gw,
        "consume, 6,400 stuck all-users subscriptions (HTTP)",
        c,
        &attacked,
    );
    let n = gateway_row(&gw, "consume, no subscriber (HTTP)", c, &calm);
    let ratio = json!({
        "concurrency": c,
        "overall": a.throughput_per_s / n.throughput_per_s,
        "per_round": super::consume::per_round(&attacked, &calm),
        "p99_ms_stuck": a.p99_ms,
        "p99_ms_none": n.p99_ms,
    });
    rows.push(a);
    rows.push(n);
    Ok(ratio)
}

/// The partner's sockets: each with a small receive buffer, initialised,
/// `PER_SOCKET` all-users subscriptions, then never read again.
async fn open_stuck(url: &str, token: &str) -> anyhow::Result<Vec<Stuck>> {
    let addr: std::net::SocketAddr = url.trim_start_matches("http://").parse()?;
    let mut out = Vec::with_capacity(SOCKETS);
    for _ in 0..SOCKETS {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.set_recv_buffer_size(4096)?;
        let stream = socket.connect(addr).await?;
        let mut req = (url.replace("http://", "ws://") + "/graphql").into_client_request()?;
        req.headers_mut()
            .insert("sec-websocket-protocol", "graphql-transport-ws".parse()?);
        let (mut ws, _) =
            tokio_tungstenite::client_async(req, tokio_tungstenite::MaybeTlsStream::Plain(stream))
                .await?;
        let init = json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {token}") } });
        ws.send(Message::text(init.to_string())).await?;
        loop {
            match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
                Ok(Some(Ok(m))) if m.to_text().is_ok_and(|t| t.contains("connection_ack")) => break,
                Ok(Some(Ok(_))) => {}
                _ => anyhow::bail!("a partner socket was not acknowledged"),
            }
        }
        for i in 0..PER_SOCKET {
            let sub = json!({ "id": i.to_string(), "type": "subscribe", "payload": { "query": ALL_USERS } });
            ws.send(Message::text(sub.to_string())).await?;
        }
        out.push(ws);
    }
    Ok(out)
}

/// Waits (up to 30 s) until the gateway reports `n` open subscriptions.
async fn wait_subscriptions(client: &reqwest::Client, url: &str, admin: &str, n: usize) {
    let mut open = 0;
    for _ in 0..300 {
        open = crate::subscribe::open_subscriptions(client, url, admin).await;
        if open == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("the gateway reports {open} open subscriptions, not {n}, after 30 s");
}
