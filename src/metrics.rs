//! Prometheus metrics, rendered in the text exposition format at `/metrics`.
//!
//! Labels come from a closed set (codes, types, statuses) except the
//! operation name, which clients choose: only names of up to 64 word
//! characters are kept, and at most 200 of them; others count as `other`.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

const BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const MAX_OPERATION_NAMES: usize = 200;

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Default)]
struct Inner {
    requests: BTreeMap<(String, String), u64>,
    latency: BTreeMap<String, Histogram>,
    ledger: BTreeMap<(String, String), u64>,
    fal: BTreeMap<String, u64>,
    operation_names: HashSet<String>,
}

#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

/// Gauges read at scrape time.
pub struct Gauges {
    pub websocket_connections: usize,
    pub subscriptions: usize,
    pub db_pool_size: u32,
    pub db_pool_idle: usize,
    pub sql_statements: u64,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One GraphQL operation answered: its name, outcome (`ok` or the first
    /// error's code) and latency.
    pub fn request(&self, operation: Option<&str>, outcome: &str, latency: Duration) {
        let mut m = self.lock();
        let name = match operation {
            None => "anonymous".to_owned(),
            Some(n)
                if n.len() <= 64 && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
            {
                if m.operation_names.contains(n) || m.operation_names.len() < MAX_OPERATION_NAMES {
                    m.operation_names.insert(n.to_owned());
                    n.to_owned()
                } else {
                    "other".to_owned()
                }
            }
            Some(_) => "other".to_owned(),
        };
        *m.requests
            .entry((name.clone(), outcome.to_owned()))
            .or_default() += 1;
        let h = m.latency.entry(name).or_default();
        let secs = latency.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                h.counts[i] += 1;
            }
        }
        h.sum += secs;
        h.count += 1;
    }

    /// One ledger operation: `consume` / `refund` / `recharge` / `expire`,
    /// outcome `applied`, `replayed` or an error code.
    pub fn ledger(&self, kind: &str, outcome: &str) {
        *self
            .lock()
            .ledger
            .entry((kind.to_owned(), outcome.to_owned()))
            .or_default() += 1;
    }

    /// One call to fal: the HTTP status, or `timeout` / `transport` / `malformed`.
    pub fn fal_call(&self, status: &str) {
        *self.lock().fal.entry(status.to_owned()).or_default() += 1;
    }

    pub fn render(&self, g: &Gauges) -> String {
        let m = self.lock();
        let mut out = String::new();
        let _ = writeln!(out, "# HELP gateway_requests_total GraphQL operations answered, by operation name and outcome.");
        let _ = writeln!(out, "# TYPE gateway_requests_total counter");
        for ((op, outcome), n) in &m.requests {
            let _ = writeln!(
                out,
                "gateway_requests_total{{operation=\"{}\",outcome=\"{}\"}} {n}",
                escape(op),
                escape(outcome)
            );
        }
        let _ = writeln!(
            out,
            "# HELP gateway_request_duration_seconds GraphQL operation latency, by operation name."
        );
        let _ = writeln!(out, "# TYPE gateway_request_duration_seconds histogram");
        for (op, h) in &m.latency {
            let op = escape(op);
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "gateway_request_duration_seconds_bucket{{operation=\"{op}\",le=\"{b}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                out,
                "gateway_request_duration_seconds_bucket{{operation=\"{op}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "gateway_request_duration_seconds_sum{{operation=\"{op}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "gateway_request_duration_seconds_count{{operation=\"{op}\"}} {}",
                h.count
            );
        }
        let _ = writeln!(
            out,
            "# HELP gateway_ledger_operations_total Ledger operations, by type and outcome."
        );
        let _ = writeln!(out, "# TYPE gateway_ledger_operations_total counter");
        for ((kind, outcome), n) in &m.ledger {
            let _ = writeln!(
                out,
                "gateway_ledger_operations_total{{type=\"{kind}\",outcome=\"{outcome}\"}} {n}"
            );
        }
        let _ = writeln!(out, "# HELP gateway_fal_calls_total Calls to fal's Platform API, by HTTP status or failure.");
        let _ = writeln!(out, "# TYPE gateway_fal_calls_total counter");
        for (status, n) in &m.fal {
            let _ = writeln!(out, "gateway_fal_calls_total{{status=\"{status}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP gateway_websocket_connections Open WebSocket (subscription) connections."
        );
        let _ = writeln!(out, "# TYPE gateway_websocket_connections gauge");
        let _ = writeln!(
            out,
            "gateway_websocket_connections {}",
            g.websocket_connections
        );
        let _ = writeln!(
            out,
            "# HELP gateway_subscriptions Open balanceChanged subscriptions."
        );
        let _ = writeln!(out, "# TYPE gateway_subscriptions gauge");
        let _ = writeln!(out, "gateway_subscriptions {}", g.subscriptions);
        let _ = writeln!(
            out,
            "# HELP gateway_db_pool_connections Database pool connections, by state."
        );
        let _ = writeln!(out, "# TYPE gateway_db_pool_connections gauge");
        let in_use = (g.db_pool_size as usize).saturating_sub(g.db_pool_idle);
        let _ = writeln!(
            out,
            "gateway_db_pool_connections{{state=\"in_use\"}} {in_use}"
        );
        let _ = writeln!(
            out,
            "gateway_db_pool_connections{{state=\"idle\"}} {}",
            g.db_pool_idle
        );
        let _ = writeln!(
            out,
            "# HELP gateway_sql_statements_total SQL statements run."
        );
        let _ = writeln!(out, "# TYPE gateway_sql_statements_total counter");
        let _ = writeln!(out, "gateway_sql_statements_total {}", g.sql_statements);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_names_are_bounded_and_sanitised() {
        let m = Metrics::default();
        m.request(Some("UsageDetail"), "ok", Duration::from_millis(3));
        m.request(Some("bad name\"}"), "ok", Duration::from_millis(3));
        m.request(None, "INVALID_INPUT", Duration::from_millis(3));
        let text = m.render(&Gauges {
            websocket_connections: 0,
            subscriptions: 0,
            db_pool_size: 4,
            db_pool_idle: 3,
            sql_statements: 9,
        });
        assert!(text.contains("gateway_requests_total{operation=\"UsageDetail\",outcome=\"ok\"} 1"));
        assert!(text.contains("gateway_requests_total{operation=\"other\",outcome=\"ok\"} 1"));
        assert!(text.contains(
            "gateway_requests_total{operation=\"anonymous\",outcome=\"INVALID_INPUT\"} 1"
        ));
        assert!(text.contains(
            "gateway_request_duration_seconds_bucket{operation=\"UsageDetail\",le=\"0.005\"} 1"
        ));
        assert!(text.contains("gateway_db_pool_connections{state=\"in_use\"} 1"));
        for i in 0..300 {
            m.request(Some(&format!("Op{i}")), "ok", Duration::from_millis(1));
        }
        let text = m.render(&Gauges {
            websocket_connections: 0,
            subscriptions: 0,
            db_pool_size: 0,
            db_pool_idle: 0,
            sql_statements: 0,
        });
        assert!(text.matches("gateway_requests_total{").count() <= MAX_OPERATION_NAMES + 3);
    }
}
