//! A local HTTP server that plays fal's `GET /v1/models/usage` with the
//! documented shapes (shared/fal-platform-api.md), one scenario per API key.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine;
use serde_json::{json, Value};

#[derive(Clone)]
pub enum Scenario {
    /// Summary lines per page; a cursor links the pages.
    Pages(Vec<Vec<Value>>),
    /// One page after a delay.
    Slow(Duration, Vec<Value>),
    /// An HTTP error with fal's error body; optional `Retry-After` seconds.
    Status(u16, Option<u64>),
    /// `times` answers of 429, then the page.
    RateLimitedThen(u32, Vec<Value>),
    /// 200 with a body that is not JSON.
    BadJson,
}

#[derive(Default)]
pub struct Recorded {
    pub calls: HashMap<String, u32>,
    pub queries: HashMap<String, Vec<String>>,
    /// The `traceparent` header of each call that carried one.
    pub traceparents: Vec<String>,
}

pub struct StandIn {
    pub url: String,
    scenarios: Mutex<HashMap<String, Scenario>>,
    pub recorded: Mutex<Recorded>,
    in_flight: AtomicUsize,
    pub peak: AtomicUsize,
}

impl StandIn {
    pub async fn start() -> Arc<StandIn> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let me = Arc::new(StandIn {
            url: format!("http://127.0.0.1:{port}"),
            scenarios: Mutex::new(HashMap::new()),
            recorded: Mutex::new(Recorded::default()),
            in_flight: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route("/v1/models/usage", get(usage))
            .with_state(me.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        me
    }

    pub fn set(&self, key: &str, s: Scenario) {
        self.scenarios.lock().unwrap().insert(key.to_owned(), s);
    }

    pub fn calls(&self, key: &str) -> u32 {
        self.recorded
            .lock()
            .unwrap()
            .calls
            .get(key)
            .copied()
            .unwrap_or(0)
    }
}

/// A usage line in the current schema (cost_total, deprecated cost, …).
pub fn line(endpoint: &str, unit: &str, quantity: f64, unit_price: f64) -> Value {
    let total = quantity * unit_price;
    json!({
        "endpoint_id": endpoint, "unit": unit, "quantity": quantity, "unit_price": unit_price,
        "percent_discount": null, "cost_subtotal": total, "cost_discount": 0.0,
        "cost_total": total, "cost": total, "currency": "USD",
    })
}

/// A usage line of the oldest documented schema: no cost fields at all.
pub fn old_line(endpoint: &str, unit: &str, quantity: f64, unit_price: f64) -> Value {
    json!({ "endpoint_id": endpoint, "unit": unit, "quantity": quantity, "unit_price": unit_price })
}

fn fal_error(status: u16, kind: &str, message: &str) -> Response {
    (
        StatusCode::from_u16(status).unwrap(),
        axum::Json(json!({ "error": { "type": kind, "message": message } })),
    )
        .into_response()
}

struct InFlight<'a>(&'a StandIn);
impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn usage(
    State(s): State<Arc<StandIn>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let now = s.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    s.peak.fetch_max(now, Ordering::SeqCst);
    let _guard = InFlight(&s);
    let q = q.unwrap_or_default();
    let Some(key) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Key "))
        .map(str::to_owned)
    else {
        return fal_error(401, "authorization_error", "Authentication required");
    };
    if let Some(tp) = headers.get("traceparent").and_then(|v| v.to_str().ok()) {
        s.recorded.lock().unwrap().traceparents.push(tp.to_owned());
    }
    let scenario = s.scenarios.lock().unwrap().get(&key).cloned();
    let Some(scenario) = scenario else {
        return fal_error(401, "authorization_error", "Authentication required");
    };
    let n = {
        let mut r = s.recorded.lock().unwrap();
        r.queries.entry(key.clone()).or_default().push(q.clone());
        let c = r.calls.entry(key.clone()).or_default();
        *c += 1;
        *c
    };
    let params: Vec<(String, String)> = url_pairs(&q);
    let expands: Vec<&str> = params
        .iter()
        .filter(|(k, _)| k == "expand")
        .flat_map(|(_, v)| v.split(','))
        .collect();
    if !expands.contains(&"summary") && !expands.contains(&"time_series") {
        return fal_error(
            400,
            "validation_error",
            "expand must include time_series or summary",
        );
    }
    let with_auth = expands.contains(&"auth_method");
    let page_of = |lines: &Vec<Value>, page: usize, pages: usize| {
        let lines: Vec<Value> = lines
            .iter()
            .map(|l| {
                let mut l = l.clone();
                if with_auth {
                    l["auth_method"] = json!("Production Key");
                }
                l
            })
            .collect();
        let more = page + 1 < pages;
        let next =
            more.then(|| base64::engine::general_purpose::STANDARD.encode((page + 2).to_string()));
        axum::Json(
            json!({ "time_series": [], "summary": lines, "next_cursor": next, "has_more": more }),
        )
        .into_response()
    };
    match scenario {
        Scenario::Pages(pages) => {
            let page = params
                .iter()
                .find(|(k, _)| k == "cursor")
                .and_then(|(_, c)| base64::engine::general_purpose::STANDARD.decode(c).ok())
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|s| s.parse::<usize>().ok())
                .map(|p| p - 1)
                .unwrap_or(0);
            let empty = Vec::new();
            page_of(pages.get(page).unwrap_or(&empty), page, pages.len())
        }
        Scenario::Slow(d, lines) => {
            tokio::time::sleep(d).await;
            page_of(&lines, 0, 1)
        }
        Scenario::Status(code, retry_after) => {
            let mut r = match code {
                403 => fal_error(403, "authorization_error", "Access denied"),
                429 => fal_error(429, "rate_limited", "Rate limit exceeded"),
                c => fal_error(c, "server_error", "Internal server error"),
            };
            if let Some(secs) = retry_after {
                r.headers_mut()
                    .insert("retry-after", secs.to_string().parse().unwrap());
            }
            r
        }
        Scenario::RateLimitedThen(times, lines) => {
            if n <= times {
                let mut r = fal_error(429, "rate_limited", "Rate limit exceeded");
                r.headers_mut().insert("retry-after", "0".parse().unwrap());
                r
            } else {
                page_of(&lines, 0, 1)
            }
        }
        Scenario::BadJson => (
            StatusCode::OK,
            [("content-type", "application/json")],
            "{\"summary\": [tru",
        )
            .into_response(),
    }
}

pub fn url_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap_or(b'?'));
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
