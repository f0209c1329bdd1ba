//! `bench cutover`: adopting a legacy database at scale while its writers
//! keep writing. On an empty PostgreSQL database it lays out the two
//! systems' tables (`legacy.sql`) with N users per side and M ledger and M
//! statement rows, then:
//!
//! 1. legacy writes alone (before any gateway): the mjk code's consume
//!    (lock the user's newest ledger row, append one) and the ts code's
//!    deduction (lock the `ts_users` row, update it, append a statement and
//!    a money row), each its own transaction, by `--writers` connections
//!    named as the legacy apps' are (not `points-gateway`);
//! 2. the same writers running while `points-gateway adopt --apply
//!    --opening-balance sum` (the release binary next to this one) runs:
//!    how long it took, and the longest any legacy write waited;
//! 3. the same legacy writes again, now absorbed by the gateway's
//!    triggers;
//! 4. `points-gateway verify` over the result, then `release --apply` (the
//!    way back) and the same writes once more on the same tables and
//!    indexes without the triggers: absorbed against released is what
//!    absorbing costs a legacy write (the ORMs' schema has no index on the
//!    ledger's `user_id`, which `adopt` adds, so step 1 is slower still).
//!
//! Prints figures; asserts nothing about speed.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement, TransactionTrait};

const LEGACY_SQL: &str = include_str!("legacy.sql");

pub struct Options {
    pub database_url: String,
    pub users: usize,
    pub rows: usize,
    pub writers: usize,
    pub writes: usize,
    /// Writes a second per writer during the apply (0: unpaced).
    pub rate: u32,
}

fn stmt(sql: &str, values: Vec<sea_orm::Value>) -> Statement {
    Statement::from_sql_and_values(sea_orm::DbBackend::Postgres, sql, values)
}

/// One legacy write on a random user: the mjk code's consume or the ts
/// code's deduction, as their functions do it.
async fn legacy_write(db: &DatabaseConnection, users: usize, k: u64) -> anyhow::Result<()> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(k);
    let user = rng.gen_range(1..=users) as i32;
    let tx = db.begin().await?;
    if k.is_multiple_of(2) {
        let row = tx
            .query_one_raw(stmt(
                "SELECT balance_after, batch_id FROM mjk_point_transactions \
                 WHERE user_id = md5('mjk' || $1)::uuid ORDER BY id DESC LIMIT 1 FOR UPDATE",
                vec![user.into()],
            ))
            .await?;
        let balance: i32 = match &row {
            Some(r) => r.try_get("", "balance_after")?,
            None => 0,
        };
        if balance >= 1 {
            tx.execute_raw(stmt(
                "INSERT INTO mjk_point_transactions (user_id, type, amount, balance_before, balance_after, \
                   source_type, source_id, description) \
                 VALUES (md5('mjk' || $1)::uuid, 'consume', 1, $2, $3, 'script', $4, '【脚本生成】')",
                vec![user.into(), balance.into(), (balance - 1).into(), format!("bench-{k}").into()],
            ))
            .await?;
        }
    } else {
        let row = tx
            .query_one_raw(stmt(
                "SELECT money, gift_money FROM ts_users WHERE id = $1 FOR UPDATE",
                vec![user.into()],
            ))
            .await?
            .ok_or_else(|| anyhow::anyhow!("no ts user {user}"))?;
        let (money, gift): (i32, i32) = (row.try_get("", "money")?, row.try_get("", "gift_money")?);
        if money + gift >= 1 {
            let from_gift = gift.min(1);
            tx.execute_raw(stmt(
                "UPDATE ts_users SET money = $2, gift_money = $3 WHERE id = $1",
                vec![
                    user.into(),
                    (money - (1 - from_gift)).into(),
                    (gift - from_gift).into(),
                ],
            ))
            .await?;
            tx.execute_raw(stmt(
                "INSERT INTO ts_points_detail (user_id, points, order_id, title, source_type, balance_before, \
                   balance_after, created_at) VALUES ($1, -1, $2, 'bench', 'consume', $3, $4, localtimestamp)",
                vec![user.into(), format!("bench-{k}").into(), (money + gift).into(), (money + gift - 1).into()],
            ))
            .await?;
            tx.execute_raw(stmt(
                "INSERT INTO ts_financial_transactions (user_id, money, order_id, title, time, transaction_type, \
                   pay_type, is_cash) VALUES ($1, -1, $2, 'bench', localtimestamp, 1, 0, 0)",
                vec![user.into(), format!("bench-{k}").into()],
            ))
            .await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

/// Latencies of `n` legacy writes per writer, all writers at once, after
/// a checkpoint and `n / 5` writes each unmeasured (the same start for the
/// before and after figures).
async fn measure(
    dbs: &[DatabaseConnection],
    users: usize,
    n: usize,
    base: u64,
) -> anyhow::Result<Vec<Duration>> {
    // A superuser's statement; without the right the figures start warm anyway.
    dbs[0].execute_unprepared("CHECKPOINT").await.ok();
    for (w, db) in dbs.iter().enumerate() {
        for i in 0..n / 5 {
            legacy_write(db, users, base + (1 << 32) + (w * n + i) as u64).await?;
        }
    }
    let mut tasks = Vec::new();
    for (w, db) in dbs.iter().enumerate() {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::with_capacity(n);
            for i in 0..n {
                let t = Instant::now();
                legacy_write(&db, users, base + (w * n + i) as u64).await?;
                out.push(t.elapsed());
            }
            anyhow::Ok(out)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    all.sort();
    Ok(all)
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

pub async fn run(o: Options) -> anyhow::Result<()> {
    let admin = Database::connect(&o.database_url).await?;
    let tables: i64 = admin
        .query_one_raw(stmt(
            "SELECT COUNT(*) AS n FROM information_schema.tables WHERE table_schema = current_schema()",
            vec![],
        ))
        .await?
        .ok_or_else(|| anyhow::anyhow!("no count"))?
        .try_get("", "n")?;
    anyhow::ensure!(tables == 0, "bench cutover needs an empty database");
    let per_user = (o.rows / o.users).max(1);
    let t = Instant::now();
    let sql = LEGACY_SQL
        .replace("{users}", &o.users.to_string())
        .replace("{per_user}", &per_user.to_string());
    admin.execute_unprepared(&sql).await?;
    println!(
        "legacy database: {} users per side, {} ledger and {} statement rows, laid out in {:.1} s",
        o.users,
        o.users * per_user,
        o.users * per_user,
        t.elapsed().as_secs_f64()
    );
    let mut dbs = Vec::new();
    for _ in 0..o.writers {
        dbs.push(Database::connect(&o.database_url).await?);
    }
    let before = measure(&dbs, o.users, o.writes, 0).await?;

    // The writers keep going while the adoption runs.
    let stop = Arc::new(AtomicBool::new(false));
    let mut loops = Vec::new();
    for (w, db) in dbs.iter().enumerate() {
        let (db, stop, users, rate) = (db.clone(), stop.clone(), o.users, o.rate);
        loops.push(tokio::spawn(async move {
            let (mut took, mut k) = (Vec::new(), 1_000_000_000u64 * (w as u64 + 1));
            let mut pace = (rate > 0).then(|| {
                let mut i = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
                i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                i
            });
            while !stop.load(Ordering::Relaxed) {
                if let Some(p) = pace.as_mut() {
                    p.tick().await;
                }
                let t = Instant::now();
                legacy_write(&db, users, k).await?;
                took.push(t.elapsed());
                k += 1;
            }
            anyhow::Ok(took)
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let exe = std::env::current_exe()?.with_file_name("points-gateway");
    let t = Instant::now();
    let url = o.database_url.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(exe)
            .args(["adopt", "--apply", "--opening-balance", "sum"])
            .env("DATABASE_URL", &url)
            .env("GATEWAY_JWT_SECRET", crate::gateway::SECRET)
            .output()
    })
    .await??;
    let adopt = t.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut during = Vec::new();
    for l in loops {
        during.extend(l.await??);
    }
    during.sort();
    anyhow::ensure!(
        out.status.success(),
        "adopt failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let after = measure(&dbs, o.users, o.writes, 1u64 << 40).await?;
    println!(
        "adopt --apply: {:.1} s; legacy writes during it ({}): {}, p50 {:.1} ms, p99 {:.1} ms, \
         the longest waited {:.2} s",
        adopt.as_secs_f64(),
        match o.rate {
            0 => "unpaced".to_owned(),
            r => format!("{} writers x {r}/s", o.writers),
        },
        during.len(),
        pct(&during, 0.50),
        pct(&during, 0.99),
        during.last().copied().unwrap_or_default().as_secs_f64()
    );
    // What the apply says of its window (the locks' lengths, the drains).
    for line in String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("Legacy writes made while it ran") || l.starts_with("Adopted:"))
    {
        println!("  adopt: {line}");
    }
    let gateway = |args: &[&str]| {
        Command::new(std::env::current_exe()?.with_file_name("points-gateway"))
            .args(args)
            .env("DATABASE_URL", &o.database_url)
            .env("GATEWAY_JWT_SECRET", crate::gateway::SECRET)
            .output()
            .map_err(anyhow::Error::from)
    };
    let v = gateway(&["verify"])?;
    println!(
        "verify: {}",
        String::from_utf8_lossy(&v.stdout)
            .lines()
            .last()
            .unwrap_or_default()
    );
    // The way back, then the same writes on the same tables and indexes
    // without the triggers: what absorbing costs a legacy write.
    let t = Instant::now();
    let r = gateway(&["release", "--apply"])?;
    anyhow::ensure!(
        r.status.success(),
        "release failed: {}",
        String::from_utf8_lossy(&r.stdout)
    );
    println!("release --apply: {:.1} s", t.elapsed().as_secs_f64());
    let released = measure(&dbs, o.users, o.writes, 1u64 << 41).await?;
    println!(
        "legacy write latency, {} writers x {} writes each:",
        o.writers, o.writes
    );
    println!(
        "  {:<34} {:>8} {:>8} {:>8}",
        "", "p50 ms", "p99 ms", "max ms"
    );
    for (name, s) in [
        ("before the gateway (ORMs' schema)", &before),
        ("absorbed by the gateway", &after),
        ("after release (no triggers)", &released),
    ] {
        println!(
            "  {:<34} {:>8.2} {:>8.2} {:>8.2}",
            name,
            pct(s, 0.5),
            pct(s, 0.99),
            pct(s, 1.0)
        );
    }
    println!(
        "  absorbed / after release: p50 {:.2}x, p99 {:.2}x (the cost of absorbing)",
        pct(&after, 0.5) / pct(&released, 0.5).max(1e-9),
        pct(&after, 0.99) / pct(&released, 0.99).max(1e-9)
    );
    Ok(())
}
