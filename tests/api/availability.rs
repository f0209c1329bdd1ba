//! Availability under hostile traffic: one request, one socket, one client
//! cannot take the gateway down. One named test per case; where memory or
//! connections matter the gateway runs as its own process and is measured
//! from `/proc`.

use std::time::{Duration, Instant};

use points_gateway::auth::Role;
use points_gateway::domain::ledger::{self, RowTime};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{code, data, gift, spawn_with, Engine, TestApp};
use crate::process::{token, Gateway};
use crate::ws_client::{Got, WsClient};

both_engines!(
    user_balances_and_batches_cost_a_fixed_number_of_statements,
    sixteen_concurrent_consumes_give_a_usage_page_whose_balances_chain,
    a_year_10000_expiry_or_cursor_is_refused_and_writes_nothing,
    a_refund_past_the_balance_cap_is_invalid_input,
    a_consume_drawing_from_thousands_of_batches_is_exact,
);

/// `query { ...F0 }` where each fragment spreads the next twice: 2^depth
/// fields if expanded, about 50 bytes a level.
fn fan_out(depth: usize) -> String {
    let mut q = String::from("query { ...F0 }\n");
    for i in 0..depth {
        q.push_str(&format!(
            "fragment F{i} on Query {{ ...F{n} ...F{n} }}\n",
            n = i + 1
        ));
    }
    q.push_str(&format!("fragment F{depth} on Query {{ me {{ id }} }}\n"));
    q
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fragment_fan_out_is_refused_at_once_in_bounded_memory() {
    let (gw, _dir) = Gateway::on_sqlite(&[]).await;
    let client = reqwest::Client::new();
    let ok = client
        .get(format!("{}/healthz", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let peak_before = gw.status_kib("VmHWM:");
    for depth in [24, 25, 32, 60] {
        let doc = fan_out(depth);
        assert!(doc.len() < 4096, "a small document: {} bytes", doc.len());
        let started = Instant::now();
        // Anonymous, as an attacker would send it; twice at once.
        let send = || {
            client
                .post(format!("{}/graphql", gw.url))
                .json(&json!({ "query": doc }))
                .send()
        };
        let (a, b) = tokio::join!(send(), send());
        for r in [a, b] {
            let body: Value = r.unwrap().json().await.unwrap();
            assert_eq!(code(&body), Some("LIMIT_EXCEEDED"), "depth {depth}: {body}");
        }
        let took = started.elapsed();
        assert!(took < Duration::from_secs(1), "depth {depth}: {took:?}");
    }
    let grown = gw.status_kib("VmHWM:").saturating_sub(peak_before);
    assert!(grown < 32 * 1024, "peak memory grew by {grown} KiB");
    let ok = client
        .get(format!("{}/healthz", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

/// `subscribe` then `complete` for operations `from..to`, then a ping
/// answered: every message before it was handled.
async fn flood(ws: &mut WsClient, from: usize, to: usize) {
    let q = "subscription { balanceChanged { userId balance } }";
    for i in from..to {
        let id = format!("op{i}");
        ws.send(json!({ "id": id, "type": "subscribe", "payload": { "query": q } }))
            .await;
        ws.send(json!({ "id": id, "type": "complete" })).await;
    }
    ws.send(json!({ "type": "ping" })).await;
    loop {
        match ws.recv().await {
            Got::Msg(m) if m["type"] == "pong" => break,
            Got::Msg(_) => {}
            Got::Closed(c, r) => panic!("closed {c} {r}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_subscribe_complete_flood_leaves_memory_flat() {
    let (gw, _dir) = Gateway::on_sqlite(&[("WS_MESSAGE_RATE", "0")]).await;
    let partner = token(Role::Partner);
    let mut ws = WsClient::connect_url(&gw.url, "graphql-transport-ws").await;
    assert!(matches!(ws.init(&partner).await, Got::Msg(m) if m["type"] == "connection_ack"));
    flood(&mut ws, 0, 2_000).await;
    let warm = gw.status_kib("VmRSS:");
    flood(&mut ws, 2_000, 22_000).await;
    let after = gw.status_kib("VmRSS:");
    let grown = after.saturating_sub(warm);
    assert!(
        grown < 16 * 1024,
        "20,000 subscribe/complete pairs grew RSS {warm} -> {after} KiB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_connections_are_closed_while_a_request_is_answered() {
    let (gw, _dir) = Gateway::on_sqlite(&[
        ("HTTP_HEADER_TIMEOUT_MS", "500"),
        ("MAX_CONNECTIONS", "8"),
        ("RATE_LIMIT_ANONYMOUS", "0"),
        ("REQUEST_TIMEOUT_MS", "1000"),
    ])
    .await;
    // A body that trickles is cut off by the request budget: 408.
    let mut slow_body = tokio::net::TcpStream::connect(gw.host()).await.unwrap();
    slow_body
        .write_all(b"POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"query\":")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let read =
        tokio::time::timeout(Duration::from_secs(5), slow_body.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "a trickled body held the connection");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    // Eight sockets take every connection: four say nothing, four send
    // half a request and stall.
    let mut hostile = Vec::new();
    for i in 0..8 {
        let mut s = tokio::net::TcpStream::connect(gw.host()).await.unwrap();
        if i % 2 == 1 {
            s.write_all(b"POST /graphql HTTP/1.1\r\nHost: x\r\nContent-")
                .await
                .unwrap();
        }
        hostile.push(s);
    }
    let started = Instant::now();
    let r = reqwest::Client::new()
        .get(format!("{}/healthz", gw.url))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("a legitimate request gets through");
    assert_eq!(r.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(5));
    for mut s in hostile {
        let mut buf = [0u8; 512];
        // Closed by the server: end of stream (perhaps after a 408).
        let closed = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "a silent or slow socket stayed open");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_and_caps_hold_over_websockets() {
    let app = spawn_with(Engine::Sqlite, |s| {
        s.rates.user = 2.0;
        s.ws_max_per_subject = 2;
        s.ws_message_rate = 20.0;
    })
    .await;
    let u = app.create_user("ws-limits").await;
    let user = app.user_token(u);
    // Operations over a socket spend the subject's rate, as over HTTP.
    let mut ws = WsClient::ready(&app, &user).await;
    for i in 0..8 {
        ws.subscribe(&format!("q{i}"), "{ me { id } }", json!({}))
            .await;
    }
    let mut limited = 0;
    for _ in 0..8 {
        loop {
            match ws.recv().await {
                Got::Msg(m) if m["type"] == "error" => {
                    assert_eq!(
                        m["payload"][0]["extensions"]["code"], "LIMIT_EXCEEDED",
                        "{m}"
                    );
                    limited += 1;
                    break;
                }
                Got::Msg(m) if m["type"] == "complete" => break,
                Got::Msg(_) => {}
                Got::Closed(c, r) => panic!("closed {c} {r}"),
            }
        }
    }
    assert!(limited >= 4, "{limited} of 8 operations refused at 2/s");
    // HTTP shares the same bucket.
    let r = app.gql(&user, "{ me { id } }", json!({})).await;
    assert_eq!(code(&r), Some("LIMIT_EXCEEDED"), "{r}");

    // At most two sockets per subject.
    let _second = WsClient::ready(&app, &user).await;
    let mut third = WsClient::connect(&app, "graphql-transport-ws").await;
    third
        .send(json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {user}") } }))
        .await;
    assert_eq!(third.closed().await.0, 1013);

    // A client sending faster than its message rate is closed.
    let mut fast = WsClient::ready(&app, &app.service).await;
    for _ in 0..200 {
        fast.send(json!({ "type": "ping" })).await;
    }
    assert_eq!(fast.closed().await.0, 1008);
    drop(ws);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_count_each_mutation_of_a_batch_and_of_aliases() {
    let app = spawn_with(Engine::Sqlite, |s| s.rates.service = 5.0).await;
    let u = app.create_user("aliases").await;
    app.recharge(u, 1_000, "o", None).await;
    tokio::time::sleep(Duration::from_secs(2)).await; // a full bucket: 10
    let before = app.count("mjk_point_transactions").await;
    let aliased: String = (0..12)
        .map(|i| format!("c{i}: consume(input: {{userId: {u}, amount: 1, sourceType: SCRIPT, sourceId: \"a{i}\"}}) {{ id }} "))
        .collect();
    let r = app
        .gql(
            &app.service,
            &format!("mutation {{ {aliased} }}"),
            json!({}),
        )
        .await;
    assert_eq!(code(&r), Some("LIMIT_EXCEEDED"), "12 mutations at 5/s: {r}");
    // A batch of mutations counts each of them too.
    let one = |i: usize| json!({ "query": format!("mutation {{ consume(input: {{userId: {u}, amount: 1, sourceType: SCRIPT, sourceId: \"b{i}\"}}) {{ id }} }}") });
    let batch: Vec<Value> = (0..10).map(one).collect();
    let resp = app
        .client
        .post(format!("{}/graphql", app.url))
        .bearer_auth(&app.service)
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(
        app.count("mjk_point_transactions").await,
        before,
        "nothing written"
    );
}

async fn user_balances_and_batches_cost_a_fixed_number_of_statements(app: TestApp) {
    let u = app.create_user("n-plus-one").await;
    for i in 0..3 {
        app.recharge(u, 1_000, &format!("o{i}"), None).await;
    }
    for i in 0..120 {
        app.consume(u, 1, "SCRIPT", &format!("s{i}"), None).await;
    }
    let q = |first: usize| {
        let pages: String = (0..8)
            .map(|i| format!("p{i}: usageDetails(userId: {u}, first: {first}) {{ nodes {{ id user {{ balance batches {{ id }} }} }} }} "))
            .collect();
        format!("{{ {pages} }}")
    };
    // Eight aliased 100-row pages: each page's rows resolve their users,
    // balances and batches through the loaders, a statement per batch of
    // keys (pages may reach a loader apart): a bound that does not grow
    // with the rows (one statement per row was 1,617 here).
    let before = app.store.statements();
    let r = app.gql(&app.admin, &q(100), json!({})).await;
    assert!(r["errors"].is_null(), "{r}");
    assert_eq!(data(&r, "p7")["nodes"].as_array().unwrap().len(), 100);
    let eight = app.store.statements() - before;
    assert!(eight <= 64, "{eight} statements for 800 rows");
    // One page: the same count for 1 row as for 100.
    let one = |first: usize| {
        format!("{{ usageDetails(userId: {u}, first: {first}) {{ nodes {{ id user {{ balance batches {{ id }} }} }} }} }}")
    };
    // The store's counter also counts its background statements (the
    // revocation and source-type refreshes): they only add, so the least
    // of three tries is the request's own cost.
    let mut cost = Vec::new();
    for first in [1, 100] {
        let mut least = u64::MAX;
        for _ in 0..3 {
            let before = app.store.statements();
            let r = app.gql(&app.admin, &one(first), json!({})).await;
            assert_eq!(
                data(&r, "usageDetails")["nodes"].as_array().unwrap().len(),
                first
            );
            least = least.min(app.store.statements() - before);
        }
        cost.push(least);
    }
    assert_eq!(cost[0], cost[1], "statements for 1 vs 100 rows: {cost:?}");
}

async fn sixteen_concurrent_consumes_give_a_usage_page_whose_balances_chain(app: TestApp) {
    let u = app.create_user("chain").await;
    app.recharge(u, 10_000, "o", None).await;
    let mut tasks = Vec::new();
    for round in 0..4 {
        for i in 0..16 {
            let (client, url, token) = (app.client.clone(), app.url.clone(), app.service.clone());
            tasks.push(tokio::spawn(async move {
                client
                    .post(format!("{url}/graphql"))
                    .bearer_auth(token)
                    .json(&json!({ "query": format!("mutation {{ consume(input: {{userId: {u}, amount: {a}, sourceType: SCRIPT, sourceId: \"c{round}-{i}\"}}) {{ id }} }}", a = i + 1) }))
                    .send()
                    .await
                    .unwrap()
                    .json::<Value>()
                    .await
                    .unwrap()
            }));
        }
    }
    for t in tasks {
        let r = t.await.unwrap();
        assert!(r["errors"].is_null(), "{r}");
    }
    let r = app
        .gql(
            &app.admin,
            "query($u: Int) { usageDetails(userId: $u, first: 100) { nodes { id balanceBefore balanceAfter } } }",
            json!({ "u": u }),
        )
        .await;
    let rows = data(&r, "usageDetails")["nodes"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(rows.len(), 65);
    // Newest first: each row's balanceBefore is the next (older) row's balanceAfter.
    for pair in rows.windows(2) {
        assert_eq!(
            pair[0]["balanceBefore"], pair[1]["balanceAfter"],
            "the page's balance column chains: {} then {}",
            pair[1], pair[0]
        );
    }
    app.assert_verify_clean().await;
}

async fn a_year_10000_expiry_or_cursor_is_refused_and_writes_nothing(app: TestApp) {
    let u = app.create_user("y10k").await;
    let before = app.footprint().await;
    for at in ["+10000-01-01T00:00:00Z", "10000-01-01T00:00:00Z"] {
        let r = app
            .gql(
                &app.service,
                "mutation($u: Int!, $e: DateTime) { recharge(input: { userId: $u, amount: 5, orderId: \"y\", moneyCents: 5, expiresAt: $e }) { id } }",
                json!({ "u": u, "e": at }),
            )
            .await;
        assert_eq!(code(&r), Some("INVALID_INPUT"), "{at}: {r}");
    }
    assert_eq!(app.footprint().await, before);
    // A year-9999 expiry is accepted and sorts after 2026 on both engines:
    // the batch due sooner is drawn first.
    app.recharge(u, 10, "far", Some("9999-12-31T00:00:00Z"))
        .await;
    let soon = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    app.recharge(u, 10, "soon", Some(&soon)).await;
    let r = app
        .gql(
            &app.admin,
            "query($u: Int!) { user(id: $u) { balance batches { remaining expiresAt } } }",
            json!({ "u": u }),
        )
        .await;
    assert_eq!(data(&r, "user")["balance"], 20, "{r}");
    assert!(data(&r, "user")["batches"][1]["expiresAt"]
        .as_str()
        .unwrap()
        .starts_with("9999"));
    // A hand-made cursor with a time out of range.
    use base64::Engine as _;
    let cursor = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(format!("{}:1", 253_402_300_800_000_000_i64 * 10));
    let r = app
        .gql(
            &app.admin,
            "query($u: Int, $a: String) { usageDetails(userId: $u, after: $a) { nodes { id } } }",
            json!({ "u": u, "a": cursor }),
        )
        .await;
    assert_eq!(code(&r), Some("INVALID_INPUT"), "{r}");
    app.assert_verify_clean().await;
}

async fn a_refund_past_the_balance_cap_is_invalid_input(app: TestApp) {
    let u = app.create_user("cap").await;
    app.recharge(u, i32::MAX as i64, "max", None).await;
    app.consume(u, 10, "SCRIPT", "s", None).await;
    app.recharge(u, 10, "top", None).await;
    let before = app.footprint().await;
    let r = app
        .gql(
            &app.service,
            "mutation { refund(input: { sourceType: SCRIPT, sourceId: \"s\", refundKey: \"r\" }) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(code(&r), Some("INVALID_INPUT"), "{r}");
    assert_eq!(app.footprint().await, before);
    app.assert_verify_clean().await;
}

async fn a_consume_drawing_from_thousands_of_batches_is_exact(app: TestApp) {
    let u = app.create_user("many-batches").await;
    // 2,000 one-point batches, through the ledger in one transaction.
    let mut tx = app.store.begin_write().await.unwrap();
    for i in 0..2_000 {
        let req = gift(u, 1, &format!("b{i}"));
        ledger::recharge_in(&mut tx, &req, &req.fingerprint(), RowTime::Now)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    let started = Instant::now();
    let r = app.consume(u, 1_999, "SCRIPT", "big", None).await;
    let took = started.elapsed();
    assert!(r["errors"].is_null(), "{r}");
    assert_eq!(app.balance(u).await, 1);
    let r = app
        .gql(
            &app.service,
            "mutation { refund(input: { sourceType: SCRIPT, sourceId: \"big\", refundKey: \"back\" }) { amount } }",
            json!({}),
        )
        .await;
    assert_eq!(data(&r, "refund")["amount"], 1_999, "{r}");
    app.assert_verify_clean().await;
    eprintln!("consume of 1,999 points from 2,000 batches: {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partners_read_nothing_but_their_subscriptions() {
    let app = spawn_with(Engine::Sqlite, |_| {}).await;
    let u = app.create_user("watched").await;
    app.recharge(u, 50, "o", None).await;
    // A partner token whose subject is a user id.
    let partner = app
        .keys
        .mint(Role::Partner, Some(u), chrono::Duration::hours(1))
        .unwrap();
    for q in [
        "{ me { id balance } }".to_owned(),
        format!("{{ user(id: {u}) {{ balance batches {{ id }} }} }}"),
        format!("{{ usageDetails(userId: {u}) {{ nodes {{ id }} }} }}"),
    ] {
        let r = app.gql(&partner, &q, json!({})).await;
        assert_eq!(code(&r), Some("FORBIDDEN"), "{q}: {r}");
        assert!(!r.to_string().contains("\"balance\":50"), "{r}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_an_admin_token_or_their_own_address() {
    let app = spawn_with(Engine::Sqlite, |_| {}).await;
    let url = format!("{}/metrics", app.url);
    let anonymous = app.client.get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let user = app.user_token(1);
    let as_user = app
        .client
        .get(&url)
        .bearer_auth(&user)
        .send()
        .await
        .unwrap();
    assert_eq!(as_user.status(), 401);
    assert!(app.metrics_text().await.contains("gateway_build_info"));

    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = free.local_addr().unwrap();
    drop(free);
    let bind = addr.to_string();
    let (gw, _dir) = Gateway::on_sqlite(&[("METRICS_BIND", &bind)]).await;
    let open = reqwest::get(format!("http://{bind}/metrics"))
        .await
        .unwrap();
    assert_eq!(open.status(), 200);
    assert!(open
        .text()
        .await
        .unwrap()
        .contains("process_resident_memory_bytes"));
    let api = reqwest::get(format!("{}/metrics", gw.url)).await.unwrap();
    assert_eq!(api.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_suggest_no_field_names() {
    let app = spawn_with(Engine::Sqlite, |_| {}).await;
    let u = app.create_user("curious").await;
    let r = app
        .gql(&app.user_token(u), "{ me { balanc } }", json!({}))
        .await;
    assert_eq!(code(&r), Some("INVALID_INPUT"), "{r}");
    assert!(!r.to_string().contains("Did you mean"), "{r}");
}
