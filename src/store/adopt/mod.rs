//! Where a database stands towards the gateway (fresh, adopted, or holding
//! the platforms' tables without an adoption), and the SQL of `adopt`: what
//! it reads ([`inventory`]) and what it writes ([`apply`]).

pub mod absorb;
mod apply;
mod inventory;
pub mod release;
pub mod window;

pub mod ts_users;

pub use apply::{
    begin, begin_snapshot, insert_users, install, inventory_in, lock_legacy, open_many, record,
    standing_in, ts_columns_in, Opening,
};
pub use inventory::{history_anomalies, inventory, ts_columns};

/// The `ts_users` balance columns `adopt` was asked for (`None`: the
/// platform's own, where they exist).
pub type BalanceColumnsWanted = Option<TsBalanceColumns>;

use sea_orm::{ConnectionTrait, DbBackend, Statement};
use uuid::Uuid;

use super::StoreError;

/// A seed table as found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableFound {
    pub name: &'static str,
    pub rows: Option<i64>,
    /// Differences from what the seeds' ORMs create, each with whether the
    /// gateway can work with it.
    pub differences: Vec<Difference>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub column: String,
    pub found: String,
    pub expected: String,
    pub blocks: bool,
    pub note: &'static str,
}

/// An irregularity of the legacy data: reported, never repaired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anomaly {
    pub kind: &'static str,
    pub count: i64,
    pub examples: Vec<String>,
}

/// Everything `adopt` reads before deciding.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    pub tables: Vec<TableFound>,
    /// Whether `ts_users` exists (its `id` and balance columns are read,
    /// never written).
    pub ts_users_table: bool,
    /// The `ts_users` balance columns read: paid, and gift if any.
    pub ts_balance_columns: Option<TsBalanceColumns>,
    /// Why the requested balance columns could not be read (blocks
    /// `--apply`).
    pub ts_balance_problem: Option<String>,
    /// Per ts user, what `ts_users` holds: `(id, paid, gift)`.
    pub ts_user_balances: Vec<(i32, i64, i64)>,
    /// The ts platform's users: `ts_users.id`, or without that table the
    /// user ids its tables name.
    pub ts_users: Vec<i32>,
    /// Every mjk ledger user with their last `balance_after` (id order).
    pub ledger_users: Vec<(Uuid, i64)>,
    /// The ts platform's balance per user: the last `balance_after` of
    /// their `ts_points_detail` statement.
    pub platform_balances: Vec<(i32, i64)>,
    /// The history's last ledger id and `ts_points_detail` id.
    pub ledger_max_id: i64,
    pub detail_max_id: i64,
    pub anomalies: Vec<Anomaly>,
}

/// Which `ts_users` columns hold a user's points: seed 004 names the table
/// without describing it; the platform in the fixture keeps paid points in
/// `money` and gift points in `gift_money`. Names are plain identifiers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TsBalanceColumns {
    pub paid: String,
    pub gift: Option<String>,
}

impl TsBalanceColumns {
    /// The platform's own columns, the default.
    pub fn platform() -> TsBalanceColumns {
        TsBalanceColumns {
            paid: "money".to_owned(),
            gift: Some("gift_money".to_owned()),
        }
    }

    /// `PAID` or `PAID,GIFT` (`--ts-balance-columns`).
    pub fn parse(text: &str) -> Result<TsBalanceColumns, String> {
        let ident = |n: &str| {
            let ok = !n.is_empty()
                && n.len() <= 63
                && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !n.starts_with(|c: char| c.is_ascii_digit());
            ok.then(|| n.to_owned())
                .ok_or_else(|| format!("--ts-balance-columns: {n:?} is not a column name"))
        };
        let mut parts = text.split(',').map(str::trim);
        let paid = ident(parts.next().unwrap_or_default())?;
        let gift = parts.next().map(ident).transpose()?;
        if parts.next().is_some() {
            return Err("--ts-balance-columns takes PAID or PAID,GIFT".to_owned());
        }
        Ok(TsBalanceColumns { paid, gift })
    }

    /// `PAID` or `PAID,GIFT`, as [`TsBalanceColumns::parse`] reads it (the
    /// adoption record).
    pub fn text(&self) -> String {
        match &self.gift {
            Some(g) => format!("{},{g}", self.paid),
            None => self.paid.clone(),
        }
    }

    /// `` `money` + `gift_money` ``, for reports.
    pub fn describe(&self) -> String {
        match &self.gift {
            Some(g) => format!("`{}` + `{g}`", self.paid),
            None => format!("`{}`", self.paid),
        }
    }

    /// The paid column, quoted as an SQL identifier.
    pub(crate) fn paid_sql(&self) -> String {
        quoted(&self.paid)
    }

    /// The gift column, quoted as an SQL identifier, if any.
    pub(crate) fn gift_sql(&self) -> Option<String> {
        self.gift.as_deref().map(quoted)
    }
}

/// `name` quoted as an SQL identifier (validated by
/// [`TsBalanceColumns::parse`] or read from the catalog).
pub(crate) fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A user `adopt` creates.
#[derive(Debug, Clone)]
pub struct AdoptedUser {
    pub id: i32,
    pub uuid: Uuid,
    pub name: String,
}

/// The five tables of the seeds, which the platforms own.
pub const SEED_TABLES: [&str; 5] = [
    "mjk_point_transactions",
    "ts_points_detail",
    "ts_financial_transactions",
    "ts_fal_account",
    "ts_fal_tasks",
];

/// The gateway's own tables.
pub const OWN_TABLES: [&str; 8] = [
    "gw_users",
    "gw_point_batches",
    "gw_entries",
    "gw_point_allocations",
    "gw_adoption",
    "gw_holds",
    "gw_hold_parts",
    "gw_events",
];

/// What a database is, before `migrate` or `adopt` touch it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// None of the seed tables nor the gateway's: `migrate` makes them all.
    Empty,
    /// The gateway's tables with their adoption record.
    Adopted,
    /// Seed tables (`found`) but no adoption record: `adopt` first.
    Unadopted { found: Vec<String> },
    /// An `adopt --apply` on PostgreSQL under way or interrupted
    /// ([`window`]): the legacy writes are being recorded; `openings`:
    /// whether the opening balances are written (else nothing is yet).
    Adopting { openings: bool },
    /// A table the gateway wants exists and is not the gateway's.
    Collision { tables: Vec<String> },
}

impl Standing {
    /// Why the gateway may not use this database as it is (`None`: it
    /// may). `migrating`: an empty database is fine, `migrate` makes it.
    pub fn refusal(&self, migrating: bool) -> Option<String> {
        match self {
            Standing::Adopted => None,
            Standing::Empty if migrating => None,
            Standing::Empty => Some(
                "this database has none of the gateway's tables: run `points-gateway migrate` \
                 (or `serve`, which migrates)"
                    .to_owned(),
            ),
            Standing::Unadopted { found } => Some(format!(
                "this database already holds the platforms' tables ({}) and was never adopted: \
                 run `points-gateway adopt` for a report of what the gateway would do, then \
                 `points-gateway adopt --apply`",
                found.join(", ")
            )),
            Standing::Adopting { .. } => Some(
                "an `adopt --apply` is under way on this database, or was interrupted: run \
                 `points-gateway adopt --apply` again to finish it (the legacy systems' writes \
                 since it began are recorded and will be absorbed)"
                    .to_owned(),
            ),
            Standing::Collision { tables } => Some(format!(
                "table(s) {} already exist but were not made by the gateway (no adoption \
                 record): the gateway will not write into tables it does not know",
                tables.join(", ")
            )),
        }
    }
}

/// The tables among `names` that exist (in the connection's schema).
pub async fn existing_tables<C: ConnectionTrait>(
    conn: &C,
    names: &[&str],
) -> Result<Vec<String>, StoreError> {
    let backend = conn.get_database_backend();
    let list = names
        .iter()
        .map(|n| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = match backend {
        DbBackend::Postgres => format!(
            "SELECT table_name::text AS name FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_name IN ({list}) ORDER BY 1"
        ),
        _ => format!(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name IN ({list}) ORDER BY 1"
        ),
    };
    let rows = conn
        .query_all_raw(Statement::from_string(backend, sql))
        .await?;
    Ok(rows
        .iter()
        .map(|r| r.try_get::<String>("", "name"))
        .collect::<Result<_, _>>()?)
}

/// Where the database stands.
pub async fn standing<C: ConnectionTrait>(conn: &C) -> Result<Standing, StoreError> {
    let own = existing_tables(conn, &OWN_TABLES).await?;
    if own.iter().any(|t| t == "gw_adoption") {
        match adoption_row(conn).await? {
            Some(a) if a.kind == window::OPENING => {
                return Ok(Standing::Adopting { openings: true })
            }
            Some(_) => return Ok(Standing::Adopted),
            None => {}
        }
    }
    if !own.is_empty() {
        if !existing_tables(conn, &[window::QUEUE]).await?.is_empty() {
            return Ok(Standing::Adopting { openings: false });
        }
        return Ok(Standing::Collision { tables: own });
    }
    let seed = existing_tables(conn, &SEED_TABLES).await?;
    if seed.is_empty() {
        Ok(Standing::Empty)
    } else {
        Ok(Standing::Unadopted { found: seed })
    }
}

/// The adoption record (`gw_adoption`, one row).
#[derive(Debug, Clone)]
pub struct Adoption {
    /// `fresh` (made by the gateway) or `adopted`.
    pub kind: String,
    pub cutover_at: chrono::DateTime<chrono::Utc>,
    /// The last ledger and `ts_points_detail` ids of the history (0: none).
    pub ledger_cutover_id: i64,
    pub detail_cutover_id: i64,
    /// The `--opening-balance` policy it was adopted with.
    pub opening_balance: Option<String>,
}

impl Adoption {
    pub fn adopted(&self) -> bool {
        self.kind == "adopted"
    }
}

/// The adoption record, if the database has one.
pub async fn adoption_row<C: ConnectionTrait>(conn: &C) -> Result<Option<Adoption>, StoreError> {
    let backend = conn.get_database_backend();
    let row = conn
        .query_one_raw(Statement::from_string(
            backend,
            "SELECT kind, cutover_at, ledger_cutover_id, CAST(detail_cutover_id AS BIGINT) AS detail, \
               opening_balance FROM gw_adoption ORDER BY id LIMIT 1",
        ))
        .await?;
    Ok(match row {
        Some(r) => Some(Adoption {
            kind: r.try_get("", "kind")?,
            cutover_at: r.try_get("", "cutover_at")?,
            ledger_cutover_id: r.try_get("", "ledger_cutover_id")?,
            detail_cutover_id: r.try_get("", "detail")?,
            opening_balance: r.try_get("", "opening_balance")?,
        }),
        None => None,
    })
}

/// On a database `migrate` just made, the record that nothing came before
/// (cutover at ledger id 0). Nothing when a record exists.
pub async fn record_fresh<C: ConnectionTrait>(conn: &C) -> Result<(), StoreError> {
    if adoption_row(conn).await?.is_some() {
        return Ok(());
    }
    let backend = conn.get_database_backend();
    conn.execute_raw(Statement::from_sql_and_values(
        backend,
        "INSERT INTO gw_adoption (kind, cutover_at, ledger_cutover_id, detail_cutover_id, \
           opening_balance, users, report) VALUES ('fresh', $1, 0, 0, NULL, 0, NULL)",
        vec![chrono::Utc::now().into()],
    ))
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::TsBalanceColumns;

    #[test]
    fn columns_are_written_as_they_are_read() {
        for text in ["money,gift_money", "points"] {
            let c = TsBalanceColumns::parse(text).expect("valid");
            assert_eq!(c.text(), text);
        }
        assert_eq!(
            TsBalanceColumns::platform().describe(),
            "`money` + `gift_money`"
        );
        assert!(TsBalanceColumns::parse("money; DROP TABLE x").is_err());
        assert!(TsBalanceColumns::parse("a,b,c").is_err());
    }
}
