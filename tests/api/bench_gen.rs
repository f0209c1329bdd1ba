//! The benchmark tool's data generator writes rows the gateway reads as its
//! own: invariants hold, and the API pages and spends the generated ledger.

use serde_json::json;

use crate::helpers::{data, database_url, spawn_on, Engine};

/// The benchmark tool (its own workspace member), built beside this test
/// binary by `scripts/test.sh` before the tests run.
fn bench_exe() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).unwrap();
    let bench = dir.join("bench");
    assert!(
        bench.exists(),
        "{} is missing: build it first (cargo build -p points-gateway-bench)",
        bench.display()
    );
    bench
}

async fn generated_data_is_a_valid_ledger(engine: Engine) {
    let dir = tempfile::tempdir().unwrap();
    let url = database_url(engine, &dir).await;
    let out = std::process::Command::new(bench_exe())
        .args([
            "gen",
            "--users",
            "20",
            "--ledger-rows",
            "600",
            "--accounts",
            "3",
            "--tasks",
            "200",
        ])
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let app = spawn_on(url, dir).await;
    app.assert_verify_clean().await;
    assert_eq!(app.count("mjk_point_transactions").await, 600);
    assert_eq!(app.count("ts_fal_tasks").await, 200);

    let first = app
        .gql(
            &app.admin,
            "{ usageDetails(userId: 1, first: 100) { totalCount nodes { type balanceAfter } } }",
            json!({}),
        )
        .await;
    let conn = data(&first, "usageDetails");
    assert_eq!(conn["totalCount"], 30);
    let balance = app.balance(1).await;
    assert_eq!(conn["nodes"][0]["balanceAfter"], balance);
    assert_eq!(conn["nodes"][29]["type"], "RECHARGE");
    // The generated ledger continues under the real ledger code.
    let c = app.consume(1, 1, "SCRIPT", "after-gen", None).await;
    assert_eq!(data(&c, "consume")["balanceBefore"], balance);
    app.assert_verify_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_gen_writes_a_valid_ledger_sqlite() {
    generated_data_is_a_valid_ledger(Engine::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_gen_writes_a_valid_ledger_postgres() {
    generated_data_is_a_valid_ledger(Engine::Postgres).await;
}
