//! PostgreSQL's one-call consume (`gw_consume`, migration 7) against the
//! general path: the same requests through both write the same rows.

use sea_orm::{ConnectionTrait, Statement};
use serde_json::{json, Value};

use crate::helpers::{code, data, spawn_with, Engine, TestApp};

const CONSUME: &str = "mutation($u: Int!, $a: Int!, $s: SourceType!, $id: String!, $d: Float, $n: String) { consume(input: { userId: $u, amount: $a, sourceType: $s, sourceId: $id, duration: $d, note: $n }) { id type amount change balanceBefore balanceAfter duration description batchId sourceType sourceId } }";
const HOLD: &str = "mutation($u: Int!, $a: Int!, $s: SourceType!, $id: String!) { hold(input: { userId: $u, amount: $a, sourceType: $s, sourceId: $id }) { id amount status } }";

async fn consume(
    app: &TestApp,
    user: i32,
    amount: i64,
    source: &str,
    id: &str,
    duration: Option<f64>,
    note: Option<&str>,
) -> Value {
    app.gql(
        &app.service,
        CONSUME,
        json!({ "u": user, "a": amount, "s": source, "id": id, "d": duration, "n": note }),
    )
    .await
}

/// Every case the one call writes or declines, in order; each answer as
/// the client sees it (errors by code and message).
/// `soon`: when a batch recharged during the script expires (the same
/// instants for both runs: they are part of the recharges' fingerprints).
async fn script(app: &TestApp, soon: chrono::DateTime<chrono::Utc>) -> Vec<Value> {
    let days = |d: i64| (soon + chrono::Duration::days(d)).to_rfc3339();
    let mut out = Vec::new();
    let u = app.create_user("ann").await;
    let v = app.create_user("ben").await;
    app.recharge(u, 100, "never", None).await;
    app.recharge(u, 50, "20d", Some(&days(20))).await;
    app.recharge(u, 30, "10d", Some(&days(10))).await;
    app.recharge(u, 20, "1d", Some(&days(1))).await;
    app.recharge(v, 40, "ben", None).await;
    // One batch; then one spanning all four in the draw order.
    out.push(consume(app, u, 10, "SCRIPT", "j1", None, None).await);
    out.push(consume(app, u, 120, "TTS", "j2", Some(12.5), Some("第二集")).await);
    // A retry, the key with another amount, the key of another user.
    out.push(consume(app, u, 120, "TTS", "j2", Some(12.5), Some("第二集")).await);
    out.push(consume(app, u, 121, "TTS", "j2", Some(12.5), Some("第二集")).await);
    out.push(consume(app, v, 10, "SCRIPT", "j1", None, None).await);
    // A hold's key; points held are not available.
    out.push(
        app.gql(
            &app.service,
            HOLD,
            json!({ "u": u, "a": 40, "s": "SCRIPT", "id": "h1" }),
        )
        .await,
    );
    out.push(consume(app, u, 5, "SCRIPT", "h1", None, None).await);
    out.push(consume(app, u, 31, "SCRIPT", "short", None, None).await);
    out.push(consume(app, 999_999, 1, "SCRIPT", "nobody", None, None).await);
    // Exactly what is available, then a refund and a draw from what it
    // restored.
    out.push(consume(app, u, 30, "VOICE_CLONE", "all", None, None).await);
    out.push(app.refund("TTS", "j2", "r-j2", Some(70)).await);
    out.push(consume(app, u, 65, "VIDEO", "after-refund", Some(6.0), None).await);
    // A batch due to expire: its expire row comes before the consume.
    app.recharge(v, 7, "soon", Some(&soon.to_rfc3339())).await;
    let wait = soon - chrono::Utc::now() + chrono::Duration::milliseconds(300);
    tokio::time::sleep(wait.to_std().unwrap_or_default()).await;
    out.push(consume(app, v, 3, "SCRIPT", "j3", None, None).await);
    out.push(consume(app, v, 40, "SCRIPT", "j4", None, None).await);
    out.push(app.gql(&app.admin, "query($u: Int!, $v: Int!) { a: user(id: $u) { balance held available } b: user(id: $v) { balance held available } }", json!({ "u": u, "v": v })).await);
    for r in &mut out {
        strip_user_uuids(r);
    }
    out
}

/// Ledger user ids are random uuids per database.
fn strip_user_uuids(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.remove("userId");
            m.values_mut().for_each(strip_user_uuids);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_user_uuids),
        _ => {}
    }
}

/// Every table a consume writes, as JSON rows in id order; users by their
/// int id, times left out (both runs have their own clock).
async fn tables(app: &TestApp) -> Vec<String> {
    let queries = [
        "SELECT u.id AS user, t.id, t.type, t.amount, t.balance_before, t.balance_after, \
           t.source_type, t.source_id, t.batch_id, t.duration, t.description \
         FROM mjk_point_transactions t JOIN gw_users u ON u.uuid = t.user_id ORDER BY t.id",
        "SELECT id, user_id, points, order_id, title, source_type, balance_before, balance_after \
         FROM ts_points_detail ORDER BY id",
        "SELECT ledger_id, user_id, type, source_type, source_id, refund_key, refund_of, \
           request_hash, detail_id FROM gw_entries ORDER BY ledger_id",
        "SELECT id, entry_id, batch_id, amount FROM gw_point_allocations ORDER BY id",
        "SELECT id, user_id, amount, remaining, reserved FROM gw_point_batches ORDER BY id",
        "SELECT id, balance, held, hold_seq FROM gw_users ORDER BY id",
        "SELECT id, user_id, amount, status FROM gw_holds ORDER BY id",
        "SELECT user_id, ledger_id, hold_id, status, balance, held, gateway FROM gw_events ORDER BY id",
    ];
    let mut out = Vec::new();
    for q in queries {
        let rows = app
            .db
            .query_all_raw(Statement::from_string(
                app.db.get_database_backend(),
                format!("SELECT row_to_json(x)::text AS j FROM ({q}) x"),
            ))
            .await
            .unwrap();
        out.extend(rows.iter().map(|r| r.try_get::<String>("", "j").unwrap()));
    }
    out
}

/// Mirror rows whose local time is not their ledger row's instant in the
/// platform's zone.
async fn mistimed_mirrors(app: &TestApp) -> i64 {
    app.db
        .query_one_raw(Statement::from_string(
            app.db.get_database_backend(),
            "SELECT COUNT(*) AS n FROM gw_entries g \
             JOIN mjk_point_transactions t ON t.id = g.ledger_id \
             JOIN ts_points_detail d ON d.id = g.detail_id \
             WHERE d.created_at <> (t.created_at AT TIME ZONE 'Asia/Shanghai')",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get("", "n")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_one_call_and_the_general_path_write_the_same_rows() {
    let (call, general) = tokio::join!(
        spawn_with(Engine::Postgres, |_| {}),
        spawn_with(Engine::Postgres, |s| s.pg_consume_call = false)
    );
    let soon = chrono::Utc::now() + chrono::Duration::seconds(3);
    let (a, b) = tokio::join!(script(&call, soon), script(&general, soon));
    assert_eq!(a, b);
    // The script reached every branch.
    assert_eq!(
        data(&a[1], "consume")["batchId"],
        data(&a[0], "consume")["batchId"]
    );
    assert_eq!(data(&a[2], "consume")["id"], data(&a[1], "consume")["id"]);
    let codes: Vec<Option<&str>> = a.iter().map(code).collect();
    assert_eq!(
        codes,
        [
            None,
            None,
            None,
            Some("IDEMPOTENCY_CONFLICT"),
            Some("IDEMPOTENCY_CONFLICT"),
            None,
            Some("IDEMPOTENCY_CONFLICT"),
            Some("INSUFFICIENT_BALANCE"),
            Some("USER_NOT_FOUND"),
            None,
            None,
            None,
            None,
            Some("INSUFFICIENT_BALANCE"),
            None,
        ]
    );
    assert_eq!(
        data(&a[14], "a"),
        &json!({ "balance": 45, "held": 40, "available": 5 })
    );
    assert_eq!(
        data(&a[14], "b"),
        &json!({ "balance": 37, "held": 0, "available": 37 })
    );
    let (ta, tb) = tokio::join!(tables(&call), tables(&general));
    assert_eq!(ta.len(), tb.len());
    for (ra, rb) in ta.iter().zip(&tb) {
        assert_eq!(ra, rb);
    }
    assert!(ta.iter().any(|r| r.contains("\"type\":\"expire\"")));
    assert_eq!(mistimed_mirrors(&call).await, 0);
    assert_eq!(mistimed_mirrors(&general).await, 0);
    call.assert_verify_clean().await;
    general.assert_verify_clean().await;
}

/// Statements one consume runs on the app's pool.
async fn statements_of_one_consume(app: &TestApp, user: i32, id: &str) -> u64 {
    let before = app.store.statements();
    let r = consume(app, user, 1, "SCRIPT", id, None, None).await;
    assert!(r["errors"].is_null(), "{r}");
    app.store.statements() - before
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consume_is_one_statement_on_postgres() {
    let (call, general) = tokio::join!(
        spawn_with(Engine::Postgres, |_| {}),
        spawn_with(Engine::Postgres, |s| s.pg_consume_call = false)
    );
    let mut users = Vec::new();
    for app in [&call, &general] {
        let u = app.create_user("counted").await;
        app.recharge(u, 10, "o", None).await;
        statements_of_one_consume(app, u, "warm").await;
        users.push(u);
    }
    assert_eq!(statements_of_one_consume(&call, users[0], "one").await, 1);
    let general_count = statements_of_one_consume(&general, users[1], "one").await;
    assert!(general_count >= 2, "{general_count}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_racing_for_one_job_key_get_one_row_and_conflicts() {
    let app = std::sync::Arc::new(spawn_with(Engine::Postgres, |_| {}).await);
    let mut users = Vec::new();
    for i in 0..20 {
        let u = app.create_user(&format!("racer-{i}")).await;
        app.recharge(u, 10, &format!("o-{i}"), None).await;
        users.push(u);
    }
    let tasks: Vec<_> = users
        .iter()
        .map(|&u| {
            let app = app.clone();
            tokio::spawn(async move { consume(&app, u, 3, "SCRIPT", "shared", None, None).await })
        })
        .collect();
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(code(&t.await.unwrap()).map(str::to_owned));
    }
    assert_eq!(codes.iter().filter(|c| c.is_none()).count(), 1, "{codes:?}");
    assert!(codes.iter().flatten().all(|c| c == "IDEMPOTENCY_CONFLICT"));
    assert_eq!(app.count("mjk_point_transactions").await, 21);
    app.assert_verify_clean().await;
}

/// The call's lookups in the large tables (the job's key and the user's
/// last row in the ledger, a hold on the key) stay index scans at a
/// platform's size under the generic plans PL/pgSQL caches: a first apply
/// and replays of the same key scan neither table sequentially.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_call_reads_by_index_at_scale() {
    let app = spawn_with(Engine::Postgres, |_| {}).await;
    let (u, txn) = app.at_scale("indexed").await;
    // The counts still pending in this session include its earlier
    // transactions' (PostgreSQL flushes them at most once a second): only
    // what the calls add is theirs.
    let before = seq_scans(&txn).await;
    let call = "SELECT o_outcome FROM gw_consume($1, 'script', 'indexed-job', 1, NULL, 'x', 'h', \
                now(), 'Asia/Shanghai', 'service:test', NULL)";
    let mut outcomes = Vec::new();
    for _ in 0..7 {
        let row = txn
            .query_one_raw(Statement::from_sql_and_values(
                sea_orm::DbBackend::Postgres,
                call,
                [u.into()],
            ))
            .await
            .unwrap()
            .unwrap();
        outcomes.push(row.try_get::<String>("", "o_outcome").unwrap());
    }
    assert_eq!(outcomes[0], "done");
    assert!(outcomes[1..].iter().all(|o| o == "exists"), "{outcomes:?}");
    let after = seq_scans(&txn).await;
    assert_eq!(after.len(), 2, "{after:?}");
    let added: Vec<(&str, i64)> = after
        .iter()
        .zip(&before)
        .map(|((t, n), (_, m))| (t.as_str(), n - m))
        .collect();
    assert!(
        added.iter().all(|(_, n)| *n == 0),
        "sequential scans by the calls: {added:?}"
    );
    txn.rollback().await.unwrap();
}

/// Sequential scans of the ledger and the holds counted in this session
/// and not yet flushed, by table name.
async fn seq_scans(txn: &sea_orm::DatabaseTransaction) -> Vec<(String, i64)> {
    txn.query_all_raw(Statement::from_string(
        sea_orm::DbBackend::Postgres,
        "SELECT relname::text AS t, seq_scan FROM pg_stat_xact_user_tables \
         WHERE relname IN ('mjk_point_transactions', 'gw_holds') ORDER BY relname",
    ))
    .await
    .unwrap()
    .iter()
    .map(|r| {
        (
            r.try_get("", "t").unwrap(),
            r.try_get("", "seq_scan").unwrap(),
        )
    })
    .collect()
}

/// The tail prunes `gw_events` by bisecting its ids on `created_at` (no
/// index on the time since migration 15): exactly the events older than ten
/// minutes go, whatever the ids' gaps, and none when none is old.
#[tokio::test]
async fn events_older_than_the_retention_are_pruned_and_no_others() {
    let app = spawn_with(Engine::Postgres, |_| {}).await;
    let exec = |sql: String| {
        let db = app.db.clone();
        async move {
            db.execute_unprepared(&sql).await.unwrap();
        }
    };
    let count = |sql: &'static str| {
        let db = app.db.clone();
        async move {
            db.query_one_raw(Statement::from_string(db.get_database_backend(), sql))
                .await
                .unwrap()
                .unwrap()
                .try_get::<i64>("", "n")
                .unwrap()
        }
    };
    let prune = || points_gateway::store::postgres::tail::prune(&app.store);
    exec("DELETE FROM gw_events".into()).await;
    assert_eq!(prune().await.unwrap(), 0, "an empty table");
    // 1,000 old events (one every second up to 11 minutes ago) with gaps in
    // their ids, then 300 recent ones.
    exec(
        "INSERT INTO gw_events (id, gateway, created_at) \
         SELECT 1000 + g * 3, true, now() - interval '11 minutes' - (1000 - g) * interval '1 second' \
         FROM generate_series(1, 1000) g"
            .into(),
    )
    .await;
    exec(
        "INSERT INTO gw_events (id, gateway, created_at) \
         SELECT 5000 + g, true, now() - interval '9 minutes' + g * interval '1 second' \
         FROM generate_series(1, 300) g"
            .into(),
    )
    .await;
    assert_eq!(prune().await.unwrap(), 1000);
    assert_eq!(
        count(
            "SELECT COUNT(*) AS n FROM gw_events WHERE created_at < now() - interval '10 minutes'"
        )
        .await,
        0
    );
    assert_eq!(count("SELECT COUNT(*) AS n FROM gw_events").await, 300);
    assert_eq!(prune().await.unwrap(), 0, "nothing old is left");
}
