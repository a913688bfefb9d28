//! How long the engine keeps trying a new credential before it gives up on it (step 5,
//! verify-new), per owner.
//!
//! A new credential is not usable everywhere at once: each owner replicates it at its own pace,
//! and giving up too early deletes a good credential and fails the target. So each provider
//! has a default [`VerifyBudget`] sized from its owner's documented propagation, which a
//! target may override (`policy.verify: {timeout: 15m, attempts: 40}`). Within the budget the
//! pauses between attempts double from `first_pause` up to `max_pause`.
//!
//! [`VerifyClock`] lets tests run the same budget faster: every wait is divided by its scale,
//! and elapsed time multiplied by it, so "two minutes of propagation" takes two seconds.

use crate::plan::{PlanDuration, ProviderKind, Target};
use std::time::{Duration, Instant};

/// Longest verification a plan may ask for: longer means something else is wrong, and the
/// new credential sits unused (but valid) meanwhile.
pub const MAX_TIMEOUT: PlanDuration = PlanDuration(3_600);

/// The time a target's new credential gets to prove it works.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyBudget {
    /// Give up once this much time has passed since the first attempt.
    pub timeout: Duration,
    /// And after this many attempts, when the plan sets it.
    pub max_attempts: Option<u32>,
    pub first_pause: Duration,
    pub max_pause: Duration,
    /// Why this much: the owner's documented behaviour (or "the plan").
    pub why: &'static str,
}

impl VerifyBudget {
    /// The owner's default.
    pub fn default_for(kind: ProviderKind) -> VerifyBudget {
        let budget = |secs: u64, first: u64, max: u64, why| VerifyBudget {
            timeout: Duration::from_secs(secs),
            max_attempts: None,
            first_pause: Duration::from_secs(first),
            max_pause: Duration::from_secs(max),
            why,
        };
        match kind {
            // IAM is eventually consistent; a new access key is usually accepted by STS within
            // seconds ("Changes that I make are not always immediately visible",
            // https://docs.aws.amazon.com/IAM/latest/UserGuide/troubleshoot_general.html).
            ProviderKind::AwsIam => budget(
                60,
                1,
                8,
                "AWS IAM: new access keys usually work within seconds",
            ),
            // "After you create a key, you might need to wait for 60 seconds or more before you
            // perform another operation with the key" (https://cloud.google.com/iam/docs/keys-create-delete);
            // IAM changes "typically propagate in 2 minutes, but could potentially take 7
            // minutes or longer" (https://cloud.google.com/iam/docs/access-change-propagation).
            ProviderKind::GcpSaKey => budget(
                600,
                2,
                30,
                "GCP: a new key may take minutes to work everywhere",
            ),
            // Entra ID replicates a new application credential across its regions; Microsoft's
            // guidance for AADSTS7000215 right after addPassword
            // (https://learn.microsoft.com/en-us/graph/api/application-addpassword) is to retry
            // for several minutes.
            ProviderKind::AzureAppSecret => budget(
                600,
                2,
                30,
                "Azure: a new client secret may take minutes to replicate",
            ),
            // GitHub and CircleCI answer from the store they wrote: the key is there at once.
            ProviderKind::GithubDeployKey
            | ProviderKind::GithubToken
            | ProviderKind::CircleciCheckoutKey
            | ProviderKind::CircleciSshKey => {
                budget(60, 1, 8, "accepted as soon as the owner answers")
            }
            // The user's command decides; the engine keeps today's minute.
            ProviderKind::Exec => budget(60, 1, 8, "the exec verify command's own service"),
        }
    }

    /// The target's budget: the plan's `policy.verify` over the owner's default.
    pub fn for_target(target: &Target) -> VerifyBudget {
        let mut budget = Self::default_for(target.provider.value);
        if let Some(policy) = &target.policy.verify {
            if let Some(timeout) = &policy.timeout {
                budget.timeout = Duration::from_secs(timeout.value.seconds().min(MAX_TIMEOUT.0));
                budget.why = "the plan's policy.verify";
            }
            if let Some(attempts) = policy.attempts {
                budget.max_attempts = Some(attempts.max(1));
                budget.why = "the plan's policy.verify";
            }
        }
        budget
    }

    /// `up to 10m (GCP: …)`: what the dry run and the progress output show.
    pub fn describe(&self) -> String {
        let mut text = format!("up to {}", PlanDuration(self.timeout.as_secs()));
        if let Some(n) = self.max_attempts {
            text.push_str(&format!(" or {n} attempts"));
        }
        text.push_str(&format!(" ({})", self.why));
        text
    }

    /// The pause after attempt `attempt` (1-based) that began `elapsed` after the first, or
    /// `None` when the budget is spent and no further attempt should be made.
    pub fn pause_after(&self, attempt: u32, elapsed: Duration) -> Option<Duration> {
        if self.max_attempts.is_some_and(|max| attempt >= max) || elapsed >= self.timeout {
            return None;
        }
        let doubled = self
            .first_pause
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let pause = doubled.min(self.max_pause);
        // The last pause ends at the deadline, so the last attempt comes at the budget's end.
        Some(pause.min(self.timeout - elapsed))
    }
}

/// The clock verification waits by: real time, or faster by a whole factor in tests.
#[derive(Debug, Clone, Copy)]
pub struct VerifyClock {
    scale: u32,
}

impl Default for VerifyClock {
    fn default() -> Self {
        VerifyClock { scale: 1 }
    }
}

impl VerifyClock {
    /// A clock where one second of budget passes in `second` of real time (at most 1 s).
    pub fn with_second(second: Duration) -> VerifyClock {
        let ms = second.as_millis().clamp(1, 1000) as u32;
        VerifyClock { scale: 1000 / ms }
    }

    /// Budget time that has passed since `start`.
    pub fn elapsed(&self, start: Instant) -> Duration {
        start.elapsed().saturating_mul(self.scale)
    }

    /// Sleeps for `budget` time.
    pub async fn sleep(&self, budget: Duration) {
        tokio::time::sleep(budget / self.scale).await
    }

    /// The real time that `budget` time takes on this clock (for simulators in tests).
    pub fn real(&self, budget: Duration) -> Duration {
        budget / self.scale
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_the_cap_and_stop_at_the_budget() {
        let b = VerifyBudget::default_for(ProviderKind::GcpSaKey);
        assert_eq!(
            b.pause_after(1, Duration::ZERO),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            b.pause_after(3, Duration::from_secs(10)),
            Some(Duration::from_secs(8))
        );
        assert_eq!(
            b.pause_after(9, Duration::from_secs(100)),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            b.pause_after(30, Duration::from_secs(590)),
            Some(Duration::from_secs(10))
        );
        assert_eq!(b.pause_after(31, Duration::from_secs(600)), None);
        let aws = VerifyBudget::default_for(ProviderKind::AwsIam);
        assert!(aws.timeout < b.timeout, "AWS takes seconds, GCP minutes");
        let capped = VerifyBudget {
            max_attempts: Some(3),
            ..aws
        };
        assert_eq!(capped.pause_after(3, Duration::ZERO), None);
    }

    #[test]
    fn a_scaled_clock_divides_waits() {
        let c = VerifyClock::with_second(Duration::from_millis(10));
        assert_eq!(
            c.real(Duration::from_secs(120)),
            Duration::from_millis(1200)
        );
        assert_eq!(
            VerifyClock::default().real(Duration::from_secs(3)),
            Duration::from_secs(3)
        );
    }
}
