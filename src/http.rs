//! The HTTP server: `/metrics`, `/api/v1/*`, `/healthz`, `/readyz` and a landing page.
//!
//! hyper 1.x, HTTP/1.1. Handlers only read shared state (copying aggregates under a short
//! lock), so a scrape never stalls ingestion. Every JSON error is `{"error": "..."}`.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ACCEPT, ALLOW, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::exposition::Format;
use crate::metrics::{Clock, Metrics};
use crate::query::{parse_query, ResourceQuery};
use crate::report::{CountsReport, ResourceList, ResourceView};
use crate::state::Shared;
use crate::status::Status;
use crate::web_auth::Authenticator;
use crate::web_limits::{read_body, ConnectionCap, HttpStats, Rejection, DEFAULT_MAX_CONNECTIONS};

/// Default time a client may take to send its request headers (`--web-header-timeout`).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for open connections to finish.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(5);
/// Largest request body the API accepts: it only serves GET and HEAD.
pub const MAX_API_BODY: usize = 64 * 1024;

/// What a connection past the cap reads before it is closed (plain HTTP only).
const REFUSED_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: 32\r\nConnection: close\r\n\r\n{\"error\":\"too many connections\"}";

/// What the handlers read.
pub struct AppState {
    /// Counts and runs.
    pub shared: Arc<Shared>,
    /// Readiness and stream condition.
    pub status: Arc<Status>,
    /// The metrics registry.
    pub metrics: Metrics,
    /// "Now", for ages.
    pub clock: Clock,
    /// Required credentials (`None`: open).
    pub auth: Option<Authenticator>,
    /// Where refused requests are counted.
    pub stats: Arc<HttpStats>,
    /// How long a request body may take (the header timeout).
    pub body_timeout: Duration,
}

/// How [`serve`] treats connections.
pub struct ServeConfig {
    /// Deadline for request headers, which also bounds the TLS handshake and idle
    /// keep-alive connections (hyper restarts it whenever a connection waits for a request).
    pub header_timeout: Duration,
    /// The connection cap (and the counts).
    pub cap: ConnectionCap,
    /// TLS, when set.
    pub tls: Option<TlsAcceptor>,
}

impl Default for ServeConfig {
    /// Plain HTTP, the default header timeout and connection cap.
    fn default() -> ServeConfig {
        ServeConfig {
            header_timeout: HEADER_READ_TIMEOUT,
            cap: ConnectionCap::new(
                DEFAULT_MAX_CONNECTIONS as usize,
                Arc::new(HttpStats::default()),
            ),
            tls: None,
        }
    }
}

/// Serves the exporter's API on `listener` until `shutdown`.
pub async fn serve_api(
    listener: TcpListener,
    config: ServeConfig,
    state: Arc<AppState>,
    shutdown: CancellationToken,
) -> io::Result<()> {
    serve(
        listener,
        config,
        move |req| {
            let state = state.clone();
            async move { handle_api(&state, req).await }
        },
        shutdown,
    )
    .await
}

/// Refuses oversized bodies and unauthenticated requests (all but `/healthz`), then routes.
async fn handle_api(state: &AppState, req: Request<Incoming>) -> HttpResponse {
    let (parts, body) = req.into_parts();
    if let Err(e) = read_body(body, MAX_API_BODY, state.body_timeout).await {
        if let Some(reason) = e.rejection() {
            state.stats.reject(reason);
        }
        return e.response();
    }
    let req = Request::from_parts(parts, ());
    if let Some(auth) = &state.auth {
        if req.uri().path() != "/healthz" {
            if let Err(denied) = auth.check(req.headers()).await {
                state.stats.reject(Rejection::Unauthorized);
                return auth.challenge(denied);
            }
        }
    }
    route(state, &req)
}

/// Serves HTTP/1.1 (with upgrades) on `listener` with `handler` until `shutdown` is
/// cancelled, then drains open connections (with a deadline) and returns. Connections past
/// the cap are closed at once; the TLS handshake (if any) and request headers must arrive
/// within the header timeout.
pub async fn serve<H, F>(
    listener: TcpListener,
    config: ServeConfig,
    handler: H,
    shutdown: CancellationToken,
) -> io::Result<()>
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = HttpResponse> + Send + 'static,
{
    let connections = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    warn!(error = %e, "Accept failed; continuing.");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(slot) = config.cap.admit() else {
            if config.tls.is_none() {
                // Best effort on a fresh socket; never waits.
                let _ = stream.try_write(REFUSED_RESPONSE);
            }
            continue;
        };
        let handler = handler.clone();
        let shutdown = shutdown.clone();
        let tls = config.tls.clone();
        let header_timeout = config.header_timeout;
        connections.spawn(async move {
            let _slot = slot;
            let Some(acceptor) = tls else {
                return serve_connection(stream, peer, handler, header_timeout, shutdown).await;
            };
            let handshake = tokio::select! {
                () = shutdown.cancelled() => return,
                handshake = tokio::time::timeout(header_timeout, acceptor.accept(stream)) => handshake,
            };
            match handshake {
                Ok(Ok(stream)) => {
                    serve_connection(stream, peer, handler, header_timeout, shutdown).await;
                }
                Ok(Err(e)) => debug!(error = %e, %peer, "TLS handshake failed."),
                Err(_) => debug!(%peer, "TLS handshake timed out."),
            }
        });
    }
    connections.close();
    if tokio::time::timeout(DRAIN_DEADLINE, connections.wait())
        .await
        .is_err()
    {
        warn!(
            open = connections.len(),
            "HTTP connections still open at the drain deadline; closing them."
        );
    }
    info!("HTTP server stopped.");
    Ok(())
}

/// Serves one connection until it ends; on `shutdown`, finishes the request in flight.
async fn serve_connection<IO, H, F>(
    io: IO,
    peer: SocketAddr,
    handler: H,
    header_timeout: Duration,
    shutdown: CancellationToken,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = HttpResponse> + Send + 'static,
{
    let service = service_fn(move |req| {
        let response = handler(req);
        async move { Ok::<_, Infallible>(response.await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        debug!(error = %e, %peer, "HTTP connection ended with an error.");
    }
}

/// A response with a complete body.
pub type HttpResponse = Response<Full<Bytes>>;

fn route(state: &AppState, req: &Request<()>) -> HttpResponse {
    let path = req.uri().path();
    let query = req.uri().query().unwrap_or("");
    let known = matches!(
        path,
        "/" | "/metrics" | "/healthz" | "/readyz" | "/api/v1/counts" | "/api/v1/resources"
    ) || path.starts_with("/api/v1/resources/");
    if !known {
        return error(StatusCode::NOT_FOUND, &format!("no such path: {path}"));
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut response = error(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("method {} not allowed on {path}", req.method()),
        );
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match path {
        "/" => respond(
            StatusCode::OK,
            "text/html; charset=utf-8",
            LANDING_PAGE.to_owned(),
        ),
        "/metrics" => {
            let accept = req.headers().get(ACCEPT).and_then(|v| v.to_str().ok());
            let format = Format::negotiate(accept);
            let body = state.metrics.render(format);
            respond(StatusCode::OK, format.content_type(), body)
        }
        "/healthz" => json(StatusCode::OK, &serde_json::json!({"status": "ok"})),
        "/readyz" => match state.status.readiness() {
            Ok(()) => json(StatusCode::OK, &serde_json::json!({"status": "ready"})),
            Err(reason) => error(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("not ready: {reason}"),
            ),
        },
        "/api/v1/counts" => json(
            StatusCode::OK,
            &CountsReport::build(&state.shared, &state.status),
        ),
        "/api/v1/resources" => {
            let params = match parse_query(query).and_then(|p| ResourceQuery::from_params(&p)) {
                Ok(params) => params,
                Err(message) => return error(StatusCode::BAD_REQUEST, &message),
            };
            json(
                StatusCode::OK,
                &ResourceList::build(&state.shared, &params, (state.clock)()),
            )
        }
        _ => {
            let raw = &path["/api/v1/resources/".len()..];
            let Some(id) = crate::query::percent_decode(raw) else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "resource id is not valid percent-encoded UTF-8",
                );
            };
            match ResourceView::find(&state.shared, &id, (state.clock)()) {
                Some(view) => json(StatusCode::OK, &view),
                None => error(StatusCode::NOT_FOUND, &format!("unknown resource: {id}")),
            }
        }
    }
}

/// A response with a body and content type.
pub fn respond(status: StatusCode, content_type: &'static str, body: String) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A JSON response.
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> HttpResponse {
    match serde_json::to_string(value) {
        Ok(body) => respond(status, "application/json", body),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot encode response: {e}"),
        ),
    }
}

/// A JSON error response: `{"error": message}`.
pub fn error(status: StatusCode, message: &str) -> HttpResponse {
    let body = serde_json::json!({ "error": message }).to_string();
    respond(status, "application/json", body)
}

const LANDING_PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>prefect-events-exporter</title></head>
<body>
<h1>prefect-events-exporter</h1>
<p>Exact, real-time counts of Prefect flow-run and task-run states from Prefect's events stream.</p>
<ul>
<li><a href="/metrics">/metrics</a>: Prometheus text (OpenMetrics with <code>Accept: application/openmetrics-text</code>)</li>
<li><a href="/api/v1/counts">/api/v1/counts</a>: counts by state as JSON</li>
<li><a href="/api/v1/resources?kind=flow-run&amp;state_type=PENDING&amp;limit=100">/api/v1/resources</a>: tracked runs, oldest first (<code>kind</code>, <code>state_type</code>, <code>state_name</code>, <code>older_than</code>, <code>limit</code>)</li>
<li><code>/api/v1/resources/{prefect.resource.id}</code>: one run</li>
<li><a href="/healthz">/healthz</a>: liveness; <a href="/readyz">/readyz</a>: readiness</li>
</ul>
</body></html>
"#;
