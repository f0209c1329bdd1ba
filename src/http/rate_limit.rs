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

struct Bucket {
    tokens: f64,
    at: Instant,
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
        let rate = per_second(&self.rates, role);
        if rate <= 0.0 {
            return Ok(());
        }
        let burst = (rate * 2.0).max(1.0);
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() > 10_000 {
            buckets.retain(|_, b| now.duration_since(b.at) < FORGET_AFTER);
        }
        let b = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / rate))
        }
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
}
