//! `bench subscribe`: many WebSocket subscribers of `balanceChanged` while
//! consumes arrive at a steady rate. Reports delivery latency (from the
//! ledger row's `createdAt`, stamped inside the transaction before commit,
//! to receipt by the client: an upper bound of commit-to-client), the
//! gateway's memory, and whether any event was lost or out of order.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use points_gateway::auth::{Role, TokenKeys};
use points_gateway::config::JwtSecret;
use rand::Rng;
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message};

use crate::gateway::{self, Gateway};
use crate::scenarios::post;

pub struct Plan {
    pub subscribers: usize,
    /// How many of them follow every user (partners); the rest one user each.
    pub all_users: usize,
    /// Distinct users changed (and followed).
    pub users: usize,
    pub rate_per_s: u64,
    pub seconds: u64,
}

const SUBSCRIPTION: &str =
    "subscription($u: Int) { balanceChanged(userId: $u) { userId balance entry { id balanceBefore balanceAfter createdAt } } }";
const CONSUME: &str = "mutation($u: Int!, $id: String!) { consume(input: {userId: $u, amount: 1, sourceType: TTS, sourceId: $id, duration: 1.5}) { id } }";
const RECHARGE: &str = "mutation($u: Int!, $o: String!) { recharge(input: {userId: $u, amount: 1000000, orderId: $o, moneyCents: 100}) { id } }";

/// What one subscriber saw.
#[derive(Default)]
struct Seen {
    events: usize,
    resyncs: usize,
    /// Events whose `balanceBefore` was not the previous balance of that user.
    gaps: usize,
    per_user: HashMap<i64, usize>,
    latencies_ms: Vec<f64>,
}

pub async fn run(database_url: &str, plan: Plan) -> anyhow::Result<()> {
    let store = points_gateway::store::Store::connect(database_url, 4).await?;
    let db = store.connection();
    let backend = db.get_database_backend();
    let engine = store.engine().name();
    let ids: Vec<i32> = db
        .query_all_raw(Statement::from_sql_and_values(
            backend,
            "SELECT id FROM gw_users ORDER BY id LIMIT $1",
            [(plan.users as i64).into()],
        ))
        .await?
        .iter()
        .map(|r| r.try_get::<i32>("", "id"))
        .collect::<Result<_, _>>()?;
    anyhow::ensure!(!ids.is_empty(), "no users: run `bench gen` first");
    let gw = Gateway::start_with(
        database_url,
        &[
            ("RATE_LIMIT_PARTNER", "0"),
            ("WS_KEEPALIVE_SECS", "30"),
            // One partner token holds every subscriber's socket and
            // subscription here, all from this machine's one address.
            ("WS_MAX_PER_SUBJECT", "0"),
            ("SUBSCRIPTIONS_PER_SUBJECT", "0"),
            ("WS_ANONYMOUS_PER_ADDRESS", "0"),
            ("MAX_CONNECTIONS_PER_ADDRESS", "0"),
            ("WS_MESSAGE_RATE", "0"),
        ],
    )?;
    let keys = TokenKeys::new(&JwtSecret::new(gateway::SECRET.as_bytes().to_vec())?);
    let service = keys.mint(Role::Service, None, chrono::Duration::hours(4))?;
    let partner = keys.mint(Role::Partner, None, chrono::Duration::hours(4))?;
    let admin = keys.mint(Role::Admin, None, chrono::Duration::hours(4))?;
    let client = reqwest::Client::new();
    let run_id: u32 = rand::thread_rng().gen();
    for &u in &ids {
        post(
            &client,
            &gw.url,
            &service,
            RECHARGE,
            json!({ "u": u, "o": format!("sub-{run_id:08x}-{u}") }),
        )
        .await?;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle = gw.rss_mib().unwrap_or(0.0);

    // Connect everyone, 64 handshakes at a time.
    let started = Instant::now();
    let ws_url = gw.url.replace("http://", "ws://") + "/graphql";
    let ready = Arc::new(AtomicUsize::new(0));
    let stop = tokio_util::sync::CancellationToken::new();
    let gate = Arc::new(tokio::sync::Semaphore::new(64));
    let mut readers = Vec::new();
    for i in 0..plan.subscribers {
        let follow = (i >= plan.all_users).then(|| ids[i % ids.len()]);
        let (url, token, ready, stop, gate) = (
            ws_url.clone(),
            partner.clone(),
            ready.clone(),
            stop.clone(),
            gate.clone(),
        );
        readers.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await.ok();
            let seen = subscriber(&url, &token, follow, &ready, permit, stop).await;
            (follow, seen)
        }));
    }
    while ready.load(Ordering::Relaxed) < plan.subscribers {
        if started.elapsed() > Duration::from_secs(300) {
            anyhow::bail!(
                "only {} subscribers connected",
                ready.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let connect_s = started.elapsed().as_secs_f64();
    // The server registers a subscription just after acknowledging it.
    while open_subscriptions(&client, &gw.url, &admin).await < plan.subscribers {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let with_subscribers = gw.rss_mib().unwrap_or(0.0);
    eprintln!(
        "{} subscribers connected in {connect_s:.1} s; driving {} changes/s for {} s",
        plan.subscribers, plan.rate_per_s, plan.seconds
    );

    // Drive consumes at the planned rate; each on its own task so a slow
    // answer does not hold back the schedule.
    let issued: Arc<Mutex<HashMap<i64, usize>>> = Arc::default();
    let failed = Arc::new(AtomicUsize::new(0));
    // How long the consumes themselves took: the event latency includes the
    // transaction, as `createdAt` is stamped when it starts.
    let write_ms: Arc<Mutex<Vec<f64>>> = Arc::default();
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / plan.rate_per_s.max(1)));
    let total = plan.rate_per_s * plan.seconds;
    let drive_started = Instant::now();
    let mut writes = Vec::with_capacity(total as usize);
    for n in 0..total {
        tick.tick().await;
        let u = ids[rand::thread_rng().gen_range(0..ids.len())];
        let (client, url, token, issued, failed, write_ms) = (
            client.clone(),
            gw.url.clone(),
            service.clone(),
            issued.clone(),
            failed.clone(),
            write_ms.clone(),
        );
        writes.push(tokio::spawn(async move {
            let vars = json!({ "u": u, "id": format!("sub-{run_id:08x}-{n}") });
            let t = Instant::now();
            let r = post(&client, &url, &token, CONSUME, vars).await;
            write_ms
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(t.elapsed().as_secs_f64() * 1e3);
            match r {
                Ok(_) => {
                    *issued
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .entry(i64::from(u))
                        .or_default() += 1
                }
                Err(_) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for w in writes {
        let _ = w.await;
    }
    let drive_s = drive_started.elapsed().as_secs_f64();
    let peak = gw.peak_rss_mib().unwrap_or(0.0);
    // Let the last events arrive.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();

    let issued = issued.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let changes: usize = issued.values().sum();
    let (mut expected, mut delivered, mut resyncs, mut gaps) = (0usize, 0usize, 0usize, 0usize);
    let mut short = 0usize;
    let mut lat = Vec::new();
    for r in readers {
        let (follow, seen) = r.await?;
        let want = match follow {
            Some(u) => issued.get(&i64::from(u)).copied().unwrap_or(0),
            None => changes,
        };
        let got: usize = seen.per_user.values().sum();
        expected += want;
        delivered += got;
        if got < want {
            short += 1;
        }
        resyncs += seen.resyncs;
        gaps += seen.gaps;
        debug_assert_eq!(got, seen.events);
        lat.extend(seen.latencies_ms);
    }
    lat.sort_by(f64::total_cmp);
    let mut writes_ms = write_ms.lock().unwrap_or_else(|p| p.into_inner()).clone();
    writes_ms.sort_by(f64::total_cmp);
    let report = json!({
        "engine": engine,
        "subscribers": plan.subscribers,
        "all_users_subscribers": plan.all_users,
        "users": ids.len(),
        "planned_changes_per_s": plan.rate_per_s,
        "achieved_changes_per_s": changes as f64 / drive_s,
        "changes": changes,
        "failed_changes": failed.load(Ordering::Relaxed),
        "expected_deliveries": expected,
        "delivered": delivered,
        "lost": expected.saturating_sub(delivered),
        "subscribers_short": short,
        "resyncs": resyncs,
        "order_gaps": gaps,
        "latency_p50_ms": pct(&lat, 0.50),
        "latency_p99_ms": pct(&lat, 0.99),
        "latency_max_ms": lat.last().copied().unwrap_or(0.0),
        "consume_http_p50_ms": pct(&writes_ms, 0.50),
        "consume_http_p99_ms": pct(&writes_ms, 0.99),
        "connect_seconds": connect_s,
        "rss_idle_mib": idle,
        "rss_with_subscribers_mib": with_subscribers,
        "rss_peak_mib": peak,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    std::fs::create_dir_all("bench-results")?;
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let path = format!("bench-results/subscribe-{engine}-{at}.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
    println!("wrote {path}");
    Ok(())
}

/// The `p` quantile of sorted values.
fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

pub(crate) async fn open_subscriptions(client: &reqwest::Client, url: &str, admin: &str) -> usize {
    let Ok(r) = client
        .get(format!("{url}/metrics"))
        .bearer_auth(admin)
        .send()
        .await
    else {
        return 0;
    };
    let text = r.text().await.unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("gateway_subscriptions "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// One subscriber: connect, init, subscribe, then record every event until
/// `stop`.
async fn subscriber(
    url: &str,
    token: &str,
    follow: Option<i32>,
    ready: &AtomicUsize,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    stop: tokio_util::sync::CancellationToken,
) -> Seen {
    let mut seen = Seen::default();
    let Ok(mut req) = url.into_client_request() else {
        return seen;
    };
    if let Ok(v) = "graphql-transport-ws".parse() {
        req.headers_mut().insert("sec-websocket-protocol", v);
    }
    let Ok((mut ws, _)) = tokio_tungstenite::connect_async(req).await else {
        eprintln!("subscriber failed to connect");
        return seen;
    };
    let init = json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {token}") } });
    let sub = json!({ "id": "1", "type": "subscribe", "payload": { "query": SUBSCRIPTION, "variables": { "u": follow } } });
    if ws.send(Message::text(init.to_string())).await.is_err() {
        return seen;
    }
    // Wait for the ack before subscribing.
    while let Some(Ok(m)) = ws.next().await {
        if m.to_text().is_ok_and(|t| t.contains("connection_ack")) {
            break;
        }
    }
    if ws.send(Message::text(sub.to_string())).await.is_err() {
        return seen;
    }
    drop(permit);
    ready.fetch_add(1, Ordering::Relaxed);
    let mut last: HashMap<i64, i64> = HashMap::new();
    loop {
        let m = tokio::select! {
            m = ws.next() => m,
            _ = stop.cancelled() => break,
        };
        let Some(Ok(Message::Text(t))) = m else {
            if matches!(m, Some(Ok(_))) {
                continue;
            }
            break;
        };
        let received = chrono::Utc::now();
        let Ok(v) = serde_json::from_str::<Value>(t.as_str()) else {
            continue;
        };
        if v["type"] == "ping" {
            let _ = ws.send(Message::text(r#"{"type":"pong"}"#)).await;
            continue;
        }
        if v["type"] != "next" {
            eprintln!("subscriber got {v}");
            continue;
        }
        let ev = &v["payload"]["data"]["balanceChanged"];
        let user = ev["userId"].as_i64().unwrap_or(-1);
        let entry = &ev["entry"];
        if entry.is_null() {
            seen.resyncs += 1;
        } else {
            seen.events += 1;
            *seen.per_user.entry(user).or_default() += 1;
            let before = entry["balanceBefore"].as_i64();
            if let (Some(prev), Some(b)) = (last.get(&user), before) {
                if *prev != b {
                    seen.gaps += 1;
                }
            }
            if let Some(created) = entry["createdAt"]
                .as_str()
                .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
            {
                let ms = (received - created.with_timezone(&chrono::Utc)).num_microseconds();
                seen.latencies_ms.push(ms.unwrap_or(0) as f64 / 1e3);
            }
        }
        if let Some(b) = ev["balance"].as_i64() {
            last.insert(user, b);
        }
    }
    seen
}
