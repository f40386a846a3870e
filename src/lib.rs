//! prefect-events-exporter: exact, real-time counts of Prefect run states from Prefect's
//! events stream, served as Prometheus/OpenMetrics and JSON.
//!
//! Data flow, one file per step:
//!
//! ```text
//! source::replay (JSONL lines)      ──┐
//! (later: source::ws, source::redis)──┴─> pipeline: decode ─> dedup ─> state (Tracker)
//!                                                                        │
//!                    http (/metrics via metrics + exposition, /api/v1 via report) <─┘
//! ```
//!
//! - [`event`], [`timestamp`]: the vocabulary (state types, ids, decoded events, times).
//! - [`decode`]: bytes to an event or a counted rejection; pure.
//! - [`dedup`]: the occurred-keyed window of event ids.
//! - [`state`]: per-run records keyed by `prefect.resource.id` and the aggregates.
//! - [`labels`], [`histogram`]: bounded label tables, plain histograms.
//! - [`pipeline`]: the one path every frame takes.
//! - [`source`]: where frames come from.
//! - [`report`], [`query`]: the JSON API documents and parameters.
//! - [`metrics`], [`exposition`]: every metric's definition; text and OpenMetrics output.
//! - [`http`], [`status`]: the server and the readiness it reports.
//! - [`persist`]: the state file that carries counts across restarts.
//! - [`web_limits`], [`web_auth`], [`web_tls`]: what the server refuses, whom it serves,
//!   and HTTPS.
//! - [`config`], [`app`]: flags, and the wiring of the commands.

pub mod app;
pub mod config;
pub mod decode;
pub mod dedup;
pub mod event;
pub mod exposition;
pub mod fake_server;
pub mod histogram;
pub mod http;
pub mod labels;
pub mod ledger;
pub mod live;
pub mod metrics;
pub mod persist;
pub mod pipeline;
pub mod prefect_api;
pub mod query;
pub mod reconcile;
pub mod record;
pub mod report;
pub mod secret;
pub mod source;
pub mod state;
pub mod status;
#[cfg(test)]
mod test_support;
pub mod timestamp;
pub mod verify;
pub mod web_auth;
pub mod web_limits;
pub mod web_tls;
