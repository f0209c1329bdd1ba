//! The read API: pagination, filters, scoping, masking, no N+1.

use std::collections::HashSet;

use sea_orm::{ConnectionTrait, Statement};
use serde_json::{json, Value};

use crate::helpers::{code, data, TestApp};

both_engines!(
    pages_never_repeat_or_skip_rows_even_with_concurrent_inserts,
    usage_filters_select_by_type_source_and_time,
    users_see_only_their_own_rows,
    fal_tasks_resolve_accounts_and_users_in_a_fixed_number_of_statements,
    fal_keys_are_masked_everywhere,
    total_count_runs_only_when_selected,
    a_usage_page_reads_the_user_in_its_statement_and_refuses_unknown_users,
    user_batches_are_listed_in_the_order_consumes_draw_them,
    admins_find_users_by_id_uuid_or_name,
);

const PAGE: &str = "query($u: Int, $after: String, $first: Int) { usageDetails(userId: $u, first: $first, after: $after) { edges { cursor node { id } } pageInfo { hasNextPage endCursor } } }";

async fn walk(
    app: &TestApp,
    user: i32,
    first: i64,
    mut between: impl FnMut(usize) -> Option<i32>,
) -> Vec<String> {
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    for page_no in 0.. {
        let r = app
            .gql(
                &app.admin,
                PAGE,
                json!({ "u": user, "after": after, "first": first }),
            )
            .await;
        let conn = data(&r, "usageDetails");
        for e in conn["edges"].as_array().unwrap() {
            seen.push(e["node"]["id"].as_str().unwrap().to_owned());
        }
        if let Some(n) = between(page_no) {
            for i in 0..n {
                app.consume(user, 1, "SCRIPT", &format!("late-{page_no}-{i}"), None)
                    .await;
            }
        }
        if !conn["pageInfo"]["hasNextPage"].as_bool().unwrap() {
            break;
        }
        after = conn["pageInfo"]["endCursor"].as_str().map(str::to_owned);
    }
    seen
}

async fn pages_never_repeat_or_skip_rows_even_with_concurrent_inserts(app: TestApp) {
    let u = app.create_user("pager").await;
    app.recharge(u, 10_000, "o", None).await;
    for i in 0..46 {
        app.consume(u, 1, "POLISH", &format!("p{i}"), None).await;
    }
    let all: Vec<String> = walk(&app, u, 100, |_| None).await;
    assert_eq!(all.len(), 47);
    let paged = walk(&app, u, 7, |_| None).await;
    assert_eq!(
        paged, all,
        "pages of 7 give the same rows in the same order"
    );

    // New rows committed while paging appear before the cursor, never inside
    // the remaining pages: the original 47 are each seen exactly once.
    let during = walk(&app, u, 5, |p| (p < 4).then_some(3)).await;
    let unique: HashSet<_> = during.iter().collect();
    assert_eq!(unique.len(), during.len(), "no row twice");
    assert_eq!(
        during, all,
        "the rows present at the start, in order, none missing"
    );

    // Garbage cursors and page sizes are refused.
    let r = app
        .gql(&app.admin, PAGE, json!({ "u": u, "after": "garbage" }))
        .await;
    assert_eq!(code(&r), Some("INVALID_INPUT"));
    for first in [0, -1, 101] {
        let r = app
            .gql(&app.admin, PAGE, json!({ "u": u, "first": first }))
            .await;
        assert!(matches!(code(&r), Some("LIMIT_EXCEEDED")), "{first}: {r}");
    }
}

async fn usage_filters_select_by_type_source_and_time(app: TestApp) {
    let u = app.create_user("filters").await;
    app.recharge(u, 1_000, "o", None).await;
    app.consume(u, 10, "TTS", "t1", Some(5.0)).await;
    app.consume(u, 10, "VIDEO", "v1", Some(2.0)).await;
    let mid = chrono::Utc::now();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    app.consume(u, 10, "TTS", "t2", Some(5.0)).await;
    app.refund("TTS", "t1", "r1", None).await;

    let q = "query($u: Int, $f: UsageFilter) { usageDetails(userId: $u, filter: $f) { totalCount nodes { type sourceType } } }";
    let run = |f: Value| {
        let app = &app;
        async move { app.gql(&app.admin, q, json!({ "u": u, "f": f })).await }
    };
    let r = run(json!({ "types": ["CONSUME"] })).await;
    assert_eq!(data(&r, "usageDetails")["totalCount"], 3);
    let r = run(json!({ "sourceTypes": ["TTS"] })).await;
    assert_eq!(
        data(&r, "usageDetails")["totalCount"],
        3,
        "two consumes and the refund"
    );
    let r = run(json!({ "types": ["CONSUME"], "sourceTypes": ["TTS"] })).await;
    assert_eq!(data(&r, "usageDetails")["totalCount"], 2);
    let r = run(json!({ "to": mid.to_rfc3339() })).await;
    assert_eq!(data(&r, "usageDetails")["totalCount"], 3);
    let r = run(json!({ "from": mid.to_rfc3339() })).await;
    assert_eq!(data(&r, "usageDetails")["totalCount"], 2);
    let r = run(json!({ "from": mid.to_rfc3339(), "to": "2000-01-01T00:00:00Z" })).await;
    assert_eq!(code(&r), Some("INVALID_INPUT"));
}

async fn users_see_only_their_own_rows(app: TestApp) {
    let a = app.create_user("a").await;
    let b = app.create_user("b").await;
    app.recharge(a, 100, "oa", None).await;
    app.recharge(b, 200, "ob", None).await;
    let ta = app.user_token(a);

    let own = app
        .gql(
            &ta,
            "{ me { id balance } usageDetails { nodes { balanceAfter } } }",
            json!({}),
        )
        .await;
    assert_eq!(data(&own, "me"), &json!({ "id": a, "balance": 100 }));
    assert_eq!(
        data(&own, "usageDetails")["nodes"],
        json!([{ "balanceAfter": 100 }])
    );

    for q in [
        "query($b: Int!) { usageDetails(userId: $b) { nodes { id } } }",
        "query($b: Int!) { user(id: $b) { balance } }",
        "query($b: Int!) { pointsStatement(userId: $b) { nodes { id } } }",
        "query($b: Int!) { financialTransactions(userId: $b) { nodes { id } } }",
        "query($b: Int!) { falTasks(filter: { userId: $b }) { nodes { id } } }",
    ] {
        let r = app.gql(&ta, q, json!({ "b": b })).await;
        assert_eq!(code(&r), Some("FORBIDDEN"), "{q}: {r}");
        assert!(!r.to_string().contains("200"), "no figure of b leaks: {r}");
    }
    let r = app.gql(&ta, "{ falAccounts { id } }", json!({})).await;
    assert_eq!(code(&r), Some("FORBIDDEN"));
    // The older statement and money rows for the owner.
    let r = app.gql(&ta, "{ pointsStatement { nodes { points title sourceType balanceAfter } } financialTransactions { nodes { money transactionType } } }", json!({})).await;
    assert_eq!(
        data(&r, "pointsStatement")["nodes"],
        json!([{ "points": 100, "title": "【积分充值】", "sourceType": "recharge", "balanceAfter": 100 }])
    );
    assert_eq!(
        data(&r, "financialTransactions")["nodes"],
        json!([{ "money": 100, "transactionType": 0 }])
    );
}

async fn seed_tasks(app: &TestApp, accounts: usize, users: usize, tasks: usize) -> Vec<String> {
    let backend = app.db.get_database_backend();
    let mut keys = Vec::new();
    for i in 0..accounts {
        let key = format!("fal-secret-key-{i:04}-{}", uuid::Uuid::new_v4().simple());
        app.db
            .execute_raw(Statement::from_sql_and_values(
                backend,
                "INSERT INTO ts_fal_account (name, api_key, balance, use_cnt, error_cnt, status) VALUES ($1, $2, 10.0, 0, 0, 1)",
                [format!("acct-{i}").into(), key.clone().into()],
            ))
            .await
            .unwrap();
        keys.push(key);
    }
    let mut ids = Vec::new();
    for i in 0..users {
        ids.push(app.create_user(&format!("t{i}")).await);
    }
    let now = chrono::Utc::now();
    for i in 0..tasks {
        app.db
            .execute_raw(Statement::from_sql_and_values(
                backend,
                "INSERT INTO ts_fal_tasks (user_id, task_id, app_name, api_key, task_type, status, money, cost_money, is_refund, created_at) \
                 VALUES ($1, $2, 'fal-ai/flux/dev', $3, 'image', 'COMPLETED', 10, 0.025, 0, $4)",
                [
                    ids[i % users].into(),
                    format!("task-{i}").into(),
                    keys[i % accounts].clone().into(),
                    crate::helpers::platform_time(now - chrono::Duration::seconds(i as i64)).into(),
                ],
            ))
            .await
            .unwrap();
    }
    keys
}

async fn fal_tasks_resolve_accounts_and_users_in_a_fixed_number_of_statements(app: TestApp) {
    seed_tasks(&app, 10, 30, 120).await;
    let q =
        "query($n: Int) { falTasks(first: $n) { nodes { taskId account { name } user { id } } } }";
    let mut costs = Vec::new();
    for n in [5, 50, 100] {
        let before = app.store.statements();
        let r = app.gql(&app.admin, q, json!({ "n": n })).await;
        let nodes = data(&r, "falTasks")["nodes"].as_array().unwrap().clone();
        assert_eq!(nodes.len(), n as usize);
        assert!(nodes
            .iter()
            .all(|t| t["account"]["name"].is_string() && t["user"]["id"].is_number()));
        costs.push(app.store.statements() - before);
    }
    // One page query, one account batch, one user batch, whatever the size.
    assert_eq!(costs, vec![3, 3, 3], "statements per request: {costs:?}");
}

async fn fal_keys_are_masked_everywhere(app: TestApp) {
    let keys = seed_tasks(&app, 3, 2, 6).await;
    let r = app
        .gql(
            &app.admin,
            "{ falAccounts { name maskedKey } falTasks { nodes { account { maskedKey } } } }",
            json!({}),
        )
        .await;
    let text = r.to_string();
    for k in &keys {
        assert!(!text.contains(k.as_str()), "full key leaked");
        assert!(text.contains(&format!("…{}", &k[k.len() - 4..])));
    }
    // Users may list their own tasks but not the accounts behind them.
    let u = app.user_token(1);
    let r = app
        .gql(
            &u,
            "{ falTasks { nodes { taskId account { name } } } }",
            json!({}),
        )
        .await;
    assert_eq!(code(&r), Some("FORBIDDEN"));
}

async fn total_count_runs_only_when_selected(app: TestApp) {
    let u = app.create_user("counter").await;
    app.recharge(u, 10, "o", None).await;
    let q_without = "query($u: Int) { usageDetails(userId: $u) { nodes { id } } }";
    let q_with = "query($u: Int) { usageDetails(userId: $u) { totalCount nodes { id } } }";
    let before = app.store.statements();
    app.gql(&app.admin, q_without, json!({ "u": u })).await;
    let without = app.store.statements() - before;
    let before = app.store.statements();
    let r = app.gql(&app.admin, q_with, json!({ "u": u })).await;
    let with = app.store.statements() - before;
    assert_eq!(data(&r, "usageDetails")["totalCount"], 1);
    assert_eq!(with, without + 1);
}

async fn a_usage_page_reads_the_user_in_its_statement_and_refuses_unknown_users(app: TestApp) {
    let u = app.create_user("one-statement").await;
    app.recharge(u, 10, "o-one", None).await;
    let q = "query($u: Int) { usageDetails(userId: $u) { nodes { id change } } }";
    let before = app.store.statements();
    let r = app.gql(&app.admin, q, json!({ "u": u })).await;
    // PostgreSQL looks the user up inside the page statement; SQLite (in
    // process, nothing to save) first.
    let expected = match app.db.get_database_backend() {
        sea_orm::DbBackend::Postgres => 1,
        _ => 2,
    };
    assert_eq!(app.store.statements() - before, expected, "{r}");
    assert_eq!(data(&r, "usageDetails")["nodes"][0]["change"], 10);
    // No rows: an empty page for a user who exists, an error for one who
    // does not (a second statement, only then).
    let empty = app.create_user("no-rows").await;
    let r = app.gql(&app.admin, q, json!({ "u": empty })).await;
    assert_eq!(data(&r, "usageDetails")["nodes"], json!([]), "{r}");
    let r = app.gql(&app.admin, q, json!({ "u": 987_654 })).await;
    assert_eq!(code(&r), Some("USER_NOT_FOUND"), "{r}");
}

async fn user_batches_are_listed_in_the_order_consumes_draw_them(app: TestApp) {
    let u = app.create_user("draw-order").await;
    let soon = (chrono::Utc::now() + chrono::Duration::days(2)).to_rfc3339();
    let later = (chrono::Utc::now() + chrono::Duration::days(30)).to_rfc3339();
    // Created in an order unlike the draw order: never-expiring first.
    app.recharge(u, 10, "never-1", None).await;
    app.recharge(u, 10, "later", Some(&later)).await;
    app.recharge(u, 10, "never-2", None).await;
    app.recharge(u, 10, "soon", Some(&soon)).await;
    let q = "query($u: Int!) { user(id: $u) { batches { id remaining expiresAt } } }";
    let listed = |r: &Value| -> Vec<(String, i64)> {
        data(r, "user")["batches"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                (
                    b["id"].as_str().unwrap().to_owned(),
                    b["remaining"].as_i64().unwrap(),
                )
            })
            .collect()
    };
    let before = listed(&app.gql(&app.admin, q, json!({ "u": u })).await);
    let mut ids = Vec::new();
    for order in ["soon", "later", "never-1", "never-2"] {
        let r = app
            .db
            .query_one_raw(Statement::from_sql_and_values(
                app.db.get_database_backend(),
                "SELECT id FROM gw_point_batches WHERE order_id = $1",
                [order.into()],
            ))
            .await
            .unwrap()
            .unwrap();
        ids.push(r.try_get::<i64>("", "id").unwrap().to_string());
    }
    let expected = ids;
    assert_eq!(
        before.iter().map(|b| b.0.clone()).collect::<Vec<_>>(),
        expected,
        "soonest expiry first, never-expiring last, then oldest"
    );
    // A consume of 25 empties the first two listed and takes 5 of the third.
    app.consume(u, 25, "SCRIPT", "draw-25", None).await;
    let after = listed(&app.gql(&app.admin, q, json!({ "u": u })).await);
    assert_eq!(
        after,
        vec![(expected[2].clone(), 5), (expected[3].clone(), 10)],
        "the consume drew in the listed order"
    );
    app.assert_verify_clean().await;
}

async fn admins_find_users_by_id_uuid_or_name(app: TestApp) {
    let alice = app.create_user("Alice Zhang").await;
    let bob = app.create_user("bob_100%").await;
    let q = "query($s: String, $a: String) { users(search: $s, first: 1, after: $a) { totalCount nodes { id uuid name } pageInfo { hasNextPage endCursor } } }";
    let find = |s: Value| {
        let app = &app;
        async move { app.gql(&app.admin, q, json!({ "s": s })).await }
    };
    let r = find(json!("alice")).await;
    assert_eq!(data(&r, "users")["nodes"][0]["id"], alice, "{r}");
    assert_eq!(data(&r, "users")["totalCount"], 1);
    let uuid = data(&r, "users")["nodes"][0]["uuid"].clone();
    let r = find(uuid).await;
    assert_eq!(data(&r, "users")["nodes"][0]["id"], alice, "{r}");
    let r = find(json!(bob.to_string())).await;
    assert_eq!(data(&r, "users")["nodes"][0]["id"], bob, "{r}");
    // LIKE's wildcards are matched literally.
    let r = find(json!("100%")).await;
    assert_eq!(data(&r, "users")["totalCount"], 1, "{r}");
    let r = find(json!("%")).await;
    assert_eq!(data(&r, "users")["totalCount"], 1, "{r}");
    // Everyone, newest first, paged.
    let r = find(Value::Null).await;
    let page = data(&r, "users");
    assert_eq!(page["totalCount"], 2);
    assert_eq!(page["nodes"][0]["id"], bob);
    let r = app
        .gql(
            &app.admin,
            q,
            json!({ "s": null, "a": page["pageInfo"]["endCursor"] }),
        )
        .await;
    assert_eq!(data(&r, "users")["nodes"][0]["id"], alice, "{r}");
    let r = app.gql(&app.service, q, json!({ "s": "alice" })).await;
    assert_eq!(code(&r), Some("FORBIDDEN"), "{r}");
}
