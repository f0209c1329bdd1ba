//! Rollouts and outages as an SRE meets them: `migrate` as its own step and
//! `serve --no-migrate` refusing a schema older than the build; requests
//! answered `UNAVAILABLE` (503, `Retry-After`) within about a second of
//! PostgreSQL stopping, `/readyz` likewise, and everything back, exactly
//! once, when it starts again.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use points_gateway::auth::Role;
use serde_json::{json, Value};

use crate::pg_cluster::PgCluster;
use crate::process::{token, Gateway, SECRET};

fn binary(args: &[&str], url: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_points-gateway"))
        .args(args)
        .env("DATABASE_URL", url)
        .env("GATEWAY_JWT_SECRET", SECRET)
        .env("GATEWAY_BIND", "127.0.0.1:0")
        .output()
        .unwrap()
}

async fn exec(url: &str, sql: &str) {
    use sea_orm::{ConnectionTrait, Database};
    let db = Database::connect(url).await.unwrap();
    db.execute_unprepared(sql).await.unwrap();
    db.close().await.ok();
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_without_migrating_refuses_an_older_schema_and_serves_a_current_one() {
    let url = crate::helpers::fresh_postgres_url().await;
    let o = binary(&["serve", "--no-migrate"], &url);
    assert!(!o.status.success());
    let t = text(&o);
    assert!(
        t.contains("older than this build needs") && t.contains("points-gateway migrate"),
        "{t}"
    );
    let tables: i64 = crate::adopt::one(
        &url,
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema()",
    )
    .await;
    assert_eq!(tables, 0, "serve --no-migrate created nothing");

    let o = binary(&["migrate"], &url);
    assert!(o.status.success(), "{}", text(&o));
    let mut gw = Gateway::start(&url, &[], Stdio::null());
    gw.child.kill().ok();
    gw.child.wait().ok();
    // A build one migration behind the database: its first instance
    // started with --no-migrate is refused, naming what is missing.
    exec(
        &url,
        "DELETE FROM seaql_migrations WHERE version = 'm20261203_000013_revoked_tokens'",
    )
    .await;
    let o = binary(&["serve", "--no-migrate"], &url);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("1 migration(s) not applied (from m20261203_000013_revoked_tokens)"),
        "{}",
        text(&o)
    );
    exec(
        &url,
        "INSERT INTO seaql_migrations (version, applied_at) VALUES ('m20261203_000013_revoked_tokens', 0)",
    )
    .await;
    // A database a newer build migrated (a rollout under way, or the
    // binary rolled back): served.
    exec(
        &url,
        "INSERT INTO seaql_migrations (version, applied_at) VALUES ('m20991231_000099_future', 0)",
    )
    .await;
    let mut gw = start_no_migrate(&url);
    let r = crate::process::post(
        &reqwest::Client::new(),
        &gw.url,
        &token(Role::Admin),
        "{ sourceTypes { name } }",
        json!({}),
    )
    .await
    .unwrap();
    assert!(
        r["data"]["sourceTypes"]
            .as_array()
            .is_some_and(|a| a.len() >= 6),
        "{r}"
    );
    gw.child.kill().ok();
    gw.child.wait().ok();
}

fn start_no_migrate(url: &str) -> Gateway {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_points-gateway"));
    cmd.args(["serve", "--no-migrate"]);
    Gateway::start_command(cmd, url, &[], Stdio::null())
}

/// `(status, Retry-After, code)` of one consume, and how long it took.
async fn consume(
    client: &reqwest::Client,
    url: &str,
    user: i64,
    key: &str,
) -> ((u16, Option<String>, Option<String>), Duration) {
    let started = Instant::now();
    let r = client
        .post(format!("{url}/graphql"))
        .bearer_auth(token(Role::Service))
        .json(&json!({
            "query": "mutation($u: Int!, $k: String!) { consume(input: {userId: $u, amount: 7, sourceType: SCRIPT, sourceId: $k}) { id balanceAfter } }",
            "variables": { "u": user, "k": key },
        }))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body: Value = r.json().await.unwrap();
    let code = body["errors"][0]["extensions"]["code"]
        .as_str()
        .map(str::to_owned);
    ((status, retry, code), started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_postgresql_gets_unavailable_within_a_second_and_starting_it_heals() {
    let pg = PgCluster::start();
    let mut gw = Gateway::start(&pg.url(), &[("REQUEST_TIMEOUT_MS", "10000")], Stdio::null());
    let client = reqwest::Client::new();
    let service = token(Role::Service);
    let r = crate::process::post(
        &client,
        &gw.url,
        &service,
        "mutation { createUser(input: {name: \"outage\"}) { id } }",
        json!({}),
    )
    .await
    .unwrap();
    let u = r["data"]["createUser"]["id"].as_i64().unwrap();
    crate::process::post(&client, &gw.url, &service, "mutation($u: Int!) { recharge(input: {userId: $u, amount: 1000, orderId: \"o1\", moneyCents: 100}) { id } }", json!({ "u": u })).await.unwrap();
    let (ok, _) = consume(&client, &gw.url, u, "before").await;
    assert_eq!(ok.0, 200, "{ok:?}");

    pg.stop();
    let stopped = Instant::now();
    // Every request during the outage: 503, Retry-After, UNAVAILABLE, and
    // no longer than about a second (the budget is ten).
    let mut slowest = Duration::ZERO;
    for i in 0..6 {
        let (got, took) = consume(&client, &gw.url, u, &format!("during-{i}")).await;
        assert_eq!(
            got,
            (503, Some("1".into()), Some("UNAVAILABLE".into())),
            "request {i}"
        );
        slowest = slowest.max(took);
    }
    let ready_started = Instant::now();
    let ready = client
        .get(format!("{}/readyz", gw.url))
        .send()
        .await
        .unwrap();
    let ready_took = ready_started.elapsed();
    assert_eq!(ready.status(), 503);
    eprintln!(
        "outage: slowest request {slowest:?}, /readyz {ready_took:?}, {:?} after the stop",
        stopped.elapsed()
    );
    assert!(
        slowest < Duration::from_secs(3),
        "a request waited {slowest:?}"
    );
    assert!(
        ready_took < Duration::from_millis(1500),
        "/readyz took {ready_took:?}"
    );

    pg.start_again();
    let back = Instant::now();
    loop {
        let (got, _) = consume(&client, &gw.url, u, "during-0").await;
        if got.0 == 200 {
            break;
        }
        assert_eq!(got.2.as_deref(), Some("UNAVAILABLE"), "{got:?}");
        assert!(
            back.elapsed() < Duration::from_secs(15),
            "not back: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("serving {:?} after the start", back.elapsed());
    let ready = client
        .get(format!("{}/readyz", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    // The retried key wrote once; nothing of the outage was written.
    let (again, _) = consume(&client, &gw.url, u, "during-0").await;
    assert_eq!(again.0, 200);
    let rows: i64 = crate::adopt::one(
        &pg.url(),
        &format!("SELECT COUNT(*) FROM gw_entries WHERE user_id = {u} AND type = 'consume'"),
    )
    .await;
    assert_eq!(rows, 2, "`before` and `during-0`, once each");
    let r = crate::process::post(
        &client,
        &gw.url,
        &service,
        "query($u: Int!) { user(id: $u) { balance } }",
        json!({ "u": u }),
    )
    .await
    .unwrap();
    assert_eq!(r["data"]["user"]["balance"], 1000 - 14, "{r}");
    gw.child.kill().ok();
    gw.child.wait().ok();
}
