//! The per-job reconciliation against fal's billing events, through a
//! local stand-in of `GET /v1/models/billing-events`: every flag, exact
//! totals, the 90-day split, 429 / 403 / 500 per account, a re-run that
//! changes nothing, and the CSV export equal to the GraphQL lines.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{json, Value};

use crate::costs::insert_account;
use crate::fal_standin::{event, later_event, old_event, url_pairs, Billing, StandIn};
use crate::helpers::{code, TestApp};

const LINE_FIELDS: &str = "id accountId at taskId requestId userId endpointId taskStatus \
    chargedPoints refundedPoints taskRefunded ledgerChargedPoints ledgerRefundedPoints \
    costMoneyUsd falCostUsd falCostNanoUsd falEvents falQuantity falUnit marginUsd \
    marginNanoUsd marginPoints flags";

const FLAGS: [&str; 5] = [
    "BILLED_BUT_REFUNDED",
    "CHARGED_NOT_BILLED",
    "UNKNOWN_REQUEST",
    "COST_MISMATCH",
    "NEGATIVE_MARGIN",
];

/// A test on SQLite, PostgreSQL, and PostgreSQL through PgBouncer, each
/// gateway pointed at its own fal stand-in.
macro_rules! with_fal {
    ($name:ident) => {
        mod $name {
            use crate::fal_standin::StandIn;
            use crate::helpers::{spawn_pooled_with, spawn_with, Engine};

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let fal = StandIn::start().await;
                let url = fal.url.clone();
                let app = spawn_with(Engine::Sqlite, |s| s.fal_api_base_url = url).await;
                super::$name(app, fal).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let fal = StandIn::start().await;
                let url = fal.url.clone();
                let app = spawn_with(Engine::Postgres, |s| s.fal_api_base_url = url).await;
                super::$name(app, fal).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres_pgbouncer() {
                let fal = StandIn::start().await;
                let url = fal.url.clone();
                let app = spawn_pooled_with(|s| s.fal_api_base_url = url).await;
                super::$name(app, fal).await
            }
        }
    };
}

with_fal!(every_flag_and_exact_totals);

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().to_utc()
}

fn rfc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A task row as the ts platform writes it (naive local time).
#[allow(clippy::too_many_arguments)]
async fn insert_task(
    app: &TestApp,
    user: i32,
    key: &str,
    task_id: &str,
    request_id: Option<&str>,
    app_name: &str,
    status: &str,
    money: i32,
    cost: f64,
    is_refund: bool,
    at: DateTime<Utc>,
) {
    app.db
        .execute_raw(Statement::from_sql_and_values(
            app.db.get_database_backend(),
            "INSERT INTO ts_fal_tasks (user_id, task_id, online_task_id, app_name, api_key, task_type, status, money, cost_money, is_refund, created_at) \
             VALUES ($1, $2, $3, $4, $5, 'image', $6, $7, $8, $9, $10)",
            [
                user.into(),
                task_id.into(),
                request_id.map(str::to_owned).into(),
                app_name.into(),
                key.into(),
                status.into(),
                money.into(),
                cost.into(),
                (is_refund as i32).into(),
                crate::helpers::platform_time(at).into(),
            ],
        ))
        .await
        .unwrap();
}

/// Starts a reconciliation through the API and waits for its runs to end.
pub(crate) async fn reconcile(
    app: &TestApp,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    accounts: Option<Vec<i32>>,
) -> Vec<Value> {
    let r = app
        .gql(
            &app.admin,
            "mutation($f: DateTime!, $t: DateTime!, $a: [Int!]) { reconcileFalBilling(from: $f, to: $t, accountIds: $a) { id accountId status } }",
            json!({ "f": rfc(from), "t": rfc(to), "a": accounts }),
        )
        .await;
    let started = r["data"]["reconcileFalBilling"]
        .as_array()
        .unwrap_or_else(|| panic!("{r}"))
        .clone();
    let ids: BTreeSet<String> = started
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = app
            .gql(
                &app.admin,
                "{ falBillingRuns(first: 100) { id accountId status pages events lines errorCode error trigger } }",
                json!({}),
            )
            .await;
        let runs: Vec<Value> = r["data"]["falBillingRuns"]
            .as_array()
            .unwrap_or_else(|| panic!("{r}"))
            .iter()
            .filter(|x| ids.contains(x["id"].as_str().unwrap()))
            .cloned()
            .collect();
        if runs.len() == ids.len() && runs.iter().all(|x| x["status"] != "RUNNING") {
            return runs;
        }
        assert!(Instant::now() < deadline, "runs did not end: {runs:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every line of the window (paging through 7 at a time).
pub(crate) async fn all_lines(app: &TestApp, filter: Value) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let r = app
            .gql(
                &app.admin,
                &format!("query($f: FalBillingFilter!, $a: String) {{ falBillingLines(filter: $f, first: 7, after: $a) {{ totalCount pageInfo {{ hasNextPage endCursor }} nodes {{ {LINE_FIELDS} }} }} }}"),
                json!({ "f": filter, "a": after }),
            )
            .await;
        let c = &r["data"]["falBillingLines"];
        out.extend(
            c["nodes"]
                .as_array()
                .unwrap_or_else(|| panic!("{r}"))
                .clone(),
        );
        if c["pageInfo"]["hasNextPage"] != true {
            assert_eq!(c["totalCount"].as_u64().unwrap() as usize, out.len());
            return out;
        }
        after = c["pageInfo"]["endCursor"].as_str().map(str::to_owned);
    }
}

fn flags(line: &Value) -> BTreeSet<String> {
    line["flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_owned())
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

async fn every_flag_and_exact_totals(app: TestApp, fal: Arc<StandIn>) {
    let user = app.create_user("fal-user").await;
    app.recharge(user, 10_000, "fal-float", None).await;
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let key = |n: &str| format!("fal-admin-{n}-{tag}");
    let a = insert_account(&app, "pool-a", &key("a")).await;
    let b = insert_account(&app, "pool-b", &key("b")).await;
    let c = insert_account(&app, "pool-c", &key("c")).await;
    let d = insert_account(&app, "pool-d", &key("d")).await;
    let from = t("2026-01-01T00:00:00Z");
    let to = from + chrono::Duration::days(100);
    let split = from + chrono::Duration::days(90);
    let m = |mins: i64| from + chrono::Duration::minutes(mins);
    let flux = "fal-ai/flux/dev";
    let sora = "fal-ai/sora-2/image-to-video";
    let ka = key("a");
    let task =
        |id: &'static str,
         req: Option<&'static str>,
         app_name: &'static str,
         status: &'static str,
         money: i32,
         cost: f64,
         refund: bool,
         at: DateTime<Utc>| { (id, req, app_name, status, money, cost, refund, at) };
    let a_tasks = vec![
        // Paid and billed at its estimate: nothing to say.
        task(
            "ok",
            Some("req-ok"),
            flux,
            "COMPLETED",
            50,
            0.32,
            false,
            from,
        ),
        // Failed, refunded by the old platform, yet billed (a 422).
        task(
            "billed-refunded",
            Some("req-br"),
            flux,
            "FAILED",
            50,
            0.0,
            true,
            m(10),
        ),
        // Charged; fal has no event.
        task(
            "not-billed",
            Some("req-nb"),
            sora,
            "COMPLETED",
            30,
            0.4,
            false,
            m(20),
        ),
        // Never submitted: charged, no request id at all.
        task("never-ran", None, sora, "IN_QUEUE", 7, 0.0, false, m(25)),
        // The platform's estimate is far off fal's charge.
        task(
            "mismatch",
            Some("req-mm"),
            flux,
            "COMPLETED",
            100,
            0.5,
            false,
            m(30),
        ),
        // Charged less than fal billed.
        task(
            "loss",
            Some("req-loss"),
            flux,
            "COMPLETED",
            2,
            0.045,
            false,
            m(40),
        ),
        // Two events for one request.
        task(
            "twice",
            Some("req-twice"),
            sora,
            "COMPLETED",
            40,
            0.15,
            false,
            m(50),
        ),
        // Billed exactly at the 90-day split.
        task(
            "at-split",
            Some("req-split"),
            sora,
            "COMPLETED",
            80,
            0.8,
            false,
            split - chrono::Duration::minutes(3),
        ),
        // Created a minute before the window ends, billed after it.
        task(
            "late",
            Some("req-late"),
            flux,
            "COMPLETED",
            10,
            0.05,
            false,
            to - chrono::Duration::minutes(1),
        ),
        // Outside the window on either side: never a line of it.
        task(
            "before",
            Some("req-before"),
            flux,
            "COMPLETED",
            10,
            0.05,
            false,
            from - chrono::Duration::hours(1),
        ),
        task(
            "after",
            Some("req-after"),
            flux,
            "COMPLETED",
            10,
            0.05,
            false,
            to,
        ),
    ];
    for (id, req, app_name, status, money, cost, refund, at) in &a_tasks {
        insert_task(
            &app, user, &ka, id, *req, app_name, status, *money, *cost, *refund, *at,
        )
        .await;
    }
    // Charged and refunded through the gateway's ledger, no event: square.
    insert_task(
        &app,
        user,
        &ka,
        "ledger-refunded",
        Some("req-lr"),
        flux,
        "FAILED",
        40,
        0.0,
        false,
        m(60),
    )
    .await;
    let r = app.consume(user, 40, "FAL", "ledger-refunded", None).await;
    assert!(r["errors"].is_null(), "{r}");
    let r = app.refund("FAL", "ledger-refunded", "lr-1", None).await;
    assert!(r["errors"].is_null(), "{r}");
    let iso = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let a_events = vec![
        event("req-ok", flux, &iso(m(1)), 2.0, 320_000_000),
        event("req-br", flux, &iso(m(11)), 1.0, 320_000_000),
        event("req-mm", flux, &iso(m(31)), 1.0, 200_000_000),
        event("req-loss", flux, &iso(m(41)), 1.0, 45_000_000),
        later_event("req-twice", sora, &iso(m(51)), 1.0, 0.1),
        event("req-twice", sora, &iso(m(52)), 0.5, 50_000_001),
        event("req-split", sora, &iso(split), 8.0, 800_000_000),
        event(
            "req-late",
            flux,
            &iso(to + chrono::Duration::minutes(10)),
            1.0,
            25_000_000,
        ),
        // The task created before the window, billed inside it: the
        // earlier window's line, not an unknown request here.
        event("req-before", flux, &iso(m(2)), 1.0, 25_000_000),
        // fal billed requests the platform does not know.
        event("req-ghost", flux, &iso(m(70)), 1.0, 12_345_678),
        event(
            "req-ghost-2",
            sora,
            &iso(split + chrono::Duration::days(2)),
            3.0,
            300_000_000,
        ),
        // Unknown, but billed after the window: the next window's.
        event(
            "req-ghost-late",
            flux,
            &iso(to + chrono::Duration::minutes(5)),
            1.0,
            1,
        ),
    ];
    fal.set_billing(
        &ka,
        Billing::Events {
            events: a_events,
            page: 3,
            limited: 1,
        },
    );
    // Account b answers in the oldest schema.
    let kb = key("b");
    insert_task(
        &app,
        user,
        &kb,
        "old-ok",
        Some("req-old-ok"),
        flux,
        "COMPLETED",
        10,
        0.0015,
        false,
        m(100),
    )
    .await;
    insert_task(
        &app,
        user,
        &kb,
        "old-free",
        Some("req-old-free"),
        flux,
        "COMPLETED",
        0,
        0.0015,
        false,
        m(110),
    )
    .await;
    fal.set_billing(
        &kb,
        Billing::Events {
            events: vec![
                old_event("req-old-ok", flux, &iso(m(101)), 1.5, 1_500_000),
                old_event("req-old-free", flux, &iso(m(111)), 1.5, 1_500_000),
            ],
            page: 10_000,
            limited: 0,
        },
    );
    // Account c's key is not an admin key; d's fal keeps failing.
    insert_task(
        &app,
        user,
        &key("c"),
        "c-job",
        Some("req-c"),
        flux,
        "COMPLETED",
        10,
        0.05,
        false,
        m(5),
    )
    .await;
    insert_task(
        &app,
        user,
        &key("d"),
        "d-job",
        Some("req-d"),
        flux,
        "COMPLETED",
        10,
        0.05,
        false,
        m(5),
    )
    .await;
    fal.set_billing(&key("c"), Billing::Status(403));
    fal.set_billing(&key("d"), Billing::Status(500));

    let runs = reconcile(&app, from, to, None).await;
    let by_account: BTreeMap<i64, &Value> = runs
        .iter()
        .map(|r| (r["accountId"].as_i64().unwrap(), r))
        .collect();
    assert_eq!(by_account[&(a as i64)]["status"], "DONE", "{runs:?}");
    assert_eq!(by_account[&(b as i64)]["status"], "DONE", "{runs:?}");
    for (id, status) in [(c, "403"), (d, "500")] {
        let r = by_account[&(id as i64)];
        assert_eq!(r["status"], "FAILED", "{r}");
        assert_eq!(r["errorCode"], "UPSTREAM_ERROR", "{r}");
        assert!(r["error"].as_str().unwrap().contains(status), "{r}");
        assert_eq!(r["lines"], 0);
    }
    assert!(by_account[&(d as i64)]["error"]
        .as_str()
        .unwrap()
        .contains("after 3 attempts"));
    // a: 12 events over [from, to + 1 day) in pages of 3, across two
    // requests (90 days, then the rest), one 429 first.
    assert_eq!(by_account[&(a as i64)]["events"], 12, "{runs:?}");
    let a_queries = fal.recorded.lock().unwrap().queries[&ka].clone();
    let windows: BTreeSet<(String, String)> = a_queries
        .iter()
        .map(|q| {
            let p = url_pairs(q);
            let get = |k: &str| p.iter().find(|(n, _)| n == k).unwrap().1.clone();
            (get("start"), get("end"))
        })
        .collect();
    assert_eq!(
        windows,
        BTreeSet::from([
            (iso(from), iso(split)),
            (iso(split), iso(to + chrono::Duration::days(1))),
        ])
    );
    assert!(a_queries.iter().all(|q| q.contains("limit=10000")));
    // 429 first, then the pages of both windows.
    let pages = by_account[&(a as i64)]["pages"].as_i64().unwrap() as usize;
    assert_eq!(a_queries.len(), pages + 1);
    assert_eq!(pages, 3 + 2, "{runs:?}");

    // Later reads are local: nothing below asks fal until the re-run.
    let calls_after_pull = fal.calls(&ka);
    let window = json!({ "from": rfc(from), "to": rfc(to) });
    let lines = all_lines(&app, window.clone()).await;
    let by_key: BTreeMap<String, &Value> = lines
        .iter()
        .map(|l| {
            let k = l["taskId"]
                .as_str()
                .or(l["requestId"].as_str())
                .unwrap()
                .to_owned();
            (k, l)
        })
        .collect();
    let expected: Vec<(&str, &[&str])> = vec![
        ("ok", &[]),
        (
            "billed-refunded",
            &["BILLED_BUT_REFUNDED", "COST_MISMATCH", "NEGATIVE_MARGIN"],
        ),
        ("not-billed", &["CHARGED_NOT_BILLED"]),
        ("never-ran", &["CHARGED_NOT_BILLED"]),
        ("mismatch", &["COST_MISMATCH"]),
        ("loss", &["NEGATIVE_MARGIN"]),
        ("twice", &[]),
        ("at-split", &[]),
        ("late", &["COST_MISMATCH"]),
        ("ledger-refunded", &[]),
        ("old-ok", &[]),
        ("old-free", &["BILLED_BUT_REFUNDED", "NEGATIVE_MARGIN"]),
        ("req-ghost", &["UNKNOWN_REQUEST", "NEGATIVE_MARGIN"]),
        ("req-ghost-2", &["UNKNOWN_REQUEST", "NEGATIVE_MARGIN"]),
    ];
    assert_eq!(
        by_key.keys().cloned().collect::<BTreeSet<_>>(),
        expected.iter().map(|(k, _)| k.to_string()).collect(),
        "{lines:#?}"
    );
    for (k, f) in &expected {
        assert_eq!(flags(by_key[*k]), set(f), "{k}: {}", by_key[*k]);
    }
    let raised: BTreeSet<String> = lines.iter().flat_map(flags).collect();
    assert_eq!(raised, set(&FLAGS), "every flag is produced by some case");
    // Figures of single lines.
    let ok = by_key["ok"];
    assert_eq!(ok["falCostNanoUsd"], "320000000");
    assert_eq!(ok["marginNanoUsd"], "180000000");
    assert_eq!(ok["marginPoints"], 18.0);
    assert_eq!(ok["falEvents"], 1);
    assert_eq!(ok["userId"], user);
    let twice = by_key["twice"];
    assert_eq!(twice["falEvents"], 2);
    assert_eq!(twice["falCostNanoUsd"], "150000001");
    let lr = by_key["ledger-refunded"];
    assert_eq!(lr["ledgerChargedPoints"], 40);
    assert_eq!(lr["ledgerRefundedPoints"], 40);
    assert_eq!(lr["refundedPoints"], 40);
    assert_eq!(lr["taskRefunded"], true, "the refund flagged the task");
    assert_eq!(lr["falCostUsd"], Value::Null);
    let br = by_key["billed-refunded"];
    assert_eq!(
        (
            br["refundedPoints"].as_i64(),
            br["ledgerRefundedPoints"].as_i64()
        ),
        (Some(50), Some(0))
    );
    assert_eq!(br["marginNanoUsd"], "-320000000");
    assert_eq!(
        t(by_key["late"]["at"].as_str().unwrap()),
        to - chrono::Duration::minutes(1)
    );
    assert_eq!(by_key["req-ghost"]["taskId"], Value::Null);
    assert_eq!(t(by_key["req-ghost"]["at"].as_str().unwrap()), m(70));
    assert_eq!(by_key["old-ok"]["falCostNanoUsd"], "1500000");

    // Totals: exact integer sums, per account, endpoint and user.
    let nano = |l: &Value, f: &str| {
        l[f].as_str()
            .map(|s| s.parse::<i64>().unwrap())
            .unwrap_or(0)
    };
    let totals = |by: &'static str, filter: Value| {
        let app = &app;
        async move {
            let r = app
                .gql(
                    &app.admin,
                    "query($f: FalBillingFilter!, $b: FalBillingGroup!) { falBillingTotals(filter: $f, by: $b) { accountId endpointId userId lines taskCount falEvents chargedPoints refundedPoints falCostNanoUsd marginNanoUsd falCostUsd flagged { flag lines } } }",
                    json!({ "f": filter, "b": by }),
                )
                .await;
            r["data"]["falBillingTotals"]
                .as_array()
                .unwrap_or_else(|| panic!("{r}"))
                .clone()
        }
    };
    let per_account = totals("ACCOUNT", window.clone()).await;
    assert_eq!(per_account.len(), 2, "{per_account:?}");
    for t in &per_account {
        let mine: Vec<&Value> = lines
            .iter()
            .filter(|l| l["accountId"] == t["accountId"])
            .collect();
        assert_eq!(t["lines"].as_u64().unwrap() as usize, mine.len());
        let fal_sum: i64 = mine.iter().map(|l| nano(l, "falCostNanoUsd")).sum();
        let margin_sum: i64 = mine.iter().map(|l| nano(l, "marginNanoUsd")).sum();
        assert_eq!(t["falCostNanoUsd"], fal_sum.to_string());
        assert_eq!(t["marginNanoUsd"], margin_sum.to_string());
        for fc in t["flagged"].as_array().unwrap() {
            let n = mine
                .iter()
                .filter(|l| flags(l).contains(fc["flag"].as_str().unwrap()))
                .count();
            assert_eq!(fc["lines"].as_u64().unwrap() as usize, n, "{t}");
        }
    }
    let a_total = per_account.iter().find(|t| t["accountId"] == a).unwrap();
    // 320000000 ×2 + 200000000 + 45000000 + 150000001 + 800000000 +
    // 25000000 + 12345678 + 300000000 (req-before is not this window's).
    assert_eq!(a_total["falCostNanoUsd"], "2172345679");
    // Per endpoint of each account: the cost report's counts and points.
    for acc in [a, b] {
        let r = app
            .gql(
                &app.admin,
                "query($f: DateTime!, $t: DateTime!, $a: [Int!]) { accountCosts(from: $f, to: $t, accountIds: $a) { taskCount chargedPoints refundedPoints byEndpoint { appName taskCount chargedPoints refundedPoints } } }",
                json!({ "f": rfc(from), "t": rfc(to), "a": [acc] }),
            )
            .await;
        let report = &r["data"]["accountCosts"][0];
        let mut f = window.clone();
        f["accountIds"] = json!([acc]);
        let ours = totals("ENDPOINT", f).await;
        let report_rows: BTreeMap<String, (i64, i64, i64)> = report["byEndpoint"]
            .as_array()
            .unwrap_or_else(|| panic!("{r}"))
            .iter()
            .map(|e| {
                (
                    e["appName"].as_str().unwrap().to_owned(),
                    (
                        e["taskCount"].as_i64().unwrap(),
                        e["chargedPoints"].as_i64().unwrap(),
                        e["refundedPoints"].as_i64().unwrap(),
                    ),
                )
            })
            .collect();
        let our_rows: BTreeMap<String, (i64, i64, i64)> = ours
            .iter()
            .filter(|e| e["taskCount"].as_i64().unwrap() > 0)
            .map(|e| {
                (
                    e["endpointId"].as_str().unwrap().to_owned(),
                    (
                        e["taskCount"].as_i64().unwrap(),
                        e["chargedPoints"].as_i64().unwrap(),
                        e["refundedPoints"].as_i64().unwrap(),
                    ),
                )
            })
            .collect();
        assert_eq!(our_rows, report_rows, "account {acc}");
    }
    let per_user = totals("USER", window.clone()).await;
    let users: BTreeSet<Option<i64>> = per_user.iter().map(|u| u["userId"].as_i64()).collect();
    assert_eq!(users, BTreeSet::from([None, Some(user as i64)]));
    // Lowest margin first: the unknown requests (no user) lose money.
    assert_eq!(per_user[0]["userId"], Value::Null);

    // Filters: by flag, user, endpoint, account.
    let mut f = window.clone();
    f["flags"] = json!(["UNKNOWN_REQUEST"]);
    let unknown = all_lines(&app, f).await;
    assert_eq!(
        unknown
            .iter()
            .map(|l| l["requestId"].as_str().unwrap())
            .collect::<BTreeSet<_>>(),
        BTreeSet::from(["req-ghost", "req-ghost-2"])
    );
    let mut f = window.clone();
    f["flags"] = json!(["CHARGED_NOT_BILLED", "BILLED_BUT_REFUNDED"]);
    assert_eq!(all_lines(&app, f).await.len(), 4);
    let mut f = window.clone();
    f["endpointId"] = json!(sora);
    f["accountIds"] = json!([a]);
    assert_eq!(all_lines(&app, f).await.len(), 5);
    let mut f = window.clone();
    f["userId"] = json!(user);
    assert_eq!(all_lines(&app, f).await.len(), 12);

    // The CSV export: the same lines, field for field.
    let csv = app
        .client
        .get(format!("{}/admin/fal-billing.csv", app.url))
        .query(&[("from", rfc(from)), ("to", rfc(to))])
        .bearer_auth(&app.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(csv.status(), 200);
    assert!(csv.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let text = csv.text().await.unwrap();
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(header.join(" "), LINE_FIELDS);
    let records: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
    assert_eq!(records.len(), lines.len());
    for (rec, line) in records.iter().zip(&lines) {
        for (name, cell) in header.iter().zip(rec.iter()) {
            let v = &line[name.as_str()];
            let same = match v {
                Value::Null => cell.is_empty(),
                Value::String(s) if name == "at" => t(s) == t(cell),
                Value::String(s) => s == cell,
                Value::Number(n) => cell.parse::<f64>().ok() == n.as_f64(),
                Value::Bool(b) => cell == b.to_string(),
                Value::Array(a) => {
                    a.iter()
                        .map(|x| x.as_str().unwrap())
                        .collect::<Vec<_>>()
                        .join("|")
                        == cell
                }
                Value::Object(_) => false,
            };
            assert!(same, "{name}: CSV {cell:?} vs GraphQL {v}");
        }
    }
    // Only admins export; bad parameters are refused with codes.
    let refused = |token: Option<String>, query: Vec<(&'static str, String)>| {
        let app = &app;
        async move {
            let mut req = app
                .client
                .get(format!("{}/admin/fal-billing.csv", app.url))
                .query(&query);
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap();
            (status, code(&body).unwrap_or_default().to_owned())
        }
    };
    let q = || vec![("from", rfc(from)), ("to", rfc(to))];
    assert_eq!(refused(None, q()).await, (401, "UNAUTHENTICATED".into()));
    assert_eq!(
        refused(Some(app.service.clone()), q()).await,
        (403, "FORBIDDEN".into())
    );
    assert_eq!(
        refused(
            Some(app.admin.clone()),
            vec![("from", rfc(to)), ("to", rfc(from))]
        )
        .await,
        (400, "INVALID_INPUT".into())
    );
    let mut bad_flag = q();
    bad_flag.push(("flag", "LOSS".into()));
    assert_eq!(
        refused(Some(app.admin.clone()), bad_flag).await,
        (400, "INVALID_INPUT".into())
    );

    // GraphQL refusals: a service token, a reversed or too-long window.
    let r = app
        .gql(
            &app.service,
            "query($f: FalBillingFilter!) { falBillingLines(filter: $f) { totalCount } }",
            json!({ "f": window }),
        )
        .await;
    assert_eq!(code(&r), Some("FORBIDDEN"), "{r}");
    let r = app
        .gql(
            &app.admin,
            "mutation($f: DateTime!, $t: DateTime!) { reconcileFalBilling(from: $f, to: $t) { id } }",
            json!({ "f": rfc(from), "t": rfc(from + chrono::Duration::days(400)) }),
        )
        .await;
    assert_eq!(code(&r), Some("LIMIT_EXCEEDED"), "{r}");
    let r = app
        .gql(
            &app.service,
            "mutation($f: DateTime!, $t: DateTime!) { reconcileFalBilling(from: $f, to: $t) { id } }",
            json!({ "f": rfc(from), "t": rfc(to) }),
        )
        .await;
    assert_eq!(code(&r), Some("FORBIDDEN"), "{r}");

    assert_eq!(fal.calls(&ka), calls_after_pull, "reads went to fal");

    // A re-run replaces the window's lines exactly: the same lines, no
    // duplicate; the failed accounts still have none.
    let strip = |ls: &[Value]| -> Vec<Value> {
        let mut v: Vec<Value> = ls
            .iter()
            .map(|l| {
                let mut l = l.clone();
                l.as_object_mut().unwrap().remove("id");
                l
            })
            .collect();
        v.sort_by_key(|l| l.to_string());
        v
    };
    let again = reconcile(&app, from, to, None).await;
    assert_eq!(again.iter().filter(|r| r["status"] == "DONE").count(), 2);
    let relines = all_lines(&app, window.clone()).await;
    assert_eq!(strip(&relines), strip(&lines));
    // The staged rows of replaced runs are gone: one run's lines per account.
    let stored: i64 = {
        let r = app
            .db
            .query_one_raw(Statement::from_string(
                app.db.get_database_backend(),
                "SELECT COUNT(*) AS n FROM gw_fal_billing_lines",
            ))
            .await
            .unwrap()
            .unwrap();
        r.try_get("", "n").unwrap()
    };
    assert_eq!(stored as usize, lines.len());
    // A narrower re-run (one account, one day) replaces only its own lines.
    let day = reconcile(&app, from, from + chrono::Duration::days(1), Some(vec![a])).await;
    assert_eq!(day[0]["status"], "DONE", "{day:?}");
    assert_eq!(strip(&all_lines(&app, window.clone()).await), strip(&lines));

    // Progress is visible in the metrics; the keys appear nowhere.
    assert!(
        app.metric("gateway_fal_billing_total", &[("what", "pages")])
            .await
            .unwrap()
            >= 12.0
    );
    assert!(
        app.metric("gateway_fal_billing_total", &[("what", "runs_failed")])
            .await
            .unwrap()
            >= 4.0
    );
    let everything = format!(
        "{runs:?}{lines:?}{text}{:?}",
        totals("ACCOUNT", window.clone()).await
    );
    for k in ["a", "b", "c", "d"] {
        assert!(!everything.contains(&key(k)), "a fal key leaked");
    }
}

/// A PostgreSQL database both legacy systems built with their own ORMs
/// (tasks in naive Asia/Shanghai time, `cost_money` a float4), adopted,
/// then reconciled by `points-gateway reconcile-fal` over a window whose
/// ends are two tasks' creation instants: the first task is in, the last
/// out, whatever the zone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_database_reconciles_on_local_time_boundaries() {
    use crate::adopt::legacy_postgres;
    use crate::process::{cli, cli_with};
    let (url, _pg, _psycopg) = legacy_postgres().await;
    let (success, out) = cli(&url, &["adopt", "--apply", "--opening-balance", "sum"]);
    assert!(success, "{out}");
    let db = sea_orm::Database::connect(&url).await.unwrap();
    let backend = db.get_database_backend();
    // The platform's tasks as written: naive local times, as text.
    let rows = db
        .query_all_raw(Statement::from_string(
            backend,
            "SELECT t.task_id, t.online_task_id, t.api_key, a.id AS account_id, t.money, t.is_refund, \
               CAST(CAST(t.cost_money AS NUMERIC) AS DOUBLE PRECISION) AS cost, \
               to_char(t.created_at, 'YYYY-MM-DD\"T\"HH24:MI:SS.US') AS created, \
               to_char(COALESCE(t.completed_at, t.created_at), 'YYYY-MM-DD\"T\"HH24:MI:SS.US') AS done \
             FROM ts_fal_tasks t JOIN ts_fal_account a ON a.api_key = t.api_key \
             ORDER BY t.created_at, t.id",
        ))
        .await
        .unwrap();
    struct Job {
        task_id: String,
        request_id: String,
        key: String,
        money: i32,
        refunded: bool,
        cost_nano: i64,
        created: chrono::NaiveDateTime,
        done: chrono::NaiveDateTime,
    }
    let jobs: Vec<Job> = rows
        .iter()
        .map(|r| {
            let naive = |c: &str| {
                chrono::NaiveDateTime::parse_from_str(
                    &r.try_get::<String>("", c).unwrap(),
                    "%Y-%m-%dT%H:%M:%S%.f",
                )
                .unwrap()
            };
            Job {
                task_id: r.try_get("", "task_id").unwrap(),
                request_id: r.try_get("", "online_task_id").unwrap(),
                key: r.try_get("", "api_key").unwrap(),
                money: r.try_get("", "money").unwrap(),
                refunded: r.try_get::<i32>("", "is_refund").unwrap() == 1,
                cost_nano: (r.try_get::<f64>("", "cost").unwrap() * 1e9).round() as i64,
                created: naive("created"),
                done: naive("done"),
            }
        })
        .collect();
    assert!(jobs.len() > 40, "fill.py wrote {} tasks", jobs.len());
    let zone = chrono_tz::Asia::Shanghai;
    let utc = |n: chrono::NaiveDateTime| {
        use chrono::TimeZone;
        zone.from_local_datetime(&n).earliest().unwrap().to_utc()
    };
    // The window: from the 10th task's creation to the 30th's.
    let (first, last) = (&jobs[10], &jobs[30]);
    assert!(first.created < last.created);
    let (from, to) = (utc(first.created), utc(last.created));
    let inside: BTreeSet<&str> = jobs
        .iter()
        .filter(|j| j.created >= first.created && j.created < last.created)
        .map(|j| j.task_id.as_str())
        .collect();
    // Read as UTC (the mistake), the window would miss the first task.
    let shifted: BTreeSet<&str> = jobs
        .iter()
        .filter(|j| {
            let as_utc = j.created.and_utc();
            as_utc >= from && as_utc < to
        })
        .map(|j| j.task_id.as_str())
        .collect();
    assert!(inside.contains(first.task_id.as_str()) && !inside.contains(last.task_id.as_str()));
    assert_ne!(inside, shifted, "the window must tell local time from UTC");
    // fal billed every job that cost something, when it completed (UTC on
    // fal's side); half the keys answer in the oldest schema.
    let fal = StandIn::start().await;
    let all_keys: Vec<String> = db
        .query_all_raw(Statement::from_string(
            backend,
            "SELECT api_key FROM ts_fal_account",
        ))
        .await
        .unwrap()
        .iter()
        .map(|r| r.try_get("", "api_key").unwrap())
        .collect();
    // Accounts without a job answer with no events.
    let keys: BTreeSet<&str> = all_keys.iter().map(String::as_str).collect();
    for (i, k) in keys.iter().enumerate() {
        let events: Vec<Value> = jobs
            .iter()
            .filter(|j| j.key == *k && j.cost_nano > 0)
            .map(|j| {
                let at = utc(j.done).to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
                if i % 2 == 0 {
                    event(&j.request_id, "fal-ai/flux/dev", &at, 1.0, j.cost_nano)
                } else {
                    old_event(&j.request_id, "fal-ai/flux/dev", &at, 1.0, j.cost_nano)
                }
            })
            .collect();
        fal.set_billing(
            k,
            Billing::Events {
                events,
                page: 5,
                limited: 0,
            },
        );
    }
    let (success, out) = cli_with(
        &url,
        &[
            "reconcile-fal",
            "--from",
            &rfc_micros(from),
            "--to",
            &rfc_micros(to),
        ],
        &[("FAL_API_BASE_URL", &fal.url), ("FAL_MAX_ATTEMPTS", "2")],
    );
    assert!(success, "{out}");
    assert!(out.contains("done"), "{out}");
    for k in &keys {
        assert!(!out.contains(k), "a fal key in the output");
    }
    // The lines, through a gateway on the same database.
    let app = crate::helpers::spawn_on(url.clone(), tempfile::tempdir().unwrap()).await;
    let lines = all_lines(
        &app,
        json!({ "from": rfc_micros(from), "to": rfc_micros(to) }),
    )
    .await;
    let got: BTreeSet<&str> = lines
        .iter()
        .map(|l| l["taskId"].as_str().unwrap())
        .collect();
    assert_eq!(got, inside);
    let by_task: BTreeMap<&str, &Job> = jobs.iter().map(|j| (j.task_id.as_str(), j)).collect();
    for l in &lines {
        let j = by_task[l["taskId"].as_str().unwrap()];
        assert_eq!(t(l["at"].as_str().unwrap()), utc(j.created), "{l}");
        assert_eq!(l["chargedPoints"], j.money);
        let f = flags(l);
        let billed = j.cost_nano > 0;
        assert!(
            !f.contains("UNKNOWN_REQUEST") && !f.contains("COST_MISMATCH"),
            "{l}"
        );
        assert_eq!(
            f.contains("CHARGED_NOT_BILLED"),
            !billed && !j.refunded && j.money > 0,
            "{l}"
        );
        assert_eq!(
            f.contains("BILLED_BUT_REFUNDED"),
            billed && (j.refunded || j.money == 0),
            "{l}"
        );
        if billed {
            assert_eq!(l["falCostNanoUsd"], j.cost_nano.to_string(), "{l}");
        }
    }
    // The first task is in, and billed jobs of tasks outside the window
    // (fetched with the late events) are not unknown requests here.
    assert!(got.contains(first.task_id.as_str()));
}

fn rfc_micros(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// `FAL_RECONCILE_EVERY_SECS` pulls the last days by itself; a refund made
/// after a pull shows at the next one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schedule_keeps_the_last_days_current() {
    let fal = StandIn::start().await;
    let url = fal.url.clone();
    let app = crate::helpers::spawn_with(crate::helpers::Engine::Sqlite, |s| {
        s.fal_api_base_url = url;
        s.fal_reconcile_every_secs = 1;
        s.fal_reconcile_days = 2;
    })
    .await;
    let user = app.create_user("scheduled").await;
    let key = format!("fal-admin-s-{}", uuid::Uuid::new_v4().simple());
    let account = insert_account(&app, "pool-s", &key).await;
    let now = chrono::Utc::now();
    let created = now - chrono::Duration::hours(1);
    insert_task(
        &app,
        user,
        &key,
        "s-job",
        Some("req-s"),
        "fal-ai/flux/dev",
        "FAILED",
        20,
        0.04,
        false,
        created,
    )
    .await;
    // Three days old: outside what the schedule covers.
    insert_task(
        &app,
        user,
        &key,
        "s-old",
        None,
        "fal-ai/flux/dev",
        "COMPLETED",
        20,
        0.0,
        false,
        now - chrono::Duration::days(3),
    )
    .await;
    fal.set_billing(
        &key,
        Billing::Events {
            events: vec![event(
                "req-s",
                "fal-ai/flux/dev",
                &rfc(created + chrono::Duration::seconds(20)),
                1.0,
                40_000_000,
            )],
            page: 100,
            limited: 0,
        },
    );
    let window = json!({ "from": rfc(now - chrono::Duration::days(5)), "to": rfc(now + chrono::Duration::minutes(1)) });
    let wait_for = |want: &'static [&'static str]| {
        let (app, window) = (&app, window.clone());
        async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                // One page, no `totalCount`: the schedule publishes between
                // any two statements, so a separate count may disagree.
                let r = app
                    .gql(
                        &app.admin,
                        &format!("query($f: FalBillingFilter!) {{ falBillingLines(filter: $f, first: 100) {{ nodes {{ {LINE_FIELDS} }} }} }}"),
                        json!({ "f": window }),
                    )
                    .await;
                let lines = r["data"]["falBillingLines"]["nodes"]
                    .as_array()
                    .unwrap_or_else(|| panic!("{r}"))
                    .clone();
                if lines.len() == 1 && flags(&lines[0]) == set(want) {
                    return lines;
                }
                assert!(
                    Instant::now() < deadline,
                    "no scheduled pull gave {want:?}: {lines:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    // Charged, and billed by fal: a paid job.
    let lines = wait_for(&[]).await;
    assert_eq!(lines[0]["taskId"], "s-job");
    // The platform refunds the failed job afterwards: the next pull says
    // fal billed a refunded job.
    app.db
        .execute_raw(Statement::from_string(
            app.db.get_database_backend(),
            "UPDATE ts_fal_tasks SET is_refund = 1 WHERE task_id = 's-job'",
        ))
        .await
        .unwrap();
    wait_for(&["BILLED_BUT_REFUNDED", "NEGATIVE_MARGIN"]).await;
    let r = app
        .gql(
            &app.admin,
            "{ falBillingRuns(first: 100) { trigger status accountId } }",
            json!({}),
        )
        .await;
    let runs = r["data"]["falBillingRuns"].as_array().unwrap();
    assert!(runs.len() >= 2, "{r}");
    assert!(
        runs.iter()
            .all(|x| x["trigger"] == "schedule" && x["accountId"] == account),
        "{r}"
    );
}

/// The CSV export of 400,000 lines (about 100 MB) streams: after a small
/// export has set up the working set, the server's own memory (its
/// anonymous resident pages, read from /proc after every chunk received)
/// grows by less than a quarter of the body and does not trend upwards.
/// (Measured: 2–16 MB over the warmed 49–51 MB, falling towards the end.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_export_streams_in_bounded_memory() {
    use crate::process::{token, Gateway};
    // Two pooled connections: SQLite's page cache is per connection (2 MB
    // each by default), part of the working set measured here.
    let (gw, dir) = Gateway::on_sqlite(&[("RUST_LOG", "warn"), ("DB_MAX_CONNECTIONS", "2")]).await;
    let url = crate::helpers::database_url(crate::helpers::Engine::Sqlite, &dir).await;
    let db = sea_orm::Database::connect(&url).await.unwrap();
    for sql in [
        "INSERT INTO gw_fal_billing_runs (account_id, from_us, to_us, trigger, status, started_us) \
         VALUES (1, 0, 4000000000000000, 'cli', 'done', 0)",
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 400000) \
         INSERT INTO gw_fal_billing_lines (run_id, account_id, at_us, task_row_id, task_id, request_id, \
           user_id, endpoint_id, task_status, charged_points, refunded_points, task_refunded, \
           ledger_charged, ledger_refunded, cost_money_nano, fal_cost_nano, fal_events, fal_quantity, \
           fal_unit, margin_nano, flags) \
         SELECT (SELECT MAX(id) FROM gw_fal_billing_runs), 1, 1790000000000000 + i * 1000000, i, \
           'task-' || i, 'request-' || i || '-80e732af-660e-45cd-bd63-580e4f2a94cc', i % 500, \
           'fal-ai/kling-video/v2.5-turbo/pro/image-to-video', 'COMPLETED', 50, 0, 0, 0, 0, \
           320000000, 320000000 + i, 1, 8.0, 'seconds', 180000000 - i, 0 FROM n",
    ] {
        db.execute_unprepared(sql).await.unwrap();
    }
    // A small export first (two hours, 7,200 lines): the working set of
    // any export (statements, caches, buffers) is then in place.
    let warm = reqwest::Client::new()
        .get(format!("{}/admin/fal-billing.csv", gw.url))
        .query(&[
            ("from", "2026-09-21T14:13:21Z"),
            ("to", "2026-09-21T16:13:21Z"),
        ])
        .bearer_auth(token(points_gateway::auth::Role::Admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        warm.lines().count(),
        7_201,
        "{}",
        &warm[..200.min(warm.len())]
    );
    let before = gw.status_kib("RssAnon:");
    let mut resp = reqwest::Client::new()
        .get(format!("{}/admin/fal-billing.csv", gw.url))
        .query(&[
            ("from", "2026-01-01T00:00:00Z"),
            ("to", "2027-01-01T00:00:00Z"),
        ])
        .bearer_auth(token(points_gateway::auth::Role::Admin))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (mut bytes, mut newlines, mut peak) = (0usize, 0usize, before);
    // The most memory seen while each quarter of the body went out.
    let mut quarters = [0u64; 4];
    while let Some(chunk) = resp.chunk().await.unwrap() {
        bytes += chunk.len();
        newlines += chunk.iter().filter(|b| **b == b'\n').count();
        let anon = gw.status_kib("RssAnon:");
        peak = peak.max(anon);
        let q = (bytes / (25 << 20)).min(3);
        quarters[q] = quarters[q].max(anon);
    }
    assert_eq!(newlines, 400_001, "the header and every line");
    assert!(bytes > 90 << 20, "{bytes} bytes");
    eprintln!("anon {before} KiB before, most per quarter {quarters:?} KiB; {bytes} bytes");
    let grown = (peak.saturating_sub(before) as usize) * 1024;
    assert!(
        grown < bytes / 4,
        "the server grew {grown} bytes while sending {bytes}"
    );
    // No trend: the last quarter needs no more than the second.
    assert!(
        quarters[3] <= quarters[1] + (12 << 10),
        "memory kept growing: {quarters:?} KiB"
    );
}
