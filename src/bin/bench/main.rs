//! `bench`: the benchmark tool (issue 7, in progress). It prints figures;
//! nothing here asserts a speed.
//!
//! - `bench gen --database-url URL [--users N --ledger-rows N --accounts N --tasks N]`
//!   fills a database (migrations applied) at the given scale; default
//!   10,000 users, 1,000,000 ledger rows, 100 fal accounts, 1,000,000 tasks.
//! - `bench run --database-url URL [--requests N] [--concurrency 1,16,64] [--rounds 3]`
//!   starts the release gateway next to this binary on that database and
//!   runs the scenarios: `consume` over HTTP and the same consume as direct
//!   SQL (the baseline), `usageDetails` first and deep pages, `accountCosts`
//!   (30 days, all accounts, local part), `falTasks` (100 per page with
//!   account and user); prints a table
//!   and writes `bench-results/<engine>-<unix time>.json`.
//! - `bench subscribe --database-url URL [--subscribers 5000 --all-users 10
//!   --users 1000 --rate 200 --seconds 30]`: WebSocket subscribers of
//!   `balanceChanged` while consumes arrive at a steady rate; delivery
//!   latency, gateway memory, lost or out-of-order events.

mod baseline;
mod cpu;
mod gateway;
mod gen;
mod load;
mod subscribe;

use std::sync::Arc;

use points_gateway::auth::{Role, TokenKeys};
use points_gateway::config::JwtSecret;
use rand::Rng;
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{json, Value};

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "bench",
    about = "Benchmark data generation and scenarios for points-gateway"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate data at scale into DATABASE_URL (migrations applied first).
    Gen {
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
        #[arg(long, default_value_t = 10_000)]
        users: usize,
        #[arg(long, default_value_t = 1_000_000)]
        ledger_rows: usize,
        #[arg(long, default_value_t = 100)]
        accounts: usize,
        #[arg(long, default_value_t = 1_000_000)]
        tasks: usize,
        #[arg(long, default_value_t = 7)]
        seed: u64,
    },
    /// Run the scenarios against generated data.
    Run {
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
        /// Requests per scenario and concurrency level.
        #[arg(long, default_value_t = 2_000)]
        requests: usize,
        #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
        concurrency: Vec<usize>,
        /// Consume rounds per concurrency level, HTTP and baseline
        /// alternating; each round runs `requests` of each.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Which scenarios: consume, usage, costs, tasks (default: all).
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "consume,usage,costs,tasks"
        )]
        scenarios: Vec<String>,
    },
    /// Balance subscribers under a steady stream of changes.
    Subscribe {
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
        #[arg(long, default_value_t = 5_000)]
        subscribers: usize,
        /// Subscribers following every user; the others follow one each.
        #[arg(long, default_value_t = 10)]
        all_users: usize,
        /// Users changed and followed.
        #[arg(long, default_value_t = 1_000)]
        users: usize,
        /// Balance changes per second.
        #[arg(long, default_value_t = 200)]
        rate: u64,
        #[arg(long, default_value_t = 30)]
        seconds: u64,
    },
}

/// The engine's name in reports and result file names.
pub fn engine_name(backend: sea_orm::DbBackend) -> &'static str {
    if backend == sea_orm::DbBackend::Postgres {
        "postgres"
    } else {
        "sqlite"
    }
}

/// Microsecond-precision now, as the gateway stores it.
pub fn now() -> chrono::DateTime<chrono::Utc> {
    points_gateway::time::now()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Gen {
            database_url,
            users,
            ledger_rows,
            accounts,
            tasks,
            seed,
        } => {
            let (db, _) = points_gateway::db::connect(&database_url, 2).await?;
            points_gateway::db::migrate(&db).await?;
            let scale = gen::Scale {
                users,
                ledger_rows,
                accounts: accounts.max(1),
                tasks,
            };
            gen::generate(&db, &scale, seed).await?;
        }
        Command::Run {
            database_url,
            requests,
            concurrency,
            rounds,
            scenarios,
        } => {
            run(
                &database_url,
                requests,
                &concurrency,
                rounds.max(1),
                &scenarios,
            )
            .await?;
        }
        Command::Subscribe {
            database_url,
            subscribers,
            all_users,
            users,
            rate,
            seconds,
        } => {
            let plan = subscribe::Plan {
                subscribers,
                all_users: all_users.min(subscribers),
                users,
                rate_per_s: rate,
                seconds,
            };
            subscribe::run(&database_url, plan).await?;
        }
    }
    Ok(())
}

/// Runs `leg`, noting the CPU the gateway and the database used meanwhile
/// (SQLite runs inside the gateway: no separate database figure).
async fn with_cpu(
    gw: &gateway::Gateway,
    leg: impl std::future::Future<Output = load::Measured>,
) -> load::Measured {
    let pg = || gw.postgres.then(cpu::postgres).flatten();
    let (g0, d0) = (gw.cpu(), pg());
    let mut m = leg.await;
    m.gateway_cpu = gw.cpu().zip(g0).map(|(a, b)| a.saturating_sub(b));
    m.db_cpu = pg().zip(d0).map(|(a, b)| a.saturating_sub(b));
    m
}

/// `total` requests of `query` from `concurrency` workers, request `i`
/// with the variables `vars(i)` (`None` counts as an error), CPU noted.
async fn gql_leg(
    gw: &gateway::Gateway,
    client: &reqwest::Client,
    token: &str,
    query: &'static str,
    concurrency: usize,
    total: usize,
    vars: impl Fn(usize) -> Option<Value> + Send + Sync + 'static,
) -> load::Measured {
    let (client, url, token) = (client.clone(), gw.url.clone(), token.to_owned());
    let leg = load::measure(concurrency, total, move |i| {
        let (client, url, token, vars) = (client.clone(), url.clone(), token.clone(), vars(i));
        async move {
            match vars {
                Some(v) => post(&client, &url, &token, query, v).await.is_ok(),
                None => false,
            }
        }
    });
    with_cpu(gw, leg).await
}

/// One table row for gateway legs: pooled figures and the gateway's peak RSS.
fn gateway_row(
    gw: &gateway::Gateway,
    scenario: &str,
    concurrency: usize,
    runs: &[load::Measured],
) -> load::Stats {
    let mut s = load::summarize(scenario, concurrency, runs);
    s.peak_rss_mib = gw.peak_rss_mib();
    s
}

const CONSUME: &str = "mutation($u: Int!, $id: String!) { consume(input: {userId: $u, amount: 1, sourceType: SCRIPT, sourceId: $id}) { id balanceAfter } }";
const PAGE: &str = "query UsageDetail($u: Int, $after: String) { usageDetails(userId: $u, first: 20, after: $after) { edges { node { createdAt description duration change balanceAfter } } pageInfo { hasNextPage endCursor } } }";

/// One GraphQL request; an error for a transport failure or any GraphQL error.
pub async fn post(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    query: &str,
    vars: Value,
) -> anyhow::Result<Value> {
    let v: Value = client
        .post(format!("{url}/graphql"))
        .bearer_auth(token)
        .json(&json!({ "query": query, "variables": vars }))
        .send()
        .await?
        .json()
        .await?;
    anyhow::ensure!(v.get("errors").is_none(), "{v}");
    Ok(v)
}

async fn run(
    database_url: &str,
    requests: usize,
    concurrency: &[usize],
    rounds: usize,
    scenarios: &[String],
) -> anyhow::Result<()> {
    let wants = |s: &str| scenarios.iter().any(|x| x == s);
    let (db, _) = points_gateway::db::connect(database_url, 70).await?;
    let backend = db.get_database_backend();
    let engine = engine_name(backend);
    let range = db
        .query_one_raw(Statement::from_string(
            backend,
            "SELECT MIN(id) AS lo, MAX(id) AS hi, COUNT(*) AS n FROM ts_users",
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
    let gw = gateway::Gateway::start(database_url)?;
    let keys = TokenKeys::new(&JwtSecret::new(gateway::SECRET.as_bytes().to_vec())?);
    let service = keys.mint(Role::Service, None, chrono::Duration::hours(4))?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let idle = gw.rss_mib();
    let machine_before = cpu::machine();
    let run_id: u32 = rand::thread_rng().gen();
    let mut rows = Vec::new();

    // The headline ratio: HTTP and baseline alternate in rounds (order
    // flipped every round) so that drift on a shared machine (autovacuum,
    // checkpoints, the other tenant of the cores) falls on both.
    let mut ratios = Vec::new();
    if wants("consume") {
        baseline::prepare(&db).await?;
    }
    for &c in concurrency.iter().filter(|_| wants("consume")) {
        let (mut http, mut direct) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            for leg in [round % 2, 1 - round % 2] {
                if leg == 0 {
                    http.push(
                        gql_leg(&gw, &client, &service, CONSUME, c, requests, move |i| {
                            let u = rand::thread_rng().gen_range(lo..=hi);
                            let id = format!("bh-{run_id:08x}-{c}-{round}-{i}");
                            Some(json!({ "u": u, "id": id }))
                        })
                        .await,
                    );
                } else {
                    let dbc = Arc::new(db.clone());
                    direct.push(
                        with_cpu(
                            &gw,
                            load::measure(c, requests, move |i| {
                                let dbc = dbc.clone();
                                async move {
                                    let u = rand::thread_rng().gen_range(lo..=hi);
                                    let sid = format!("bs-{run_id:08x}-{c}-{round}-{i}");
                                    baseline::consume(&dbc, u, 1, &sid).await.is_ok()
                                }
                            }),
                        )
                        .await,
                    );
                }
            }
        }
        let per_round: Vec<f64> = http
            .iter()
            .zip(&direct)
            .map(|(h, d)| h.throughput() / d.throughput())
            .collect();
        let s = gateway_row(&gw, "consume via HTTP", c, &http);
        let b = load::summarize("consume via direct SQL (baseline)", c, &direct);
        ratios.push(json!({
            "concurrency": c,
            "overall": s.throughput_per_s / b.throughput_per_s,
            "per_round": per_round,
        }));
        rows.push(s);
        rows.push(b);
    }

    // Deep cursors: 80 rows into the history of some users.
    let admin = keys.mint(Role::Admin, None, chrono::Duration::hours(4))?;
    let mut deep = Vec::new();
    for _ in 0..if wants("usage") { 100 } else { 0 } {
        let u = rand::thread_rng().gen_range(lo..=hi);
        let q = "query($u: Int) { usageDetails(userId: $u, first: 80) { pageInfo { endCursor } } }";
        if let Ok(v) = post(&client, &gw.url, &admin, q, json!({ "u": u })).await {
            if let Some(c) = v["data"]["usageDetails"]["pageInfo"]["endCursor"].as_str() {
                deep.push((u, c.to_owned()));
            }
        }
    }
    let deep = Arc::new(deep);
    for &c in concurrency.iter().filter(|_| wants("usage")) {
        let first = gql_leg(&gw, &client, &admin, PAGE, c, requests, move |_| {
            Some(json!({ "u": rand::thread_rng().gen_range(lo..=hi) }))
        })
        .await;
        rows.push(gateway_row(&gw, "usageDetails first page", c, &[first]));
        let deep = deep.clone();
        let deep_leg = gql_leg(&gw, &client, &admin, PAGE, c, requests, move |i| {
            let (u, cursor) = deep.get(i % deep.len().max(1))?;
            Some(json!({ "u": u, "after": cursor }))
        })
        .await;
        rows.push(gateway_row(
            &gw,
            "usageDetails deep page (row 80+)",
            c,
            &[deep_leg],
        ));
    }

    // The cost report, local part (no falUsage): 30 days, every account.
    let to = chrono::Utc::now();
    let from = to - chrono::Duration::days(30);
    let costs = "query($from: DateTime!, $to: DateTime!) { accountCosts(from: $from, to: $to) { account { id name } taskCount succeededCount failedCount refundedCount chargedPoints refundedPoints costUsd marginUsd byEndpoint { appName taskCount chargedPoints costUsd } } }";
    for &c in concurrency.iter().filter(|&&c| c <= 16 && wants("costs")) {
        let vars = json!({ "from": from, "to": to });
        let total = (requests / 20).max(20);
        let leg = gql_leg(&gw, &client, &admin, costs, c, total, move |_| {
            Some(vars.clone())
        })
        .await;
        rows.push(gateway_row(
            &gw,
            "accountCosts 30 days, all accounts",
            c,
            &[leg],
        ));
    }
    // fal tasks with their account and user through the dataloaders.
    let tasks_q = "query($from: DateTime) { falTasks(first: 100, filter: { from: $from }) { nodes { taskId appName status money costUsd isRefund createdAt account { name maskedKey } user { id name } } pageInfo { endCursor } } }";
    for &c in concurrency.iter().filter(|_| wants("tasks")) {
        let leg = gql_leg(&gw, &client, &admin, tasks_q, c, requests / 4, move |_| {
            let back = rand::thread_rng().gen_range(60..90 * 24 * 60);
            Some(json!({ "from": chrono::Utc::now() - chrono::Duration::minutes(back) }))
        })
        .await;
        rows.push(gateway_row(
            &gw,
            "falTasks 100/page with account+user",
            c,
            &[leg],
        ));
    }

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
        let rounds: Vec<String> = r["per_round"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_f64)
            .map(|x| format!("{:.0}%", x * 100.0))
            .collect();
        println!(
            "consume HTTP / direct SQL at c{}: {:.0}% overall; rounds {}",
            r["concurrency"],
            r["overall"].as_f64().unwrap_or(0.0) * 100.0,
            rounds.join(", ")
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
            &json!({ "engine": engine, "ledger_rows": ledger, "idle_rss_mib": idle, "scenarios": rows, "consume_ratios": ratios, "cpu_steal_share": steal }),
        )?,
    )?;
    println!("wrote {path}");
    Ok(())
}
