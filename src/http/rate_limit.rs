//! Token buckets per caller: per token subject for authenticated callers
//! (rates by role), per client address for anonymous ones.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::auth::Role;
use crate::config::Rates;

/// Requests per second allowed to a caller of `role`.
fn per_second(rates: &Rates, role: Option<Role>) -> f64 {
    match role {
        Some(Role::User) => rates.user,
        Some(Role::Service) => rates.service,
        Some(Role::Admin) => rates.admin,
        Some(Role::Partner) => rates.partner,
        None => rates.anonymous,
    }
}

/// One token bucket: `rate` tokens per second, holding at most twice that.
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// A full bucket for `rate`.
    pub fn full(rate: f64, now: Instant) -> Bucket {
        Bucket {
            tokens: burst(rate),
            at: now,
        }
    }

    /// Takes `cost` tokens; `Err(wait)` until they would be there. A cost
    /// above the burst can never be paid: `Err` with the time a full
    /// bucket takes, so the caller sees a refusal, not a promise.
    pub fn take(&mut self, rate: f64, cost: f64, now: Instant) -> Result<(), Duration> {
        let burst = burst(rate);
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.at = now;
        if self.tokens >= cost {
            self.tokens -= cost;
            Ok(())
        } else {
            let missing = (cost.min(burst) - self.tokens).max(0.0);
            Err(Duration::from_secs_f64(missing / rate).max(Duration::from_millis(1)))
        }
    }
}

fn burst(rate: f64) -> f64 {
    (rate * 2.0).max(1.0)
}

/// Buckets idle this long are forgotten (they would be full again anyway).
const FORGET_AFTER: Duration = Duration::from_secs(120);

pub struct RateLimiter {
    rates: Rates,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    pub fn new(rates: Rates) -> RateLimiter {
        RateLimiter {
            rates,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `key`; `Err(wait)` when the caller must wait.
    /// A rate of 0 means unlimited for that role.
    pub fn check(&self, role: Option<Role>, key: &str, now: Instant) -> Result<(), Duration> {
        self.take(role, key, 1, now)
    }

    /// Takes `cost` tokens for `key` (an operation costs one, a mutation
    /// one per root field).
    pub fn take(
        &self,
        role: Option<Role>,
        key: &str,
        cost: usize,
        now: Instant,
    ) -> Result<(), Duration> {
        let rate = per_second(&self.rates, role);
        if rate <= 0.0 || cost == 0 {
            return Ok(());
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() > 10_000 {
            buckets.retain(|_, b| now.duration_since(b.at) < FORGET_AFTER);
        }
        buckets
            .entry(key.to_owned())
            .or_insert_with(|| Bucket::full(rate, now))
            .take(rate, cost as f64, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_allowed_then_refills_at_the_rate() {
        let l = RateLimiter::new(Rates {
            user: 2.0,
            ..Rates::UNLIMITED
        });
        let t0 = Instant::now();
        for _ in 0..4 {
            assert!(l.check(Some(Role::User), "u1", t0).is_ok());
        }
        let wait = l.check(Some(Role::User), "u1", t0).unwrap_err();
        assert!(wait > Duration::from_millis(400) && wait <= Duration::from_millis(500));
        // Another subject has its own bucket; other roles are unlimited here.
        assert!(l.check(Some(Role::User), "u2", t0).is_ok());
        assert!(l.check(Some(Role::Service), "s", t0).is_ok());
        assert!(l
            .check(Some(Role::User), "u1", t0 + Duration::from_millis(500))
            .is_ok());
    }

    #[test]
    fn operations_cost_their_weight_and_an_impossible_cost_is_refused() {
        let l = RateLimiter::new(Rates {
            user: 5.0,
            ..Rates::UNLIMITED
        });
        let t0 = Instant::now();
        assert!(l.take(Some(Role::User), "u", 8, t0).is_ok());
        assert!(l.take(Some(Role::User), "u", 3, t0).is_err());
        assert!(l.take(Some(Role::User), "u", 2, t0).is_ok());
        // Beyond the burst (10): never payable, however long one waits.
        assert!(l
            .take(Some(Role::User), "v", 11, t0 + Duration::from_secs(60))
            .is_err());
    }
}
