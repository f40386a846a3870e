//! What the exporter shows: metric families (defined in [`catalogue`], built by collectors
//! registered in [`collect`], written by [`exposition`]) and the JSON documents of the API
//! ([`report`], [`resources`], [`history`]). Reads the state; never changes it.

pub(crate) mod catalogue;
pub mod collect;
pub mod exposition;
pub(crate) mod history;
pub(crate) mod report;
pub mod resources;
pub(crate) mod state_families;
