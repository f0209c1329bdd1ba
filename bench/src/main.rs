//! `bench`: the benchmark tool. It prints figures; nothing here asserts a
//! speed. One file per scenario in `scenarios/`.
//!
//! - `bench gen --database-url URL [--users N --ledger-rows N --accounts N --tasks N]`
//!   fills a database (migrations applied) at the given scale; default
//!   10,000 users, 1,000,000 ledger rows, 100 fal accounts, 1,000,000 tasks.
//! - `bench run --database-url URL [--requests N] [--concurrency 1,16,64] [--rounds 3]`
//!   starts the release gateway next to this binary on that database and
//!   runs the scenarios: `consume` over HTTP and the same consume as direct
//!   SQL (the baseline), `usageDetails` first and deep pages, `accountCosts`
//!   (30 days, all accounts, local part), `falTasks` (100 per page with
//!   account and user), a job billed by `hold` + `captureHold` against one
//!   `consume` (`holds`), the usageDetails page with user tokens against
//!   PostGraphile v5 and raw SQL (`peer`), consumes while a partner's
//!   6,400 all-users subscriptions never read against none (`stuck`, at
//!   the highest concurrency given), the consume and the usage page through
//!   PgBouncer in transaction mode against direct (`pooled`); prints a table
//!   and writes `bench-results/<engine>-<unix time>.json`.
//! - `bench cutover --database-url URL [--users 100000 --rows 1000000
//!   --writers 4 --writes 500]`: on an empty PostgreSQL database, lays out
//!   the legacy systems' tables at that scale and runs `adopt --apply`
//!   while legacy writers keep writing; the adoption's time, the longest
//!   legacy write, and legacy write latency before and after (absorbed).
//! - `bench reconcile --database-url URL [--tasks 1000000 --accounts 10]`:
//!   `points-gateway reconcile-fal` over a month of that many fal tasks
//!   against as many billing events from a local stand-in; wall time, the
//!   reconciler's CPU and peak memory, PostgreSQL's CPU.
//! - `bench subscribe --database-url URL [--subscribers 5000 --all-users 10
//!   --users 1000 --rate 200 --seconds 30]`: WebSocket subscribers of
//!   `balanceChanged` while consumes arrive at a steady rate; delivery
//!   latency, gateway memory, lost or out-of-order events.

mod baseline;
mod cpu;
mod cutover;
mod gateway;
mod gen;
mod load;
mod pgbench;
mod reconcile;
mod run;
mod scenarios;
mod subscribe;
mod wrk;

use clap::{Parser, Subcommand};
use points_gateway::store::Store;

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
        /// Which scenarios: consume, usage, costs, tasks, replay, holds,
        /// peer, pooled, stuck (default: all).
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "consume,usage,costs,tasks,replay,holds,peer,pooled,stuck"
        )]
        scenarios: Vec<String>,
    },
    /// Adopt a legacy database at scale while its writers keep writing
    /// (an empty PostgreSQL database: the legacy tables are laid out first).
    Cutover {
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
        /// Users per side (ts and mjk).
        #[arg(long, default_value_t = 100_000)]
        users: usize,
        /// Ledger rows, and as many statement rows.
        #[arg(long, default_value_t = 1_000_000)]
        rows: usize,
        /// Legacy writer connections.
        #[arg(long, default_value_t = 4)]
        writers: usize,
        /// Legacy writes per writer measured before and after the cutover.
        #[arg(long, default_value_t = 500)]
        writes: usize,
        /// Writes a second per writer while `adopt` runs (0: as fast as
        /// they go, which on a small machine leaves little for the drain).
        #[arg(long, default_value_t = 0)]
        rate: u32,
    },
    /// `points-gateway reconcile-fal` over a month of fal tasks against as
    /// many billing events from a local stand-in (PostgreSQL).
    Reconcile {
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
        #[arg(long, default_value_t = 1_000_000)]
        tasks: usize,
        #[arg(long, default_value_t = 10)]
        accounts: usize,
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
            let store = Store::connect(&database_url, 2).await?;
            store.migrate().await?;
            let scale = gen::Scale {
                users,
                ledger_rows,
                accounts: accounts.max(1),
                tasks,
            };
            gen::generate(&store, &scale, seed).await?;
        }
        Command::Cutover {
            database_url,
            users,
            rows,
            writers,
            writes,
            rate,
        } => {
            cutover::run(cutover::Options {
                database_url,
                users: users.max(1),
                rows,
                writers: writers.max(1),
                writes,
                rate,
            })
            .await?;
        }
        Command::Run {
            database_url,
            requests,
            concurrency,
            rounds,
            scenarios,
        } => {
            run::run(
                &database_url,
                requests,
                &concurrency,
                rounds.max(1),
                &scenarios,
            )
            .await?;
        }
        Command::Reconcile {
            database_url,
            tasks,
            accounts,
        } => {
            reconcile::run(reconcile::Options {
                database_url,
                tasks: tasks.max(1),
                accounts,
            })
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
