//! prefect-events-exporter: exact, real-time counts of Prefect run states from Prefect's
//! events stream, served as Prometheus/OpenMetrics and JSON.
//!
//! # Layers
//!
//! Data flows up this table: a source yields raw frames, the pipeline decodes, deduplicates
//! and applies them to the state, and the exposition and HTTP layers read the state. Each
//! layer imports only the layers its row names (and `std` and crates); nothing imports
//! upward, so there is no import circle. `tests/integration/layers.rs` checks every `crate::`
//! path of `src/` against this table (test modules may reach further, to build fixtures).
//!
//! | layer | what it holds | may import |
//! |---|---|---|
//! | `model` | event vocabulary, rejection reasons, time and durations, secrets, group-by dimensions, runs known from REST | |
//! | `state` | run records, counts, labels, histograms, ledger, readiness; one writer ([`state::Tracker`]), readers through [`state::Shared`] | `model` |
//! | `ingest` | decode, dedup, the pipeline | `model`, `state` |
//! | `source` | replay files, the events websocket (with the frame guard under it) | `model` |
//! | `prefect` | the bounded REST client, reconciliation, verification and repair | `model`, `state` |
//! | `persist` | the state file | `model`, `state`, `ingest` |
//! | `expose` | metric catalogue and collectors, exposition formats, JSON documents | `model`, `state` |
//! | `web` | the HTTP server, routes, query parameters, auth, limits, TLS, HTTP metrics | `model`, `state`, `expose` |
//! | `fake_server` | `serve-replay`: a Prefect server made of recordings | `model`, `ingest`, `source`, `web` |
//! | `error` | a command's failure and its exit code | `web`, `persist`, `fake_server` |
//! | `run` | the commands: one start-up and shutdown sequence, live, replay, record | `model`, `state`, `ingest`, `source`, `prefect`, `persist`, `expose`, `web`, `error` |
//! | `cli` | flags to settings (clap stays here) | `model`, `state`, `ingest`, `source`, `web`, `fake_server`, `run` |
//!
//! The binary (`main.rs`) parses the command line, sets up logging and signals, and calls
//! `run` or `fake_server`.

pub mod cli;
pub mod error;
pub mod expose;
pub mod fake_server;
pub mod ingest;
pub mod model;
pub(crate) mod persist;
pub(crate) mod prefect;
pub mod run;
pub(crate) mod source;
pub mod state;
pub mod web;

#[doc(hidden)]
pub use persist::load_state_for_fuzzing;
