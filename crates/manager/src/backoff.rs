//! Restart policy for plugins that exit unexpectedly: capped exponential backoff with jitter,
//! reset after a stable run, and a "failed" verdict after repeated fast failures (the plugin
//! stays desired-enabled and is retried at the ceiling). moby restarts at once, forever,
//! dropping the error; this keeps the host calm and the reason visible.

use std::time::Duration;

/// The knobs of the restart policy.
#[derive(Debug, Clone, Copy)]
pub struct RestartPolicy {
    /// Delay before the first restart.
    pub initial: Duration,
    /// The ceiling of the delay.
    pub max: Duration,
    /// A run at least this long counts as stable and resets the backoff.
    pub stable_after: Duration,
    /// This many fast failures in a row mark the plugin failed.
    pub fail_after: u32,
}

impl RestartPolicy {
    /// 100 ms doubling to 30 s; 10 s of running resets; 5 fast failures mark it failed.
    pub const DEFAULT: RestartPolicy = RestartPolicy {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(30),
        stable_after: Duration::from_secs(10),
        fail_after: 5,
    };

    /// Decides the next restart after an exit. `fast_failures` is the plugin's counter
    /// (updated here); `ran_for` how long the task ran; `jitter` a number in `[0, 1)`.
    pub fn next(&self, fast_failures: &mut u32, ran_for: Duration, jitter: f64) -> RestartDecision {
        if ran_for >= self.stable_after {
            *fast_failures = 0;
        }
        *fast_failures = fast_failures.saturating_add(1);
        let exp = fast_failures.saturating_sub(1).min(30);
        let base = self.initial.saturating_mul(1u32 << exp).min(self.max);
        // ±20 % so that plugins failing together do not restart in lockstep.
        let factor = 0.8 + 0.4 * jitter.clamp(0.0, 1.0);
        let failed = *fast_failures >= self.fail_after;
        let delay = if failed {
            self.max
        } else {
            base.mul_f64(factor).min(self.max)
        };
        RestartDecision { delay, failed }
    }
}

/// What to do after an unexpected exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartDecision {
    /// Wait this long before starting again.
    pub delay: Duration,
    /// The plugin has failed repeatedly: record it as failed (and keep retrying at `delay`).
    pub failed: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_caps_and_fails() {
        let p = RestartPolicy::DEFAULT;
        let mut n = 0;
        let delays: Vec<_> = (0..6)
            .map(|_| p.next(&mut n, Duration::ZERO, 0.5))
            .collect();
        assert_eq!(delays[0].delay, Duration::from_millis(100));
        assert_eq!(delays[1].delay, Duration::from_millis(200));
        assert_eq!(delays[3].delay, Duration::from_millis(800));
        assert!(!delays[3].failed);
        assert!(delays[4].failed && delays[4].delay == p.max);
        assert!(delays[5].failed);
    }

    #[test]
    fn stable_run_resets_and_jitter_bounds() {
        let p = RestartPolicy::DEFAULT;
        let mut n = 7;
        let d = p.next(&mut n, Duration::from_secs(60), 0.0);
        assert_eq!(n, 1);
        assert!(!d.failed);
        assert_eq!(d.delay, Duration::from_millis(80));
        let mut m = 0;
        assert_eq!(
            p.next(&mut m, Duration::ZERO, 0.999_999).delay.as_millis(),
            119
        );
        let mut big = 40;
        assert_eq!(p.next(&mut big, Duration::ZERO, 0.5).delay, p.max);
    }
}
