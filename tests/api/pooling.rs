//! The gateway behind Debian's PgBouncer 1.18 (no prepared-statement
//! tracking), configured as most setups configure it
//! (`ignore_startup_parameters = extra_float_digits`, nothing else bent
//! for the gateway), in session and in transaction mode: the settings it
//! relies on hold on its sessions or transactions, balance events arrive,
//! money stays exact under concurrency, replays and refunds write once,
//! holds settle, and `verify` is clean. In transaction mode PgBouncer has
//! four server connections for the gateway's ten, so one client's
//! transactions land on different servers.

use std::sync::Arc;

use serde_json::json;

use crate::helpers::{spawn_with, Engine};
use crate::pgbouncer::{PgBouncer, PoolMode};
use crate::ws_client::{WsClient, BALANCE_CHANGED};

async fn show(db: &sea_orm::DatabaseConnection, setting: &str) -> String {
    use sea_orm::{ConnectionTrait, Statement};
    let r = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            format!("SHOW {setting}"),
        ))
        .await
        .unwrap()
        .unwrap();
    r.try_get_by_index::<String>(0).unwrap()
}

/// What runs through the pooler, in either mode.
async fn exercise(app: crate::helpers::TestApp) {
    let u = app.create_user("pooled").await;
    app.recharge(u, 100, "pooled-1", None).await;
    let mut ws = WsClient::ready(&app, &app.admin).await;
    ws.subscribe("1", BALANCE_CHANGED, json!({ "u": u })).await;
    app.wait_subscriptions(1).await;

    // 40 consumes of 3 at once against 100 points: exactly 33 succeed.
    let app = Arc::new(app);
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let app = app.clone();
            tokio::spawn(async move { app.consume(u, 3, "SCRIPT", &format!("p{i}"), None).await })
        })
        .collect();
    let mut ok = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        let r = t.await.unwrap();
        match r["errors"][0]["extensions"]["code"].as_str() {
            None => ok.push((format!("p{i}"), r["data"]["consume"]["id"].clone())),
            Some(code) => assert_eq!(code, "INSUFFICIENT_BALANCE", "{r}"),
        }
    }
    assert_eq!(ok.len(), 33);
    assert_eq!(app.balance(u).await, 1);
    // Every change reached the subscriber.
    for _ in 0..33 {
        let ev = ws.change().await;
        assert_eq!(ev["userId"], u);
    }
    // A retry replays the row it wrote; a refund goes through once.
    let (key, id) = &ok[0];
    let again = app.consume(u, 3, "SCRIPT", key, None).await;
    assert_eq!(&again["data"]["consume"]["id"], id, "{again}");
    let refunded = app.refund("SCRIPT", key, "r1", None).await;
    assert!(refunded["errors"].is_null(), "{refunded}");
    let twice = app.refund("SCRIPT", key, "r1", None).await;
    assert_eq!(
        twice["data"]["refund"]["id"],
        refunded["data"]["refund"]["id"]
    );
    assert_eq!(app.balance(u).await, 4);
    // A hold and its capture.
    let held = app
        .gql(
            &app.service,
            "mutation($u: Int!) { hold(input: {userId: $u, amount: 2, sourceType: SCRIPT, sourceId: \"h1\"}) { id } }",
            json!({ "u": u }),
        )
        .await;
    let hold = held["data"]["hold"]["id"].clone();
    assert!(hold.is_string() || hold.is_number(), "{held}");
    let captured = app
        .gql(
            &app.service,
            "mutation { captureHold(input: {sourceType: SCRIPT, sourceId: \"h1\", amount: 2}) { status } }",
            json!({}),
        )
        .await;
    assert!(captured["errors"].is_null(), "{captured}");
    assert_eq!(app.balance(u).await, 2);
    // Reads: a usage page with its count.
    let page = app
        .gql(
            &app.service,
            "query($u: Int!) { usageDetails(userId: $u, first: 50) { totalCount edges { node { id } } } }",
            json!({ "u": u }),
        )
        .await;
    assert_eq!(page["data"]["usageDetails"]["totalCount"], 36, "{page}");
    app.assert_verify_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn behind_pgbouncer_in_session_mode_settings_hold_and_money_is_exact() {
    let server = std::env::var("TEST_DATABASE_URL").expect("TEST_DATABASE_URL");
    let bouncer = PgBouncer::start(&server, PoolMode::Session);
    let app = spawn_with(Engine::Postgres, |s| {
        s.database_url = bouncer.url_for(&s.database_url);
        s.request_timeout_ms = 7_000;
    })
    .await;
    assert!(
        app.database_url.contains(&format!(":{}/", bouncer.port)),
        "{}",
        app.database_url
    );
    // The session settings of DESIGN.md, on the gateway's own sessions.
    assert_eq!(show(&app.db, "statement_timeout").await, "7s");
    assert_eq!(show(&app.db, "jit").await, "off");
    assert_eq!(show(&app.db, "plan_cache_mode").await, "force_generic_plan");
    assert_eq!(show(&app.db, "TimeZone").await, "Asia/Shanghai");
    assert_eq!(show(&app.db, "application_name").await, "points-gateway");
    exercise(app).await;
    assert!(
        !bouncer.log().contains("unsupported startup parameter"),
        "{}",
        bouncer.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn behind_pgbouncer_in_transaction_mode_every_transaction_is_set_and_money_is_exact() {
    let server = std::env::var("TEST_DATABASE_URL").expect("TEST_DATABASE_URL");
    let bouncer = PgBouncer::start(&server, PoolMode::Transaction);
    let app = spawn_with(Engine::Postgres, |s| {
        s.database_listen_url = Some(s.database_url.clone());
        s.database_url = bouncer.url_for(&s.database_url);
        s.transaction_pooling = true;
        s.request_timeout_ms = 7_000;
    })
    .await;
    // The settings hold inside each of the store's transactions.
    let settings = app
        .store
        .settings_in_a_transaction(&["statement_timeout", "jit", "plan_cache_mode", "TimeZone"])
        .await
        .unwrap();
    assert_eq!(
        settings,
        ["7s", "off", "force_generic_plan", "Asia/Shanghai"]
    );
    exercise(app).await;
    let log = bouncer.log();
    assert!(!log.contains("prepared statement"), "{log}");
}
