//! `points-gateway adopt`: the dry run's report, and `--apply`, which
//! carries the plan out: in one transaction on SQLite, in the phases of
//! the adoption window on PostgreSQL ([`window`]), where the legacy
//! systems keep writing meanwhile. The decisions are the domain's
//! ([`crate::domain::adopt`]); the reads and writes the store's.

mod window;

use std::path::PathBuf;

use crate::domain::adopt::plan::FIRST_GATEWAY_ID;
use crate::domain::adopt::report::{render, Additions};
use crate::domain::adopt::{OpeningBalance, Plan, UserMap};
use crate::domain::ledger::opening;
use crate::store::adopt::{self as sa, Standing, OWN_TABLES, SEED_TABLES};
use crate::store::{Engine, Store, WriteTx};

#[derive(Debug, Clone)]
pub struct AdoptOptions {
    pub apply: bool,
    pub user_map: Option<PathBuf>,
    pub opening: Option<OpeningBalance>,
    /// `--ts-balance-columns`: where `ts_users` keeps a user's points
    /// (`None`: `money` and `gift_money`, where they exist).
    pub ts_balance_columns: Option<sa::TsBalanceColumns>,
}

/// What happened: the text to print, and whether it succeeded.
pub struct Outcome {
    pub text: String,
    pub ok: bool,
    /// The database was adopted (or made by the gateway) already.
    pub adopted: bool,
}

impl Outcome {
    /// Could not proceed; nothing was changed.
    fn refused(text: String) -> Outcome {
        Outcome {
            text,
            ok: false,
            adopted: false,
        }
    }

    fn done(text: String, adopted: bool) -> Outcome {
        Outcome {
            text,
            ok: true,
            adopted,
        }
    }
}

/// Why `--apply` needs `--opening-balance`.
pub const NEEDS_OPENING: &str = "--apply needs --opening-balance ledger|platform|sum: which \
    balance each user keeps is a decision about money, not a default (the dry run shows each \
    choice's total); nothing was changed";

/// What the legacy systems may keep doing after a cutover on SQLite.
const NO_COEXISTENCE: &str = "Coexistence: none on SQLite. A SQLite trigger cannot take the \
    gateway's lock, so the legacy applications must stop writing balances now; `verify` reports \
    any ledger row they still write.\n";

/// What the legacy systems may keep doing after a cutover on PostgreSQL.
fn coexistence_note(followed: Option<&sa::TsBalanceColumns>) -> String {
    let ts = match followed {
        Some(c) => format!(
            "; changes of ts_users {} (with or without a ts_points_detail row) are absorbed when \
             their transaction commits, and the columns show the gateway's paid and gift points \
             after every commit",
            c.describe()
        ),
        None => String::new(),
    };
    format!(
        "Coexistence: the legacy applications may keep writing while their services move over. \
         Rows they insert into mjk_point_transactions are absorbed in their own transaction{ts}. \
         A legacy write that would spend points not free, refund more than a job took or charge \
         a job twice fails with a constraint error. `points-gateway release` hands the database \
         back.\n"
    )
}

pub async fn adopt(store: &Store, opts: &AdoptOptions) -> anyhow::Result<Outcome> {
    let map = match &opts.user_map {
        None => UserMap::default(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read the user map {}: {e}", path.display()))?;
            match UserMap::parse(&text) {
                Ok(m) => m,
                Err(errors) => {
                    return Ok(Outcome::refused(format!(
                        "the user map {} cannot be used; nothing was changed:\n  - {}\n",
                        path.display(),
                        errors.join("\n  - ")
                    )))
                }
            }
        }
    };
    if opts.apply && opts.opening.is_none() {
        return Ok(Outcome::refused(format!("{NEEDS_OPENING}\n")));
    }
    let mut tx = sa::begin(store).await?;
    match sa::standing_in(&tx).await? {
        Standing::Unadopted { .. } => {}
        s @ Standing::Adopting { .. } if !opts.apply => {
            tx.rollback().await?;
            return Ok(Outcome::refused(format!(
                "{}; nothing was changed\n",
                s.refusal(false).unwrap_or_default()
            )));
        }
        Standing::Adopting { openings: true } => {
            tx.rollback().await?;
            return window::finish(store).await;
        }
        Standing::Adopting { openings: false } => {
            tx.rollback().await?;
            window::disarm(store).await?;
            return window::apply(store, opts, &map).await;
        }
        Standing::Adopted => {
            tx.rollback().await?;
            let text = match sa::adoption_row(store.conn()).await? {
                Some(a) => format!(
                    "already {} at {} (history up to ledger row {}{}): nothing to do\n",
                    if a.adopted() {
                        "adopted"
                    } else {
                        "made by the gateway"
                    },
                    a.cutover_at,
                    a.ledger_cutover_id,
                    a.opening_balance
                        .map(|p| format!(", opening balances from {p}"))
                        .unwrap_or_default()
                ),
                None => "already adopted: nothing to do\n".to_owned(),
            };
            return Ok(Outcome::done(text, true));
        }
        Standing::Empty => {
            tx.rollback().await?;
            return Ok(Outcome::refused(
                "none of the platforms' tables is here: nothing to adopt \
                       (`points-gateway migrate` makes a fresh database)\n"
                    .to_owned(),
            ));
        }
        s @ Standing::Collision { .. } => {
            tx.rollback().await?;
            return Ok(Outcome::refused(format!(
                "{}; nothing was changed\n",
                s.refusal(false).unwrap_or_default()
            )));
        }
    }
    if opts.apply && store.engine() == Engine::Postgres {
        tx.rollback().await?;
        return window::apply(store, opts, &map).await;
    }
    let inv = sa::inventory_in(&tx, opts.apply, &opts.ts_balance_columns).await?;
    let (report, verdict) = report(store, opts, &inv, &map);
    let plan = match verdict {
        Ok(p) if opts.apply => p,
        Ok(_) => {
            tx.rollback().await?;
            let hint =
                "\nTo adopt: points-gateway adopt --apply --opening-balance ledger|platform|sum \
                        [--user-map FILE]\n";
            return Ok(Outcome::done(format!("{report}{hint}"), false));
        }
        Err(_) => {
            tx.rollback().await?;
            return Ok(Outcome::refused(report));
        }
    };
    // SQLite: everything in this one transaction, which holds the file's
    // write lock; the legacy applications must stop writing balances.
    sa::install(&tx).await?;
    let opened = open(&mut tx, &plan).await?;
    // Under `platform` every ts user opened with exactly what ts_users
    // held: from here on ts_users follows every change of their points.
    let followed = match (plan.policy, &inv.ts_balance_columns) {
        (OpeningBalance::Platform, Some(c)) => {
            sa::ts_users::follow(&tx, c).await?;
            Some(c.clone())
        }
        _ => None,
    };
    sa::record(
        &tx,
        &inv,
        plan.policy.as_str(),
        plan.users.len(),
        &report,
        followed.as_ref().map(sa::TsBalanceColumns::text),
        "adopted",
    )
    .await?;
    tx.commit().await?;
    Ok(Outcome::done(
        format!(
            "{report}\n{}{NO_COEXISTENCE}",
            adopted_line(&plan, opened, inv.ledger_max_id)
        ),
        false,
    ))
}

/// The report of what was found and what `--apply` does (or why it
/// cannot), with the plan when it can.
fn report(
    store: &Store,
    opts: &AdoptOptions,
    inv: &sa::Inventory,
    map: &UserMap,
) -> (String, Result<Plan, ()>) {
    let adds = Additions {
        tables: &OWN_TABLES,
        seed_indexes: &migration::seed_index_names(),
        trigger: match store.engine() {
            Engine::Postgres => Some(
                "points_ledger_event on mjk_point_transactions and points_hold_event on gw_holds \
                 (balance events across instances); function gw_consume (a consume in one round trip); \
                 gw_absorb_* on mjk_point_transactions, ts_points_detail and ts_users (the legacy \
                 systems' writes absorbed from the cutover on) and gw_ts_users_follow on \
                 gw_point_batches (ts_users shows the gateway's paid and gift points)",
            ),
            Engine::Sqlite => None,
        },
        missing_seed_tables: SEED_TABLES
            .into_iter()
            .filter(|t| inv.tables.iter().any(|f| f.name == *t && f.rows.is_none()))
            .collect(),
    };
    let title = format!(
        "points-gateway adopt{} - {} (legacy time zone {})",
        if opts.apply {
            " --apply"
        } else {
            " (dry run: nothing is changed)"
        },
        crate::store::describe_store(store),
        store.legacy_zone().name()
    );
    let (text, verdict) = render(&title, inv, map, opts.opening, &adds);
    (text, verdict.map_err(|_| ()))
}

/// The adopted users and their opening balances, in `tx`. Returns the
/// opening rows written.
async fn open(tx: &mut WriteTx, plan: &Plan) -> anyhow::Result<usize> {
    let users: Vec<sa::AdoptedUser> = plan
        .users
        .iter()
        .map(|u| sa::AdoptedUser {
            id: u.id,
            uuid: u.uuid,
            name: u.name.clone(),
        })
        .collect();
    sa::insert_users(tx, &users, FIRST_GATEWAY_ID).await?;
    let openings: Vec<(i32, i64, i64, &str)> = plan
        .users
        .iter()
        .map(|u| {
            (
                u.id,
                u.opening - u.opening_gift,
                u.opening_gift,
                u.note.as_str(),
            )
        })
        .collect();
    Ok(opening::open_all(tx, &openings).await?)
}

/// The line that says what was adopted.
fn adopted_line(plan: &Plan, opened: usize, history_end: i64) -> String {
    format!(
        "Adopted: {} users, {opened} opening rows, {} points; history up to ledger row \
         {history_end} is kept as it was. `points-gateway verify` checks everything from here on.\n",
        plan.users.len(),
        plan.total_opening,
    )
}
