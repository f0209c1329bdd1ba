//! A local HTTP server that plays fal's `GET /v1/models/usage` and
//! `GET /v1/models/billing-events` with the documented shapes
//! (shared/fal-platform-api.md), one scenario per API key.

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

/// What billing-events answers for one key.
#[derive(Clone)]
pub enum Billing {
    /// The key's events (any schema generation), served in timestamp order,
    /// filtered by `[start, end)`, `page` per page; the first `limited`
    /// calls get 429 with `Retry-After: 1`.
    Events {
        events: Vec<Value>,
        page: usize,
        limited: u32,
    },
    /// Always this status with fal's error body.
    Status(u16),
}

pub struct StandIn {
    pub url: String,
    scenarios: Mutex<HashMap<String, Scenario>>,
    billing: Mutex<HashMap<String, Billing>>,
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
            billing: Mutex::new(HashMap::new()),
            recorded: Mutex::new(Recorded::default()),
            in_flight: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route("/v1/models/usage", get(usage))
            .route("/v1/models/billing-events", get(billing_events))
            .with_state(me.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        me
    }

    pub fn set_billing(&self, key: &str, b: Billing) {
        self.billing.lock().unwrap().insert(key.to_owned(), b);
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

/// The key of `Authorization: Key …`.
fn admin_key(headers: &HeaderMap) -> Option<String> {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Key "))
        .map(str::to_owned)
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
    let Some(key) = admin_key(&headers) else {
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

/// A billing event of the current schema; `nano` is the charge.
pub fn event(request_id: &str, endpoint: &str, at: &str, units: f64, nano: i64) -> Value {
    let total = nano as f64 / 1e9;
    json!({
        "request_id": request_id, "endpoint_id": endpoint, "timestamp": at,
        "output_units": units, "unit_price": total / units.max(1e-9), "percent_discount": null,
        "cost_subtotal": total, "cost_discount": 0.0, "cost_total": total,
        "cost_estimate_nano_usd": nano,
    })
}

/// A billing event of the oldest documented schema: no subtotal,
/// discount or total; the charge only in nano-USD.
pub fn old_event(request_id: &str, endpoint: &str, at: &str, units: f64, nano: i64) -> Value {
    json!({
        "request_id": request_id, "endpoint_id": endpoint, "timestamp": at,
        "output_units": units, "unit_price": nano as f64 / 1e9 / units.max(1e-9),
        "percent_discount": null, "cost_estimate_nano_usd": nano,
    })
}

/// A billing event of the later generation (`quantity`, `unit`, `tags`),
/// its charge in `cost_total` only.
pub fn later_event(request_id: &str, endpoint: &str, at: &str, quantity: f64, usd: f64) -> Value {
    json!({
        "request_id": request_id, "endpoint_id": endpoint, "timestamp": at,
        "quantity": quantity, "unit": "images", "unit_price": usd / quantity.max(1e-9),
        "percent_discount": null, "cost_subtotal": usd, "cost_discount": 0.0, "cost_total": usd,
        "tags": { "job": request_id },
    })
}

fn instant(v: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(v)
        .ok()
        .map(|t| t.to_utc())
        .or_else(|| {
            chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d")
                .ok()
                .map(|d| d.and_hms_opt(0, 0, 0).unwrap().and_utc())
        })
}

async fn billing_events(
    State(s): State<Arc<StandIn>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let q = q.unwrap_or_default();
    let Some(key) = admin_key(&headers) else {
        return fal_error(401, "authorization_error", "Authentication required");
    };
    let Some(scenario) = s.billing.lock().unwrap().get(&key).cloned() else {
        return fal_error(401, "authorization_error", "Authentication required");
    };
    let n = {
        let mut r = s.recorded.lock().unwrap();
        r.queries.entry(key.clone()).or_default().push(q.clone());
        let c = r.calls.entry(key.clone()).or_default();
        *c += 1;
        *c
    };
    let (events, page_size, limited) = match scenario {
        Billing::Status(403) => return fal_error(403, "authorization_error", "Access denied"),
        Billing::Status(code) => {
            return fal_error(code, "server_error", "An unexpected error occurred")
        }
        Billing::Events {
            events,
            page,
            limited,
        } => (events, page, limited),
    };
    if n <= limited {
        let mut r = fal_error(429, "rate_limited", "Rate limit exceeded");
        r.headers_mut().insert("retry-after", "1".parse().unwrap());
        return r;
    }
    let params = url_pairs(&q);
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let now = chrono::Utc::now();
    let end = match param("end") {
        None => now,
        Some(v) => match instant(&v) {
            Some(t) => t,
            None => return fal_error(400, "validation_error", "Invalid request parameters"),
        },
    };
    let start = match param("start") {
        None => end - chrono::Duration::days(1),
        Some(v) => match instant(&v) {
            Some(t) => t,
            None => return fal_error(400, "validation_error", "Invalid request parameters"),
        },
    };
    if end - start > chrono::Duration::days(90) || start > end {
        return fal_error(
            400,
            "validation_error",
            "Date range is capped at 90 days per request",
        );
    }
    let limit = param("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(page_size)
        .min(page_size)
        .max(1);
    let offset = param("cursor")
        .and_then(|c| base64::engine::general_purpose::STANDARD.decode(c).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(0);
    let mut inside: Vec<Value> = events
        .into_iter()
        .filter(|e| {
            instant(e["timestamp"].as_str().unwrap_or("")).is_some_and(|t| t >= start && t < end)
        })
        .collect();
    inside.sort_by_key(|e| instant(e["timestamp"].as_str().unwrap_or("")));
    let page: Vec<Value> = inside.iter().skip(offset).take(limit).cloned().collect();
    let more = offset + page.len() < inside.len();
    let next = more.then(|| {
        base64::engine::general_purpose::STANDARD.encode((offset + page.len()).to_string())
    });
    axum::Json(json!({ "billing_events": page, "next_cursor": next, "has_more": more }))
        .into_response()
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
