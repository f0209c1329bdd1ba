//! Bulk data generation: users, batches, ledger rows with unbroken chains,
//! allocations and mirrors, fal accounts and tasks — written with
//! multi-row INSERTs of generated literals (no user input is involved), so
//! a million ledger rows take minutes, not hours. The result passes
//! `points-gateway verify`.

use std::time::Instant;

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use points_gateway::store::{Engine, Store};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sea_orm::{ConnectionTrait, DatabaseConnection};

pub struct Scale {
    pub users: usize,
    pub ledger_rows: usize,
    pub accounts: usize,
    pub tasks: usize,
}

const ROWS_PER_INSERT: usize = 1_000;
const ENDPOINTS: [&str; 6] = [
    "fal-ai/flux/dev",
    "fal-ai/flux/schnell",
    "fal-ai/sora-2/image-to-video",
    "fal-ai/kling-video/v2.5-turbo/pro/image-to-video",
    "fal-ai/minimax/video-01",
    "fal-ai/kokoro",
];

/// Literals in the exact encodings the gateway's driver writes, so the
/// gateway reads generated rows like its own.
struct Lit(Engine);

impl Lit {
    fn uuid(&self, u: uuid::Uuid) -> String {
        match self.0 {
            Engine::Postgres => format!("'{u}'"),
            Engine::Sqlite => format!("X'{}'", u.simple()),
        }
    }
    fn time(&self, t: DateTime<Utc>) -> String {
        format!("'{}'", t.to_rfc3339_opts(SecondsFormat::AutoSi, false))
    }
    /// A time in a ts platform table: naive wall clock of the legacy zone,
    /// as peewee writes it.
    fn local(&self, t: DateTime<Utc>) -> String {
        let wall = t
            .with_timezone(&points_gateway::store::DEFAULT_LEGACY_ZONE)
            .naive_local();
        format!("'{}'", entity::legacy_time::peewee_text(wall))
    }
}

/// Buffers rows of one table and flushes them as multi-row INSERTs.
struct Bulk<'a> {
    db: &'a DatabaseConnection,
    head: String,
    rows: Vec<String>,
    written: usize,
}

impl<'a> Bulk<'a> {
    fn new(db: &'a DatabaseConnection, table: &str, columns: &str) -> Bulk<'a> {
        Bulk {
            db,
            head: format!("INSERT INTO {table} ({columns}) VALUES "),
            rows: Vec::new(),
            written: 0,
        }
    }
    /// Buffers a row. Tables with foreign keys are flushed together by the
    /// caller, parents first; only unrelated tables flush themselves.
    async fn push(&mut self, row: String) -> anyhow::Result<()> {
        self.rows.push(row);
        Ok(())
    }

    async fn push_standalone(&mut self, row: String) -> anyhow::Result<()> {
        self.rows.push(row);
        if self.rows.len() >= ROWS_PER_INSERT {
            self.flush().await?;
        }
        Ok(())
    }
    async fn flush(&mut self) -> anyhow::Result<()> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let sql = format!("{}{}", self.head, self.rows.join(","));
        self.db.execute_unprepared(&sql).await?;
        self.written += self.rows.len();
        self.rows.clear();
        Ok(())
    }
}

pub async fn generate(store: &Store, scale: &Scale, seed: u64) -> anyhow::Result<()> {
    let started = Instant::now();
    let db = store.connection();
    let engine = store.engine();
    let lit = Lit(engine);
    let mut rng = StdRng::seed_from_u64(seed);
    let now = crate::now();
    let base = |table: &str| format!("SELECT COALESCE(MAX(id), 0) AS m FROM {table}");
    let max_id = |sql: String| async move {
        let r = db
            .query_one_raw(sea_orm::Statement::from_string(
                db.get_database_backend(),
                sql,
            ))
            .await?;
        Ok::<i64, anyhow::Error>(match r {
            Some(r) => r
                .try_get::<i64>("", "m")
                .or_else(|_| r.try_get::<i32>("", "m").map(i64::from))?,
            None => 0,
        })
    };
    let mut user_id = max_id(base("gw_users")).await?;
    let mut batch_id = max_id(base("gw_point_batches")).await?;
    let mut entry_id = max_id(base("mjk_point_transactions")).await?;
    let mut alloc_id = max_id(base("gw_point_allocations")).await?;
    let mut mirror_id = max_id(base("ts_points_detail")).await?;

    let mut users = Bulk::new(
        db,
        "gw_users",
        "id, uuid, name, balance, created_at, updated_at",
    );
    let mut batches = Bulk::new(
        db,
        "gw_point_batches",
        "id, user_id, kind, amount, remaining, expires_at, order_id, created_at",
    );
    let mut ledger = Bulk::new(db, "mjk_point_transactions", "id, user_id, type, amount, balance_before, balance_after, source_type, source_id, batch_id, duration, description, created_at, updated_at");
    if engine == Engine::Postgres {
        // History, not live changes: no NOTIFY per generated row (the
        // setting is read by the ledger trigger, migration 4). Sent with
        // each INSERT so it holds on whichever pooled connection runs it.
        ledger.head = format!("SET points_gateway.notify = 'off'; {}", ledger.head);
    }
    let mut allocs = Bulk::new(db, "gw_point_allocations", "id, entry_id, batch_id, amount");
    let mut mirror = Bulk::new(db, "ts_points_detail", "id, user_id, points, order_id, title, source_type, balance_before, balance_after, created_at");
    let mut entries = Bulk::new(
        db,
        "gw_entries",
        "ledger_id, user_id, type, source_type, source_id, refund_key, refund_of, request_hash, detail_id",
    );

    let per_user = (scale.ledger_rows / scale.users.max(1)).max(1);
    let run: u32 = rng.gen();
    let sources = [
        ("script", "【脚本生成】"),
        ("polish", "【脚本润色】"),
        ("tts", "【配音合成】"),
        ("video", "【视频生成】"),
        ("fal", "【AI生成】"),
    ];
    let mut first_user = 0;
    for n in 0..scale.users {
        user_id += 1;
        if n == 0 {
            first_user = user_id;
        }
        let uuid = uuid::Uuid::from_u128(rng.gen());
        let consumes = per_user - 1;
        let amounts: Vec<i64> = (0..consumes).map(|_| rng.gen_range(1..20)).collect();
        let spent: i64 = amounts.iter().sum();
        let recharge = spent + rng.gen_range(1_000..100_000);
        let mut t = now - Duration::days(365) + Duration::seconds(rng.gen_range(0..86_400));
        batch_id += 1;
        let order = format!("bench-{run:08x}-{user_id}");
        batches
            .push(format!(
                "({batch_id}, {user_id}, 'paid', {recharge}, {}, NULL, '{order}', {})",
                recharge - spent,
                lit.time(t)
            ))
            .await?;
        entry_id += 1;
        ledger.push(format!(
            "({entry_id}, {}, 'recharge', {recharge}, 0, {recharge}, 'paid', '{order}', {batch_id}, NULL, '【积分充值】', {}, {})",
            lit.uuid(uuid), lit.time(t), lit.time(t)
        )).await?;
        mirror_id += 1;
        mirror.push(format!("({mirror_id}, {user_id}, {recharge}, '{order}', '【积分充值】', 'recharge', 0, {recharge}, {})", lit.local(t))).await?;
        entries.push(format!("({entry_id}, {user_id}, 'recharge', 'paid', '{order}', NULL, NULL, NULL, {mirror_id})")).await?;
        let mut balance = recharge;
        for (j, amount) in amounts.iter().enumerate() {
            t += Duration::seconds(rng.gen_range(60..(300 * 86_400 / per_user as i64).max(61)));
            let (st, label) = sources[rng.gen_range(0..sources.len())];
            let duration = if st == "tts" || st == "video" {
                format!("{}", rng.gen_range(10..1_200) as f64 / 10.0)
            } else {
                "NULL".into()
            };
            let sid = format!("{st}-{run:08x}-{user_id}-{j}");
            entry_id += 1;
            ledger.push(format!(
                "({entry_id}, {}, 'consume', {amount}, {balance}, {}, '{st}', '{sid}', {batch_id}, {duration}, '{label}', {}, {})",
                lit.uuid(uuid), balance - amount, lit.time(t), lit.time(t)
            )).await?;
            alloc_id += 1;
            allocs
                .push(format!("({alloc_id}, {entry_id}, {batch_id}, {amount})"))
                .await?;
            mirror_id += 1;
            mirror.push(format!("({mirror_id}, {user_id}, {}, '{sid}', '{label}', 'consume', {balance}, {}, {})", -amount, balance - amount, lit.local(t))).await?;
            entries.push(format!("({entry_id}, {user_id}, 'consume', '{st}', '{sid}', NULL, NULL, NULL, {mirror_id})")).await?;
            balance -= amount;
        }
        users
            .push(format!(
                "({user_id}, {}, 'bench-{user_id}', {balance}, {}, {})",
                lit.uuid(uuid),
                lit.time(now),
                lit.time(now)
            ))
            .await?;
        if ledger.rows.len() >= ROWS_PER_INSERT {
            for b in [
                &mut users,
                &mut batches,
                &mut ledger,
                &mut mirror,
                &mut entries,
                &mut allocs,
            ] {
                b.flush().await?;
            }
        }
        if (n + 1) % 1_000 == 0 {
            eprintln!(
                "  users {}/{} ({} ledger rows) {:.0?}",
                n + 1,
                scale.users,
                entry_id,
                started.elapsed()
            );
        }
    }
    // Parents before children: users, batches, ledger, then the rest.
    users.flush().await?;
    batches.flush().await?;
    ledger.flush().await?;
    mirror.flush().await?;
    entries.flush().await?;
    allocs.flush().await?;

    let mut keys = Vec::new();
    let mut accounts = Bulk::new(
        db,
        "ts_fal_account",
        "name, api_key, balance, use_cnt, error_cnt, status, remark",
    );
    for i in 0..scale.accounts {
        let key = format!(
            "bench-fal-{run:08x}-{i:04}-{}",
            uuid::Uuid::from_u128(rng.gen()).simple()
        );
        accounts
            .push_standalone(format!(
                "('bench-{run:08x}-{i}', '{key}', 100.0, 0, 0, 1, 'bench')"
            ))
            .await?;
        keys.push(key);
    }
    accounts.flush().await?;
    let mut tasks = Bulk::new(db, "ts_fal_tasks", "user_id, task_id, online_task_id, app_name, api_key, task_type, status, money, cost_money, is_refund, input_params, created_at, completed_at");
    for i in 0..scale.tasks {
        let t = now - Duration::seconds(rng.gen_range(0..90 * 86_400));
        let ok = rng.gen_bool(0.92);
        tasks.push_standalone(format!(
            "({}, 'bench-task-{run:08x}-{i}', '{}', '{}', '{}', 'image', '{}', {}, {}, {}, '{{\"prompt\":\"bench prompt {i} with a long enough description to be wide\"}}', {}, {})",
            first_user + (i % scale.users.max(1)) as i64,
            uuid::Uuid::from_u128(rng.gen()),
            ENDPOINTS[rng.gen_range(0..ENDPOINTS.len())],
            keys[rng.gen_range(0..keys.len().max(1)) % keys.len().max(1)],
            if ok { "COMPLETED" } else { "FAILED" },
            rng.gen_range(5..300),
            if ok { rng.gen_range(1..1_000) as f64 / 1_000.0 } else { 0.0 },
            i32::from(!ok),
            lit.local(t),
            lit.local(t + Duration::seconds(30)),
        )).await?;
        if (i + 1) % 100_000 == 0 {
            eprintln!(
                "  tasks {}/{} {:.0?}",
                i + 1,
                scale.tasks,
                started.elapsed()
            );
        }
    }
    tasks.flush().await?;
    if engine == Engine::Postgres {
        for t in [
            "gw_users",
            "gw_point_batches",
            "mjk_point_transactions",
            "gw_point_allocations",
            "ts_points_detail",
        ] {
            db.execute_unprepared(&format!(
                "SELECT setval(pg_get_serial_sequence('{t}', 'id'), (SELECT MAX(id) FROM {t}))"
            ))
            .await?;
        }
        db.execute_unprepared("ANALYZE").await?;
    } else {
        db.execute_unprepared("ANALYZE").await?;
    }
    eprintln!(
        "generated {} users, {} ledger rows, {} fal accounts, {} fal tasks in {:.1?}",
        users.written,
        ledger.written,
        accounts.written,
        tasks.written,
        started.elapsed()
    );
    Ok(())
}
