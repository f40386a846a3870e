//! What the exporter knows: one record per tracked run keyed by `prefect.resource.id`, the
//! aggregate counts built from them, and the service's own condition.
//!
//! - [`tracker`]: the single writer ([`Tracker`], and [`Writer`] for one batch of events).
//! - [`shared`]: [`Shared`], what readers see, with private fields and named methods.
//! - [`record`], [`counts`], [`waiting`]: a run's record, the aggregates, the index of waiting
//!   runs.
//! - [`labels`], [`histogram`], [`ledger`]: bounded label tables, plain histograms, distinct
//!   events per second for verification.
//! - [`changes`]: the bounded log of applied state events the HTTP stream follows;
//!   [`minutes`]: entries per minute over the newest hour.
//! - [`status`]: readiness and the stream's connection; [`config`]: the layer's settings.

pub mod changes;
pub(crate) mod config;
pub(crate) mod counts;
pub(crate) mod histogram;
pub(crate) mod inline;
pub(crate) mod label_sets;
pub(crate) mod labels;
pub(crate) mod ledger;
pub mod minutes;
pub(crate) mod names;
pub(crate) mod record;
pub mod shared;
pub mod status;
pub(crate) mod table;
#[cfg(test)]
pub(crate) mod test_support;
#[cfg(test)]
mod tests;
pub mod tracker;
pub(crate) mod waiting;

pub use config::StateConfig;
pub use shared::Shared;
pub use tracker::{Tracker, Writer};

/// A hash map with a fast hasher, for keys the event stream cannot choose freely (state
/// names and label sets are capped by `--max-series`).
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
