//! A run's writes: staged events, the batches its lines are judged from,
//! the lines, and the swap that publishes them.

use chrono::{DateTime, Utc};
use entity::legacy_time::LocalTime;
use sea_orm::{ConnectionTrait, Statement, Value};

use super::{insert_statements, instant, micros};
use crate::store::{Engine, Store, StoreError};

/// One task of the window, with what the ledger and the run's events say
/// of it.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskBatchRow {
    pub row_id: i32,
    pub task_id: String,
    pub request_id: Option<String>,
    pub user_id: i32,
    pub app_name: String,
    pub status: String,
    pub money: i64,
    pub is_refund: bool,
    pub cost_money: f64,
    pub created_at: DateTime<Utc>,
    /// The task's own `created_at`, the batch cursor.
    pub local_created_at: LocalTime,
    pub ledger_charged: i64,
    pub ledger_refunded: i64,
    /// Refund rows in the ledger for the job (0: none).
    pub ledger_refunds: i64,
    /// The run's events for the request id, summed.
    pub billed: Option<Billed>,
}

/// A billing event as staged (fal's event, in the store's terms).
#[derive(Debug, Clone, PartialEq)]
pub struct StagedEvent {
    pub request_id: String,
    pub endpoint_id: String,
    pub billed_at: DateTime<Utc>,
    pub cost_nano: i64,
    pub quantity: Option<f64>,
    pub unit: Option<String>,
    pub unit_price: Option<f64>,
    pub percent_discount: Option<f64>,
    pub tags: Option<String>,
}

/// A request's events summed.
#[derive(Debug, Clone, PartialEq)]
pub struct Billed {
    pub cost_nano: i64,
    pub events: i64,
    pub quantity: Option<f64>,
    pub unit: Option<String>,
}

/// Events of the run whose request id no task has.
#[derive(Debug, Clone, PartialEq)]
pub struct UnmatchedEvent {
    pub request_id: String,
    pub endpoint_id: String,
    pub billed_at: DateTime<Utc>,
    pub billed: Billed,
}

/// A line as judged, ready to store (and as read back).
#[derive(Debug, Clone, PartialEq)]
pub struct LineDraft {
    pub account_id: i32,
    /// The task's creation, or the event's time when there is no task.
    pub at: DateTime<Utc>,
    pub task_row_id: Option<i32>,
    pub task_id: Option<String>,
    pub request_id: Option<String>,
    pub user_id: Option<i32>,
    pub endpoint_id: String,
    pub task_status: Option<String>,
    pub charged_points: i64,
    pub refunded_points: i64,
    pub task_refunded: bool,
    pub ledger_charged: i64,
    pub ledger_refunded: i64,
    pub cost_money_nano: Option<i64>,
    pub fal_cost_nano: Option<i64>,
    pub fal_events: i32,
    pub fal_quantity: Option<f64>,
    pub fal_unit: Option<String>,
    pub margin_nano: i64,
    pub flags: i32,
}

pub(crate) const LINE_COLUMNS: [&str; 20] = [
    "account_id",
    "at_us",
    "task_row_id",
    "task_id",
    "request_id",
    "user_id",
    "endpoint_id",
    "task_status",
    "charged_points",
    "refunded_points",
    "task_refunded",
    "ledger_charged",
    "ledger_refunded",
    "cost_money_nano",
    "fal_cost_nano",
    "fal_events",
    "fal_quantity",
    "fal_unit",
    "margin_nano",
    "flags",
];

impl LineDraft {
    fn values(self) -> Vec<Value> {
        vec![
            self.account_id.into(),
            micros(self.at).into(),
            self.task_row_id.into(),
            self.task_id.into(),
            self.request_id.into(),
            self.user_id.into(),
            self.endpoint_id.into(),
            self.task_status.into(),
            self.charged_points.into(),
            self.refunded_points.into(),
            self.task_refunded.into(),
            self.ledger_charged.into(),
            self.ledger_refunded.into(),
            self.cost_money_nano.into(),
            self.fal_cost_nano.into(),
            self.fal_events.into(),
            self.fal_quantity.into(),
            self.fal_unit.into(),
            self.margin_nano.into(),
            self.flags.into(),
        ]
    }

    pub(crate) fn read(r: &sea_orm::QueryResult) -> Result<LineDraft, sea_orm::DbErr> {
        Ok(LineDraft {
            account_id: r.try_get("", "account_id")?,
            at: instant(r.try_get("", "at_us")?),
            task_row_id: r.try_get("", "task_row_id")?,
            task_id: r.try_get("", "task_id")?,
            request_id: r.try_get("", "request_id")?,
            user_id: r.try_get("", "user_id")?,
            endpoint_id: r.try_get("", "endpoint_id")?,
            task_status: r.try_get("", "task_status")?,
            charged_points: r.try_get("", "charged_points")?,
            refunded_points: r.try_get("", "refunded_points")?,
            task_refunded: r.try_get("", "task_refunded")?,
            ledger_charged: r.try_get("", "ledger_charged")?,
            ledger_refunded: r.try_get("", "ledger_refunded")?,
            cost_money_nano: r.try_get("", "cost_money_nano")?,
            fal_cost_nano: r.try_get("", "fal_cost_nano")?,
            fal_events: r.try_get("", "fal_events")?,
            fal_quantity: r.try_get("", "fal_quantity")?,
            fal_unit: r.try_get("", "fal_unit")?,
            margin_nano: r.try_get("", "margin_nano")?,
            flags: r.try_get("", "flags")?,
        })
    }
}

const EVENT_COLUMNS: [&str; 11] = [
    "run_id",
    "account_id",
    "request_id",
    "endpoint_id",
    "billed_us",
    "cost_nano",
    "quantity",
    "unit",
    "unit_price",
    "percent_discount",
    "tags",
];

fn billed(r: &sea_orm::QueryResult) -> Result<Billed, sea_orm::DbErr> {
    Ok(Billed {
        cost_nano: r.try_get("", "cost")?,
        events: r.try_get("", "n")?,
        quantity: r.try_get("", "quantity")?,
        unit: r.try_get("", "unit")?,
    })
}

impl Store {
    /// Runs `statements` in one write transaction.
    async fn write_all(&self, statements: Vec<(String, Vec<Value>)>) -> Result<(), StoreError> {
        if statements.is_empty() {
            return Ok(());
        }
        let txn = self.begin_plain_write().await?;
        let backend = self.engine().backend();
        for (sql, values) in statements {
            txn.execute_raw(Statement::from_sql_and_values(backend, sql, values))
                .await?;
        }
        txn.commit().await?;
        Ok(())
    }

    /// Stages a page of events under the run.
    pub async fn billing_stage_events(
        &self,
        run: i64,
        account_id: i32,
        events: Vec<StagedEvent>,
    ) -> Result<(), StoreError> {
        let rows = events
            .into_iter()
            .map(|e| {
                vec![
                    run.into(),
                    account_id.into(),
                    e.request_id.into(),
                    e.endpoint_id.into(),
                    micros(e.billed_at).into(),
                    e.cost_nano.into(),
                    e.quantity.into(),
                    e.unit.into(),
                    e.unit_price.into(),
                    e.percent_discount.into(),
                    e.tags.into(),
                ]
            })
            .collect();
        self.write_all(insert_statements(
            "gw_fal_billing_events",
            &EVENT_COLUMNS,
            rows,
        ))
        .await
    }

    /// The account's tasks created in `[from, to)` after `after` (the
    /// previous batch's last `(created_at, id)`), oldest first, at most
    /// `limit`, with their ledger sums and the run's events.
    pub async fn billing_task_batch(
        &self,
        run: i64,
        api_key: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        after: Option<(LocalTime, i32)>,
        limit: u64,
    ) -> Result<Vec<TaskBatchRow>, StoreError> {
        let zone = self.legacy_zone();
        let local = |t: DateTime<Utc>| LocalTime::of(crate::time::truncate_micros(t), zone);
        // The keyset's lower bound is the index condition: the first batch
        // starts at `from` (before any id), each next after the last row.
        let (at, id) = after.unwrap_or((local(from), i32::MIN));
        let values: Vec<Value> = vec![
            api_key.into(),
            local(to).into(),
            at.into(),
            id.into(),
            run.into(),
            (limit as i64).into(),
        ];
        // `cost_money` is `real` on an adopted PostgreSQL database: read
        // through `numeric`, as written (see `read::costs`).
        let cost = match self.engine() {
            Engine::Postgres => "CAST(CAST(t.cost_money AS NUMERIC) AS DOUBLE PRECISION)",
            Engine::Sqlite => "t.cost_money",
        };
        // The job's ledger sums and the run's events of its request id.
        // PostgreSQL: one index lookup each (LATERAL); SQLite, which has no
        // LATERAL, one correlated lookup per figure (cheap in-process).
        let ledger_where = "p.source_id = t.task_id AND p.source_type = 'fal' \
             AND p.type IN ('consume', 'refund')";
        let events_where = "e.run_id = $5 AND e.request_id = t.online_task_id";
        let ledger_sums = "CAST(COALESCE(SUM(CASE WHEN p.type = 'consume' THEN p.amount ELSE 0 END), 0) AS BIGINT) AS ledger_charged, \
             CAST(COALESCE(SUM(CASE WHEN p.type = 'refund' THEN p.amount ELSE 0 END), 0) AS BIGINT) AS ledger_refunded, \
             CAST(COUNT(CASE WHEN p.type = 'refund' THEN 1 END) AS BIGINT) AS ledger_refunds";
        let event_sums = "COUNT(*) AS n, CAST(SUM(e.cost_nano) AS BIGINT) AS fal_cost, \
             SUM(e.quantity) AS quantity, MIN(e.unit) AS unit";
        let (figures, joins) = match self.engine() {
            Engine::Postgres => (
                "l.ledger_charged, l.ledger_refunded, l.ledger_refunds, b.n, b.fal_cost, b.quantity, b.unit"
                    .to_owned(),
                format!(
                    " CROSS JOIN LATERAL (SELECT {ledger_sums} FROM mjk_point_transactions p \
                       WHERE {ledger_where}) l \
                     CROSS JOIN LATERAL (SELECT {event_sums} FROM gw_fal_billing_events e \
                       WHERE {events_where}) b"
                ),
            ),
            Engine::Sqlite => {
                let one = |what: &str, from: &str, alias: &str, cond: &str| {
                    format!("(SELECT {what} FROM {from} {alias} WHERE {cond})")
                };
                let ledger = |what: &str| one(what, "mjk_point_transactions", "p", ledger_where);
                let events = |what: &str| one(what, "gw_fal_billing_events", "e", events_where);
                (
                    format!(
                        "{} AS ledger_charged, {} AS ledger_refunded, {} AS ledger_refunds, \
                         {} AS n, {} AS fal_cost, {} AS quantity, {} AS unit",
                        ledger("COALESCE(SUM(CASE WHEN p.type = 'consume' THEN p.amount ELSE 0 END), 0)"),
                        ledger("COALESCE(SUM(CASE WHEN p.type = 'refund' THEN p.amount ELSE 0 END), 0)"),
                        ledger("COUNT(CASE WHEN p.type = 'refund' THEN 1 END)"),
                        events("COUNT(*)"),
                        events("SUM(e.cost_nano)"),
                        events("SUM(e.quantity)"),
                        events("MIN(e.unit)"),
                    ),
                    String::new(),
                )
            }
        };
        let sql = format!(
            "SELECT t.id, t.task_id, t.online_task_id, t.user_id, t.app_name, t.status, \
               CAST(t.money AS BIGINT) AS money, t.is_refund, {cost} AS cost_money, t.created_at, \
               {figures} \
             FROM ts_fal_tasks t{joins} \
             WHERE t.api_key = $1 AND t.created_at >= $3 AND t.created_at < $2 \
               AND (t.created_at > $3 OR t.id > $4) \
             ORDER BY t.created_at, t.id LIMIT $6"
        );
        self.rows(sql, values, |r| {
            let local: LocalTime = r.try_get("", "created_at")?;
            let n: i64 = r.try_get("", "n")?;
            let billed = if n > 0 {
                Some(Billed {
                    cost_nano: r.try_get::<Option<i64>>("", "fal_cost")?.unwrap_or(0),
                    events: n,
                    quantity: r.try_get("", "quantity")?,
                    unit: r.try_get("", "unit")?,
                })
            } else {
                None
            };
            Ok(TaskBatchRow {
                row_id: r.try_get("", "id")?,
                task_id: r.try_get("", "task_id")?,
                request_id: r.try_get("", "online_task_id")?,
                user_id: r.try_get("", "user_id")?,
                app_name: r.try_get("", "app_name")?,
                status: r.try_get("", "status")?,
                money: r.try_get("", "money")?,
                is_refund: r.try_get::<i32>("", "is_refund")? == 1,
                cost_money: r.try_get::<Option<f64>>("", "cost_money")?.unwrap_or(0.0),
                created_at: local.instant(zone),
                local_created_at: local,
                ledger_charged: r.try_get("", "ledger_charged")?,
                ledger_refunded: r.try_get("", "ledger_refunded")?,
                ledger_refunds: r.try_get("", "ledger_refunds")?,
                billed,
            })
        })
        .await
    }

    /// The run's requests that no task records, first billed in
    /// `[from, to)`, after `after` in request-id order, at most `limit`.
    pub async fn billing_unmatched(
        &self,
        run: i64,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        after: Option<&str>,
        limit: u64,
    ) -> Result<Vec<UnmatchedEvent>, StoreError> {
        self.rows(
            "SELECT e.request_id, MIN(e.endpoint_id) AS endpoint_id, \
               MIN(e.billed_us) AS billed_us, CAST(SUM(e.cost_nano) AS BIGINT) AS cost, \
               COUNT(*) AS n, SUM(e.quantity) AS quantity, MIN(e.unit) AS unit \
             FROM gw_fal_billing_events e \
             WHERE e.run_id = $1 AND e.request_id > $2 \
               AND NOT EXISTS (SELECT 1 FROM ts_fal_tasks t WHERE t.online_task_id = e.request_id) \
             GROUP BY e.request_id \
             HAVING MIN(e.billed_us) >= $3 AND MIN(e.billed_us) < $4 \
             ORDER BY e.request_id LIMIT $5",
            vec![
                run.into(),
                after.unwrap_or("").into(),
                micros(from).into(),
                micros(to).into(),
                (limit as i64).into(),
            ],
            |r| {
                Ok(UnmatchedEvent {
                    request_id: r.try_get("", "request_id")?,
                    endpoint_id: r.try_get("", "endpoint_id")?,
                    billed_at: instant(r.try_get("", "billed_us")?),
                    billed: billed(r)?,
                })
            },
        )
        .await
    }

    /// Stores judged lines under the run (invisible until it publishes).
    pub async fn billing_insert_lines(
        &self,
        run: i64,
        lines: Vec<LineDraft>,
    ) -> Result<(), StoreError> {
        let mut cols = vec!["run_id"];
        cols.extend(LINE_COLUMNS);
        let rows = lines
            .into_iter()
            .map(|l| {
                let mut v: Vec<Value> = vec![run.into()];
                v.extend(l.values());
                v
            })
            .collect();
        self.write_all(insert_statements("gw_fal_billing_lines", &cols, rows))
            .await
    }

    /// Publishes the run: in one transaction, the lines published runs
    /// wrote for the account in `[from, to)` and their staged events in
    /// `[from, events_to)` go, and the run turns `done` with its line
    /// count. `false` when the run was no longer running (abandoned
    /// meanwhile): nothing changed.
    pub async fn billing_publish(
        &self,
        run: i64,
        account_id: i32,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        events_to: DateTime<Utc>,
        lines: i64,
    ) -> Result<bool, StoreError> {
        let txn = self.begin_plain_write().await?;
        let backend = self.engine().backend();
        match self.engine() {
            Engine::Postgres => {
                // One account's publications one at a time, whichever
                // instance runs them; a large window's delete may outlast
                // the request budget the sessions run with.
                txn.execute_raw(Statement::from_sql_and_values(
                    backend,
                    "SELECT pg_advisory_xact_lock(7027, $1)",
                    [account_id.into()],
                ))
                .await?;
                txn.execute_unprepared("SET LOCAL statement_timeout = '15min'")
                    .await?;
            }
            Engine::Sqlite => {}
        }
        let done = "SELECT id FROM gw_fal_billing_runs WHERE status = 'done' AND account_id = $1";
        txn.execute_raw(Statement::from_sql_and_values(
            backend,
            format!(
                "DELETE FROM gw_fal_billing_lines WHERE account_id = $1 AND at_us >= $2 \
                   AND at_us < $3 AND run_id IN ({done})"
            ),
            [account_id.into(), micros(from).into(), micros(to).into()],
        ))
        .await?;
        txn.execute_raw(Statement::from_sql_and_values(
            backend,
            format!(
                "DELETE FROM gw_fal_billing_events WHERE account_id = $1 AND billed_us >= $2 \
                   AND billed_us < $3 AND run_id IN ({done})"
            ),
            [
                account_id.into(),
                micros(from).into(),
                micros(events_to).into(),
            ],
        ))
        .await?;
        let r = txn
            .execute_raw(Statement::from_sql_and_values(
                backend,
                "UPDATE gw_fal_billing_runs SET status = 'done', finished_us = $2, lines = $3 \
                 WHERE id = $1 AND status = 'running'",
                [run.into(), micros(crate::time::now()).into(), lines.into()],
            ))
            .await?;
        if r.rows_affected() != 1 {
            txn.rollback().await?;
            return Ok(false);
        }
        txn.commit().await?;
        Ok(true)
    }
}
