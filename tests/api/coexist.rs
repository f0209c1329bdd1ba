//! Beside the platforms' own tables: what `migrate` refuses, that a failed
//! migration changes nothing, the seed tables' own types, rows written by
//! anything but the gateway, and a legacy key retried through the gateway.

use sea_orm::{ConnectionTrait, Statement};

use crate::helpers::TestApp;

both_engines!(
    a_ledger_row_written_behind_the_gateways_back_is_reported_not_absorbed,
    the_seed_tables_keep_the_types_their_orms_give_them,
);

fn gateway(args: &[&str], url: &str) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_points-gateway"))
        .args(args)
        .env("DATABASE_URL", url)
        // None of these tools mints or checks a token: no secret.
        .env_remove("GATEWAY_JWT_SECRET")
        .output()
        .unwrap()
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

async fn sqlite_tables(url: &str) -> Vec<String> {
    let db = sea_orm::Database::connect(url).await.unwrap();
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT name FROM sqlite_master WHERE type IN ('table', 'index') \
             AND name NOT LIKE 'sqlite_%' ORDER BY name",
        ))
        .await
        .unwrap();
    rows.iter()
        .map(|r| r.try_get::<String>("", "name").unwrap())
        .collect()
}

async fn exec(url: &str, sql: &str) {
    let db = sea_orm::Database::connect(url).await.unwrap();
    db.execute_unprepared(sql).await.unwrap();
}

/// A platform database that was never adopted: `migrate` (and so `serve`)
/// refuses, says why and points to `adopt`, and changes nothing.
#[tokio::test]
async fn migrate_refuses_a_platform_database_that_was_never_adopted() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("ts.sqlite").display()
    );
    // The ts platform's statement table, as peewee creates it on SQLite.
    exec(
        &url,
        "CREATE TABLE \"ts_points_detail\" (\"id\" INTEGER NOT NULL PRIMARY KEY, \"user_id\" INTEGER NOT NULL, \
         \"points\" INTEGER NOT NULL, \"order_id\" VARCHAR(255) NOT NULL, \"title\" VARCHAR(255) NOT NULL, \
         \"source_type\" VARCHAR(50) NOT NULL, \"balance_before\" INTEGER NOT NULL, \
         \"balance_after\" INTEGER NOT NULL, \"created_at\" DATETIME NOT NULL)",
    )
    .await;
    let before = sqlite_tables(&url).await;
    for args in [&["migrate"][..], &["verify"][..]] {
        let o = gateway(args, &url);
        assert!(!o.status.success(), "{args:?}: {}", text(&o));
        let t = text(&o);
        assert!(t.contains("ts_points_detail") && t.contains("adopt"), "{t}");
    }
    assert_eq!(sqlite_tables(&url).await, before);
}

/// A table under a name the gateway wants, not made by it (the mjk system
/// has tables of its own): refused by name, never written into.
#[tokio::test]
async fn a_table_under_a_gateway_name_is_never_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("other.sqlite").display()
    );
    exec(
        &url,
        "CREATE TABLE gw_point_batches (id INTEGER PRIMARY KEY, whatever TEXT)",
    )
    .await;
    let before = sqlite_tables(&url).await;
    for args in [
        &["migrate"][..],
        &["adopt", "--apply", "--opening-balance", "ledger"][..],
    ] {
        let o = gateway(args, &url);
        assert!(!o.status.success(), "{args:?}: {}", text(&o));
        assert!(text(&o).contains("gw_point_batches"), "{}", text(&o));
    }
    assert_eq!(sqlite_tables(&url).await, before);
}

/// SQLite: a migration that fails half-way leaves the file as it was, and
/// the next attempt, once the cause is gone, succeeds.
#[tokio::test]
async fn a_failed_migration_leaves_the_sqlite_file_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("gw.sqlite").display()
    );
    // An unrelated table whose index takes a name the migration wants, so
    // it fails after creating every table.
    exec(
        &url,
        "CREATE TABLE notes (x INTEGER); CREATE INDEX ix_batches_due ON notes (x)",
    )
    .await;
    let before = sqlite_tables(&url).await;
    let o = gateway(&["migrate"], &url);
    assert!(!o.status.success(), "{}", text(&o));
    assert_eq!(sqlite_tables(&url).await, before, "{}", text(&o));
    exec(&url, "DROP INDEX ix_batches_due").await;
    let o = gateway(&["migrate"], &url);
    assert!(o.status.success(), "{}", text(&o));
    assert!(sqlite_tables(&url).await.contains(&"gw_users".to_owned()));
}

async fn column_types(app: &TestApp, table: &str) -> Vec<(String, String)> {
    let backend = app.db.get_database_backend();
    let sql = match backend {
        sea_orm::DbBackend::Postgres => format!(
            "SELECT column_name::text AS name, data_type::text AS ty FROM information_schema.columns \
             WHERE table_name = '{table}' AND table_schema = current_schema() ORDER BY column_name"
        ),
        _ => format!("SELECT name, type AS ty FROM pragma_table_info('{table}') ORDER BY name"),
    };
    app.db
        .query_all_raw(Statement::from_string(backend, sql))
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.try_get::<String>("", "name").unwrap(),
                r.try_get::<String>("", "ty").unwrap().to_lowercase(),
            )
        })
        .collect()
}

async fn the_seed_tables_keep_the_types_their_orms_give_them(app: TestApp) {
    let pg = app.db.get_database_backend() == sea_orm::DbBackend::Postgres;
    let ledger = column_types(&app, "mjk_point_transactions").await;
    let detail = column_types(&app, "ts_points_detail").await;
    let tasks = column_types(&app, "ts_fal_tasks").await;
    let ty = |cols: &[(String, String)], c: &str| {
        cols.iter()
            .find(|(n, _)| n == c)
            .map(|(_, t)| t.clone())
            .unwrap_or_else(|| panic!("no column {c}"))
    };
    if pg {
        assert_eq!(ty(&ledger, "amount"), "integer");
        assert_eq!(ty(&ledger, "id"), "bigint");
        assert_eq!(ty(&ledger, "created_at"), "timestamp with time zone");
        assert_eq!(ty(&detail, "created_at"), "timestamp without time zone");
        assert_eq!(ty(&tasks, "cost_money"), "real");
    } else {
        assert_eq!(ty(&ledger, "amount"), "integer");
        assert!(
            ty(&tasks, "cost_money").contains("float") || ty(&tasks, "cost_money").contains("real")
        );
    }
    // No column of the gateway's own in a seed table.
    for (name, _) in ledger.iter().chain(&detail) {
        assert!(
            !["refund_key", "refund_of", "request_hash", "ledger_id"].contains(&name.as_str()),
            "{name}"
        );
    }
    // The mirror is naive local time: 8 hours ahead of UTC in Asia/Shanghai.
    let u = app.create_user("tz").await;
    app.recharge(u, 100, "tz-1", None).await;
    let r = app
        .gql(
            &app.admin,
            "query($u: Int) { usageDetails(userId: $u) { nodes { createdAt } } \
             pointsStatement(userId: $u) { nodes { createdAt } } }",
            serde_json::json!({ "u": u }),
        )
        .await;
    let ledger_at = r["data"]["usageDetails"]["nodes"][0]["createdAt"]
        .as_str()
        .unwrap()
        .to_owned();
    let mirror_at = r["data"]["pointsStatement"]["nodes"][0]["createdAt"]
        .as_str()
        .unwrap()
        .to_owned();
    let parse = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap();
    assert_eq!(parse(&ledger_at), parse(&mirror_at));
    let raw = app
        .db
        .query_one_raw(Statement::from_string(
            app.db.get_database_backend(),
            format!(
                "SELECT CAST(created_at AS TEXT) AS t FROM ts_points_detail WHERE user_id = {u}"
            ),
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get::<String>("", "t")
        .unwrap();
    let local = parse(&ledger_at)
        .with_timezone(&chrono_tz::Asia::Shanghai)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string();
    assert!(
        raw.starts_with(&local),
        "stored {raw:?}, expected local {local}"
    );
}

async fn a_ledger_row_written_behind_the_gateways_back_is_reported_not_absorbed(app: TestApp) {
    let u = app.create_user("bystander").await;
    app.recharge(u, 100, "b-1", None).await;
    app.assert_verify_clean().await;
    let backend = app.db.get_database_backend();
    app.db
        .execute_raw(Statement::from_sql_and_values(
            backend,
            "INSERT INTO mjk_point_transactions (user_id, type, amount, balance_before, balance_after, \
               source_type, source_id, description, created_at, updated_at) \
             SELECT uuid, 'consume', 30, 100, 70, 'script', 'side-door', 'x', $1, $1 FROM gw_users WHERE id = $2",
            vec![chrono::Utc::now().into(), u.into()],
        ))
        .await
        .unwrap();
    let (_, v) = points_gateway::domain::verify::verify(&app.store)
        .await
        .unwrap();
    let rules: Vec<_> = v.iter().map(|v| v.rule).collect();
    assert_eq!(rules, vec!["foreign"], "{v:?}");
    // On a database the gateway made, ids are the gateway's to choose.
    let r = app
        .gql(
            &app.service,
            "mutation { createUser(input: { name: \"n\", id: 77 }) { id } }",
            serde_json::json!({}),
        )
        .await;
    assert_eq!(crate::helpers::code(&r), Some("INVALID_INPUT"), "{r}");
    // Not absorbed: the balance is the gateway's, and the key is not taken.
    assert_eq!(app.balance(u).await, 100);
    let r = app.consume(u, 30, "SCRIPT", "side-door", None).await;
    assert!(r["errors"].is_null(), "{r}");
    assert_eq!(app.balance(u).await, 70);
}

/// The legacy applications write the ledger under roles of their own that
/// were never granted the gateway's tables: the ledger's trigger still
/// records the row (as foreign) instead of failing their insert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_role_without_rights_on_gateway_tables_can_still_write_the_ledger() {
    let app = crate::helpers::spawn_app(crate::helpers::Engine::Postgres).await;
    let u = app.create_user("legacy-written").await;
    app.recharge(u, 100, "lr-1", None).await;
    let db_name = app
        .database_url
        .rsplit_once('/')
        .map(|(_, n)| n.split('?').next().unwrap_or(n).to_owned())
        .unwrap();
    for sql in [
        // Roles are the cluster's: created once, reused by later runs.
        "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'legacy_ledger_app') \
         THEN CREATE ROLE legacy_ledger_app LOGIN; END IF; END $$"
            .to_owned(),
        format!("GRANT CONNECT ON DATABASE {db_name} TO legacy_ledger_app"),
        "GRANT USAGE ON SCHEMA public TO legacy_ledger_app".to_owned(),
        "GRANT SELECT, INSERT ON mjk_point_transactions TO legacy_ledger_app".to_owned(),
        "GRANT USAGE ON SEQUENCE mjk_point_transactions_id_seq TO legacy_ledger_app".to_owned(),
    ] {
        exec(&app.database_url, &sql).await;
    }
    let uuid: uuid::Uuid = app
        .db
        .query_one_raw(Statement::from_sql_and_values(
            app.db.get_database_backend(),
            "SELECT uuid FROM gw_users WHERE id = $1",
            [u.into()],
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get("", "uuid")
        .unwrap();
    let legacy_url = app
        .database_url
        .replacen("://gateway@", "://legacy_ledger_app@", 1);
    assert_ne!(
        legacy_url, app.database_url,
        "the test cluster's user changed"
    );
    let legacy = sea_orm::Database::connect(&legacy_url).await.unwrap();
    // The role really has no right on the gateway's tables.
    let denied = legacy
        .execute_unprepared("SELECT count(*) FROM gw_events")
        .await;
    assert!(denied.is_err(), "legacy role can read gw_events");
    legacy
        .execute_raw(Statement::from_sql_and_values(
            sea_orm::DbBackend::Postgres,
            "INSERT INTO mjk_point_transactions (user_id, type, amount, balance_before, balance_after, \
               source_type, source_id, description, created_at, updated_at) \
             VALUES ($1, 'consume', 5, 100, 95, 'script', 'legacy-job', 'x', now(), now())",
            [uuid.into()],
        ))
        .await
        .expect("a legacy role's insert into the ledger");
    legacy.close().await.ok();
    let (_, v) = points_gateway::domain::verify::verify(&app.store)
        .await
        .unwrap();
    let rules: Vec<_> = v.iter().map(|v| v.rule).collect();
    assert_eq!(rules, vec!["foreign"], "{v:?}");
    assert_eq!(app.balance(u).await, 100);
}
