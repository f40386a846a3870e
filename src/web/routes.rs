//! The exporter's API: `/metrics`, `/api/v1/*` (the event stream in [`super::stream`]),
//! `/healthz`, `/readyz` and the live page ([`super::page`]).
//!
//! Handlers only read shared state (copying aggregates under a short lock), so a scrape never
//! stalls ingestion. Oversized bodies and unauthenticated requests (all but `/healthz`) are
//! refused before routing.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::{HeaderValue, ACCEPT, ALLOW};
use hyper::{Method, Request, StatusCode};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::expose::collect::Metrics;
use crate::expose::exposition::Format;
use crate::expose::history::HistoryReport;
use crate::expose::report::CountsReport;
use crate::expose::resources::{ResourceList, ResourceView};
use crate::model::time::Clock;
use crate::state::status::Status;
use crate::state::Shared;
use crate::web::auth::Authenticator;
use crate::web::limits::{read_body, Rejection};
use crate::web::metrics::HttpStats;
use crate::web::page;
use crate::web::query::{parse_query, percent_decode, resource_query, stream_query};
use crate::web::response::{echo, error, json, respond, HttpResponse};
use crate::web::server::{serve, ServeConfig};
use crate::web::stream::Streams;

/// Largest request body the API accepts: it only serves GET and HEAD.
pub const MAX_API_BODY: usize = 64 * 1024;

/// What the handlers read.
pub struct ApiState {
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
    /// `/api/v1/stream`.
    pub streams: Arc<Streams>,
}

/// Serves the exporter's API on `listener` until `shutdown`.
pub async fn serve_api(
    listener: TcpListener,
    config: ServeConfig,
    state: Arc<ApiState>,
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
async fn handle_api(state: &Arc<ApiState>, req: Request<Incoming>) -> HttpResponse {
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

fn route(state: &Arc<ApiState>, req: &Request<()>) -> HttpResponse {
    let path = req.uri().path();
    let query = req.uri().query().unwrap_or("");
    let known = page::file(path).is_some()
        || matches!(
            path,
            "/metrics"
                | "/healthz"
                | "/readyz"
                | "/api/v1/counts"
                | "/api/v1/resources"
                | "/api/v1/stream"
                | "/api/v1/history"
        )
        || path.starts_with("/api/v1/resources/");
    if !known {
        return error(
            StatusCode::NOT_FOUND,
            &format!("no such path: {}", echo(path)),
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut response = error(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!(
                "method {} not allowed on {}",
                echo(req.method().as_str()),
                echo(path)
            ),
        );
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    if let Some((content_type, content)) = page::file(path) {
        return respond(StatusCode::OK, content_type, content.to_owned());
    }
    match path {
        "/metrics" => {
            let accept = req.headers().get(ACCEPT).and_then(|v| v.to_str().ok());
            let format = Format::negotiate(accept);
            let body = state.metrics.render(format);
            respond(StatusCode::OK, format.content_type(), body)
        }
        "/healthz" => json(StatusCode::OK, &serde_json::json!({"status": "ok"})),
        "/readyz" => match state.status.unready_reason() {
            None => json(StatusCode::OK, &serde_json::json!({"status": "ready"})),
            Some(reason) => error(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("not ready: {reason}"),
            ),
        },
        "/api/v1/counts" => json(
            StatusCode::OK,
            &CountsReport::build(&state.shared, &state.status),
        ),
        "/api/v1/history" => json(StatusCode::OK, &HistoryReport::build(&state.shared)),
        "/api/v1/stream" => match parse_query(query).and_then(|p| stream_query(&p)) {
            Ok(filter) => state
                .streams
                .open(filter, req.headers(), req.method() == Method::HEAD),
            Err(e) => error(StatusCode::BAD_REQUEST, &e.to_string()),
        },
        "/api/v1/resources" => {
            let params = match parse_query(query).and_then(|p| resource_query(&p)) {
                Ok(params) => params,
                Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
            };
            json(
                StatusCode::OK,
                &ResourceList::build(&state.shared, &params, (state.clock)()),
            )
        }
        _ => {
            let raw = &path["/api/v1/resources/".len()..];
            let Some(id) = percent_decode(raw) else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "resource id is not valid percent-encoded UTF-8",
                );
            };
            match ResourceView::find(&state.shared, &id, (state.clock)()) {
                Some(view) => json(StatusCode::OK, &view),
                None => error(
                    StatusCode::NOT_FOUND,
                    &format!("unknown resource: {}", echo(&id)),
                ),
            }
        }
    }
}
