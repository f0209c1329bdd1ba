//! `spawn_app` and typed request helpers.

use points_gateway::auth::{Role, TokenKeys};
use points_gateway::config::{JwtSecret, Settings};
use points_gateway::startup::Application;
use points_gateway::store::Store;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};
use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

pub struct TestApp {
    pub url: String,
    pub client: reqwest::Client,
    pub keys: TokenKeys,
    pub admin: String,
    pub service: String,
    pub db: DatabaseConnection,
    /// The gateway's own store (its statement counter, `verify`).
    pub store: Store,
    pub database_url: String,
    _dir: tempfile::TempDir,
}

/// Runs a test body once on SQLite and once on PostgreSQL.
macro_rules! both_engines {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name(crate::helpers::spawn_app(crate::helpers::Engine::Sqlite).await).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name(crate::helpers::spawn_app(crate::helpers::Engine::Postgres).await).await
                }
                /// PostgreSQL through PgBouncer in transaction mode.
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres_pgbouncer() {
                    super::$name(crate::helpers::spawn_pooled().await).await
                }
            }
        )*
    };
}

pub const SECRET: [u8; 32] = [7u8; 32];

/// A fresh PostgreSQL database on the cluster named by TEST_DATABASE_URL.
/// Missing configuration is a failure, never a silent skip.
pub async fn fresh_postgres_url() -> String {
    let admin_url = std::env::var("TEST_DATABASE_URL")
        .expect("TEST_DATABASE_URL must point at a PostgreSQL server (scripts/test.sh starts one)");
    let name = format!("gw_{}", uuid::Uuid::new_v4().simple());
    let admin = Database::connect(&admin_url)
        .await
        .expect("connect to TEST_DATABASE_URL");
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create test database");
    admin.close().await.ok();
    let (base, query) = match admin_url.split_once('?') {
        Some((b, q)) => (b.to_owned(), format!("?{q}")),
        None => (admin_url.clone(), String::new()),
    };
    let base = base
        .rsplit_once('/')
        .map(|(b, _)| b.to_owned())
        .unwrap_or(base);
    format!("{base}/{name}{query}")
}

/// The keys of the test secret.
pub fn test_keys() -> TokenKeys {
    TokenKeys::new(&JwtSecret::new(SECRET.to_vec()).unwrap())
}

pub fn settings(database_url: &str) -> Settings {
    Settings {
        database_url: database_url.to_owned(),
        database_listen_url: None,
        transaction_pooling: false,
        database_read_urls: Vec::new(),
        read_max_lag_ms: 1_000,
        bind: "127.0.0.1:0".to_owned(),
        fal_api_base_url: "http://127.0.0.1:9".to_owned(),
        fal_timeout_ms: 2_000,
        fal_concurrency: 8,
        fal_max_attempts: 3,
        fal_cache_secs: 60,
        fal_mismatch_tolerance_usd: 0.01,
        points_per_usd: 100.0,
        fal_job_tolerance_usd: 0.001,
        fal_reconcile_every_secs: 0,
        fal_reconcile_days: 3,
        legacy_zone: points_gateway::store::DEFAULT_LEGACY_ZONE,
        expiry_sweep_secs: 0,
        db_max_connections: 10,
        request_timeout_ms: 30_000,
        shutdown_grace_secs: 5,
        rates: points_gateway::config::Rates::UNLIMITED,
        introspection_for_all: false,
        log_json: false,
        ws_init_timeout_ms: 10_000,
        ws_keepalive_secs: 15,
        subscriber_queue: 256,
        header_timeout_ms: 10_000,
        max_connections: 10_000,
        ws_max_connections: 8_000,
        ws_anonymous_per_address: 32,
        subscriptions_per_subject: 500,
        ws_anonymous_max: 512,
        max_connections_per_address: 256,
        first_byte_timeout_ms: 2_000,
        ws_max_per_subject: 0,
        ws_message_rate: 0.0,
        metrics_bind: None,
        cors_origins: Vec::new(),
        pg_consume_call: true,
        migrate_on_start: true,
    }
}

pub async fn database_url(engine: Engine, dir: &tempfile::TempDir) -> String {
    match engine {
        Engine::Sqlite => format!("sqlite://{}/gw.sqlite?mode=rwc", dir.path().display()),
        Engine::Postgres => fresh_postgres_url().await,
    }
}

pub async fn spawn_app(engine: Engine) -> TestApp {
    spawn_with(engine, |_| {}).await
}

/// Spawns with adjusted settings (e.g. the fal stand-in's URL).
pub async fn spawn_with(engine: Engine, adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let url = database_url(engine, &dir).await;
    let mut s = settings(&url);
    adjust(&mut s);
    start(s, dir).await
}

/// A gateway on a fresh PostgreSQL database through the shared PgBouncer
/// in transaction mode (`DATABASE_POOL_MODE=transaction`, the tail's
/// `LISTEN` direct). The test's own SQL (`db`, `database_url`) goes to the
/// database directly.
pub async fn spawn_pooled() -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    spawn_pooled_on(fresh_postgres_url().await, dir).await
}

/// [`spawn_pooled`] with adjusted settings.
pub async fn spawn_pooled_with(adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    pooled(fresh_postgres_url().await, dir, adjust).await
}

/// [`spawn_pooled`] on an existing database.
pub async fn spawn_pooled_on(direct: String, dir: tempfile::TempDir) -> TestApp {
    pooled(direct, dir, |_| {}).await
}

async fn pooled(
    direct: String,
    dir: tempfile::TempDir,
    adjust: impl FnOnce(&mut Settings),
) -> TestApp {
    let bouncer = crate::pgbouncer::PgBouncer::shared();
    let mut s = settings(&bouncer.url_for(&direct));
    adjust(&mut s);
    s.transaction_pooling = true;
    s.database_listen_url = Some(direct.clone());
    let mut app = start(s, dir).await;
    app.db = Database::connect(&direct).await.expect("connect directly");
    app.database_url = direct;
    app
}

/// Spawns a gateway instance on an existing database.
pub async fn spawn_on(database_url: String, dir: tempfile::TempDir) -> TestApp {
    start(settings(&database_url), dir).await
}

async fn start(settings: Settings, dir: tempfile::TempDir) -> TestApp {
    start_until(settings, dir, std::future::pending()).await.0
}

/// Spawns an instance that shuts down when `stop` fires; the handle ends
/// when the server has finished its graceful shutdown.
pub async fn spawn_stoppable(
    engine: Engine,
) -> (
    TestApp,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let dir = tempfile::tempdir().unwrap();
    let url = database_url(engine, &dir).await;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let (app, handle) = start_until(settings(&url), dir, async move {
        let _ = rx.await;
    })
    .await;
    (app, tx, handle)
}

async fn start_until(
    settings: Settings,
    dir: tempfile::TempDir,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> (TestApp, tokio::task::JoinHandle<anyhow::Result<()>>) {
    let database_url = settings.database_url.clone();
    let keys = test_keys();
    let app = Application::build(settings, keys.clone())
        .await
        .expect("application builds");
    let port = app.port();
    let store = app.state().store.clone();
    let db = store.connection().clone();
    let handle = tokio::spawn(app.run_until(stop));
    let admin = keys
        .mint(Role::Admin, None, chrono::Duration::hours(1))
        .unwrap();
    let service = keys
        .mint(Role::Service, None, chrono::Duration::hours(1))
        .unwrap();
    let app = TestApp {
        url: format!("http://127.0.0.1:{port}"),
        client: reqwest::Client::new(),
        keys,
        admin,
        service,
        db,
        store,
        database_url,
        _dir: dir,
    };
    (app, handle)
}

impl TestApp {
    /// The `/metrics` page (with an admin token).
    pub async fn metrics_text(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.url))
            .bearer_auth(&self.admin)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The value of the sample `name{labels}` on the `/metrics` page,
    /// whatever order the exposition writes the labels in.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let text = self.metrics_text().await;
        let mut want: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        want.sort();
        text.lines().find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (n, rest) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            let mut got: Vec<String> = rest
                .split(',')
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect();
            got.sort();
            (n == name && got == want).then(|| value.parse().ok())?
        })
    }

    pub fn user_token(&self, user: i32) -> String {
        self.keys
            .mint(Role::User, Some(user), chrono::Duration::hours(1))
            .unwrap()
    }

    /// POSTs one GraphQL operation and returns the JSON body.
    pub async fn gql(&self, token: &str, query: &str, variables: Value) -> Value {
        self.client
            .post(format!("{}/graphql", self.url))
            .bearer_auth(token)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .expect("request sent")
            .json()
            .await
            .expect("JSON body")
    }

    /// POSTs `{ query }` with an optional bearer token; the raw response.
    pub async fn post_raw(&self, token: Option<&str>, query: &str) -> reqwest::Response {
        let mut req = self.client.post(format!("{}/graphql", self.url));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.json(&json!({ "query": query }))
            .send()
            .await
            .expect("request sent")
    }

    pub async fn create_user(&self, name: &str) -> i32 {
        let r = self
            .gql(
                &self.service,
                "mutation($n: String!) { createUser(input: { name: $n }) { id } }",
                json!({ "n": name }),
            )
            .await;
        r["data"]["createUser"]["id"]
            .as_i64()
            .unwrap_or_else(|| panic!("{r}")) as i32
    }

    pub async fn recharge(
        &self,
        user: i32,
        amount: i64,
        order: &str,
        expires_at: Option<&str>,
    ) -> Value {
        self.gql(
            &self.service,
            "mutation($u: Int!, $a: Int!, $o: String!, $e: DateTime) { recharge(input: { userId: $u, amount: $a, orderId: $o, moneyCents: $a, expiresAt: $e }) { id amount balanceBefore balanceAfter batchId description } }",
            json!({ "u": user, "a": amount, "o": order, "e": expires_at }),
        )
        .await
    }

    pub async fn consume(
        &self,
        user: i32,
        amount: i64,
        source: &str,
        source_id: &str,
        duration: Option<f64>,
    ) -> Value {
        self.gql(
            &self.service,
            "mutation($u: Int!, $a: Int!, $s: SourceType!, $id: String!, $d: Float) { consume(input: { userId: $u, amount: $a, sourceType: $s, sourceId: $id, duration: $d }) { id type amount change balanceBefore balanceAfter duration description batchId } }",
            json!({ "u": user, "a": amount, "s": source, "id": source_id, "d": duration }),
        )
        .await
    }

    pub async fn refund(
        &self,
        source: &str,
        source_id: &str,
        key: &str,
        amount: Option<i64>,
    ) -> Value {
        self.gql(
            &self.service,
            "mutation($s: SourceType!, $id: String!, $k: String!, $a: Int) { refund(input: { sourceType: $s, sourceId: $id, refundKey: $k, amount: $a }) { id type amount change balanceBefore balanceAfter description } }",
            json!({ "s": source, "id": source_id, "k": key, "a": amount }),
        )
        .await
    }

    pub async fn balance(&self, user: i32) -> i64 {
        let r = self
            .gql(
                &self.admin,
                "query($id: Int!) { user(id: $id) { balance } }",
                json!({ "id": user }),
            )
            .await;
        r["data"]["user"]["balance"]
            .as_i64()
            .unwrap_or_else(|| panic!("{r}"))
    }

    /// Remaining points per batch of a user, oldest batch first.
    pub async fn batches(&self, user: i32) -> Vec<i64> {
        let rows = self
            .db
            .query_all_raw(Statement::from_sql_and_values(
                self.db.get_database_backend(),
                "SELECT remaining FROM gw_point_batches WHERE user_id = $1 ORDER BY id",
                [user.into()],
            ))
            .await
            .unwrap();
        rows.iter()
            .map(|r| r.try_get::<i64>("", "remaining").unwrap())
            .collect()
    }

    pub async fn count(&self, table: &str) -> i64 {
        let r = self
            .db
            .query_one_raw(Statement::from_string(
                self.db.get_database_backend(),
                format!("SELECT COUNT(*) AS n FROM {table}"),
            ))
            .await
            .unwrap()
            .unwrap();
        r.try_get::<i64>("", "n").unwrap()
    }

    /// Rows in every table the ledger writes: unchanged means nothing written.
    pub async fn footprint(&self) -> Vec<i64> {
        let mut v = Vec::new();
        for t in [
            "mjk_point_transactions",
            "gw_point_batches",
            "gw_point_allocations",
            "ts_points_detail",
            "ts_financial_transactions",
            "gw_users",
        ] {
            v.push(self.count(t).await);
        }
        v
    }

    /// For plan tests on PostgreSQL: a user `name` with 100 points, tables
    /// at a platform's size (20,000 open holds and 20,000 ledger rows of
    /// that user, written as another program would: no `gw_entries`; each
    /// with its event; then statistics), and a transaction under generic
    /// plans.
    pub async fn at_scale(&self, name: &str) -> (i32, sea_orm::DatabaseTransaction) {
        let user = self.create_user(name).await;
        self.recharge(user, 100, "o", None).await;
        self.db
            .execute_unprepared(&format!(
                "INSERT INTO gw_holds (user_id, source_type, source_id, amount, status, \
                   request_hash, expires_at, created_at, seq) \
                 SELECT {user}, 'script', 'bulk-' || g, 1, 'held', md5(g::text), \
                   now() + interval '1 day', now(), g FROM generate_series(1, 20000) g; \
                 INSERT INTO mjk_point_transactions (user_id, type, amount, balance_before, \
                   balance_after, source_type, source_id, description, created_at, updated_at) \
                 SELECT (SELECT uuid FROM gw_users WHERE id = {user}), 'consume', 1, 100, 99, \
                   'script', 'bulk-' || g, 'x', now(), now() FROM generate_series(1, 20000) g; \
                 ANALYZE"
            ))
            .await
            .unwrap();
        let txn = sea_orm::TransactionTrait::begin(&self.db).await.unwrap();
        txn.execute_unprepared("SET LOCAL plan_cache_mode = force_generic_plan")
            .await
            .unwrap();
        (user, txn)
    }

    pub async fn assert_verify_clean(&self) {
        let (_, violations) = points_gateway::domain::verify::verify(&self.store)
            .await
            .unwrap();
        assert!(violations.is_empty(), "verify found: {violations:#?}");
    }
}

/// A validated gift recharge, for tests that call the ledger directly.
pub fn gift(user: i32, amount: i64, order: &str) -> points_gateway::domain::input::RechargeRequest {
    use points_gateway::domain::input::{RechargeDraft, RechargeRequest};
    RechargeRequest::new(
        RechargeDraft {
            user_id: user,
            amount,
            order_id: order,
            kind: points_gateway::domain::source::RechargeKind::Gift,
            money_cents: None,
            pay_type: None,
            expires_at: None,
        },
        chrono::Utc::now(),
    )
    .unwrap()
}

pub fn code(r: &Value) -> Option<&str> {
    r["errors"][0]["extensions"]["code"].as_str()
}

pub fn data<'a>(r: &'a Value, field: &str) -> &'a Value {
    let v = &r["data"][field];
    assert!(!v.is_null(), "no data.{field} in {r}");
    v
}

/// A time as the ts platform writes it into its tables: naive wall clock
/// of its zone (peewee `DateTimeField`).
pub fn platform_time(t: chrono::DateTime<chrono::Utc>) -> entity::legacy_time::LocalTime {
    entity::legacy_time::LocalTime::of(t, points_gateway::store::DEFAULT_LEGACY_ZONE)
}

/// PostgreSQL's plan for `statement`, one line per plan node.
pub async fn explain(txn: &sea_orm::DatabaseTransaction, statement: &str) -> String {
    txn.query_all_raw(Statement::from_string(
        sea_orm::DbBackend::Postgres,
        format!("EXPLAIN {statement}"),
    ))
    .await
    .unwrap()
    .iter()
    .map(|r| r.try_get_by_index::<String>(0).unwrap())
    .collect::<Vec<_>>()
    .join("\n")
}
