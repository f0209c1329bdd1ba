//! Baselines run by pgbench, PostgreSQL's own load client, `-M prepared`:
//! the consume (one call per transaction of `gw_consume`, the function
//! migration 7 installs and the gateway calls, so exactly the rows and the
//! locks of a gateway consume, every call a distinct source id), the
//! minimal write (`minimal-write.sql`: only the rows a consume needs, on
//! copies of the tables) and the UsageDetail page as raw SQL.
//! Per-transaction latencies come from pgbench's own log.

use std::process::Command;
use std::time::Duration;

use crate::load::Measured;

/// Whether pgbench can be run.
pub fn available() -> bool {
    Command::new("pgbench")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Which consume pgbench runs.
#[derive(Clone, Copy)]
pub enum Write {
    /// `gw_consume`, the function the gateway calls.
    GwConsume,
    /// The minimal write (see [`install_minimal`]).
    Minimal,
}

/// `total` consumes of one point from `concurrency` pgbench clients on
/// random users in `lo..=hi`, every one a distinct key. Blocking (a child
/// process): run it on a blocking thread.
pub fn consume(
    database_url: &str,
    write: Write,
    concurrency: usize,
    total: usize,
    lo: i32,
    hi: i32,
) -> anyhow::Result<Measured> {
    let call = match write {
        Write::GwConsume => {
            "gw_consume(:u, 'script', 'pgb-' || gen_random_uuid()::text, 1, NULL, \
             '【脚本生成】', md5(random()::text), NULL, 'Asia/Shanghai', 'bench', NULL)"
        }
        Write::Minimal => {
            "bench_minimal_consume(:u, 'script', 'pgm-' || gen_random_uuid()::text, 1, \
             '【脚本生成】', md5(random()::text), 'Asia/Shanghai')"
        }
    };
    run(
        database_url,
        concurrency,
        total,
        &format!("\\set u random({lo}, {hi})\nSELECT o_outcome FROM {call};\n"),
    )
}

/// Installs the minimal write (`minimal-write.sql`): copies of the five
/// tables a consume writes, made once per database, and the function.
pub async fn install_minimal(database_url: &str) -> anyhow::Result<()> {
    use sea_orm::ConnectionTrait;
    let db = sea_orm::Database::connect(database_url).await?;
    db.execute_unprepared(include_str!("minimal-write.sql"))
        .await?;
    db.close().await?;
    Ok(())
}

/// `total` first pages of the UsageDetail page (the gateway's columns, 20
/// rows and one to tell whether more follow) for random users in
/// `lo..=hi`, as one prepared statement.
pub fn usage_page(
    database_url: &str,
    concurrency: usize,
    total: usize,
    lo: i32,
    hi: i32,
) -> anyhow::Result<Measured> {
    run(
        database_url,
        concurrency,
        total,
        &format!(
            "\\set u random({lo}, {hi})\n\
             SELECT t.id, t.created_at, t.description, t.duration, t.type, t.amount, t.balance_after \
             FROM mjk_point_transactions t WHERE t.user_id = (SELECT uuid FROM gw_users WHERE id = :u) \
             ORDER BY t.created_at DESC, t.id DESC LIMIT 21;\n"
        ),
    )
}

/// Runs `script` `total` times from `concurrency` clients. Blocking.
fn run(
    database_url: &str,
    concurrency: usize,
    total: usize,
    script_text: &str,
) -> anyhow::Result<Measured> {
    let dir = std::env::temp_dir().join(format!(
        "bench-pgbench-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir)?;
    let script = dir.join("script.sql");
    std::fs::write(&script, script_text)?;
    let per_client = (total / concurrency.max(1)).max(1);
    let prefix = dir.join("log");
    let started = std::time::Instant::now();
    // The function writes what the gateway writes, so its rows are
    // announced as the gateway's: the ledger trigger tells them apart by
    // the session's application name (the listener would otherwise log
    // each as a foreign row, and the two legs would not do the same work).
    let out = Command::new("pgbench")
        .env("PGAPPNAME", points_gateway::store::APPLICATION_NAME)
        .args(["-n", "-M", "prepared", "-l"])
        .arg(format!("--log-prefix={}", prefix.display()))
        .arg(format!("-c{concurrency}"))
        .arg(format!("-j{}", concurrency.min(2)))
        .arg(format!("-t{per_client}"))
        .arg("-f")
        .arg(&script)
        .arg(database_url)
        .output()?;
    let elapsed = started.elapsed();
    anyhow::ensure!(
        out.status.success(),
        "pgbench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // One line per transaction: client, transaction, latency in µs, ...
    let mut latencies = Vec::with_capacity(total);
    let mut errors = 0;
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        let is_log = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("log."));
        if !is_log {
            continue;
        }
        for line in std::fs::read_to_string(&path)?.lines() {
            match line.split_whitespace().nth(2) {
                Some("failed") | Some("skipped") => errors += 1,
                Some(us) => latencies.push(Duration::from_micros(us.parse().unwrap_or(0))),
                None => {}
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    // pgbench's own run time, without its connection set-up, is what its
    // tps reports; the wall time here includes start-up, so use its figure.
    let tps = String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
        l.strip_prefix("tps = ")
            .and_then(|r| r.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
    });
    let run = match tps {
        Some(tps) if tps > 0.0 => Duration::from_secs_f64(latencies.len() as f64 / tps),
        _ => elapsed,
    };
    Ok(Measured::from_parts(latencies, errors, run))
}
