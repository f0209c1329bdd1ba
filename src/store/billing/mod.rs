//! The stored side of the per-job reconciliation against fal's billing
//! events (migration 14).
//!
//! A run pulls one account's window: its events are staged under its run
//! id as pages arrive (`stage`), its lines are built in batches under the
//! same id (`build`), and `publish` swaps them in, in one transaction:
//! the lines other runs wrote for that account and window go, and the
//! run turns `done`. Readers see lines of `done` runs only, so a window
//! being re-pulled shows its old lines until the new ones are complete,
//! and a re-run replaces a window's lines exactly. A failed or abandoned
//! run's staging is deleted.

mod build;
mod runs;

pub(crate) use build::LINE_COLUMNS;
pub use build::{Billed, LineDraft, StagedEvent, TaskBatchRow, UnmatchedEvent};
pub use runs::{RunRow, RunStatus, RunTrigger};

use chrono::{DateTime, Utc};

/// Microseconds since the epoch: how migration 14 stores times.
pub fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// The instant stored as microseconds; a value out of range reads as the
/// epoch rather than failing a report.
pub fn instant(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or_default()
}

/// Most bind values in one statement: under SQLite's and PostgreSQL's limits.
const MAX_BINDS: usize = 20_000;

/// `INSERT INTO table (cols) VALUES (…), (…)` for `rows`, cut into
/// statements of at most [`MAX_BINDS`] values.
fn insert_statements(
    table: &str,
    cols: &[&str],
    rows: Vec<Vec<sea_orm::Value>>,
) -> Vec<(String, Vec<sea_orm::Value>)> {
    let per = (MAX_BINDS / cols.len()).max(1);
    let mut out = Vec::new();
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let mut sql = format!("INSERT INTO {table} ({}) VALUES ", cols.join(", "));
        let mut values = Vec::new();
        for (i, row) in rows.by_ref().take(per).enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
            for (j, v) in row.into_iter().enumerate() {
                if j > 0 {
                    sql.push_str(", ");
                }
                values.push(v);
                sql.push_str(&format!("${}", values.len()));
            }
            sql.push(')');
        }
        out.push((sql, values));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inserts_are_cut_under_the_bind_limit() {
        let rows: Vec<Vec<sea_orm::Value>> =
            (0..25_000).map(|i| vec![i.into(), "x".into()]).collect();
        let stmts = insert_statements("t", &["a", "b"], rows);
        assert_eq!(stmts.len(), 3);
        assert_eq!(stmts[0].1.len(), 20_000);
        assert_eq!(stmts[2].1.len(), 10_000);
        assert!(stmts[0]
            .0
            .starts_with("INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4)"));
        assert!(stmts[1].0.contains("($1, $2)"));
        assert!(insert_statements("t", &["a"], Vec::new()).is_empty());
    }

    #[test]
    fn micros_round_trip() {
        let t: DateTime<Utc> = "2026-02-03T04:05:06.123456Z".parse().unwrap();
        assert_eq!(instant(micros(t)), t);
    }
}
