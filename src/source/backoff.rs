//! The reconnect delay every live source shares: capped, jittered exponential backoff, reset
//! after a healthy connection, and a slow fixed retry after an authentication failure; each
//! distinct failure logged once ([`Retry`]).

use std::time::Duration;

use rand::Rng;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

use crate::source::{StreamError, StreamObserver};

/// Backoff bounds for ordinary failures.
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Retry period after an authentication failure.
const AUTH_RETRY: Duration = Duration::from_secs(60);
/// A connection that lived this long resets the backoff.
const HEALTHY_AFTER: Duration = Duration::from_secs(60);

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

/// A live source's reconnects: the wait after each failure, logged once per distinct error
/// (repeats at debug level).
#[derive(Debug)]
pub struct Retry {
    backoff: Backoff,
    last_error: Option<String>,
    /// Who refuses credentials (`The Prefect server`, `Redis`).
    server: &'static str,
    /// What ends (`The events stream`, `The Redis stream`).
    stream: &'static str,
    /// Where it is (a URL without user information), for the logs.
    at: String,
}

impl Retry {
    /// Retries for a source at `at` (shown without user information) whose `server` and
    /// `stream` are named so in logs.
    pub fn new(server: &'static str, stream: &'static str, at: String) -> Retry {
        Retry {
            backoff: Backoff::default(),
            last_error: None,
            server,
            stream,
            at,
        }
    }

    /// The source is connected: the next failure is logged again.
    pub fn connected(&mut self) {
        self.last_error = None;
    }

    /// A connection ended after `lived`: a healthy one resets the backoff.
    pub fn lasted(&mut self, lived: Duration) {
        if lived >= HEALTHY_AFTER {
            self.backoff.reset();
        }
    }

    /// Reports `error` to `observer` (the connection had been up: `was_connected`), logs it
    /// (once per distinct error) and waits before the next attempt; `false` when `shutdown`
    /// came first.
    pub async fn wait_after(
        &mut self,
        error: &StreamError,
        was_connected: bool,
        observer: &dyn StreamObserver,
        shutdown: &CancellationToken,
    ) -> bool {
        observer.disconnected(error, was_connected);
        let text = error.to_string();
        let repeated = self.last_error.as_deref() == Some(text.as_str());
        let (server, stream, at) = (self.server, self.stream, &self.at);
        let delay = if let StreamError::Auth(_) = error {
            if !repeated {
                error!(at = %at, error = %error, retry_in_seconds = AUTH_RETRY.as_secs(), "{server} refused the credentials.");
            }
            AUTH_RETRY
        } else {
            let retry_in_ms = self.backoff.current().as_millis() as u64;
            if repeated {
                debug!(at = %at, error = %error, retry_in_ms, "{stream} is still unavailable; reconnecting.");
            } else {
                warn!(at = %at, error = %error, retry_in_ms, "{stream} ended; reconnecting.");
            }
            self.backoff.next_delay()
        };
        self.last_error = Some(text);
        tokio::select! {
            () = shutdown.cancelled() => false,
            () = tokio::time::sleep(delay) => true,
        }
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
