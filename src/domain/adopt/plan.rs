//! What `adopt --apply` would do: one gateway user per person (both
//! systems' identities where the user map joins them), and the balance each
//! opens with.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use uuid::Uuid;

use super::{Inventory, UserMap};
use crate::domain::input::MAX_BALANCE;

/// Where an adopted user's opening balance comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpeningBalance {
    /// The mjk ledger's last `balance_after`.
    Ledger,
    /// The ts platform's balance (its statement's last `balance_after`).
    Platform,
    /// Both: the two systems sold points separately.
    Sum,
}

impl OpeningBalance {
    pub fn as_str(self) -> &'static str {
        match self {
            OpeningBalance::Ledger => "ledger",
            OpeningBalance::Platform => "platform",
            OpeningBalance::Sum => "sum",
        }
    }
}

impl FromStr for OpeningBalance {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ledger" => Ok(OpeningBalance::Ledger),
            "platform" => Ok(OpeningBalance::Platform),
            "sum" => Ok(OpeningBalance::Sum),
            _ => Err(format!(
                "--opening-balance must be ledger, platform or sum, not {s:?}"
            )),
        }
    }
}

/// Where the ids the gateway gives out start (defined with the ids it
/// checks, in `input`).
pub use crate::domain::input::FIRST_GATEWAY_ID;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedUser {
    /// The gateway's (and the ts tables') int id.
    pub id: i32,
    /// The ledger's uuid.
    pub uuid: Uuid,
    pub name: String,
    /// Known to the ts platform / to the mjk ledger.
    pub ts: bool,
    pub mjk: bool,
    pub ledger: Option<i64>,
    pub platform: Option<i64>,
    /// The platform's balance split as `ts_users` holds it (paid, gift),
    /// where its balance columns were read.
    pub split: Option<(i64, i64)>,
    pub opening: i64,
    /// The part of `opening` that is gift points (`ts_users`' gift column,
    /// under the `platform` and `sum` policies); the rest is paid.
    pub opening_gift: i64,
    /// Where the opening figure came from, shown after the label.
    pub note: String,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub policy: OpeningBalance,
    pub users: Vec<PlannedUser>,
    /// Mapped users whose two balances differ: `(ts id, uuid, ledger, platform)`.
    pub disagreements: Vec<(i32, Uuid, i64, i64)>,
    /// ts users whose `ts_users` balance differs from their statement's last
    /// `balance_after` (an admin tool edited `ts_users`, or the statement
    /// missed a write): `(id, statement, ts_users)`. The platform's balance
    /// is what `ts_users` holds, as every old page reads it.
    pub statement_drift: Vec<(i32, i64, i64)>,
    /// Users whose history ends below zero, opened at 0: `(id, balance)`.
    pub clamped: Vec<(i32, i64)>,
    pub total_opening: i64,
}

/// The plan, or every reason `--apply` cannot proceed.
pub fn plan(inv: &Inventory, map: &UserMap, policy: OpeningBalance) -> Result<Plan, Vec<String>> {
    let mut blockers = Vec::new();
    for t in &inv.tables {
        for d in t.differences.iter().filter(|d| d.blocks) {
            blockers.push(format!(
                "{}.{}: found {}, the gateway needs {} ({})",
                t.name, d.column, d.found, d.expected, d.note
            ));
        }
    }
    let ts_known: HashSet<i32> = inv.ts_users.iter().copied().collect();
    let ledger: HashMap<Uuid, i64> = inv.ledger_users.iter().copied().collect();
    if let Some(problem) = &inv.ts_balance_problem {
        blockers.push(problem.clone());
    }
    let statement: HashMap<i32, i64> = inv.platform_balances.iter().copied().collect();
    // What every old page reads (`ts_users`), where its columns were read;
    // else the statement's last balance.
    let split: HashMap<i32, (i64, i64)> = inv
        .ts_user_balances
        .iter()
        .map(|&(id, paid, gift)| (id, (paid, gift)))
        .collect();
    let mut statement_drift = Vec::new();
    let mut platform: HashMap<i32, i64> = statement.clone();
    if inv.ts_balance_columns.is_some() {
        for (&id, &(paid, gift)) in &split {
            let held = paid + gift;
            let stated = statement.get(&id).copied().unwrap_or(0);
            if held != stated {
                statement_drift.push((id, stated, held));
            }
            platform.insert(id, held);
        }
        statement_drift.sort_unstable();
    }
    for &(ts, uuid) in &map.pairs {
        if !ts_known.contains(&ts) {
            blockers.push(format!("user map: ts user {ts} does not exist"));
        }
        if !ledger.contains_key(&uuid) {
            blockers.push(format!(
                "user map: mjk user {uuid} has no row in mjk_point_transactions"
            ));
        }
    }
    let by_ts: HashMap<i32, Uuid> = map.pairs.iter().copied().collect();
    let mapped: HashSet<Uuid> = map.pairs.iter().map(|p| p.1).collect();

    let mut users = Vec::new();
    let mut ts_ids: Vec<i32> = ts_known.iter().copied().collect();
    ts_ids.sort_unstable();
    for id in &ts_ids {
        let uuid = by_ts.get(id).copied();
        users.push(PlannedUser {
            id: *id,
            uuid: uuid.unwrap_or_else(Uuid::new_v4),
            name: match uuid {
                Some(u) => format!("ts:{id} mjk:{u}"),
                None => format!("ts:{id}"),
            },
            ts: true,
            mjk: uuid.is_some(),
            ledger: uuid.and_then(|u| ledger.get(&u).copied()),
            platform: Some(platform.get(id).copied().unwrap_or(0)),
            split: split.get(id).copied(),
            opening: 0,
            opening_gift: 0,
            note: String::new(),
        });
    }
    let mut next = ts_ids
        .last()
        .map_or(FIRST_GATEWAY_ID, |m| (*m).max(FIRST_GATEWAY_ID - 1) + 1);
    for &(uuid, balance) in &inv.ledger_users {
        if mapped.contains(&uuid) {
            continue;
        }
        users.push(PlannedUser {
            id: next,
            uuid,
            name: format!("mjk:{uuid}"),
            ts: false,
            mjk: true,
            ledger: Some(balance),
            platform: None,
            split: None,
            opening: 0,
            opening_gift: 0,
            note: String::new(),
        });
        next = match next.checked_add(1) {
            Some(n) => n,
            None => {
                blockers.push("too many users for 32-bit ids".to_owned());
                break;
            }
        };
    }

    let mut disagreements = Vec::new();
    let mut clamped = Vec::new();
    let mut total_opening = 0i64;
    for u in &mut users {
        if let (true, true, Some(l), Some(p)) = (u.ts, u.mjk, u.ledger, u.platform) {
            if l != p {
                disagreements.push((u.id, u.uuid, l, p));
            }
        }
        let (l, p) = (u.ledger.unwrap_or(0), u.platform.unwrap_or(0));
        let (raw, note) = match policy {
            OpeningBalance::Ledger => (l, format!("（mjk账本 {l}）")),
            OpeningBalance::Platform => (p, format!("（ts平台 {}）", platform_note(p, u.split))),
            OpeningBalance::Sum => (
                l + p,
                format!("（mjk账本 {l} + ts平台 {}）", platform_note(p, u.split)),
            ),
        };
        if raw < 0 {
            clamped.push((u.id, raw));
        }
        u.opening = raw.max(0);
        // The mjk ledger has no split: its points are paid.
        let gift = match (policy, u.split) {
            (OpeningBalance::Ledger, _) | (_, None) => 0,
            (_, Some((_, g))) => g,
        };
        u.opening_gift = gift.clamp(0, u.opening);
        u.note = note;
        if u.opening > MAX_BALANCE {
            blockers.push(format!(
                "user {}: an opening balance of {} is above the cap of {MAX_BALANCE}",
                u.id, u.opening
            ));
        }
        total_opening += u.opening;
    }
    if blockers.is_empty() {
        Ok(Plan {
            policy,
            users,
            disagreements,
            statement_drift,
            clamped,
            total_opening,
        })
    } else {
        Err(blockers)
    }
}

/// The platform's figure as the opening row names it: with its paid and
/// gift parts (充值 / 赠送) where `ts_users` gave them.
fn platform_note(total: i64, split: Option<(i64, i64)>) -> String {
    match split {
        Some((paid, gift)) if gift != 0 => format!("{total}：充值 {paid} + 赠送 {gift}"),
        _ => total.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inv() -> Inventory {
        Inventory {
            ts_users_table: true,
            ts_users: vec![1, 2, 3],
            ledger_users: vec![
                (Uuid::from_u128(10), 500),
                (Uuid::from_u128(11), -12),
                (Uuid::from_u128(12), 0),
            ],
            platform_balances: vec![(1, 300), (2, 40)],
            ..Inventory::default()
        }
    }

    #[test]
    fn mapped_users_get_one_identity_and_the_chosen_opening() {
        let map = UserMap {
            pairs: vec![(1, Uuid::from_u128(10))],
        };
        let p = plan(&inv(), &map, OpeningBalance::Sum).expect("plan");
        assert_eq!(p.users.len(), 5, "3 ts users + 2 mjk-only");
        let one = &p.users[0];
        assert_eq!(
            (one.id, one.uuid, one.opening),
            (1, Uuid::from_u128(10), 800)
        );
        assert_eq!(p.disagreements, vec![(1, Uuid::from_u128(10), 500, 300)]);
        // mjk-only users get ids far above the platform's serial.
        assert_eq!(p.users[3].id, FIRST_GATEWAY_ID);
        assert_eq!(p.users[4].id, FIRST_GATEWAY_ID + 1);
        // A history ending below zero opens at zero, and is listed.
        assert_eq!(p.users[3].opening, 0);
        assert_eq!(p.clamped, vec![(FIRST_GATEWAY_ID, -12)]);
        assert_eq!(p.total_opening, 800 + 40);
        let l = plan(&inv(), &map, OpeningBalance::Ledger).expect("plan");
        assert_eq!(l.users[0].opening, 500);
        assert_eq!(l.users[1].opening, 0);
        let pl = plan(&inv(), &map, OpeningBalance::Platform).expect("plan");
        assert_eq!(pl.users[0].opening, 300);
    }

    #[test]
    fn a_map_naming_unknown_users_cannot_proceed() {
        let map = UserMap {
            pairs: vec![(9, Uuid::from_u128(10)), (2, Uuid::from_u128(99))],
        };
        let errors = plan(&inv(), &map, OpeningBalance::Ledger).expect_err("blocked");
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].contains("ts user 9"));
        assert!(errors[1].contains(&Uuid::from_u128(99).to_string()));
    }

    #[test]
    fn openings_above_the_cap_cannot_proceed() {
        let mut i = inv();
        i.platform_balances = vec![(1, MAX_BALANCE), (2, 1)];
        let map = UserMap {
            pairs: vec![(1, Uuid::from_u128(10))],
        };
        assert!(plan(&i, &map, OpeningBalance::Sum).is_err());
        assert!(plan(&i, &map, OpeningBalance::Platform).is_ok());
    }

    #[test]
    fn the_platform_balance_is_what_ts_users_holds_and_drift_is_listed() {
        let mut i = inv();
        // User 2: an admin tool added 1,000 to `money` with no statement row.
        i.ts_balance_columns = Some(crate::store::adopt::TsBalanceColumns::platform());
        i.ts_user_balances = vec![(1, 200, 100), (2, 1_040, 0), (3, 0, 0)];
        let p = plan(&i, &UserMap::default(), OpeningBalance::Platform).expect("plan");
        assert_eq!(p.users[0].opening, 300);
        assert_eq!(p.users[0].split, Some((200, 100)));
        assert_eq!(p.users[0].opening_gift, 100);
        assert!(
            p.users[0].note.contains("充值 200 + 赠送 100"),
            "{}",
            p.users[0].note
        );
        assert_eq!(p.users[1].opening, 1_040);
        assert_eq!(p.statement_drift, vec![(2, 40, 1_040)]);
        // Without the columns the statement's balance stands, as before.
        let p = plan(&inv(), &UserMap::default(), OpeningBalance::Platform).expect("plan");
        assert_eq!(p.users[1].opening, 40);
        assert!(p.statement_drift.is_empty());
        // Columns asked for that do not exist block --apply.
        let mut bad = inv();
        bad.ts_balance_problem = Some("ts_users has no column points".to_owned());
        assert!(plan(&bad, &UserMap::default(), OpeningBalance::Ledger).is_err());
    }
}
