//! What the exporter shows: metric families (defined in [`catalogue`]; the state's built by
//! [`state_families`], the exporter's own kept in the registry of [`collect`] and set by
//! [`exporter_metrics`]; all written by [`exposition`]) and the JSON documents of the API
//! ([`report`], [`resources`], [`history`]). Reads the state; never changes it.

pub(crate) mod catalogue;
pub mod collect;
pub(crate) mod exporter_metrics;
pub mod exposition;
pub(crate) mod history;
pub(crate) mod report;
pub mod resources;
pub(crate) mod state_families;
