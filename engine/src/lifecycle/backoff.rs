//! Exponential back-off between retries of a failed step or operation.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `base × 2^(failures − 1)`, capped at `max`, with ±12.5 % jitter so that hosts that failed
/// together (a BMC switch rebooting) do not retry in lockstep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(10),
            max: Duration::from_secs(600),
        }
    }
}

impl Backoff {
    /// The delay after the `failures`-th consecutive failure. `seed` makes the jitter
    /// deterministic per host (the lifecycle takes no randomness as input).
    pub fn delay(&self, failures: u32, seed: u128) -> Duration {
        let doublings = failures.saturating_sub(1).min(32);
        let nominal = self
            .base
            .checked_mul(1u32 << doublings.min(31))
            .unwrap_or(self.max)
            .min(self.max);
        let nominal_ms = u64::try_from(nominal.as_millis()).unwrap_or(u64::MAX);
        let spread = nominal_ms / 4;
        if spread == 0 {
            return nominal;
        }
        let offset = mix(seed, failures) % spread;
        Duration::from_millis(nominal_ms - nominal_ms / 8 + offset)
    }
}

/// A cheap, well-spread hash of the seed and the attempt (SplitMix64's finaliser).
fn mix(seed: u128, failures: u32) -> u64 {
    // Truncation keeps the low 64 bits of each half, which is all the jitter needs.
    let mut x = (seed as u64)
        ^ ((seed >> 64) as u64)
        ^ u64::from(failures).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_then_caps_within_the_jitter_band() {
        let backoff = Backoff {
            base: Duration::from_secs(10),
            max: Duration::from_secs(600),
        };
        for (failures, nominal) in [(1, 10u64), (2, 20), (3, 40), (6, 320), (7, 600), (40, 600)] {
            let delay = backoff.delay(failures, 42).as_millis();
            let nominal = u128::from(nominal) * 1000;
            assert!(
                delay >= nominal - nominal / 8 && delay <= nominal + nominal / 8,
                "{failures}: {delay}"
            );
        }
    }

    #[test]
    fn jitter_differs_between_hosts() {
        let backoff = Backoff::default();
        let delays: std::collections::HashSet<_> =
            (0..20u128).map(|seed| backoff.delay(3, seed)).collect();
        assert!(delays.len() > 10, "{delays:?}");
    }

    #[test]
    fn zero_base_means_no_wait() {
        let backoff = Backoff {
            base: Duration::ZERO,
            max: Duration::ZERO,
        };
        assert_eq!(backoff.delay(5, 1), Duration::ZERO);
    }
}
