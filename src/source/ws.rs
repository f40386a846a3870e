//! Prefect's events websocket (`/api/events/out`) as a source of raw frames.
//!
//! The handshake of `PREFECT.md`: subprotocol `prefect`, an `auth` message (the raw auth
//! string or API key, or `null`) plus an `Authorization` header for proxies, wait for
//! `auth_success`, then a filter with `occurred.since` = the resume point and a far-future
//! `until`. The reader forwards frames and does nothing else, so the server never sees a
//! slow subscriber; tungstenite answers pings as the socket is polled.
//!
//! What the server may do to the connection is bounded: the frame guard under the
//! protocol ([`crate::source::frame_guard`]) turns a message over [`MAX_FRAME_BYTES`] into an `oversize` rejection and hands
//! text that is not UTF-8 to the decoder (`malformed_json`), so neither ends the stream;
//! what the socket may queue for writing (pongs included) is capped; more control frames
//! than any keepalive needs ([`CONTROL_BUDGET`] within [`CONTROL_WINDOW`]) end the connection;
//! and a connection silent for the idle timeout (no event, no ping; Prefect pings every 20 s)
//! is taken for dead. Text the server supplies (close and auth-failure reasons) is escaped.
//!
//! [`run`] reconnects forever with capped, jittered exponential backoff (reset after a healthy
//! period), resuming from the newest `occurred` applied minus an overlap; dedup absorbs the
//! overlap. An authentication failure is logged once and retried slowly. Every wait ends at
//! shutdown.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::{
    HeaderValue, AUTHORIZATION, SEC_WEBSOCKET_PROTOCOL,
};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Bytes, Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::model::event::MAX_FRAME_BYTES;
use crate::model::reject::RejectReason;
use crate::model::secret::{display_url, Credentials};
use crate::model::time::{format_rfc3339, now_micros, Micros, SECOND};
use crate::model::untrusted::{escape, SHOWN_CHARS};
use crate::model::Error;
use crate::source::connect::{self, Guarded};
use crate::source::frame_guard::parse_marker;
use crate::source::{Frame, StreamError, StreamObserver};

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
/// Most control frames (pings, pongs) accepted within [`CONTROL_WINDOW`]; Prefect sends one
/// ping per 20 s.
pub const CONTROL_BUDGET: u32 = 100;
/// The window of [`CONTROL_BUDGET`].
pub const CONTROL_WINDOW: Duration = Duration::from_secs(10);
/// Most bytes the socket may queue for writing (our two messages, pongs); past it tungstenite
/// keeps only the newest pong.
const WRITE_QUEUE_MAX: usize = 64 * 1024;
/// How long a close at shutdown may take (a peer that does not read cannot hold it up).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// A connected, subscribed stream.
pub type EventSocket = WebSocketStream<Guarded>;

/// A subscribed stream and the nonce its guard's markers carry.
pub struct Subscription {
    socket: EventSocket,
    nonce: [u8; 8],
}

/// Where and how to subscribe.
#[derive(Clone, Debug)]
pub struct WsConfig {
    /// `PREFECT_API_URL` (http/https).
    pub api_url: String,
    /// Credentials for the `auth` message and header.
    pub credentials: Credentials,
    /// Event-name prefixes to subscribe to.
    pub prefixes: Vec<&'static str>,
    /// A connection silent this long (no frame, no ping) is dropped and reconnected.
    pub idle_timeout: Duration,
}

/// `ws(s)://…/events/out` for an API URL, or what is wrong with it.
pub fn events_url(api_url: &str) -> Result<String, Error> {
    let bad = |reason| Error::Url {
        url: display_url(api_url),
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
) -> Result<Subscription, StreamError> {
    tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(config, since, until))
        .await
        .unwrap_or_else(|_| {
            Err(StreamError::Connect(format!(
                "{}: no answer to the websocket handshake within {} s",
                display_url(&config.api_url),
                HANDSHAKE_TIMEOUT.as_secs()
            )))
        })
}

async fn handshake(
    config: &WsConfig,
    since: Micros,
    until: Micros,
) -> Result<Subscription, StreamError> {
    let url = events_url(&config.api_url).map_err(|e| StreamError::Connect(e.to_string()))?;
    let shown = display_url(&url);
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| StreamError::Connect(format!("{shown}: {e}")))?;
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
    let nonce: [u8; 8] = rand::rng().random();
    let stream = connect::open(request.uri(), &shown, MAX_FRAME_BYTES, nonce).await?;
    // The guard keeps messages within MAX_FRAME_BYTES; the protocol's own limits are a
    // backstop. Writes are flushed at once and queue at most WRITE_QUEUE_MAX bytes.
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES))
        .write_buffer_size(0)
        .max_write_buffer_size(WRITE_QUEUE_MAX);
    let (socket, _) = tokio_tungstenite::client_async_with_config(request, stream, Some(ws_config))
        .await
        .map_err(|e| match e {
            WsError::Http(response) if matches!(response.status().as_u16(), 401 | 403) => {
                StreamError::Auth(format!(
                    "HTTP {} on the websocket upgrade",
                    response.status().as_u16()
                ))
            }
            WsError::Http(response) => StreamError::Connect(format!(
                "{shown}: HTTP {} on the websocket upgrade",
                response.status().as_u16()
            )),
            other => StreamError::Connect(format!(
                "{shown}: {}",
                escape(&other.to_string(), SHOWN_CHARS)
            )),
        })?;
    let mut subscription = Subscription { socket, nonce };
    authenticate(&mut subscription.socket, &config.credentials).await?;
    let filter = json!({
        "type": "filter",
        "filter": {
            "occurred": { "since": format_rfc3339(since), "until": format_rfc3339(until) },
            "event": { "prefix": config.prefixes },
        },
        "backfill": true,
    });
    send_text(&mut subscription.socket, filter.to_string()).await?;
    Ok(subscription)
}

/// Sends the `auth` message and waits for `auth_success`.
async fn authenticate(
    socket: &mut EventSocket,
    credentials: &Credentials,
) -> Result<(), StreamError> {
    let auth = json!({ "type": "auth", "token": credentials.ws_token() });
    send_text(socket, auth.to_string()).await?;
    loop {
        let bytes = match socket.next().await {
            Some(Ok(Message::Binary(bytes))) => bytes,
            Some(Ok(Message::Text(text))) => Bytes::from(text),
            Some(Ok(Message::Close(frame))) => return Err(close_error(frame, true)),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(StreamError::Lost(escape(&e.to_string(), SHOWN_CHARS))),
            None => return Err(StreamError::Lost("closed during the handshake".to_owned())),
        };
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        return match value["type"].as_str() {
            Some("auth_success") => Ok(()),
            Some("auth_failure") => Err(StreamError::Auth(escape(
                value["reason"].as_str().unwrap_or("auth_failure"),
                SHOWN_CHARS,
            ))),
            _ => Err(StreamError::Protocol(format!(
                "expected auth_success, got {}",
                escape(&String::from_utf8_lossy(&bytes), 120)
            ))),
        };
    }
}

async fn send_text(socket: &mut EventSocket, text: String) -> Result<(), StreamError> {
    socket
        .send(Message::text(text))
        .await
        .map_err(|e| StreamError::Lost(escape(&e.to_string(), SHOWN_CHARS)))
}

fn close_error(
    frame: Option<tokio_tungstenite::tungstenite::protocol::CloseFrame>,
    handshake: bool,
) -> StreamError {
    let (code, reason) = frame
        .map(|f| (u16::from(f.code), escape(f.reason.as_str(), SHOWN_CHARS)))
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

/// Counts control frames; too many within the window is a flood.
struct ControlBudget {
    window_start: Instant,
    frames: u32,
}

impl ControlBudget {
    fn new() -> ControlBudget {
        ControlBudget {
            window_start: Instant::now(),
            frames: 0,
        }
    }

    fn count(&mut self) -> Result<(), StreamError> {
        let now = Instant::now();
        if now.duration_since(self.window_start) > CONTROL_WINDOW {
            self.window_start = now;
            self.frames = 0;
        }
        self.frames += 1;
        if self.frames > CONTROL_BUDGET {
            return Err(StreamError::Flood {
                frames: self.frames,
                within: CONTROL_WINDOW,
            });
        }
        Ok(())
    }
}

/// Reads one subscribed socket, forwarding frames to `frames`, until it ends, stays silent
/// for `idle`, or `shutdown`.
async fn pump(
    subscription: &mut Subscription,
    frames: &mpsc::Sender<Frame>,
    idle: Duration,
    shutdown: &CancellationToken,
) -> Result<(), StreamError> {
    let Subscription { socket, nonce } = subscription;
    let mut last_message = Instant::now();
    let deadline = tokio::time::sleep(idle);
    tokio::pin!(deadline);
    let mut control = ControlBudget::new();
    let mut drop_next = false;
    loop {
        let message = tokio::select! {
            biased;
            () = shutdown.cancelled() => {
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, socket.close(None)).await;
                return Ok(());
            }
            message = socket.next() => message,
            () = &mut deadline => {
                if last_message.elapsed() >= idle {
                    return Err(StreamError::Idle(idle));
                }
                deadline.as_mut().reset((last_message + idle).into());
                continue;
            }
        };
        last_message = Instant::now();
        let frame = match message {
            Some(Ok(Message::Binary(bytes))) if !std::mem::take(&mut drop_next) => {
                Frame::Data(bytes)
            }
            Some(Ok(Message::Text(text))) if !std::mem::take(&mut drop_next) => {
                Frame::Data(Bytes::from(text))
            }
            Some(Ok(Message::Binary(_) | Message::Text(_))) => continue,
            Some(Ok(Message::Pong(payload))) => match parse_marker(&payload, *nonce) {
                Some(skipped) => {
                    drop_next = skipped.truncated_follows;
                    Frame::Rejected {
                        reason: RejectReason::Oversize,
                        bytes: skipped.bytes,
                    }
                }
                None => {
                    control.count()?;
                    continue;
                }
            },
            Some(Ok(Message::Ping(_))) => {
                control.count()?;
                continue;
            }
            Some(Ok(Message::Close(frame))) => return Err(close_error(frame, false)),
            Some(Ok(Message::Frame(_))) => continue,
            Some(Err(e)) => return Err(StreamError::Lost(escape(&e.to_string(), SHOWN_CHARS))),
            None => return Err(StreamError::Lost("stream ended".to_owned())),
        };
        if frames.send(frame).await.is_err() {
            return Ok(());
        }
    }
}

/// Subscribes, forwards frames, and reconnects until `shutdown`. `start` is the resume point
/// used before any event has been applied.
pub async fn run(
    config: WsConfig,
    start: Micros,
    frames: mpsc::Sender<Frame>,
    observer: &dyn StreamObserver,
    shutdown: CancellationToken,
) {
    let mut backoff = BACKOFF_MIN;
    let mut last_error: Option<String> = None;
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
        let subscribed = tokio::select! {
            () = shutdown.cancelled() => break,
            subscribed = subscribe(&config, since, until) => subscribed,
        };
        let outcome = match subscribed {
            Ok(mut subscription) => {
                info!(since = %format_rfc3339(since), "Subscribed to the events stream.");
                last_error = None;
                observer.connected();
                let result = pump(&mut subscription, &frames, config.idle_timeout, &shutdown).await;
                if started.elapsed() >= HEALTHY_AFTER {
                    backoff = BACKOFF_MIN;
                }
                result.map_err(|e| (e, true))
            }
            Err(e) => Err((e, false)),
        };
        let delay = match outcome {
            Ok(()) => break,
            Err((error, was_connected)) => {
                observer.disconnected(&error, was_connected);
                let text = error.to_string();
                let repeated = last_error.as_deref() == Some(text.as_str());
                let delay = if let StreamError::Auth(_) = &error {
                    if !repeated {
                        error!(error = %error, retry_in_seconds = AUTH_RETRY.as_secs(), "The Prefect server refused the credentials.");
                    }
                    AUTH_RETRY
                } else {
                    if repeated {
                        debug!(error = %error, retry_in_ms = backoff.as_millis() as u64, "The events stream is still unavailable; reconnecting.");
                    } else {
                        warn!(error = %error, retry_in_ms = backoff.as_millis() as u64, "Events stream ended; reconnecting.");
                    }
                    let jittered = backoff.mul_f64(rand::rng().random_range(0.5..1.0));
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    jittered
                };
                last_error = Some(text);
                delay
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
