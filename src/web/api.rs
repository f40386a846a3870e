//! The exporter's API server as a running service: its settings, start-up (auth, TLS, the
//! connection cap, the HTTP and REST-client families in the metrics) and the wait for it to drain.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::expose::catalogue::ApiMetrics;
use crate::expose::collect::Metrics;
use crate::model::secret::Secret;
use crate::model::time::{now_micros, Clock};
use crate::state::status::Status;
use crate::state::Shared;
use crate::web::auth::Authenticator;
use crate::web::limits::ConnectionCap;
use crate::web::metrics::HttpStats;
use crate::web::routes::{serve_api, ApiState};
use crate::web::server::{bind, ServeConfig};
use crate::web::stream::{StreamSettings, StreamStats, Streams};
use crate::web::Error;

/// The socket send buffer of an API connection (Linux doubles it): enough for a large
/// `/metrics` at WAN round trips, and a bound on what a stream client that stops reading
/// holds in the kernel.
const SEND_BUFFER: usize = 512 * 1024;

/// How long a write to a client that stopped reading may wait before its connection is
/// dropped: past [`crate::web::stream::STALL`], so a stream client that stops reading has its
/// `overflow` event queued first, and the connection still goes when that final write never
/// drains.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(15);

/// How the API server listens, and protects itself.
#[derive(Clone, Debug)]
pub struct WebSettings {
    /// Where it listens (port 0 picks a free one).
    pub listen: SocketAddr,
    /// Most connections open at once.
    pub max_connections: usize,
    /// How long a client may take to send its request headers (and body).
    pub header_timeout: Duration,
    /// `Authorization: Bearer` token required on every path but `/healthz`.
    pub auth_token: Option<Secret>,
    /// `user:bcrypt_hash` for HTTP Basic on every path but `/healthz`.
    pub basic_auth: Option<Secret>,
    /// PEM certificate chain and key, for HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// `/api/v1/stream`'s intervals.
    pub stream: StreamSettings,
}

/// The API server, bound and serving until the shutdown token is cancelled.
pub struct ApiServer {
    handle: JoinHandle<io::Result<()>>,
    addr: String,
    api_metrics: ApiMetrics,
}

impl ApiServer {
    /// Checks the settings (a bad one is a configuration error naming its flag), binds and
    /// serves `shared` and `status`, measuring ages against `clock`.
    pub async fn start(
        settings: &WebSettings,
        shared: Arc<Shared>,
        status: Arc<Status>,
        clock: Clock,
        shutdown: CancellationToken,
    ) -> Result<ApiServer, Error> {
        let auth =
            Authenticator::from_flags(settings.auth_token.as_ref(), settings.basic_auth.as_ref())?;
        let tls = match &settings.tls {
            Some((cert, key)) => Some(crate::web::tls::acceptor(cert, key)?),
            None => None,
        };
        let metrics = Metrics::new(shared.clone(), status.clone(), clock.clone());
        let http = (metrics.register_http()).map_err(|source| Error::Metrics { source })?;
        let api_metrics = (metrics.register_api()).map_err(|source| Error::Metrics { source })?;
        let stats = Arc::new(HttpStats::new(&http));
        let config = ServeConfig {
            header_timeout: settings.header_timeout,
            cap: ConnectionCap::new(settings.max_connections, stats.clone()),
            tls,
            send_buffer: Some(SEND_BUFFER),
            write_timeout: Some(WRITE_TIMEOUT),
        };
        let streams = Arc::new(Streams::new(
            shared.clone(),
            status.clone(),
            settings.stream,
            Arc::new(StreamStats::new(&http)),
            now_micros(),
            shutdown.clone(),
        ));
        let (listener, local) = bind(settings.listen).await?;
        info!(
            listen = %local,
            tls = config.tls.is_some(),
            auth = auth.as_ref().map_or("none", Authenticator::scheme_name),
            max_connections = config.cap.limit(),
            "Serving HTTP."
        );
        let state = Arc::new(ApiState {
            shared,
            status,
            metrics,
            clock,
            auth,
            stats,
            body_timeout: settings.header_timeout,
            streams,
        });
        let handle = tokio::spawn(serve_api(listener, config, state, shutdown));
        Ok(ApiServer {
            handle,
            addr: settings.listen.to_string(),
            api_metrics,
        })
    }

    /// The REST client's families in this server's metrics, for the client to update.
    pub(crate) fn api_metrics(&self) -> &ApiMetrics {
        &self.api_metrics
    }

    /// Waits for the server to drain and stop.
    pub async fn finish(self) -> Result<(), Error> {
        let result = match self.handle.await {
            Ok(result) => result,
            Err(e) => Err(io::Error::other(e.to_string())),
        };
        result.map_err(|source| Error::Serve {
            addr: self.addr,
            source,
        })
    }
}
