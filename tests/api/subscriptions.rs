//! `balanceChanged` over real WebSockets: content and order of events,
//! nothing for failed or rolled-back writes, who may follow whom, every
//! graphql-transport-ws close code, the legacy protocol, slow subscribers,
//! delivery across instances and a PostgreSQL restart.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{fresh_postgres_url, spawn_app, spawn_on, spawn_with, Engine, TestApp};
use crate::ws_client::{Got, WsClient, BALANCE_CHANGED};

const QUIET: Duration = Duration::from_millis(300);

/// Checks one event against the expected movement and the chain.
fn check(ev: &Value, user: i32, kind: &str, change: i64, before: i64) {
    assert_eq!(ev["userId"], json!(user), "{ev}");
    assert_eq!(ev["resync"], json!(false), "{ev}");
    let e = &ev["entry"];
    assert_eq!(e["type"], json!(kind), "{ev}");
    assert_eq!(e["change"], json!(change), "{ev}");
    assert_eq!(e["balanceBefore"], json!(before), "{ev}");
    assert_eq!(e["balanceAfter"], json!(before + change), "{ev}");
    assert_eq!(ev["balance"], json!(before + change), "{ev}");
}

async fn events_follow_the_ledger(app: TestApp) {
    let u = app.create_user("sub").await;
    let other = app.create_user("other").await;
    let mut own = WsClient::ready(&app, &app.user_token(u)).await;
    own.subscribe("own", BALANCE_CHANGED, json!({})).await;
    let mut partner = WsClient::ready(&app, &app.partner_token()).await;
    partner.subscribe("all", BALANCE_CHANGED, json!({})).await;
    let mut admin = WsClient::ready(&app, &app.admin).await;
    admin
        .subscribe("u", BALANCE_CHANGED, json!({ "u": u }))
        .await;
    app.wait_subscriptions(3).await;

    let soon = (chrono::Utc::now() + chrono::Duration::milliseconds(1500)).to_rfc3339();
    let r = app.recharge(u, 100, "o1", None).await;
    assert!(r["errors"].is_null(), "{r}");
    app.recharge(u, 40, "o2", Some(&soon)).await;
    app.consume(u, 30, "SCRIPT", "s1", None).await;
    app.refund("SCRIPT", "s1", "r1", Some(10)).await;
    // Failures and replays write nothing and announce nothing.
    let r = app.consume(u, 1_000, "SCRIPT", "s2", None).await;
    assert_eq!(r["errors"][0]["extensions"]["code"], "INSUFFICIENT_BALANCE");
    let r = app.consume(u, 30, "SCRIPT", "s1", None).await; // replay
    assert!(r["errors"].is_null(), "{r}");
    let r = app.consume(u, 31, "SCRIPT", "s1", None).await;
    assert_eq!(r["errors"][0]["extensions"]["code"], "IDEMPOTENCY_CONFLICT");
    let r = app.refund("SCRIPT", "s1", "r2", Some(25)).await;
    assert_eq!(
        r["errors"][0]["extensions"]["code"],
        "REFUND_EXCEEDS_CONSUMED"
    );
    app.recharge(other, 7, "o3", None).await;
    // The 40-point batch expires; the sweep writes an expire row.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let r = app
        .gql(
            &app.admin,
            "mutation { expirePoints { batchesExpired pointsExpired } }",
            json!({}),
        )
        .await;
    assert_eq!(r["data"]["expirePoints"]["batchesExpired"], 1, "{r}");

    // consume 30 draws the expiring batch first (40 -> 10 left), the refund
    // returns to the batch that paid (-> 20), and the sweep expires 20.
    let expected: [(&str, i64, i64); 5] = [
        ("RECHARGE", 100, 0),
        ("RECHARGE", 40, 100),
        ("CONSUME", -30, 140),
        ("REFUND", 10, 110),
        ("EXPIRE", -20, 120),
    ];
    for c in [&mut own, &mut admin] {
        for (kind, change, before) in expected {
            check(&c.change().await, u, kind, change, before);
        }
        c.quiet(QUIET).await;
    }
    // The partner sees everyone's changes, the other user's in between.
    let mut seen = Vec::new();
    for _ in 0..6 {
        seen.push(partner.change().await);
    }
    partner.quiet(QUIET).await;
    let (mine, theirs): (Vec<_>, Vec<_>) = seen.iter().partition(|e| e["userId"] == json!(u));
    assert_eq!(theirs.len(), 1);
    check(theirs[0], other, "RECHARGE", 7, 0);
    for (ev, (kind, change, before)) in mine.iter().zip(expected) {
        check(ev, u, kind, change, before);
    }
    assert_eq!(app.balance(u).await, 100);
}

async fn users_follow_only_their_own_balance(app: TestApp) {
    let u = app.create_user("me").await;
    let v = app.create_user("them").await;
    let mut c = WsClient::ready(&app, &app.user_token(u)).await;
    c.subscribe("x", BALANCE_CHANGED, json!({ "u": v })).await;
    match c.recv().await {
        Got::Msg(m) => {
            assert_eq!(m["type"], "error", "{m}");
            assert_eq!(m["id"], "x");
            assert_eq!(m["payload"][0]["extensions"]["code"], "FORBIDDEN", "{m}");
        }
        other => panic!("expected an error, got {other:?}"),
    }
    // Services mutate; they have no feed.
    let mut s = WsClient::ready(&app, &app.service).await;
    s.subscribe("s", BALANCE_CHANGED, json!({})).await;
    match s.recv().await {
        Got::Msg(m) => assert_eq!(m["payload"][0]["extensions"]["code"], "FORBIDDEN", "{m}"),
        other => panic!("expected an error, got {other:?}"),
    }
    // Partners may name anyone, but only someone who exists.
    let mut p = WsClient::ready(&app, &app.partner_token()).await;
    p.subscribe("p", BALANCE_CHANGED, json!({ "u": 999_999 }))
        .await;
    match p.recv().await {
        Got::Msg(m) => assert_eq!(
            m["payload"][0]["extensions"]["code"], "USER_NOT_FOUND",
            "{m}"
        ),
        other => panic!("expected an error, got {other:?}"),
    }
    app.wait_subscriptions(0).await;
    app.recharge(v, 5, "o", None).await;
    c.quiet(QUIET).await;
    s.quiet(QUIET).await;
}

async fn a_slow_subscriber_blocks_no_one(app: TestApp) {
    let u = app.create_user("busy").await;
    app.recharge(u, 1_000_000, "o", None).await;
    let mut slow = WsClient::connect_small_buffer(&app).await;
    match slow.init(&app.partner_token()).await {
        Got::Msg(m) => assert_eq!(m["type"], "connection_ack"),
        other => panic!("{other:?}"),
    }
    // 64 operations on the slow connection: every change is 64
    // frames for a client that reads none, more than socket buffers hold.
    const SLOW_OPS: usize = 64;
    for i in 0..SLOW_OPS {
        slow.subscribe(&format!("slow{i}"), BALANCE_CHANGED, json!({}))
            .await;
    }
    let mut fast = WsClient::ready(&app, &app.user_token(u)).await;
    fast.subscribe("fast", BALANCE_CHANGED, json!({})).await;
    app.wait_subscriptions(SLOW_OPS + 1).await;

    // 400 consumes from 8 tasks while `slow` reads nothing and `fast`
    // keeps reading, as a client that keeps up does.
    const N: i64 = 400;
    let reader = tokio::spawn(async move {
        let mut balance = 1_000_000;
        for _ in 0..N {
            let ev = fast.change().await;
            check(&ev, u, "CONSUME", -1, balance);
            balance -= 1;
        }
        fast
    });
    let app = Arc::new(app);
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let app = app.clone();
            tokio::spawn(async move {
                for i in 0..N / 8 {
                    let r = app
                        .consume(u, 1, "TTS", &format!("t{t}-{i}"), Some(1.0))
                        .await;
                    assert!(r["errors"].is_null(), "{r}");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    // The fast subscriber got every change, in chain order.
    let _fast = reader.await.unwrap();
    let balance = 1_000_000 - N;
    // The slow one now reads: per operation a consistent history, where
    // any gap is bridged by a resync carrying the balance to continue from.
    let mut last: std::collections::HashMap<String, i64> = Default::default();
    let (mut events, mut resyncs) = (0, 0);
    while last.len() < SLOW_OPS || last.values().any(|&b| b != balance) {
        let m = match slow.recv().await {
            Got::Msg(m) => m,
            other => panic!("{other:?}"),
        };
        assert_eq!(m["type"], "next", "{m}");
        let id = m["id"].as_str().unwrap().to_owned();
        let ev = &m["payload"]["data"]["balanceChanged"];
        if ev["resync"] == json!(true) {
            resyncs += 1;
            assert!(ev["entry"].is_null());
        } else {
            events += 1;
            if let Some(prev) = last.get(&id) {
                assert_eq!(
                    ev["entry"]["balanceBefore"],
                    json!(prev),
                    "gap without a resync: {m}"
                );
            }
        }
        last.insert(id, ev["balance"].as_i64().unwrap());
    }
    slow.quiet(QUIET).await;
    println!("slow subscriber: {events} events, {resyncs} resyncs over {SLOW_OPS} operations");
    assert!(
        resyncs >= 1,
        "the slow subscriber never fell behind; the test proves nothing"
    );
}

both_engines!(
    events_follow_the_ledger,
    users_follow_only_their_own_balance
);

/// A short per-subscriber queue, so that 400 changes overflow it for a
/// client that reads nothing; long enough that one that keeps reading on a
/// loaded machine (8 writers at once) does not fall behind.
async fn spawn_short_queue(engine: Engine) -> TestApp {
    spawn_with(engine, |s| s.subscriber_queue = 32).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_blocks_no_one_sqlite() {
    a_slow_subscriber_blocks_no_one(spawn_short_queue(Engine::Sqlite).await).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_blocks_no_one_postgres() {
    a_slow_subscriber_blocks_no_one(spawn_short_queue(Engine::Postgres).await).await
}

fn code_of(got: Got) -> (u16, String) {
    match got {
        Got::Closed(code, reason) => (code, reason),
        Got::Msg(m) => panic!("expected a close, got {m}"),
    }
}

#[tokio::test]
async fn every_graphql_transport_ws_close_code() {
    let app = spawn_with(Engine::Sqlite, |s| s.ws_init_timeout_ms = 300).await;
    let u = app.create_user("codes").await;

    // 4400: not JSON, an unknown type, a binary frame, a subscribe without id.
    for bad in [
        Message::text("{nope"),
        Message::text(json!({ "type": "bogus" }).to_string()),
        Message::binary(vec![1u8, 2, 3]),
        Message::text(
            json!({ "type": "subscribe", "payload": { "query": "{ me { id } }" } }).to_string(),
        ),
    ] {
        let mut c = WsClient::ready(&app, &app.user_token(u)).await;
        c.send_raw(bad).await;
        let (code, reason) = c.closed().await;
        assert_eq!(code, 4400, "{reason}");
    }
    // 4401: subscribe before connection_init.
    let mut c = WsClient::connect(&app, "graphql-transport-ws").await;
    c.subscribe("1", BALANCE_CHANGED, json!({})).await;
    assert_eq!(code_of(c.recv().await).0, 4401);
    // 4403: a forged token, an expired one, none at all.
    let forged = points_gateway::auth::TokenKeys::new(
        &points_gateway::config::JwtSecret::new(vec![1u8; 32]).unwrap(),
    )
    .mint(
        points_gateway::auth::Role::Partner,
        None,
        chrono::Duration::hours(1),
    )
    .unwrap();
    let expired = app
        .keys
        .mint(
            points_gateway::auth::Role::Partner,
            None,
            chrono::Duration::hours(-2),
        )
        .unwrap();
    for token in [forged, expired] {
        let mut c = WsClient::connect(&app, "graphql-transport-ws").await;
        let (code, reason) = code_of(c.init(&token).await);
        assert_eq!(code, 4403, "{reason}");
    }
    let mut c = WsClient::connect(&app, "graphql-transport-ws").await;
    c.send(json!({ "type": "connection_init" })).await;
    assert_eq!(code_of(c.recv().await).0, 4403);
    // 4408: no connection_init in time.
    let mut c = WsClient::connect(&app, "graphql-transport-ws").await;
    let (code, reason) = code_of(c.recv().await);
    assert_eq!(
        (code, reason.as_str()),
        (4408, "Connection initialisation timeout")
    );
    // 4409: a second subscribe with a running operation's id; the reason
    // is cut to 123 bytes even for a long id.
    let mut c = WsClient::ready(&app, &app.user_token(u)).await;
    let id = "界".repeat(40); // 120 bytes
    c.subscribe(&id, BALANCE_CHANGED, json!({})).await;
    app.wait_subscriptions(1).await;
    c.subscribe(&id, BALANCE_CHANGED, json!({})).await;
    let (code, reason) = code_of(c.recv().await);
    assert_eq!(code, 4409);
    assert!(
        reason.len() <= 123 && reason.starts_with("Subscriber for 界"),
        "{reason}"
    );
    // 4429: a second connection_init.
    let mut c = WsClient::ready(&app, &app.user_token(u)).await;
    let (code, _) = code_of(c.init(&app.user_token(u)).await);
    assert_eq!(code, 4429);
    // ping is answered with pong.
    let mut c = WsClient::ready(&app, &app.user_token(u)).await;
    c.send(json!({ "type": "ping" })).await;
    match c.recv().await {
        Got::Msg(m) => assert_eq!(m["type"], "pong"),
        other => panic!("{other:?}"),
    }
    // An unknown subprotocol is refused at the upgrade.
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        app.url.replace("http://", "ws://") + "/graphql",
    )
    .unwrap();
    req.headers_mut()
        .insert("sec-websocket-protocol", "mqtt".parse().unwrap());
    assert!(tokio_tungstenite::connect_async(req).await.is_err());
}

#[tokio::test]
async fn an_expired_token_ends_the_subscription() {
    let app = spawn_app(Engine::Sqlite).await;
    let u = app.create_user("brief").await;
    let token = app
        .keys
        .mint(
            points_gateway::auth::Role::User,
            Some(u),
            chrono::Duration::seconds(2),
        )
        .unwrap();
    let mut c = WsClient::ready(&app, &token).await;
    c.subscribe("1", BALANCE_CHANGED, json!({})).await;
    app.wait_subscriptions(1).await;
    app.recharge(u, 3, "o", None).await;
    check(&c.change().await, u, "RECHARGE", 3, 0);
    let (code, reason) = c.closed().await;
    assert_eq!((code, reason.as_str()), (4403, "Forbidden: token expired"));
    app.wait_subscriptions(0).await;
}

#[tokio::test]
async fn the_legacy_graphql_ws_protocol() {
    let app = spawn_app(Engine::Sqlite).await;
    let u = app.create_user("old").await;
    let mut c = WsClient::connect(&app, "graphql-ws").await;
    match c.init(&app.user_token(u)).await {
        Got::Msg(m) => assert_eq!(m["type"], "connection_ack"),
        other => panic!("{other:?}"),
    }
    c.subscribe("7", BALANCE_CHANGED, json!({})).await;
    app.wait_subscriptions(1).await;
    app.recharge(u, 9, "o", None).await;
    check(&c.change().await, u, "RECHARGE", 9, 0);
    c.send(json!({ "type": "stop", "id": "7" })).await;
    match c.recv().await {
        Got::Msg(m) => assert_eq!(m, json!({ "type": "complete", "id": "7" })),
        other => panic!("{other:?}"),
    }
    app.wait_subscriptions(0).await;
    // Queries run too, as one `data` and a `complete`.
    c.subscribe("q", "{ me { balance } }", json!({})).await;
    match c.recv().await {
        Got::Msg(m) => assert_eq!(m["payload"]["data"]["me"]["balance"], 9, "{m}"),
        other => panic!("{other:?}"),
    }
    match c.recv().await {
        Got::Msg(m) => assert_eq!(m["type"], "complete"),
        other => panic!("{other:?}"),
    }
    // A refused init: connection_error, then the close.
    let mut c = WsClient::connect(&app, "graphql-ws").await;
    match c.init("not-a-token").await {
        Got::Msg(m) => assert_eq!(m["type"], "connection_error", "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(c.closed().await.0, 4403);
}

/// A row inserted and rolled back on PostgreSQL: the trigger ran, but
/// `NOTIFY` is transactional, so no one hears of it.
#[tokio::test]
async fn postgres_rollback_announces_nothing() {
    use sea_orm::{ConnectionTrait, Statement, TransactionTrait};
    let app = spawn_app(Engine::Postgres).await;
    let u = app.create_user("rb").await;
    let mut c = WsClient::ready(&app, &app.partner_token()).await;
    c.subscribe("1", BALANCE_CHANGED, json!({})).await;
    app.wait_subscriptions(1).await;
    let txn = app.db.begin().await.unwrap();
    txn.execute_raw(Statement::from_string(
        sea_orm::DbBackend::Postgres,
        format!(
            "INSERT INTO mjk_point_transactions (user_id, type, amount, balance_before, balance_after, created_at, updated_at) \
             SELECT uuid, 'recharge', 5, 0, 5, now(), now() FROM gw_users WHERE id = {u}"
        ),
    ))
    .await
    .unwrap();
    txn.rollback().await.unwrap();
    app.recharge(u, 2, "o", None).await;
    check(&c.change().await, u, "RECHARGE", 2, 0);
    c.quiet(QUIET).await;
}

/// Events are numbered when written and committed in another order: a
/// transaction that wrote first and commits last is still announced (the
/// tail waits for the id it has not seen), after the one that overtook it.
#[tokio::test]
async fn postgres_delivers_a_commit_that_was_overtaken() {
    use points_gateway::domain::ledger::{recharge_in, RowTime};
    let app = spawn_app(Engine::Postgres).await;
    let slow = app.create_user("slow").await;
    let fast = app.create_user("fast").await;
    let mut c = WsClient::ready(&app, &app.partner_token()).await;
    c.subscribe("1", BALANCE_CHANGED, json!({})).await;
    app.wait_subscriptions(1).await;
    let req = crate::helpers::gift(slow, 5, "slow-order");
    let mut tx = app.store.begin_write().await.unwrap();
    recharge_in(&mut tx, &req, &req.fingerprint(), RowTime::Now)
        .await
        .unwrap();
    app.recharge(fast, 7, "fast-order", None).await;
    check(&c.change().await, fast, "RECHARGE", 7, 0);
    tokio::time::sleep(Duration::from_millis(700)).await;
    tx.commit().await.unwrap();
    check(&c.change().await, slow, "RECHARGE", 5, 0);
    c.quiet(QUIET).await;
}

/// Two instances on one PostgreSQL: a change made through either reaches
/// subscribers of both, in ledger order.
#[tokio::test]
async fn postgres_delivers_across_instances() {
    let url = fresh_postgres_url().await;
    let a = spawn_on(url.clone(), tempfile::tempdir().unwrap()).await;
    let b = spawn_on(url, tempfile::tempdir().unwrap()).await;
    let u = a.create_user("both").await;
    let mut on_b = WsClient::ready(&b, &b.user_token(u)).await;
    on_b.subscribe("1", BALANCE_CHANGED, json!({})).await;
    let mut on_a = WsClient::ready(&a, &a.partner_token()).await;
    on_a.subscribe("1", BALANCE_CHANGED, json!({ "u": u }))
        .await;
    b.wait_subscriptions(1).await;
    a.wait_subscriptions(1).await;
    a.recharge(u, 50, "o1", None).await;
    b.consume(u, 20, "VIDEO", "v1", Some(4.0)).await;
    a.refund("VIDEO", "v1", "r1", None).await;
    for c in [&mut on_b, &mut on_a] {
        check(&c.change().await, u, "RECHARGE", 50, 0);
        check(&c.change().await, u, "CONSUME", -20, 50);
        check(&c.change().await, u, "REFUND", 20, 30);
        c.quiet(QUIET).await;
    }
}

/// Restarts the shared PostgreSQL cluster, so scripts/test.sh runs it on
/// its own after the other tests (`--ignored`): the listener reconnects
/// and subscribers get a resync with the current balance, then live events
/// again.
#[tokio::test]
#[ignore = "restarts the PostgreSQL cluster; scripts/test.sh runs it alone"]
async fn postgres_restart_is_followed_by_a_resync() {
    let restart = std::env::var("TEST_PG_RESTART").expect(
        "TEST_PG_RESTART: a command restarting the test cluster (scripts/pg-throwaway.sh sets it)",
    );
    let app = spawn_app(Engine::Postgres).await;
    let u = app.create_user("rs").await;
    let mut own = WsClient::ready(&app, &app.user_token(u)).await;
    own.subscribe("1", BALANCE_CHANGED, json!({})).await;
    let mut all = WsClient::ready(&app, &app.partner_token()).await;
    all.subscribe("1", BALANCE_CHANGED, json!({})).await;
    app.wait_subscriptions(2).await;
    app.recharge(u, 77, "o1", None).await;
    check(&own.change().await, u, "RECHARGE", 77, 0);
    check(&all.change().await, u, "RECHARGE", 77, 0);

    let status = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&restart)
        .status()
        .await
        .unwrap();
    assert!(status.success(), "restart command failed");

    for c in [&mut own, &mut all] {
        let ev = c.change().await;
        assert_eq!(ev["resync"], json!(true), "{ev}");
        assert_eq!(ev["userId"], json!(u));
        assert_eq!(ev["balance"], json!(77));
        assert!(ev["entry"].is_null());
    }
    // Live again: the pool reconnects for the mutation, the listener
    // already has.
    let mut r = Value::Null;
    for _ in 0..50 {
        r = app.consume(u, 7, "SCRIPT", "after", None).await;
        if r["errors"].is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(r["errors"].is_null(), "{r}");
    check(&own.change().await, u, "CONSUME", -7, 77);
    check(&all.change().await, u, "CONSUME", -7, 77);
}

/// The tail's poll runs every few milliseconds on every instance: each of
/// its reads must stay a primary-key lookup under the generic plans the
/// gateway's sessions use, with the tables as large as a platform's (a
/// first version's plan hash-joined `gw_holds` and took 43 ms per
/// delivery at a million ledger rows).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_poll_reads_by_primary_key_under_generic_plans() {
    use points_gateway::store::postgres::tail::POLL_SQL;
    use sea_orm::ConnectionTrait;

    let app = spawn_app(Engine::Postgres).await;
    let (_, txn) = app.at_scale("polled").await;
    txn.execute_unprepared(&format!("PREPARE poll AS {POLL_SQL}"))
        .await
        .unwrap();
    let plan = crate::helpers::explain(&txn, "EXECUTE poll(39000, '1,2', 100)").await;
    // Nor is it compiled: a generic plan over a busy ten minutes of events
    // crossed `jit_above_cost` and spent 17–40 ms compiling every poll.
    let jit: String = txn
        .query_one_raw(sea_orm::Statement::from_string(
            app.db.get_database_backend(),
            "SELECT current_setting('jit') AS jit",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get("", "jit")
        .unwrap();
    assert_eq!(jit, "off");
    for table in ["gw_events", "mjk_point_transactions", "gw_holds"] {
        assert!(
            plan.contains(&format!("Index Scan using {table}_pkey on {table}")),
            "{table} not read by its primary key:\n{plan}"
        );
        assert!(!plan.contains(&format!("Seq Scan on {table}")), "{plan}");
    }
    for join in ["Hash Join", "Merge Join"] {
        assert!(!plan.contains(join), "{join} in the poll:\n{plan}");
    }
    txn.rollback().await.unwrap();
}
