//! Connections that never authenticate, or never speak, from one address:
//! they cost bounded places and descriptors, and everyone else still gets
//! in. Clients bind distinct loopback addresses (127.0.0.2, .3, …) so one
//! machine plays an attacker and its victims.

use std::time::{Duration, Instant};

use points_gateway::auth::Role;
use tokio::io::AsyncReadExt;

use crate::helpers::{spawn_with, Engine};
use crate::process::{token, Gateway};
use crate::ws_client::{tcp_from, Got, WsClient, BALANCE_CHANGED};

fn open_fds(gw: &Gateway) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", gw.child.id()))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// One client keeps `WS_MAX_CONNECTIONS + 50` sockets open without
/// `connection_init`, reopening each as it is refused or closed; a partner
/// from another address still gets every one of its 20 sockets, and the
/// gateway's descriptors stay within the anonymous budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sockets_that_never_authenticate_cannot_keep_a_partner_out() {
    let cap = 100;
    let (gw, _dir) = Gateway::on_sqlite(&[
        ("WS_MAX_CONNECTIONS", "100"),
        ("WS_ANONYMOUS_PER_ADDRESS", "32"),
        ("WS_ANONYMOUS_MAX", "64"),
        ("WS_INIT_TIMEOUT_MS", "1000"),
        ("MAX_CONNECTIONS_PER_ADDRESS", "64"),
    ])
    .await;
    let before = open_fds(&gw);
    let url = gw.url.clone();
    let stop = tokio_util::sync::CancellationToken::new();
    let mut attackers = tokio::task::JoinSet::new();
    for _ in 0..cap + 50 {
        let (url, stop) = (url.clone(), stop.clone());
        attackers.spawn(async move {
            while !stop.is_cancelled() {
                match WsClient::connect_from(&url, "127.0.0.2").await {
                    // Hold it, silent, until the server closes it.
                    Ok(mut c) => {
                        tokio::select! {
                            _ = c.recv_within(Duration::from_secs(30)) => {}
                            _ = stop.cancelled() => {}
                        }
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let partner = token(Role::Partner);
    let mut accepted = Vec::new();
    let mut refused = 0;
    for _ in 0..20 {
        match WsClient::connect_from(&url, "127.0.0.3").await {
            Ok(mut c) => match c.init(&partner).await {
                Got::Msg(m) if m["type"] == "connection_ack" => accepted.push(c),
                _ => refused += 1,
            },
            Err(_) => refused += 1,
        }
    }
    let during = open_fds(&gw);
    let anonymous = gw
        .metric("gateway_websocket_unauthenticated")
        .await
        .unwrap_or(f64::NAN);
    stop.cancel();
    while attackers.join_next().await.is_some() {}
    assert_eq!(
        (accepted.len(), refused),
        (20, 0),
        "the partner's sockets during the attack"
    );
    // The attacker's sockets: at most its anonymous WebSocket places (32
    // per address) and its address's HTTP connections (64, where refused
    // upgrades wait for their answer), beside the partner's 20.
    assert!(
        during <= before + 32 + 64 + 20 + 8,
        "descriptors {before} -> {during} during the attack"
    );
    assert!(
        (1.0..=32.0).contains(&anonymous),
        "unauthenticated sockets during the attack: {anonymous}"
    );
}

/// One address opens far more idle TCP connections than the cap; another
/// address's requests are all answered at once, and the silent sockets
/// are closed by the first-byte timeout, well before the header timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_connections_from_one_address_cannot_fill_the_connection_cap() {
    let (gw, _dir) = Gateway::on_sqlite(&[
        ("MAX_CONNECTIONS", "64"),
        ("MAX_CONNECTIONS_PER_ADDRESS", "16"),
        ("HTTP_HEADER_TIMEOUT_MS", "10000"),
        ("HTTP_FIRST_BYTE_TIMEOUT_MS", "1000"),
        ("RATE_LIMIT_ANONYMOUS", "0"),
    ])
    .await;
    let mut idle = Vec::new();
    for _ in 0..100 {
        if let Ok(s) = tcp_from(&gw.url, "127.0.0.2").await {
            idle.push(s);
        }
    }
    let client = reqwest::Client::builder()
        .local_address(Some("127.0.0.3".parse().unwrap()))
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    for i in 0..20 {
        let started = Instant::now();
        let r = client
            .get(format!("{}/healthz", gw.url))
            .send()
            .await
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(r.status(), 200);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "request {i} waited {:?} behind idle connections",
            started.elapsed()
        );
    }
    // Every silent socket is closed within the first-byte timeout (with
    // slack), not held for the 10 s header timeout.
    let started = Instant::now();
    for mut s in idle {
        let mut buf = [0u8; 16];
        let closed = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
        assert!(
            matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
            "a silent socket stayed open"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// One partner subject across several sockets holds at most
/// `SUBSCRIPTIONS_PER_SUBJECT` subscriptions; the rest are refused with
/// `LIMIT_EXCEEDED`, and every accepted one still receives the change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subject_holds_a_bounded_number_of_subscriptions_across_its_sockets() {
    let app = spawn_with(Engine::Sqlite, |s| s.subscriptions_per_subject = 30).await;
    let u = app.create_user("watched").await;
    let partner = app
        .keys
        .mint(Role::Partner, None, chrono::Duration::hours(1))
        .unwrap();
    let mut sockets = vec![
        WsClient::ready(&app, &partner).await,
        WsClient::ready(&app, &partner).await,
    ];
    for (n, ws) in sockets.iter_mut().enumerate() {
        for i in 0..20 {
            ws.subscribe(&format!("s{n}-{i}"), BALANCE_CHANGED, serde_json::json!({}))
                .await;
        }
    }
    let mut refused = 0;
    for ws in &mut sockets {
        while let Some(Got::Msg(m)) = ws.recv_within(Duration::from_millis(500)).await {
            if m["type"] == "error" {
                assert_eq!(
                    m["payload"][0]["extensions"]["code"], "LIMIT_EXCEEDED",
                    "{m}"
                );
                refused += 1;
            }
        }
    }
    assert_eq!(refused, 10, "40 asked, 30 allowed");
    app.wait_subscriptions(30).await;
    app.recharge(u, 50, "o1", None).await;
    let mut delivered = 0;
    for ws in &mut sockets {
        while let Some(Got::Msg(m)) = ws.recv_within(Duration::from_secs(2)).await {
            if m["type"] == "next" {
                assert_eq!(m["payload"]["data"]["balanceChanged"]["balance"], 50, "{m}");
                delivered += 1;
            }
        }
    }
    assert_eq!(delivered, 30);
}

/// The `exp` claim of a token, in seconds.
fn exp_of(token: &str) -> i64 {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    serde_json::from_slice::<serde_json::Value>(&bytes).expect("claims")["exp"]
        .as_i64()
        .expect("exp")
}

/// A socket's token expiry fires at `exp` to the millisecond, not up to a
/// second late (the deadline was counted from whole seconds of now), and a
/// socket whose client stopped reading does not outlive its token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_closes_when_its_token_expires_even_if_its_client_stopped_reading() {
    let app = spawn_with(Engine::Sqlite, |_| {}).await;
    let u = app.create_user("busy").await;
    app.recharge(u, 1_000_000, "o", None).await;
    // Initialise 0.6 s into a second: the old deadline fired 0.6 s late.
    let wait_ms = (1_600 - chrono::Utc::now().timestamp_subsec_millis() as i64) % 1_000;
    tokio::time::sleep(Duration::from_millis(wait_ms as u64)).await;
    let partner = app
        .keys
        .mint(Role::Partner, None, chrono::Duration::seconds(2))
        .unwrap();
    let exp_ms = exp_of(&partner) * 1_000;
    let mut ws = WsClient::ready(&app, &partner).await;
    let (code, _) = ws.closed().await;
    let late = chrono::Utc::now().timestamp_millis() - exp_ms;
    assert_eq!(code, 4403);
    assert!((-50..300).contains(&late), "closed {late} ms after exp");

    // A client that stops reading while events pour in.
    let partner = app
        .keys
        .mint(Role::Partner, None, chrono::Duration::seconds(3))
        .unwrap();
    let exp_ms = exp_of(&partner) * 1_000;
    let mut stuck = WsClient::connect_small_buffer(&app).await;
    assert!(matches!(stuck.init(&partner).await, Got::Msg(m) if m["type"] == "connection_ack"));
    stuck
        .subscribe("all", BALANCE_CHANGED, serde_json::json!({}))
        .await;
    app.wait_subscriptions(1).await;
    let writer = {
        let (url, service) = (app.url.clone(), app.service.clone());
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut i = 0;
            while chrono::Utc::now().timestamp_millis() < exp_ms + 1_000 {
                let q = format!("mutation {{ consume(input: {{userId: {u}, amount: 1, sourceType: SCRIPT, sourceId: \"w{i}\", note: \"{}\"}}) {{ id }} }}", "n".repeat(200));
                let _ = client
                    .post(format!("{url}/graphql"))
                    .bearer_auth(&service)
                    .json(&serde_json::json!({ "query": q }))
                    .send()
                    .await;
                i += 1;
            }
        })
    };
    writer.await.unwrap();
    let mut open = f64::MAX;
    for _ in 0..20 {
        open = app
            .metric("gateway_websocket_connections", &[])
            .await
            .unwrap_or(f64::MAX);
        if open == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(open, 0.0, "the unread socket outlived its token");
    drop(stuck);
}
