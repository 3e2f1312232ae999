//! How long to wait between attempts, and which vendor answers mean "busy, try later".
//!
//! Pure data and arithmetic, so the schedules are tested without a clock.

use std::time::Duration;

/// Bounded retry schedule for transient failures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts for one request (1 means no retry).
    pub attempts: u32,
    /// The first wait; it doubles after each attempt up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// The first wait after a vendor "busy" answer (iLO during POST, iDRAC job conflicts);
    /// it doubles up to `busy_max_backoff`. How many tries a busy answer gets is the quirk
    /// profile's call.
    pub busy_initial_backoff: Duration,
    pub busy_max_backoff: Duration,
}

impl Default for RetryPolicy {
    /// Five attempts over about 7.5 s for 5xx and broken connections (sushy spends 30 s); busy
    /// answers wait 5 s doubling to 30 s, as Ironic does for iLO.
    fn default() -> Self {
        Self {
            attempts: 5,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(8),
            busy_initial_backoff: Duration::from_secs(5),
            busy_max_backoff: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt number `attempt` (1-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        doubling(self.initial_backoff, self.max_backoff, attempt)
    }

    /// The wait after the `attempt`-th busy answer (1-based).
    pub fn busy_backoff(&self, attempt: u32) -> Duration {
        doubling(self.busy_initial_backoff, self.busy_max_backoff, attempt)
    }
}

fn doubling(initial: Duration, max: Duration, attempt: u32) -> Duration {
    let factor = 1u32 << attempt.saturating_sub(1).min(16);
    initial.saturating_mul(factor).min(max)
}

/// A vendor answer that means "not now": retried up to `attempts` times in total.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusyRule {
    pub status: u16,
    /// Text in the error body (usually a MessageId) that identifies the condition.
    pub needle: &'static str,
    pub attempts: u32,
    /// Logged when the rule fires.
    pub reason: &'static str,
}

impl BusyRule {
    pub fn matches(&self, status: u16, body: &str) -> bool {
        self.status == status && body.contains(self.needle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let policy = RetryPolicy::default();
        let waits: Vec<u64> = (1..=6)
            .map(|n| policy.backoff(n).as_millis() as u64)
            .collect();
        assert_eq!(waits, [500, 1000, 2000, 4000, 8000, 8000]);
        assert_eq!(policy.busy_backoff(1), Duration::from_secs(5));
        assert_eq!(policy.busy_backoff(4), Duration::from_secs(30));
        assert_eq!(policy.backoff(u32::MAX), Duration::from_secs(8));
    }

    #[test]
    fn busy_rules_need_both_status_and_text() {
        let rule = BusyRule {
            status: 400,
            needle: "UnableToModifyDuringSystemPOST",
            attempts: 6,
            reason: "iLO is in POST",
        };
        assert!(rule.matches(
            400,
            r#"{"MessageId":"iLO.2.15.UnableToModifyDuringSystemPOST"}"#
        ));
        assert!(!rule.matches(409, "UnableToModifyDuringSystemPOST"));
        assert!(!rule.matches(400, "PropertyValueNotInList"));
    }
}
