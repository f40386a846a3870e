//! What the exporter knows: one record per tracked run keyed by `prefect.resource.id`, the
//! aggregate counts built from them, and the service's own condition.
//!
//! - [`tracker`]: the single writer ([`Tracker`], and [`Writer`] for one batch of events).
//! - [`shared`]: [`Shared`], what readers see, with private fields and named methods.
//! - [`record`], [`counts`], [`waiting`]: a run's record, the aggregates, the index of waiting
//!   runs.
//! - [`labels`], [`histogram`], [`ledger`]: bounded label tables, plain histograms, distinct
//!   events per second for verification.
//! - [`status`]: readiness and the stream's connection.

pub(crate) mod counts;
pub(crate) mod histogram;
pub(crate) mod labels;
pub(crate) mod ledger;
pub(crate) mod record;
pub mod shared;
pub mod status;
#[cfg(test)]
pub(crate) mod test_support;
#[cfg(test)]
mod tests;
pub mod tracker;
pub(crate) mod waiting;

pub use shared::Shared;
pub use tracker::{StateConfig, Tracker, Writer};

/// A hash map with a fast hasher, for keys the event stream cannot choose freely (state
/// names and label sets are capped by `--max-series`).
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
