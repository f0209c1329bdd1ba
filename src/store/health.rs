//! Whether the database answers, as this instance last saw it.
//!
//! When PostgreSQL stops, a request would otherwise wait out its whole
//! budget: the pool keeps retrying a refused connection until its acquire
//! timeout. A watch (`startup`) probes the database every half second on a
//! connection of its own, at most a second each; while the probe fails the
//! gate is down, and requests are answered `UNAVAILABLE` at once (and those
//! already waiting are cut off), so a client learns within about a second
//! that it should retry, with the same key. The first successful probe opens
//! the gate again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// How often the watch probes, and how long one probe may take.
pub const PROBE_EVERY: Duration = Duration::from_millis(500);
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct Health {
    down: AtomicBool,
    went_down: Notify,
}

impl Health {
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }

    /// Records a probe's outcome; `true` when the state changed.
    pub fn record(&self, answered: bool) -> bool {
        let was_down = self.down.swap(!answered, Ordering::AcqRel);
        if !answered && !was_down {
            self.went_down.notify_waiters();
        }
        was_down == answered
    }

    /// Resolves when the gate goes down (at once if it is down).
    pub async fn went_down(&self) {
        loop {
            let notified = self.went_down.notified();
            tokio::pin!(notified);
            // Registered before the check, so a change between the two is
            // not missed.
            notified.as_mut().enable();
            if self.is_down() {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_learn_of_an_outage_and_the_gate_reopens() {
        let h = std::sync::Arc::new(Health::default());
        assert!(!h.is_down());
        let waiter = {
            let h = h.clone();
            tokio::spawn(async move { h.went_down().await })
        };
        tokio::task::yield_now().await;
        assert!(h.record(false), "up to down is a change");
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("woken")
            .expect("joined");
        assert!(h.is_down());
        assert!(!h.record(false), "down stays down");
        // Already down: resolves at once.
        tokio::time::timeout(Duration::from_millis(50), h.went_down())
            .await
            .expect("at once");
        assert!(h.record(true));
        assert!(!h.is_down());
    }
}
