//! The per-account cost report: local aggregates against a naive
//! recomputation, and fal's usage through a local stand-in.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{json, Value};

use crate::fal_standin::{line, old_line, url_pairs, Scenario, StandIn};
use crate::helpers::{code, data, spawn_with, Engine, TestApp};

both_engines!(account_costs_agree_with_a_naive_recomputation);

const ENDPOINTS: [&str; 4] = [
    "fal-ai/flux/dev",
    "fal-ai/flux/schnell",
    "fal-ai/sora-2/image-to-video",
    "fal-ai/kling-video/v2.5-turbo/pro/image-to-video",
];
/// The integer figures of a report row, compared one by one with the naive sum.
const COUNTED: [&str; 6] = [
    "taskCount",
    "succeededCount",
    "failedCount",
    "refundedCount",
    "chargedPoints",
    "refundedPoints",
];
const STATUSES: [&str; 5] = ["COMPLETED", "FAILED", "IN_PROGRESS", "completed", "ERROR"];

#[derive(Clone)]
struct Task {
    key: String,
    app: &'static str,
    status: &'static str,
    money: i64,
    cost: f64,
    refunded_points: i64,
    is_refund: bool,
    at: chrono::DateTime<chrono::Utc>,
}

pub(crate) async fn insert_account(app: &TestApp, name: &str, key: &str) -> i32 {
    let backend = app.db.get_database_backend();
    app.db
        .execute_raw(Statement::from_sql_and_values(
            backend,
            "INSERT INTO ts_fal_account (name, api_key, balance, use_cnt, error_cnt, status) VALUES ($1, $2, 12.5, 3, 1, 1)",
            [name.into(), key.into()],
        ))
        .await
        .unwrap();
    let r = app
        .db
        .query_one_raw(Statement::from_sql_and_values(
            backend,
            "SELECT id FROM ts_fal_account WHERE api_key = $1",
            [key.into()],
        ))
        .await
        .unwrap()
        .unwrap();
    r.try_get("", "id").unwrap()
}

async fn insert_task(app: &TestApp, user: i32, task_id: &str, t: &Task) {
    app.db
        .execute_raw(Statement::from_sql_and_values(
            app.db.get_database_backend(),
            "INSERT INTO ts_fal_tasks (user_id, task_id, app_name, api_key, task_type, status, money, cost_money, is_refund, created_at) \
             VALUES ($1, $2, $3, $4, 'image', $5, $6, $7, $8, $9)",
            [
                user.into(),
                task_id.into(),
                t.app.into(),
                t.key.clone().into(),
                t.status.into(),
                (t.money as i32).into(),
                t.cost.into(),
                (t.is_refund as i32).into(),
                crate::helpers::platform_time(t.at).into(),
            ],
        ))
        .await
        .unwrap();
}

async fn account_costs_agree_with_a_naive_recomputation(app: TestApp) {
    let mut rng = StdRng::seed_from_u64(4);
    let user = app.create_user("payer").await;
    app.recharge(user, 1_000_000, "float", None).await;
    let keys: Vec<String> = (0..4)
        .map(|i| format!("fal-key-{i}-{}", uuid::Uuid::new_v4().simple()))
        .collect();
    let mut ids = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        ids.push(insert_account(&app, &format!("pool-{i}"), k).await);
    }
    let from = chrono::DateTime::parse_from_rfc3339("2026-03-01T00:00:00Z")
        .unwrap()
        .to_utc();
    let to = from + chrono::Duration::days(30);
    let mut tasks = Vec::new();
    for i in 0..300 {
        let key = if i % 37 == 0 {
            "fal-key-not-in-pool".to_owned()
        } else {
            keys[rng.gen_range(0..4)].clone()
        };
        let mut t = Task {
            key,
            app: ENDPOINTS[rng.gen_range(0..4)],
            status: STATUSES[rng.gen_range(0..5)],
            money: rng.gen_range(1..200),
            cost: rng.gen_range(0..1000) as f64 / 1000.0,
            refunded_points: 0,
            is_refund: false,
            at: from - chrono::Duration::days(5)
                + chrono::Duration::minutes(rng.gen_range(0..60 * 24 * 40)),
        };
        let task_id = format!("task-{i}");
        if i % 10 == 0 {
            // Charged and partly refunded through the gateway: the report
            // takes the refunded points from the ledger.
            insert_task(&app, user, &task_id, &t).await;
            app.consume(user, t.money, "FAL", &task_id, None).await;
            let back = (t.money / 2).max(1);
            app.refund("FAL", &task_id, &format!("r-{i}"), Some(back))
                .await;
            t.refunded_points = back;
            t.is_refund = true;
        } else {
            if rng.gen_bool(0.1) {
                // Flagged by the older platform with no ledger row: all of it.
                t.is_refund = true;
                t.refunded_points = t.money;
            }
            insert_task(&app, user, &task_id, &t).await;
        }
        tasks.push(t);
    }

    let q = "query($from: DateTime!, $to: DateTime!, $ids: [Int!]) { accountCosts(from: $from, to: $to, accountIds: $ids) { \
             account { id maskedKey } taskCount succeededCount failedCount refundedCount chargedPoints refundedPoints costUsd marginUsd \
             byEndpoint { appName taskCount succeededCount failedCount refundedCount chargedPoints refundedPoints costUsd } } }";
    let before = app.store.statements();
    let r = app
        .gql(&app.admin, q, json!({ "from": from, "to": to }))
        .await;
    assert_eq!(
        app.store.statements() - before,
        3,
        "accounts + the window aggregate + the ledger refund correction"
    );
    let rows = data(&r, "accountCosts").as_array().unwrap().clone();
    assert_eq!(rows.len(), 4);

    let naive = |key: &str, app_name: Option<&str>| {
        let sel: Vec<&Task> = tasks
            .iter()
            .filter(|t| {
                t.key == key && t.at >= from && t.at < to && app_name.is_none_or(|a| a == t.app)
            })
            .collect();
        let upper = |t: &&Task| t.status.to_uppercase();
        json!({
            "taskCount": sel.len(),
            "succeededCount": sel.iter().filter(|t| upper(t) == "COMPLETED").count(),
            "failedCount": sel.iter().filter(|t| ["FAILED", "ERROR"].contains(&upper(t).as_str())).count(),
            "refundedCount": sel.iter().filter(|t| t.is_refund).count(),
            "chargedPoints": sel.iter().map(|t| t.money).sum::<i64>(),
            "refundedPoints": sel.iter().map(|t| t.refunded_points).sum::<i64>(),
            "cost": sel.iter().map(|t| t.cost).sum::<f64>(),
        })
    };
    for (row, (id, key)) in rows.iter().zip(ids.iter().zip(&keys)) {
        assert_eq!(row["account"]["id"], *id);
        assert_eq!(
            row["account"]["maskedKey"],
            format!("…{}", &key[key.len() - 4..])
        );
        let want = naive(key, None);
        for f in COUNTED {
            assert_eq!(row[f], want[f], "account {id} {f}");
        }
        let cost = want["cost"].as_f64().unwrap();
        assert!((row["costUsd"].as_f64().unwrap() - cost).abs() < 1e-6);
        let net = (want["chargedPoints"].as_i64().unwrap()
            - want["refundedPoints"].as_i64().unwrap()) as f64;
        assert!((row["marginUsd"].as_f64().unwrap() - (net / 100.0 - cost)).abs() < 1e-6);
        let mut seen = 0;
        for e in row["byEndpoint"].as_array().unwrap() {
            let want = naive(key, e["appName"].as_str());
            for f in COUNTED {
                assert_eq!(e[f], want[f], "account {id} {} {f}", e["appName"]);
            }
            assert!((e["costUsd"].as_f64().unwrap() - want["cost"].as_f64().unwrap()).abs() < 1e-6);
            seen += e["taskCount"].as_i64().unwrap();
        }
        assert_eq!(seen, row["taskCount"].as_i64().unwrap());
    }

    // A subset of accounts, in id order.
    let r = app
        .gql(
            &app.admin,
            q,
            json!({ "from": from, "to": to, "ids": [ids[3], ids[1], 424242] }),
        )
        .await;
    let got: Vec<&Value> = data(&r, "accountCosts")
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["account"]["id"])
        .collect();
    assert_eq!(got, vec![&json!(ids[1]), &json!(ids[3])]);
    // Bad windows and non-admins.
    let r = app
        .gql(&app.admin, q, json!({ "from": to, "to": from }))
        .await;
    assert_eq!(code(&r), Some("INVALID_INPUT"));
    let r = app
        .gql(
            &app.admin,
            q,
            json!({ "from": from, "to": from + chrono::Duration::days(400) }),
        )
        .await;
    assert_eq!(code(&r), Some("LIMIT_EXCEEDED"));
    let r = app
        .gql(&app.service, q, json!({ "from": from, "to": to }))
        .await;
    assert_eq!(code(&r), Some("FORBIDDEN"));
}

const USAGE_Q: &str = "query($from: DateTime!, $to: DateTime!) { accountCosts(from: $from, to: $to) { account { id name } costUsd \
    falUsage { totalCostUsd mismatch endpoints { endpointId unit falQuantity falCostUsd localCostUsd diffUsd mismatch } } } }";

fn window() -> (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) {
    let from = chrono::DateTime::parse_from_rfc3339("2026-02-01T00:00:00Z")
        .unwrap()
        .to_utc();
    (from, from + chrono::Duration::days(6))
}

/// A gateway on SQLite whose fal base URL is a fresh stand-in.
async fn with_standin(
    adjust: impl FnOnce(&mut points_gateway::config::Settings),
) -> (std::sync::Arc<StandIn>, TestApp) {
    let fal = StandIn::start().await;
    let url = fal.url.clone();
    let app = spawn_with(Engine::Sqlite, |s| {
        s.fal_api_base_url = url;
        adjust(s);
    })
    .await;
    (fal, app)
}

/// The error on `accountCosts[i].falUsage`, if any.
fn usage_error(r: &Value, i: usize) -> Option<&Value> {
    r["errors"]
        .as_array()?
        .iter()
        .find(|e| e["path"] == json!(["accountCosts", i, "falUsage"]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fal_usage_is_fetched_diffed_and_fails_per_account() {
    let (fal, app) = with_standin(|s| s.fal_timeout_ms = 500).await;
    let user = app.create_user("u").await;
    let (from, to) = window();
    let scenarios: Vec<(&str, Scenario)> = vec![
        (
            "single",
            Scenario::Pages(vec![vec![
                line("fal-ai/flux/dev", "image", 4.0, 0.08),
                line("fal-ai/sora-2/image-to-video", "seconds", 12.0, 0.1),
            ]]),
        ),
        (
            "multi",
            Scenario::Pages(vec![
                vec![line("fal-ai/flux/schnell", "megapixels", 10.0, 0.003)],
                vec![
                    line("fal-ai/flux/schnell", "megapixels", 5.0, 0.003),
                    line("fal-ai/kokoro", "1000 characters", 2.0, 0.02),
                ],
                vec![line(
                    "fal-ai/kling-video/v2.5-turbo/pro/image-to-video",
                    "seconds",
                    5.0,
                    0.07,
                )],
            ]),
        ),
        (
            "old",
            Scenario::Pages(vec![vec![old_line("fal-ai/flux/dev", "image", 3.0, 0.025)]]),
        ),
        ("empty", Scenario::Pages(vec![vec![]])),
        ("unauth", Scenario::Pages(vec![])), // replaced below: fal does not know this key
        ("forbidden", Scenario::Status(403, None)),
        (
            "rl-then-ok",
            Scenario::RateLimitedThen(2, vec![line("fal-ai/flux/dev", "image", 1.0, 0.025)]),
        ),
        ("rl-forever", Scenario::Status(429, Some(0))),
        ("server", Scenario::Status(500, None)),
        ("slow", Scenario::Slow(Duration::from_millis(1_500), vec![])),
        ("badjson", Scenario::BadJson),
    ];
    let mut keys = BTreeMap::new();
    for (name, s) in scenarios {
        let key = format!("fal-admin-{name}-{}", uuid::Uuid::new_v4().simple());
        insert_account(&app, name, &key).await;
        if name != "unauth" {
            fal.set(&key, s);
        }
        keys.insert(name, key);
    }
    // Local records for "single": flux/dev matches fal, sora is under-recorded.
    let at = from + chrono::Duration::days(1);
    for (i, (app_name, cost)) in [
        ("fal-ai/flux/dev", 0.32),
        ("fal-ai/sora-2/image-to-video", 0.8),
    ]
    .into_iter()
    .enumerate()
    {
        let t = Task {
            key: keys["single"].clone(),
            app: app_name_static(app_name),
            status: "COMPLETED",
            money: 50,
            cost,
            refunded_points: 0,
            is_refund: false,
            at,
        };
        insert_task(&app, user, &format!("s-{i}"), &t).await;
    }

    let r = app
        .gql(&app.admin, USAGE_Q, json!({ "from": from, "to": to }))
        .await;
    let text = r.to_string();
    for k in keys.values() {
        assert!(
            !text.contains(k.as_str()),
            "an API key leaked into the response"
        );
    }
    let rows = data(&r, "accountCosts").as_array().unwrap().clone();
    let idx = |name: &str| {
        rows.iter()
            .position(|a| a["account"]["name"] == name)
            .unwrap()
    };

    let single = &rows[idx("single")]["falUsage"];
    assert_eq!(single["totalCostUsd"], 1.52);
    assert_eq!(single["mismatch"], true);
    assert_eq!(
        single["endpoints"],
        json!([
            { "endpointId": "fal-ai/flux/dev", "unit": "image", "falQuantity": 4.0, "falCostUsd": 0.32, "localCostUsd": 0.32, "diffUsd": 0.0, "mismatch": false },
            { "endpointId": "fal-ai/sora-2/image-to-video", "unit": "seconds", "falQuantity": 12.0, "falCostUsd": 1.2, "localCostUsd": 0.8, "diffUsd": 0.4, "mismatch": true },
        ])
    );
    let multi = &rows[idx("multi")]["falUsage"];
    assert!(
        app.metric("gateway_fal_calls_total", &[("status", "200")])
            .await
            .is_some_and(|n| n >= 2.0),
        "fal calls are counted by status"
    );
    assert_eq!(multi["totalCostUsd"], 0.435);
    assert_eq!(multi["endpoints"][0]["endpointId"], "fal-ai/flux/schnell");
    assert_eq!(multi["endpoints"][0]["falQuantity"], 15.0);
    assert_eq!(multi["endpoints"][0]["falCostUsd"], 0.045);
    assert_eq!(multi["endpoints"].as_array().unwrap().len(), 3);
    assert_eq!(fal.calls(&keys["multi"]), 3, "every page fetched");
    assert_eq!(rows[idx("old")]["falUsage"]["totalCostUsd"], 0.075);
    assert_eq!(
        rows[idx("empty")]["falUsage"],
        json!({ "totalCostUsd": 0.0, "mismatch": false, "endpoints": [] })
    );
    assert_eq!(rows[idx("rl-then-ok")]["falUsage"]["totalCostUsd"], 0.025);
    assert_eq!(fal.calls(&keys["rl-then-ok"]), 3);

    let expect_err = |name: &str, needle: &str, status: Option<u16>| {
        let i = idx(name);
        let e = usage_error(&r, i).unwrap_or_else(|| panic!("no error for {name}: {r}"));
        assert_eq!(e["extensions"]["code"], "UPSTREAM_ERROR", "{name}");
        assert_eq!(
            e["extensions"]["accountId"], rows[i]["account"]["id"],
            "{name}"
        );
        assert_eq!(
            e["extensions"]["upstreamStatus"].as_u64().map(|s| s as u16),
            status,
            "{name}"
        );
        let msg = e["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{name}: {msg}");
        assert!(rows[i]["falUsage"].is_null());
        assert!(rows[i]["costUsd"].is_number(), "local figures still answer");
    };
    expect_err("unauth", "401", Some(401));
    expect_err("forbidden", "ADMIN-scope", Some(403));
    expect_err("rl-forever", "429) after 3 attempts", Some(429));
    expect_err("server", "500 (server error) after 3 attempts", Some(500));
    expect_err("slow", "within 500 ms", None);
    expect_err("badjson", "not the documented JSON", None);
    assert_eq!(fal.calls(&keys["forbidden"]), 1, "403 is not retried");
    assert_eq!(r["errors"].as_array().unwrap().len(), 6);

    // What fal was asked.
    let q = fal.recorded.lock().unwrap().queries[&keys["single"]][0].clone();
    let pairs = url_pairs(&q);
    let get = |k: &str| {
        pairs
            .iter()
            .filter(|(a, _)| a == k)
            .map(|(_, v)| v.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(get("expand"), vec!["summary", "auth_method"]);
    assert_eq!(get("start"), vec!["2026-02-01T00:00:00Z"]);
    assert_eq!(get("end"), vec!["2026-02-07T00:00:00Z"]);

    // Within the cache window the same key and window are not fetched again.
    let before = fal.calls(&keys["single"]);
    let again = app
        .gql(&app.admin, USAGE_Q, json!({ "from": from, "to": to }))
        .await;
    assert_eq!(
        again["data"]["accountCosts"][idx("single")]["falUsage"],
        *single
    );
    assert_eq!(fal.calls(&keys["single"]), before);
    // Without `falUsage` in the selection, fal is not called at all.
    let before: u32 = keys.values().map(|k| fal.calls(k)).sum();
    app.gql(&app.admin, "query($from: DateTime!, $to: DateTime!) { accountCosts(from: $from, to: $to) { costUsd } }", json!({ "from": from, "to": to + chrono::Duration::days(1) })).await;
    assert_eq!(keys.values().map(|k| fal.calls(k)).sum::<u32>(), before);
}

fn app_name_static(s: &str) -> &'static str {
    ENDPOINTS.iter().copied().find(|e| *e == s).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_accounts_with_five_failing_answer_concurrently_within_the_bound() {
    let (fal, app) = with_standin(|s| s.fal_concurrency = 10).await;
    let delay = Duration::from_millis(200);
    let mut failing = Vec::new();
    for i in 0..50 {
        let key = format!("fal-admin-{i:02}-{}", uuid::Uuid::new_v4().simple());
        let id = insert_account(&app, &format!("acct-{i:02}"), &key).await;
        if i % 10 == 3 {
            fal.set(&key, Scenario::Status(500, None));
            failing.push(id);
        } else {
            fal.set(
                &key,
                Scenario::Slow(delay, vec![line("fal-ai/flux/dev", "image", 1.0, 0.025)]),
            );
        }
    }
    let (from, to) = window();
    let started = Instant::now();
    let r = app
        .gql(&app.admin, USAGE_Q, json!({ "from": from, "to": to }))
        .await;
    let elapsed = started.elapsed();
    let rows = data(&r, "accountCosts").as_array().unwrap();
    let ok = rows
        .iter()
        .filter(|a| a["falUsage"]["totalCostUsd"] == 0.025)
        .count();
    assert_eq!(ok, 45);
    let mut errored: Vec<i64> = r["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert_eq!(e["extensions"]["code"], "UPSTREAM_ERROR");
            e["extensions"]["accountId"].as_i64().unwrap()
        })
        .collect();
    errored.sort();
    assert_eq!(
        errored,
        failing.iter().map(|&i| i as i64).collect::<Vec<_>>()
    );
    let peak = fal.peak.load(std::sync::atomic::Ordering::SeqCst);
    assert!((2..=10).contains(&peak), "in flight at once: {peak}");
    // 45 calls of 200 ms take 9 s one after another; ten at a time about 1 s.
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
}
