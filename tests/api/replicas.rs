//! Read replicas (`DATABASE_READ_URL`) against a real streaming replica
//! made by the test (`pg_basebackup -R`): queries' reads go to it, a
//! replica whose replay is paused is skipped once it lags past the bound
//! (reads fall back to the primary and see the newest rows), it serves
//! again once it has caught up, and a stopped replica costs no request.

use std::process::Stdio;
use std::time::{Duration, Instant};

use points_gateway::auth::Role;
use serde_json::{json, Value};

use crate::pg_cluster::PgCluster;
use crate::process::{post, token, Gateway};

/// `gateway_reads_total{target}`: 0 until the first read there.
async fn reads(gw: &Gateway, target: &str) -> f64 {
    gw.metric(&format!("gateway_reads_total{{target=\"{target}\"}}"))
        .await
        .unwrap_or(0.0)
}

async fn sql(url: &str, statement: &str) {
    use sea_orm::{ConnectionTrait, Database};
    let db = Database::connect(url).await.unwrap();
    db.execute_unprepared(statement).await.unwrap();
    db.close().await.ok();
}

/// The source ids on the user's first usage page.
async fn usage(client: &reqwest::Client, url: &str, user: i64) -> Vec<String> {
    let r: Value = post(
        client,
        url,
        &token(Role::Service),
        "query($u: Int!) { usageDetails(userId: $u, first: 20) { edges { node { sourceId } } totalCount } }",
        json!({ "u": user }),
    )
    .await
    .unwrap();
    assert!(r["errors"].is_null(), "{r}");
    r["data"]["usageDetails"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            e["node"]["sourceId"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

/// Polls the usage page until it shows `id`, at most `within`.
async fn until_seen(client: &reqwest::Client, url: &str, user: i64, id: &str, within: Duration) {
    let started = Instant::now();
    while !usage(client, url, user).await.iter().any(|s| s == id) {
        assert!(
            started.elapsed() < within,
            "{id} not read within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_read_a_fresh_replica_and_skip_a_lagging_or_stopped_one() {
    let primary = PgCluster::start();
    let replica = primary.replica();
    let mut gw = Gateway::start(
        &primary.url(),
        &[
            ("DATABASE_READ_URL", replica.url().as_str()),
            ("DATABASE_READ_MAX_LAG_MS", "300"),
        ],
        Stdio::null(),
    );
    let client = reqwest::Client::new();
    let service = token(Role::Service);
    let r = post(
        &client,
        &gw.url,
        &service,
        "mutation { createUser(input: {name: \"replicated\"}) { id } }",
        json!({}),
    )
    .await
    .unwrap();
    let u = r["data"]["createUser"]["id"].as_i64().unwrap();
    post(&client, &gw.url, &service, "mutation($u: Int!) { recharge(input: {userId: $u, amount: 1000, orderId: \"r1\", moneyCents: 100}) { id } }", json!({ "u": u })).await.unwrap();
    let consume = |id: &'static str| {
        let client = client.clone();
        let url = gw.url.clone();
        let service = service.clone();
        async move {
            let r = post(&client, &url, &service, "mutation($u: Int!, $id: String!) { consume(input: {userId: $u, amount: 5, sourceType: SCRIPT, sourceId: $id}) { id } }", json!({ "u": u, "id": id })).await.unwrap();
            assert!(r["errors"].is_null(), "{r}");
        }
    };

    // Fresh replica: the page is read there, and shows the consume once
    // the replica has replayed it.
    consume("c1").await;
    until_seen(&client, &gw.url, u, "c1", Duration::from_secs(5)).await;
    let on_replica = reads(&gw, "replica").await;
    assert!(on_replica >= 1.0, "no read went to the replica");

    // Replay paused: the replica falls behind; once past the bound it is
    // skipped and the primary serves the newest row.
    sql(&replica.url(), "SELECT pg_wal_replay_pause()").await;
    consume("c2").await;
    let primary_before = reads(&gw, "primary").await;
    until_seen(&client, &gw.url, u, "c2", Duration::from_secs(5)).await;
    assert!(
        reads(&gw, "primary").await > primary_before,
        "the lagging replica was not skipped"
    );

    // Caught up again: reads go back to it.
    sql(&replica.url(), "SELECT pg_wal_replay_resume()").await;
    let started = Instant::now();
    loop {
        let before = reads(&gw, "replica").await;
        usage(&client, &gw.url, u).await;
        if reads(&gw, "replica").await > before {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the replica never served again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A mutation reads the primary: its payload is never stale.
    consume("c3").await;

    // The replica stops: no request fails, the primary serves.
    replica.stop();
    let started = Instant::now();
    for _ in 0..20 {
        let ids = usage(&client, &gw.url, u).await;
        assert!(ids.iter().any(|s| s == "c3") || started.elapsed() < Duration::from_secs(2));
    }
    until_seen(&client, &gw.url, u, "c3", Duration::from_secs(5)).await;
    gw.child.kill().ok();
    gw.child.wait().ok();
}
