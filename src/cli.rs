//! The `points-gateway` command line: `serve` (default), `migrate`, `token`,
//! `schema`, `source-types`, `verify`, `adopt`, `release`, `seed-demo`.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::auth::{CallerName, Role, TokenKeys};
use crate::config::{AuthSettings, SecretSource, SecretUse, Settings};
use crate::domain::source::{DurationRule, SourceType};
use crate::startup::Application;
use crate::store::Store;

#[derive(Parser, Debug)]
#[command(
    name = "points-gateway",
    version,
    about = "GraphQL gateway over a points billing database"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the API (the default); applies migrations first.
    Serve {
        /// Do not migrate (a rollout runs `migrate` as its own step first):
        /// a database lacking any of this build's migrations is refused.
        #[arg(long)]
        no_migrate: bool,
    },
    /// Apply pending migrations and exit.
    Migrate,
    /// Mint a bearer token with the configured secret.
    Token {
        /// user: their own data; service: mutations and reads of any user;
        /// admin: everything; partner: balance subscriptions only.
        #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(["user", "service", "admin", "partner"]))]
        role: String,
        /// The user id (required for `--role user`).
        #[arg(long)]
        user: Option<i32>,
        /// The caller's name, for the other roles (`--role service --name
        /// fal-runner`): the subject becomes `service:fal-runner`, its rate
        /// limit its own, and the rows it writes say so (`writtenBy`).
        #[arg(long)]
        name: Option<String>,
        /// Lifetime in hours (at least 1).
        #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(i64).range(1..))]
        hours: i64,
    },
    /// Revoke a token by its id (printed by `token`): every instance
    /// refuses it within seconds, until it expires.
    Revoke {
        /// The token's id (its `jti`).
        id: String,
    },
    /// Print the GraphQL SDL.
    Schema,
    /// List the source types consumes and holds may name, or set one.
    SourceTypes {
        #[command(subcommand)]
        action: Option<SourceTypesAction>,
    },
    /// Check every ledger invariant; exit 1 if any is violated.
    Verify,
    /// Take over a database the platforms already run: by default a dry run
    /// that changes nothing and reports what it found and would do.
    Adopt {
        /// Carry the plan out, in one transaction.
        #[arg(long)]
        apply: bool,
        /// CSV of `ts_user_id,mjk_user_uuid`: people known to both systems.
        #[arg(long, value_name = "FILE")]
        user_map: Option<std::path::PathBuf>,
        /// Which balance each adopted user opens with (required by --apply).
        #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(["ledger", "platform", "sum"]))]
        opening_balance: Option<String>,
        /// The `ts_users` columns holding a user's paid and gift points
        /// (seed 004 does not describe the table); default `money,gift_money`
        /// where they exist.
        #[arg(long, value_name = "PAID[,GIFT]")]
        ts_balance_columns: Option<String>,
    },
    /// Hand an adopted database back to the legacy systems (the way back):
    /// by default a dry run that reports what it would do.
    Release {
        /// Carry it out, in one transaction.
        #[arg(long)]
        apply: bool,
        /// Which system keeps the points of users both know.
        #[arg(long, default_value = "ts", value_parser = clap::builder::PossibleValuesParser::new(["ts", "mjk"]))]
        joined_to: String,
    },
    /// Reconcile every fal job of `[--from, --to)` against fal's billing
    /// events, per account, and publish the lines (what the admin mutation
    /// `reconcileFalBilling` does, in the foreground); exit 1 if any
    /// account failed.
    ReconcileFal {
        /// Start, inclusive (RFC 3339).
        #[arg(long)]
        from: chrono::DateTime<chrono::Utc>,
        /// End, exclusive (RFC 3339); at most 366 days after `--from`.
        #[arg(long)]
        to: chrono::DateTime<chrono::Utc>,
        /// Only these `ts_fal_account` ids (repeatable); default all.
        #[arg(long = "account")]
        accounts: Vec<i32>,
    },
    /// Fill the database with realistic demo data (applies migrations).
    SeedDemo {
        #[arg(long, default_value_t = 300)]
        users: usize,
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
}

#[derive(Subcommand, Debug)]
pub enum SourceTypesAction {
    /// Print every configured source type (the default).
    List,
    /// Add a source type, or change its label or duration rule (new rows
    /// only; rows written keep their descriptions). Running instances see
    /// it within 30 s, at once for a name they did not know.
    Set {
        /// Stored name: lower-case letters, digits and `_` (`agent_market`).
        name: String,
        /// The `【…】` label descriptions start with.
        #[arg(long)]
        label: String,
        /// Whether consumes and holds must, may or must not give `duration`.
        #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(["required", "optional", "refused"]))]
        duration: String,
    },
}

/// Logs to stderr (text, or JSON lines) and, when an OTLP endpoint is
/// configured, traces to it (`crate::telemetry`); the returned guard
/// flushes the traces at the end.
pub fn init_tracing(json: bool) -> crate::telemetry::Telemetry {
    // The database and HTTP-client crates log statements with their bound
    // values (fal keys among them) and request details at debug level: they
    // stay at warn whatever RUST_LOG says, so no secret reaches a log.
    const QUIET: &str =
        "sqlx=warn,sea_orm=warn,sea_query=warn,hyper=warn,hyper_util=warn,reqwest=warn,h2=warn";
    let requested = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
    let filter = tracing_subscriber::EnvFilter::try_new(format!("{requested},{QUIET}"))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("info,{QUIET}")));
    // Logs go to stderr; stdout carries only what a command prints.
    // Colours only for a person at a terminal, never into a log file.
    use std::io::IsTerminal;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let text = (!json).then(|| {
        tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
    });
    let lines = json.then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
    });
    let (otel, telemetry) = match crate::telemetry::layer() {
        Ok(pair) => pair,
        Err(e) => {
            eprintln!("traces are off: the OTLP exporter cannot start: {e}");
            (None, crate::telemetry::Telemetry::OFF)
        }
    };
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(text)
        .with(lines)
        .with(otel)
        .try_init();
    telemetry
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command.unwrap_or(Command::Serve { no_migrate: false }) {
        // The SDL needs no configuration (and must not create a secret file).
        Command::Schema => {
            print!("{}", crate::graphql::sdl());
            Ok(ExitCode::SUCCESS)
        }
        command => run_configured(command, Settings::from_env()?).await,
    }
}

async fn run_configured(command: Command, settings: Settings) -> anyhow::Result<ExitCode> {
    let telemetry = init_tracing(settings.log_json);
    let outcome = run_command(command, settings).await;
    // Off the runtime's workers: the exporter's flush blocks.
    let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    outcome
}

async fn run_command(command: Command, settings: Settings) -> anyhow::Result<ExitCode> {
    match command {
        Command::Schema => {
            print!("{}", crate::graphql::sdl());
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve { no_migrate } => {
            let mut settings = settings;
            settings.migrate_on_start = !no_migrate;
            let keys = token_keys(&settings, SecretUse::Serve)?;
            let embedded = settings.database_url.starts_with("sqlite:");
            let bind = settings.bind.clone();
            let app = Application::build(settings, keys.clone()).await?;
            tracing::info!(
                address = %bind,
                port = app.port(),
                engine = app.state().store.engine().name(),
                version = env!("CARGO_PKG_VERSION"),
                "points-gateway serving /graphql"
            );
            println!(
                "points-gateway listening on http://127.0.0.1:{}",
                app.port()
            );
            println!("GraphiQL: http://127.0.0.1:{}/graphql", app.port());
            if embedded {
                // The embedded setup is for trying things out: hand the
                // newcomer a token. A production (PostgreSQL) start prints
                // none, so no token ends up in captured output.
                let token = keys.mint(Role::Admin, None, chrono::Duration::hours(24))?;
                println!("admin token (24h), send as `Authorization: Bearer <token>`:\n{token}");
            } else {
                println!("mint a token with `points-gateway token --role admin`");
            }
            app.run_until_stopped().await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate => {
            let store = connect(&settings, 2).await?;
            store.migrate().await?;
            println!("migrations applied");
            Ok(ExitCode::SUCCESS)
        }
        Command::Token {
            role,
            user,
            name,
            hours,
        } => {
            let role: Role = role.parse().map_err(anyhow::Error::msg)?;
            let name = name
                .as_deref()
                .map(CallerName::new)
                .transpose()
                .map_err(anyhow::Error::msg)?;
            let auth = AuthSettings::from_env(&settings.database_url, SecretUse::Mint)?;
            let keys = keys_of(&auth);
            let ttl = chrono::Duration::hours(hours);
            let issued = keys.issue(role, user, name.as_ref(), ttl)?;
            // stdout is the token alone (scripts capture it); where the
            // secret came from and the token's id go to stderr.
            let secret = match &auth.source {
                SecretSource::Environment => "GATEWAY_JWT_SECRET".to_owned(),
                SecretSource::File(f) => f.display().to_string(),
            };
            eprintln!(
                "signed with {secret} (key {}); token id {} (revoke with `points-gateway revoke {}`)",
                keys.signing_kid(),
                issued.id,
                issued.id
            );
            println!("{}", issued.token);
            Ok(ExitCode::SUCCESS)
        }
        Command::ReconcileFal { from, to, accounts } => {
            let (from, to) = crate::reconcile::window(from, to).map_err(anyhow::Error::msg)?;
            let store = connect(&settings, 4).await?;
            store.migrate().await?;
            let metrics = std::sync::Arc::new(crate::metrics::Metrics::new(store.engine().name())?);
            let fal = crate::startup::fal_platform(&settings, metrics.clone())?;
            let reconciler = crate::reconcile::Reconciler::new(
                store,
                fal,
                metrics,
                crate::startup::reconcile_terms(&settings),
            );
            let named = (!accounts.is_empty()).then_some(accounts.as_slice());
            let runs = reconciler
                .run(named, from, to, crate::store::billing::RunTrigger::Cli)
                .await?;
            let mut failed = false;
            for r in &runs {
                match r.status {
                    crate::store::billing::RunStatus::Done => println!(
                        "account {}: done: {} pages, {} events, {} lines",
                        r.account_id, r.pages, r.events, r.lines
                    ),
                    _ => {
                        failed = true;
                        println!(
                            "account {}: {}: {} {}",
                            r.account_id,
                            r.status.as_str(),
                            r.error_code.as_deref().unwrap_or(""),
                            r.error.as_deref().unwrap_or("")
                        );
                    }
                }
            }
            if runs.is_empty() {
                println!("no fal account to reconcile");
            }
            Ok(if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Revoke { id } => {
            let id = crate::auth::TokenId::new(&id).map_err(anyhow::Error::msg)?;
            let store = connect(&settings, 2).await?;
            store.migrate().await?;
            // Without the token its expiry is unknown: the row is kept for
            // the longest lifetime any token may have.
            let max_hours = crate::config::max_token_hours()?;
            let until = chrono::Utc::now().timestamp() + max_hours.saturating_mul(3600);
            let new = store.revoke_token(id.as_str(), until, "cli").await?;
            println!(
                "{}",
                if new {
                    "revoked: every instance refuses it within 2 s"
                } else {
                    "already revoked"
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::SourceTypes { action } => {
            let store = connect(&settings, 2).await?;
            store.migrate().await?;
            if let Some(SourceTypesAction::Set {
                name,
                label,
                duration,
            }) = action
            {
                let rule = DurationRule::parse(&duration)
                    .ok_or_else(|| anyhow::anyhow!("unknown duration rule {duration:?}"))?;
                let t = SourceType::new(&name, &label, rule).map_err(anyhow::Error::msg)?;
                crate::catalog::set(&store, &t).await?;
            }
            for t in crate::catalog::read_all(&store).await? {
                println!("{}\t{}\t{}", t.as_str(), t.label(), t.duration().as_str());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify => {
            let store = connect(&settings, 2).await?;
            store.ensure_adopted().await?;
            let (checked, violations) = crate::domain::verify::verify(&store)
                .await
                .context("verify could not read the database")?;
            for v in &violations {
                println!("{v}");
            }
            if checked.cutover > 0 {
                println!(
                    "history up to ledger row {} was written before the gateway took over: \
                     its anomalies, as information (not violations):",
                    checked.cutover
                );
                let history = crate::store::adopt::history_anomalies(store.connection())
                    .await
                    .context("verify could not read the history")?;
                for a in history.iter().filter(|a| a.count > 0) {
                    println!("  [history] {}: {}", a.kind, a.count);
                }
            }
            println!(
                "checked {} users, {} ledger rows, {} batches: {} violation(s)",
                checked.users,
                checked.ledger_rows,
                checked.batches,
                violations.len()
            );
            Ok(if violations.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Adopt {
            apply,
            user_map,
            opening_balance,
            ts_balance_columns,
        } => {
            let opening = opening_balance
                .map(|o| o.parse::<crate::domain::adopt::OpeningBalance>())
                .transpose()
                .map_err(anyhow::Error::msg)?;
            let ts_balance_columns = ts_balance_columns
                .map(|c| crate::store::adopt::TsBalanceColumns::parse(&c))
                .transpose()
                .map_err(anyhow::Error::msg)?;
            let opts = crate::adopt::AdoptOptions {
                apply,
                user_map,
                opening,
                ts_balance_columns,
            };
            if apply && opening.is_none() {
                println!("{}", crate::adopt::NEEDS_OPENING);
                return Ok(ExitCode::FAILURE);
            }
            // PostgreSQL's `--apply` plans inside its own transaction and
            // rolls back on refusal, so it needs no check first (at 200,000
            // users a second inventory read costs 15 s of the writers' wait).
            if apply
                && crate::store::Engine::of_url(&settings.database_url)?
                    == crate::store::Engine::Postgres
            {
                let store = connect_as(&settings, 2, Access::Adopting).await?;
                let outcome = crate::adopt::adopt(&store, &opts).await?;
                return Ok(printed(&outcome.text, outcome.ok));
            }
            // First through a read-only connection (the engine itself
            // guarantees the dry run changes nothing, not even SQLite's
            // journal mode); `--apply` connects for writing only once that
            // plan can proceed.
            let reader = connect_as(&settings, 2, Access::ReadOnly).await?;
            let check = crate::adopt::adopt(
                &reader,
                &crate::adopt::AdoptOptions {
                    apply: false,
                    ..opts.clone()
                },
            )
            .await?;
            reader.connection().clone().close().await.ok();
            let outcome = if apply && check.ok && !check.adopted {
                let store = connect_as(&settings, 2, Access::Adopting).await?;
                crate::adopt::adopt(&store, &opts).await?
            } else {
                check
            };
            Ok(printed(&outcome.text, outcome.ok))
        }
        Command::Release { apply, joined_to } => {
            let joined_to = match joined_to.as_str() {
                "mjk" => crate::store::adopt::release::JoinedTo::Mjk,
                _ => crate::store::adopt::release::JoinedTo::Ts,
            };
            let store = connect_as(&settings, 2, Access::Adopting).await?;
            let outcome = crate::release::release(
                &store,
                &crate::release::ReleaseOptions { apply, joined_to },
            )
            .await?;
            Ok(printed(&outcome.text, outcome.ok))
        }
        Command::SeedDemo { users, seed } => {
            let store = connect(&settings, 4).await?;
            store.migrate().await?;
            let r = crate::seed::seed_demo(&store, users, seed).await?;
            if r.already > 0 {
                println!(
                    "{} already holds demo data ({} demo users): nothing seeded; point DATABASE_URL elsewhere for a fresh demo",
                    crate::store::describe(&settings.database_url),
                    r.already
                );
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "seeded {} users, {} ledger rows, {} fal accounts, {} fal tasks",
                r.users, r.ledger_rows, r.accounts, r.tasks
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The keys `serve` checks tokens with.
fn token_keys(settings: &Settings, usage: SecretUse) -> anyhow::Result<TokenKeys> {
    Ok(keys_of(&AuthSettings::from_env(
        &settings.database_url,
        usage,
    )?))
}

fn keys_of(auth: &AuthSettings) -> TokenKeys {
    let keys = TokenKeys::rotating(&auth.secret, &auth.previous, auth.max_lifetime_hours);
    match &auth.jwks_url {
        Some(url) => keys.with_jwks(std::sync::Arc::new(crate::auth::Jwks::new(
            url,
            auth.issuer.clone(),
            auth.audience.clone(),
        ))),
        None => keys,
    }
}

/// Prints a command's report; its exit code says whether it succeeded.
fn printed(text: &str, ok: bool) -> ExitCode {
    print!("{text}");
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The store of the configured database, in the configured legacy zone.
async fn connect(settings: &Settings, max_connections: u32) -> anyhow::Result<Store> {
    connect_as(settings, max_connections, Access::Gateway).await
}

/// How a command uses the database.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Reads only (`adopt`'s dry run).
    ReadOnly,
    /// Writes a database the gateway owns: an unadopted platform database
    /// is refused before anything is written.
    Gateway,
    /// `adopt --apply`: writes the platforms' database to adopt it.
    Adopting,
}

async fn connect_as(
    settings: &Settings,
    max_connections: u32,
    access: Access,
) -> anyhow::Result<Store> {
    if access == Access::Gateway {
        Store::refuse_unadopted(&settings.database_url).await?;
    }
    Ok(Store::connect_with(crate::store::ConnectOptionsSpec {
        url: &settings.database_url,
        max_connections,
        statement_timeout: None,
        legacy_zone: settings.legacy_zone,
        read_only: access == Access::ReadOnly,
        acquire_timeout: None,
        transaction_pooling: settings.transaction_pooling,
    })
    .await?)
}
