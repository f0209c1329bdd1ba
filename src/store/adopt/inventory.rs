//! What `adopt` reads: the seed tables against the types their ORMs give
//! them, the users and balances of both systems, the history's anomalies.

use sea_orm::{ConnectionTrait, DbBackend, Statement};

use super::{
    existing_tables, Anomaly, BalanceColumnsWanted, Difference, Inventory, TableFound,
    TsBalanceColumns, SEED_TABLES,
};
use crate::store::StoreError;

/// A column as the seeds' ORMs create it: its type family on each engine.
struct Expected {
    column: &'static str,
    family: Family,
    not_null: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Int,
    BigInt,
    Float,
    Text,
    /// Naive wall-clock time (the ts platform's).
    Local,
    /// An instant (the mjk ledger's).
    Instant,
    Uuid,
}

impl Expected {
    /// This column found as `found` (a type, or `missing`).
    fn differs(&self, found: &str, blocks: bool, note: &'static str) -> Difference {
        Difference {
            column: self.column.to_owned(),
            found: found.to_owned(),
            expected: format!("{:?}", self.family).to_lowercase(),
            blocks,
            note,
        }
    }
}

const fn col(column: &'static str, family: Family, not_null: bool) -> Expected {
    Expected {
        column,
        family,
        not_null,
    }
}

const MJK_POINT_TRANSACTIONS: &[Expected] = {
    use Family::*;
    &[
        col("id", BigInt, true),
        col("user_id", Uuid, true),
        col("type", Text, true),
        col("amount", Int, true),
        col("balance_before", Int, true),
        col("balance_after", Int, true),
        col("source_type", Text, false),
        col("source_id", Text, false),
        col("batch_id", BigInt, false),
        col("duration", Float, false),
        col("description", Text, false),
        col("created_at", Instant, true),
        col("updated_at", Instant, true),
    ]
};

const TS_POINTS_DETAIL: &[Expected] = {
    use Family::*;
    &[
        col("id", Int, true),
        col("user_id", Int, true),
        col("points", Int, true),
        col("order_id", Text, true),
        col("title", Text, true),
        col("source_type", Text, true),
        col("balance_before", Int, true),
        col("balance_after", Int, true),
        col("created_at", Local, true),
    ]
};

const TS_FINANCIAL_TRANSACTIONS: &[Expected] = {
    use Family::*;
    &[
        col("id", Int, true),
        col("user_id", Int, true),
        col("money", Int, true),
        col("order_id", Text, true),
        col("title", Text, true),
        col("deployment_uuid", Text, false),
        col("time", Local, true),
        col("transaction_type", Int, true),
        col("pay_type", Int, true),
        col("is_cash", Int, true),
    ]
};

const TS_FAL_ACCOUNT: &[Expected] = {
    use Family::*;
    &[
        col("id", Int, true),
        col("name", Text, true),
        col("api_key", Text, true),
        col("balance", Float, true),
        col("use_cnt", Int, true),
        col("error_cnt", Int, true),
        col("status", Int, true),
        col("remark", Text, false),
    ]
};

const TS_FAL_TASKS: &[Expected] = {
    use Family::*;
    &[
        col("id", Int, true),
        col("user_id", Int, true),
        col("task_id", Text, true),
        col("online_task_id", Text, false),
        col("app_name", Text, true),
        col("api_key", Text, true),
        col("task_type", Text, true),
        col("status", Text, true),
        col("money", Int, true),
        col("cost_money", Float, true),
        col("is_refund", Int, true),
        col("input_params", Text, false),
        col("output_params", Text, false),
        col("created_at", Local, true),
        col("completed_at", Local, false),
    ]
};

/// The columns the gateway reads or writes, per seed table.
fn expected(table: &str) -> &'static [Expected] {
    match table {
        "mjk_point_transactions" => MJK_POINT_TRANSACTIONS,
        "ts_points_detail" => TS_POINTS_DETAIL,
        "ts_financial_transactions" => TS_FINANCIAL_TRANSACTIONS,
        "ts_fal_account" => TS_FAL_ACCOUNT,
        "ts_fal_tasks" => TS_FAL_TASKS,
        _ => &[],
    }
}

/// A declared type's family (PostgreSQL `data_type`, or SQLite's declared
/// type by its affinity rules).
fn family_of(ty: &str) -> Option<Family> {
    let t = ty.to_ascii_lowercase();
    Some(match t.as_str() {
        "smallint" | "integer" | "int" | "int4" | "int2" => Family::Int,
        "bigint" | "int8" => Family::BigInt,
        "real" | "double precision" | "float4" | "float8" | "numeric" => Family::Float,
        "character varying" | "text" | "character" | "varchar" => Family::Text,
        "timestamp without time zone" => Family::Local,
        "timestamp with time zone" => Family::Instant,
        "uuid" => Family::Uuid,
        _ if t.contains("with_timezone") || t.contains("timestamptz") => Family::Instant,
        _ if t.contains("int") => Family::Int,
        _ if t.contains("char") || t.contains("clob") || t.contains("text") => Family::Text,
        _ if t.contains("real") || t.contains("floa") || t.contains("doub") => Family::Float,
        _ if t.contains("date") || t.contains("time") => Family::Local,
        _ if t.contains("uuid") || t.contains("blob") => Family::Uuid,
        _ => return None,
    })
}

/// How a found family reads where `want` is expected: `None` the same,
/// `Some((blocks, note))` otherwise.
fn compare(want: Family, found: Family, sqlite: bool) -> Option<(bool, &'static str)> {
    use Family::*;
    match (want, found) {
        (a, b) if a == b => None,
        // SQLite stores every integer in up to 8 bytes.
        (Int, BigInt) | (BigInt, Int) if sqlite => None,
        (Int, BigInt) => Some((false, "wider: read the same")),
        (BigInt, Int) => Some((false, "narrower: ids past 2^31 cannot be stored")),
        (Local, Instant) => Some((
            false,
            "time zone aware: read as instants, written in LEGACY_TIMEZONE",
        )),
        (Instant, Local) => Some((true, "naive: the ledger's times must be instants")),
        _ => Some((true, "the gateway cannot read or write this type here")),
    }
}

/// The anomalies of the history before the cutover of an adopted
/// database (`verify` lists them as information).
pub async fn history_anomalies<C: ConnectionTrait>(conn: &C) -> Result<Vec<Anomaly>, StoreError> {
    let Some(a) = super::adoption_row(conn).await? else {
        return Ok(Vec::new());
    };
    let bound = (a.ledger_cutover_id, a.detail_cutover_id);
    let found = existing_tables(conn, &SEED_TABLES).await?;
    let ts_users = !existing_tables(conn, &["ts_users"]).await?.is_empty();
    anomalies(conn, &found, ts_users, Some(bound)).await
}

/// The history's anomalies: of the ledger, and rows of users `ts_users`
/// lacks; with `history`, only rows up to those ledger and
/// `ts_points_detail` ids.
async fn anomalies<C: ConnectionTrait>(
    conn: &C,
    found: &[String],
    ts_users_table: bool,
    history: Option<(i64, i64)>,
) -> Result<Vec<Anomaly>, StoreError> {
    let (ledger_upto, detail_upto) = match history {
        Some((l, d)) => (format!(" AND id <= {l}"), format!(" AND x.id <= {d}")),
        None => (String::new(), String::new()),
    };
    let has = |t: &str| found.iter().any(|f| f == t);
    let mut out = Vec::new();
    if has("mjk_point_transactions") {
        out.extend(ledger_anomalies(conn, &ledger_upto).await?);
    }
    if ts_users_table {
        // After adoption, rows the gateway wrote for users the ts platform
        // does not know (mjk-only users) are no anomaly of the history.
        let tables: &[&str] = match history {
            None => &[
                "ts_points_detail",
                "ts_financial_transactions",
                "ts_fal_tasks",
            ],
            Some(_) => &["ts_points_detail"],
        };
        for &t in tables {
            if has(t) {
                out.push(
                    anomaly(
                        conn,
                        "rows of users ts_users does not have",
                        &format!(
                            "SELECT '{t} row ' || CAST(x.id AS TEXT) || ': user ' || CAST(x.user_id AS TEXT) AS e \
                             FROM {t} x WHERE NOT EXISTS (SELECT 1 FROM ts_users u WHERE u.id = x.user_id){detail_upto}"
                        ),
                    )
                    .await?,
                );
            }
        }
    }
    Ok(out)
}

/// Reads everything `adopt` decides on, in one snapshot (`conn` is a
/// transaction).
pub async fn inventory<C: ConnectionTrait>(
    conn: &C,
    wanted: &BalanceColumnsWanted,
) -> Result<Inventory, StoreError> {
    let backend = conn.get_database_backend();
    let sqlite = backend != DbBackend::Postgres;
    let found = existing_tables(conn, &SEED_TABLES).await?;
    let has = |t: &str| found.iter().any(|f| f == t);
    let mut inv = Inventory::default();
    for table in SEED_TABLES {
        if !has(table) {
            inv.tables.push(TableFound {
                name: table,
                rows: None,
                differences: Vec::new(),
            });
            continue;
        }
        let rows = scalar(conn, &format!("SELECT COUNT(*) AS n FROM {table}")).await?;
        let columns = columns(conn, table).await?;
        let mut differences = Vec::new();
        for e in expected(table) {
            let Some((ty, not_null)) = columns
                .iter()
                .find(|c| c.0 == e.column)
                .map(|c| (&c.1, c.2))
            else {
                differences.push(e.differs(
                    "missing",
                    true,
                    "the gateway reads or writes this column",
                ));
                continue;
            };
            match family_of(ty) {
                None => differences.push(e.differs(ty, true, "a type the gateway does not know")),
                Some(f) => {
                    if let Some((blocks, note)) = compare(e.family, f, sqlite) {
                        differences.push(e.differs(ty, blocks, note));
                    }
                }
            }
            if not_null != e.not_null && !(sqlite && e.column == "id") {
                differences.push(Difference {
                    column: e.column.to_owned(),
                    found: if not_null { "NOT NULL" } else { "nullable" }.to_owned(),
                    expected: if e.not_null { "NOT NULL" } else { "nullable" }.to_owned(),
                    blocks: false,
                    note: if e.not_null {
                        "the gateway always fills it"
                    } else {
                        "the gateway may leave it NULL: rows it writes there would be refused"
                    },
                });
            }
        }
        inv.tables.push(TableFound {
            name: table,
            rows: Some(rows),
            differences,
        });
    }

    inv.ts_users_table = !existing_tables(conn, &["ts_users"]).await?.is_empty();
    let mut ts_sources: Vec<String> = Vec::new();
    if inv.ts_users_table {
        ts_sources.push("SELECT id AS id FROM ts_users".to_owned());
    } else {
        for t in [
            "ts_points_detail",
            "ts_financial_transactions",
            "ts_fal_tasks",
        ] {
            if has(t) {
                ts_sources.push(format!("SELECT user_id AS id FROM {t}"));
            }
        }
    }
    if inv.ts_users_table {
        ts_balances(conn, wanted, &mut inv).await?;
    }
    if !ts_sources.is_empty() {
        let sql = format!(
            "SELECT DISTINCT CAST(id AS INTEGER) AS id FROM ({}) s ORDER BY 1",
            ts_sources.join(" UNION ")
        );
        inv.ts_users = all(conn, &sql, |r| r.try_get::<i32>("", "id")).await?;
    }
    if has("mjk_point_transactions") {
        inv.ledger_max_id = scalar(
            conn,
            "SELECT COALESCE(MAX(id), 0) AS n FROM mjk_point_transactions",
        )
        .await?;
        // Each user's last row by id, in order of their first row.
        inv.ledger_users = all(
            conn,
            "SELECT t.user_id AS user_id, CAST(t.balance_after AS BIGINT) AS balance \
             FROM mjk_point_transactions t \
             JOIN (SELECT user_id, MAX(id) AS last, MIN(id) AS first FROM mjk_point_transactions \
                   GROUP BY user_id) l ON l.last = t.id ORDER BY l.first",
            |r| Ok((r.try_get("", "user_id")?, r.try_get("", "balance")?)),
        )
        .await?;
    }
    if has("ts_points_detail") {
        inv.detail_max_id = scalar(
            conn,
            "SELECT COALESCE(MAX(id), 0) AS n FROM ts_points_detail",
        )
        .await?;
        inv.platform_balances = all(
            conn,
            "SELECT p.user_id AS user_id, CAST(p.balance_after AS BIGINT) AS balance \
             FROM ts_points_detail p \
             JOIN (SELECT user_id, MAX(id) AS last FROM ts_points_detail GROUP BY user_id) l \
               ON l.last = p.id ORDER BY p.user_id",
            |r| Ok((r.try_get("", "user_id")?, r.try_get("", "balance")?)),
        )
        .await?;
    }
    inv.anomalies = anomalies(conn, &found, inv.ts_users_table, None).await?;
    Ok(inv)
}

/// The `ts_users` balance columns to read: the ones asked for, or the
/// platform's own (`money`, `gift_money`) where they exist. `Ok(None)`:
/// no `ts_users` table or no balance column (the statement's balance
/// stands); `Err`: a column asked for is missing (blocks `--apply`).
pub async fn ts_columns<C: ConnectionTrait>(
    conn: &C,
    wanted: &BalanceColumnsWanted,
) -> Result<Result<Option<TsBalanceColumns>, String>, StoreError> {
    if existing_tables(conn, &["ts_users"]).await?.is_empty() {
        return Ok(Ok(None));
    }
    let found: Vec<String> = columns(conn, "ts_users")
        .await?
        .into_iter()
        .map(|c| c.0)
        .collect();
    let has = |c: &str| found.iter().any(|f| f == c);
    Ok(match wanted {
        Some(w) => {
            let missing: Vec<&str> = std::iter::once(w.paid.as_str())
                .chain(w.gift.as_deref())
                .filter(|c| !has(c))
                .collect();
            if missing.is_empty() {
                Ok(Some(w.clone()))
            } else {
                Err(format!(
                    "ts_users has no column {} (--ts-balance-columns)",
                    missing.join(", ")
                ))
            }
        }
        None => {
            let own = TsBalanceColumns::platform();
            Ok(has(&own.paid).then(|| TsBalanceColumns {
                gift: own.gift.clone().filter(|g| has(g)),
                ..own
            }))
        }
    })
}

/// What `ts_users` holds per user, from the balance columns asked for (or
/// the platform's own, `money` and `gift_money`, where they exist).
async fn ts_balances<C: ConnectionTrait>(
    conn: &C,
    wanted: &BalanceColumnsWanted,
    inv: &mut Inventory,
) -> Result<(), StoreError> {
    let chosen = match ts_columns(conn, wanted).await? {
        Ok(Some(c)) => c,
        Ok(None) => return Ok(()),
        Err(problem) => {
            inv.ts_balance_problem = Some(problem);
            return Ok(());
        }
    };
    let gift = chosen
        .gift_sql()
        .map_or("0".to_owned(), |g| format!("COALESCE({g}, 0)"));
    let sql = format!(
        "SELECT CAST(id AS INTEGER) AS id, CAST(COALESCE({}, 0) AS BIGINT) AS paid, \
           CAST({gift} AS BIGINT) AS gift FROM ts_users ORDER BY id",
        chosen.paid_sql()
    );
    inv.ts_user_balances = all(conn, &sql, |r| {
        Ok((
            r.try_get("", "id")?,
            r.try_get("", "paid")?,
            r.try_get("", "gift")?,
        ))
    })
    .await?;
    inv.ts_balance_columns = Some(chosen);
    Ok(())
}

/// The mjk ledger's irregularities.
async fn ledger_anomalies<C: ConnectionTrait>(
    conn: &C,
    upto: &str,
) -> Result<Vec<Anomaly>, StoreError> {
    Ok(vec![
        anomaly(
            conn,
            "ledger rows with an amount that is not positive",
            &format!("SELECT 'row ' || CAST(id AS TEXT) || ': ' || type || ' ' || CAST(amount AS TEXT) AS e \
             FROM mjk_point_transactions WHERE amount <= 0{upto}"),
        )
        .await?,
        anomaly(
            conn,
            "jobs charged more than once under one (source_type, source_id)",
            &format!("SELECT COALESCE(source_type, '') || ':' || source_id || ' charged ' || CAST(COUNT(*) AS TEXT) \
               || ' times' AS e FROM mjk_point_transactions WHERE type = 'consume' AND source_id IS NOT NULL{upto} \
             GROUP BY source_type, source_id HAVING COUNT(*) > 1"),
        )
        .await?,
        anomaly(
            conn,
            "ledger rows that do not add up (balance_after vs balance_before and amount, or vs the user's previous row)",
            &format!("SELECT 'row ' || CAST(id AS TEXT) || ': ' || CAST(balance_before AS TEXT) || ' ' || type || ' ' \
               || CAST(amount AS TEXT) || ' -> ' || CAST(balance_after AS TEXT) \
               || COALESCE(' (previous row ended at ' || CAST(prev AS TEXT) || ')', '') AS e \
             FROM (SELECT id, type, amount, balance_before, balance_after, \
                     LAG(balance_after) OVER (PARTITION BY user_id ORDER BY id) AS prev \
                   FROM mjk_point_transactions WHERE 1 = 1{upto}) c \
             WHERE NOT ((type IN ('recharge', 'refund') AND balance_after = balance_before + amount) \
                     OR (type IN ('consume', 'expire') AND balance_after = balance_before - amount)) \
                OR (prev IS NOT NULL AND balance_before <> prev)"),
        )
        .await?,
        anomaly(
            conn,
            "tts or video consumes without a duration (recorded before the column existed)",
            &format!("SELECT 'row ' || CAST(id AS TEXT) || ': ' || source_type || ' ' || CAST(amount AS TEXT) AS e \
             FROM mjk_point_transactions \
             WHERE type = 'consume' AND source_type IN ('tts', 'video') AND duration IS NULL{upto}"),
        )
        .await?,
        anomaly(
            conn,
            "ledger rows of a type the gateway does not know",
            &format!("SELECT 'row ' || CAST(id AS TEXT) || ': ' || type AS e FROM mjk_point_transactions \
             WHERE type NOT IN ('recharge', 'consume', 'refund', 'expire'){upto}"),
        )
        .await?,
    ])
}

/// Counts the rows of `sql` (one text column `e`) and keeps five examples.
async fn anomaly<C: ConnectionTrait>(
    conn: &C,
    kind: &'static str,
    sql: &str,
) -> Result<Anomaly, StoreError> {
    let count = scalar(conn, &format!("SELECT COUNT(*) AS n FROM ({sql}) a")).await?;
    let examples = all(conn, &format!("{sql} LIMIT 5"), |r| {
        r.try_get::<String>("", "e")
    })
    .await?;
    Ok(Anomaly {
        kind,
        count,
        examples,
    })
}

async fn scalar<C: ConnectionTrait>(conn: &C, sql: &str) -> Result<i64, StoreError> {
    let backend = conn.get_database_backend();
    let row = conn
        .query_one_raw(Statement::from_string(backend, sql.to_owned()))
        .await?
        .ok_or_else(|| StoreError::custom("an aggregate returned no row"))?;
    Ok(row
        .try_get::<i64>("", "n")
        .or_else(|_| row.try_get::<i32>("", "n").map(i64::from))?)
}

async fn all<C: ConnectionTrait, T>(
    conn: &C,
    sql: &str,
    row: impl Fn(&sea_orm::QueryResult) -> Result<T, sea_orm::DbErr>,
) -> Result<Vec<T>, StoreError> {
    let backend = conn.get_database_backend();
    let rows = conn
        .query_all_raw(Statement::from_string(backend, sql.to_owned()))
        .await?;
    Ok(rows.iter().map(row).collect::<Result<_, _>>()?)
}

/// `(name, declared type, NOT NULL)` of each column of `table`.
async fn columns<C: ConnectionTrait>(
    conn: &C,
    table: &str,
) -> Result<Vec<(String, String, bool)>, StoreError> {
    let sql = match conn.get_database_backend() {
        DbBackend::Postgres => format!(
            "SELECT column_name::text AS name, data_type::text AS ty, is_nullable = 'NO' AS nn \
             FROM information_schema.columns WHERE table_schema = current_schema() \
             AND table_name = '{table}' ORDER BY ordinal_position"
        ),
        _ => format!(
            "SELECT name, type AS ty, CAST(\"notnull\" AS INTEGER) = 1 AS nn FROM pragma_table_info('{table}')"
        ),
    };
    all(conn, &sql, |r| {
        Ok((
            r.try_get("", "name")?,
            r.try_get("", "ty")?,
            r.try_get::<bool>("", "nn")?,
        ))
    })
    .await
}
