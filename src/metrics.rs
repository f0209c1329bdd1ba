//! Prometheus metrics at `/metrics`, through the `prometheus` crate (its
//! text encoder, histograms and escaping, and its collector of the
//! `process_*` metrics Prometheus users expect, read from `/proc`).
//!
//! Labels come from a closed set (codes, types, statuses) except the
//! operation name, which clients choose: only names of up to 64 word
//! characters are kept, and at most 200 of them; others count as `other`.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

const BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const MAX_OPERATION_NAMES: usize = 200;

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    ledger: IntCounterVec,
    fal: IntCounterVec,
    websocket_connections: IntGauge,
    websocket_unauthenticated: IntGauge,
    subscriptions: IntGauge,
    db_pool: IntGaugeVec,
    sql_statements: IntCounter,
    reads: IntCounterVec,
    replica_lag: GaugeVec,
    billing: IntCounterVec,
    operation_names: Mutex<HashSet<String>>,
}

/// Gauges read at scrape time.
pub struct Gauges {
    pub websocket_connections: usize,
    /// Of those, the ones that have not authenticated yet.
    pub websocket_unauthenticated: usize,
    pub subscriptions: usize,
    pub db_pool_size: u32,
    pub db_pool_idle: usize,
    pub sql_statements: u64,
    /// Each read replica's name and lag in seconds (`None`: not answering).
    pub replica_lags: Vec<(String, Option<f64>)>,
}

impl Metrics {
    /// The gateway's metrics; `engine` labels `gateway_build_info`.
    pub fn new(engine: &str) -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "gateway_requests_total",
                "GraphQL operations answered, by operation name and outcome.",
            ),
            &["operation", "outcome"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "gateway_request_duration_seconds",
                "GraphQL operation latency, by operation name.",
            )
            .buckets(BUCKETS.to_vec()),
            &["operation"],
        )?;
        let ledger = IntCounterVec::new(
            Opts::new(
                "gateway_ledger_operations_total",
                "Ledger operations, by type and outcome.",
            ),
            &["type", "outcome"],
        )?;
        let fal = IntCounterVec::new(
            Opts::new(
                "gateway_fal_calls_total",
                "Calls to fal's Platform API, by HTTP status or failure.",
            ),
            &["status"],
        )?;
        let websocket_connections = IntGauge::new(
            "gateway_websocket_connections",
            "Open WebSocket (subscription) connections.",
        )?;
        let websocket_unauthenticated = IntGauge::new(
            "gateway_websocket_unauthenticated",
            "Open WebSockets that have not authenticated yet (their own budget).",
        )?;
        let subscriptions = IntGauge::new(
            "gateway_subscriptions",
            "Open balanceChanged subscriptions.",
        )?;
        let db_pool = IntGaugeVec::new(
            Opts::new(
                "gateway_db_pool_connections",
                "Database pool connections, by state.",
            ),
            &["state"],
        )?;
        let sql_statements = IntCounter::new(
            "gateway_sql_statements_total",
            "SQL statements run for requests (the timers' own are not counted).",
        )?;
        let reads = IntCounterVec::new(
            Opts::new(
                "gateway_reads_total",
                "Read-side queries (usage pages, statements, fal tasks, cost reports, user searches), by where they ran: replica or primary.",
            ),
            &["target"],
        )?;
        let replica_lag = GaugeVec::new(
            Opts::new(
                "gateway_replica_lag_seconds",
                "Replay lag of each read replica as last measured; -1 when it does not answer.",
            ),
            &["replica"],
        )?;
        let billing = IntCounterVec::new(
            Opts::new(
                "gateway_fal_billing_total",
                "fal billing reconciliation: pages and events pulled, lines written, runs by outcome.",
            ),
            &["what"],
        )?;
        let build_info = IntGaugeVec::new(
            Opts::new(
                "gateway_build_info",
                "The running gateway: version and database engine (always 1).",
            ),
            &["version", "engine"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), engine])
            .set(1);
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(ledger.clone()))?;
        registry.register(Box::new(fal.clone()))?;
        registry.register(Box::new(websocket_connections.clone()))?;
        registry.register(Box::new(websocket_unauthenticated.clone()))?;
        registry.register(Box::new(subscriptions.clone()))?;
        registry.register(Box::new(db_pool.clone()))?;
        registry.register(Box::new(sql_statements.clone()))?;
        registry.register(Box::new(reads.clone()))?;
        registry.register(Box::new(replica_lag.clone()))?;
        registry.register(Box::new(billing.clone()))?;
        registry.register(Box::new(build_info))?;
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Metrics {
            registry,
            requests,
            latency,
            ledger,
            fal,
            websocket_connections,
            websocket_unauthenticated,
            subscriptions,
            db_pool,
            sql_statements,
            reads,
            replica_lag,
            billing,
            operation_names: Mutex::default(),
        })
    }

    /// The label for a client-chosen operation name (bounded, see above).
    /// Callers without a valid token never take one of the slots: their
    /// operations all count as `unauthenticated`, so anyone on the network
    /// cannot fill the slots and hide the services' names under `other`.
    fn operation_label(&self, operation: Option<&str>, authenticated: bool) -> String {
        if !authenticated {
            return "unauthenticated".to_owned();
        }
        let Some(n) = operation else {
            return "anonymous".to_owned();
        };
        if n.len() > 64 || !n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return "other".to_owned();
        }
        // A panic while holding this lock leaves a complete set behind.
        let mut names = self
            .operation_names
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if names.contains(n) || names.len() < MAX_OPERATION_NAMES {
            names.insert(n.to_owned());
            n.to_owned()
        } else {
            "other".to_owned()
        }
    }

    /// One GraphQL operation answered: its name, outcome (`ok` or the first
    /// error's code) and latency.
    pub fn request(
        &self,
        operation: Option<&str>,
        authenticated: bool,
        outcome: &str,
        latency: Duration,
    ) {
        let name = self.operation_label(operation, authenticated);
        self.requests.with_label_values(&[&name, outcome]).inc();
        self.latency
            .with_label_values(&[&name])
            .observe(latency.as_secs_f64());
    }

    /// One ledger operation: `consume` / `refund` / `recharge` / `expire`,
    /// or of holds: `hold` / `capture` / `release` / `hold_expire`; outcome
    /// `applied`, `replayed` or an error code (both fixed sets).
    pub fn ledger(&self, kind: &str, outcome: &str) {
        self.ledger.with_label_values(&[kind, outcome]).inc();
    }

    /// One call to fal: the HTTP status, or `timeout` / `transport` / `malformed`.
    /// One read-side query, run on a replica or the primary.
    pub fn read(&self, on_replica: bool) {
        let target = if on_replica { "replica" } else { "primary" };
        self.reads.with_label_values(&[target]).inc();
    }

    pub fn fal_call(&self, status: &str) {
        self.fal.with_label_values(&[status]).inc();
    }

    /// Progress of the billing reconciliation: `what` is `pages`,
    /// `events`, `lines`, or `runs_done` / `runs_failed`.
    pub fn billing(&self, what: &'static str, n: u64) {
        self.billing.with_label_values(&[what]).inc_by(n);
    }

    /// The exposition text, with the gauges as of now.
    pub fn render(&self, g: &Gauges) -> String {
        let as_i64 = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
        self.websocket_connections
            .set(as_i64(g.websocket_connections));
        self.websocket_unauthenticated
            .set(as_i64(g.websocket_unauthenticated));
        self.subscriptions.set(as_i64(g.subscriptions));
        let in_use = (g.db_pool_size as usize).saturating_sub(g.db_pool_idle);
        self.db_pool
            .with_label_values(&["in_use"])
            .set(as_i64(in_use));
        self.db_pool
            .with_label_values(&["idle"])
            .set(as_i64(g.db_pool_idle));
        for (name, lag) in &g.replica_lags {
            self.replica_lag
                .with_label_values(&[name.as_str()])
                .set(lag.unwrap_or(-1.0));
        }
        // The store counts statements itself; the counter follows it.
        let seen = self.sql_statements.get();
        self.sql_statements
            .inc_by(g.sql_statements.saturating_sub(seen));
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gauges() -> Gauges {
        Gauges {
            websocket_connections: 0,
            websocket_unauthenticated: 0,
            subscriptions: 0,
            db_pool_size: 4,
            db_pool_idle: 3,
            sql_statements: 9,
            replica_lags: vec![("db2:5432/points".into(), Some(0.25))],
        }
    }

    #[test]
    fn operation_names_are_bounded_and_sanitised() {
        let m = Metrics::new("sqlite").expect("metrics");
        m.request(Some("UsageDetail"), true, "ok", Duration::from_millis(3));
        m.request(Some("bad name\"}"), true, "ok", Duration::from_millis(3));
        m.request(None, true, "INVALID_INPUT", Duration::from_millis(3));
        let text = m.render(&gauges());
        assert!(text.contains("gateway_requests_total{operation=\"UsageDetail\",outcome=\"ok\"} 1"));
        assert!(text.contains("gateway_requests_total{operation=\"other\",outcome=\"ok\"} 1"));
        assert!(text.contains(
            "gateway_requests_total{operation=\"anonymous\",outcome=\"INVALID_INPUT\"} 1"
        ));
        assert!(text.contains(
            "gateway_request_duration_seconds_bucket{operation=\"UsageDetail\",le=\"0.005\"} 1"
        ));
        assert!(text.contains("gateway_db_pool_connections{state=\"in_use\"} 1"));
        assert!(text.contains("gateway_sql_statements_total 9"));
        // Unauthenticated callers take no slot, whatever names they send.
        let m2 = Metrics::new("sqlite").expect("metrics");
        for i in 0..300 {
            m2.request(
                Some(&format!("Anon{i}")),
                false,
                "UNAUTHENTICATED",
                Duration::from_millis(1),
            );
        }
        m2.request(Some("Consume"), true, "ok", Duration::from_millis(1));
        let text2 = m2.render(&gauges());
        assert!(text2.contains("gateway_requests_total{operation=\"Consume\",outcome=\"ok\"} 1"));
        assert!(text2.contains(
            "gateway_requests_total{operation=\"unauthenticated\",outcome=\"UNAUTHENTICATED\"} 300"
        ));
        for i in 0..300 {
            m.request(
                Some(&format!("Op{i}")),
                true,
                "ok",
                Duration::from_millis(1),
            );
        }
        let text = m.render(&gauges());
        assert!(text.matches("gateway_requests_total{").count() <= MAX_OPERATION_NAMES + 3);
        // The statement counter follows the store's count, never twice.
        assert!(text.contains("gateway_sql_statements_total 9"));
    }

    #[test]
    fn process_and_build_metrics_are_exposed() {
        let m = Metrics::new("postgres").expect("metrics");
        let text = m.render(&gauges());
        assert!(text.contains("gateway_build_info{engine=\"postgres\",version=\""));
        assert!(text.contains("process_resident_memory_bytes"));
        assert!(text.contains("process_cpu_seconds_total"));
        assert!(text.contains("process_open_fds"));
    }
}
