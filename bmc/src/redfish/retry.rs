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

/// What became of one attempt, as far as retrying is concerned.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Attempt<'a> {
    /// The request never reached the BMC (connection refused, TLS handshake failed).
    NotSent,
    /// The connection broke or timed out after the request may have been acted on.
    Broken,
    /// The BMC answered (anything but 401, which authentication handles).
    Answered {
        status: u16,
        body: &'a str,
        retry_after: Option<Duration>,
    },
}

/// Try again after `delay`, for `reason` (logged).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Retry {
    pub(crate) delay: Duration,
    pub(crate) reason: &'static str,
}

/// Counts of attempts so far for one request.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Tries {
    failures: u32,
    busy: u32,
}

impl RetryPolicy {
    /// Whether to try again, and after how long. Only what is safe is retried: requests
    /// that never reached the BMC whatever their method; idempotent ones (`idempotent` is
    /// false for POST actions) after broken connections and 5xx; actions only on 503, which
    /// says the BMC did not take them. A 500 is usually deterministic and gets one more try.
    /// Vendor "busy" answers follow their rule's count. Every path is bounded.
    pub(crate) fn next(
        &self,
        tries: &mut Tries,
        idempotent: bool,
        attempt: Attempt<'_>,
        busy_rules: &[BusyRule],
    ) -> Option<Retry> {
        match attempt {
            Attempt::NotSent | Attempt::Broken => {
                let safe = matches!(attempt, Attempt::NotSent) || idempotent;
                tries.failures += 1;
                (safe && tries.failures < self.attempts).then(|| Retry {
                    delay: self.backoff(tries.failures),
                    reason: "the connection failed",
                })
            }
            Attempt::Answered {
                status,
                body,
                retry_after,
            } => {
                if (500..600).contains(&status) && (idempotent || status == 503) {
                    tries.failures += 1;
                    let limit = if status == 500 {
                        self.attempts.min(2)
                    } else {
                        self.attempts
                    };
                    return (tries.failures < limit).then(|| Retry {
                        delay: retry_after
                            .unwrap_or_else(|| self.backoff(tries.failures))
                            .min(self.max_backoff),
                        reason: "the BMC answered with a server error",
                    });
                }
                let rule = busy_rules.iter().find(|rule| rule.matches(status, body))?;
                tries.busy += 1;
                (tries.busy < rule.attempts).then(|| Retry {
                    delay: self.busy_backoff(tries.busy),
                    reason: rule.reason,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(status: u16, body: &str) -> Attempt<'_> {
        Attempt::Answered {
            status,
            body,
            retry_after: None,
        }
    }

    /// How many attempts a request gets when every one ends like `attempt`.
    fn attempts(
        policy: &RetryPolicy,
        idempotent: bool,
        attempt: Attempt<'_>,
        rules: &[BusyRule],
    ) -> u32 {
        let mut tries = Tries::default();
        let mut n = 1;
        while policy
            .next(&mut tries, idempotent, attempt, rules)
            .is_some()
        {
            n += 1;
            assert!(n < 100, "unbounded");
        }
        n
    }

    #[test]
    fn only_safe_retries_happen_and_all_are_bounded() {
        let policy = RetryPolicy::default();
        let busy = [BusyRule {
            status: 400,
            needle: "UnableToModifyDuringSystemPOST",
            attempts: 6,
            reason: "POST",
        }];
        assert_eq!(attempts(&policy, true, Attempt::Broken, &busy), 5);
        assert_eq!(attempts(&policy, false, Attempt::Broken, &busy), 1);
        assert_eq!(attempts(&policy, false, Attempt::NotSent, &busy), 5);
        assert_eq!(attempts(&policy, true, answered(502, ""), &busy), 5);
        assert_eq!(attempts(&policy, true, answered(500, ""), &busy), 2);
        assert_eq!(attempts(&policy, false, answered(500, ""), &busy), 1);
        assert_eq!(attempts(&policy, false, answered(503, ""), &busy), 5);
        assert_eq!(attempts(&policy, true, answered(404, ""), &busy), 1);
        let during_post = answered(400, "iLO.2.15.UnableToModifyDuringSystemPOST");
        assert_eq!(attempts(&policy, true, during_post, &busy), 6);
        assert_eq!(attempts(&policy, true, during_post, &[]), 1);
    }

    #[test]
    fn retry_after_is_honoured_up_to_the_cap() {
        let policy = RetryPolicy::default();
        let mut tries = Tries::default();
        let wait = |seconds| Attempt::Answered {
            status: 503,
            body: "",
            retry_after: Some(Duration::from_secs(seconds)),
        };
        let delay = |r: Option<Retry>| r.map(|r| r.delay);
        assert_eq!(
            delay(policy.next(&mut tries, true, wait(3), &[])),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            delay(policy.next(&mut tries, true, wait(3600), &[])),
            Some(Duration::from_secs(8))
        );
    }

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
