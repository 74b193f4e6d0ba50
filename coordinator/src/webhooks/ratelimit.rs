//! A token bucket per key (a project), in memory: a flood of deliveries is answered 429
//! with the time until the next one would be accepted. Time is a parameter, so the
//! arithmetic is tested without waiting.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most keys tracked; beyond it, buckets that have refilled completely are forgotten
/// (forgetting a full bucket changes nothing).
const MAX_KEYS: usize = 10_000;

/// How many deliveries a key may send: `burst` at once, then `per_minute` on average.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub burst: u32,
    pub per_minute: u32,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

pub struct RateLimiter {
    limit: RateLimit,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    pub fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn rate_per_sec(&self) -> f64 {
        f64::from(self.limit.per_minute.max(1)) / 60.0
    }

    fn refilled(&self, bucket: Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        (bucket.tokens + elapsed * self.rate_per_sec()).min(f64::from(self.limit.burst))
    }

    /// Takes one delivery's token for `key` at `now`. When none is left, returns how long
    /// until one is.
    pub fn check(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() >= MAX_KEYS && !buckets.contains_key(key) {
            let burst = f64::from(self.limit.burst);
            buckets.retain(|_, b| self.refilled(*b, now) < burst);
        }
        let full = Bucket {
            tokens: f64::from(self.limit.burst),
            at: now,
        };
        let bucket = buckets.entry(key.to_owned()).or_insert(full);
        bucket.tokens = self.refilled(*bucket, now);
        bucket.at = bucket.at.max(now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - bucket.tokens) / self.rate_per_sec(),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_rate_applies_per_key() {
        let limiter = RateLimiter::new(RateLimit {
            burst: 3,
            per_minute: 60,
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.check("shop", t0), Ok(()));
        }
        let wait = limiter.check("shop", t0).expect_err("burst spent");
        assert!(
            wait > Duration::from_millis(900) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        // Another project has its own bucket.
        assert_eq!(limiter.check("other", t0), Ok(()));
        // One per second comes back.
        let t1 = t0 + Duration::from_millis(1001);
        assert_eq!(limiter.check("shop", t1), Ok(()));
        assert!(limiter.check("shop", t1).is_err());
        // A long pause refills to the burst, no further.
        let t2 = t1 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert_eq!(limiter.check("shop", t2), Ok(()));
        }
        assert!(limiter.check("shop", t2).is_err());
    }

    #[test]
    fn time_going_backwards_does_not_refill() {
        let limiter = RateLimiter::new(RateLimit {
            burst: 1,
            per_minute: 1,
        });
        let t0 = Instant::now() + Duration::from_secs(10);
        assert_eq!(limiter.check("p", t0), Ok(()));
        let wait = limiter
            .check("p", t0 - Duration::from_secs(5))
            .expect_err("empty");
        assert!(wait > Duration::from_secs(59), "{wait:?}");
    }

    #[test]
    fn full_buckets_are_forgotten_when_many_keys_are_tracked() {
        let limiter = RateLimiter::new(RateLimit {
            burst: 2,
            per_minute: 60,
        });
        let t0 = Instant::now();
        for i in 0..MAX_KEYS {
            assert!(limiter.check(&format!("p{i}"), t0).is_ok());
        }
        // Ten seconds later every bucket is full again and may be dropped.
        let later = t0 + Duration::from_secs(10);
        assert!(limiter.check("new", later).is_ok());
        let kept = limiter.buckets.lock().map(|b| b.len()).unwrap_or(0);
        assert_eq!(kept, 1, "only the new key is tracked");
    }
}
