//! Keys as an operator runs them: a secret rotates without logging anyone
//! out, a token revoked through one instance is refused by all of them
//! (and its open WebSocket closed), lifetimes have a ceiling, partners have
//! subjects of their own, `token` never signs with a secret no server uses,
//! and the tools that never touch a token run without a secret.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use points_gateway::auth::{Role, TokenKeys};
use points_gateway::config::JwtSecret;
use serde_json::{json, Value};

use crate::process::Gateway;
use crate::ws_client::{Got, WsClient, BALANCE_CHANGED};

const OLD: &str = "old-secret-0123456789abcdef0123456789";
const NEW: &str = "new-secret-0123456789abcdef0123456789";

fn binary(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_points-gateway"));
    cmd.args(args).env_remove("GATEWAY_JWT_SECRET");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `{ __typename }` with a token: the HTTP status and the error code.
async fn ask(url: &str, token: &str) -> (u16, Option<String>) {
    let r = reqwest::Client::new()
        .post(format!("{url}/graphql"))
        .bearer_auth(token)
        .json(&json!({ "query": "{ __typename }" }))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    (
        status,
        body["errors"][0]["extensions"]["code"]
            .as_str()
            .map(str::to_owned),
    )
}

fn keys(secret: &str) -> TokenKeys {
    TokenKeys::new(&JwtSecret::new(secret.as_bytes().to_vec()).unwrap())
}

fn serve(url: &str, env: &[(&str, &str)]) -> Gateway {
    Gateway::start(url, env, Stdio::null())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_rotates_without_logging_anyone_out() {
    let dir = tempfile::tempdir().unwrap();
    let url = crate::helpers::database_url(crate::helpers::Engine::Sqlite, &dir).await;
    let before = keys(OLD)
        .mint(Role::Service, None, chrono::Duration::hours(1))
        .unwrap();
    let mut gw = serve(&url, &[("GATEWAY_JWT_SECRET", OLD)]);
    assert_eq!(ask(&gw.url, &before).await, (200, None));
    gw.child.kill().ok();
    gw.child.wait().ok();

    // Step 1: the new secret signs, the old one is still accepted.
    let mut gw = serve(
        &url,
        &[
            ("GATEWAY_JWT_SECRET", NEW),
            ("GATEWAY_JWT_PREVIOUS_SECRETS", OLD),
        ],
    );
    assert_eq!(ask(&gw.url, &before).await, (200, None), "old token kept");
    let minted = binary(
        &["token", "--role", "service"],
        &[
            ("DATABASE_URL", &url),
            ("GATEWAY_JWT_SECRET", NEW),
            ("GATEWAY_JWT_PREVIOUS_SECRETS", OLD),
        ],
    );
    assert!(minted.status.success(), "{}", text(&minted));
    let after = String::from_utf8_lossy(&minted.stdout).trim().to_owned();
    assert_eq!(ask(&gw.url, &after).await, (200, None), "new token");
    gw.child.kill().ok();
    gw.child.wait().ok();

    // Step 2, once the old tokens have expired: the old secret goes.
    let mut gw = serve(&url, &[("GATEWAY_JWT_SECRET", NEW)]);
    assert_eq!(
        ask(&gw.url, &before).await,
        (401, Some("UNAUTHENTICATED".into()))
    );
    assert_eq!(ask(&gw.url, &after).await, (200, None));
    gw.child.kill().ok();
    gw.child.wait().ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_is_refused_by_every_instance_and_its_socket_closed() {
    let url = crate::helpers::fresh_postgres_url().await;
    let secret = crate::process::SECRET;
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("GATEWAY_JWT_SECRET", secret),
    ];
    let mut a = serve(&url, &[]);
    let mut b = serve(&url, &[]);
    let minted = binary(&["token", "--role", "partner", "--name", "acme"], &env);
    assert!(minted.status.success(), "{}", text(&minted));
    let token = String::from_utf8_lossy(&minted.stdout).trim().to_owned();
    let stderr = String::from_utf8_lossy(&minted.stderr).to_string();
    assert!(
        stderr.contains("signed with GATEWAY_JWT_SECRET"),
        "{stderr}"
    );
    assert!(
        !stderr.contains(secret),
        "the secret itself is never printed"
    );
    let id = stderr
        .split("token id ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no token id in {stderr:?}"))
        .to_owned();
    let other = binary(&["token", "--role", "partner", "--name", "acme"], &env);
    let other = String::from_utf8_lossy(&other.stdout).trim().to_owned();
    assert_eq!(ask(&a.url, &token).await, (200, None));
    assert_eq!(ask(&b.url, &token).await, (200, None));
    let mut ws = WsClient::connect_url(&b.url, "graphql-transport-ws").await;
    assert!(matches!(ws.init(&token).await, Got::Msg(m) if m["type"] == "connection_ack"));
    ws.subscribe("1", BALANCE_CHANGED, json!({})).await;

    let revoked = binary(&["revoke", &id], &[("DATABASE_URL", &url)]);
    assert!(revoked.status.success(), "{}", text(&revoked));
    let started = Instant::now();
    for gw in [&a, &b] {
        loop {
            if ask(&gw.url, &token).await == (401, Some("UNAUTHENTICATED".into())) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "still accepted {:?} after the revocation",
                started.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    eprintln!(
        "refused by both instances {:?} after `revoke`",
        started.elapsed()
    );
    let (code, reason) = ws.closed().await;
    assert_eq!((code, reason.as_str()), (4403, "Forbidden: token revoked"));
    // The same partner's other token, and everyone else's, still work.
    assert_eq!(ask(&a.url, &other).await, (200, None));
    let again = binary(&["revoke", &id], &[("DATABASE_URL", &url)]);
    assert!(text(&again).contains("already revoked"), "{}", text(&again));
    // An admin revokes through GraphQL: at once on that instance.
    let admin = crate::process::token(Role::Admin);
    let issued = keys(secret)
        .issue(Role::Service, None, None, chrono::Duration::hours(1))
        .unwrap();
    assert_eq!(ask(&a.url, &issued.token).await, (200, None));
    let r = crate::process::post(
        &reqwest::Client::new(),
        &a.url,
        &admin,
        "mutation($id: String!) { revokeToken(id: $id) }",
        json!({ "id": issued.id }),
    )
    .await
    .unwrap();
    assert_eq!(r["data"]["revokeToken"], true, "{r}");
    assert_eq!(
        ask(&a.url, &issued.token).await,
        (401, Some("UNAUTHENTICATED".into()))
    );
    for bad in ["", "a b", "x'; DROP TABLE gw_revoked_tokens; --"] {
        let r = crate::process::post(
            &reqwest::Client::new(),
            &a.url,
            &admin,
            "mutation($id: String!) { revokeToken(id: $id) }",
            json!({ "id": bad }),
        )
        .await
        .unwrap();
        assert_eq!(r["errors"][0]["extensions"]["code"], "INVALID_INPUT", "{r}");
    }
    let by_service = crate::process::post(
        &reqwest::Client::new(),
        &a.url,
        &crate::process::token(Role::Service),
        "mutation($id: String!) { revokeToken(id: $id) }",
        json!({ "id": "abc" }),
    )
    .await
    .unwrap();
    assert_eq!(by_service["errors"][0]["extensions"]["code"], "FORBIDDEN");
    for gw in [&mut a, &mut b] {
        gw.child.kill().ok();
        gw.child.wait().ok();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifetimes_past_the_maximum_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let url = crate::helpers::database_url(crate::helpers::Engine::Sqlite, &dir).await;
    let env = [("DATABASE_URL", url.as_str()), ("GATEWAY_JWT_SECRET", OLD)];
    let o = binary(&["token", "--role", "admin", "--hours", "876000"], &env);
    assert!(!o.status.success());
    assert!(text(&o).contains("TOKEN_MAX_HOURS"), "{}", text(&o));
    let mut gw = serve(
        &url,
        &[("GATEWAY_JWT_SECRET", OLD), ("TOKEN_MAX_HOURS", "24")],
    );
    let two_days = keys(OLD)
        .mint(Role::Admin, None, chrono::Duration::hours(48))
        .unwrap();
    assert_eq!(
        ask(&gw.url, &two_days).await,
        (401, Some("UNAUTHENTICATED".into()))
    );
    let a_day = keys(OLD)
        .mint(Role::Admin, None, chrono::Duration::hours(24))
        .unwrap();
    assert_eq!(ask(&gw.url, &a_day).await, (200, None));
    gw.child.kill().ok();
    gw.child.wait().ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partners_named_apart_have_their_own_sockets() {
    let dir = tempfile::tempdir().unwrap();
    let url = crate::helpers::database_url(crate::helpers::Engine::Sqlite, &dir).await;
    let mut gw = serve(&url, &[("WS_MAX_PER_SUBJECT", "1")]);
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("GATEWAY_JWT_SECRET", crate::process::SECRET),
    ];
    let mint = |name: &str| {
        let o = binary(&["token", "--role", "partner", "--name", name], &env);
        assert!(o.status.success(), "{}", text(&o));
        String::from_utf8_lossy(&o.stdout).trim().to_owned()
    };
    let (acme, globex) = (mint("acme"), mint("globex"));
    let mut first = WsClient::connect_url(&gw.url, "graphql-transport-ws").await;
    assert!(matches!(first.init(&acme).await, Got::Msg(m) if m["type"] == "connection_ack"));
    // Another partner is not counted against acme's seat.
    let mut other = WsClient::connect_url(&gw.url, "graphql-transport-ws").await;
    assert!(matches!(other.init(&globex).await, Got::Msg(m) if m["type"] == "connection_ack"));
    // acme's second socket is over its own limit.
    let mut second = WsClient::connect_url(&gw.url, "graphql-transport-ws").await;
    match second.init(&acme).await {
        Got::Closed(code, _) => assert_eq!(code, 1013),
        other => panic!("expected close 1013, got {other:?}"),
    }
    gw.child.kill().ok();
    gw.child.wait().ok();
}

#[test]
fn token_never_signs_with_a_secret_no_server_uses() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("gw.sqlite");
    let url = format!("sqlite://{}?mode=rwc", db.display());
    let o = binary(
        &["token", "--role", "admin"],
        &[("DATABASE_URL", url.as_str())],
    );
    assert!(!o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("no gateway has served") && t.contains("GATEWAY_JWT_SECRET"),
        "{t}"
    );
    assert!(o.stdout.is_empty(), "no token printed: {t}");
    let secret_file = dir.path().join("gw.sqlite.jwt-secret");
    assert!(!secret_file.exists(), "no secret invented");
    // The tools that never touch a token run without any secret, and
    // leave none behind.
    for args in [&["migrate"][..], &["verify"], &["source-types"]] {
        let o = binary(args, &[("DATABASE_URL", url.as_str())]);
        assert!(o.status.success(), "{args:?}: {}", text(&o));
    }
    assert!(!secret_file.exists(), "no secret written by the tools");
    // Once a server has run on the database, `token` uses its secret and
    // says which file that is.
    let mut gw = Gateway::start(&url, &[("GATEWAY_JWT_SECRET", "")], Stdio::null());
    assert!(secret_file.exists());
    let o = binary(
        &["token", "--role", "admin"],
        &[("DATABASE_URL", url.as_str())],
    );
    assert!(o.status.success(), "{}", text(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains(&secret_file.display().to_string()),
        "{stderr}"
    );
    let token = String::from_utf8_lossy(&o.stdout).trim().to_owned();
    let rt = tokio::runtime::Runtime::new().unwrap();
    assert_eq!(rt.block_on(ask(&gw.url, &token)), (200, None));
    gw.child.kill().ok();
    gw.child.wait().ok();
}
