//! Prefect's events websocket (`/api/events/out`) as a source of raw frames.
//!
//! The handshake of `PREFECT.md`: subprotocol `prefect`, an `auth` message (the raw auth
//! string or API key, or `null`) plus an `Authorization` header for proxies, wait for
//! `auth_success`, then a filter with `occurred.since` = the resume point and a far-future
//! `until`. The reader forwards text frames and does nothing else, so the server never sees a
//! slow subscriber; tungstenite answers pings as the socket is polled.
//!
//! [`run`] reconnects forever with capped, jittered exponential backoff (reset after a healthy
//! period), resuming from the newest `occurred` applied minus an overlap; dedup absorbs the
//! overlap. An authentication failure is logged once and retried slowly.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use serde_json::json;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::{
    HeaderValue, AUTHORIZATION, SEC_WEBSOCKET_PROTOCOL,
};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Bytes, Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::model::event::MAX_FRAME_BYTES;
use crate::model::secret::Credentials;
use crate::model::time::{format_rfc3339, now_micros, Micros, SECOND};
use crate::model::Error;
use crate::source::{StreamError, StreamObserver};

/// How far before the resume point a reconnect asks the server to replay.
pub const RESUME_OVERLAP: Micros = 60 * SECOND;
/// The server's backfill horizon (`PREFECT_SERVER_EVENTS_MAXIMUM_WEBSOCKET_BACKFILL`).
pub const SERVER_BACKFILL: Micros = 15 * 60 * SECOND;
/// Time allowed for connect + auth.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
/// A connection that lived this long resets the backoff.
const HEALTHY_AFTER: Duration = Duration::from_secs(60);
/// Backoff bounds for ordinary failures.
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Retry period after an authentication failure.
const AUTH_RETRY: Duration = Duration::from_secs(60);

/// A connected, subscribed stream.
pub type EventSocket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Where and how to subscribe.
#[derive(Clone, Debug)]
pub struct WsConfig {
    /// `PREFECT_API_URL` (http/https).
    pub api_url: String,
    /// Credentials for the `auth` message and header.
    pub credentials: Credentials,
    /// Event-name prefixes to subscribe to.
    pub prefixes: Vec<&'static str>,
}

/// `ws(s)://…/events/out` for an API URL, or what is wrong with it.
pub fn events_url(api_url: &str) -> Result<String, Error> {
    let bad = |reason| Error::Url {
        url: api_url.to_owned(),
        reason,
    };
    let trimmed = api_url.trim_end_matches('/');
    let rest = if let Some(rest) = trimmed.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = trimmed.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        return Err(bad("is not an http:// or https:// URL"));
    };
    let host = rest
        .split("://")
        .nth(1)
        .unwrap_or("")
        .split('/')
        .next()
        .unwrap_or("");
    if host.is_empty() {
        return Err(bad("has no host"));
    }
    Ok(format!("{rest}/events/out"))
}

/// Connects, authenticates and subscribes with `occurred` in `[since, until]`.
pub async fn subscribe(
    config: &WsConfig,
    since: Micros,
    until: Micros,
) -> Result<EventSocket, StreamError> {
    tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(config, since, until))
        .await
        .unwrap_or_else(|_| Err(StreamError::Connect("handshake timed out".to_owned())))
}

async fn handshake(
    config: &WsConfig,
    since: Micros,
    until: Micros,
) -> Result<EventSocket, StreamError> {
    let url = events_url(&config.api_url).map_err(|e| StreamError::Connect(e.to_string()))?;
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| StreamError::Connect(e.to_string()))?;
    request
        .headers_mut()
        .insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("prefect"));
    if let Some(value) = config.credentials.authorization() {
        let mut value = HeaderValue::from_str(&value).map_err(|_| {
            StreamError::Connect("credentials are not a valid header value".to_owned())
        })?;
        value.set_sensitive(true);
        request.headers_mut().insert(AUTHORIZATION, value);
    }
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES));
    let (mut socket, _) =
        tokio_tungstenite::connect_async_with_config(request, Some(ws_config), true)
            .await
            .map_err(|e| match e {
                WsError::Http(response) if matches!(response.status().as_u16(), 401 | 403) => {
                    StreamError::Auth(format!(
                        "HTTP {} on the websocket upgrade",
                        response.status().as_u16()
                    ))
                }
                WsError::Http(response) => StreamError::Connect(format!(
                    "HTTP {} on the websocket upgrade",
                    response.status().as_u16()
                )),
                other => StreamError::Connect(other.to_string()),
            })?;

    let auth = json!({ "type": "auth", "token": config.credentials.ws_token() });
    send_text(&mut socket, auth.to_string()).await?;
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) => {
                let value: serde_json::Value =
                    serde_json::from_str(text.as_str()).unwrap_or_default();
                match value["type"].as_str() {
                    Some("auth_success") => break,
                    Some("auth_failure") => {
                        let reason = value["reason"]
                            .as_str()
                            .unwrap_or("auth_failure")
                            .to_owned();
                        return Err(StreamError::Auth(reason));
                    }
                    _ => {
                        return Err(StreamError::Protocol(format!(
                            "expected auth_success, got {}",
                            truncate(text.as_str())
                        )))
                    }
                }
            }
            Some(Ok(Message::Close(frame))) => return Err(close_error(frame, true)),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(StreamError::Lost(e.to_string())),
            None => return Err(StreamError::Lost("closed during the handshake".to_owned())),
        }
    }
    let filter = json!({
        "type": "filter",
        "filter": {
            "occurred": { "since": format_rfc3339(since), "until": format_rfc3339(until) },
            "event": { "prefix": config.prefixes },
        },
        "backfill": true,
    });
    send_text(&mut socket, filter.to_string()).await?;
    Ok(socket)
}

async fn send_text(socket: &mut EventSocket, text: String) -> Result<(), StreamError> {
    socket
        .send(Message::text(text))
        .await
        .map_err(|e| StreamError::Lost(e.to_string()))
}

fn close_error(
    frame: Option<tokio_tungstenite::tungstenite::protocol::CloseFrame>,
    handshake: bool,
) -> StreamError {
    let (code, reason) = frame
        .map(|f| (u16::from(f.code), f.reason.as_str().to_owned()))
        .unwrap_or((u16::from(CloseCode::Status), String::new()));
    if handshake && code == 1008 {
        return StreamError::Auth(if reason.is_empty() {
            "closed with 1008".to_owned()
        } else {
            reason
        });
    }
    StreamError::Closed { code, reason }
}

fn truncate(text: &str) -> String {
    text.chars().take(120).collect()
}

/// Reads one subscribed socket, forwarding text frames to `frames`, until it ends or
/// `shutdown`.
async fn pump(
    socket: &mut EventSocket,
    frames: &mpsc::Sender<Bytes>,
    shutdown: &CancellationToken,
) -> Result<(), StreamError> {
    loop {
        let message = tokio::select! {
            () = shutdown.cancelled() => {
                let _ = socket.close(None).await;
                return Ok(());
            }
            message = socket.next() => message,
        };
        match message {
            Some(Ok(Message::Text(text))) => {
                if frames.send(Bytes::from(text)).await.is_err() {
                    return Ok(());
                }
            }
            Some(Ok(Message::Binary(bytes))) => {
                if frames.send(bytes).await.is_err() {
                    return Ok(());
                }
            }
            Some(Ok(Message::Close(frame))) => return Err(close_error(frame, false)),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(StreamError::Lost(e.to_string())),
            None => return Err(StreamError::Lost("stream ended".to_owned())),
        }
    }
}

/// Subscribes, forwards frames, and reconnects until `shutdown`. `start` is the resume point
/// used before any event has been applied.
pub async fn run(
    config: WsConfig,
    start: Micros,
    frames: mpsc::Sender<Bytes>,
    observer: &dyn StreamObserver,
    shutdown: CancellationToken,
) {
    let mut backoff = BACKOFF_MIN;
    let mut last_auth_error: Option<String> = None;
    let mut first = true;
    while !shutdown.is_cancelled() {
        let now = now_micros();
        let since = observer.newest_applied().unwrap_or(start) - RESUME_OVERLAP;
        if !first && now - since > SERVER_BACKFILL + RESUME_OVERLAP {
            warn!(gap_seconds = (now - since) / SECOND, "The stream was down longer than the server's 15-minute backfill; the gap is closed by verification and reconciliation.");
            observer.backfill_gap(now - since);
        }
        first = false;
        let until = now + 365 * 24 * 3600 * SECOND;
        let started = Instant::now();
        let outcome = match subscribe(&config, since, until).await {
            Ok(mut socket) => {
                info!(since = %format_rfc3339(since), "Subscribed to the events stream.");
                last_auth_error = None;
                observer.connected();
                let result = pump(&mut socket, &frames, &shutdown).await;
                if started.elapsed() >= HEALTHY_AFTER {
                    backoff = BACKOFF_MIN;
                }
                result.map(|()| true).map_err(|e| (e, true))
            }
            Err(e) => Err((e, false)),
        };
        let delay = match outcome {
            Ok(_) => break,
            Err((error, was_connected)) => {
                observer.disconnected(&error, was_connected);
                if let StreamError::Auth(reason) = &error {
                    if last_auth_error.as_deref() != Some(reason.as_str()) {
                        error!(error = %error, retry_in_seconds = AUTH_RETRY.as_secs(), "The Prefect server refused the credentials.");
                        last_auth_error = Some(reason.clone());
                    }
                    AUTH_RETRY
                } else {
                    warn!(error = %error, retry_in_ms = backoff.as_millis() as u64, "Events stream ended; reconnecting.");
                    let jittered = backoff.mul_f64(rand::rng().random_range(0.5..1.0));
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    jittered
                }
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_url_from_api_url() {
        assert_eq!(
            events_url("http://127.0.0.1:4200/api").unwrap(),
            "ws://127.0.0.1:4200/api/events/out"
        );
        assert_eq!(
            events_url("https://api.prefect.cloud/api/accounts/a/workspaces/w/").unwrap(),
            "wss://api.prefect.cloud/api/accounts/a/workspaces/w/events/out"
        );
        assert!(events_url("ftp://x/api").is_err());
        assert!(events_url("http:///api").is_err());
    }

    #[test]
    fn close_codes_map_to_reasons() {
        let restart = StreamError::Closed {
            code: 1012,
            reason: String::new(),
        };
        assert_eq!(restart.metric_label(), "server_restart");
        assert_eq!(restart.to_string(), "closed by server (code 1012)");
    }
}
