//! What the platforms' Python services need of the gateway (issue 25):
//! named service tokens, who wrote a row, per-service rate limits, source
//! types as configuration, lookups by mjk uuid, keyless refunds and the
//! ts statement's own titles.

use points_gateway::auth::{CallerName, Role};
use points_gateway::domain::source::{DurationRule, SourceType};
use serde_json::{json, Value};

use crate::helpers::{code, data, spawn_with, Engine, TestApp};

fn named(app: &TestApp, role: Role, name: &str) -> String {
    let n = CallerName::new(name).unwrap();
    app.keys
        .mint_as(role, None, Some(&n), chrono::Duration::hours(1))
        .unwrap()
}

const CONSUME: &str = "mutation($u: Int!, $a: Int!, $s: SourceType!, $id: String!, $d: Float, $t: String) { consume(input: { userId: $u, amount: $a, sourceType: $s, sourceId: $id, duration: $d, title: $t }) { id sourceType description balanceAfter } }";

async fn consume_as(app: &TestApp, token: &str, user: i32, st: &str, id: &str) -> Value {
    app.gql(
        token,
        CONSUME,
        json!({ "u": user, "a": 5, "s": st, "id": id }),
    )
    .await
}

async fn rows_written_by_two_named_services_show_their_names(engine: Engine) {
    let app = spawn_with(engine, |_| {}).await;
    let u = app.create_user("named").await;
    app.recharge(u, 100, "named-r", None).await;
    let fal = named(&app, Role::Service, "fal-runner");
    let tts = named(&app, Role::Service, "tts-worker");
    let a = consume_as(&app, &fal, u, "fal", "named-a").await;
    let b = consume_as(&app, &tts, u, "script", "named-b").await;
    assert!(a["errors"].is_null() && b["errors"].is_null(), "{a} {b}");
    let page = app
        .gql(
            &app.admin,
            "query($u: Int!) { usageDetails(userId: $u) { nodes { type sourceId writtenBy } } }",
            json!({ "u": u }),
        )
        .await;
    let nodes = data(&page, "usageDetails")["nodes"]
        .as_array()
        .unwrap()
        .clone();
    let by = |id: &str| {
        nodes
            .iter()
            .find(|n| n["sourceId"] == id)
            .map(|n| n["writtenBy"].clone())
    };
    assert_eq!(by("named-a"), Some(json!("service:fal-runner")), "{page}");
    assert_eq!(by("named-b"), Some(json!("service:tts-worker")), "{page}");
    // The recharge by the helpers' unnamed service token.
    assert_eq!(by("named-r"), Some(json!("service")), "{page}");
    // Only admins read it; the row itself stays readable by its service.
    let r = app
        .gql(
            &fal,
            "query($u: Int!) { usageDetails(userId: $u) { nodes { writtenBy } } }",
            json!({ "u": u }),
        )
        .await;
    assert_eq!(code(&r), Some("FORBIDDEN"), "{r}");
    app.assert_verify_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_services_sqlite() {
    rows_written_by_two_named_services_show_their_names(Engine::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_services_postgres() {
    rows_written_by_two_named_services_show_their_names(Engine::Postgres).await
}

/// One service spending its whole burst leaves another's untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_named_service_has_its_own_rate_limit() {
    let app = spawn_with(Engine::Sqlite, |s| s.rates.service = 2.0).await;
    let noisy = named(&app, Role::Service, "noisy");
    let quiet = named(&app, Role::Service, "quiet");
    let mut limited = 0;
    for _ in 0..12 {
        let r = app.post_raw(Some(&noisy), "{ sourceTypes { name } }").await;
        if r.status() == 429 {
            limited += 1;
        }
    }
    assert!(
        limited >= 6,
        "the noisy service was limited {limited} times"
    );
    let r = app.post_raw(Some(&quiet), "{ sourceTypes { name } }").await;
    assert_eq!(r.status(), 200, "the quiet service shares no budget");
    let again = app.post_raw(Some(&noisy), "{ sourceTypes { name } }").await;
    assert_eq!(again.status(), 429);
}

async fn source_types_are_configuration(engine: Engine) {
    let app = spawn_with(engine, |_| {}).await;
    let u = app.create_user("types").await;
    app.recharge(u, 500, "types-r", None).await;
    // The defaults, as the fixed enum had them.
    let list = app
        .gql(
            &app.service,
            "{ sourceTypes { name label duration } }",
            json!({}),
        )
        .await;
    let names: Vec<&str> = data(&list, "sourceTypes")
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["fal", "polish", "script", "tts", "video", "voice_clone"]
    );
    // Enum spelling, inline and as a variable, still works.
    let inline = app
        .gql(
            &app.service,
            "mutation($u: Int!) { consume(input: { userId: $u, amount: 3, sourceType: TTS, sourceId: \"t-1\", duration: 1.5 }) { sourceType description } }",
            json!({ "u": u }),
        )
        .await;
    assert_eq!(data(&inline, "consume")["sourceType"], "tts", "{inline}");
    let voice = consume_as(&app, &app.service, u, "VOICE_CLONE", "v-1").await;
    assert_eq!(data(&voice, "consume")["description"], "【声音克隆】");
    // A name not configured: INVALID_INPUT, nothing written.
    let before = app.count("mjk_point_transactions").await;
    let r = consume_as(&app, &app.service, u, "agent_market", "am-1").await;
    assert_eq!(code(&r), Some("INVALID_INPUT"), "{r}");
    for bad in ["", "a-b", "x".repeat(40).as_str(), "中文"] {
        let r = consume_as(&app, &app.service, u, bad, "am-bad").await;
        assert_eq!(code(&r), Some("INVALID_INPUT"), "{bad:?}: {r}");
    }
    assert_eq!(app.count("mjk_point_transactions").await, before);
    // Configured while the gateway runs (as `source-types set` does): the
    // next request that names it finds it.
    let market = SourceType::new("agent_market", "【智能体市场】", DurationRule::Optional).unwrap();
    points_gateway::catalog::set(&app.store, &market)
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let r = consume_as(&app, &app.service, u, "agent_market", "am-1").await;
    assert_eq!(data(&r, "consume")["description"], "【智能体市场】", "{r}");
    // Optional: with a duration too.
    let timed = app
        .gql(
            &app.service,
            CONSUME,
            json!({ "u": u, "a": 4, "s": "agent_market", "id": "am-2", "d": 12.5 }),
        )
        .await;
    assert!(timed["errors"].is_null(), "{timed}");
    // Refunds of the new type carry its label.
    let refund = app
        .gql(
            &app.service,
            "mutation { refund(input: { sourceType: \"agent_market\", sourceId: \"am-1\" }) { description amount } }",
            json!({}),
        )
        .await;
    assert_eq!(
        data(&refund, "refund")["description"],
        "【退款】【智能体市场】",
        "{refund}"
    );
    app.assert_verify_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_types_sqlite() {
    source_types_are_configuration(Engine::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_types_postgres() {
    source_types_are_configuration(Engine::Postgres).await
}

async fn keyless_refunds_titles_and_uuid_lookups(engine: Engine) {
    let app = spawn_with(engine, |_| {}).await;
    let u = app.create_user("keyless").await;
    app.recharge(u, 100, "keyless-r", None).await;
    let c = app
        .gql(
            &app.service,
            CONSUME,
            json!({ "u": u, "a": 30, "s": "fal", "id": "kl-1", "t": "视频生成-kl-1" }),
        )
        .await;
    assert_eq!(data(&c, "consume")["description"], "【AI生成】", "{c}");
    // The statement shows the title the old code wrote; the ledger keeps the label.
    let statement = app
        .gql(
            &app.admin,
            "query($u: Int!) { pointsStatement(userId: $u) { nodes { orderId title points } } }",
            json!({ "u": u }),
        )
        .await;
    let row = data(&statement, "pointsStatement")["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["orderId"] == "kl-1")
        .cloned()
        .unwrap();
    assert_eq!(row["title"], "视频生成-kl-1", "{statement}");
    // And the ts money page's consumption row, as the old deduct wrote it.
    let money = app
        .gql(
            &app.admin,
            "query($u: Int!) { financialTransactions(userId: $u) { nodes { orderId title money transactionType payType isCash } } }",
            json!({ "u": u }),
        )
        .await;
    let charge: Vec<&Value> = data(&money, "financialTransactions")["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["orderId"] == "kl-1")
        .collect();
    assert_eq!(
        charge,
        vec![
            &json!({ "orderId": "kl-1", "title": "视频生成-kl-1", "money": -30,
                      "transactionType": 1, "payType": 0, "isCash": false })
        ],
        "{money}"
    );
    // A keyless refund, retried: one row.
    let refund = "mutation { refund(input: { sourceType: FAL, sourceId: \"kl-1\", amount: 10 }) { id amount balanceAfter } }";
    let first = app.gql(&app.service, refund, json!({})).await;
    let again = app.gql(&app.service, refund, json!({})).await;
    assert_eq!(
        data(&first, "refund"),
        data(&again, "refund"),
        "{first} {again}"
    );
    assert_eq!(data(&first, "refund")["balanceAfter"], 80);
    // The same job's keyless refund with other figures is a conflict.
    let other = app
        .gql(
            &app.service,
            "mutation { refund(input: { sourceType: FAL, sourceId: \"kl-1\", amount: 5 }) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(code(&other), Some("IDEMPOTENCY_CONFLICT"), "{other}");
    assert_eq!(app.balance(u).await, 80);
    // Lookup by mjk uuid: services find anyone, users only themselves.
    let uuid = app
        .gql(
            &app.admin,
            "query($u: Int!) { user(id: $u) { uuid } }",
            json!({ "u": u }),
        )
        .await;
    let uuid = data(&uuid, "user")["uuid"].as_str().unwrap().to_owned();
    let q = "query($x: UUID!) { userByUuid(uuid: $x) { id balance } }";
    let found = app.gql(&app.service, q, json!({ "x": uuid })).await;
    assert_eq!(data(&found, "userByUuid")["id"], u, "{found}");
    let own = app.gql(&app.user_token(u), q, json!({ "x": uuid })).await;
    assert_eq!(data(&own, "userByUuid")["id"], u, "{own}");
    let other_user = app.create_user("someone else").await;
    let foreign = app
        .gql(&app.user_token(other_user), q, json!({ "x": uuid }))
        .await;
    assert_eq!(code(&foreign), Some("FORBIDDEN"), "{foreign}");
    let nobody = uuid::Uuid::new_v4().to_string();
    let missing = app.gql(&app.service, q, json!({ "x": nobody })).await;
    assert!(
        missing["errors"].is_null() && missing["data"]["userByUuid"].is_null(),
        "{missing}"
    );
    let probe = app
        .gql(&app.user_token(other_user), q, json!({ "x": nobody }))
        .await;
    assert_eq!(
        code(&probe),
        Some("FORBIDDEN"),
        "a user cannot tell absent from foreign: {probe}"
    );
    app.assert_verify_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyless_refunds_sqlite() {
    keyless_refunds_titles_and_uuid_lookups(Engine::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyless_refunds_postgres() {
    keyless_refunds_titles_and_uuid_lookups(Engine::Postgres).await
}

/// Given points go before bought ones expiring alike, as the ts platform's
/// old `deduct_user_money_by_id` spent them; a consume written in the
/// order before (bought first) is still a consume `verify` accepts.
async fn gift_points_are_spent_first(engine: Engine) {
    let app = spawn_with(engine, |_| {}).await;
    let u = app.create_user("gift-first").await;
    app.recharge(u, 100, "gf-paid", None).await;
    let gift = app
        .gql(
            &app.service,
            "mutation($u: Int!) { recharge(input: { userId: $u, amount: 50, orderId: \"gf-gift\", kind: GIFT }) { id } }",
            json!({ "u": u }),
        )
        .await;
    assert!(gift["errors"].is_null(), "{gift}");
    let c = app.consume(u, 70, "script", "gf-1", None).await;
    assert!(c["errors"].is_null(), "{c}");
    let split = app
        .gql(
            &app.admin,
            "query($u: Int!) { user(id: $u) { paid gift balance } }",
            json!({ "u": u }),
        )
        .await;
    assert_eq!(
        data(&split, "user"),
        &json!({ "paid": 80, "gift": 0, "balance": 80 }),
        "{split}"
    );
    app.assert_verify_clean().await;
    // The same consume as the order before would have drawn it: the paid
    // batch's allocation first.
    let db = &app.db;
    let swap =
        |sql: &str| sea_orm::Statement::from_string(db.get_database_backend(), sql.to_owned());
    use sea_orm::ConnectionTrait;
    db.execute_raw(swap(
        "UPDATE gw_point_allocations SET id = id + 1000 WHERE entry_id = \
         (SELECT id FROM mjk_point_transactions WHERE source_id = 'gf-1') \
         AND batch_id = (SELECT id FROM gw_point_batches WHERE order_id = 'gf-gift')",
    ))
    .await
    .unwrap();
    app.assert_verify_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gift_first_sqlite() {
    gift_points_are_spent_first(Engine::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gift_first_postgres() {
    gift_points_are_spent_first(Engine::Postgres).await
}

/// Hostile source types and titles: refused as `INVALID_INPUT` before any
/// write, a huge name costs no more than a short one, and a flood of
/// unknown names reads the configured list at most about once a second,
/// not once per request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_source_types_and_long_titles_cost_little_and_write_nothing() {
    let app = spawn_with(Engine::Sqlite, |_| {}).await;
    let u = app.create_user("hostile").await;
    app.recharge(u, 100, "hostile-r", None).await;
    let rows = app.count("mjk_point_transactions").await;
    let huge = "a".repeat(200_000);
    let r = consume_as(&app, &app.service, u, &huge, "h-1").await;
    let shown: String = r.to_string().chars().take(200).collect();
    assert_eq!(code(&r), Some("INVALID_INPUT"), "{shown}");
    assert!(
        !r.to_string().contains(&huge[..1000]),
        "the name is not echoed back"
    );
    let long_title = app
        .gql(
            &app.service,
            CONSUME,
            json!({ "u": u, "a": 1, "s": "script", "id": "h-2", "t": "标".repeat(256) }),
        )
        .await;
    assert_eq!(code(&long_title), Some("INVALID_INPUT"), "{long_title}");
    let before = app.store.statements();
    let started = std::time::Instant::now();
    for i in 0..40 {
        let r = consume_as(&app, &app.service, u, &format!("nope_{i}"), "h-3").await;
        assert_eq!(code(&r), Some("INVALID_INPUT"), "{r}");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let reads = app.store.statements() - before;
    // One read of the list per second of the flood at most (plus one).
    assert!(
        (reads as f64) <= elapsed.ceil() + 1.0,
        "{reads} statements for 40 unknown names in {elapsed:.2} s"
    );
    assert_eq!(app.count("mjk_point_transactions").await, rows);
}

/// A refusal sent before the body was read closes the connection and says
/// so (`Connection: close`), so a pooling client never sends its next
/// request on a socket the gateway is closing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_before_the_body_is_read_say_the_connection_closes() {
    let app = spawn_with(Engine::Sqlite, |s| s.rates.service = 1.0).await;
    let busy = named(&app, Role::Service, "busy");
    let mut limited = None;
    for _ in 0..6 {
        let r = app.post_raw(Some(&busy), "{ sourceTypes { name } }").await;
        if r.status() == 429 {
            limited = Some(r);
            break;
        }
        assert_eq!(
            r.headers().get("connection"),
            None,
            "an answered request keeps its connection"
        );
    }
    let limited = limited.expect("the busy service was limited");
    assert_eq!(
        limited
            .headers()
            .get("connection")
            .map(|v| v.to_str().unwrap()),
        Some("close")
    );
    // Many requests in a row on one pooled client, limited or not: every one
    // gets an answer, none a dropped connection.
    for _ in 0..30 {
        let r = app.post_raw(Some(&busy), "{ sourceTypes { name } }").await;
        assert!(r.status() == 200 || r.status() == 429, "{}", r.status());
    }
}
