//! The gateway behind Debian's PgBouncer in session mode, configured as
//! most setups configure it (`ignore_startup_parameters =
//! extra_float_digits`, nothing else bent for the gateway): every session
//! setting it relies on holds (they are sent after connecting, not as
//! startup `options`, which PgBouncer refuses), the event tail's `LISTEN`
//! works through it, and money stays exact under concurrency.

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
    // Every change reached the subscriber through the tail's LISTEN.
    let mut seen = 0;
    while seen < 33 {
        let ev = ws.change().await;
        assert_eq!(ev["userId"], u);
        seen += 1;
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
    app.assert_verify_clean().await;
    assert!(
        !bouncer.log().contains("unsupported startup parameter"),
        "{}",
        bouncer.log()
    );
}
