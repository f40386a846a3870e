//! The HTTP server's flags of `run`: limits, authentication, TLS and the event stream's
//! intervals, turned into [`WebSettings`].

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

use super::parse_positive_human_duration;
use crate::model::secret::Secret;
use crate::model::time::HumanDuration;
use crate::web::api::WebSettings;
use crate::web::limits::DEFAULT_MAX_CONNECTIONS;
use crate::web::server::DEFAULT_HEADER_TIMEOUT;
use crate::web::stream::{StreamSettings, DEFAULT_PING_INTERVAL, DEFAULT_STREAM_INTERVAL};

/// The HTTP server's limits, authentication and TLS (`run`).
#[derive(Clone, Debug, Args)]
pub struct WebArgs {
    /// Most HTTP connections open at once; further ones are closed at once (counted, logged
    /// rate-limited). Lowered, with a warning, to fit the process's open-file limit.
    #[arg(long, env = "PREFECT_EXPORTER_WEB_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS, value_parser = clap::value_parser!(u32).range(1..), allow_hyphen_values = true)]
    pub web_max_connections: u32,

    /// How long a client may take to send its request headers; also bounds the TLS
    /// handshake, an idle keep-alive connection and a request body.
    #[arg(long, env = "PREFECT_EXPORTER_WEB_HEADER_TIMEOUT", default_value_t = HumanDuration(DEFAULT_HEADER_TIMEOUT), value_parser = parse_positive_human_duration, allow_hyphen_values = true)]
    pub web_header_timeout: HumanDuration,

    /// Require `Authorization: Bearer TOKEN` on every endpoint except `/healthz`. Never logged.
    #[arg(
        long,
        env = "PREFECT_EXPORTER_WEB_AUTH_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true,
        conflicts_with = "web_basic_auth"
    )]
    pub web_auth_token: Option<Secret>,

    /// Require HTTP Basic authentication on every endpoint except `/healthz`: `user:` and the
    /// bcrypt hash of the password (as in Prometheus' web.yml). Never logged.
    #[arg(
        long,
        env = "PREFECT_EXPORTER_WEB_BASIC_AUTH",
        value_name = "USER:BCRYPT_HASH",
        hide_env_values = true
    )]
    pub web_basic_auth: Option<Secret>,

    /// Serve HTTPS with this PEM certificate chain (needs `--web-tls-key`).
    #[arg(
        long,
        env = "PREFECT_EXPORTER_WEB_TLS_CERT",
        value_name = "PATH",
        requires = "web_tls_key"
    )]
    pub web_tls_cert: Option<PathBuf>,

    /// The PEM private key of `--web-tls-cert`.
    #[arg(
        long,
        env = "PREFECT_EXPORTER_WEB_TLS_KEY",
        value_name = "PATH",
        requires = "web_tls_cert"
    )]
    pub web_tls_key: Option<PathBuf>,

    /// Least time between two `counts` events of one `/api/v1/stream` client: changes
    /// within it are sent together.
    #[arg(long, env = "PREFECT_EXPORTER_STREAM_INTERVAL", default_value_t = HumanDuration(DEFAULT_STREAM_INTERVAL), value_parser = parse_positive_human_duration, allow_hyphen_values = true)]
    pub stream_interval: HumanDuration,

    /// Time between `: ping` heartbeats on `/api/v1/stream` (for tests).
    #[arg(long, hide = true, env = "PREFECT_EXPORTER_STREAM_PING_INTERVAL", default_value_t = HumanDuration(DEFAULT_PING_INTERVAL), value_parser = parse_positive_human_duration, allow_hyphen_values = true)]
    pub stream_ping_interval: HumanDuration,
}

impl WebArgs {
    /// The API server's settings, listening on `listen`.
    pub fn settings(self, listen: SocketAddr) -> WebSettings {
        WebSettings {
            listen,
            max_connections: usize::try_from(self.web_max_connections).unwrap_or(usize::MAX),
            header_timeout: self.web_header_timeout.0,
            auth_token: self.web_auth_token,
            basic_auth: self.web_basic_auth,
            tls: self.web_tls_cert.zip(self.web_tls_key),
            stream: StreamSettings {
                interval: self.stream_interval.0,
                ping: self.stream_ping_interval.0,
            },
        }
    }
}
