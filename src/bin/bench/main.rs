//! `bench`: the benchmark tool (issue 7, in progress). It prints figures;
//! nothing here asserts a speed.
//!
//! - `bench gen --database-url URL [--users N --ledger-rows N --accounts N --tasks N]`
//!   fills a database (migrations applied) at the given scale; default
//!   10,000 users, 1,000,000 ledger rows, 100 fal accounts, 1,000,000 tasks.

mod gen;

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
    }
    Ok(())
}
