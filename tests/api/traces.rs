//! OpenTelemetry traces exported over OTLP/HTTP to a local receiver (the
//! test's own, taking `POST /v1/traces` JSON as a collector would): a
//! caller's `traceparent` is the parent of the request's span; the trace
//! holds the GraphQL operation, its database statements and the fal call;
//! the fal call carries the trace on; no statement text holds a value.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::routing::post;
use axum::Router;
use points_gateway::auth::Role;
use serde_json::{json, Value};

use crate::fal_standin::{line, Scenario, StandIn};
use crate::process::{token, Gateway};

/// Every span the receiver got: `(traceId, name, attributes as JSON)`.
type Spans = Arc<Mutex<Vec<(String, String, Value)>>>;

async fn receiver() -> (String, Spans) {
    let spans: Spans = Arc::default();
    let got = spans.clone();
    let app = Router::new().route(
        "/v1/traces",
        post(move |body: axum::body::Bytes| {
            let got = got.clone();
            async move {
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                for rs in v["resourceSpans"].as_array().into_iter().flatten() {
                    for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                        for sp in ss["spans"].as_array().into_iter().flatten() {
                            got.lock().unwrap().push((
                                sp["traceId"].as_str().unwrap_or_default().to_owned(),
                                sp["name"].as_str().unwrap_or_default().to_owned(),
                                sp["attributes"].clone(),
                            ));
                        }
                    }
                }
                axum::Json(json!({}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, spans)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_trace_holds_the_operation_its_statements_and_the_fal_call() {
    let (otlp, spans) = receiver().await;
    let fal = StandIn::start().await;
    fal.set(
        "fal-key-TRACESECRET-1234",
        Scenario::Pages(vec![vec![line("fal-ai/flux/dev", "image", 2.0, 0.025)]]),
    );
    let dir = tempfile::tempdir().unwrap();
    let url = crate::helpers::database_url(crate::helpers::Engine::Sqlite, &dir).await;
    let mut gw = Gateway::start(
        &url,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("FAL_API_BASE_URL", fal.url.as_str()),
        ],
        Stdio::null(),
    );
    {
        use sea_orm::{ConnectionTrait, Database};
        let db = Database::connect(url.as_str()).await.unwrap();
        db.execute_unprepared("INSERT INTO ts_fal_account (name, api_key, balance, use_cnt, error_cnt, status) VALUES ('traced', 'fal-key-TRACESECRET-1234', 1, 0, 0, 1)")
            .await
            .unwrap();
    }
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client = reqwest::Client::new();
    // Each request in the caller's trace; each answered without errors.
    let send = |query: &'static str, vars: Value| {
        let req = client
            .post(format!("{}/graphql", gw.url))
            .bearer_auth(token(Role::Admin))
            .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
            .json(&json!({ "query": query, "variables": vars }));
        async move {
            let r: Value = req.send().await.unwrap().json().await.unwrap();
            assert!(r["errors"].is_null(), "{r}");
        }
    };
    send(
        "mutation { createUser(input: {name: \"traced\"}) { id } }",
        json!({}),
    )
    .await;
    send(
        "query Costs($from: DateTime!, $to: DateTime!) { accountCosts(from: $from, to: $to) { falUsage { totalCostUsd } } }",
        json!({ "from": "2026-02-01T00:00:00Z", "to": "2026-02-07T00:00:00Z" }),
    )
    .await;

    // fal got our trace, with a span id of the gateway's own.
    let carried = fal.recorded.lock().unwrap().traceparents.clone();
    assert!(
        carried
            .iter()
            .any(|t| t.starts_with(&format!("00-{trace_id}-")) && !t.contains("00f067aa0ba902b7")),
        "{carried:?}"
    );
    // The receiver gets the request, operation, statement and fal spans,
    // all in the caller's trace.
    let started = Instant::now();
    let names = loop {
        let names: Vec<String> = spans
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _, _)| t.eq_ignore_ascii_case(trace_id))
            .map(|(_, n, _)| n.clone())
            .collect();
        let has = |p: &str| names.iter().any(|n| n.starts_with(p));
        if has("request") && has("graphql operation") && has("db ") && has("fal GET") {
            break names;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "spans of the trace so far: {names:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        names.iter().filter(|n| n.starts_with("db ")).count() >= 2,
        "{names:?}"
    );
    // No value in any exported attribute: the key, the user's name.
    let all = format!("{:?}", spans.lock().unwrap());
    assert!(!all.contains("TRACESECRET"), "a fal key reached a trace");
    assert!(!all.contains("'traced'"), "a value reached a trace");
    gw.child.kill().ok();
    gw.child.wait().ok();
}
