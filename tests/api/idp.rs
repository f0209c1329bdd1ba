//! Tokens from an existing identity provider (`GATEWAY_JWKS_URL`): RS256
//! tokens signed with a key of its published set are accepted beside the
//! gateway's own; issuer, audience, expiry, lifetime and key are checked;
//! a key the provider adds is picked up when a token first names it, and
//! unknown key ids cannot make the gateway fetch more than every 2 s.

use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::process::Gateway;

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

struct Idp {
    url: String,
    set: Arc<Mutex<Value>>,
    fetches: Arc<AtomicUsize>,
}

async fn idp() -> Idp {
    let set = Arc::new(Mutex::new(
        serde_json::from_str::<Value>(&fixture("idp-test-jwks-a.json")).unwrap(),
    ));
    let fetches = Arc::new(AtomicUsize::new(0));
    let (s, f) = (set.clone(), fetches.clone());
    let app = Router::new().route(
        "/.well-known/jwks.json",
        get(move || {
            let (s, f) = (s.clone(), f.clone());
            async move {
                f.fetch_add(1, Ordering::SeqCst);
                axum::Json(s.lock().unwrap().clone())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://127.0.0.1:{}/.well-known/jwks.json",
        listener.local_addr().unwrap().port()
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Idp { url, set, fetches }
}

/// A token of the provider: `key` signs, `kid` names the key.
fn issued(key: &str, kid: &str, claims: Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    let pem = fixture(&format!("idp-test-key-{key}.pem"));
    encode(
        &header,
        &claims,
        &EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
    )
    .unwrap()
}

fn claims(adjust: impl FnOnce(&mut Value)) -> Value {
    let now = chrono::Utc::now().timestamp();
    let mut c = json!({
        "sub": "service:idp-runner", "role": "service",
        "iss": "https://idp.test", "aud": "points-gateway",
        "iat": now, "exp": now + 600,
    });
    adjust(&mut c);
    c
}

async fn status(url: &str, token: &str) -> u16 {
    reqwest::Client::new()
        .post(format!("{url}/graphql"))
        .bearer_auth(token)
        .json(&json!({ "query": "{ sourceTypes { name } }" }))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_providers_tokens_are_accepted_and_checked() {
    let idp = idp().await;
    let dir = tempfile::tempdir().unwrap();
    let url = crate::helpers::database_url(crate::helpers::Engine::Sqlite, &dir).await;
    let mut gw = Gateway::start(
        &url,
        &[
            ("GATEWAY_JWKS_URL", idp.url.as_str()),
            ("GATEWAY_JWT_ISSUER", "https://idp.test"),
            ("GATEWAY_JWT_AUDIENCE", "points-gateway"),
        ],
        Stdio::null(),
    );
    // The set is fetched at start; wait for it.
    let good = issued("a", "idp-a", claims(|_| {}));
    let started = Instant::now();
    while status(&gw.url, &good).await != 200 {
        assert!(started.elapsed() < Duration::from_secs(5), "never accepted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The gateway's own tokens still work beside the provider's.
    assert_eq!(
        status(
            &gw.url,
            &crate::process::token(points_gateway::auth::Role::Admin)
        )
        .await,
        200
    );
    let refused = [
        (
            "another audience",
            issued("a", "idp-a", claims(|c| c["aud"] = json!("someone-else"))),
        ),
        (
            "another issuer",
            issued(
                "a",
                "idp-a",
                claims(|c| c["iss"] = json!("https://evil.test")),
            ),
        ),
        (
            "expired",
            issued(
                "a",
                "idp-a",
                claims(|c| c["exp"] = json!(chrono::Utc::now().timestamp() - 5)),
            ),
        ),
        (
            "too long-lived",
            issued(
                "a",
                "idp-a",
                claims(|c| c["exp"] = json!(chrono::Utc::now().timestamp() + 3000 * 3600)),
            ),
        ),
        (
            "signed by another key",
            issued("b", "idp-a", claims(|_| {})),
        ),
        (
            "no role",
            issued(
                "a",
                "idp-a",
                claims(|c| {
                    c.as_object_mut().unwrap().remove("role");
                }),
            ),
        ),
    ];
    for (why, token) in &refused {
        assert_eq!(status(&gw.url, token).await, 401, "{why}");
    }
    // Algorithm confusion: HS256 keyed with the provider's public key.
    let public = fixture("idp-test-jwks-a.json");
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("idp-a".into());
    let confused = encode(
        &header,
        &claims(|_| {}),
        &EncodingKey::from_secret(public.as_bytes()),
    )
    .unwrap();
    assert_eq!(
        status(&gw.url, &confused).await,
        401,
        "HS256 with the public key"
    );

    // Unknown key ids do not turn requests into fetches.
    let before = idp.fetches.load(Ordering::SeqCst);
    let unknown = issued("a", "idp-zzz", claims(|_| {}));
    let flood_started = Instant::now();
    for _ in 0..40 {
        assert_eq!(status(&gw.url, &unknown).await, 401);
    }
    let allowed = 2 + flood_started.elapsed().as_secs() as usize / 2;
    let fetched = idp.fetches.load(Ordering::SeqCst) - before;
    assert!(fetched <= allowed, "{fetched} fetches for 40 unknown kids");

    // The provider rotates: key b appears; its tokens are accepted once a
    // token names it (within the 2 s between fetches).
    {
        let b: Value = serde_json::from_str(&fixture("idp-test-jwks-b.json")).unwrap();
        let mut set = idp.set.lock().unwrap();
        let keys = set["keys"].as_array_mut().unwrap();
        keys.push(b["keys"][0].clone());
    }
    let rotated = issued("b", "idp-b", claims(|_| {}));
    let started = Instant::now();
    while status(&gw.url, &rotated).await != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "key b never picked up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(status(&gw.url, &good).await, 200, "key a still accepted");
    gw.child.kill().ok();
    gw.child.wait().ok();
}
