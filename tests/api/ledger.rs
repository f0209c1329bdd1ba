//! Ledger rules (DESIGN.md section 3) over HTTP, on both engines.

use serde_json::json;

use crate::helpers::{code, data, TestApp};

both_engines!(
    consume_draws_soonest_expiring_first_and_refunds_restore_batches_exactly,
    idempotent_retries_write_once_and_conflicts_are_refused,
    bad_input_is_refused_with_a_code_and_writes_nothing,
    refunds_are_capped_by_what_was_consumed,
    a_batch_expiring_between_consume_and_refund_expires_again,
    expire_points_sweeps_due_batches_and_balance_never_shows_them,
    fal_refunds_flag_the_task,
    descriptions_and_durations_follow_the_source_type,
    insufficient_balance_writes_nothing,
    one_transaction_moves_points_of_two_users,
);

fn in_secs(s: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::seconds(s)).to_rfc3339()
}

async fn consume_draws_soonest_expiring_first_and_refunds_restore_batches_exactly(app: TestApp) {
    let u = app.create_user("alice").await;
    // Batch order by id: never-expiring, expires in 20 days, expires in 10 days.
    app.recharge(u, 100, "o-never", None).await;
    app.recharge(u, 50, "o-20d", Some(&in_secs(20 * 86_400)))
        .await;
    app.recharge(u, 30, "o-10d", Some(&in_secs(10 * 86_400)))
        .await;
    assert_eq!(app.batches(u).await, vec![100, 50, 30]);

    // 120 spans all three: 30 (10d) + 50 (20d) + 40 (never).
    let c = app.consume(u, 120, "SCRIPT", "job-1", None).await;
    let c = data(&c, "consume");
    assert_eq!(
        (c["balanceBefore"].as_i64(), c["balanceAfter"].as_i64()),
        (Some(180), Some(60))
    );
    assert_eq!(app.batches(u).await, vec![60, 0, 0]);

    // A partial refund goes back to the latest-expiring batch first.
    let r = app.refund("SCRIPT", "job-1", "rf-1", Some(50)).await;
    assert_eq!(data(&r, "refund")["change"], 50);
    assert_eq!(app.batches(u).await, vec![100, 10, 0]);

    // The rest of the refund restores every batch to what it was.
    let r = app.refund("SCRIPT", "job-1", "rf-2", None).await;
    assert_eq!(data(&r, "refund")["amount"], 70);
    assert_eq!(app.batches(u).await, vec![100, 50, 30]);
    assert_eq!(app.balance(u).await, 180);
    app.assert_verify_clean().await;
}

async fn idempotent_retries_write_once_and_conflicts_are_refused(app: TestApp) {
    let u = app.create_user("bob").await;
    let first = app.recharge(u, 500, "order-1", None).await;
    let again = app.recharge(u, 500, "order-1", None).await;
    assert_eq!(
        data(&first, "recharge")["id"],
        data(&again, "recharge")["id"]
    );
    let conflict = app.recharge(u, 501, "order-1", None).await;
    assert_eq!(code(&conflict), Some("IDEMPOTENCY_CONFLICT"));

    let c1 = app.consume(u, 40, "TTS", "tts-1", Some(12.5)).await;
    let c2 = app.consume(u, 40, "TTS", "tts-1", Some(12.5)).await;
    assert_eq!(data(&c1, "consume")["id"], data(&c2, "consume")["id"]);
    assert_eq!(
        code(&app.consume(u, 40, "TTS", "tts-1", Some(13.0)).await),
        Some("IDEMPOTENCY_CONFLICT")
    );
    assert_eq!(
        code(&app.consume(u, 41, "TTS", "tts-1", Some(12.5)).await),
        Some("IDEMPOTENCY_CONFLICT")
    );
    // The same source id under another source type is another job.
    assert!(app.consume(u, 10, "SCRIPT", "tts-1", None).await["errors"].is_null());

    let r1 = app.refund("TTS", "tts-1", "rk-1", Some(10)).await;
    let r2 = app.refund("TTS", "tts-1", "rk-1", Some(10)).await;
    assert_eq!(data(&r1, "refund")["id"], data(&r2, "refund")["id"]);
    assert_eq!(
        code(&app.refund("TTS", "tts-1", "rk-1", Some(11)).await),
        Some("IDEMPOTENCY_CONFLICT")
    );

    assert_eq!(app.count("mjk_point_transactions").await, 4);
    assert_eq!(app.count("ts_financial_transactions").await, 1);
    assert_eq!(app.balance(u).await, 500 - 40 - 10 + 10);
    app.assert_verify_clean().await;
}

async fn bad_input_is_refused_with_a_code_and_writes_nothing(app: TestApp) {
    let u = app.create_user("carol").await;
    app.recharge(u, 1_000, "seed", None).await;
    let before = app.footprint().await;

    for amount in [0i64, -5] {
        assert_eq!(
            code(&app.consume(u, amount, "SCRIPT", "bad", None).await),
            Some("INVALID_INPUT")
        );
        assert_eq!(
            code(&app.recharge(u, amount, "bad", None).await),
            Some("INVALID_INPUT")
        );
        assert_eq!(
            code(&app.refund("SCRIPT", "x", "k", Some(amount)).await),
            Some("INVALID_INPUT")
        );
    }
    // Above i32: refused by GraphQL input coercion, still with a code.
    for amount in [i32::MAX as i64 + 1, i64::MAX] {
        assert_eq!(
            code(&app.consume(u, amount, "SCRIPT", "big", None).await),
            Some("INVALID_INPUT")
        );
    }
    // A recharge that would push the balance past the public Int maximum.
    assert_eq!(
        code(&app.recharge(u, i32::MAX as i64, "huge", None).await),
        Some("INVALID_INPUT")
    );
    // Durations: required for TTS/VIDEO, refused elsewhere, finite and >= 0.
    assert_eq!(
        code(&app.consume(u, 5, "TTS", "d1", None).await),
        Some("INVALID_INPUT")
    );
    assert_eq!(
        code(&app.consume(u, 5, "VIDEO", "d2", Some(-1.0)).await),
        Some("INVALID_INPUT")
    );
    assert_eq!(
        code(&app.consume(u, 5, "SCRIPT", "d3", Some(3.0)).await),
        Some("INVALID_INPUT")
    );
    assert_eq!(
        code(&app.consume(u, 5, "VIDEO", "d4", Some(1e300)).await),
        Some("INVALID_INPUT")
    );
    // NaN and infinity cannot be written in JSON: the body itself is refused.
    for raw in [
        r#"{"query":"mutation { consume(input: {userId: 1, amount: 1, sourceType: TTS, sourceId: \"n\", duration: NaN}) { id } }"}"#,
        r#"{"query":"mutation($d: Float) { consume(input: {userId: 1, amount: 1, sourceType: TTS, sourceId: \"n\", duration: $d}) { id } }","variables":{"d":1e999}}"#,
        r#"{"query": "mutation { consume("#,
        "not json at all",
    ] {
        let resp = app
            .client
            .post(format!("{}/graphql", app.url))
            .bearer_auth(&app.service)
            .header("content-type", "application/json")
            .body(raw)
            .send()
            .await
            .unwrap();
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(code(&body), Some("INVALID_INPUT"), "{raw} -> {body}");
    }
    // Unknown user, unknown source, empty and oversized keys, unknown enum.
    assert_eq!(
        code(&app.consume(999_999, 5, "SCRIPT", "u", None).await),
        Some("USER_NOT_FOUND")
    );
    assert_eq!(
        code(&app.recharge(999_999, 5, "u", None).await),
        Some("USER_NOT_FOUND")
    );
    assert_eq!(
        code(&app.refund("SCRIPT", "never-consumed", "k2", None).await),
        Some("NOT_FOUND")
    );
    assert_eq!(
        code(&app.consume(u, 5, "SCRIPT", "", None).await),
        Some("INVALID_INPUT")
    );
    assert_eq!(
        code(&app.consume(u, 5, "SCRIPT", &"x".repeat(65), None).await),
        Some("INVALID_INPUT")
    );
    assert_eq!(
        code(&app.consume(u, 5, "MINING", "m", None).await),
        Some("INVALID_INPUT")
    );
    assert_eq!(
        code(
            &app.recharge(u, 5, "past", Some("2001-01-01T00:00:00Z"))
                .await
        ),
        Some("INVALID_INPUT")
    );
    // Only services and admins mutate.
    let r = app
        .gql(&app.user_token(u), "mutation { consume(input: {userId: 1, amount: 1, sourceType: SCRIPT, sourceId: \"z\"}) { id } }", json!({}))
        .await;
    assert_eq!(code(&r), Some("FORBIDDEN"));

    assert_eq!(app.footprint().await, before);
    app.assert_verify_clean().await;
}

async fn refunds_are_capped_by_what_was_consumed(app: TestApp) {
    let u = app.create_user("dave").await;
    app.recharge(u, 100, "o", None).await;
    app.consume(u, 60, "POLISH", "p-1", None).await;
    assert_eq!(
        code(&app.refund("POLISH", "p-1", "r0", Some(61)).await),
        Some("REFUND_EXCEEDS_CONSUMED")
    );
    assert!(app.refund("POLISH", "p-1", "r1", Some(40)).await["errors"].is_null());
    assert_eq!(
        code(&app.refund("POLISH", "p-1", "r2", Some(21)).await),
        Some("REFUND_EXCEEDS_CONSUMED")
    );
    assert!(app.refund("POLISH", "p-1", "r3", None).await["errors"].is_null());
    // Fully refunded: nothing left, with or without an amount.
    assert_eq!(
        code(&app.refund("POLISH", "p-1", "r4", None).await),
        Some("REFUND_EXCEEDS_CONSUMED")
    );
    assert_eq!(
        code(&app.refund("POLISH", "p-1", "r5", Some(1)).await),
        Some("REFUND_EXCEEDS_CONSUMED")
    );
    assert_eq!(app.balance(u).await, 100);
    app.assert_verify_clean().await;
}

async fn a_batch_expiring_between_consume_and_refund_expires_again(app: TestApp) {
    let u = app.create_user("erin").await;
    app.recharge(u, 100, "keep", None).await;
    app.recharge(u, 50, "short", Some(&in_secs(4))).await;
    // Draws the expiring batch first: 50 from it, 10 from the other.
    app.consume(u, 60, "VOICE_CLONE", "vc-1", None).await;
    assert_eq!(app.batches(u).await, vec![90, 0]);
    tokio::time::sleep(std::time::Duration::from_millis(4_300)).await;

    let r = app.refund("VOICE_CLONE", "vc-1", "vc-r", None).await;
    assert_eq!(data(&r, "refund")["amount"], 60);
    // The 50 that went back to the expired batch were expired at once.
    assert_eq!(app.batches(u).await, vec![100, 0]);
    assert_eq!(app.balance(u).await, 100);
    let page = app
        .gql(&app.admin, "query($u: Int!) { usageDetails(userId: $u, first: 2) { nodes { type amount balanceAfter description } } }", json!({ "u": u }))
        .await;
    let nodes = &data(&page, "usageDetails")["nodes"];
    assert_eq!(nodes[0]["type"], "EXPIRE");
    assert_eq!(nodes[0]["amount"], 50);
    assert_eq!(nodes[0]["description"], "【积分过期】");
    assert_eq!(nodes[1]["type"], "REFUND");
    assert_eq!(nodes[1]["description"], "【退款】【声音克隆】");
    app.assert_verify_clean().await;
}

async fn expire_points_sweeps_due_batches_and_balance_never_shows_them(app: TestApp) {
    let u = app.create_user("frank").await;
    let v = app.create_user("grace").await;
    app.recharge(u, 70, "u-short", Some(&in_secs(3))).await;
    app.recharge(u, 30, "u-long", None).await;
    app.recharge(v, 20, "v-short", Some(&in_secs(3))).await;
    tokio::time::sleep(std::time::Duration::from_millis(3_300)).await;
    // Not swept yet, but never shown and never spendable.
    assert_eq!(app.balance(u).await, 30);
    assert_eq!(
        code(&app.consume(u, 31, "SCRIPT", "s", None).await),
        Some("INSUFFICIENT_BALANCE")
    );

    let r = app
        .gql(
            &app.admin,
            "mutation { expirePoints { usersAffected batchesExpired pointsExpired } }",
            json!({}),
        )
        .await;
    assert_eq!(
        data(&r, "expirePoints"),
        &json!({ "usersAffected": 2, "batchesExpired": 2, "pointsExpired": 90 })
    );
    // A second sweep finds nothing.
    let r = app
        .gql(
            &app.admin,
            "mutation { expirePoints { batchesExpired } }",
            json!({}),
        )
        .await;
    assert_eq!(data(&r, "expirePoints")["batchesExpired"], 0);
    assert_eq!(app.batches(u).await, vec![0, 30]);
    assert_eq!(app.balance(v).await, 0);
    // Services may not sweep.
    let r = app
        .gql(
            &app.service,
            "mutation { expirePoints { batchesExpired } }",
            json!({}),
        )
        .await;
    assert_eq!(code(&r), Some("FORBIDDEN"));
    app.assert_verify_clean().await;
}

async fn fal_refunds_flag_the_task(app: TestApp) {
    use sea_orm::{ConnectionTrait, Statement};
    let u = app.create_user("heidi").await;
    app.recharge(u, 100, "o", None).await;
    app.db
        .execute_raw(Statement::from_sql_and_values(
            app.db.get_database_backend(),
            "INSERT INTO ts_fal_tasks (user_id, task_id, app_name, api_key, task_type, status, money, cost_money, is_refund, created_at) \
             VALUES ($1, 'fal-job-1', 'fal-ai/flux/dev', 'k', 'image', 'FAILED', 25, 0, 0, $2)",
            [u.into(), crate::helpers::platform_time(chrono::Utc::now()).into()],
        ))
        .await
        .unwrap();
    app.consume(u, 25, "FAL", "fal-job-1", None).await;
    let r = app.refund("FAL", "fal-job-1", "fal-r", None).await;
    assert_eq!(data(&r, "refund")["description"], "【退款】【AI生成】");
    let t = app
        .gql(
            &app.admin,
            "{ falTasks(filter: { refunded: true }) { nodes { taskId isRefund } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        data(&t, "falTasks")["nodes"],
        json!([{ "taskId": "fal-job-1", "isRefund": true }])
    );
    app.assert_verify_clean().await;
}

async fn descriptions_and_durations_follow_the_source_type(app: TestApp) {
    let u = app.create_user("ivan").await;
    let r = app.recharge(u, 1_000, "o", None).await;
    assert_eq!(data(&r, "recharge")["description"], "【积分充值】");
    let cases = [
        ("SCRIPT", None, "【脚本生成】"),
        ("POLISH", None, "【脚本润色】"),
        ("VOICE_CLONE", None, "【声音克隆】"),
        ("TTS", Some(12.0), "【配音合成】"),
        ("VIDEO", Some(0.0), "【视频生成】"),
        ("FAL", None, "【AI生成】"),
    ];
    for (i, (src, dur, label)) in cases.iter().enumerate() {
        let c = app.consume(u, 10, src, &format!("j{i}"), *dur).await;
        let c = data(&c, "consume");
        assert_eq!(c["description"], *label);
        assert_eq!(c["duration"].as_f64(), *dur);
        assert_eq!(c["change"], -10);
    }
    let note = app
        .gql(&app.service, "mutation($u: Int!) { consume(input: {userId: $u, amount: 1, sourceType: SCRIPT, sourceId: \"n1\", note: \"第3集\"}) { description } }", json!({ "u": u }))
        .await;
    assert_eq!(data(&note, "consume")["description"], "【脚本生成】第3集");
    let gift = app
        .gql(&app.admin, "mutation($u: Int!) { recharge(input: {userId: $u, amount: 5, orderId: \"g1\", kind: GIFT}) { description } }", json!({ "u": u }))
        .await;
    assert_eq!(data(&gift, "recharge")["description"], "【积分赠送】");
    app.assert_verify_clean().await;
}

async fn insufficient_balance_writes_nothing(app: TestApp) {
    let u = app.create_user("judy").await;
    app.recharge(u, 10, "o", None).await;
    let before = app.footprint().await;
    let r = app.consume(u, 11, "SCRIPT", "s", None).await;
    assert_eq!(code(&r), Some("INSUFFICIENT_BALANCE"));
    assert_eq!(app.footprint().await, before);
    // The same key succeeds later once it is affordable.
    assert!(app.consume(u, 10, "SCRIPT", "s2", None).await["errors"].is_null());
    assert_eq!(app.balance(u).await, 0);
    app.assert_verify_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_background_sweep_expires_due_batches_on_its_own() {
    let app = crate::helpers::spawn_with(crate::helpers::Engine::Sqlite, |s| {
        s.expiry_sweep_secs = 1;
    })
    .await;
    let u = app.create_user("idle").await;
    app.recharge(u, 25, "soon", Some(&in_secs(2))).await;
    // Nobody touches this user again; only the timer can write the expire row.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let page = app
            .gql(
                &app.admin,
                "query($u: Int!) { usageDetails(userId: $u, filter: { types: [EXPIRE] }) { nodes { amount balanceAfter } } }",
                json!({ "u": u }),
            )
            .await;
        let nodes = data(&page, "usageDetails")["nodes"].clone();
        if nodes.as_array().is_some_and(|n| !n.is_empty()) {
            assert_eq!(nodes, json!([{ "amount": 25, "balanceAfter": 0 }]));
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the sweep never ran");
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert_eq!(app.batches(u).await, vec![0]);
    app.assert_verify_clean().await;
}

/// The store's write transaction carries rows of several users (transfers
/// and holds will need it): each user's chain and balance stay exact.
async fn one_transaction_moves_points_of_two_users(app: TestApp) {
    use crate::helpers::gift;
    use points_gateway::domain::input::ConsumeRequest;
    use points_gateway::domain::ledger::{self, RowTime};
    use points_gateway::domain::source::SourceType;

    let a = app.create_user("a").await;
    let b = app.create_user("b").await;
    let (ra, rb) = (gift(a, 100, "two-a"), gift(b, 100, "two-b"));
    let cb = ConsumeRequest::new(
        b,
        30,
        SourceType::default_named("script").unwrap(),
        "two-c",
        None,
        None,
    )
    .unwrap();
    let mut tx = app.store.begin_write().await.unwrap();
    ledger::recharge_in(&mut tx, &ra, &ra.fingerprint(), RowTime::Now)
        .await
        .unwrap();
    ledger::recharge_in(&mut tx, &rb, &rb.fingerprint(), RowTime::Now)
        .await
        .unwrap();
    ledger::consume_in(&mut tx, &cb, &cb.fingerprint(), RowTime::Now)
        .await
        .unwrap();
    let written = tx.commit().await.unwrap();
    let users: Vec<i32> = written.iter().map(|(u, _)| *u).collect();
    assert_eq!(users, vec![a, b, b]);
    assert_eq!(app.balance(a).await, 100);
    assert_eq!(app.balance(b).await, 70);
    app.assert_verify_clean().await;
}
