//! GraphQL-over-HTTP rules, operation limits, rate limits, metrics.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{code, spawn_app, spawn_with, Engine, TestApp};

const GQL: &str = "application/graphql-response+json";
const JSON_T: &str = "application/json";

struct Answer {
    status: u16,
    content_type: String,
    body: Value,
}

async fn send(
    app: &TestApp,
    method: Method,
    path_query: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Answer {
    let mut req = app
        .client
        .request(method, format!("{}{}", app.url, path_query));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(b) = body {
        req = req.body(b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Answer {
        status,
        content_type,
        body,
    }
}

/// POSTs a JSON body with the given `Authorization` and no `Accept`.
async fn post_json_as(app: &TestApp, auth: &str, body: Option<Vec<u8>>) -> Answer {
    send(
        app,
        Method::POST,
        "/graphql",
        &[("authorization", auth), ("content-type", JSON_T)],
        body,
    )
    .await
}

fn post_json(q: &Value) -> Option<Vec<u8>> {
    Some(q.to_string().into_bytes())
}

#[tokio::test]
async fn every_spec_rule_gets_its_status_code_and_media_type() {
    let app = spawn_app(Engine::Sqlite).await;
    let auth = format!("Bearer {}", app.admin);
    let a = auth.as_str();
    let ok = json!({ "query": "{ falAccounts { id } }" });
    let syntax = json!({ "query": "{ falAccounts { id " });
    let invalid = json!({ "query": "{ noSuchField }" });
    // (what, method, accept, content type, body, status, media, code, has data)
    type Case<'a> = (
        &'a str,
        Method,
        Option<&'a str>,
        Option<&'a str>,
        Option<Vec<u8>>,
        u16,
        &'a str,
        Option<&'a str>,
        bool,
    );
    let cases: Vec<Case> = vec![
        (
            "gql accept",
            Method::POST,
            Some(GQL),
            Some(JSON_T),
            post_json(&ok),
            200,
            GQL,
            None,
            true,
        ),
        (
            "json accept",
            Method::POST,
            Some(JSON_T),
            Some(JSON_T),
            post_json(&ok),
            200,
            JSON_T,
            None,
            true,
        ),
        (
            "no accept",
            Method::POST,
            None,
            Some(JSON_T),
            post_json(&ok),
            200,
            JSON_T,
            None,
            true,
        ),
        (
            "wildcard",
            Method::POST,
            Some("*/*"),
            Some(JSON_T),
            post_json(&ok),
            200,
            JSON_T,
            None,
            true,
        ),
        (
            "both, gql preferred",
            Method::POST,
            Some("application/graphql-response+json, application/json;q=0.9"),
            Some(JSON_T),
            post_json(&ok),
            200,
            GQL,
            None,
            true,
        ),
        (
            "unacceptable",
            Method::POST,
            Some("text/html"),
            Some(JSON_T),
            post_json(&ok),
            406,
            JSON_T,
            Some("INVALID_INPUT"),
            false,
        ),
        (
            "no content type",
            Method::POST,
            Some(GQL),
            None,
            post_json(&ok),
            415,
            GQL,
            Some("INVALID_INPUT"),
            false,
        ),
        (
            "text/plain body",
            Method::POST,
            Some(GQL),
            Some("text/plain"),
            post_json(&ok),
            415,
            GQL,
            Some("INVALID_INPUT"),
            false,
        ),
        (
            "multipart body",
            Method::POST,
            Some(GQL),
            Some("multipart/form-data; boundary=x"),
            post_json(&ok),
            415,
            GQL,
            Some("INVALID_INPUT"),
            false,
        ),
        (
            "syntax error, gql",
            Method::POST,
            Some(GQL),
            Some(JSON_T),
            post_json(&syntax),
            400,
            GQL,
            Some("INVALID_INPUT"),
            false,
        ),
        (
            "syntax error, json",
            Method::POST,
            Some(JSON_T),
            Some(JSON_T),
            post_json(&syntax),
            200,
            JSON_T,
            Some("INVALID_INPUT"),
            false,
        ),
        (
            "validation error, gql",
            Method::POST,
            Some(GQL),
            Some(JSON_T),
            post_json(&invalid),
            400,
            GQL,
            Some("INVALID_INPUT"),
            false,
        ),
        (
            "validation error, json",
            Method::POST,
            Some(JSON_T),
            Some(JSON_T),
            post_json(&invalid),
            200,
            JSON_T,
            Some("INVALID_INPUT"),
            false,
        ),
        (
            "malformed JSON, json",
            Method::POST,
            Some(JSON_T),
            Some(JSON_T),
            Some(b"{\"query\":".to_vec()),
            400,
            JSON_T,
            Some("INVALID_INPUT"),
            false,
        ),
        (
            "malformed JSON, gql",
            Method::POST,
            Some(GQL),
            Some(JSON_T),
            Some(b"[".to_vec()),
            400,
            GQL,
            Some("INVALID_INPUT"),
            false,
        ),
        (
            "no query",
            Method::POST,
            Some(JSON_T),
            Some(JSON_T),
            post_json(&json!({ "variables": {} })),
            400,
            JSON_T,
            Some("INVALID_INPUT"),
            false,
        ),
        (
            "query not a string",
            Method::POST,
            Some(JSON_T),
            Some(JSON_T),
            post_json(&json!({ "query": 42 })),
            400,
            JSON_T,
            Some("INVALID_INPUT"),
            false,
        ),
        (
            "variables a string",
            Method::POST,
            Some(GQL),
            Some(JSON_T),
            post_json(&json!({ "query": "{ me { id } }", "variables": "{}" })),
            400,
            GQL,
            Some("INVALID_INPUT"),
            false,
        ),
        (
            "operationName a number",
            Method::POST,
            Some(GQL),
            Some(JSON_T),
            post_json(&json!({ "query": "{ me { id } }", "operationName": 3 })),
            400,
            GQL,
            Some("INVALID_INPUT"),
            false,
        ),
        (
            "body a number",
            Method::POST,
            Some(GQL),
            Some(JSON_T),
            Some(b"7".to_vec()),
            400,
            GQL,
            Some("INVALID_INPUT"),
            false,
        ),
        (
            "empty batch",
            Method::POST,
            Some(GQL),
            Some(JSON_T),
            Some(b"[]".to_vec()),
            400,
            GQL,
            Some("INVALID_INPUT"),
            false,
        ),
        (
            "unknown operation name",
            Method::POST,
            Some(GQL),
            Some(JSON_T),
            post_json(&json!({ "query": "query A { me { id } }", "operationName": "B" })),
            400,
            GQL,
            Some("INVALID_INPUT"),
            false,
        ),
        (
            "GET query",
            Method::GET,
            Some(GQL),
            None,
            None,
            200,
            GQL,
            None,
            true,
        ),
    ];
    for (what, method, accept, ct, body, status, media, want_code, has_data) in cases {
        let mut headers = vec![("authorization", a)];
        if let Some(x) = accept {
            headers.push(("accept", x));
        }
        if let Some(x) = ct {
            headers.push(("content-type", x));
        }
        let path = if method == Method::GET {
            "/graphql?query=%7B%20falAccounts%20%7B%20id%20%7D%20%7D"
        } else {
            "/graphql"
        };
        let ans = send(&app, method, path, &headers, body).await;
        assert_eq!(ans.status, status, "{what}: {}", ans.body);
        assert!(
            ans.content_type.starts_with(media),
            "{what}: {}",
            ans.content_type
        );
        assert_eq!(code(&ans.body), want_code, "{what}: {}", ans.body);
        assert_eq!(
            ans.body.get("data").is_some(),
            has_data,
            "{what}: {}",
            ans.body
        );
    }

    // A field error after execution began keeps `data`: 200 under both types.
    let u = app.create_user("x").await;
    let ut = format!("Bearer {}", app.user_token(u));
    let ans = send(
        &app,
        Method::POST,
        "/graphql",
        &[
            ("authorization", &ut),
            ("accept", GQL),
            ("content-type", JSON_T),
        ],
        post_json(&json!({ "query": "{ me { id } user(id: 999) { id } }" })),
    )
    .await;
    assert_eq!(ans.status, 200);
    assert_eq!(ans.body["data"]["me"]["id"], u);
    assert_eq!(code(&ans.body), Some("FORBIDDEN"));

    // GET: bad variables 400, no query 400 (405 for mutations: auth.rs).
    let resp = app
        .client
        .get(format!("{}/graphql", app.url))
        .query(&[
            ("query", "query($id: Int!) { user(id: $id) { id } }"),
            ("variables", "{not json"),
        ])
        .header("authorization", a)
        .header("accept", GQL)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let ans = send(
        &app,
        Method::GET,
        "/graphql",
        &[("authorization", a), ("accept", GQL)],
        None,
    )
    .await;
    assert_eq!((ans.status, code(&ans.body)), (400, Some("INVALID_INPUT")));
    // Other methods.
    let ans = send(
        &app,
        Method::PUT,
        "/graphql",
        &[("authorization", a)],
        post_json(&ok),
    )
    .await;
    assert_eq!(ans.status, 405);
    // Batches: bounded, answered as an array.
    let two = json!([ok, { "query": "{ me { id } }" }]);
    let ans = post_json_as(&app, a, post_json(&two)).await;
    assert_eq!(ans.status, 200);
    assert_eq!(ans.body.as_array().unwrap().len(), 2);
    let eleven = Value::Array(vec![ok.clone(); 11]);
    let ans = post_json_as(&app, a, post_json(&eleven)).await;
    assert_eq!((ans.status, code(&ans.body)), (400, Some("LIMIT_EXCEEDED")));
    // Bodies over 256 KiB.
    let huge = json!({ "query": format!("{{ me {{ id }} }} #{}", "x".repeat(300 * 1024)) });
    let ans = post_json_as(&app, a, post_json(&huge)).await;
    assert_eq!((ans.status, code(&ans.body)), (413, Some("LIMIT_EXCEEDED")));
    // Every response names its request: the caller's id when sane.
    for (sent, echoed) in [("abc-123", true), ("bad id\"", false)] {
        let resp = app
            .client
            .get(format!("{}/healthz", app.url))
            .header("x-request-id", sent)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.headers()["x-request-id"] == sent, echoed, "{sent}");
    }
}

#[tokio::test]
async fn operation_limits_answer_limit_exceeded() {
    let app = spawn_app(Engine::Sqlite).await;
    let u = app.create_user("lim").await;
    let fields = "id createdAt type sourceType sourceId amount change balanceBefore balanceAfter duration description batchId user { id uuid name balance batches { id kind amount remaining expiresAt createdAt } }";
    let q = |first: u32| {
        format!("{{ usageDetails(userId: {u}, first: {first}) {{ edges {{ cursor node {{ {fields} }} }} nodes {{ {fields} }} }} }}")
    };
    // Complexity: the page size multiplies what each row costs.
    let r = app.gql(&app.admin, &q(10), json!({})).await;
    assert!(r["errors"].is_null(), "{r}");
    let r = app.gql(&app.admin, &q(100), json!({})).await;
    assert_eq!(code(&r), Some("LIMIT_EXCEEDED"), "{r}");
    // Aliases and root fields.
    let aliases: String = (0..31).map(|i| format!("a{i}: id ")).collect();
    let r = app
        .gql(&app.admin, &format!("{{ me {{ {aliases} }} }}"), json!({}))
        .await;
    assert_eq!(code(&r), Some("LIMIT_EXCEEDED"), "{r}");
    let roots = "me { id } ".repeat(21);
    let r = app
        .gql(&app.admin, &format!("{{ {roots} }}"), json!({}))
        .await;
    assert_eq!(code(&r), Some("LIMIT_EXCEEDED"), "{r}");
    // Aliases hidden in fragments count too.
    let frag = format!("fragment F on User {{ {aliases} }} {{ me {{ ...F }} }}");
    let r = app.gql(&app.admin, &frag, json!({})).await;
    assert_eq!(code(&r), Some("LIMIT_EXCEEDED"), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_its_time_budget_is_cut_off() {
    let fal = crate::fal_standin::StandIn::start().await;
    let url = fal.url.clone();
    let app = spawn_with(Engine::Sqlite, |s| {
        s.fal_api_base_url = url;
        s.request_timeout_ms = 300;
    })
    .await;
    let key = "fal-admin-slow-key-0001";
    fal.set(
        key,
        crate::fal_standin::Scenario::Slow(std::time::Duration::from_secs(2), vec![]),
    );
    use sea_orm::{ConnectionTrait, Statement};
    app.db
        .execute_raw(Statement::from_sql_and_values(
            app.db.get_database_backend(),
            "INSERT INTO ts_fal_account (name, api_key, balance, use_cnt, error_cnt, status) VALUES ('slow', $1, 0, 0, 0, 1)",
            [key.into()],
        ))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let resp = app
        .client
        .post(format!("{}/graphql", app.url))
        .bearer_auth(&app.admin)
        .json(&json!({ "query": "{ accountCosts(from: \"2026-01-01T00:00:00Z\", to: \"2026-01-02T00:00:00Z\") { falUsage { totalCostUsd } } }" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 504);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(code(&body), Some("LIMIT_EXCEEDED"));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "cut off at the budget, not at fal's pace"
    );
}

#[tokio::test]
async fn rate_limits_apply_per_subject_and_role() {
    // 0.1 request/s: a burst of one, the next token only after 10 s, so a
    // slow machine cannot refill the bucket between two requests.
    let app = spawn_with(Engine::Sqlite, |s| {
        s.rates.user = 0.1;
        s.rates.anonymous = 0.1;
    })
    .await;
    let a = app.create_user("a").await;
    let b = app.create_user("b").await;
    let (ta, tb) = (app.user_token(a), app.user_token(b));
    let q = "{ me { id } }";
    assert!(app.gql(&ta, q, json!({})).await["errors"].is_null());
    // Then 429 with Retry-After and LIMIT_EXCEEDED.
    let resp = app.post_raw(Some(&ta), q).await;
    assert_eq!(resp.status().as_u16(), 429);
    let wait: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=10).contains(&wait), "Retry-After {wait}");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(code(&body), Some("LIMIT_EXCEEDED"));
    // Another user has a bucket of their own; services are not limited here.
    assert!(app.gql(&tb, q, json!({})).await["errors"].is_null());
    for _ in 0..20 {
        assert!(app
            .gql(&app.service, "{ user(id: 1) { id } }", json!({}))
            .await["errors"]
            .is_null());
    }
    // A new token for the same user shares the user's bucket.
    let ta2 = app.user_token(a);
    assert_eq!(app.post_raw(Some(&ta2), q).await.status().as_u16(), 429);
    // Anonymous callers are limited per address.
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(app.post_raw(None, q).await.status().as_u16());
    }
    assert_eq!(statuses, vec![200, 429, 429]);
}

#[tokio::test]
async fn metrics_count_requests_ledger_operations_and_the_pool() {
    let app = spawn_app(Engine::Sqlite).await;
    let u = app.create_user("m").await;
    app.recharge(u, 10, "o", None).await;
    app.consume(u, 4, "SCRIPT", "s1", None).await;
    app.consume(u, 4, "SCRIPT", "s1", None).await;
    app.consume(u, 40, "SCRIPT", "s2", None).await;
    app.gql(
        &app.admin,
        "query UsageDetail($u: Int) { usageDetails(userId: $u) { nodes { id } } }",
        json!({ "u": u }),
    )
    .await;
    for (name, labels, value) in [
        (
            "gateway_ledger_operations_total",
            &[("type", "consume"), ("outcome", "applied")][..],
            1.0,
        ),
        (
            "gateway_ledger_operations_total",
            &[("type", "consume"), ("outcome", "replayed")],
            1.0,
        ),
        (
            "gateway_ledger_operations_total",
            &[("type", "consume"), ("outcome", "INSUFFICIENT_BALANCE")],
            1.0,
        ),
        (
            "gateway_ledger_operations_total",
            &[("type", "recharge"), ("outcome", "applied")],
            1.0,
        ),
        (
            "gateway_requests_total",
            &[("operation", "UsageDetail"), ("outcome", "ok")],
            1.0,
        ),
        (
            "gateway_requests_total",
            &[
                ("operation", "anonymous"),
                ("outcome", "INSUFFICIENT_BALANCE"),
            ],
            1.0,
        ),
        (
            "gateway_request_duration_seconds_count",
            &[("operation", "UsageDetail")],
            1.0,
        ),
        ("gateway_websocket_connections", &[], 0.0),
    ] {
        assert_eq!(
            app.metric(name, labels).await,
            Some(value),
            "{name}{labels:?} in\n{}",
            app.metrics_text().await
        );
    }
    let text = app.metrics_text().await;
    for line in [
        "# TYPE gateway_db_pool_connections gauge",
        "# TYPE gateway_sql_statements_total counter",
        "# TYPE gateway_build_info gauge",
        "# TYPE process_resident_memory_bytes gauge",
        "# TYPE process_cpu_seconds_total counter",
    ] {
        assert!(text.contains(line), "missing `{line}` in\n{text}");
    }
    assert!(text.contains("gateway_sql_statements_total "));
}

#[tokio::test]
async fn cors_answers_configured_origins_only() {
    let app = spawn_with(Engine::Sqlite, |s| {
        s.cors_origins = vec!["https://app.example".to_owned()];
    })
    .await;
    let url = format!("{}/graphql", app.url);
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, &url)
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .send()
    };
    let ok = preflight("https://app.example").await.unwrap();
    assert!(ok.status().is_success(), "{}", ok.status());
    let h = ok.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example");
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert!(h["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .contains("POST"));
    let allowed_headers = h["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    assert!(
        allowed_headers.contains("authorization"),
        "{allowed_headers}"
    );
    assert_eq!(h["access-control-max-age"], "600");
    let other = preflight("https://evil.example").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());

    // The actual request: the allowed origin may read the answer, another
    // gets no CORS headers (its browser hides the answer from the page).
    for (origin, allowed) in [
        ("https://app.example", true),
        ("https://evil.example", false),
    ] {
        let r = app
            .client
            .post(&url)
            .header("origin", origin)
            .bearer_auth(&app.admin)
            .json(&json!({ "query": "{ __typename }" }))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.headers().get("access-control-allow-origin").is_some(),
            allowed,
            "{origin}"
        );
        if allowed {
            assert_eq!(r.headers()["access-control-expose-headers"], "x-request-id");
        }
    }

    // WebSocket upgrades: refused from another site's page, accepted from
    // the configured origin, the gateway's own, or no browser at all.
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let host = app.url.trim_start_matches("http://").to_owned();
    for (origin, accepted) in [
        (Some("https://evil.example".to_owned()), false),
        (Some("https://app.example".to_owned()), true),
        (Some(format!("http://{host}")), true),
        (None, true),
    ] {
        let mut req = format!("ws://{host}/graphql")
            .into_client_request()
            .unwrap();
        req.headers_mut().insert(
            "sec-websocket-protocol",
            "graphql-transport-ws".parse().unwrap(),
        );
        if let Some(o) = &origin {
            req.headers_mut().insert("origin", o.parse().unwrap());
        }
        let result = tokio_tungstenite::connect_async(req).await;
        assert_eq!(result.is_ok(), accepted, "{origin:?}");
    }
}

#[tokio::test]
async fn the_root_points_to_the_api() {
    let app = spawn_app(Engine::Sqlite).await;
    let r = app
        .client
        .get(format!("{}/", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("/graphql"));
}
