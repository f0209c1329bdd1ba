//! Adopting the databases the platforms already run, built the way they
//! build them: the mjk ledger by SQLAlchemy + Alembic, the ts platform by
//! peewee (`tests/legacy/`, their real ORMs from PyPI in the virtual
//! environment `scripts/test.sh` makes; `LEGACY_PYTHON` names its python).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sea_orm::{ConnectionTrait, Database, Statement};
use serde_json::{json, Value};

use crate::helpers::{code, data, spawn_on, TestApp};
use crate::process::cli;

pub(crate) fn python() -> PathBuf {
    PathBuf::from(std::env::var("LEGACY_PYTHON").expect(
        "LEGACY_PYTHON must name a python with sqlalchemy, alembic, psycopg2 and peewee \
         (scripts/test.sh makes .venv-legacy)",
    ))
}

pub(crate) fn legacy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/legacy")
}

pub(crate) fn ok(o: Output, what: &str) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{what} failed:\n{text}");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub(crate) fn py(args: &[&str]) -> Command {
    let mut c = Command::new(python());
    c.args(args).current_dir(legacy_dir());
    c
}

fn checksum(url: &str) -> String {
    ok(py(&["checksum.py", url]).output().unwrap(), "checksum")
        .trim()
        .to_owned()
}

pub(crate) async fn one<T: sea_orm::TryGetable>(url: &str, sql: &str) -> T {
    let db = Database::connect(url).await.unwrap();
    let r = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            sql.to_owned(),
        ))
        .await
        .unwrap()
        .unwrap();
    r.try_get_by_index::<T>(0).unwrap()
}

/// The dry run reports and changes nothing; `--apply` refuses without an
/// opening policy; then it applies, and a second run changes nothing.
fn adopt_in_steps(url: &str, legacy_url: &str, dry: &[&str], apply: &[&str], expect: &[&str]) {
    let before = checksum(legacy_url);
    let mut args = vec!["adopt"];
    args.extend_from_slice(dry);
    let (success, report) = cli(url, &args);
    assert!(success, "{report}");
    for e in expect {
        assert!(report.contains(e), "dry run lacks {e:?}:\n{report}");
    }
    assert!(!report.contains("Cannot proceed"), "{report}");
    assert_eq!(
        checksum(legacy_url),
        before,
        "the dry run changed the database"
    );
    // `serve`/`migrate` refuse until it is adopted, and change nothing.
    let (success, out) = cli(url, &["migrate"]);
    assert!(!success && out.contains("adopt"), "{out}");
    let (success, out) = cli(url, &["adopt", "--apply"]);
    assert!(!success && out.contains("--opening-balance"), "{out}");
    assert_eq!(checksum(legacy_url), before);

    let mut args = vec!["adopt", "--apply"];
    args.extend_from_slice(apply);
    let (success, out) = cli(url, &args);
    assert!(success, "{out}");
    assert!(out.contains("Adopted:"), "{out}");
    let after = checksum(legacy_url);
    assert_ne!(after, before);
    let (success, out) = cli(url, &args);
    assert!(success && out.contains("nothing to do"), "{out}");
    assert_eq!(
        checksum(legacy_url),
        after,
        "a second --apply changed something"
    );
}

/// What the ts platform's own code reads as `user`'s balance (peewee,
/// `get_user_total_money()`), against the gateway's `paid`, `gift` and
/// `balance`: equal after every commit where the adoption keeps ts_users.
pub(crate) async fn assert_ts_users_follow(app: &TestApp, peewee: &str, user: i32) {
    let out = ok(
        py(&["ts_platform.py", peewee, "money", &user.to_string()])
            .output()
            .unwrap(),
        "ts money",
    );
    let old: Value = serde_json::from_str(out.trim()).unwrap();
    let r = app
        .gql(
            &app.admin,
            "query($u: Int!) { user(id: $u) { balance paid gift } }",
            json!({ "u": user }),
        )
        .await;
    let u = data(&r, "user");
    assert_eq!(
        (&old["total"], &old["money"], &old["gift_money"]),
        (&u["balance"], &u["paid"], &u["gift"]),
        "the old code's view of user {user} against the gateway's"
    );
}

/// Refunds 2 points of the consume `(source, key)`, then holds 9 points and
/// captures 6, checking the old code's view after each settled step.
async fn refund_and_capture(
    app: &TestApp,
    peewee: &str,
    user: i32,
    source: &str,
    key: &str,
    tag: &str,
) {
    let r = app.refund(source, key, &format!("{tag}-r"), Some(2)).await;
    assert!(r["errors"].is_null(), "{r}");
    let hold = format!("mutation {{ hold(input: {{userId: {user}, amount: 9, sourceType: SCRIPT, sourceId: \"{tag}-h\"}}) {{ id }} }}");
    let r = app.gql(&app.service, &hold, json!({})).await;
    assert!(r["errors"].is_null(), "{r}");
    assert_ts_users_follow(app, peewee, user).await;
    let capture = format!("mutation {{ captureHold(input: {{sourceType: SCRIPT, sourceId: \"{tag}-h\", amount: 6}}) {{ status }} }}");
    let r = app.gql(&app.service, &capture, json!({})).await;
    assert!(r["errors"].is_null(), "{r}");
    assert_ts_users_follow(app, peewee, user).await;
}

async fn usage(app: &TestApp, user: i32) -> Vec<Value> {
    let r = app
        .gql(
            &app.admin,
            "query($u: Int) { usageDetails(userId: $u, first: 100) { nodes { id type amount change \
             balanceAfter description sourceType sourceId createdAt } } }",
            json!({ "u": user }),
        )
        .await;
    data(&r, "usageDetails")["nodes"]
        .as_array()
        .unwrap()
        .clone()
}

/// A fresh PostgreSQL database built by the legacy systems' own ORMs:
/// Alembic's history for the mjk ledger, then `fill.py`'s data through
/// SQLAlchemy and peewee. Its URL as the gateway, peewee and SQLAlchemy
/// spell it.
pub(crate) async fn legacy_postgres() -> (String, String, String) {
    let url = crate::helpers::fresh_postgres_url().await;
    let pg = url.replacen("postgres://", "postgresql://", 1);
    let psycopg = url.replacen("postgres://", "postgresql+psycopg2://", 1);
    ok(
        py(&["-m", "alembic", "upgrade", "head"])
            .current_dir(legacy_dir().join("mjk"))
            .env("MJK_DB_URL", &psycopg)
            .output()
            .unwrap(),
        "alembic upgrade",
    );
    ok(
        py(&["fill.py", "--create-ts", "--ts", &pg, "--mjk", &psycopg])
            .output()
            .unwrap(),
        "fill.py",
    );
    (url, pg, psycopg)
}

#[tokio::test]
async fn a_postgres_database_of_both_legacy_systems_is_adopted_and_lives_on() {
    let (url, pg, psycopg) = legacy_postgres().await;
    // A job the old code charged twice (no idempotency there).
    let retried = ok(
        py(&["mjk_retry.py", &psycopg]).output().unwrap(),
        "mjk_retry.py",
    );
    let dup_sid = retried.split_whitespace().nth(1).unwrap().to_owned();
    // Join ts user 1 with the mjk user of the ledger's first row.
    let mjk_uuid: uuid::Uuid = one(
        &url,
        "SELECT user_id FROM mjk_point_transactions ORDER BY id LIMIT 1",
    )
    .await;
    let ledger_last: i32 = one(
        &url,
        &format!(
            "SELECT balance_after FROM mjk_point_transactions WHERE user_id = '{mjk_uuid}' \
             ORDER BY id DESC LIMIT 1"
        ),
    )
    .await;
    let platform_last: i32 = one(
        &url,
        "SELECT balance_after FROM ts_points_detail WHERE user_id = 1 ORDER BY id DESC LIMIT 1",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let map = dir.path().join("users.csv");
    std::fs::write(&map, format!("ts_user_id,mjk_user_uuid\n1,{mjk_uuid}\n")).unwrap();
    let cutover: i64 = one(&url, "SELECT MAX(id) FROM mjk_point_transactions").await;

    let map_arg = map.to_str().unwrap().to_owned();
    adopt_in_steps(
        &url,
        &pg,
        &["--user-map", &map_arg],
        &["--opening-balance", "sum", "--user-map", &map_arg],
        &[
            "jobs charged more than once under one (source_type, source_id): 2",
            &format!("script:{dup_sid} charged 2 times"),
            "ledger rows with an amount that is not positive: 1",
            "tts or video consumes without a duration",
            "users whose two balances disagree (mjk ledger vs ts platform): 1",
            "joined by --user-map: 1",
        ],
    );

    let app = spawn_on(url.clone(), dir).await;
    app.assert_verify_clean().await;
    // The UsageDetail page: the opening row, then the history as it was.
    let opening = (ledger_last + platform_last) as i64;
    let rows = usage(&app, 1).await;
    assert_eq!(rows[0]["type"], "OPENING", "{rows:?}");
    assert_eq!(rows[0]["amount"], opening);
    assert_eq!(rows[0]["balanceAfter"], opening);
    assert!(rows.len() > 3);
    assert!(rows[1..].iter().all(|r| r["type"] != "OPENING"));
    let history: i64 = one(
        &url,
        &format!("SELECT COUNT(*) FROM mjk_point_transactions WHERE user_id = '{mjk_uuid}' AND id <= {cutover}"),
    )
    .await;
    assert_eq!(rows.len() as i64, history + 1);

    // Consume, refund and recharge on the opening balance.
    let r = app.consume(1, 10, "SCRIPT", "after-cutover-1", None).await;
    assert!(r["errors"].is_null(), "{r}");
    let r = app
        .refund("SCRIPT", "after-cutover-1", "after-cutover-r1", Some(4))
        .await;
    assert!(r["errors"].is_null(), "{r}");
    let r = app.recharge(1, 500, "after-cutover-o1", None).await;
    assert!(r["errors"].is_null(), "{r}");
    assert_eq!(app.balance(1).await, opening - 10 + 4 + 500);

    // A refund of a consume from before the cutover: up to what it took.
    let (st, sid, took): (String, String, i32) = {
        let db = Database::connect(&url).await.unwrap();
        let r = db
            .query_one_raw(Statement::from_string(
                db.get_database_backend(),
                format!(
                    "SELECT source_type, source_id, amount FROM mjk_point_transactions c \
                     WHERE user_id = '{mjk_uuid}' AND type = 'consume' AND amount > 1 \
                     AND NOT EXISTS (SELECT 1 FROM mjk_point_transactions r WHERE r.type = 'refund' \
                       AND r.source_id = c.source_id) ORDER BY id LIMIT 1"
                ),
            ))
            .await
            .unwrap()
            .unwrap();
        (
            r.try_get("", "source_type").unwrap(),
            r.try_get("", "source_id").unwrap(),
            r.try_get("", "amount").unwrap(),
        )
    };
    let gql_source = st.to_uppercase();
    let before = app.balance(1).await;
    let r = app
        .refund(&gql_source, &sid, "legacy-r1", Some(took as i64 - 1))
        .await;
    assert!(r["errors"].is_null(), "{r}");
    let r = app.refund(&gql_source, &sid, "legacy-r2", Some(2)).await;
    assert_eq!(code(&r), Some("REFUND_EXCEEDS_CONSUMED"), "{r}");
    let r = app.refund(&gql_source, &sid, "legacy-r3", Some(1)).await;
    assert!(r["errors"].is_null(), "{r}");
    assert_eq!(app.balance(1).await, before + took as i64);

    // The job the old code charged twice: retrying it is a replay of the
    // earliest charge when it matches, a conflict otherwise.
    let dup_user: i32 = one(
        &url,
        &format!(
            "SELECT u.id FROM mjk_point_transactions t JOIN gw_users u ON u.uuid = t.user_id \
             WHERE t.source_id = '{dup_sid}' LIMIT 1"
        ),
    )
    .await;
    let count_before = app.count("mjk_point_transactions").await;
    // A payment callback retried against a legacy recharge: the same order,
    // user and amount is that recharge; anything else is a conflict.
    let (order, paid): (String, i32) = {
        let db = Database::connect(&url).await.unwrap();
        let r = db
            .query_one_raw(Statement::from_string(
                db.get_database_backend(),
                format!(
                    "SELECT source_id, amount FROM mjk_point_transactions WHERE user_id = '{mjk_uuid}' \
                     AND type = 'recharge' AND id <= {cutover} ORDER BY id LIMIT 1"
                ),
            ))
            .await
            .unwrap()
            .unwrap();
        (
            r.try_get_by_index(0).unwrap(),
            r.try_get_by_index(1).unwrap(),
        )
    };
    let r = app.recharge(1, paid as i64, &order, None).await;
    assert!(r["errors"].is_null(), "{r}");
    assert_eq!(
        code(&app.recharge(1, paid as i64 + 1, &order, None).await),
        Some("IDEMPOTENCY_CONFLICT")
    );
    assert_eq!(
        code(&app.recharge(2, paid as i64, &order, None).await),
        Some("IDEMPOTENCY_CONFLICT")
    );
    assert_eq!(app.count("mjk_point_transactions").await, count_before);
    let r = app.consume(dup_user, 12, "SCRIPT", &dup_sid, None).await;
    assert!(r["errors"].is_null(), "{r}");
    let r = app.consume(dup_user, 13, "SCRIPT", &dup_sid, None).await;
    assert_eq!(code(&r), Some("IDEMPOTENCY_CONFLICT"), "{r}");
    assert_eq!(app.count("mjk_point_transactions").await, count_before);
    app.assert_verify_clean().await;

    // Holds live on an adopted database too: a key the history charged
    // cannot be held; a new job is held on the opening balance and
    // captured into one consume row the legacy ORMs read back below.
    let hold = "mutation($u: Int!, $id: String!) { hold(input: { userId: $u, amount: 9, sourceType: SCRIPT, sourceId: $id }) { status } }";
    let r = app
        .gql(&app.service, hold, json!({ "u": dup_user, "id": dup_sid }))
        .await;
    assert_eq!(code(&r), Some("IDEMPOTENCY_CONFLICT"), "{r}");
    let r = app
        .gql(&app.service, hold, json!({ "u": 1, "id": "adopted-hold" }))
        .await;
    assert_eq!(r["data"]["hold"]["status"], "HELD", "{r}");
    let r = app
        .gql(
            &app.service,
            "mutation { captureHold(input: { sourceType: SCRIPT, sourceId: \"adopted-hold\", amount: 7 }) { entry { amount type } } }",
            json!({}),
        )
        .await;
    assert_eq!(r["data"]["captureHold"]["entry"]["amount"], 7, "{r}");
    assert_eq!(app.count("mjk_point_transactions").await, count_before + 1);
    app.assert_verify_clean().await;

    // The platform keeps writing fal tasks, in its naive local time: the
    // cost report's window and falTasks place them at the right instant.
    let key: String = one(
        &url,
        "SELECT api_key FROM ts_fal_account WHERE status = 1 ORDER BY id LIMIT 1",
    )
    .await;
    let account: i32 = one(
        &url,
        &format!("SELECT id FROM ts_fal_account WHERE api_key = '{key}'"),
    )
    .await;
    let costs = |from: chrono::DateTime<chrono::Utc>, to: chrono::DateTime<chrono::Utc>| {
        let app = &app;
        async move {
            let r = app
                .gql(
                    &app.admin,
                    "query($f: DateTime!, $t: DateTime!, $a: [Int!]) { accountCosts(from: $f, to: $t, accountIds: $a) { taskCount } \
                     falTasks(filter: { from: $f, to: $t }) { nodes { taskId createdAt } } }",
                    json!({ "f": from.to_rfc3339(), "t": to.to_rfc3339(), "a": [account] }),
                )
                .await;
            assert!(r["errors"].is_null(), "{r}");
            r
        }
    };
    let now = chrono::Utc::now();
    let before_task = costs(
        now - chrono::Duration::minutes(10),
        now + chrono::Duration::minutes(10),
    )
    .await;
    ok(
        py(&[
            "ts_platform.py",
            &pg,
            "task",
            "after-cutover-task",
            &key,
            "1",
        ])
        .output()
        .unwrap(),
        "platform task",
    );
    let r = costs(
        now - chrono::Duration::minutes(10),
        now + chrono::Duration::minutes(10),
    )
    .await;
    assert_eq!(
        r["data"]["accountCosts"][0]["taskCount"].as_i64().unwrap(),
        before_task["data"]["accountCosts"][0]["taskCount"]
            .as_i64()
            .unwrap()
            + 1
    );
    let tasks = r["data"]["falTasks"]["nodes"].as_array().unwrap();
    let t = tasks
        .iter()
        .find(|t| t["taskId"] == "after-cutover-task")
        .expect("task listed");
    let at = chrono::DateTime::parse_from_rfc3339(t["createdAt"].as_str().unwrap()).unwrap();
    assert!(
        (at.with_timezone(&chrono::Utc) - now).num_seconds().abs() < 120,
        "{at} vs {now}"
    );
    // Eight hours off (the zone ignored) would land it in this window.
    let r = costs(
        now + chrono::Duration::hours(7),
        now + chrono::Duration::hours(9),
    )
    .await;
    assert!(
        r["data"]["falTasks"]["nodes"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{r}"
    );

    // The legacy ORMs load every row the gateway wrote, and the old pages'
    // naive date comparisons work.
    let out = ok(
        py(&[
            "read_back.py",
            url.rsplit_once('/')
                .unwrap()
                .0
                .replacen("postgres://", "postgresql://", 1)
                .as_str(),
            url.rsplit_once('/').unwrap().1,
        ])
        .output()
        .unwrap(),
        "read_back.py",
    );
    assert!(
        out.contains("filter ok") && !out.contains("FAILED"),
        "{out}"
    );
    assert!(out.contains("'opening'"), "{out}");
    let out = ok(
        py(&["ts_platform.py", &pg, "read"]).output().unwrap(),
        "platform read",
    );
    let seen: Value = serde_json::from_str(out.trim()).unwrap();
    assert!(
        seen["recent_points_detail"].as_i64().unwrap() >= 5,
        "{seen}"
    );
    assert!(seen["recent_fal_tasks"].as_i64().unwrap() >= 1, "{seen}");
    let (success, out) = cli(&url, &["verify"]);
    assert!(success, "{out}");
    assert!(out.contains("before the gateway took over"), "{out}");
}

#[tokio::test]
async fn a_sqlite_database_of_the_ts_platform_is_adopted_and_lives_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ts.sqlite");
    let peewee = format!("sqlite:///{}", path.display());
    let url = format!("sqlite://{}?mode=rwc", path.display());
    ok(
        py(&["fill.py", "--create-ts", "--ts", &peewee])
            .output()
            .unwrap(),
        "fill.py",
    );
    let statement_last: i32 = one(
        &url,
        "SELECT balance_after FROM ts_points_detail WHERE user_id = 2 ORDER BY id DESC LIMIT 1",
    )
    .await;
    // Before the cutover an admin tool gave user 2 a thousand paid and 200
    // gift points by editing ts_users, with no statement row: the platform's
    // balance (what every old page reads) is ts_users', and the report
    // names the drift.
    ok(
        py(&["ts_platform.py", &peewee, "edit", "2", "1000", "200"])
            .output()
            .unwrap(),
        "admin edit",
    );
    let platform_last = statement_last + 1200;
    let (money, gift_money): (i32, i32) = (
        one(&url, "SELECT money FROM ts_users WHERE id = 2").await,
        one(&url, "SELECT gift_money FROM ts_users WHERE id = 2").await,
    );
    assert_eq!(money + gift_money, platform_last);
    assert!(gift_money >= 200 && money >= 1000);
    let (_, report) = cli(&url, &["adopt"]);
    assert!(
        report.contains(&format!(
            "ts 2: statement {statement_last}, ts_users {platform_last} (+1200)"
        )),
        "{report}"
    );
    let (success, report) = cli(
        &url,
        &["adopt", "--ts-balance-columns", "points,gift_money"],
    );
    assert!(!success || report.contains("Cannot proceed"), "{report}");
    assert!(report.contains("ts_users has no column points"), "{report}");
    // A map naming users the databases do not have: exactly why, nothing done.
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "999,0b9c4a52-8f59-4c4a-9d0c-5d1c1f3e9a01\n").unwrap();
    let before = checksum(&peewee);
    let (success, out) = cli(
        &url,
        &[
            "adopt",
            "--apply",
            "--opening-balance",
            "platform",
            "--user-map",
            bad.to_str().unwrap(),
        ],
    );
    assert!(!success, "{out}");
    assert!(
        out.contains("ts user 999 does not exist") && out.contains("nothing was changed"),
        "{out}"
    );
    assert_eq!(checksum(&peewee), before);
    adopt_in_steps(
        &url,
        &peewee,
        &[],
        &["--opening-balance", "platform"],
        &[
            "mjk_point_transactions",
            "missing",
            "--opening-balance platform",
        ],
    );
    let app = spawn_on(url.clone(), dir).await;
    app.assert_verify_clean().await;
    let rows = usage(&app, 2).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["type"], "OPENING");
    assert_eq!(rows[0]["balanceAfter"], platform_last as i64);
    // Paid and gift stay apart, as ts_users held them.
    let split = "{ user(id: 2) { balance paid gift batches { funds remaining } } }";
    let r = app.gql(&app.admin, split, json!({})).await;
    let u = data(&r, "user");
    assert_eq!(
        (&u["balance"], &u["paid"], &u["gift"]),
        (&json!(platform_last), &json!(money), &json!(gift_money)),
        "{r}"
    );
    // The platform's own statement: its history, then the opening mirror.
    let r = app
        .gql(
            &app.admin,
            "{ pointsStatement(userId: 2, first: 100) { nodes { points balanceAfter sourceType } } }",
            json!({}),
        )
        .await;
    let st = data(&r, "pointsStatement")["nodes"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(st[0]["sourceType"], "opening");
    assert!(st.len() > 2);
    let r = app
        .gql(
            &app.service,
            "mutation { recharge(input: {userId: 2, amount: 30, orderId: \"sqlite-gift-1\", kind: GIFT}) { id } }",
            json!({}),
        )
        .await;
    assert!(r["errors"].is_null(), "{r}");
    let r = app.gql(&app.admin, split, json!({})).await;
    let u = data(&r, "user");
    assert_eq!(u["gift"], json!(gift_money + 30), "{r}");
    assert_eq!(u["paid"], json!(money), "{r}");
    let r = app.consume(2, 7, "TTS", "sqlite-after-1", Some(3.5)).await;
    assert!(r["errors"].is_null(), "{r}");
    let r = app.recharge(2, 100, "sqlite-after-o1", None).await;
    assert!(r["errors"].is_null(), "{r}");
    assert_eq!(app.balance(2).await, platform_last as i64 + 30 - 7 + 100);
    assert_ts_users_follow(&app, &peewee, 2).await;
    // A refund, and a hold captured for less: every path keeps ts_users.
    refund_and_capture(&app, &peewee, 2, "TTS", "sqlite-after-1", "sqlite").await;
    assert_eq!(
        app.balance(2).await,
        platform_last as i64 + 30 - 7 + 100 + 2 - 6
    );
    assert_ts_users_follow(&app, &peewee, 2).await;
    let r = app.gql(&app.admin, split, json!({})).await;
    let u = data(&r, "user");
    assert_eq!(
        u["paid"].as_i64().unwrap() + u["gift"].as_i64().unwrap(),
        u["balance"].as_i64().unwrap(),
        "{r}"
    );
    app.assert_verify_clean().await;
    let out = ok(
        py(&["ts_platform.py", &peewee, "read"]).output().unwrap(),
        "platform read",
    );
    let seen: Value = serde_json::from_str(out.trim()).unwrap();
    assert!(
        seen["recent_points_detail"].as_i64().unwrap() >= 3,
        "{seen}"
    );
    assert!(seen["recent_financial"].as_i64().unwrap() >= 1, "{seen}");
    let last = seen["last"].as_array().unwrap();
    assert!(
        last.iter()
            .any(|p| p["source_type"] == "consume" && p["order_id"] == "sqlite-after-1"),
        "{seen}"
    );
    // A new user through the API never takes an id the platform will use.
    let id = app.create_user("after adoption").await;
    assert!(id >= 1_000_000_000, "{id}");
    // A person the platform registers after the cutover keeps its id.
    let create = |name: &str, id: i64| {
        let app = &app;
        let name = name.to_owned();
        async move {
            app.gql(
                &app.service,
                "mutation($n: String!, $i: Int) { createUser(input: { name: $n, id: $i }) { id balance } }",
                json!({ "n": name, "i": id }),
            )
            .await
        }
    };
    let r = create("ts:41", 41).await;
    assert_eq!(data(&r, "createUser")["id"], 41, "{r}");
    let r = create("ts:41", 41).await;
    assert_eq!(
        data(&r, "createUser")["id"],
        41,
        "a retry returns the user: {r}"
    );
    assert_eq!(
        code(&create("someone else", 41).await),
        Some("IDEMPOTENCY_CONFLICT")
    );
    assert_eq!(
        code(&create("someone else", 2).await),
        Some("IDEMPOTENCY_CONFLICT")
    );
    for bad in [0, -1, 1_000_000_000] {
        assert_eq!(
            code(&create("x", bad).await),
            Some("INVALID_INPUT"),
            "{bad}"
        );
    }
    let r = app.recharge(41, 50, "ts41-first", None).await;
    assert!(r["errors"].is_null(), "{r}");
    app.assert_verify_clean().await;
    // An admin tool that still edits ts_users after the cutover: verify
    // names the user whose legacy view no longer matches.
    ok(
        py(&["ts_platform.py", &peewee, "edit", "2", "5"])
            .output()
            .unwrap(),
        "admin edit after the cutover",
    );
    let (_, v) = points_gateway::domain::verify::verify(&app.store)
        .await
        .unwrap();
    let rules: Vec<_> = v.iter().map(|x| (x.rule, x.detail.clone())).collect();
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(rules[0].0, "legacy_view");
    assert!(rules[0].1.starts_with("ts user 2:"), "{rules:?}");
}

/// An adopter who widened the seeds' types (`bigint` amounts, `timestamptz`
/// times, `double precision` floats): reported as wider, read the same.
#[tokio::test]
async fn wider_types_an_adopter_has_are_read_the_same() {
    let (url, _, _) = legacy_postgres().await;
    // The statement's first row of ts user 2, as the platform wrote it.
    let (first_id, naive): (i32, chrono::NaiveDateTime) = {
        let db = Database::connect(&url).await.unwrap();
        let r = db
            .query_one_raw(Statement::from_string(
                db.get_database_backend(),
                "SELECT id, created_at FROM ts_points_detail WHERE user_id = 2 ORDER BY id LIMIT 1"
                    .to_owned(),
            ))
            .await
            .unwrap()
            .unwrap();
        (
            r.try_get_by_index(0).unwrap(),
            r.try_get_by_index(1).unwrap(),
        )
    };
    {
        let db = Database::connect(&url).await.unwrap();
        db.execute_unprepared(
            "ALTER TABLE mjk_point_transactions ALTER COLUMN amount TYPE bigint, \
               ALTER COLUMN balance_before TYPE bigint, ALTER COLUMN balance_after TYPE bigint; \
             ALTER TABLE ts_points_detail ALTER COLUMN created_at TYPE timestamptz \
               USING created_at AT TIME ZONE 'Asia/Shanghai'; \
             ALTER TABLE ts_fal_tasks ALTER COLUMN cost_money TYPE double precision; \
             ALTER TABLE ts_fal_account ALTER COLUMN balance TYPE double precision",
        )
        .await
        .unwrap();
    }
    let (success, report) = cli(&url, &["adopt"]);
    assert!(success, "{report}");
    assert!(
        report.contains("mjk_point_transactions.amount: bigint"),
        "{report}"
    );
    assert!(report.contains("wider: read the same"), "{report}");
    assert!(report.contains("time zone aware"), "{report}");
    let (success, out) = cli(&url, &["adopt", "--apply", "--opening-balance", "ledger"]);
    assert!(success, "{out}");
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_on(url.clone(), dir).await;
    app.assert_verify_clean().await;
    let mjk_only = crate::helpers::data(
        &app.gql(
            &app.admin,
            "{ user(id: 1000000000) { balance } }",
            json!({}),
        )
        .await,
        "user",
    )["balance"]
        .as_i64()
        .unwrap();
    let rows = usage(&app, 1_000_000_000).await;
    assert_eq!(rows[0]["type"], "OPENING");
    assert_eq!(rows[0]["balanceAfter"], mjk_only);
    if mjk_only >= 1 {
        let r = app
            .consume(1_000_000_000, 1, "SCRIPT", "wide-1", None)
            .await;
        assert!(r["errors"].is_null(), "{r}");
    }
    let r = app
        .gql(
            &app.admin,
            "{ pointsStatement(userId: 2, first: 100) { nodes { id createdAt } } }",
            json!({}),
        )
        .await;
    let nodes = data(&r, "pointsStatement")["nodes"]
        .as_array()
        .unwrap()
        .clone();
    let first = nodes
        .iter()
        .find(|n| n["id"] == first_id)
        .expect("history row");
    let at = chrono::DateTime::parse_from_rfc3339(first["createdAt"].as_str().unwrap()).unwrap();
    assert_eq!(
        at.with_timezone(&chrono_tz::Asia::Shanghai).naive_local(),
        naive,
        "a timestamptz column reads as the same instant"
    );
    app.assert_verify_clean().await;
}

/// PostgreSQL, `--opening-balance platform`: ts_users follows every path
/// that moves points — the one-call `gw_consume`, the general path, gift
/// recharges, refunds, a hold captured for less, and twenty consumes at
/// once — so the old code's `get_user_total_money()` reads the gateway's
/// balance after every commit.
#[tokio::test]
async fn a_platform_adoption_keeps_ts_users_true_on_postgres() {
    platform_adoption_keeps_ts_users_true(false).await
}

/// The same, with `adopt --apply` and the gateway behind PgBouncer in
/// transaction mode.
#[tokio::test]
async fn a_platform_adoption_keeps_ts_users_true_through_pgbouncer() {
    platform_adoption_keeps_ts_users_true(true).await
}

async fn platform_adoption_keeps_ts_users_true(pooled: bool) {
    let (url, pg, _) = legacy_postgres().await;
    let args = ["adopt", "--apply", "--opening-balance", "platform"];
    let (success, out) = if pooled {
        let via = crate::pgbouncer::PgBouncer::shared().url_for(&url);
        crate::process::cli_with(&via, &args, &[("DATABASE_POOL_MODE", "transaction")])
    } else {
        cli(&url, &args)
    };
    assert!(success, "{out}");
    assert!(out.contains("kept in step"), "{out}");
    let user: i32 = one(
        &url,
        "SELECT id FROM ts_users ORDER BY money + gift_money DESC, id LIMIT 1",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let app = if pooled {
        crate::helpers::spawn_pooled_on(url.clone(), dir).await
    } else {
        spawn_on(url.clone(), dir).await
    };
    assert_ts_users_follow(&app, &pg, user).await;
    let r = app.consume(user, 5, "SCRIPT", "pg-follow-1", None).await;
    assert!(r["errors"].is_null(), "{r}");
    let r = app
        .gql(
            &app.service,
            "mutation($u: Int!) { recharge(input: {userId: $u, amount: 40, orderId: \"pg-follow-g\", kind: GIFT}) { id } }",
            json!({ "u": user }),
        )
        .await;
    assert!(r["errors"].is_null(), "{r}");
    refund_and_capture(&app, &pg, user, "SCRIPT", "pg-follow-1", "pg-follow").await;
    assert_ts_users_follow(&app, &pg, user).await;
    let app = std::sync::Arc::new(app);
    let racing: Vec<_> = (0..20)
        .map(|i| {
            let app = app.clone();
            tokio::spawn(async move {
                app.consume(user, 1, "SCRIPT", &format!("pg-follow-race-{i}"), None)
                    .await
            })
        })
        .collect();
    for t in racing {
        let r = t.await.unwrap();
        assert!(r["errors"].is_null(), "{r}");
    }
    assert_ts_users_follow(&app, &pg, user).await;
    app.assert_verify_clean().await;
}
