//! The legacy systems keep writing after the cutover (PostgreSQL): their
//! own balance functions (`tests/legacy/legacy_ops.py`: the mjk
//! `consume()`/`refund()`/`recharge()`, the ts `deduct_user_money_by_id()`/
//! `add_user_money()`, an admin tool's edit of `ts_users`) are absorbed
//! into the gateway's books exactly once, the old views stay true, and
//! jobs that straddle the switch are charged once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::adopt::{legacy_postgres, ok, one, py};
use crate::helpers::{code, data, spawn_on, TestApp};
use crate::process::cli;
use crate::ws_client::{Got, WsClient, BALANCE_CHANGED};

/// Runs `ops` through the legacy ORMs, one transaction each, in order.
fn legacy(pg: &str, ops: &[Value]) -> Vec<Value> {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), serde_json::to_vec(ops).unwrap()).unwrap();
    let out = ok(
        py(&["legacy_ops.py", pg, file.path().to_str().unwrap()])
            .output()
            .unwrap(),
        "legacy_ops.py",
    );
    let results: Vec<Value> = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(results.len(), ops.len());
    results
}

fn succeeded(r: &Value) -> bool {
    r["ok"] == json!(true)
}

fn refused(r: &Value) -> String {
    assert_eq!(
        r["ok"],
        json!(false),
        "expected the legacy write to fail: {r}"
    );
    r["error"].as_str().unwrap().to_owned()
}

/// Every row `sql` selects on the PostgreSQL database at `url`.
async fn pg_rows(url: &str, sql: &str) -> Vec<sea_orm::QueryResult> {
    use sea_orm::{ConnectionTrait, Statement};
    let db = sea_orm::Database::connect(url).await.unwrap();
    db.query_all_raw(Statement::from_string(
        sea_orm::DbBackend::Postgres,
        sql.to_owned(),
    ))
    .await
    .unwrap()
}

/// The cutover's last history ids: `(ledger, statement)`.
async fn cutover(url: &str) -> (i64, i64) {
    (
        one(url, "SELECT ledger_cutover_id FROM gw_adoption").await,
        one::<i32>(url, "SELECT detail_cutover_id FROM gw_adoption")
            .await
            .into(),
    )
}

/// Every chain after the cutover, checked: each user's ledger rows (the
/// UsageDetail page and the mjk code's view) and statement rows (the ts
/// pages) chain row to row and end at the gateway's balance; every
/// gateway user's `ts_users` columns, where they have a row, equal their
/// paid and gift points. Returns the number of users checked.
async fn assert_views_true(app: &TestApp, url: &str) -> usize {
    let (ledger_from, detail_from) = cutover(url).await;
    let users = pg_rows(
        url,
        "SELECT u.id, u.uuid, u.balance, \
           CAST(COALESCE((SELECT SUM(b.remaining + b.reserved) FROM gw_point_batches b \
             WHERE b.user_id = u.id AND b.funds = 'paid'), 0) AS BIGINT) AS paid, \
           CAST(COALESCE((SELECT SUM(b.remaining + b.reserved) FROM gw_point_batches b \
             WHERE b.user_id = u.id AND b.funds = 'gift'), 0) AS BIGINT) AS gift, \
           CAST(t.money AS BIGINT) AS ts_money, CAST(t.gift_money AS BIGINT) AS ts_gift \
         FROM gw_users u LEFT JOIN ts_users t ON t.id = u.id ORDER BY u.id",
    )
    .await;
    for u in &users {
        let id: i32 = u.try_get("", "id").unwrap();
        let uuid: uuid::Uuid = u.try_get("", "uuid").unwrap();
        let balance: i64 = u.try_get("", "balance").unwrap();
        let (paid, gift): (i64, i64) = (
            u.try_get("", "paid").unwrap(),
            u.try_get("", "gift").unwrap(),
        );
        assert_eq!(paid + gift, balance, "user {id}: batches against balance");
        if let Ok(Some(m)) = u.try_get::<Option<i64>>("", "ts_money") {
            let g: Option<i64> = u.try_get("", "ts_gift").unwrap();
            assert_eq!((m, g.unwrap_or(0)), (paid, gift), "user {id}: ts_users");
        }
        for (what, sql) in [
            (
                "ledger",
                format!(
                    "SELECT CAST(CASE WHEN type IN ('consume', 'expire') THEN -amount ELSE amount END AS BIGINT) AS change, \
                       CAST(balance_before AS BIGINT) AS b, CAST(balance_after AS BIGINT) AS a \
                     FROM mjk_point_transactions WHERE user_id = '{uuid}' AND id > {ledger_from} ORDER BY id"
                ),
            ),
            (
                "statement",
                format!(
                    "SELECT CAST(points AS BIGINT) AS change, CAST(balance_before AS BIGINT) AS b, \
                       CAST(balance_after AS BIGINT) AS a \
                     FROM ts_points_detail WHERE user_id = {id} AND id > {detail_from} ORDER BY id"
                ),
            ),
        ] {
            let chain = pg_rows(url, &sql).await;
            let mut last: Option<i64> = None;
            for r in &chain {
                let (c, b, a): (i64, i64, i64) = (
                    r.try_get("", "change").unwrap(),
                    r.try_get("", "b").unwrap(),
                    r.try_get("", "a").unwrap(),
                );
                if let Some(l) = last {
                    assert_eq!(b, l, "user {id}: the {what} chain breaks");
                }
                assert_eq!(a, b + c, "user {id}: a {what} row does not add up");
                last = Some(a);
            }
            if let Some(l) = last {
                assert_eq!(l, balance, "user {id}: the {what} ends off the balance");
            }
        }
    }
    app.assert_verify_clean().await;
    users.len()
}

/// `adopt --apply --opening-balance sum`, ts users 1, 2, … joined to
/// `mjk` in order; the directory holding the map, and what it printed.
fn adopt_sum(url: &str, mjk: &[uuid::Uuid]) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let map = dir.path().join("users.csv");
    let mut csv = "ts_user_id,mjk_user_uuid\n".to_owned();
    for (i, u) in mjk.iter().enumerate() {
        csv.push_str(&format!("{},{u}\n", i + 1));
    }
    std::fs::write(&map, csv).unwrap();
    let (success, out) = cli(
        url,
        &[
            "adopt",
            "--apply",
            "--opening-balance",
            "sum",
            "--user-map",
            map.to_str().unwrap(),
        ],
    );
    assert!(success && out.contains("Adopted:"), "{out}");
    assert!(
        out.contains("Coexistence: the legacy applications may keep writing"),
        "{out}"
    );
    (dir, out)
}

/// The mjk ledger's users, in order of their first row.
async fn mjk_users(url: &str) -> Vec<uuid::Uuid> {
    pg_rows(
        url,
        "SELECT user_id FROM mjk_point_transactions GROUP BY user_id ORDER BY MIN(id)",
    )
    .await
    .iter()
    .map(|r| r.try_get("", "user_id").unwrap())
    .collect()
}

/// Adopts a database the legacy ORMs built, with ts users 1..=n joined to
/// mjk users; `(url, peewee url, the joined mjk uuids, app)`.
async fn adopted(joined: usize) -> (String, String, Vec<uuid::Uuid>, TestApp) {
    let (url, pg, _) = legacy_postgres().await;
    let uuids = mjk_users(&url).await;
    assert!(uuids.len() > joined + 1);
    let (dir, _) = adopt_sum(&url, &uuids[..joined]);
    let app = spawn_on(url.clone(), dir).await;
    (url, pg, uuids, app)
}

async fn user_figures(app: &TestApp, user: i32) -> (i64, i64, i64, i64) {
    let r = app
        .gql(
            &app.admin,
            "query($u: Int!) { user(id: $u) { balance paid gift held } }",
            json!({ "u": user }),
        )
        .await;
    let u = data(&r, "user");
    (
        u["balance"].as_i64().unwrap(),
        u["paid"].as_i64().unwrap(),
        u["gift"].as_i64().unwrap(),
        u["held"].as_i64().unwrap(),
    )
}

async fn gw_id(url: &str, uuid: uuid::Uuid) -> i32 {
    one(
        url,
        &format!("SELECT id FROM gw_users WHERE uuid = '{uuid}'"),
    )
    .await
}

/// Reads partner events until `quiet` passes without one: entry ids seen.
async fn drain(ws: &mut WsClient, quiet: Duration) -> Vec<i64> {
    let mut ids = Vec::new();
    while let Some(got) = ws.recv_within(quiet).await {
        if let Got::Msg(m) = got {
            let ev = &m["payload"]["data"]["balanceChanged"];
            if let Some(id) = ev["entry"]["id"].as_str() {
                ids.push(id.parse().unwrap());
            }
        }
    }
    ids
}

#[tokio::test]
async fn legacy_writes_after_the_cutover_are_absorbed_exactly_once() {
    let (url, pg, uuids, app) = adopted(1).await;
    let joined = uuids[0].to_string();
    let mjk_only = uuids[1];
    let mjk_id = gw_id(&url, mjk_only).await;
    let mut ws = WsClient::ready(&app, &app.partner_token()).await;
    ws.subscribe("all", BALANCE_CHANGED, json!({})).await;
    app.wait_subscriptions(1).await;
    let (start, _, _, _) = user_figures(&app, 1).await;
    let mjk_start = app.balance(mjk_id).await;

    // The mjk code on the joined user, the ts code on the same user, an
    // admin edit, and the mjk code on an mjk-only user.
    let fal_task = "ts-fal-after-1";
    ok(
        py(&["ts_platform.py", &pg, "task", fal_task, "key", "1"])
            .output()
            .unwrap(),
        "ts task",
    );
    let r = legacy(
        &pg,
        &[
            json!({"op": "mjk_consume", "user": joined, "amount": 7, "source_type": "script", "source_id": "leg-1"}),
            json!({"op": "ts_deduct", "user": 1, "money": 20, "title": "AI生成图片", "order_id": fal_task}),
            json!({"op": "ts_add", "user": 1, "points": 30, "title": "活动赠送", "order_id": "ts-gift-1", "source_type": "gift"}),
            json!({"op": "ts_add", "user": 1, "points": 500, "title": "微信支付充值5元", "order_id": "ts-pay-1", "source_type": "recharge", "cents": 500}),
            json!({"op": "ts_edit", "user": 1, "money": 100, "gift": 0}),
            json!({"op": "mjk_recharge", "user": mjk_only.to_string(), "amount": 50, "order_id": "mjk-pay-1"}),
            json!({"op": "mjk_consume", "user": mjk_only.to_string(), "amount": 20, "source_type": "tts", "source_id": "leg-2", "duration": 3.5}),
        ],
    );
    assert!(r.iter().all(succeeded), "{r:?}");
    assert_eq!(r[1]["value"], json!(true));
    let leg1: i64 = r[0]["value"].as_i64().unwrap();
    let (balance, _, gift, _) = user_figures(&app, 1).await;
    assert_eq!(balance, start - 7 - 20 + 30 + 500 + 100);
    assert!(gift >= 30, "the ts gift stays gift: {gift}");
    assert_eq!(app.balance(mjk_id).await, mjk_start + 50 - 20);
    // What the old code reads: its own functions, on both systems.
    let views = legacy(
        &pg,
        &[
            json!({"op": "ts_money", "user": 1}),
            json!({"op": "mjk_balance", "user": joined}),
            json!({"op": "mjk_balance", "user": mjk_only.to_string()}),
        ],
    );
    assert_eq!(views[0]["value"]["total"], json!(balance));
    assert_eq!(views[1]["value"], json!(balance));
    assert_eq!(views[2]["value"], json!(mjk_start + 30));
    // Every movement announced once, the absorbed ones included.
    let seen = drain(&mut ws, Duration::from_millis(800)).await;
    let (ledger_from, _) = cutover(&url).await;
    let written: Vec<i64> = pg_rows(
        &url,
        &format!(
            "SELECT id FROM mjk_point_transactions WHERE id > {ledger_from} AND type <> 'opening' ORDER BY id"
        ),
    )
    .await
    .iter()
        .map(|r| r.try_get("", "id").unwrap())
        .collect();
    assert_eq!(written.len(), 7, "one ledger row per legacy movement");
    assert_eq!(seen, written, "announced once each, in commit order");
    let origins: BTreeMap<String, i64> = pg_rows(
        &url,
        "SELECT origin, COUNT(*) AS n FROM gw_entries WHERE origin IS NOT NULL GROUP BY origin",
    )
    .await
    .iter()
    .map(|r| {
        (
            r.try_get("", "origin").unwrap(),
            r.try_get("", "n").unwrap(),
        )
    })
    .collect();
    assert_eq!(
        origins,
        BTreeMap::from([("mjk".into(), 3), ("ts".into(), 4)])
    );

    // Straddling jobs: the old code charged them; the gateway's retry
    // replays, another payload conflicts, the refund is capped at what
    // the old code took, on both sides.
    let r = app.consume(1, 7, "SCRIPT", "leg-1", None).await;
    assert_eq!(data(&r, "consume")["id"], json!(leg1.to_string()), "{r}");
    let r = app.consume(1, 8, "SCRIPT", "leg-1", None).await;
    assert_eq!(code(&r), Some("IDEMPOTENCY_CONFLICT"), "{r}");
    let r = app.refund("SCRIPT", "leg-1", "leg-1-r", Some(8)).await;
    assert_eq!(code(&r), Some("REFUND_EXCEEDS_CONSUMED"), "{r}");
    let r = app.refund("SCRIPT", "leg-1", "leg-1-r", Some(7)).await;
    assert!(r["errors"].is_null(), "{r}");
    let r = app.refund("FAL", fal_task, "ts-fal-r", None).await;
    assert_eq!(data(&r, "refund")["amount"], json!(20), "{r}");
    let flagged: i32 = one(
        &url,
        &format!("SELECT is_refund FROM ts_fal_tasks WHERE task_id = '{fal_task}'"),
    )
    .await;
    assert_eq!(flagged, 1);
    // The old code charging or refunding past the rules fails in its own
    // transaction, and changes nothing.
    let before = user_figures(&app, 1).await;
    let r = legacy(
        &pg,
        &[
            json!({"op": "mjk_consume", "user": joined, "amount": 7, "source_type": "script", "source_id": "leg-1"}),
            json!({"op": "mjk_refund", "user": mjk_only.to_string(), "amount": 21, "source_type": "tts", "source_id": "leg-2"}),
            json!({"op": "mjk_refund", "user": mjk_only.to_string(), "amount": 20, "source_type": "tts", "source_id": "leg-2"}),
            json!({"op": "mjk_refund", "user": mjk_only.to_string(), "amount": 1, "source_type": "tts", "source_id": "leg-2"}),
            json!({"op": "mjk_refund", "user": joined, "amount": 5, "source_type": "video", "source_id": "never-charged"}),
        ],
    );
    assert!(refused(&r[0]).contains("charged already"), "{r:?}");
    assert!(refused(&r[1]).contains("left to refund"), "{r:?}");
    assert!(succeeded(&r[2]), "{r:?}");
    assert!(refused(&r[3]).contains("left to refund"), "{r:?}");
    assert!(refused(&r[4]).contains("never charged"), "{r:?}");
    assert_eq!(user_figures(&app, 1).await, before);
    assert_eq!(app.balance(mjk_id).await, mjk_start + 50);
    let r = app.refund("TTS", "leg-2", "leg-2-r", Some(1)).await;
    assert_eq!(code(&r), Some("REFUND_EXCEEDS_CONSUMED"), "{r}");

    // Held points are not the old code's to spend: the mjk charge fails
    // at once, the ts charge when its transaction commits.
    let (balance, _, _, _) = user_figures(&app, 1).await;
    let hold = format!(
        "mutation {{ hold(input: {{userId: 1, amount: {}, sourceType: VIDEO, sourceId: \"hold-1\", duration: 5}}) {{ id }} }}",
        balance - 3
    );
    let r = app.gql(&app.service, &hold, json!({})).await;
    assert!(r["errors"].is_null(), "{r}");
    let before = user_figures(&app, 1).await;
    let r = legacy(
        &pg,
        &[
            json!({"op": "mjk_consume", "user": joined, "amount": 10, "source_type": "script", "source_id": "leg-3"}),
            json!({"op": "ts_deduct", "user": 1, "money": 10, "title": "over", "order_id": "leg-ts-over"}),
            json!({"op": "ts_edit", "user": 1, "money": -10}),
            json!({"op": "mjk_consume", "user": joined, "amount": 3, "source_type": "script", "source_id": "leg-4"}),
        ],
    );
    assert!(refused(&r[0]).contains("free to spend"), "{r:?}");
    assert!(refused(&r[1]).contains("free to spend"), "{r:?}");
    assert!(refused(&r[2]).contains("free to spend"), "{r:?}");
    assert!(succeeded(&r[3]), "{r:?}");
    let after = user_figures(&app, 1).await;
    assert_eq!((after.0, after.3), (before.0 - 3, before.3));
    let r = app
        .gql(
            &app.service,
            "mutation { releaseHold(input: {sourceType: VIDEO, sourceId: \"hold-1\"}) { status } }",
            json!({}),
        )
        .await;
    assert!(r["errors"].is_null(), "{r}");

    assert_views_true(&app, &url).await;
    // The legacy ORMs read everything back.
    ok(
        py(&["ts_platform.py", &pg, "read"]).output().unwrap(),
        "ts read",
    );
    let (base, name) = pg.rsplit_once('/').unwrap();
    ok(
        py(&["read_back.py", base, name]).output().unwrap(),
        "read back",
    );
}

/// One service after another moves to the gateway over a week, two never
/// do; each day the moved services call the gateway and the others the old
/// code, from several processes and tasks at once on the same users. An
/// independently kept balance per user (from each call's own answer)
/// equals the gateway's, `ts_users`, the statement's and the ledger's.
#[tokio::test]
async fn a_migration_week_with_services_moving_one_by_one_stays_exact() {
    let (url, pg, uuids, app) = adopted(3).await;
    let app = Arc::new(app);
    // Users: ts users 1..=3 joined, ts users 4 and 5, mjk-only users.
    let mut mjk_users: Vec<(i32, uuid::Uuid)> = vec![];
    for (i, u) in uuids.iter().enumerate().take(3) {
        mjk_users.push((i as i32 + 1, *u));
    }
    for u in uuids.iter().skip(3).take(2) {
        mjk_users.push((gw_id(&url, *u).await, *u));
    }
    let ts_users: Vec<i32> = vec![1, 2, 3, 4, 5];
    let mut expected: BTreeMap<i32, i64> = BTreeMap::new();
    for u in ts_users.iter().chain(mjk_users.iter().map(|m| &m.0)) {
        expected.insert(*u, app.balance(*u).await);
    }
    let mut ws = WsClient::ready(&app, &app.partner_token()).await;
    ws.subscribe("all", BALANCE_CHANGED, json!({})).await;
    app.wait_subscriptions(1).await;

    // The services, in the order they move; the last two never move.
    const SERVICES: [&str; 7] = [
        "ts_fal",
        "ts_pay",
        "mjk_pay",
        "mjk_script",
        "mjk_tts",
        "ts_forgotten",
        "ts_admin",
    ];
    let mut n = 0usize;
    let mut legacy_rows = 0usize;
    let mut gateway_rows = 0usize;
    for day in 0..6usize {
        let moved = |s: &str| SERVICES.iter().position(|x| *x == s).unwrap() < day.min(5);
        // Three legacy processes and four gateway tasks, each with its own
        // calls for the day; all at once.
        let mut legacy_batches: Vec<Vec<(i32, Value)>> = vec![vec![], vec![], vec![]];
        let mut gateway_calls: Vec<Vec<(i32, &'static str, i64, String)>> = vec![vec![]; 4];
        for k in 0..84usize {
            n += 1;
            let service = SERVICES[k % SERVICES.len()];
            let ts = ts_users[(k / 7) % ts_users.len()];
            let (mjk_id, mjk_uuid) = mjk_users[(k / 7) % mjk_users.len()];
            let amount = 1 + (k % 13) as i64;
            let key = format!("d{day}-{n}");
            let lane = k % 3;
            match (service, moved(service)) {
                ("ts_fal", false) | ("ts_forgotten", _) => legacy_batches[lane].push((
                    ts,
                    json!({"op": "ts_deduct", "user": ts, "money": amount, "title": "AI生成", "order_id": key}),
                )),
                ("ts_pay", false) => legacy_batches[lane].push((
                    ts,
                    json!({"op": "ts_add", "user": ts, "points": amount * 10, "title": "充值", "order_id": key, "source_type": "recharge", "cents": amount * 10}),
                )),
                ("ts_admin", _) => legacy_batches[lane].push((
                    ts,
                    json!({"op": "ts_edit", "user": ts, "money": 5, "gift": 2}),
                )),
                ("mjk_pay", false) => legacy_batches[lane].push((
                    mjk_id,
                    json!({"op": "mjk_recharge", "user": mjk_uuid.to_string(), "amount": amount * 10, "order_id": key}),
                )),
                ("mjk_script", false) => legacy_batches[lane].push((
                    mjk_id,
                    json!({"op": "mjk_consume", "user": mjk_uuid.to_string(), "amount": amount, "source_type": "script", "source_id": key}),
                )),
                ("mjk_tts", false) => legacy_batches[lane].push((
                    mjk_id,
                    json!({"op": "mjk_consume", "user": mjk_uuid.to_string(), "amount": amount, "source_type": "tts", "source_id": key, "duration": 2.0}),
                )),
                ("ts_fal", true) => gateway_calls[k % 4].push((ts, "FAL", amount, key)),
                ("ts_pay", true) => gateway_calls[k % 4].push((ts, "PAY", amount * 10, key)),
                ("mjk_pay", true) => gateway_calls[k % 4].push((mjk_id, "PAY", amount * 10, key)),
                ("mjk_script", true) => gateway_calls[k % 4].push((mjk_id, "SCRIPT", amount, key)),
                ("mjk_tts", true) => gateway_calls[k % 4].push((mjk_id, "TTS", amount, key)),
                other => unreachable!("{other:?}"),
            }
        }
        let mut tasks = Vec::new();
        for batch in legacy_batches {
            let pg = pg.clone();
            tasks.push(tokio::task::spawn_blocking(move || {
                let ops: Vec<Value> = batch.iter().map(|b| b.1.clone()).collect();
                let results = legacy(&pg, &ops);
                batch
                    .into_iter()
                    .zip(results)
                    .map(|((user, op), r)| {
                        let delta = match (op["op"].as_str().unwrap(), succeeded(&r)) {
                            (_, false) => 0,
                            ("ts_deduct", true) if r["value"] == json!(true) => {
                                -op["money"].as_i64().unwrap()
                            }
                            ("ts_deduct", true) => 0,
                            ("ts_add", true) => op["points"].as_i64().unwrap(),
                            ("ts_edit", true) => 7,
                            ("mjk_recharge", true) => op["amount"].as_i64().unwrap(),
                            ("mjk_consume", true) if r["value"].is_null() => 0,
                            ("mjk_consume", true) => -op["amount"].as_i64().unwrap(),
                            other => panic!("{other:?}"),
                        };
                        (user, delta, succeeded(&r) && delta != 0)
                    })
                    .collect::<Vec<_>>()
            }));
        }
        let mut gtasks = Vec::new();
        for calls in gateway_calls {
            let app = app.clone();
            gtasks.push(tokio::spawn(async move {
                let mut out = Vec::new();
                for (user, kind, amount, key) in calls {
                    let r = match kind {
                        "PAY" => app.recharge(user, amount, &key, None).await,
                        "TTS" => app.consume(user, amount, kind, &key, Some(2.0)).await,
                        _ => app.consume(user, amount, kind, &key, None).await,
                    };
                    let delta = match (kind, code(&r)) {
                        ("PAY", None) => amount,
                        (_, None) => -amount,
                        (_, Some("INSUFFICIENT_BALANCE")) => 0,
                        other => panic!("{other:?}: {r}"),
                    };
                    out.push((user, delta, delta != 0));
                }
                out
            }));
        }
        for t in tasks {
            for (user, delta, wrote) in t.await.unwrap() {
                *expected.get_mut(&user).unwrap() += delta;
                legacy_rows += usize::from(wrote);
            }
        }
        for t in gtasks {
            for (user, delta, wrote) in t.await.unwrap() {
                *expected.get_mut(&user).unwrap() += delta;
                gateway_rows += usize::from(wrote);
            }
        }
    }
    for (user, balance) in &expected {
        assert_eq!(app.balance(*user).await, *balance, "user {user}");
    }
    assert!(
        legacy_rows > 150 && gateway_rows > 150,
        "{legacy_rows} {gateway_rows}"
    );
    let checked = assert_views_true(&app, &url).await;
    assert!(checked > 40);
    // Every movement announced once.
    let seen = drain(&mut ws, Duration::from_millis(1500)).await;
    let unique: BTreeSet<i64> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "an event announced twice");
    assert_eq!(seen.len(), legacy_rows + gateway_rows);
    ok(
        py(&["ts_platform.py", &pg, "read"]).output().unwrap(),
        "ts read",
    );
}

/// The way back: after a week beside the gateway the database is handed
/// back (dry run, then `--apply`); the legacy code resumes on the
/// gateway's balances, a joined user's points counted once; then `adopt`
/// takes it over again and the balances are what the old code left.
#[tokio::test]
async fn the_way_back_hands_the_books_to_the_legacy_code_and_adopt_works_again() {
    let (url, pg, uuids, app) = adopted(1).await;
    let joined = uuids[0].to_string();
    let mjk_only = uuids[1];
    let mjk_id = gw_id(&url, mjk_only).await;
    let r = app.consume(1, 9, "SCRIPT", "back-1", None).await;
    assert!(r["errors"].is_null(), "{r}");
    let r = app.recharge(mjk_id, 70, "back-pay", None).await;
    assert!(r["errors"].is_null(), "{r}");
    let r = legacy(
        &pg,
        &[
            json!({"op": "mjk_consume", "user": joined, "amount": 4, "source_type": "video", "source_id": "back-2", "duration": 2.0}),
            json!({"op": "ts_edit", "user": 1, "money": 0, "gift": 25}),
        ],
    );
    assert!(r.iter().all(succeeded), "{r:?}");
    let hold = "mutation { hold(input: {userId: 1, amount: 5, sourceType: SCRIPT, sourceId: \"back-h\"}) { id } }";
    let r = app.gql(&app.service, hold, json!({})).await;
    assert!(r["errors"].is_null(), "{r}");
    let (balance, paid, gift, _) = user_figures(&app, 1).await;
    let mjk_balance = app.balance(mjk_id).await;
    assert_views_true(&app, &url).await;

    // An open hold: the old code knows none, so the release waits for it.
    let (success, out) = cli(&url, &["release", "--apply"]);
    assert!(!success && out.contains("holds are open"), "{out}");
    let r = app
        .gql(
            &app.service,
            "mutation { releaseHold(input: {sourceType: SCRIPT, sourceId: \"back-h\"}) { status } }",
            json!({}),
        )
        .await;
    assert!(r["errors"].is_null(), "{r}");
    drop(app);
    let rows: i64 = one(&url, "SELECT COUNT(*) FROM mjk_point_transactions").await;
    let (success, out) = cli(&url, &["release"]);
    assert!(success, "{out}");
    for want in [
        "dry run",
        &format!("users both systems know: 1 with {balance} points"),
        "type opening",
        "source_type \"paid\"",
    ] {
        assert!(out.contains(want), "{want:?} missing:\n{out}");
    }
    let same: i64 = one(&url, "SELECT COUNT(*) FROM mjk_point_transactions").await;
    assert_eq!(same, rows, "the dry run wrote");
    let (success, out) = cli(&url, &["release", "--apply"]);
    assert!(success && out.contains("Released"), "{out}");
    let (success, out) = cli(&url, &["release", "--apply"]);
    assert!(!success && out.contains("not adopted"), "{out}");
    let (success, out) = cli(&url, &["migrate"]);
    assert!(!success && out.contains("adopt"), "{out}");

    // The legacy code resumes on the gateway's figures, nothing absorbed.
    let r = legacy(
        &pg,
        &[
            json!({"op": "ts_money", "user": 1}),
            json!({"op": "mjk_balance", "user": joined}),
            json!({"op": "mjk_balance", "user": mjk_only.to_string()}),
            json!({"op": "ts_deduct", "user": 1, "money": 11, "title": "回滚后", "order_id": "after-back-1"}),
            json!({"op": "mjk_consume", "user": mjk_only.to_string(), "amount": 6, "source_type": "script", "source_id": "after-back-2"}),
        ],
    );
    assert!(r.iter().all(succeeded), "{r:?}");
    assert_eq!(
        r[0]["value"],
        json!({"money": paid, "gift_money": gift, "total": balance})
    );
    assert_eq!(
        r[1]["value"],
        json!(0),
        "the joined user's points live on the ts side only"
    );
    assert_eq!(r[2]["value"], json!(mjk_balance));
    assert_eq!(r[3]["value"], json!(true));
    let triggers: i64 = one(
        &url,
        "SELECT COUNT(*) FROM pg_trigger WHERE NOT tgisinternal AND tgrelid IN \
         ('mjk_point_transactions'::regclass, 'ts_users'::regclass, 'ts_points_detail'::regclass)",
    )
    .await;
    assert_eq!(triggers, 0);

    // Adopted again: the same people, the balances the old code left.
    let (dir, _) = adopt_sum(&url, &[uuids[0]]);
    let app = spawn_on(url.clone(), dir).await;
    assert_eq!(user_figures(&app, 1).await.0, balance - 11);
    let again = gw_id(&url, mjk_only).await;
    assert_eq!(app.balance(again).await, mjk_balance - 6);
    assert_views_true(&app, &url).await;
}

/// Legacy and gateway writes on one user at the same instants, thousands
/// of times: the mjk `consume()` and `recharge()`, the ts
/// `deduct_user_money_by_id()` and `add_user_money()` and an admin edit,
/// from three processes, against consumes and recharges from four tasks.
/// Every answer is counted; the sum of what was acknowledged is the
/// balance, on every view; a write the balance could not cover failed.
#[tokio::test]
async fn legacy_and_gateway_writes_racing_on_one_user_stay_exact() {
    let (url, pg, uuids, app) = adopted(1).await;
    let app = Arc::new(app);
    let joined = uuids[0].to_string();
    let start = app.balance(1).await;
    let mut tasks = Vec::new();
    for lane in 0..3usize {
        let pg = pg.clone();
        let joined = joined.clone();
        tasks.push(tokio::task::spawn_blocking(move || {
            let ops: Vec<Value> = (0..300usize)
                .map(|k| {
                    let key = format!("race-l{lane}-{k}");
                    let amount = 1 + (k % 17) as i64 * 3;
                    match k % 5 {
                        0 => json!({"op": "mjk_consume", "user": joined, "amount": amount, "source_type": "polish", "source_id": key}),
                        1 => json!({"op": "ts_deduct", "user": 1, "money": amount, "title": "race", "order_id": key}),
                        2 => json!({"op": "ts_add", "user": 1, "points": amount, "title": "race", "order_id": key, "source_type": if k % 2 == 0 { "gift" } else { "recharge" }}),
                        3 => json!({"op": "mjk_recharge", "user": joined, "amount": amount, "order_id": key}),
                        _ => json!({"op": "ts_edit", "user": 1, "money": -(amount % 4), "gift": 1}),
                    }
                })
                .collect();
            let results = legacy(&pg, &ops);
            ops.iter()
                .zip(results)
                .map(|(op, r)| match (op["op"].as_str().unwrap(), succeeded(&r)) {
                    (_, false) => {
                        assert!(
                            refused(&r).contains("free to spend"),
                            "only an uncovered spend may fail: {op} {r}"
                        );
                        0
                    }
                    ("mjk_consume", true) if r["value"].is_null() => 0,
                    ("mjk_consume", true) => -op["amount"].as_i64().unwrap(),
                    ("ts_deduct", true) if r["value"] == json!(false) => 0,
                    ("ts_deduct", true) => -op["money"].as_i64().unwrap(),
                    ("ts_add", true) => op["points"].as_i64().unwrap(),
                    ("mjk_recharge", true) => op["amount"].as_i64().unwrap(),
                    ("ts_edit", true) => op["money"].as_i64().unwrap() + 1,
                    other => panic!("{other:?}"),
                })
                .sum::<i64>()
        }));
    }
    let mut gtasks = Vec::new();
    for lane in 0..4usize {
        let app = app.clone();
        gtasks.push(tokio::spawn(async move {
            let mut sum = 0i64;
            for k in 0..200usize {
                let key = format!("race-g{lane}-{k}");
                let amount = 1 + (k % 11) as i64 * 4;
                let (r, delta) = if k % 3 == 0 {
                    (app.recharge(1, amount, &key, None).await, amount)
                } else {
                    (app.consume(1, amount, "SCRIPT", &key, None).await, -amount)
                };
                match code(&r) {
                    None => sum += delta,
                    Some("INSUFFICIENT_BALANCE") => {}
                    other => panic!("{other:?}: {r}"),
                }
            }
            sum
        }));
    }
    let mut expected = start;
    for t in tasks {
        expected += t.await.unwrap();
    }
    for t in gtasks {
        expected += t.await.unwrap();
    }
    assert_eq!(app.balance(1).await, expected);
    assert_views_true(&app, &url).await;
}

/// What a legacy op moved of the user's points, from its result.
fn moved(op: &Value, r: &Value) -> i64 {
    assert!(succeeded(r), "a legacy write failed: {op} {r}");
    match op["op"].as_str().unwrap() {
        "mjk_consume" if r["value"].is_null() => 0,
        "mjk_consume" => -op["amount"].as_i64().unwrap(),
        "ts_deduct" if r["value"] == json!(false) => 0,
        "ts_deduct" => -op["money"].as_i64().unwrap(),
        "ts_add" => op["points"].as_i64().unwrap(),
        "mjk_recharge" => op["amount"].as_i64().unwrap(),
        "ts_edit" => op["money"].as_i64().unwrap() + op["gift"].as_i64().unwrap(),
        other => panic!("{other}"),
    }
}

/// `adopt --apply` holds the legacy tables only while it arms and closes
/// its window: the legacy code keeps writing while the openings are made,
/// and those writes are absorbed after them, each once, in both systems'
/// tables, with the views true and `verify` clean at the end.
#[tokio::test]
async fn legacy_writes_made_while_adopt_applies_are_absorbed_after_it() {
    let (url, pg, _) = legacy_postgres().await;
    let uuids = mjk_users(&url).await;
    let (joined, mjk_only) = (uuids[0].to_string(), uuids[1].to_string());
    // What each user holds before, as the old code reads it (under `sum`
    // the joined user holds both sides).
    let before = legacy(
        &pg,
        &[
            json!({"op": "mjk_balance", "user": joined}),
            json!({"op": "ts_money", "user": 1}),
            json!({"op": "ts_money", "user": 2}),
            json!({"op": "mjk_balance", "user": mjk_only}),
        ],
    );
    let total = |r: &Value| r["value"]["total"].as_i64().unwrap();
    let mut expected = [
        before[0]["value"].as_i64().unwrap() + total(&before[1]),
        total(&before[2]),
        before[3]["value"].as_i64().unwrap(),
    ];
    let rows_before: i64 = one(&url, "SELECT COUNT(*) FROM mjk_point_transactions").await;

    let lanes: Vec<Vec<Value>> = (0..3usize)
        .map(|lane| {
            (0..250usize)
                .map(|k| {
                    let key = format!("window-{lane}-{k}");
                    let n = 1 + (k % 7) as i64;
                    match (lane, k % 5) {
                        (0, 0) => json!({"op": "mjk_consume", "user": joined, "amount": n, "source_type": "polish", "source_id": key}),
                        (0, 1) => json!({"op": "ts_deduct", "user": 1, "money": n, "title": "window", "order_id": key}),
                        (0, 2) => json!({"op": "mjk_recharge", "user": joined, "amount": n + 3, "order_id": key}),
                        (0, 3) => json!({"op": "ts_add", "user": 1, "points": n, "title": "window", "order_id": key, "source_type": "gift"}),
                        (0, _) => json!({"op": "ts_edit", "user": 1, "money": 2, "gift": -1}),
                        (1, 0 | 1) => json!({"op": "ts_deduct", "user": 2, "money": n, "title": "window", "order_id": key}),
                        (1, 2 | 3) => json!({"op": "ts_add", "user": 2, "points": n + 2, "title": "window", "order_id": key, "source_type": "recharge"}),
                        (1, _) => json!({"op": "ts_edit", "user": 2, "money": 1, "gift": 1}),
                        (_, 0..=2) => json!({"op": "mjk_consume", "user": mjk_only, "amount": n, "source_type": "tts", "source_id": key}),
                        (_, _) => json!({"op": "mjk_recharge", "user": mjk_only, "amount": n + 4, "order_id": key}),
                    }
                })
                .collect()
        })
        .collect();
    let mut writers = Vec::new();
    for ops in lanes {
        let pg = pg.clone();
        writers.push(tokio::task::spawn_blocking(move || {
            let results = legacy(&pg, &ops);
            ops.iter()
                .zip(&results)
                .map(|(op, r)| moved(op, r))
                .sum::<i64>()
        }));
    }
    // The apply starts once the writers are writing, and ends before them.
    let started = std::time::Instant::now();
    while one::<i64>(&url, "SELECT COUNT(*) FROM mjk_point_transactions").await < rows_before + 5 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the writers never wrote"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let adopt_url = url.clone();
    let map_uuid = uuids[0];
    let (dir, out) = tokio::task::spawn_blocking(move || adopt_sum(&adopt_url, &[map_uuid]))
        .await
        .unwrap();
    let moved_by: Vec<i64> = {
        let mut v = Vec::new();
        for w in writers {
            v.push(w.await.unwrap());
        }
        v
    };
    let window = out
        .lines()
        .find(|l| l.starts_with("Legacy writes made while it ran:"))
        .unwrap_or_else(|| panic!("no window line: {out}"));
    let absorbed: i64 = window
        .split_whitespace()
        .nth(6)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{window}"));
    assert!(absorbed > 0, "no write fell in the window: {window}");
    assert!(window.contains(", 0 refused."), "{window}");
    for (e, m) in expected.iter_mut().zip(&moved_by) {
        *e += m;
    }
    let app = spawn_on(url.clone(), dir).await;
    let mjk_id = gw_id(&url, uuids[1]).await;
    assert_eq!(
        [
            app.balance(1).await,
            app.balance(2).await,
            app.balance(mjk_id).await
        ],
        expected,
        "{window}"
    );
    // Nothing is left recorded, and the recording triggers are gone.
    assert_eq!(
        one::<i64>(&url, "SELECT COUNT(*) FROM gw_absorb_queue").await,
        0
    );
    assert_eq!(
        one::<i64>(
            &url,
            "SELECT COUNT(*) FROM pg_trigger WHERE tgname = 'gw_absorb_record'"
        )
        .await,
        0
    );
    assert_views_true(&app, &url).await;
    // The legacy code reads the same figures back.
    let after = legacy(
        &pg,
        &[
            json!({"op": "ts_money", "user": 2}),
            json!({"op": "mjk_balance", "user": mjk_only}),
        ],
    );
    assert_eq!(total(&after[0]), expected[1]);
    assert_eq!(after[1]["value"].as_i64().unwrap(), expected[2]);
}
