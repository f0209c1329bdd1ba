//! The local side of the per-account cost report: the accounts and two
//! grouped statements over the window, whatever the number of accounts or
//! tasks.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use entity::fal_account;
use entity::legacy_time::LocalTime;

use crate::store::{Engine, Store, StoreError};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, Statement, Value,
};

/// Task statuses counted as succeeded / failed (case-insensitive). fal's
/// queue ends in COMPLETED; webhooks say OK / ERROR; other values (queued,
/// in progress) count only in the total.
const SUCCEEDED: &str = "'COMPLETED', 'OK', 'SUCCESS', 'SUCCEEDED'";
const FAILED: &str = "'FAILED', 'ERROR', 'CANCELLED', 'CANCELED', 'TIMEOUT'";

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    pub task_count: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub refunded: i64,
    pub charged_points: i64,
    pub refunded_points: i64,
    pub cost_usd: f64,
}

impl Figures {
    fn add(&mut self, o: &Figures) {
        self.task_count += o.task_count;
        self.succeeded += o.succeeded;
        self.failed += o.failed;
        self.refunded += o.refunded;
        self.charged_points += o.charged_points;
        self.refunded_points += o.refunded_points;
        self.cost_usd += o.cost_usd;
    }

    /// Net points kept, at `points_per_usd`, less what fal billed.
    pub fn margin_usd(&self, points_per_usd: f64) -> f64 {
        (self.charged_points - self.refunded_points) as f64 / points_per_usd - self.cost_usd
    }
}

#[derive(Debug, Clone)]
pub struct AccountFigures {
    pub account: fal_account::Model,
    pub total: Figures,
    /// Per `app_name` (fal endpoint id), sorted by name.
    pub by_endpoint: Vec<(String, Figures)>,
}

pub async fn account_costs(
    store: &Store,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    account_ids: Option<&[i32]>,
) -> Result<Vec<AccountFigures>, StoreError> {
    let mut accounts = fal_account::Entity::find().order_by_asc(fal_account::Column::Id);
    if let Some(ids) = account_ids {
        accounts = accounts.filter(fal_account::Column::Id.is_in(ids.iter().copied()));
    }
    let accounts = accounts.all(store.conn()).await?;
    if accounts.is_empty() {
        return Ok(Vec::new());
    }

    // The ts platform's times are naive local time.
    let zone = store.legacy_zone();
    let mut values: Vec<Value> = vec![
        LocalTime::of(crate::time::truncate_micros(from), zone).into(),
        LocalTime::of(crate::time::truncate_micros(to), zone).into(),
    ];
    let key_filter = match account_ids {
        None => String::new(),
        Some(_) => {
            let mut ph = Vec::new();
            for a in &accounts {
                values.push(a.api_key.clone().into());
                ph.push(format!("${}", values.len()));
            }
            format!(" AND t.api_key IN ({})", ph.join(", "))
        }
    };
    // SQLite's planner, seeing few distinct keys, prefers a skip-scan of
    // `(api_key, created_at)` with a row lookup per task (1.57 s for 335k
    // tasks) over the covering index (0.79 s): name it.
    let tasks_from = match store.engine() {
        Engine::Sqlite => "ts_fal_tasks t INDEXED BY ix_fal_tasks_cost_cover",
        Engine::Postgres => "ts_fal_tasks t",
    };
    // `cost_money` is `real` (peewee `FloatField`) on PostgreSQL: summed
    // as written (1.4, not 1.39999997615814) through `numeric`, which keeps
    // a float4's six significant digits. SQLite's REAL is a double.
    let cost = match store.engine() {
        Engine::Postgres => "SUM(CAST(CAST(t.cost_money AS NUMERIC) AS DOUBLE PRECISION))",
        Engine::Sqlite => "SUM(t.cost_money)",
    };
    // The window's tasks, aggregated from the covering index alone.
    // `flagged` is the money of tasks marked refunded; the exact refunded
    // points come from the ledger where it has refund rows (below).
    let sql = format!(
        "SELECT t.api_key AS api_key, t.app_name AS app_name, \
           COUNT(*) AS task_count, \
           CAST(SUM(CASE WHEN UPPER(t.status) IN ({SUCCEEDED}) THEN 1 ELSE 0 END) AS BIGINT) AS succeeded, \
           CAST(SUM(CASE WHEN UPPER(t.status) IN ({FAILED}) THEN 1 ELSE 0 END) AS BIGINT) AS failed, \
           CAST(SUM(CASE WHEN t.is_refund = 1 THEN 1 ELSE 0 END) AS BIGINT) AS refunded, \
           CAST(SUM(t.money) AS BIGINT) AS charged, \
           CAST(SUM(CASE WHEN t.is_refund = 1 THEN t.money ELSE 0 END) AS BIGINT) AS flagged, \
           {cost} AS cost \
         FROM {tasks_from} \
         WHERE t.created_at >= $1 AND t.created_at < $2{key_filter} \
         GROUP BY t.api_key, t.app_name"
    );
    // Only tasks with ledger refund rows (few): their ledger sum replaces
    // the flagged money. refunded = flagged - flagged_with_ledger + ledger.
    let refunds_sql = format!(
        "SELECT t.api_key AS api_key, t.app_name AS app_name, \
           CAST(SUM(r.points) AS BIGINT) AS ledger_points, \
           CAST(SUM(CASE WHEN t.is_refund = 1 THEN t.money ELSE 0 END) AS BIGINT) AS flagged \
         FROM (SELECT source_id, SUM(amount) AS points FROM mjk_point_transactions \
               WHERE type = 'refund' AND source_type = 'fal' GROUP BY source_id) r \
         JOIN ts_fal_tasks t ON t.task_id = r.source_id \
         WHERE t.created_at >= $1 AND t.created_at < $2{key_filter} \
         GROUP BY t.api_key, t.app_name"
    );
    // The gateway's connections use generic plans (see `postgres::connect_options`);
    // these two aggregates are the exception: how much of the table a time
    // window covers decides the plan (a generic plan took 265 -> 381 ms at
    // 1M tasks), so they are planned for the values bound.
    let txn = store.read_txn().await?;
    match store.engine() {
        Engine::Postgres => {
            txn.execute_unprepared("SET LOCAL plan_cache_mode = force_custom_plan")
                .await?;
        }
        Engine::Sqlite => {}
    }
    let backend = txn.get_database_backend();
    let rows = txn
        .query_all_raw(Statement::from_sql_and_values(backend, sql, values.clone()))
        .await?;
    let refund_rows = txn
        .query_all_raw(Statement::from_sql_and_values(backend, refunds_sql, values))
        .await?;
    txn.commit().await?;
    let mut ledger_refunds: HashMap<(String, String), (i64, i64)> = HashMap::new();
    for r in refund_rows {
        ledger_refunds.insert(
            (r.try_get("", "api_key")?, r.try_get("", "app_name")?),
            (r.try_get("", "ledger_points")?, r.try_get("", "flagged")?),
        );
    }

    let mut per_key: HashMap<String, Vec<(String, Figures)>> = HashMap::new();
    for r in rows {
        let key: String = r.try_get("", "api_key")?;
        let app: String = r.try_get("", "app_name")?;
        let flagged: i64 = r.try_get("", "flagged")?;
        let (ledger_points, flagged_with_ledger) = ledger_refunds
            .get(&(key.clone(), app.clone()))
            .copied()
            .unwrap_or((0, 0));
        let f = Figures {
            task_count: r.try_get("", "task_count")?,
            succeeded: r.try_get("", "succeeded")?,
            failed: r.try_get("", "failed")?,
            refunded: r.try_get("", "refunded")?,
            charged_points: r.try_get("", "charged")?,
            refunded_points: flagged - flagged_with_ledger + ledger_points,
            cost_usd: r.try_get::<Option<f64>>("", "cost")?.unwrap_or(0.0),
        };
        per_key.entry(key).or_default().push((app, f));
    }
    Ok(accounts
        .into_iter()
        .map(|account| {
            let mut by_endpoint = per_key.remove(&account.api_key).unwrap_or_default();
            by_endpoint.sort_by(|a, b| a.0.cmp(&b.0));
            let mut total = Figures::default();
            for (_, f) in &by_endpoint {
                total.add(f);
            }
            AccountFigures {
                account,
                total,
                by_endpoint,
            }
        })
        .collect())
}
