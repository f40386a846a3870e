//! The vocabulary every layer shares: events and their states, rejection reasons, time and
//! durations, secrets, the group-by dimensions, runs known from REST, and how server-supplied
//! text is shown.
//!
//! Plain data and pure functions only; it imports nothing else of the crate.

pub mod event;
pub mod group_by;
pub(crate) mod known_run;
pub(crate) mod reject;
pub(crate) mod secret;
pub mod time;
pub(crate) mod untrusted;

/// A value that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Not a humantime duration.
    #[error("{reason} (examples: 15s, 10m, 1h)")]
    Duration {
        /// What is wrong with it.
        reason: String,
    },
    /// Not an http(s) URL with a host.
    #[error("'{url}' {reason}")]
    Url {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}
