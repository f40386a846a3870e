//! The reconnect delay every live source shares: capped, jittered exponential backoff, reset
//! after a healthy connection, and a slow fixed retry after an authentication failure.

use std::time::Duration;

use rand::Rng;

/// Backoff bounds for ordinary failures.
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Retry period after an authentication failure.
pub const AUTH_RETRY: Duration = Duration::from_secs(60);
/// A connection that lived this long resets the backoff.
pub const HEALTHY_AFTER: Duration = Duration::from_secs(60);

/// The next reconnect delay.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff { next: BACKOFF_MIN }
    }
}

impl Backoff {
    /// Back to the shortest delay (after a healthy connection).
    pub fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }

    /// The un-jittered delay the next failure waits (for logs).
    pub fn current(&self) -> Duration {
        self.next
    }

    /// The delay before the next attempt (half to all of the current step, jittered), and
    /// the step doubled for the one after.
    pub fn next_delay(&mut self) -> Duration {
        let jittered = self.next.mul_f64(rand::rng().random_range(0.5..1.0));
        self.next = (self.next * 2).min(BACKOFF_MAX);
        jittered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_reset() {
        let mut backoff = Backoff::default();
        let first = backoff.next_delay();
        assert!(first >= BACKOFF_MIN / 2 && first <= BACKOFF_MIN);
        for _ in 0..20 {
            assert!(backoff.next_delay() <= BACKOFF_MAX);
        }
        assert_eq!(backoff.current(), BACKOFF_MAX);
        backoff.reset();
        assert_eq!(backoff.current(), BACKOFF_MIN);
    }
}
