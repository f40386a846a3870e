//! `serve-replay`: a Prefect events server made of a recorded file, for testing any Prefect
//! events consumer without Prefect. The websocket speaks Prefect's exact handshake
//! ([`ws`]), the REST endpoints answer from the events released so far ([`rest`]), the file
//! plays as a timeline ([`timeline`]), and faults can be injected on purpose.

pub(crate) mod filter;
pub(crate) mod rest;
pub(crate) mod timeline;
pub(crate) mod ws;

use std::sync::Arc;

use base64::Engine;
use hyper::body::{Bytes, Incoming};
use hyper::header::{
    HeaderValue, CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL,
    UPGRADE,
};
use hyper::{Request, Response, StatusCode};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::model::secret::Secret;
use crate::web::limits::read_body;
use crate::web::response::{error, Body, HttpResponse};
use crate::web::server::{bind, serve, ServeConfig, DEFAULT_HEADER_TIMEOUT};
use timeline::Store;
pub use timeline::{Pace, PlayConfig};
pub use ws::Faults;
use ws::WsServerConfig;

/// What `serve-replay` serves, and how.
#[derive(Clone, Debug)]
pub struct ServeReplaySettings {
    /// Recorded JSONL files, played in order as one timeline.
    pub files: Vec<std::path::PathBuf>,
    /// Where to listen.
    pub listen: std::net::SocketAddr,
    /// How events are released.
    pub play: PlayConfig,
    /// The auth string clients must present, like `PREFECT_SERVER_API_AUTH_STRING`.
    pub auth_string: Option<Secret>,
    /// Faults to inject.
    pub faults: Faults,
}

/// Why `serve-replay` could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The recordings cannot be played.
    #[error("FILE: {0}")]
    Recording(#[from] timeline::LoadError),
    /// The HTTP server could not start or failed.
    #[error(transparent)]
    Web(#[from] crate::web::Error),
}

/// Largest REST request body accepted.
const MAX_BODY: usize = 1024 * 1024;

struct FakeServer {
    store: Arc<Store>,
    ws: WsServerConfig,
    basic: Option<String>,
    base_url: String,
    shutdown: CancellationToken,
}

fn offers_prefect(req: &Request<Incoming>) -> bool {
    req.headers()
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == "prefect")
}

fn empty(status: StatusCode) -> HttpResponse {
    let mut response = Response::new(Body::full(Bytes::new()));
    *response.status_mut() = status;
    response
}

fn upgrade(server: &Arc<FakeServer>, req: Request<Incoming>) -> HttpResponse {
    let prefect = offers_prefect(&req);
    if !prefect && server.ws.auth_string.is_some() {
        return empty(StatusCode::FORBIDDEN);
    }
    let Some(key) = req.headers().get(SEC_WEBSOCKET_KEY) else {
        return error(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key");
    };
    let accept = derive_accept_key(key.as_bytes());
    let store = server.store.clone();
    let config = server.ws.clone();
    let shutdown = server.shutdown.clone();
    tokio::spawn(async move {
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => ws::connection(upgraded, prefect, store, config, shutdown).await,
            Err(e) => warn!(error = %e, "Websocket upgrade failed."),
        }
    });
    let mut response = empty(StatusCode::SWITCHING_PROTOCOLS);
    let headers = response.headers_mut();
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(value) = HeaderValue::from_str(&accept) {
        headers.insert(SEC_WEBSOCKET_ACCEPT, value);
    }
    if prefect {
        headers.insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("prefect"));
    }
    response
}

async fn handle(server: Arc<FakeServer>, req: Request<Incoming>) -> HttpResponse {
    let path = req.uri().path().to_owned();
    let is_upgrade = req
        .headers()
        .get(UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if path == "/api/events/out" && is_upgrade {
        return upgrade(&server, req);
    }
    if let Some(expected) = &server.basic {
        let given = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if path != "/api/health" && given != Some(expected.as_str()) {
            return error(StatusCode::UNAUTHORIZED, "Unauthorized");
        }
    }
    let method = req.method().as_str().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let body = match read_body(req.into_body(), MAX_BODY, DEFAULT_HEADER_TIMEOUT).await {
        Ok(body) => body,
        Err(e) => return e.response(),
    };
    rest::handle(
        &server.store,
        &server.base_url,
        &method,
        &path,
        &query,
        &body,
    )
    .unwrap_or_else(|| error(StatusCode::NOT_FOUND, "Not Found"))
}

/// `serve-replay FILE... --listen ADDR`.
pub async fn run(settings: ServeReplaySettings, shutdown: CancellationToken) -> Result<(), Error> {
    let templates = timeline::load(&settings.files)?;
    let (listener, local) = bind(settings.listen).await?;
    let auth_string = settings
        .auth_string
        .as_ref()
        .map(|s| s.expose().to_owned())
        .filter(|s| !s.is_empty());
    let server = Arc::new(FakeServer {
        store: Arc::new(Store::default()),
        basic: auth_string.as_ref().map(|a| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(a)
            )
        }),
        ws: WsServerConfig {
            auth_string,
            faults: settings.faults.clone(),
        },
        base_url: format!("http://{local}"),
        shutdown: shutdown.clone(),
    });
    info!(listen = %local, events = templates.len(), api_url = %format!("http://{local}/api"), "Serving recorded events as a Prefect server.");
    let player = tokio::spawn(timeline::play(
        templates,
        server.store.clone(),
        settings.play.clone(),
        shutdown.clone(),
    ));
    let handler_server = server.clone();
    let served = serve(
        listener,
        ServeConfig::default(),
        move |req| handle(handler_server.clone(), req),
        shutdown.clone(),
    )
    .await;
    player.abort();
    served.map_err(|source| crate::web::Error::Serve {
        addr: settings.listen.to_string(),
        source,
    })?;
    info!("Stopped.");
    Ok(())
}
