//! Per-service rate limits: a token bucket that every call to one service waits on, shared by
//! all targets of a run, so that `--parallelism 20` cannot turn into a burst that CircleCI or
//! IAM throttles (each throttled call costs a Retry-After wait for everyone).

use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

#[derive(Debug)]
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    state: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
}

impl RateLimiter {
    /// At most `per_second` calls per second on average, bursts up to `burst` calls.
    pub fn new(per_second: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        RateLimiter {
            per_second: per_second.max(0.001),
            burst,
            state: Mutex::new(Bucket {
                tokens: burst,
                refilled: Instant::now(),
            }),
        }
    }

    /// Waits until a call may go.
    pub async fn acquire(&self) {
        loop {
            let wait = {
                let mut bucket = self.state.lock().await;
                let now = Instant::now();
                let elapsed = now.duration_since(bucket.refilled).as_secs_f64();
                bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(self.burst);
                bucket.refilled = now;
                if bucket.tokens >= 1.0 {
                    bucket.tokens -= 1.0;
                    return;
                }
                Duration::from_secs_f64((1.0 - bucket.tokens) / self.per_second)
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// Parses `SERVICE=N` (calls per second; `0` means unlimited), as given to `--rate-limit`.
pub fn parse_limit(text: &str) -> Result<(String, f64), String> {
    let (service, rate) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}`: expected SERVICE=CALLS_PER_SECOND"))?;
    let rate: f64 = rate
        .trim()
        .parse()
        .map_err(|_| format!("`{text}`: `{rate}` is not a number"))?;
    if !rate.is_finite() || rate < 0.0 {
        return Err(format!("`{text}`: the rate must be 0 (unlimited) or more"));
    }
    Ok((service.trim().to_string(), rate))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn spaces_calls_after_the_burst() {
        let limiter = RateLimiter::new(10.0, 2);
        let start = Instant::now();
        for _ in 0..6 {
            limiter.acquire().await;
        }
        // 2 at once (the burst), then 4 more at 10 per second.
        let elapsed = start.elapsed();
        assert!(
            elapsed >= Duration::from_millis(390) && elapsed < Duration::from_millis(450),
            "{elapsed:?}"
        );
    }

    #[test]
    fn parses_limits() {
        assert_eq!(
            parse_limit("circleci=20").unwrap(),
            ("circleci".into(), 20.0)
        );
        assert_eq!(parse_limit("aws-iam=0.5").unwrap(), ("aws-iam".into(), 0.5));
        assert!(parse_limit("circleci").is_err());
        assert!(parse_limit("aws=-1").is_err());
        assert!(parse_limit("aws=x").is_err());
    }
}
