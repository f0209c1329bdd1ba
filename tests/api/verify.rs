//! `verify` must find what is broken, not only bless what is not.

use sea_orm::{ConnectionTrait, Statement};

use crate::helpers::TestApp;

both_engines!(
    verify_reports_each_kind_of_corruption_and_the_cli_exits_non_zero,
    verify_reports_a_consume_that_drew_out_of_order,
    verify_reports_holds_that_do_not_add_up,
    verify_reports_a_job_key_owned_by_a_hold_and_a_consume,
);

async fn rules(app: &TestApp) -> Vec<&'static str> {
    let (_, v) = points_gateway::domain::verify::verify(&app.store)
        .await
        .unwrap();
    let mut r: Vec<_> = v.iter().map(|v| v.rule).collect();
    r.sort();
    r.dedup();
    r
}

async fn exec(app: &TestApp, sql: &str) {
    app.db
        .execute_raw(Statement::from_string(app.db.get_database_backend(), sql))
        .await
        .unwrap();
}

async fn verify_reports_each_kind_of_corruption_and_the_cli_exits_non_zero(app: TestApp) {
    let u = app.create_user("victim").await;
    app.recharge(u, 100, "o1", None).await;
    app.consume(u, 30, "SCRIPT", "s1", None).await;
    app.refund("SCRIPT", "s1", "r1", Some(10)).await;
    assert!(rules(&app).await.is_empty());
    let cli = |url: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_points-gateway"))
            .arg("verify")
            .env("DATABASE_URL", url)
            // None of these tools mints or checks a token: no secret.
            .env_remove("GATEWAY_JWT_SECRET")
            .output()
            .unwrap()
    };
    let out = cli(&app.database_url);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // A cached balance that drifted from the ledger and the batches.
    exec(&app, "UPDATE gw_users SET balance = balance + 1").await;
    assert_eq!(rules(&app).await, vec!["balance"]);
    exec(&app, "UPDATE gw_users SET balance = balance - 1").await;

    // A batch whose remaining no longer matches its movements.
    exec(
        &app,
        "UPDATE gw_point_batches SET remaining = remaining - 1",
    )
    .await;
    assert_eq!(rules(&app).await, vec!["balance", "batch"]);
    exec(
        &app,
        "UPDATE gw_point_batches SET remaining = remaining + 1",
    )
    .await;

    // A row stamped before the row it follows (ledger order is time order).
    exec(&app, "UPDATE mjk_point_transactions SET created_at = (SELECT MIN(created_at) FROM mjk_point_transactions) WHERE id = (SELECT MAX(id) FROM mjk_point_transactions)").await;
    exec(&app, "UPDATE mjk_point_transactions SET created_at = (SELECT MAX(created_at) FROM mjk_point_transactions) WHERE id = (SELECT MIN(id) FROM mjk_point_transactions)").await;
    assert_eq!(rules(&app).await, vec!["time_order"]);
    exec(
        &app,
        "UPDATE mjk_point_transactions SET created_at = updated_at",
    )
    .await;
    assert!(rules(&app).await.is_empty());

    // An allocation naming a batch that does not exist (PostgreSQL: no
    // foreign key since migration 15; SQLite keeps its own and refuses).
    if app.db.get_database_backend() == sea_orm::DbBackend::Postgres {
        exec(&app, "UPDATE gw_point_allocations SET batch_id = batch_id + 1000000 WHERE id = (SELECT MIN(id) FROM gw_point_allocations)").await;
        let found = rules(&app).await;
        assert!(found.contains(&"orphan"), "{found:?}");
        exec(&app, "UPDATE gw_point_allocations SET batch_id = batch_id - 1000000 WHERE batch_id > 1000000").await;
        assert!(rules(&app).await.is_empty());
    }

    // A missing mirror row.
    exec(&app, "DELETE FROM ts_points_detail WHERE id = (SELECT detail_id FROM gw_entries WHERE ledger_id = (SELECT MAX(id) FROM mjk_point_transactions))").await;
    assert_eq!(rules(&app).await, vec!["mirror"]);

    // A broken chain and a lost allocation.
    exec(&app, "UPDATE mjk_point_transactions SET balance_before = balance_before + 5, balance_after = balance_after + 5 WHERE type = 'refund'").await;
    exec(&app, "DELETE FROM gw_point_allocations WHERE entry_id = (SELECT id FROM mjk_point_transactions WHERE type = 'consume')").await;
    let found = rules(&app).await;
    for rule in ["allocation", "balance", "chain", "mirror"] {
        assert!(found.contains(&rule), "{rule} missing from {found:?}");
    }
    let out = cli(&app.database_url);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("[chain]") && text.contains("violation(s)"),
        "{text}"
    );
}

async fn verify_reports_a_consume_that_drew_out_of_order(app: TestApp) {
    let u = app.create_user("drawn").await;
    app.recharge(u, 100, "o1", None).await;
    // A consume that drew a later batch before an earlier one.
    app.recharge(u, 5, "o2", Some("2999-01-01T00:00:00Z")).await;
    app.consume(u, 70, "SCRIPT", "s2", None).await;
    assert!(rules(&app).await.is_empty());
    exec(&app, "UPDATE gw_point_allocations SET id = id + 1000 WHERE id = (SELECT MIN(a.id) FROM gw_point_allocations a JOIN mjk_point_transactions t ON t.id = a.entry_id WHERE t.source_id = 's2')").await;
    assert_eq!(rules(&app).await, vec!["draw_order"]);
    exec(
        &app,
        "UPDATE gw_point_allocations SET id = id - 1000 WHERE id > 1000",
    )
    .await;
    assert!(rules(&app).await.is_empty());
}

async fn verify_reports_holds_that_do_not_add_up(app: TestApp) {
    let u = app.create_user("holder").await;
    app.recharge(u, 100, "o1", None).await;
    let hold = "mutation($u: Int!, $a: Int!, $id: String!) { hold(input: { userId: $u, amount: $a, sourceType: SCRIPT, sourceId: $id }) { id } }";
    for (a, id) in [(30, "open"), (20, "settled")] {
        let r = app
            .gql(
                &app.service,
                hold,
                serde_json::json!({ "u": u, "a": a, "id": id }),
            )
            .await;
        assert!(r["errors"].is_null(), "{r}");
    }
    let r = app
        .gql(
            &app.service,
            "mutation { captureHold(input: { sourceType: SCRIPT, sourceId: \"settled\", amount: 15 }) { status } }",
            serde_json::json!({}),
        )
        .await;
    assert!(r["errors"].is_null(), "{r}");
    assert!(rules(&app).await.is_empty());
    // Each corruption, then its repair.
    let broken = [
        // The cached held figure drifted from the open holds.
        ("UPDATE gw_users SET held = held - 1", "UPDATE gw_users SET held = held + 1"),
        // A batch's reserve no longer matches its holds' parts.
        (
            "UPDATE gw_point_batches SET reserved = reserved - 1, remaining = remaining + 1",
            "UPDATE gw_point_batches SET reserved = reserved + 1, remaining = remaining - 1",
        ),
        // Parts that do not add up to their hold.
        (
            "UPDATE gw_hold_parts SET amount = amount + 1 WHERE hold_id = (SELECT id FROM gw_holds WHERE source_id = 'open')",
            "UPDATE gw_hold_parts SET amount = amount - 1 WHERE hold_id = (SELECT id FROM gw_holds WHERE source_id = 'open')",
        ),
        // A capture whose consume row is not what it says.
        (
            "UPDATE gw_holds SET captured = captured + 1 WHERE status = 'captured'",
            "UPDATE gw_holds SET captured = captured - 1 WHERE status = 'captured'",
        ),
        // An open hold marked settled without a settlement.
        (
            "UPDATE gw_holds SET status = 'released' WHERE source_id = 'open'",
            "UPDATE gw_holds SET status = 'held' WHERE source_id = 'open'",
        ),
    ];
    for (corrupt, repair) in broken {
        exec(&app, corrupt).await;
        assert_eq!(rules(&app).await, vec!["hold"], "{corrupt}");
        exec(&app, repair).await;
        assert!(rules(&app).await.is_empty(), "{repair}");
    }
}

async fn verify_reports_a_job_key_owned_by_a_hold_and_a_consume(app: TestApp) {
    let (a, b) = (app.create_user("a").await, app.create_user("b").await);
    app.recharge(a, 100, "oa", None).await;
    app.recharge(b, 100, "ob", None).await;
    let r = app
        .gql(
            &app.service,
            "mutation { hold(input: { userId: 1, amount: 10, sourceType: SCRIPT, sourceId: \"k1\" }) { id } }",
            serde_json::json!({}),
        )
        .await;
    assert!(r["errors"].is_null(), "{r}");
    assert_eq!(a, 1);
    app.consume(b, 5, "SCRIPT", "k2", None).await;
    assert!(rules(&app).await.is_empty());
    // What the race used to leave: the hold's key also under another
    // user's consume row.
    exec(
        &app,
        "UPDATE gw_holds SET source_id = 'k2' WHERE source_id = 'k1'",
    )
    .await;
    assert_eq!(rules(&app).await, vec!["key"]);
}
