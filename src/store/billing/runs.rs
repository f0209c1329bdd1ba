//! `gw_fal_billing_runs`: one row per pull of one account's window.

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, Statement};

use super::{instant, micros};
use crate::store::{Store, StoreError};

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    Running,
    Done,
    Failed,
    /// Still `running` long after any run could: its instance died; its
    /// staging was deleted.
    Abandoned,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Done => "done",
            RunStatus::Failed => "failed",
            RunStatus::Abandoned => "abandoned",
        }
    }

    fn parse(s: &str) -> RunStatus {
        match s {
            "running" => RunStatus::Running,
            "done" => RunStatus::Done,
            "failed" => RunStatus::Failed,
            _ => RunStatus::Abandoned,
        }
    }
}

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunTrigger {
    /// The admin mutation.
    Api,
    /// The scheduled pull.
    Schedule,
    /// `points-gateway reconcile-fal`.
    Cli,
}

impl RunTrigger {
    pub fn as_str(self) -> &'static str {
        match self {
            RunTrigger::Api => "api",
            RunTrigger::Schedule => "schedule",
            RunTrigger::Cli => "cli",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RunRow {
    pub id: i64,
    pub account_id: i32,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub trigger: String,
    pub status: RunStatus,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub pages: i32,
    pub events: i64,
    pub lines: i64,
    pub error_code: Option<String>,
    pub error: Option<String>,
}

const RUN_COLUMNS: &str = "id, account_id, from_us, to_us, trigger, status, started_us, \
     finished_us, pages, events, lines, error_code, error";

fn run_row(r: &sea_orm::QueryResult) -> Result<RunRow, sea_orm::DbErr> {
    Ok(RunRow {
        id: r.try_get("", "id")?,
        account_id: r.try_get("", "account_id")?,
        from: instant(r.try_get("", "from_us")?),
        to: instant(r.try_get("", "to_us")?),
        trigger: r.try_get("", "trigger")?,
        status: RunStatus::parse(&r.try_get::<String>("", "status")?),
        started_at: instant(r.try_get("", "started_us")?),
        finished_at: r.try_get::<Option<i64>>("", "finished_us")?.map(instant),
        pages: r.try_get("", "pages")?,
        events: r.try_get("", "events")?,
        lines: r.try_get("", "lines")?,
        error_code: r.try_get("", "error_code")?,
        error: r.try_get("", "error")?,
    })
}

/// A run still `running` after this long has lost its instance.
const STALE_AFTER: chrono::Duration = chrono::Duration::hours(6);

impl Store {
    /// Marks the runs that lost their instance `abandoned` and deletes
    /// their staging.
    pub async fn billing_abandon_stale(&self) -> Result<(), StoreError> {
        let stale = self
            .rows(
                "SELECT id FROM gw_fal_billing_runs WHERE status = 'running' AND started_us < $1",
                vec![micros(crate::time::now() - STALE_AFTER).into()],
                |r| r.try_get::<i64>("", "id"),
            )
            .await?;
        for id in stale {
            self.billing_run_end(id, RunStatus::Abandoned, None).await?;
        }
        Ok(())
    }

    /// Records a new run of `account_id` over `[from, to)`.
    pub async fn billing_run_start(
        &self,
        account_id: i32,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        trigger: RunTrigger,
    ) -> Result<i64, StoreError> {
        let now = crate::time::now();
        let rows = self
            .rows(
                "INSERT INTO gw_fal_billing_runs \
                   (account_id, from_us, to_us, trigger, status, started_us) \
                 VALUES ($1, $2, $3, $4, 'running', $5) RETURNING id",
                vec![
                    account_id.into(),
                    micros(from).into(),
                    micros(to).into(),
                    trigger.as_str().into(),
                    micros(now).into(),
                ],
                |r| r.try_get::<i64>("", "id"),
            )
            .await?;
        rows.into_iter()
            .next()
            .ok_or_else(|| StoreError::custom("INSERT … RETURNING gave no id"))
    }

    /// Adds a page's figures to a running run.
    pub async fn billing_run_progress(
        &self,
        run: i64,
        pages: i32,
        events: i64,
    ) -> Result<(), StoreError> {
        self.conn()
            .execute_raw(Statement::from_sql_and_values(
                self.engine().backend(),
                "UPDATE gw_fal_billing_runs SET pages = pages + $2, events = events + $3 \
                 WHERE id = $1",
                [run.into(), pages.into(), events.into()],
            ))
            .await?;
        Ok(())
    }

    /// Ends a run that did not publish (`failed` with why, or
    /// `abandoned`) and deletes what it staged.
    pub async fn billing_run_end(
        &self,
        run: i64,
        status: RunStatus,
        error: Option<(&str, &str)>,
    ) -> Result<(), StoreError> {
        let db = self.conn();
        let backend = self.engine().backend();
        for table in ["gw_fal_billing_lines", "gw_fal_billing_events"] {
            db.execute_raw(Statement::from_sql_and_values(
                backend,
                format!("DELETE FROM {table} WHERE run_id = $1"),
                [run.into()],
            ))
            .await?;
        }
        let (code, message) = match error {
            Some((c, m)) => (
                Some(c.to_owned()),
                Some(m.chars().take(500).collect::<String>()),
            ),
            None => (None, None),
        };
        db.execute_raw(Statement::from_sql_and_values(
            backend,
            "UPDATE gw_fal_billing_runs SET status = $2, finished_us = $3, error_code = $4, \
               error = $5 WHERE id = $1 AND status = 'running'",
            [
                run.into(),
                status.as_str().into(),
                micros(crate::time::now()).into(),
                code.into(),
                message.into(),
            ],
        ))
        .await?;
        Ok(())
    }

    pub async fn billing_run(&self, run: i64) -> Result<Option<RunRow>, StoreError> {
        Ok(self
            .rows(
                format!("SELECT {RUN_COLUMNS} FROM gw_fal_billing_runs WHERE id = $1"),
                vec![run.into()],
                run_row,
            )
            .await?
            .into_iter()
            .next())
    }

    /// The newest runs first, of one account or all; at most `limit`.
    pub async fn billing_runs(
        &self,
        account_id: Option<i32>,
        limit: u64,
    ) -> Result<Vec<RunRow>, StoreError> {
        let (filter, mut values) = match account_id {
            Some(a) => ("WHERE account_id = $1", vec![a.into()]),
            None => ("", vec![]),
        };
        values.push((limit as i64).into());
        let n = values.len();
        self.rows(
            format!(
                "SELECT {RUN_COLUMNS} FROM gw_fal_billing_runs {filter} \
                 ORDER BY started_us DESC, id DESC LIMIT ${n}"
            ),
            values,
            run_row,
        )
        .await
    }

    /// When the newest scheduled run of the account started, if any: a
    /// scheduled pull another instance made recently is not repeated.
    pub async fn billing_last_scheduled(
        &self,
        account_id: i32,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let rows = self
            .rows(
                "SELECT MAX(started_us) AS at FROM gw_fal_billing_runs \
                 WHERE account_id = $1 AND trigger = 'schedule' AND status <> 'failed'",
                vec![account_id.into()],
                |r| r.try_get::<Option<i64>>("", "at"),
            )
            .await?;
        Ok(rows.into_iter().next().flatten().map(instant))
    }
}
