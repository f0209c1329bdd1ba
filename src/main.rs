use std::process::ExitCode;

use clap::Parser;
use points_gateway::cli::{run, Cli};

/// mimalloc rather than glibc's malloc: profiles of a usageDetails page
/// spent about a fifth of the gateway's CPU in glibc's allocator (many
/// small, short-lived allocations per request across worker threads).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
