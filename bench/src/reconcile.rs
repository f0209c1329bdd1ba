//! `bench reconcile`: `points-gateway reconcile-fal` over a month of
//! `--tasks` fal tasks against as many billing events, served by a local
//! stand-in of `GET /v1/models/billing-events` (pages of 10,000, the
//! documented maximum). Reports wall time, the reconciler's CPU and peak
//! memory (from /proc), PostgreSQL's CPU, and the lines published.
//!
//! The data: task `i` of `n` is created at `base + i·step` (naive local
//! time, as the ts platform writes it), on account `i mod accounts`.
//! Event `j` is billed 30 s after task `j` was created; every 50th event
//! is a request no task has (and task `j` then has no request id: charged,
//! never billed), every 100th task failed and was refunded, every 7th
//! event is 5% off the platform's estimate.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Utc};
use points_gateway::store::Store;
use sea_orm::{ConnectionTrait, Statement};

pub struct Options {
    pub database_url: String,
    pub tasks: usize,
    pub accounts: usize,
}

/// The month the tasks span.
const DAYS: i64 = 30;
const PAGE: usize = 10_000;

struct Plan {
    n: usize,
    accounts: usize,
    /// The UTC instant of task 0's creation.
    base: DateTime<Utc>,
    step_us: i64,
}

impl Plan {
    fn created(&self, i: usize) -> DateTime<Utc> {
        self.base + chrono::Duration::microseconds(self.step_us * i as i64)
    }

    fn billed(&self, j: usize) -> DateTime<Utc> {
        self.created(j) + chrono::Duration::seconds(30)
    }

    fn cost_nano(&self, j: usize) -> i64 {
        // cost_money = (j % 1000) / 1000 USD, 5% more every 7th.
        let n = (j % 1000) as i64 * 1_000_000;
        if j.is_multiple_of(7) {
            n + n / 20
        } else {
            n
        }
    }

    /// The first event index billed at or after `t`.
    fn first_at(&self, t: DateTime<Utc>) -> usize {
        let us = (t - self.base - chrono::Duration::seconds(30))
            .num_microseconds()
            .unwrap_or(0);
        if us <= 0 {
            0
        } else {
            ((us + self.step_us - 1) / self.step_us) as usize
        }
    }
}

pub async fn run(o: Options) -> anyhow::Result<()> {
    let store = Store::connect(&o.database_url, 2).await?;
    if !o.database_url.starts_with("postgres") {
        anyhow::bail!("bench reconcile runs on PostgreSQL (the production engine)");
    }
    store.migrate().await?;
    let zone = points_gateway::store::DEFAULT_LEGACY_ZONE;
    let base_local = chrono::NaiveDate::from_ymd_opt(2026, 10, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .ok_or_else(|| anyhow::anyhow!("bad base date"))?;
    let base = {
        use chrono::TimeZone;
        zone.from_local_datetime(&base_local)
            .earliest()
            .ok_or_else(|| anyhow::anyhow!("no such local time"))?
            .to_utc()
    };
    let plan = Arc::new(Plan {
        n: o.tasks,
        accounts: o.accounts.max(1),
        base,
        step_us: DAYS * 86_400_000_000 / o.tasks.max(1) as i64,
    });
    let db = store.connection();
    let backend = db.get_database_backend();
    let have: i64 = db
        .query_one_raw(Statement::from_string(
            backend,
            "SELECT COUNT(*) AS n FROM ts_fal_tasks WHERE task_id LIKE 'bt-%'",
        ))
        .await?
        .map(|r| r.try_get("", "n"))
        .transpose()?
        .unwrap_or(0);
    if have as usize != plan.n {
        let started = Instant::now();
        for sql in [
            "DELETE FROM ts_fal_tasks WHERE task_id LIKE 'bt-%'".to_owned(),
            "DELETE FROM ts_fal_account WHERE api_key LIKE 'bench-fal-%'".to_owned(),
            format!(
                "INSERT INTO ts_fal_account (name, api_key, balance, use_cnt, error_cnt, status) \
                 SELECT 'bench-' || k, 'bench-fal-' || k, 100, 0, 0, 1 FROM generate_series(0, {}) k",
                plan.accounts - 1
            ),
            format!(
                "INSERT INTO ts_fal_tasks (user_id, task_id, online_task_id, app_name, api_key, task_type, \
                   status, money, cost_money, is_refund, created_at) \
                 SELECT 1 + i % 10000, 'bt-' || i, CASE WHEN i % 50 = 0 THEN NULL ELSE 'req-' || i END, \
                   (ARRAY['fal-ai/flux/dev','fal-ai/flux/schnell','fal-ai/sora-2/image-to-video', \
                          'fal-ai/kling-video/v2.5-turbo/pro/image-to-video'])[1 + i % 4], \
                   'bench-fal-' || (i % {a}), 'image', \
                   CASE WHEN i % 100 = 1 THEN 'FAILED' ELSE 'COMPLETED' END, \
                   10 + i % 90, (i % 1000) / 1000.0, CASE WHEN i % 100 = 1 THEN 1 ELSE 0 END, \
                   TIMESTAMP '{base_local}' + i * INTERVAL '{step} microseconds' \
                 FROM generate_series(0, {last}) i",
                a = plan.accounts,
                step = plan.step_us,
                last = plan.n - 1,
            ),
            "ANALYZE ts_fal_tasks".to_owned(),
        ] {
            db.execute_unprepared(&sql).await?;
        }
        println!(
            "generated {} tasks on {} accounts in {:.1} s",
            plan.n,
            plan.accounts,
            started.elapsed().as_secs_f64()
        );
    }

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let fal_url = format!("http://{}", listener.local_addr()?);
    let app = axum::Router::new()
        .route("/v1/models/billing-events", get(billing_events))
        .with_state(plan.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let from = plan.base;
    let to = plan.base + chrono::Duration::days(DAYS);
    let exe = std::env::current_exe()?.with_file_name("points-gateway");
    let pg_before = crate::cpu::postgres();
    let started = Instant::now();
    let mut child = tokio::process::Command::new(&exe)
        .args([
            "reconcile-fal",
            "--from",
            &from.to_rfc3339(),
            "--to",
            &to.to_rfc3339(),
        ])
        .env("DATABASE_URL", &o.database_url)
        .env("FAL_API_BASE_URL", &fal_url)
        .env("FAL_TIMEOUT_MS", "60000")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let pid = child.id().unwrap_or(0);
    let (mut peak_kib, mut cpu) = (0.0f64, Duration::ZERO);
    let status = loop {
        if let Some(k) = crate::gateway::status_kib(pid, "VmHWM:") {
            peak_kib = peak_kib.max(k);
        }
        if let Some(c) = crate::cpu::process(pid) {
            cpu = cpu.max(c);
        }
        match tokio::time::timeout(Duration::from_millis(50), child.wait()).await {
            Ok(s) => break s?,
            Err(_) => continue,
        }
    };
    let wall = started.elapsed();
    let pg_cpu = match (pg_before, crate::cpu::postgres()) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    let out = child.wait_with_output().await?;
    let printed = String::from_utf8_lossy(&out.stdout);
    if !status.success() {
        anyhow::bail!("reconcile-fal failed:\n{printed}");
    }
    let count = |sql: &'static str| {
        let db = db.clone();
        async move {
            let r = db
                .query_one_raw(Statement::from_string(backend, sql))
                .await?
                .map(|r| r.try_get::<i64>("", "n"))
                .transpose()?
                .unwrap_or(0);
            Ok::<i64, anyhow::Error>(r)
        }
    };
    let lines = count(
        "SELECT COUNT(*) AS n FROM gw_fal_billing_lines l JOIN gw_fal_billing_runs r \
         ON r.id = l.run_id AND r.status = 'done'",
    )
    .await?;
    let flagged = count(
        "SELECT COUNT(*) AS n FROM gw_fal_billing_lines l JOIN gw_fal_billing_runs r \
         ON r.id = l.run_id AND r.status = 'done' WHERE l.flags <> 0",
    )
    .await?;
    let events = count("SELECT COUNT(*) AS n FROM gw_fal_billing_events").await?;
    println!(
        "reconcile-fal: {} tasks against {} billing events ({} accounts, pages of {PAGE})",
        plan.n, plan.n, plan.accounts
    );
    println!(
        "  wall {:.1} s, {:.0} events/s; reconciler CPU {:.1} s, peak RSS {:.1} MiB; PostgreSQL CPU {}",
        wall.as_secs_f64(),
        plan.n as f64 / wall.as_secs_f64(),
        cpu.as_secs_f64(),
        peak_kib / 1024.0,
        pg_cpu
            .map(|c| format!("{:.1} s", c.as_secs_f64()))
            .unwrap_or_else(|| "n/a".into())
    );
    println!("  lines published {lines}, flagged {flagged}; events kept {events}");
    Ok(())
}

/// The stand-in: events of the key's account in `[start, end)`, a page
/// from the cursor (an event index) on.
async fn billing_events(
    State(plan): State<Arc<Plan>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let account = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Key bench-fal-"))
        .and_then(|k| k.parse::<usize>().ok());
    let Some(account) = account else {
        return (axum::http::StatusCode::UNAUTHORIZED, "{}").into_response();
    };
    let q = q.unwrap_or_default();
    let param = |name: &str| {
        q.split('&')
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.replace("%3A", ":").replace("%2B", "+"))
    };
    let time = |v: Option<String>| {
        v.and_then(|v| DateTime::parse_from_rfc3339(&v).ok())
            .map(|t| t.to_utc())
    };
    let (Some(start), Some(end)) = (time(param("start")), time(param("end"))) else {
        return (axum::http::StatusCode::BAD_REQUEST, "{}").into_response();
    };
    let mut j = param("cursor")
        .and_then(|c| c.parse::<usize>().ok())
        .unwrap_or_else(|| plan.first_at(start));
    // The account's events are those with j ≡ account (mod accounts).
    j += (plan.accounts + account - j % plan.accounts) % plan.accounts;
    let mut events = Vec::with_capacity(PAGE);
    while j < plan.n && events.len() < PAGE {
        let at = plan.billed(j);
        if at >= end {
            break;
        }
        let nano = plan.cost_nano(j);
        let request = if j.is_multiple_of(50) {
            format!("ghost-{j}")
        } else {
            format!("req-{j}")
        };
        events.push(serde_json::json!({
            "request_id": request,
            "endpoint_id": "fal-ai/flux/dev",
            "timestamp": at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "output_units": 1, "unit_price": nano as f64 / 1e9, "percent_discount": null,
            "cost_subtotal": nano as f64 / 1e9, "cost_discount": 0, "cost_total": nano as f64 / 1e9,
            "cost_estimate_nano_usd": nano,
        }));
        j += plan.accounts;
    }
    let more = j < plan.n && plan.billed(j) < end;
    axum::Json(serde_json::json!({
        "billing_events": events,
        "next_cursor": more.then(|| j.to_string()),
        "has_more": more,
    }))
    .into_response()
}
