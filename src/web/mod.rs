//! The HTTP side: the server both the API and `serve-replay` run on ([`server`]), the API's
//! routes ([`routes`]) and query parameters ([`query`]), what it refuses ([`limits`]), whom
//! it serves ([`auth`]), HTTPS ([`tls`]), the deadline on writes ([`write_deadline`]), its own
//! metric families ([`metrics`]), the event stream ([`stream`]) and its wire format ([`sse`]),
//! the live page ([`page`]), and the API as a running service ([`api`]).

pub(crate) mod api;
pub(crate) mod auth;
pub(crate) mod limits;
pub(crate) mod metrics;
pub(crate) mod page;
pub mod query;
pub(crate) mod response;
pub(crate) mod routes;
pub(crate) mod server;
pub(crate) mod sse;
pub mod stream;
pub(crate) mod tls;
pub(crate) mod write_deadline;

use std::io;

/// Why the HTTP side could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bad `--web-*` setting (exit code 2).
    #[error("{flag}: {message}")]
    Config {
        /// The flag at fault.
        flag: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The listen address could not be bound.
    #[error("HTTP server on {addr}: {source}")]
    Bind {
        /// The listen address.
        addr: String,
        /// The cause.
        source: io::Error,
    },
    /// The HTTP families could not join the exporter's registry (a name already there).
    #[error("registering the HTTP server's metrics: {source}")]
    Metrics {
        /// The cause.
        source: prometheus::Error,
    },
    /// The server failed while serving.
    #[error("HTTP server on {addr}: {source}")]
    Serve {
        /// The listen address.
        addr: String,
        /// The cause.
        source: io::Error,
    },
}
