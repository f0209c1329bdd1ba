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
}

pub async fn run<F, Fut>(scenario: &str, concurrency: usize, total: usize, op: F) -> Stats
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
    let mut all: Vec<Duration> = Vec::with_capacity(total);
    let mut errors = 0;
    for w in workers {
        if let Ok((l, e)) = w.await {
            all.extend(l);
            errors += e;
        }
    }
    let elapsed = started.elapsed();
    all.sort();
    let pct = |p: f64| {
        if all.is_empty() {
            0.0
        } else {
            all[((all.len() as f64 * p).ceil() as usize).clamp(1, all.len()) - 1].as_secs_f64()
                * 1e3
        }
    };
    Stats {
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
        "{:<34} {:>5} {:>8} {:>6} {:>10} {:>9} {:>9} {:>9}",
        "scenario", "conc", "requests", "errors", "req/s", "p50 ms", "p99 ms", "RSS MiB"
    );
    for s in rows {
        println!(
            "{:<34} {:>5} {:>8} {:>6} {:>10.1} {:>9.2} {:>9.2} {:>9}",
            s.scenario,
            s.concurrency,
            s.requests,
            s.errors,
            s.throughput_per_s,
            s.p50_ms,
            s.p99_ms,
            s.peak_rss_mib
                .map(|m| format!("{m:.1}"))
                .unwrap_or_else(|| "-".into())
        );
    }
}
