//! `bench run`: starts the release gateway on the database, runs the
//! chosen scenarios, prints the table and the consume ratios, and writes
//! `bench-results/<engine>-<unix time>.json`.

use points_gateway::auth::{Role, TokenKeys};
use points_gateway::config::JwtSecret;
use points_gateway::store::Store;
use rand::Rng;
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{json, Value};

use crate::scenarios::{self, Ctx};
use crate::{cpu, gateway, load};

pub async fn run(
    database_url: &str,
    requests: usize,
    concurrency: &[usize],
    rounds: usize,
    scenarios: &[String],
) -> anyhow::Result<()> {
    let wants = |s: &str| scenarios.iter().any(|x| x == s);
    let store = Store::connect(database_url, 70).await?;
    let db = store.connection();
    let backend = db.get_database_backend();
    let engine = store.engine().name();
    let range = db
        .query_one_raw(Statement::from_string(
            backend,
            "SELECT MIN(id) AS lo, MAX(id) AS hi, COUNT(*) AS n FROM gw_users",
        ))
        .await?
        .ok_or_else(|| anyhow::anyhow!("no users"))?;
    let (lo, hi): (i32, i32) = (range.try_get("", "lo")?, range.try_get("", "hi")?);
    let ledger: i64 = db
        .query_one_raw(Statement::from_string(
            backend,
            "SELECT COUNT(*) AS n FROM mjk_point_transactions",
        ))
        .await?
        .map(|r| r.try_get::<i64>("", "n"))
        .transpose()?
        .unwrap_or(0);
    eprintln!("{engine}: users {lo}..={hi}, {ledger} ledger rows");
    let durability = durability(&store).await?;
    if let Some(d) = &durability {
        println!("PostgreSQL durability: {d}");
        if d.contains("off") {
            eprintln!(
                "WARNING: this PostgreSQL does not flush commits to disk; the figures hide the \
                 durable commit and are not comparable with BENCHMARKS.md"
            );
        }
    }
    let gw = gateway::Gateway::start(database_url)?;
    let keys = TokenKeys::new(&JwtSecret::new(gateway::SECRET.as_bytes().to_vec())?);
    let ctx = Ctx {
        gw: &gw,
        database_url,
        store: &store,
        client: reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .build()?,
        service: keys.mint(Role::Service, None, chrono::Duration::hours(4))?,
        admin: keys.mint(Role::Admin, None, chrono::Duration::hours(4))?,
        lo,
        hi,
        run_id: rand::thread_rng().gen(),
        requests,
    };
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let idle = gw.rss_mib();
    let machine_before = cpu::machine();
    let mut rows = Vec::new();

    let ratios = if wants("consume") {
        scenarios::consume::run(&ctx, concurrency, rounds, &mut rows).await?
    } else {
        Vec::new()
    };
    if wants("usage") {
        scenarios::usage::run(&ctx, concurrency, &mut rows).await;
    }
    if wants("costs") {
        scenarios::costs::run(&ctx, concurrency, &mut rows).await;
    }
    if wants("tasks") {
        scenarios::tasks::run(&ctx, concurrency, &mut rows).await;
    }
    if wants("replay") {
        scenarios::replay::run(&ctx, concurrency, &mut rows).await;
    }
    let peer_ratios = if wants("peer") {
        scenarios::peer::run(&ctx, concurrency, rounds, &mut rows).await?
    } else {
        Vec::new()
    };
    let hold_ratios = if wants("holds") {
        scenarios::holds::run(&ctx, concurrency, rounds, &mut rows).await
    } else {
        Vec::new()
    };
    let pooled_ratios = if wants("pooled") {
        scenarios::pooled::run(&ctx, concurrency, rounds, &mut rows).await?
    } else {
        Vec::new()
    };
    let stuck_ratio = match (wants("stuck"), concurrency.iter().max()) {
        (true, Some(&c)) => Some(scenarios::stuck::run(&ctx, c, rounds, &mut rows).await?),
        _ => None,
    };

    println!(
        "engine {engine}, {ledger} ledger rows, gateway idle RSS {:.1} MiB",
        idle.unwrap_or(0.0)
    );
    load::print_table(&rows);
    let steal = machine_before
        .zip(cpu::machine())
        .map(|(b, a)| cpu::steal_share(b, a));
    if let Some(steal) = steal {
        println!(
            "CPU steal during the run: {:.1}% (time the hypervisor ran other guests)",
            steal * 100.0
        );
    }
    for r in &ratios {
        print_ratio("consume HTTP / baseline", r, "overall", "per_round");
        if r.get("wrk_overall").is_some() {
            print_ratio(
                "consume HTTP (wrk) / baseline",
                r,
                "wrk_overall",
                "wrk_per_round",
            );
        }
    }
    for r in &peer_ratios {
        print_ratio(
            "usageDetails page, gateway / raw SQL:",
            r,
            "overall",
            "per_round",
        );
        if r.get("peer_overall").is_some() {
            print_ratio(
                "usageDetails page, gateway / PostGraphile:",
                r,
                "peer_overall",
                "peer_per_round",
            );
        }
    }
    for r in &hold_ratios {
        print_ratio(
            "hold + capture jobs / one-consume jobs:",
            r,
            "overall",
            "per_round",
        );
        print_ratio(
            "hold + capture jobs / consume + refund jobs:",
            r,
            "vs_refund_overall",
            "vs_refund_per_round",
        );
    }
    if let Some(r) = &stuck_ratio {
        print_ratio(
            "consumes with 6,400 stuck subscriptions / with none:",
            r,
            "overall",
            "per_round",
        );
        println!(
            "  p99 {:.1} ms stuck, {:.1} ms none",
            r["p99_ms_stuck"].as_f64().unwrap_or(0.0),
            r["p99_ms_none"].as_f64().unwrap_or(0.0)
        );
    }
    std::fs::create_dir_all("bench-results")?;
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let path = format!("bench-results/{engine}-{at}.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(
            &json!({ "engine": engine, "ledger_rows": ledger, "idle_rss_mib": idle, "scenarios": rows, "durability": durability, "consume_ratios": ratios, "hold_ratios": hold_ratios, "peer_ratios": peer_ratios, "stuck_ratio": stuck_ratio, "pooled_ratios": pooled_ratios, "cpu_steal_share": steal }),
        )?,
    )?;
    println!("wrote {path}");
    Ok(())
}

/// One line: a leg's throughput over the baseline's, overall and per round.
fn print_ratio(leg: &str, r: &Value, overall: &str, per_round: &str) {
    let rounds: Vec<String> = r[per_round]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_f64)
        .map(|x| format!("{:.0}%", x * 100.0))
        .collect();
    println!(
        "{leg} at c{}: {:.0}% overall; rounds {}",
        r["concurrency"],
        r[overall].as_f64().unwrap_or(0.0) * 100.0,
        rounds.join(", ")
    );
}

/// PostgreSQL's `fsync` and `synchronous_commit`, as the run's record.
async fn durability(store: &Store) -> anyhow::Result<Option<String>> {
    if store.engine() != points_gateway::store::Engine::Postgres {
        return Ok(None);
    }
    let db = store.connection();
    let mut parts = Vec::new();
    for setting in ["fsync", "synchronous_commit"] {
        let row = db
            .query_one_raw(Statement::from_string(
                db.get_database_backend(),
                format!("SELECT current_setting('{setting}') AS v"),
            ))
            .await?
            .ok_or_else(|| anyhow::anyhow!("no {setting}"))?;
        parts.push(format!("{setting}={}", row.try_get::<String>("", "v")?));
    }
    Ok(Some(parts.join(", ")))
}
