//! Shutdown, crashes and logs, with the real binary where a process must die.

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use points_gateway::auth::Role;
use serde_json::{json, Value};

use crate::helpers::{code, fresh_postgres_url, spawn_stoppable, Engine};
use crate::process::{post, token, Gateway, SECRET};

const CONSUME: &str = "mutation($u: Int!, $id: String!) { consume(input: {userId: $u, amount: 3, sourceType: SCRIPT, sourceId: $id}) { id } }";

async fn crash_mid_stream_then_retry(database_url: String) {
    let service = token(Role::Service);
    let client = reqwest::Client::new();
    let mut gw = Gateway::start(&database_url, &[], Stdio::null());
    let r = post(
        &client,
        &gw.url,
        &service,
        "mutation { createUser(input: {name: \"crash\"}) { id } }",
        json!({}),
    )
    .await
    .unwrap();
    let u = r["data"]["createUser"]["id"].as_i64().unwrap();
    post(&client, &gw.url, &service, "mutation($u: Int!) { recharge(input: {userId: $u, amount: 100000, orderId: \"c\", moneyCents: 100}) { id } }", json!({ "u": u })).await.unwrap();

    const N: usize = 300;
    let next = Arc::new(Mutex::new(0usize));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (next, acked, client, url, service) = (
            next.clone(),
            acked.clone(),
            client.clone(),
            gw.url.clone(),
            service.clone(),
        );
        workers.push(tokio::spawn(async move {
            loop {
                let i = {
                    let mut n = next.lock().unwrap();
                    if *n >= N {
                        return;
                    }
                    *n += 1;
                    *n - 1
                };
                match post(
                    &client,
                    &url,
                    &service,
                    CONSUME,
                    json!({ "u": u, "id": format!("c{i}") }),
                )
                .await
                {
                    Ok(r) if r["data"]["consume"]["id"].is_string() => {
                        acked.lock().unwrap().push(i)
                    }
                    _ => return,
                }
            }
        }));
    }
    let waiting = std::time::Instant::now();
    while acked.lock().unwrap().len() < 60 {
        assert!(
            waiting.elapsed() < std::time::Duration::from_secs(120),
            "the stream stalled before 60 acknowledgements"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    gw.child.kill().unwrap(); // SIGKILL, mid-stream
    gw.child.wait().unwrap();
    for w in workers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 60 && acked.len() < N,
        "acknowledged {}",
        acked.len()
    );

    // After a restart: every acknowledged consume is there and the ledger is sound.
    let gw = Gateway::start(&database_url, &[], Stdio::null());
    let store = points_gateway::store::Store::connect(&database_url, 2)
        .await
        .unwrap();
    let (_, violations) = points_gateway::domain::verify::verify(&store)
        .await
        .unwrap();
    let db = store.connection().clone();
    assert!(violations.is_empty(), "{violations:?}");
    let count = |db: sea_orm::DatabaseConnection| async move {
        use sea_orm::{ConnectionTrait, Statement};
        let r = db
            .query_one_raw(Statement::from_string(db.get_database_backend(), "SELECT COUNT(*) AS n, COALESCE(MAX(balance_before), 0) AS m FROM mjk_point_transactions WHERE type = 'consume'"))
            .await
            .unwrap()
            .unwrap();
        r.try_get::<i64>("", "n").unwrap()
    };
    let after_crash = count(db.clone()).await as usize;
    assert!(
        after_crash >= acked.len(),
        "{after_crash} rows for {} acknowledged",
        acked.len()
    );
    assert!(
        after_crash <= acked.len() + 4,
        "at most the in-flight ones beyond the acknowledged"
    );
    eprintln!(
        "crash test: {} acknowledged before SIGKILL, {after_crash} consume rows after restart",
        acked.len()
    );

    // Retrying every key applies each exactly once.
    for i in 0..N {
        let r = post(
            &client,
            &gw.url,
            &service,
            CONSUME,
            json!({ "u": u, "id": format!("c{i}") }),
        )
        .await
        .unwrap();
        assert!(r["data"]["consume"]["id"].is_string(), "c{i}: {r}");
    }
    assert_eq!(count(db.clone()).await as usize, N);
    let r = post(
        &client,
        &gw.url,
        &token(Role::Admin),
        "query($u: Int!) { user(id: $u) { balance } }",
        json!({ "u": u }),
    )
    .await
    .unwrap();
    assert_eq!(r["data"]["user"]["balance"], 100_000 - 3 * N as i64);
    let (_, violations) = points_gateway::domain::verify::verify(&store)
        .await
        .unwrap();
    assert!(violations.is_empty(), "{violations:?}");
    let mut gw = gw;
    gw.child.kill().unwrap();
    gw.child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_gateway_loses_no_acknowledged_mutation_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    crash_mid_stream_then_retry(format!(
        "sqlite://{}/crash.sqlite?mode=rwc",
        dir.path().display()
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_gateway_loses_no_acknowledged_mutation_postgres() {
    crash_mid_stream_then_retry(fresh_postgres_url().await).await;
}

async fn shutdown_finishes_in_flight_mutations(engine: Engine) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message};

    let (app, stop, server) = spawn_stoppable(engine).await;
    let u = app.create_user("late").await;
    app.recharge(u, 10_000, "o", None).await;
    // A WebSocket client connected across the shutdown.
    let mut req = (app.url.replace("http://", "ws://") + "/graphql")
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    ws.send(Message::text(json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {}", app.admin) } }).to_string())).await.unwrap();
    assert!(ws
        .next()
        .await
        .unwrap()
        .unwrap()
        .to_text()
        .unwrap()
        .contains("connection_ack"));

    let app = Arc::new(app);
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let app = app.clone();
            tokio::spawn(async move {
                let client = reqwest::Client::new(); // one connection each
                post(
                    &client,
                    &app.url,
                    &app.service,
                    CONSUME,
                    json!({ "u": u, "id": format!("s{i}") }),
                )
                .await
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(15)).await;
    stop.send(()).unwrap();
    let mut acked = 0;
    // A request refused after shutdown began never happened; one answered
    // committed.
    let mut refused = 0;
    for t in tasks {
        if let Ok(r) = t.await.unwrap() {
            assert!(
                r["data"]["consume"]["id"].is_string(),
                "an answered mutation committed: {r}"
            );
            acked += 1;
        } else {
            refused += 1;
        }
    }
    eprintln!("shutdown test: {acked} answered, {refused} refused");
    match ws.next().await {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1001),
        other => panic!("expected a 1001 close frame, got {other:?}"),
    }
    tokio::time::timeout(std::time::Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        app.count("mjk_point_transactions").await,
        1 + acked,
        "answered = committed"
    );
    app.assert_verify_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_mutations_in_flight_answers_or_never_applies_sqlite() {
    shutdown_finishes_in_flight_mutations(Engine::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_mutations_in_flight_answers_or_never_applies_postgres() {
    shutdown_finishes_in_flight_mutations(Engine::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_json_with_request_ids_and_never_carry_secrets() {
    let fal = crate::fal_standin::StandIn::start().await;
    let fal_key = "fal-admin-LOGSECRET-9f8e7d6c5b4a";
    fal.set(fal_key, crate::fal_standin::Scenario::Status(403, None));
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/logs.sqlite?mode=rwc", dir.path().display());
    let log_path = dir.path().join("stderr.log");
    let log_file = std::fs::File::create(&log_path).unwrap();
    let mut gw = Gateway::start(
        &db,
        &[
            ("LOG_FORMAT", "json"),
            ("RUST_LOG", "debug"),
            ("FAL_API_BASE_URL", &fal.url),
        ],
        Stdio::from(log_file),
    );
    let dbc = points_gateway::store::Store::connect(&db, 1)
        .await
        .unwrap()
        .connection()
        .clone();
    use sea_orm::{ConnectionTrait, Statement};
    dbc.execute_raw(Statement::from_sql_and_values(
        dbc.get_database_backend(),
        "INSERT INTO ts_fal_account (name, api_key, balance, use_cnt, error_cnt, status) VALUES ('k', $1, 0, 0, 0, 1)",
        [fal_key.into()],
    ))
    .await
    .unwrap();
    let client = reqwest::Client::new();
    let admin = token(Role::Admin);
    let service = token(Role::Service);
    let r = post(&client, &gw.url, &admin, "{ accountCosts(from: \"2026-01-01T00:00:00Z\", to: \"2026-01-02T00:00:00Z\") { falUsage { totalCostUsd } } }", json!({})).await.unwrap();
    assert_eq!(code(&r), Some("UPSTREAM_ERROR"));
    post(
        &client,
        &gw.url,
        &service,
        "mutation { createUser(input: {name: \"logged\"}) { id } }",
        json!({}),
    )
    .await
    .unwrap();
    let forged =
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4Iiwicm9sZSI6ImFkbWluIiwiZXhwIjo5OTk5OTk5OTk5fQ.Zm9yZ2Vk";
    post(&client, &gw.url, forged, "{ me { id } }", json!({}))
        .await
        .unwrap();
    // Graceful stop on SIGTERM.
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(gw.child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let exit = gw.child.wait().unwrap();
    assert!(exit.success(), "exit after SIGTERM: {exit:?}");

    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(!logs.is_empty());
    for line in logs.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        assert!(v["level"].is_string(), "{line}");
    }
    assert!(logs.contains("request_id"), "request ids in the logs");
    // Field values are plain JSON strings, not Debug-quoted inside them.
    let operation = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["fields"]["message"] == "graphql operation")
        .map(|v| v["fields"]["operation"].clone())
        .expect("an operation line");
    assert!(
        operation.as_str().is_some_and(|o| !o.starts_with('"')),
        "{operation}"
    );
    assert!(
        !logs.contains("\\\""),
        "escaped quotes inside a field: {logs}"
    );
    assert!(
        logs.contains("fal usage call failed"),
        "the upstream failure is logged"
    );
    assert!(logs.contains("shutdown"), "the shutdown is logged");
    for secret in [
        fal_key,
        "LOGSECRET",
        SECRET,
        admin.as_str(),
        service.as_str(),
        forged,
    ] {
        assert!(
            !logs.contains(secret),
            "a secret reached the logs: {secret}"
        );
    }
}

/// A rollout: instances started at the same moment on one fresh
/// PostgreSQL database all come up (the migrations run under a lock, one
/// instance after the other), and serve the same schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn instances_started_together_on_a_fresh_database_all_serve() {
    let url = crate::helpers::fresh_postgres_url().await;
    let starts: Vec<_> = (0..3)
        .map(|_| {
            let settings = crate::helpers::settings(&url);
            tokio::spawn(async move {
                points_gateway::startup::Application::build(settings, crate::helpers::test_keys())
                    .await
                    .map(|app| app.port())
                    .map_err(|e| format!("{e:#}"))
            })
        })
        .collect();
    let mut ports = Vec::new();
    for s in starts {
        ports.push(
            s.await
                .unwrap()
                .unwrap_or_else(|e| panic!("an instance failed: {e}")),
        );
    }
    assert_eq!(ports.len(), 3);
    let migrations: i64 = crate::adopt::one(&url, "SELECT COUNT(*) FROM seaql_migrations").await;
    use migration::MigratorTrait;
    assert_eq!(
        migrations as usize,
        migration::Migrator::migrations().len(),
        "each migration recorded once"
    );
}
