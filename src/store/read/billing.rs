//! Reading the reconciliation's published lines: pages (newest first),
//! counts, and totals per account, endpoint or user. Only lines of `done`
//! runs are read (see `store::billing`).

use chrono::{DateTime, Utc};
use sea_orm::Value;

use super::{Cursor, Page};
use crate::store::billing::{micros, LineDraft};
use crate::store::{Store, StoreError};

/// Which lines: a window of `at` and optional narrowing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LineFilter {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub account_ids: Option<Vec<i32>>,
    pub user_id: Option<i32>,
    pub endpoint_id: Option<String>,
    /// Lines raising any of these flags (bits); `None`: every line.
    pub any_flags: Option<i32>,
}

/// A published line and its id.
#[derive(Debug, Clone, PartialEq)]
pub struct LineRow {
    pub id: i64,
    pub line: LineDraft,
}

const FROM: &str = "FROM gw_fal_billing_lines l \
     JOIN gw_fal_billing_runs r ON r.id = l.run_id AND r.status = 'done'";

impl LineFilter {
    /// The WHERE clause and its values (numbered from `$1`).
    fn clause(&self) -> (String, Vec<Value>) {
        let mut values: Vec<Value> = vec![micros(self.from).into(), micros(self.to).into()];
        let mut sql = "l.at_us >= $1 AND l.at_us < $2".to_owned();
        if let Some(ids) = &self.account_ids {
            if ids.is_empty() {
                sql.push_str(" AND 1 = 0");
            } else {
                let mut ph = Vec::new();
                for id in ids {
                    values.push((*id).into());
                    ph.push(format!("${}", values.len()));
                }
                sql.push_str(&format!(" AND l.account_id IN ({})", ph.join(", ")));
            }
        }
        if let Some(u) = self.user_id {
            values.push(u.into());
            sql.push_str(&format!(" AND l.user_id = ${}", values.len()));
        }
        if let Some(e) = &self.endpoint_id {
            values.push(e.clone().into());
            sql.push_str(&format!(" AND l.endpoint_id = ${}", values.len()));
        }
        if let Some(bits) = self.any_flags {
            values.push(bits.into());
            sql.push_str(&format!(" AND (l.flags & ${}) <> 0", values.len()));
        }
        (sql, values)
    }
}

fn line_row(r: &sea_orm::QueryResult) -> Result<LineRow, sea_orm::DbErr> {
    Ok(LineRow {
        id: r.try_get("", "id")?,
        line: LineDraft::read(r)?,
    })
}

/// A page of lines, newest first, and whether more follow.
pub async fn line_page(
    store: &Store,
    filter: &LineFilter,
    page: &Page,
) -> Result<(Vec<LineRow>, bool), StoreError> {
    let (mut sql, mut values) = filter.clause();
    if let Some(Cursor { at, id }) = page.after {
        values.push(micros(at).into());
        let a = values.len();
        values.push(id.into());
        let i = values.len();
        // The bound on `at_us` alone narrows the index range; the OR only
        // settles ties, so a page reads its own rows, not every row sent.
        sql.push_str(&format!(
            " AND l.at_us <= ${a} AND (l.at_us < ${a} OR l.id < ${i})"
        ));
    }
    values.push(((page.first + 1) as i64).into());
    let n = values.len();
    let cols = crate::store::billing::LINE_COLUMNS
        .iter()
        .map(|c| format!("l.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let rows = store
        .rows(
            format!(
                "SELECT l.id, {cols} {FROM} WHERE {sql} \
                 ORDER BY l.at_us DESC, l.id DESC LIMIT ${n}"
            ),
            values,
            line_row,
        )
        .await?;
    Ok(page.finish(rows))
}

pub async fn line_count(store: &Store, filter: &LineFilter) -> Result<u64, StoreError> {
    let (sql, values) = filter.clause();
    let rows = store
        .rows(
            format!("SELECT COUNT(*) AS n {FROM} WHERE {sql}"),
            values,
            |r| r.try_get::<i64>("", "n"),
        )
        .await?;
    Ok(rows.into_iter().next().unwrap_or(0).max(0) as u64)
}

/// What totals are grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Account,
    /// The fal endpoint id, across the accounts the filter keeps.
    Endpoint,
    /// The ts user (lines without a task have none and group under null).
    User,
}

/// Sums over a group of lines. Money sums are exact integers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals {
    pub account_id: Option<i32>,
    pub endpoint_id: Option<String>,
    pub user_id: Option<i32>,
    pub lines: i64,
    pub tasks: i64,
    pub fal_events: i64,
    pub charged_points: i64,
    pub refunded_points: i64,
    pub cost_money_nano: i64,
    pub fal_cost_nano: i64,
    pub margin_nano: i64,
    /// Lines raising each of the flag bits asked for, in their order.
    pub flagged: Vec<i64>,
}

/// Totals per group, ordered by the group (users: by margin, lowest
/// first), at most `limit` groups, with the lines raising each of
/// `flag_bits` counted.
pub async fn totals(
    store: &Store,
    filter: &LineFilter,
    by: GroupBy,
    flag_bits: &[i32],
    limit: u64,
) -> Result<Vec<Totals>, StoreError> {
    let (sql, mut values) = filter.clause();
    let (key, order) = match by {
        GroupBy::Account => ("l.account_id", "l.account_id"),
        GroupBy::Endpoint => ("l.endpoint_id", "l.endpoint_id"),
        GroupBy::User => ("l.user_id", "margin ASC, l.user_id"),
    };
    let mut flagged: Vec<String> = flag_bits
        .iter()
        .enumerate()
        .map(|(i, bit)| {
            format!(
                "CAST(SUM(CASE WHEN (l.flags & {bit}) <> 0 THEN 1 ELSE 0 END) AS BIGINT) AS f{i}"
            )
        })
        .collect();
    if flagged.is_empty() {
        flagged.push("0 AS f".to_owned());
    }
    values.push((limit as i64).into());
    let n = values.len();
    store
        .rows(
            format!(
                "SELECT {key} AS k, COUNT(*) AS lines, \
                   CAST(SUM(CASE WHEN l.task_row_id IS NULL THEN 0 ELSE 1 END) AS BIGINT) AS tasks, \
                   CAST(SUM(l.fal_events) AS BIGINT) AS events, \
                   CAST(SUM(l.charged_points) AS BIGINT) AS charged, \
                   CAST(SUM(l.refunded_points) AS BIGINT) AS refunded, \
                   CAST(COALESCE(SUM(l.cost_money_nano), 0) AS BIGINT) AS cost_money, \
                   CAST(COALESCE(SUM(l.fal_cost_nano), 0) AS BIGINT) AS fal_cost, \
                   CAST(SUM(l.margin_nano) AS BIGINT) AS margin, {} \
                 {FROM} WHERE {sql} GROUP BY {key} ORDER BY {order} LIMIT ${n}",
                flagged.join(", ")
            ),
            values,
            |r| {
                let mut t = Totals {
                    lines: r.try_get("", "lines")?,
                    tasks: r.try_get("", "tasks")?,
                    fal_events: r.try_get("", "events")?,
                    charged_points: r.try_get("", "charged")?,
                    refunded_points: r.try_get("", "refunded")?,
                    cost_money_nano: r.try_get("", "cost_money")?,
                    fal_cost_nano: r.try_get("", "fal_cost")?,
                    margin_nano: r.try_get("", "margin")?,
                    ..Totals::default()
                };
                for i in 0..flag_bits.len() {
                    t.flagged.push(r.try_get("", &format!("f{i}"))?);
                }
                match by {
                    GroupBy::Account => t.account_id = r.try_get("", "k")?,
                    GroupBy::Endpoint => t.endpoint_id = r.try_get("", "k")?,
                    GroupBy::User => t.user_id = r.try_get("", "k")?,
                }
                Ok(t)
            },
        )
        .await
}
