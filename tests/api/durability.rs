//! Acknowledged means durable after an engine fault: the real binary on a
//! SQLite file whose disk fills up, then has room again.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use points_gateway::auth::Role;
use serde_json::{json, Value};

use crate::helpers::code;
use crate::process::{token, Gateway};

/// A tmpfs of its own, unmounted when dropped. CI runs as root, where
/// `mount -t tmpfs` works; elsewhere the test fails saying so rather than
/// passing without having run.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "mounting a tmpfs needs root (CI runs as root)");
        SmallDisk { dir }
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a filler file until the disk refuses another byte.
    fn fill(&self) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.path("filler")).unwrap();
        for chunk in [65536, 4096, 512, 1] {
            let buf = vec![7u8; chunk];
            while f.write_all(&buf).is_ok() {}
        }
        let _ = f.sync_all();
    }

    fn free(&self) {
        std::fs::remove_file(self.path("filler")).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// A service's request; a transport failure becomes `{"transport": …}`.
async fn post(client: &reqwest::Client, url: &str, query: &str, variables: Value) -> Value {
    crate::process::post(client, url, &token(Role::Service), query, variables)
        .await
        .unwrap_or_else(|e| json!({ "transport": e.to_string() }))
}

const CONSUME: &str = "mutation($k: String!, $n: String) { consume(input: {userId: 1, amount: 1, \
     sourceType: SCRIPT, sourceId: $k, note: $n}) { id balanceAfter } }";

/// Sends one consume; `Some(true)` acknowledged, `Some(false)` refused
/// with a code, `None` no answer.
async fn consume(client: &reqwest::Client, url: &str, key: &str) -> Option<bool> {
    let note = "x".repeat(200);
    let r = post(client, url, CONSUME, json!({"k": key, "n": note})).await;
    if r["data"]["consume"]["id"].is_string() {
        Some(true)
    } else if code(&r).is_some() {
        Some(false)
    } else {
        None
    }
}

fn stop(mut gw: Gateway) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(gw.child.id().to_string())
        .status();
    let _ = gw.child.wait();
}

/// SQLite on a full disk: every acknowledged consume is on disk after a
/// restart, every refused one is not, the gateway recovers by itself once
/// the disk has room, and `verify` is clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_disk_never_turns_an_acknowledged_write_into_a_lost_one() {
    let disk = SmallDisk::mount("16m");
    let url = format!("sqlite://{}?mode=rwc", disk.path("gw.sqlite").display());
    let gw = Gateway::start(&url, &[("DB_MAX_CONNECTIONS", "4")], Stdio::null());
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(40))
        .build()
        .unwrap();
    let r = post(
        &client,
        &gw.url,
        "mutation { createUser(input: {name: \"disk\"}) { id } }",
        json!({}),
    )
    .await;
    assert_eq!(r["data"]["createUser"]["id"], 1, "{r}");
    let r = post(
        &client,
        &gw.url,
        "mutation { recharge(input: {userId: 1, amount: 1000000, orderId: \"o1\", kind: GIFT}) { id } }",
        json!({}),
    )
    .await;
    assert!(r["data"]["recharge"]["id"].is_string(), "{r}");

    disk.fill();
    let mut acked = BTreeSet::new();
    let mut refused = BTreeSet::new();
    let mut unknown = BTreeSet::new();
    // Writers in parallel, as services send them, until well past the
    // first refusal.
    let mut n = 0;
    while n < 400 && refused.len() < 120 {
        let batch: Vec<String> = (n..n + 8).map(|i| format!("full-{i}")).collect();
        n += 8;
        let answers =
            futures_util::future::join_all(batch.iter().map(|k| consume(&client, &gw.url, k)))
                .await;
        for (k, a) in batch.into_iter().zip(answers) {
            match a {
                Some(true) => acked.insert(k),
                Some(false) => refused.insert(k),
                None => unknown.insert(k),
            };
        }
    }
    assert!(
        refused.len() >= 20,
        "the full disk refused writes ({} acked, {} refused)",
        acked.len(),
        refused.len()
    );

    // Room again: the gateway recovers by itself (no restart).
    disk.free();
    let mut recovered = false;
    for i in 0..50 {
        let k = format!("after-{i}");
        match consume(&client, &gw.url, &k).await {
            Some(true) => {
                acked.insert(k);
                recovered = true;
            }
            Some(false) => {
                assert!(!recovered, "a refusal after recovery: {k}");
                refused.insert(k);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            None => {
                unknown.insert(k);
            }
        }
    }
    assert!(recovered, "writes succeed again once the disk has room");
    eprintln!(
        "full disk: {} acknowledged, {} refused, {} unanswered",
        acked.len(),
        refused.len(),
        unknown.len()
    );
    stop(gw);

    // After a restart every acknowledged key is on disk, no refused one.
    let gw = Gateway::start(&url, &[], Stdio::null());
    let mut on_disk = BTreeSet::new();
    let mut after: Option<String> = None;
    loop {
        let r = post(
            &client,
            &gw.url,
            "query($a: String) { usageDetails(userId: 1, first: 100, after: $a, \
             filter: {types: [CONSUME]}) { nodes { sourceId } pageInfo { hasNextPage endCursor } } }",
            json!({ "a": after }),
        )
        .await;
        let page = &r["data"]["usageDetails"];
        for node in page["nodes"].as_array().unwrap_or_else(|| panic!("{r}")) {
            on_disk.insert(node["sourceId"].as_str().unwrap().to_owned());
        }
        if page["pageInfo"]["hasNextPage"] != true {
            break;
        }
        after = page["pageInfo"]["endCursor"].as_str().map(str::to_owned);
    }
    let lost: Vec<_> = acked.difference(&on_disk).collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    let ghosts: Vec<_> = refused.intersection(&on_disk).collect();
    assert!(ghosts.is_empty(), "refused but written: {ghosts:?}");
    let r = post(&client, &gw.url, "{ user(id: 1) { balance } }", json!({})).await;
    assert_eq!(
        r["data"]["user"]["balance"],
        1_000_000 - on_disk.len() as i64,
        "{r}"
    );
    stop(gw);
    let (clean, report) = crate::process::cli(&url, &["verify"]);
    assert!(clean, "verify: {report}");
}

/// PostgreSQL: the gateway's connection is killed while a consume waits
/// inside its transaction (the user's row held by another session). The
/// client gets `UNAVAILABLE` and must not assume either outcome; the pool
/// recovers; a retry with the same key applies the consume once, and a
/// second retry replays it (docs/DESIGN.md section 7).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consume_cut_off_by_a_dropped_connection_is_settled_by_its_retry() {
    use sea_orm::{ConnectionTrait, Database, Statement, TransactionTrait};
    let app = crate::helpers::spawn_app(crate::helpers::Engine::Postgres).await;
    let u = app.create_user("cut-off").await;
    app.recharge(u, 100, "cut-o1", None).await;
    let other = Database::connect(app.database_url.as_str()).await.unwrap();
    let backend = other.get_database_backend();
    let blocker = other.begin().await.unwrap();
    blocker
        .execute_raw(Statement::from_string(
            backend,
            format!("SELECT id FROM gw_users WHERE id = {u} FOR UPDATE"),
        ))
        .await
        .unwrap();
    let app = std::sync::Arc::new(app);
    let pending = {
        let app = app.clone();
        tokio::spawn(async move { app.consume(u, 10, "SCRIPT", "cut-1", None).await })
    };
    // The gateway's session waiting for the user's lock, killed.
    let mut killed = false;
    for _ in 0..100 {
        let rows = other
            .query_all_raw(Statement::from_string(
                backend,
                "SELECT pg_terminate_backend(pid) AS t FROM pg_stat_activity \
                 WHERE application_name = 'points-gateway' AND wait_event_type = 'Lock' \
                   AND datname = current_database()",
            ))
            .await
            .unwrap();
        if !rows.is_empty() {
            killed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(killed, "the consume never waited for the lock");
    let answer = pending.await.unwrap();
    // A broken connection is the database's absence to this request:
    // UNAVAILABLE, which says "retry with the same key".
    assert_eq!(code(&answer), Some("UNAVAILABLE"), "{answer}");
    blocker.rollback().await.unwrap();
    // The retry applies it once; the next retry replays the same row.
    let first = app.consume(u, 10, "SCRIPT", "cut-1", None).await;
    assert!(first["errors"].is_null(), "{first}");
    let again = app.consume(u, 10, "SCRIPT", "cut-1", None).await;
    assert_eq!(
        again["data"]["consume"]["id"],
        first["data"]["consume"]["id"]
    );
    assert_eq!(app.balance(u).await, 90);
    let rows: i64 = other
        .query_one_raw(Statement::from_string(
            backend,
            "SELECT COUNT(*) AS n FROM mjk_point_transactions WHERE source_id = 'cut-1'",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get("", "n")
        .unwrap();
    assert_eq!(rows, 1);
    app.assert_verify_clean().await;
}
