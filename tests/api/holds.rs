//! Holds over HTTP on both engines: reserve, capture less, release, expiry
//! by the sweep (two instances at once on PostgreSQL), races with
//! consumes, retries and conflicts, bad input, and the balance feed.

use std::sync::Arc;
use std::time::Duration;

use sea_orm::{ConnectionTrait, Statement};
use serde_json::{json, Value};

use crate::helpers::{code, data, spawn_on, TestApp};
use crate::ws_client::WsClient;

both_engines!(
    a_capture_of_less_writes_one_consume_and_returns_the_rest_to_its_batches,
    a_released_hold_leaves_nothing_on_the_usage_page,
    retries_replay_and_other_payloads_conflict,
    bad_hold_input_is_refused_and_writes_nothing,
    holds_past_their_expiry_are_released_by_the_sweep,
    a_hold_keeps_points_of_a_batch_that_expires_until_it_is_settled,
    two_hundred_holds_and_consumes_racing_for_one_hundred_points_never_overdraw,
    hold_changes_are_announced_in_order_with_ledger_rows,
    a_hold_and_another_users_consume_of_one_key_never_both_succeed,
    a_hold_past_its_expiry_is_not_captured_and_many_expire_in_one_sweep,
);

const HOLD: &str = "mutation($u: Int!, $a: Int!, $s: SourceType!, $id: String!, $d: Float, $t: Int, $n: String) { hold(input: { userId: $u, amount: $a, sourceType: $s, sourceId: $id, duration: $d, expiresInSecs: $t, note: $n }) { id userId amount status expiresAt createdAt } }";
const CAPTURE: &str = "mutation($s: SourceType!, $id: String!, $a: Int!, $d: Float) { captureHold(input: { sourceType: $s, sourceId: $id, amount: $a, duration: $d }) { id status captured settledAt entry { id type amount change balanceBefore balanceAfter duration batchId sourceType sourceId } } }";
const RELEASE: &str = "mutation($s: SourceType!, $id: String!, $r: String) { releaseHold(input: { sourceType: $s, sourceId: $id, reason: $r }) { id status reason settledAt } }";

async fn hold(
    app: &TestApp,
    user: i32,
    amount: i64,
    source: &str,
    id: &str,
    ttl: Option<i64>,
) -> Value {
    let duration = matches!(source, "TTS" | "VIDEO").then_some(10.0);
    app.gql(
        &app.service,
        HOLD,
        json!({ "u": user, "a": amount, "s": source, "id": id, "d": duration, "t": ttl }),
    )
    .await
}

async fn capture(
    app: &TestApp,
    source: &str,
    id: &str,
    amount: i64,
    duration: Option<f64>,
) -> Value {
    app.gql(
        &app.service,
        CAPTURE,
        json!({ "s": source, "id": id, "a": amount, "d": duration }),
    )
    .await
}

async fn release(app: &TestApp, source: &str, id: &str, reason: Option<&str>) -> Value {
    app.gql(
        &app.service,
        RELEASE,
        json!({ "s": source, "id": id, "r": reason }),
    )
    .await
}

/// `(balance, held, available)` as the API shows them.
async fn figures(app: &TestApp, user: i32) -> (i64, i64, i64) {
    let r = app
        .gql(
            &app.admin,
            "query($id: Int!) { user(id: $id) { balance held available } }",
            json!({ "id": user }),
        )
        .await;
    let u = data(&r, "user");
    (
        u["balance"].as_i64().unwrap(),
        u["held"].as_i64().unwrap(),
        u["available"].as_i64().unwrap(),
    )
}

/// `(remaining, reserved)` per batch of a user, oldest first.
async fn batch_figures(app: &TestApp, user: i32) -> Vec<(i64, i64)> {
    app.db
        .query_all_raw(Statement::from_sql_and_values(
            app.db.get_database_backend(),
            "SELECT remaining, reserved FROM gw_point_batches WHERE user_id = $1 ORDER BY id",
            [user.into()],
        ))
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.try_get::<i64>("", "remaining").unwrap(),
                r.try_get::<i64>("", "reserved").unwrap(),
            )
        })
        .collect()
}

/// Everything holds and the ledger write: unchanged means nothing written.
async fn footprint(app: &TestApp) -> Vec<i64> {
    let mut v = app.footprint().await;
    for t in ["gw_holds", "gw_hold_parts", "gw_entries"] {
        v.push(app.count(t).await);
    }
    v
}

async fn usage_types(app: &TestApp, user: i32) -> Vec<(String, i64)> {
    let r = app
        .gql(
            &app.user_token(user),
            "{ usageDetails { edges { node { type amount } } } }",
            json!({}),
        )
        .await;
    data(&r, "usageDetails")["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["node"]["type"].as_str().unwrap().to_owned(),
                e["node"]["amount"].as_i64().unwrap(),
            )
        })
        .collect()
}

fn in_a_day() -> String {
    (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339()
}

async fn a_capture_of_less_writes_one_consume_and_returns_the_rest_to_its_batches(app: TestApp) {
    let u = app.create_user("video-maker").await;
    app.recharge(u, 60, "soon", Some(&in_a_day())).await;
    app.recharge(u, 40, "never", None).await;
    let r = hold(&app, u, 80, "VIDEO", "job-1", None).await;
    let h = data(&r, "hold");
    assert_eq!(h["status"], "HELD", "{r}");
    assert_eq!(h["amount"], 80);
    // Drawn in the published order: the expiring batch first.
    assert_eq!(batch_figures(&app, u).await, vec![(0, 60), (20, 20)]);
    assert_eq!(figures(&app, u).await, (100, 80, 20));
    // Nothing else may spend held points.
    let r = app.consume(u, 21, "SCRIPT", "other", None).await;
    assert_eq!(code(&r), Some("INSUFFICIENT_BALANCE"), "{r}");
    let r = hold(&app, u, 21, "SCRIPT", "other-hold", None).await;
    assert_eq!(code(&r), Some("INSUFFICIENT_BALANCE"), "{r}");
    app.assert_verify_clean().await;

    // The job cost 70 for 8 seconds: the batches drawn first pay.
    let r = capture(&app, "VIDEO", "job-1", 70, Some(8.0)).await;
    let c = data(&r, "captureHold");
    assert_eq!(c["status"], "CAPTURED", "{r}");
    assert_eq!(c["captured"], 70);
    let e = &c["entry"];
    assert_eq!(e["type"], "CONSUME");
    assert_eq!(e["amount"], 70);
    assert_eq!(e["balanceBefore"], 100);
    assert_eq!(e["balanceAfter"], 30);
    assert_eq!(e["duration"], 8.0);
    assert_eq!(e["sourceId"], "job-1");
    assert_eq!(batch_figures(&app, u).await, vec![(0, 0), (30, 0)]);
    assert_eq!(figures(&app, u).await, (30, 0, 30));
    // The page shows the two recharges and one consume of the actual amount.
    assert_eq!(
        usage_types(&app, u).await,
        vec![
            ("CONSUME".to_owned(), 70),
            ("RECHARGE".to_owned(), 40),
            ("RECHARGE".to_owned(), 60)
        ]
    );
    // The consume's allocations are the hold's batches: 60 + 10.
    let allocs = app
        .db
        .query_all_raw(Statement::from_sql_and_values(
            app.db.get_database_backend(),
            "SELECT amount FROM gw_point_allocations WHERE entry_id = $1 ORDER BY id",
            [e["id"].as_str().unwrap().parse::<i64>().unwrap().into()],
        ))
        .await
        .unwrap()
        .iter()
        .map(|r| r.try_get::<i64>("", "amount").unwrap())
        .collect::<Vec<_>>();
    assert_eq!(allocs, vec![60, 10]);
    // The mirrors see only the settled consume.
    assert_eq!(app.count("ts_points_detail").await, 3);
    app.assert_verify_clean().await;

    // A retry gets the same row; another payload conflicts; a release
    // after the capture is refused.
    let before = footprint(&app).await;
    let again = capture(&app, "VIDEO", "job-1", 70, Some(8.0)).await;
    assert_eq!(
        data(&again, "captureHold")["entry"]["id"],
        e["id"],
        "{again}"
    );
    let r = capture(&app, "VIDEO", "job-1", 60, Some(8.0)).await;
    assert_eq!(code(&r), Some("IDEMPOTENCY_CONFLICT"), "{r}");
    let r = release(&app, "VIDEO", "job-1", None).await;
    assert_eq!(code(&r), Some("HOLD_SETTLED"), "{r}");
    // A consume under the captured job's key is its replay or a conflict.
    let r = app.consume(u, 70, "VIDEO", "job-1", Some(8.0)).await;
    assert_eq!(code(&r), Some("IDEMPOTENCY_CONFLICT"), "{r}");
    assert_eq!(footprint(&app).await, before);
    // A refund of the captured job works like any consume's.
    let r = app.refund("VIDEO", "job-1", "job-1-refund", Some(5)).await;
    assert!(r["errors"].is_null(), "{r}");
    assert_eq!(figures(&app, u).await, (35, 0, 35));
    app.assert_verify_clean().await;
}

async fn a_released_hold_leaves_nothing_on_the_usage_page(app: TestApp) {
    let u = app.create_user("failed-job").await;
    app.recharge(u, 100, "o", None).await;
    let r = hold(&app, u, 30, "TTS", "tts-1", None).await;
    assert!(r["errors"].is_null(), "{r}");
    assert_eq!(figures(&app, u).await, (100, 30, 70));
    let r = release(&app, "TTS", "tts-1", Some("provider timeout")).await;
    let h = data(&r, "releaseHold");
    assert_eq!(h["status"], "RELEASED");
    assert_eq!(h["reason"], "provider timeout");
    assert_eq!(figures(&app, u).await, (100, 0, 100));
    assert_eq!(batch_figures(&app, u).await, vec![(100, 0)]);
    assert_eq!(
        usage_types(&app, u).await,
        vec![("RECHARGE".to_owned(), 100)]
    );
    assert_eq!(app.count("mjk_point_transactions").await, 1);
    assert_eq!(app.count("ts_points_detail").await, 1);

    let before = footprint(&app).await;
    let again = release(&app, "TTS", "tts-1", Some("provider timeout")).await;
    assert_eq!(data(&again, "releaseHold")["id"], h["id"]);
    let r = release(&app, "TTS", "tts-1", Some("another reason")).await;
    assert_eq!(code(&r), Some("IDEMPOTENCY_CONFLICT"), "{r}");
    let r = capture(&app, "TTS", "tts-1", 10, None).await;
    assert_eq!(code(&r), Some("HOLD_SETTLED"), "{r}");
    assert_eq!(footprint(&app).await, before);

    // The holds page, with the ledger's paging and authorization.
    for i in 0..3 {
        let r = hold(&app, u, 1, "SCRIPT", &format!("s{i}"), None).await;
        assert!(r["errors"].is_null(), "{r}");
    }
    let q = "query($u: Int, $s: HoldStatus, $a: String) { holds(userId: $u, status: $s, first: 2, after: $a) { totalCount pageInfo { hasNextPage endCursor } edges { node { sourceId status amount } } } }";
    let r = app.gql(&app.user_token(u), q, json!({})).await;
    let page = data(&r, "holds");
    assert_eq!(page["totalCount"], 4, "{r}");
    assert_eq!(page["edges"][0]["node"]["sourceId"], "s2");
    assert_eq!(page["pageInfo"]["hasNextPage"], true);
    let r = app
        .gql(
            &app.user_token(u),
            q,
            json!({ "a": page["pageInfo"]["endCursor"] }),
        )
        .await;
    let rest: Vec<_> = data(&r, "holds")["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["sourceId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(rest, vec!["s0", "tts-1"]);
    let r = app
        .gql(&app.admin, q, json!({ "u": u, "s": "RELEASED" }))
        .await;
    assert_eq!(data(&r, "holds")["totalCount"], 1, "{r}");
    let other = app.create_user("nosy").await;
    let r = app.gql(&app.user_token(other), q, json!({ "u": u })).await;
    assert_eq!(code(&r), Some("FORBIDDEN"), "{r}");
    app.assert_verify_clean().await;
}

async fn retries_replay_and_other_payloads_conflict(app: TestApp) {
    let u = app.create_user("retry").await;
    let v = app.create_user("someone-else").await;
    app.recharge(u, 100, "o", None).await;
    app.recharge(v, 100, "p", None).await;
    let first = hold(&app, u, 40, "FAL", "fal-1", Some(600)).await;
    let id = data(&first, "hold")["id"].clone();
    let before = footprint(&app).await;
    let again = hold(&app, u, 40, "FAL", "fal-1", Some(600)).await;
    assert_eq!(data(&again, "hold")["id"], id, "{again}");
    for (user, amount, ttl) in [(u, 41, 600), (u, 40, 601), (v, 40, 600)] {
        let r = hold(&app, user, amount, "FAL", "fal-1", Some(ttl)).await;
        assert_eq!(code(&r), Some("IDEMPOTENCY_CONFLICT"), "{r}");
    }
    // The held job's key is not a consume's to take, for anyone.
    let r = app.consume(u, 40, "FAL", "fal-1", None).await;
    assert_eq!(code(&r), Some("IDEMPOTENCY_CONFLICT"), "{r}");
    let r = app.consume(v, 5, "FAL", "fal-1", None).await;
    assert_eq!(code(&r), Some("IDEMPOTENCY_CONFLICT"), "{r}");
    assert_eq!(footprint(&app).await, before);
    // A job charged by a plain consume cannot be held.
    app.consume(u, 5, "SCRIPT", "plain", None).await;
    let before = footprint(&app).await;
    let r = hold(&app, u, 5, "SCRIPT", "plain", None).await;
    assert_eq!(code(&r), Some("IDEMPOTENCY_CONFLICT"), "{r}");
    assert_eq!(footprint(&app).await, before);

    // Fifty identical holds racing: one hold.
    let app = Arc::new(app);
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move { hold(&app, u, 3, "SCRIPT", "raced", None).await })
        })
        .collect();
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        let r = t.await.unwrap();
        ids.insert(data(&r, "hold")["id"].to_string());
    }
    assert_eq!(ids.len(), 1);
    // And fifty identical captures: one consume row.
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move { capture(&app, "SCRIPT", "raced", 2, None).await })
        })
        .collect();
    let mut entries = std::collections::HashSet::new();
    for t in tasks {
        let r = t.await.unwrap();
        entries.insert(data(&r, "captureHold")["entry"]["id"].to_string());
    }
    assert_eq!(entries.len(), 1);
    assert_eq!(figures(&app, u).await, (100 - 5 - 2, 40, 100 - 5 - 2 - 40));
    app.assert_verify_clean().await;
}

async fn bad_hold_input_is_refused_and_writes_nothing(app: TestApp) {
    let u = app.create_user("target").await;
    app.recharge(u, 100, "o", None).await;
    let r = hold(&app, u, 50, "SCRIPT", "ok", None).await;
    assert!(r["errors"].is_null(), "{r}");
    let before = footprint(&app).await;
    let h = |amount: Value, ttl: Value, user: i32, source: &str, id: &str| json!({ "u": user, "a": amount, "s": source, "id": id, "t": ttl });
    let cases = [
        (h(json!(0), Value::Null, u, "SCRIPT", "a"), "INVALID_INPUT"),
        (h(json!(-5), Value::Null, u, "SCRIPT", "a"), "INVALID_INPUT"),
        (
            h(json!(2_147_483_648_i64), Value::Null, u, "SCRIPT", "a"),
            "INVALID_INPUT",
        ),
        (
            h(json!(1.5), Value::Null, u, "SCRIPT", "a"),
            "INVALID_INPUT",
        ),
        (h(json!(5), json!(0), u, "SCRIPT", "a"), "INVALID_INPUT"),
        (h(json!(5), json!(-1), u, "SCRIPT", "a"), "INVALID_INPUT"),
        (
            h(json!(5), json!(604_801), u, "SCRIPT", "a"),
            "INVALID_INPUT",
        ),
        (
            h(json!(5), json!(2_147_483_648_i64), u, "SCRIPT", "a"),
            "INVALID_INPUT",
        ),
        (
            h(json!(5), Value::Null, u, "VIDEO", "no-duration"),
            "INVALID_INPUT",
        ),
        (h(json!(5), Value::Null, u, "SCRIPT", ""), "INVALID_INPUT"),
        (
            h(json!(5), Value::Null, u, "SCRIPT", &"k".repeat(65)),
            "INVALID_INPUT",
        ),
        (
            h(json!(51), Value::Null, u, "SCRIPT", "a"),
            "INSUFFICIENT_BALANCE",
        ),
        (
            h(json!(5), Value::Null, 987_654, "SCRIPT", "a"),
            "USER_NOT_FOUND",
        ),
    ];
    for (vars, want) in cases {
        let r = app.gql(&app.service, HOLD, vars.clone()).await;
        assert_eq!(code(&r), Some(want), "{vars} -> {r}");
    }
    for (s, id, amount, want) in [
        ("SCRIPT", "ok", 51, "INVALID_INPUT"),
        ("SCRIPT", "ok", 0, "INVALID_INPUT"),
        ("SCRIPT", "ok", -1, "INVALID_INPUT"),
        ("SCRIPT", "unknown", 1, "NOT_FOUND"),
        ("POLISH", "ok", 1, "NOT_FOUND"),
    ] {
        let r = capture(&app, s, id, amount, None).await;
        assert_eq!(code(&r), Some(want), "capture {s} {id} {amount}: {r}");
    }
    let r = capture(&app, "SCRIPT", "ok", 5, Some(3.0)).await;
    assert_eq!(code(&r), Some("INVALID_INPUT"), "{r}");
    let r = release(&app, "SCRIPT", "unknown", None).await;
    assert_eq!(code(&r), Some("NOT_FOUND"), "{r}");
    let r = release(&app, "SCRIPT", "ok", Some(&"x".repeat(201))).await;
    assert_eq!(code(&r), Some("INVALID_INPUT"), "{r}");
    // Users may not hold, capture or release, even their own.
    let user = app.user_token(u);
    let r = app
        .gql(
            &user,
            HOLD,
            json!({ "u": u, "a": 1, "s": "SCRIPT", "id": "mine" }),
        )
        .await;
    assert_eq!(code(&r), Some("FORBIDDEN"), "{r}");
    let r = app
        .gql(&user, RELEASE, json!({ "s": "SCRIPT", "id": "ok" }))
        .await;
    assert_eq!(code(&r), Some("FORBIDDEN"), "{r}");
    let r = app
        .gql(&app.service, "mutation { expireHolds }", json!({}))
        .await;
    assert_eq!(code(&r), Some("FORBIDDEN"), "{r}");
    assert_eq!(footprint(&app).await, before);
    assert_eq!(figures(&app, u).await, (100, 50, 50));
    app.assert_verify_clean().await;
}

async fn holds_past_their_expiry_are_released_by_the_sweep(app: TestApp) {
    let u = app.create_user("forgotten").await;
    app.recharge(u, 100, "o", None).await;
    hold(&app, u, 30, "SCRIPT", "short", Some(1)).await;
    hold(&app, u, 20, "SCRIPT", "long", Some(3600)).await;
    assert_eq!(figures(&app, u).await, (100, 50, 50));
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let r = app
        .gql(&app.admin, "mutation { expireHolds }", json!({}))
        .await;
    assert_eq!(data(&r, "expireHolds"), 1, "{r}");
    let r = app
        .gql(&app.admin, "mutation { expireHolds }", json!({}))
        .await;
    assert_eq!(data(&r, "expireHolds"), 0, "{r}");
    assert_eq!(figures(&app, u).await, (100, 20, 80));
    let r = capture(&app, "SCRIPT", "short", 10, None).await;
    assert_eq!(code(&r), Some("HOLD_SETTLED"), "{r}");
    assert!(
        r["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{r}"
    );
    let r = release(&app, "SCRIPT", "short", None).await;
    assert_eq!(code(&r), Some("HOLD_SETTLED"), "{r}");
    let r = app
        .gql(
            &app.admin,
            "query($u: Int) { holds(userId: $u, status: EXPIRED) { edges { node { sourceId settledAt } } } }",
            json!({ "u": u }),
        )
        .await;
    assert_eq!(data(&r, "holds")["edges"][0]["node"]["sourceId"], "short");
    assert_eq!(app.count("mjk_point_transactions").await, 1);
    app.assert_verify_clean().await;
}

async fn a_hold_keeps_points_of_a_batch_that_expires_until_it_is_settled(app: TestApp) {
    let u = app.create_user("slow-job").await;
    let soon = (chrono::Utc::now() + chrono::Duration::milliseconds(1500)).to_rfc3339();
    app.recharge(u, 50, "short-lived", Some(&soon)).await;
    app.recharge(u, 10, "lasting", None).await;
    hold(&app, u, 40, "SCRIPT", "job", None).await;
    hold(&app, u, 5, "SCRIPT", "job-2", None).await;
    assert_eq!(batch_figures(&app, u).await, vec![(5, 45), (10, 0)]);
    tokio::time::sleep(Duration::from_millis(1700)).await;
    let r = app
        .gql(
            &app.admin,
            "mutation { expirePoints { pointsExpired } }",
            json!({}),
        )
        .await;
    // Only the unreserved 5 expire; the held 45 wait for their holds.
    assert_eq!(data(&r, "expirePoints")["pointsExpired"], 5, "{r}");
    assert_eq!(figures(&app, u).await, (55, 45, 10));
    app.assert_verify_clean().await;
    // The capture draws the held points of the expired batch; the 15 it
    // gives back expire at once.
    let r = capture(&app, "SCRIPT", "job", 25, None).await;
    assert_eq!(data(&r, "captureHold")["entry"]["amount"], 25, "{r}");
    assert_eq!(figures(&app, u).await, (15, 5, 10));
    assert_eq!(
        usage_types(&app, u).await[..2],
        [("EXPIRE".to_owned(), 15), ("CONSUME".to_owned(), 25)]
    );
    // A release into the expired batch expires too.
    release(&app, "SCRIPT", "job-2", None).await;
    assert_eq!(figures(&app, u).await, (10, 0, 10));
    assert_eq!(batch_figures(&app, u).await, vec![(0, 0), (10, 0)]);
    assert_eq!(usage_types(&app, u).await[0], ("EXPIRE".to_owned(), 5));
    app.assert_verify_clean().await;
}

async fn two_hundred_holds_and_consumes_racing_for_one_hundred_points_never_overdraw(app: TestApp) {
    let u = app.create_user("racer").await;
    app.recharge(u, 60, "a", None).await;
    app.recharge(u, 40, "b", Some(&in_a_day())).await;
    let app = Arc::new(app);
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let app = app.clone();
            tokio::spawn(async move {
                let r = if i % 2 == 0 {
                    hold(&app, u, 1, "SCRIPT", &format!("h{i}"), None).await
                } else {
                    app.consume(u, 1, "SCRIPT", &format!("c{i}"), None).await
                };
                (i, r)
            })
        })
        .collect();
    let (mut held, mut consumed, mut short) = (Vec::new(), 0, 0);
    for t in tasks {
        let (i, r) = t.await.unwrap();
        match code(&r) {
            None if i % 2 == 0 => held.push(i),
            None => consumed += 1,
            Some("INSUFFICIENT_BALANCE") => short += 1,
            other => panic!("unexpected {other:?}: {r}"),
        }
    }
    assert_eq!(held.len() + consumed, 100);
    assert_eq!(short, 100);
    let n = held.len() as i64;
    assert_eq!(figures(&app, u).await, (100 - consumed as i64, n, 0));
    app.assert_verify_clean().await;
    // Every capture succeeds: held points are there whatever else ran.
    for i in &held {
        let r = capture(&app, "SCRIPT", &format!("h{i}"), 1, None).await;
        assert!(r["errors"].is_null(), "{r}");
    }
    assert_eq!(figures(&app, u).await, (0, 0, 0));
    assert_eq!(
        batch_figures(&app, u)
            .await
            .iter()
            .map(|b| b.0 + b.1)
            .sum::<i64>(),
        0
    );
    app.assert_verify_clean().await;
}

const FEED: &str = "subscription($u: Int) { balanceChanged(userId: $u) { userId balance held available resync entry { type amount balanceAfter } hold { sourceId status amount captured } } }";

async fn hold_changes_are_announced_in_order_with_ledger_rows(app: TestApp) {
    let u = app.create_user("watched").await;
    let mut c = WsClient::ready(&app, &app.user_token(u)).await;
    c.subscribe("me", FEED, json!({})).await;
    app.wait_subscriptions(1).await;
    app.recharge(u, 100, "o", None).await;
    hold(&app, u, 60, "VIDEO", "v", None).await;
    app.consume(u, 10, "SCRIPT", "s", None).await;
    capture(&app, "VIDEO", "v", 45, None).await;
    hold(&app, u, 20, "SCRIPT", "r", None).await;
    release(&app, "SCRIPT", "r", None).await;
    // (kind, balance, held, hold status)
    let expected = [
        ("RECHARGE", 100, 0, ""),
        ("HOLD", 100, 60, "HELD"),
        ("CONSUME", 90, 60, ""),
        ("CONSUME", 45, 0, ""),
        ("HOLD", 45, 0, "CAPTURED"),
        ("HOLD", 45, 20, "HELD"),
        ("HOLD", 45, 0, "RELEASED"),
    ];
    for (i, (kind, balance, held, status)) in expected.into_iter().enumerate() {
        let ev = c.change().await;
        assert_eq!(ev["resync"], false, "{i}: {ev}");
        assert_eq!(ev["balance"], balance, "{i}: {ev}");
        assert_eq!(ev["held"], held, "{i}: {ev}");
        assert_eq!(ev["available"], balance - held, "{i}: {ev}");
        if kind == "HOLD" {
            assert!(ev["entry"].is_null(), "{i}: {ev}");
            assert_eq!(ev["hold"]["status"], status, "{i}: {ev}");
        } else {
            assert_eq!(ev["entry"]["type"], kind, "{i}: {ev}");
            assert!(ev["hold"].is_null(), "{i}: {ev}");
        }
    }
    c.quiet(Duration::from_millis(300)).await;
}

/// Two instances sweep the same expired holds at once: each hold expires
/// exactly once, and the points come back once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_sweeping_at_once_expire_each_hold_once() {
    let url = crate::helpers::fresh_postgres_url().await;
    let a = spawn_on(url.clone(), tempfile::tempdir().unwrap()).await;
    let b = spawn_on(url, tempfile::tempdir().unwrap()).await;
    let mut users = Vec::new();
    for i in 0..3 {
        let u = a.create_user(&format!("s{i}")).await;
        a.recharge(u, 100, &format!("o{i}"), None).await;
        users.push(u);
    }
    for (i, u) in users.iter().enumerate() {
        for j in 0..4 {
            let r = hold(&a, *u, 10, "SCRIPT", &format!("h{i}-{j}"), Some(1)).await;
            assert!(r["errors"].is_null(), "{r}");
        }
    }
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let sweep = "mutation { expireHolds }";
    let (ra, rb) = tokio::join!(
        a.gql(&a.admin, sweep, json!({})),
        b.gql(&b.admin, sweep, json!({}))
    );
    let n = |r: &Value| {
        r["data"]["expireHolds"]
            .as_i64()
            .unwrap_or_else(|| panic!("{r}"))
    };
    assert_eq!(n(&ra) + n(&rb), 12, "{ra} {rb}");
    for u in &users {
        assert_eq!(figures(&b, *u).await, (100, 0, 100));
    }
    b.assert_verify_clean().await;
}

/// `hold(A, K)` and `consume(B, K)` sent at the same moment: one owner per
/// key, the other answered `IDEMPOTENCY_CONFLICT`, and `verify` clean.
async fn a_hold_and_another_users_consume_of_one_key_never_both_succeed(app: TestApp) {
    let (a, b) = (app.create_user("a").await, app.create_user("b").await);
    app.recharge(a, 10_000, "oa", None).await;
    app.recharge(b, 10_000, "ob", None).await;
    let app = Arc::new(app);
    for round in 0..20 {
        let key = format!("race-{round}");
        let (h, c) = tokio::join!(
            hold(&app, a, 10, "SCRIPT", &key, None),
            app.gql(
                &app.service,
                "mutation($u: Int!, $id: String!) { consume(input: { userId: $u, amount: 7, sourceType: SCRIPT, sourceId: $id }) { id } }",
                json!({ "u": b, "id": key }),
            )
        );
        let (held, consumed) = (h["errors"].is_null(), c["errors"].is_null());
        assert!(
            held != consumed,
            "{key}: exactly one owner, got {h} and {c}"
        );
        let loser = if held { &c } else { &h };
        assert_eq!(code(loser), Some("IDEMPOTENCY_CONFLICT"), "{loser}");
    }
    app.assert_verify_clean().await;
}

/// Decided in issue 23: past `expiresAt` a hold is over even before the
/// sweep runs, so a late capture is `HOLD_SETTLED` and writes nothing; one
/// sweep then expires every due hold of several users (in transactions of
/// many holds each), exactly once.
async fn a_hold_past_its_expiry_is_not_captured_and_many_expire_in_one_sweep(app: TestApp) {
    let users = [
        app.create_user("h1").await,
        app.create_user("h2").await,
        app.create_user("h3").await,
    ];
    for (i, u) in users.iter().enumerate() {
        app.recharge(*u, 1_000, &format!("o{i}"), None).await;
    }
    for i in 0..120 {
        let r = hold(
            &app,
            users[i % 3],
            2,
            "SCRIPT",
            &format!("due-{i}"),
            Some(1),
        )
        .await;
        assert!(r["errors"].is_null(), "{r}");
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let before = app.footprint().await;
    let r = capture(&app, "SCRIPT", "due-0", 1, None).await;
    assert_eq!(code(&r), Some("HOLD_SETTLED"), "{r}");
    assert_eq!(
        app.footprint().await,
        before,
        "a refused capture writes nothing"
    );
    let r = app
        .gql(&app.admin, "mutation { expireHolds }", json!({}))
        .await;
    assert_eq!(r["data"]["expireHolds"], 120, "{r}");
    let r = app
        .gql(&app.admin, "mutation { expireHolds }", json!({}))
        .await;
    assert_eq!(r["data"]["expireHolds"], 0, "{r}");
    for u in users {
        assert_eq!(app.balance(u).await, 1_000);
    }
    app.assert_verify_clean().await;
}
