//! The text `adopt` prints: what was found, what would be done, what is odd.

use std::fmt::Write;

use super::plan::{plan, OpeningBalance, Plan, FIRST_GATEWAY_ID};
use super::{Inventory, UserMap};

/// What the gateway adds to a database it adopts (beside the users).
pub struct Additions<'a> {
    pub tables: &'a [&'a str],
    pub seed_indexes: &'a [&'a str],
    pub trigger: Option<&'a str>,
    pub missing_seed_tables: Vec<&'a str>,
}

/// The report; `chosen`: the `--opening-balance` given (the dry run shows
/// every policy's total either way). Returns the text and whether `--apply`
/// could proceed with `chosen` (or, none given, with any policy).
pub fn render(
    title: &str,
    inv: &Inventory,
    map: &UserMap,
    chosen: Option<OpeningBalance>,
    adds: &Additions<'_>,
) -> (String, Result<Plan, Vec<String>>) {
    let mut s = String::new();
    let _ = writeln!(s, "{title}\n");
    let _ = writeln!(s, "Seed tables");
    for t in &inv.tables {
        match t.rows {
            Some(n) => {
                let _ = writeln!(s, "  {:<28} found, {n} rows", t.name);
            }
            None => {
                let _ = writeln!(
                    s,
                    "  {:<28} missing (would be created with the ORM's types)",
                    t.name
                );
            }
        }
    }
    let _ = writeln!(
        s,
        "  {:<28} {}",
        "ts_users",
        match (&inv.ts_users_table, &inv.ts_balance_columns) {
            (true, Some(c)) => format!(
                "found (`id` and the balance in {} are read; never written)",
                c.describe()
            ),
            (true, None) =>
                "found (only `id` is read: no balance column known; never written)".to_owned(),
            (false, _) => "missing (ts users are the ids the ts tables name)".to_owned(),
        }
    );
    let diffs: Vec<_> = inv
        .tables
        .iter()
        .flat_map(|t| t.differences.iter().map(move |d| (t.name, d)))
        .collect();
    let _ = writeln!(s, "\nTypes and nullability against the seeds' ORMs");
    if diffs.is_empty() {
        let _ = writeln!(s, "  as the ORMs create them");
    }
    for (table, d) in diffs {
        let _ = writeln!(
            s,
            "  {table}.{}: {} (ORM: {}) - {}{}",
            d.column,
            d.found,
            d.expected,
            d.note,
            if d.blocks { " [cannot proceed]" } else { "" }
        );
    }

    let _ = writeln!(s, "\nThe gateway would add");
    let _ = writeln!(s, "  tables: {}", adds.tables.join(", "));
    if !adds.missing_seed_tables.is_empty() {
        let _ = writeln!(
            s,
            "  missing seed tables: {}",
            adds.missing_seed_tables.join(", ")
        );
    }
    let _ = writeln!(
        s,
        "  indexes on seed tables (none unique): {}",
        adds.seed_indexes.join(", ")
    );
    if let Some(t) = adds.trigger {
        let _ = writeln!(s, "  trigger: {t}");
    }
    let _ = writeln!(
        s,
        "  the cutover: ledger rows up to id {} and ts_points_detail rows up to id {} stay history, \
         shown and never rewritten",
        inv.ledger_max_id, inv.detail_max_id
    );

    let mapped = map.pairs.len();
    let _ = writeln!(s, "\nUsers");
    let _ = writeln!(
        s,
        "  ts platform: {}, mjk ledger: {}, joined by --user-map: {mapped}",
        inv.ts_users.len(),
        inv.ledger_users.len()
    );
    let totals: Vec<(OpeningBalance, Result<Plan, Vec<String>>)> = [
        OpeningBalance::Ledger,
        OpeningBalance::Platform,
        OpeningBalance::Sum,
    ]
    .into_iter()
    .map(|p| (p, plan(inv, map, p)))
    .collect();
    let any = totals.iter().find_map(|(_, r)| r.as_ref().ok()).cloned();
    if let Some(p) = &any {
        let mjk_only = p.users.iter().filter(|u| !u.ts).count();
        let _ = writeln!(
            s,
            "  would adopt {} users: {} under their ts id, {mjk_only} known to the mjk ledger only \
             (ids from {FIRST_GATEWAY_ID})",
            p.users.len(),
            p.users.len() - mjk_only
        );
        let _ = writeln!(
            s,
            "  opening balances (one `opening` row and batch per user with points):"
        );
        for (policy, r) in &totals {
            if let Ok(p) = r {
                let rows = p.users.iter().filter(|u| u.opening > 0).count();
                let mark = if Some(*policy) == chosen {
                    "  <- chosen"
                } else {
                    ""
                };
                let _ = writeln!(
                    s,
                    "    --opening-balance {:<8} {rows} rows, {} points{mark}",
                    policy.as_str(),
                    p.total_opening
                );
            }
        }
        examples(
            &mut s,
            "users whose two balances disagree (mjk ledger vs ts platform)",
            p.disagreements.len() as i64,
            p.disagreements
                .iter()
                .map(|(id, u, l, pl)| format!("ts {id} / mjk {u}: ledger {l}, platform {pl}")),
        );
        if let Some(c) = &inv.ts_balance_columns {
            let _ = writeln!(
                s,
                "  ts_users {}: kept in step with every change under --opening-balance platform \
                 (each ts user opens with what it holds); left as it is under ledger and sum",
                c.describe()
            );
        }
        examples(
            &mut s,
            "ts users whose ts_users balance differs from their statement (the platform opens with ts_users)",
            p.statement_drift.len() as i64,
            p.statement_drift
                .iter()
                .map(|(id, st, held)| format!("ts {id}: statement {st}, ts_users {held} ({:+})", held - st)),
        );
        examples(
            &mut s,
            "balances below zero at the cutover (opened at 0)",
            p.clamped.len() as i64,
            p.clamped.iter().map(|(id, b)| format!("user {id}: {b}")),
        );
    }

    let _ = writeln!(
        s,
        "\nAnomalies in the history (reported, not repaired; they do not block --apply)"
    );
    if inv.anomalies.iter().all(|a| a.count == 0) {
        let _ = writeln!(s, "  none found");
    }
    for a in inv.anomalies.iter().filter(|a| a.count > 0) {
        examples(&mut s, a.kind, a.count, a.examples.iter().cloned());
    }

    let verdict = match chosen {
        Some(c) => totals
            .into_iter()
            .find(|(p, _)| *p == c)
            .map(|(_, r)| r)
            .unwrap_or_else(|| Err(vec!["no plan".to_owned()])),
        None => match any {
            Some(p) => Ok(p),
            None => totals
                .into_iter()
                .next()
                .map(|(_, r)| r)
                .unwrap_or_else(|| Err(vec!["no plan".to_owned()])),
        },
    };
    if let Err(blockers) = &verdict {
        let _ = writeln!(s, "\nCannot proceed; nothing was changed:");
        for b in blockers {
            let _ = writeln!(s, "  - {b}");
        }
    }
    (s, verdict)
}

fn examples(s: &mut String, what: &str, count: i64, items: impl Iterator<Item = String>) {
    if count == 0 {
        return;
    }
    let _ = writeln!(s, "  {what}: {count}");
    for e in items.take(5) {
        let _ = writeln!(s, "    e.g. {e}");
    }
}
