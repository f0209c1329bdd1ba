//! Configuration from the environment (DESIGN.md section 6), each variable
//! with a default so `cargo run --release` needs nothing set.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use rand::RngCore;

/// Default SQLite file, in the working directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://points-gateway.sqlite?mode=rwc";

/// Requests per second allowed to one caller; bursts up to twice that.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rates {
    pub user: f64,
    pub service: f64,
    pub admin: f64,
    pub partner: f64,
    pub anonymous: f64,
}

impl Rates {
    /// No limits at all.
    pub const UNLIMITED: Rates = Rates {
        user: 0.0,
        service: 0.0,
        admin: 0.0,
        partner: 0.0,
        anonymous: 0.0,
    };
}

/// The HS256 secret. Wrapped so it cannot end up in a `{:?}` or a log line.
#[derive(Clone)]
pub struct JwtSecret(Vec<u8>);

impl JwtSecret {
    pub fn new(bytes: Vec<u8>) -> anyhow::Result<JwtSecret> {
        if bytes.len() < 32 {
            bail!("GATEWAY_JWT_SECRET must be at least 32 bytes");
        }
        Ok(JwtSecret(bytes))
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for JwtSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtSecret(<redacted>)")
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    /// `DATABASE_URL`: `sqlite://FILE?mode=rwc` or `postgres://...`.
    pub database_url: String,
    /// `DATABASE_LISTEN_URL`: where the event tail's `LISTEN` connects
    /// (PostgreSQL), when `DATABASE_URL` goes through a pooler; default the
    /// same URL.
    pub database_listen_url: Option<String>,
    /// `DATABASE_POOL_MODE=transaction`: `DATABASE_URL` goes through a
    /// pooler in transaction mode (PgBouncer `pool_mode = transaction`);
    /// `session` (the default) for a direct connection or session pooling.
    pub transaction_pooling: bool,
    /// `DATABASE_READ_URL`: PostgreSQL read replicas (comma-separated)
    /// serving the read side of the API (`store::replicas`).
    pub database_read_urls: Vec<String>,
    /// `DATABASE_READ_MAX_LAG_MS`: a replica lagging more is skipped.
    pub read_max_lag_ms: u64,
    /// `GATEWAY_BIND`: listen address; port 0 picks a free port.
    pub bind: String,
    /// `FAL_API_BASE_URL`.
    pub fal_api_base_url: String,
    /// `FAL_TIMEOUT_MS`.
    pub fal_timeout_ms: u64,
    /// `FAL_CONCURRENCY`: fal calls in flight at once, across all requests.
    pub fal_concurrency: usize,
    /// `FAL_MAX_ATTEMPTS`: tries per fal call on 429 / 5xx (1 = no retry).
    pub fal_max_attempts: u32,
    /// `FAL_CACHE_SECS`: how long a fal usage answer is reused.
    pub fal_cache_secs: u64,
    /// `FAL_MISMATCH_TOLERANCE_USD`: per-endpoint difference above which
    /// fal's cost and ours are flagged as a mismatch.
    pub fal_mismatch_tolerance_usd: f64,
    /// `POINTS_PER_USD`: how many points one US dollar buys, for margins.
    pub points_per_usd: f64,
    /// `FAL_JOB_TOLERANCE_USD`: per job, how far the platform's
    /// `cost_money` may be from fal's billed cost before the line is
    /// flagged `COST_MISMATCH`.
    pub fal_job_tolerance_usd: f64,
    /// `FAL_RECONCILE_EVERY_SECS`: interval of the scheduled billing
    /// reconciliation; 0 (the default) turns it off.
    pub fal_reconcile_every_secs: u64,
    /// `FAL_RECONCILE_DAYS`: how many days back each scheduled pull covers.
    pub fal_reconcile_days: u32,
    /// `LEGACY_TIMEZONE`: the IANA zone the ts platform writes its naive
    /// times in (default `Asia/Shanghai`).
    pub legacy_zone: chrono_tz::Tz,
    /// `EXPIRY_SWEEP_SECS`: interval of the background expiry sweep; 0 turns it off.
    pub expiry_sweep_secs: u64,
    /// `REQUEST_TIMEOUT_MS`: time budget of one HTTP GraphQL request.
    pub request_timeout_ms: u64,
    /// `SHUTDOWN_GRACE_SECS`: how long in-flight requests may finish after
    /// SIGTERM/SIGINT before they are dropped (rolled back).
    pub shutdown_grace_secs: u64,
    /// `RATE_LIMIT_{USER,SERVICE,ADMIN,PARTNER,ANONYMOUS}`: requests per
    /// second per token subject (anonymous: per client address); 0 = off.
    pub rates: Rates,
    /// `GATEWAY_INTROSPECTION=all` allows introspection to every caller
    /// (development); otherwise admins only.
    pub introspection_for_all: bool,
    /// `DB_MAX_CONNECTIONS`.
    pub db_max_connections: u32,
    /// `LOG_FORMAT=json` switches logs to JSON lines.
    pub log_json: bool,
    /// `WS_INIT_TIMEOUT_MS`: a WebSocket must send `connection_init` within
    /// this time (then 4408).
    pub ws_init_timeout_ms: u64,
    /// `WS_KEEPALIVE_SECS`: server `ping` (legacy: `ka`) interval; 0 = off.
    pub ws_keepalive_secs: u64,
    /// `SUBSCRIBER_QUEUE`: balance events queued per subscriber before it
    /// is behind and gets a resync instead.
    pub subscriber_queue: usize,
    /// `SUBSCRIPTIONS_PER_SUBJECT`: open `balanceChanged` subscriptions per
    /// token subject, over all its sockets (0 = no cap); past it
    /// `LIMIT_EXCEEDED`.
    pub subscriptions_per_subject: usize,
    /// `HTTP_HEADER_TIMEOUT_MS`: a client must send a request's headers
    /// within this time, and an idle keep-alive connection is closed after
    /// it (the same timer runs while HTTP/1 waits for the next request).
    pub header_timeout_ms: u64,
    /// `MAX_CONNECTIONS`: open TCP connections (HTTP and WebSocket); more
    /// wait in the kernel's backlog until one closes.
    pub max_connections: usize,
    /// `MAX_CONNECTIONS_PER_ADDRESS`: open TCP connections from one client
    /// address; further ones are closed at once (0 = off: behind a reverse
    /// proxy every client has the proxy's address).
    pub max_connections_per_address: usize,
    /// `HTTP_FIRST_BYTE_TIMEOUT_MS`: a new connection that sends nothing
    /// within this time is closed (at most the header timeout).
    pub first_byte_timeout_ms: u64,
    /// `WS_MAX_CONNECTIONS`: authenticated WebSockets in all (within
    /// `MAX_CONNECTIONS`). A socket takes its place when its
    /// `connection_init` is accepted.
    pub ws_max_connections: usize,
    /// `WS_ANONYMOUS_PER_ADDRESS`: WebSockets not yet authenticated, per
    /// client address (0 = off).
    pub ws_anonymous_per_address: usize,
    /// `WS_ANONYMOUS_MAX`: WebSockets not yet authenticated, in all.
    pub ws_anonymous_max: usize,
    /// `WS_MAX_PER_SUBJECT`: open WebSockets per token subject; 0 = off.
    pub ws_max_per_subject: usize,
    /// `WS_MESSAGE_RATE`: client messages per second per WebSocket (bursts
    /// of twice that); past it the connection is closed (4429); 0 = off.
    pub ws_message_rate: f64,
    /// `METRICS_BIND`: also serve `/metrics`, without a token, on this
    /// address (a private network for Prometheus). On the API port
    /// `/metrics` needs an admin token.
    pub metrics_bind: Option<String>,
    /// `GATEWAY_CORS_ORIGINS`: browser origins (`https://app.example`,
    /// comma-separated) allowed to call the API and open WebSockets from
    /// their pages; none by default (same-origin pages, like GraphiQL,
    /// need none).
    pub cors_origins: Vec<String>,
    /// `PG_CONSUME_CALL` (default `true`): on PostgreSQL a consume is one
    /// call of `gw_consume` when it can be; `false` runs every consume
    /// through the general path (four round trips), for comparison.
    pub pg_consume_call: bool,
    /// `serve` applies pending migrations before serving (the default);
    /// `serve --no-migrate` leaves that to `migrate` and refuses a schema
    /// older than the build.
    pub migrate_on_start: bool,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn parsed<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T>
where
    T::Err: std::fmt::Display,
{
    match var(name) {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|e| anyhow::anyhow!("{name}={v:?} is invalid: {e}")),
    }
}

impl Settings {
    pub fn from_env() -> anyhow::Result<Settings> {
        let database_url = var("DATABASE_URL").unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned());
        let points_per_usd: f64 = parsed("POINTS_PER_USD", 100.0)?;
        let legacy_zone = match std::env::var("LEGACY_TIMEZONE") {
            Ok(name) => name.parse::<chrono_tz::Tz>().map_err(|_| {
                anyhow::anyhow!(
                    "LEGACY_TIMEZONE must be an IANA zone name like Asia/Shanghai, not {name:?}"
                )
            })?,
            Err(_) => crate::store::DEFAULT_LEGACY_ZONE,
        };
        if !(points_per_usd.is_finite() && points_per_usd > 0.0) {
            bail!("POINTS_PER_USD must be a positive number");
        }
        let tolerance: f64 = parsed("FAL_JOB_TOLERANCE_USD", 0.001)?;
        if !(tolerance.is_finite() && (0.0..=1_000_000.0).contains(&tolerance)) {
            bail!("FAL_JOB_TOLERANCE_USD must be a number of US dollars, 0 or more");
        }
        Ok(Settings {
            database_url,
            database_listen_url: var("DATABASE_LISTEN_URL"),
            transaction_pooling: match var("DATABASE_POOL_MODE").as_deref() {
                None | Some("session") => false,
                Some("transaction") => true,
                Some(other) => {
                    bail!("DATABASE_POOL_MODE must be session or transaction, not {other:?}")
                }
            },
            database_read_urls: var("DATABASE_READ_URL")
                .map(|v| {
                    v.split(',')
                        .map(str::trim)
                        .filter(|u| !u.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            read_max_lag_ms: parsed("DATABASE_READ_MAX_LAG_MS", 1_000)?,
            bind: var("GATEWAY_BIND").unwrap_or_else(|| "127.0.0.1:8000".to_owned()),
            fal_api_base_url: var("FAL_API_BASE_URL")
                .unwrap_or_else(|| "https://api.fal.ai".to_owned()),
            fal_timeout_ms: parsed("FAL_TIMEOUT_MS", 10_000)?,
            fal_concurrency: parsed("FAL_CONCURRENCY", 8)?,
            fal_max_attempts: parsed("FAL_MAX_ATTEMPTS", 4)?,
            fal_cache_secs: parsed("FAL_CACHE_SECS", 60)?,
            fal_mismatch_tolerance_usd: parsed("FAL_MISMATCH_TOLERANCE_USD", 0.01)?,
            points_per_usd,
            fal_job_tolerance_usd: parsed("FAL_JOB_TOLERANCE_USD", 0.001)?,
            fal_reconcile_every_secs: parsed("FAL_RECONCILE_EVERY_SECS", 0)?,
            fal_reconcile_days: parsed("FAL_RECONCILE_DAYS", 3)?,
            legacy_zone,
            expiry_sweep_secs: parsed("EXPIRY_SWEEP_SECS", 60)?,
            db_max_connections: parsed("DB_MAX_CONNECTIONS", 16)?,
            request_timeout_ms: parsed("REQUEST_TIMEOUT_MS", 10_000)?,
            shutdown_grace_secs: parsed("SHUTDOWN_GRACE_SECS", 20)?,
            rates: Rates {
                user: parsed("RATE_LIMIT_USER", 20.0)?,
                service: parsed("RATE_LIMIT_SERVICE", 2_000.0)?,
                admin: parsed("RATE_LIMIT_ADMIN", 50.0)?,
                partner: parsed("RATE_LIMIT_PARTNER", 20.0)?,
                anonymous: parsed("RATE_LIMIT_ANONYMOUS", 10.0)?,
            },
            introspection_for_all: var("GATEWAY_INTROSPECTION").is_some_and(|v| v == "all"),
            log_json: var("LOG_FORMAT").is_some_and(|v| v == "json"),
            ws_init_timeout_ms: parsed("WS_INIT_TIMEOUT_MS", 3_000)?,
            ws_keepalive_secs: parsed("WS_KEEPALIVE_SECS", 15)?,
            subscriber_queue: parsed("SUBSCRIBER_QUEUE", 256)?,
            subscriptions_per_subject: parsed("SUBSCRIPTIONS_PER_SUBJECT", 500)?,
            header_timeout_ms: parsed("HTTP_HEADER_TIMEOUT_MS", 10_000)?,
            max_connections: parsed("MAX_CONNECTIONS", 10_000)?,
            max_connections_per_address: parsed("MAX_CONNECTIONS_PER_ADDRESS", 256)?,
            first_byte_timeout_ms: parsed("HTTP_FIRST_BYTE_TIMEOUT_MS", 2_000)?,
            ws_max_connections: parsed("WS_MAX_CONNECTIONS", 8_000)?,
            ws_anonymous_per_address: parsed("WS_ANONYMOUS_PER_ADDRESS", 32)?,
            ws_anonymous_max: parsed("WS_ANONYMOUS_MAX", 512)?,
            ws_max_per_subject: parsed("WS_MAX_PER_SUBJECT", 64)?,
            ws_message_rate: parsed("WS_MESSAGE_RATE", 50.0)?,
            metrics_bind: var("METRICS_BIND"),
            cors_origins: cors_origins(var("GATEWAY_CORS_ORIGINS").as_deref())?,
            pg_consume_call: parsed("PG_CONSUME_CALL", true)?,
            migrate_on_start: true,
        })
    }
}

/// A lifetime a token may have unless configured otherwise
/// (`TOKEN_MAX_HOURS`): 90 days. A service token lives for months, but a
/// forgotten `--hours 876000` token no longer lives for a century.
pub const DEFAULT_MAX_LIFETIME_HOURS: i64 = 24 * 90;

/// How a command uses the token secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretUse {
    /// `serve`: with SQLite and no configured secret, one is generated on
    /// the first start and kept beside the database.
    Serve,
    /// `token`: minting with a secret no server uses makes tokens every
    /// server refuses, so a secret is never invented here.
    Mint,
}

/// Where the signing secret came from (`token` says which it used).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// `GATEWAY_JWT_SECRET`.
    Environment,
    /// The file beside the SQLite database.
    File(PathBuf),
}

/// The token settings: read only by the commands that mint or check
/// tokens (`serve`, `token`); `migrate`, `verify`, `adopt` and the other
/// tools run without a secret.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// `GATEWAY_JWT_SECRET` (or the generated file): signs and verifies.
    pub secret: JwtSecret,
    /// `GATEWAY_JWT_PREVIOUS_SECRETS`: comma-separated secrets still
    /// accepted, never used to sign; a rotation keeps the old secret here
    /// until the tokens it signed have expired.
    pub previous: Vec<JwtSecret>,
    /// `TOKEN_MAX_HOURS`: the longest lifetime (`exp - iat`) a token may
    /// have, minted or checked.
    pub max_lifetime_hours: i64,
    /// `GATEWAY_JWKS_URL`: an identity provider's key set; its RS256/ES256
    /// tokens (with `sub`, `role`, `exp`, `iat`) are accepted too.
    pub jwks_url: Option<String>,
    /// `GATEWAY_JWT_ISSUER` / `GATEWAY_JWT_AUDIENCE`: required `iss` and
    /// `aud` of the identity provider's tokens, when set.
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub source: SecretSource,
}

impl AuthSettings {
    pub fn from_env(database_url: &str, usage: SecretUse) -> anyhow::Result<AuthSettings> {
        let (secret, source) = match var("GATEWAY_JWT_SECRET") {
            Some(s) => (JwtSecret::new(s.into_bytes())?, SecretSource::Environment),
            None => secret_beside_sqlite(database_url, usage)?,
        };
        let previous = var("GATEWAY_JWT_PREVIOUS_SECRETS")
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| {
                        JwtSecret::new(s.as_bytes().to_vec()).context(
                            "every secret of GATEWAY_JWT_PREVIOUS_SECRETS must be at least 32 bytes",
                        )
                    })
                    .collect::<anyhow::Result<Vec<_>>>()
            })
            .transpose()?
            .unwrap_or_default();
        Ok(AuthSettings {
            secret,
            previous,
            max_lifetime_hours: max_token_hours()?,
            jwks_url: var("GATEWAY_JWKS_URL"),
            issuer: var("GATEWAY_JWT_ISSUER"),
            audience: var("GATEWAY_JWT_AUDIENCE"),
            source,
        })
    }
}

/// `TOKEN_MAX_HOURS` (also read by `revoke`, which needs no secret).
pub fn max_token_hours() -> anyhow::Result<i64> {
    let hours: i64 = parsed("TOKEN_MAX_HOURS", DEFAULT_MAX_LIFETIME_HOURS)?;
    if hours < 1 {
        bail!("TOKEN_MAX_HOURS must be at least 1");
    }
    Ok(hours)
}

/// `GATEWAY_CORS_ORIGINS`: exact origins, scheme and host (and port), no
/// path; `*` is refused (the API takes credentials).
fn cors_origins(value: Option<&str>) -> anyhow::Result<Vec<String>> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    value
        .split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .map(|o| {
            let o = o.trim_end_matches('/');
            let valid = (o.starts_with("http://") || o.starts_with("https://"))
                && !o
                    .split_once("://")
                    .is_some_and(|(_, rest)| rest.contains('/'))
                && o.parse::<axum::http::HeaderValue>().is_ok();
            if !valid {
                bail!("GATEWAY_CORS_ORIGINS: {o:?} is not an origin like https://app.example");
            }
            Ok(o.to_owned())
        })
        .collect()
}

/// The file beside a SQLite database that keeps its generated secret.
fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    if path.is_empty() || path == ":memory:" {
        return None;
    }
    Some(PathBuf::from(path))
}

/// With SQLite and no configured secret, one is generated on first start and
/// kept next to the database (mode 0600), so tokens survive restarts. With
/// PostgreSQL several instances must share a secret: it has to be configured.
/// `token` never generates one: a token signed with a secret that no
/// server uses is refused by every server (the newcomer who ran `token` in
/// another directory than the server got a 401 and no clue).
fn secret_beside_sqlite(
    database_url: &str,
    usage: SecretUse,
) -> anyhow::Result<(JwtSecret, SecretSource)> {
    let Some(db) = sqlite_path(database_url) else {
        bail!("GATEWAY_JWT_SECRET must be set when DATABASE_URL is not a SQLite file");
    };
    let file = secret_file_for(&db);
    let source = SecretSource::File(file.clone());
    if let Ok(existing) = std::fs::read_to_string(&file) {
        refuse_if_shared(&file)?;
        let bytes = hex::decode(existing.trim())
            .with_context(|| format!("{} is not a hex secret", file.display()))?;
        return Ok((JwtSecret::new(bytes)?, source));
    }
    if usage == SecretUse::Mint {
        bail!(
            "no secret at {}: no gateway has served {} yet, so a token minted now would be \
             refused by every server. Run `token` with the server's DATABASE_URL (or from its \
             directory), start the server once first, or set GATEWAY_JWT_SECRET",
            file.display(),
            db.display()
        );
    }
    let mut bytes = vec![0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    write_private(&file, &hex::encode(&bytes))
        .with_context(|| format!("cannot write {}", file.display()))?;
    Ok((JwtSecret::new(bytes)?, source))
}

/// A secret file that others can read or write is no secret: refused, with
/// what to do about it (the gateway only ever creates it with mode 0600).
fn refuse_if_shared(file: &Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(file)
            .with_context(|| format!("cannot read {}", file.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            tracing::warn!(file = %file.display(), mode = format!("{:o}", mode & 0o777), "JWT secret file is accessible to others");
            bail!(
                "{} is readable or writable by other users (mode {:o}): run `chmod 600 {}`, or set GATEWAY_JWT_SECRET",
                file.display(),
                mode & 0o777,
                file.display()
            );
        }
    }
    Ok(())
}

pub fn secret_file_for(db: &Path) -> PathBuf {
    let mut name = db.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".jwt-secret");
    db.with_file_name(name)
}

fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)?.write_all(content.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn a_secret_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("gw.sqlite.jwt-secret");
        std::fs::write(&file, hex::encode([7u8; 32])).expect("write");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let e = refuse_if_shared(&file).expect_err("world-readable");
        assert!(e.to_string().contains("chmod 600"), "{e}");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert!(refuse_if_shared(&file).is_ok());
    }

    #[test]
    fn cors_origins_are_exact_origins() {
        assert_eq!(
            cors_origins(Some("https://a.example, http://localhost:5173/")).ok(),
            Some(vec![
                "https://a.example".to_owned(),
                "http://localhost:5173".to_owned()
            ])
        );
        assert!(cors_origins(Some("*")).is_err());
        assert!(cors_origins(Some("https://a.example/path")).is_err());
        assert_eq!(cors_origins(None).ok(), Some(Vec::new()));
    }

    #[test]
    fn sqlite_paths_are_found_in_urls() {
        assert_eq!(
            sqlite_path("sqlite://a/b.db?mode=rwc"),
            Some(PathBuf::from("a/b.db"))
        );
        assert_eq!(sqlite_path("sqlite:x.db"), Some(PathBuf::from("x.db")));
        assert_eq!(sqlite_path("sqlite::memory:"), None);
        assert_eq!(sqlite_path("postgres://h/db"), None);
    }

    #[test]
    fn short_secrets_are_refused_and_never_printed() {
        assert!(JwtSecret::new(b"short".to_vec()).is_err());
        let s = JwtSecret::new(vec![b'k'; 32]).unwrap();
        assert!(!format!("{s:?}").contains("kkkk"));
    }
}
