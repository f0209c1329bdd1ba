//! A bounded load loop: `concurrency` workers share `total` requests;
//! latencies are collected and summarised. Stops by itself.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, serde::Serialize)]
pub struct Stats {
    pub scenario: String,
    pub concurrency: usize,
    pub requests: usize,
    pub errors: usize,
    pub throughput_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub peak_rss_mib: Option<f64>,
    /// CPU time of the gateway process per request, ms.
    pub gateway_cpu_ms: Option<f64>,
    /// CPU time of the local PostgreSQL (all its processes) per request, ms.
    pub db_cpu_ms: Option<f64>,
}

/// What one bounded run saw; [`summarize`] pools several.
pub struct Measured {
    latencies: Vec<Duration>,
    errors: usize,
    elapsed: Duration,
    /// CPU used meanwhile by the gateway and by the database, when known.
    pub gateway_cpu: Option<Duration>,
    pub db_cpu: Option<Duration>,
}

impl Measured {
    /// A run measured elsewhere (pgbench).
    pub fn from_parts(latencies: Vec<Duration>, errors: usize, elapsed: Duration) -> Measured {
        Measured {
            latencies,
            errors,
            elapsed,
            gateway_cpu: None,
            db_cpu: None,
        }
    }

    pub fn throughput(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }
}

/// `total` requests from `concurrency` workers.
pub async fn measure<F, Fut>(concurrency: usize, total: usize, op: F) -> Measured
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (op, next) = (op.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return (lat, errors);
                }
                let t = Instant::now();
                if !op(i).await {
                    errors += 1;
                }
                lat.push(t.elapsed());
            }
        }));
    }
    let mut latencies: Vec<Duration> = Vec::with_capacity(total);
    let mut errors = 0;
    for w in workers {
        if let Ok((l, e)) = w.await {
            latencies.extend(l);
            errors += e;
        }
    }
    Measured {
        latencies,
        errors,
        elapsed: started.elapsed(),
        gateway_cpu: None,
        db_cpu: None,
    }
}

/// One row from one or more runs: requests over time spent, percentiles
/// over every latency.
pub fn summarize(scenario: &str, concurrency: usize, runs: &[Measured]) -> Stats {
    let mut all: Vec<Duration> = runs
        .iter()
        .flat_map(|m| m.latencies.iter().copied())
        .collect();
    let errors = runs.iter().map(|m| m.errors).sum();
    let elapsed: Duration = runs.iter().map(|m| m.elapsed).sum();
    all.sort();
    let pct = |p: f64| {
        if all.is_empty() {
            0.0
        } else {
            all[((all.len() as f64 * p).ceil() as usize).clamp(1, all.len()) - 1].as_secs_f64()
                * 1e3
        }
    };
    let per_request = |f: fn(&Measured) -> Option<Duration>| {
        let total: Option<Duration> = runs.iter().map(f).sum();
        total.map(|t| t.as_secs_f64() * 1e3 / all.len().max(1) as f64)
    };
    Stats {
        gateway_cpu_ms: per_request(|m| m.gateway_cpu),
        db_cpu_ms: per_request(|m| m.db_cpu),
        scenario: scenario.to_owned(),
        concurrency,
        requests: all.len(),
        errors,
        throughput_per_s: all.len() as f64 / elapsed.as_secs_f64(),
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        peak_rss_mib: None,
    }
}

pub fn print_table(rows: &[Stats]) {
    println!(
        "{:<34} {:>5} {:>8} {:>6} {:>10} {:>9} {:>9} {:>9} {:>10} {:>10}",
        "scenario",
        "conc",
        "requests",
        "errors",
        "req/s",
        "p50 ms",
        "p99 ms",
        "RSS MiB",
        "gw CPU ms",
        "db CPU ms"
    );
    let ms = |v: Option<f64>| v.map(|m| format!("{m:.3}")).unwrap_or_else(|| "-".into());
    for s in rows {
        println!(
            "{:<34} {:>5} {:>8} {:>6} {:>10.1} {:>9.2} {:>9.2} {:>9} {:>10} {:>10}",
            s.scenario,
            s.concurrency,
            s.requests,
            s.errors,
            s.throughput_per_s,
            s.p50_ms,
            s.p99_ms,
            s.peak_rss_mib
                .map(|m| format!("{m:.1}"))
                .unwrap_or_else(|| "-".into()),
            ms(s.gateway_cpu_ms),
            ms(s.db_cpu_ms)
        );
    }
}
