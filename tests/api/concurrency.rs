//! Invariants under concurrency, on both engines, plus a model-based
//! random walk (consume, refund, recharge replays, holds) and two gateway
//! instances sharing one PostgreSQL.

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::helpers::{code, data, spawn_on, TestApp};

both_engines!(
    two_hundred_consumes_racing_for_one_hundred_points_never_overdraw,
    fifty_racing_identical_retries_write_one_row,
    random_operations_agree_with_an_in_memory_model,
);

async fn two_hundred_consumes_racing_for_one_hundred_points_never_overdraw(app: TestApp) {
    let u = app.create_user("racer").await;
    app.recharge(u, 60, "a", None).await;
    app.recharge(
        u,
        40,
        "b",
        Some(&(chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339()),
    )
    .await;
    let app = std::sync::Arc::new(app);
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let app = app.clone();
            tokio::spawn(async move {
                app.consume(u, 1, "SCRIPT", &format!("race-{i}"), None)
                    .await
            })
        })
        .collect();
    let mut ok = 0;
    let mut insufficient = 0;
    for t in tasks {
        let r = t.await.unwrap();
        match code(&r) {
            None => ok += 1,
            Some("INSUFFICIENT_BALANCE") => insufficient += 1,
            other => panic!("unexpected {other:?}: {r}"),
        }
    }
    assert_eq!((ok, insufficient), (100, 100));
    assert_eq!(app.balance(u).await, 0);
    assert_eq!(app.batches(u).await, vec![0, 0]);
    app.assert_verify_clean().await;
}

async fn fifty_racing_identical_retries_write_one_row(app: TestApp) {
    let u = app.create_user("retrier").await;
    app.recharge(u, 1_000, "o", None).await;
    let app = std::sync::Arc::new(app);
    let consumes: Vec<_> = (0..50)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move { app.consume(u, 7, "TTS", "same-job", Some(3.0)).await })
        })
        .collect();
    let mut ids = std::collections::HashSet::new();
    for t in consumes {
        let r = t.await.unwrap();
        ids.insert(data(&r, "consume")["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 1, "every retry got the original row");

    let recharges: Vec<_> = (0..50)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move { app.recharge(u, 5, "same-order", None).await })
        })
        .collect();
    let refunds: Vec<_> = (0..50)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move { app.refund("TTS", "same-job", "same-refund", Some(3)).await })
        })
        .collect();
    for t in recharges.into_iter().chain(refunds) {
        let r = t.await.unwrap();
        assert!(r["errors"].is_null(), "{r}");
    }
    // recharge o, the consume, the racing recharge, the racing refund.
    assert_eq!(app.count("mjk_point_transactions").await, 4);
    assert_eq!(app.count("ts_financial_transactions").await, 2);
    assert_eq!(app.balance(u).await, 1_000 - 7 + 5 + 3);
    app.assert_verify_clean().await;
}

/// What the model expects of one user.
#[derive(Default, Clone)]
struct Model {
    balance: i64,
    consumed: HashMap<String, (i64, i64)>, // source id -> (amount, refunded)
    held: i64,
    open: HashMap<String, i64>, // open hold's source id -> amount
}

impl Model {
    fn available(&self) -> i64 {
        self.balance - self.held
    }
}

async fn random_operations_agree_with_an_in_memory_model(app: TestApp) {
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let mut users = Vec::new();
    let mut orders: Vec<(i32, i64, String, String)> = Vec::new(); // user, amount, order, row id
    for i in 0..3 {
        users.push((app.create_user(&format!("m{i}")).await, Model::default()));
    }
    for step in 0..200 {
        let k = rng.gen_range(0..users.len());
        let (uid, model) = &mut users[k];
        let uid = *uid;
        match rng.gen_range(0..14) {
            0..=2 => {
                let amount = rng.gen_range(1..500);
                let order = format!("o{step}");
                let r = app.recharge(uid, amount, &order, None).await;
                let id = data(&r, "recharge")["id"].as_str().unwrap().to_owned();
                model.balance += amount;
                orders.push((uid, amount, order, id));
            }
            3..=6 => {
                let amount = rng.gen_range(1..200);
                let id = format!("c{step}");
                let r = app.consume(uid, amount, "POLISH", &id, None).await;
                if amount <= model.available() {
                    assert!(r["errors"].is_null(), "step {step}: {r}");
                    model.balance -= amount;
                    model.consumed.insert(id, (amount, 0));
                } else {
                    assert_eq!(code(&r), Some("INSUFFICIENT_BALANCE"), "step {step}");
                }
            }
            7..=8 if !model.consumed.is_empty() => {
                let keys: Vec<_> = model.consumed.keys().cloned().collect();
                let id = keys[rng.gen_range(0..keys.len())].clone();
                let (amount, refunded) = model.consumed[&id];
                let ask = rng.gen_range(1..=amount);
                let r = app
                    .refund("POLISH", &id, &format!("r{step}"), Some(ask))
                    .await;
                if refunded + ask <= amount {
                    assert!(r["errors"].is_null(), "step {step}: {r}");
                    model.balance += ask;
                    model.consumed.insert(id, (amount, refunded + ask));
                } else {
                    assert_eq!(code(&r), Some("REFUND_EXCEEDS_CONSUMED"), "step {step}");
                }
            }
            10 | 11 => {
                let amount = rng.gen_range(1..300);
                let id = format!("h{step}");
                let r = app
                    .gql(
                        &app.service,
                        "mutation($u: Int!, $a: Int!, $id: String!) { hold(input: { userId: $u, amount: $a, sourceType: POLISH, sourceId: $id }) { id } }",
                        serde_json::json!({ "u": uid, "a": amount, "id": id }),
                    )
                    .await;
                if amount <= model.available() {
                    assert!(r["errors"].is_null(), "step {step}: {r}");
                    model.held += amount;
                    model.open.insert(id, amount);
                } else {
                    assert_eq!(code(&r), Some("INSUFFICIENT_BALANCE"), "step {step}");
                }
            }
            12 | 13 if !model.open.is_empty() => {
                let mut keys: Vec<_> = model.open.keys().cloned().collect();
                keys.sort();
                let id = keys[rng.gen_range(0..keys.len())].clone();
                let amount = model.open[&id];
                if rng.gen_bool(0.3) {
                    let r = app
                        .gql(
                            &app.service,
                            "mutation($id: String!) { releaseHold(input: { sourceType: POLISH, sourceId: $id }) { status } }",
                            serde_json::json!({ "id": id }),
                        )
                        .await;
                    assert_eq!(data(&r, "releaseHold")["status"], "RELEASED", "step {step}");
                    model.held -= amount;
                    model.open.remove(&id);
                } else {
                    // Sometimes more than held: refused, nothing changes.
                    let ask = rng.gen_range(1..=amount + 5);
                    let r = app
                        .gql(
                            &app.service,
                            "mutation($id: String!, $a: Int!) { captureHold(input: { sourceType: POLISH, sourceId: $id, amount: $a }) { status } }",
                            serde_json::json!({ "id": id, "a": ask }),
                        )
                        .await;
                    if ask <= amount {
                        assert_eq!(data(&r, "captureHold")["status"], "CAPTURED", "step {step}");
                        model.held -= amount;
                        model.balance -= ask;
                        model.open.remove(&id);
                        model.consumed.insert(id, (ask, 0));
                    } else {
                        assert_eq!(code(&r), Some("INVALID_INPUT"), "step {step}");
                    }
                }
            }
            _ if !orders.is_empty() => {
                // Replay an earlier recharge: the original row, nothing new.
                let (u, amount, order, id) = orders[rng.gen_range(0..orders.len())].clone();
                let r = app.recharge(u, amount, &order, None).await;
                assert_eq!(data(&r, "recharge")["id"].as_str(), Some(id.as_str()));
                let r = app.recharge(u, amount + 1, &order, None).await;
                assert_eq!(code(&r), Some("IDEMPOTENCY_CONFLICT"));
            }
            _ => {}
        }
        for (u, m) in &users {
            let r = app
                .gql(
                    &app.admin,
                    "query($id: Int!) { user(id: $id) { balance held available } }",
                    serde_json::json!({ "id": u }),
                )
                .await;
            let got = data(&r, "user");
            assert_eq!(got["balance"], m.balance, "step {step}, user {u}");
            assert_eq!(got["held"], m.held, "step {step}, user {u}");
            assert_eq!(got["available"], m.available(), "step {step}, user {u}");
        }
        if step % 25 == 0 {
            app.assert_verify_clean().await;
        }
    }
    app.assert_verify_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_postgres_lose_no_update() {
    let dir = tempfile::tempdir().unwrap();
    let url = crate::helpers::fresh_postgres_url().await;
    let a = spawn_on(url.clone(), dir).await;
    let b = spawn_on(url, tempfile::tempdir().unwrap()).await;
    let mut users = Vec::new();
    for i in 0..4 {
        let u = a.create_user(&format!("shared{i}")).await;
        a.recharge(u, 1_000, &format!("seed{i}"), None).await;
        users.push(u);
    }
    let a = std::sync::Arc::new(a);
    let b = std::sync::Arc::new(b);
    let mut tasks = Vec::new();
    for i in 0..240 {
        let app = if i % 2 == 0 { a.clone() } else { b.clone() };
        let u = users[i % users.len()];
        tasks.push(tokio::spawn(async move {
            match i % 3 {
                0 => app.consume(u, 3, "SCRIPT", &format!("x{i}"), None).await,
                1 => app.recharge(u, 2, &format!("y{i}"), None).await,
                _ => {
                    app.consume(u, 5, "TTS", &format!("z{}", i % 30), Some(1.0))
                        .await
                }
            }
        }));
    }
    for t in tasks {
        let r = t.await.unwrap();
        // z-jobs are deliberately retried from both instances with one key.
        assert!(
            r["errors"].is_null() || code(&r) == Some("IDEMPOTENCY_CONFLICT"),
            "{r}"
        );
    }
    // 80 distinct consumes of 3, 80 recharges of 2, and 10 distinct z-jobs
    // of 5 (each key raced from both instances, sometimes for another user,
    // which is an idempotency conflict, never a second row).
    assert_eq!(a.count("mjk_point_transactions").await, 4 + 80 + 80 + 10);
    let mut total = 0;
    for u in &users {
        total += a.balance(*u).await;
    }
    assert_eq!(total, 4_000 - 80 * 3 + 80 * 2 - 10 * 5);
    a.assert_verify_clean().await;

    // Both instances sweep the same due batches at once: each batch is
    // expired exactly once.
    for (i, u) in users.iter().enumerate() {
        let at = (chrono::Utc::now() + chrono::Duration::milliseconds(3_000)).to_rfc3339();
        a.recharge(*u, 7, &format!("due{i}"), Some(&at)).await;
    }
    // Generous margins: a loaded CI machine must still recharge before
    // the expiry and sweep after it.
    tokio::time::sleep(std::time::Duration::from_millis(3_300)).await;
    let sweep = "mutation { expirePoints { batchesExpired pointsExpired } }";
    let (ra, rb) = tokio::join!(
        a.gql(&a.admin, sweep, serde_json::json!({})),
        b.gql(&b.admin, sweep, serde_json::json!({}))
    );
    let expired = |r: &serde_json::Value| {
        r["data"]["expirePoints"]["batchesExpired"]
            .as_i64()
            .unwrap()
    };
    assert_eq!(expired(&ra) + expired(&rb), 4, "{ra} {rb}");
    assert_eq!(
        a.count("mjk_point_transactions").await,
        4 + 80 + 80 + 10 + 4 + 4
    );
    b.assert_verify_clean().await;
}

/// Every idempotency lookup is an index lookup under the gateway's generic
/// plans, whatever the ledger's size: with sequential scans priced out, the
/// plan must name the key's unique index (a bound row type made PostgreSQL
/// scan the ledger on every retry).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_lookups_use_their_unique_index_under_generic_plans() {
    use points_gateway::store::ledger::{find_statement, LedgerKey};
    use sea_orm::ConnectionTrait;

    let app = crate::helpers::spawn_app(crate::helpers::Engine::Postgres).await;
    let db = &app.db;
    let txn = sea_orm::TransactionTrait::begin(db).await.unwrap();
    for setting in [
        "SET LOCAL plan_cache_mode = force_generic_plan",
        "SET LOCAL enable_seqscan = off",
    ] {
        txn.execute_unprepared(setting).await.unwrap();
    }
    for (key, args, index) in [
        (
            LedgerKey::Consume {
                source_type: "",
                source_id: "",
            },
            "('script', 'job-1')",
            "ix_ledger_source",
        ),
        (
            LedgerKey::Recharge { order_id: "" },
            "('order-1')",
            "ix_ledger_source",
        ),
        (
            LedgerKey::Refund { refund_key: "" },
            "('refund-1')",
            "ux_entries_refund_key",
        ),
    ] {
        let name = format!("q_{}", key_name(&key));
        txn.execute_unprepared(&format!("PREPARE {name} AS {}", find_statement(key)))
            .await
            .unwrap();
        let plan = crate::helpers::explain(&txn, &format!("EXECUTE {name}{args}")).await;
        assert!(plan.contains(index), "{index} not used:\n{plan}");
    }
    txn.rollback().await.unwrap();
}

fn key_name(key: &points_gateway::store::ledger::LedgerKey<'_>) -> &'static str {
    use points_gateway::store::ledger::LedgerKey;
    match key {
        LedgerKey::Consume { .. } => "consume",
        LedgerKey::Recharge { .. } => "recharge",
        LedgerKey::Refund { .. } => "refund",
    }
}
