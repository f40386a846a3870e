//! The fake `/api/events/out`: Prefect's handshake (subprotocol, auth message, filter), the
//! same close codes and reasons, backfill then live events, keepalive pings, and the fault
//! injection of `serve-replay`.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use rand::Rng;
use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::filter::EventFilter;
use super::timeline::{Store, StoredEvent};
use crate::model::event::MAX_FRAME_BYTES;
use crate::model::time::now_micros;

/// Server pings this often; a ping unanswered this long closes the connection (1011).
const PING_INTERVAL: Duration = Duration::from_secs(20);
/// Events held back by `--reorder-window` are flushed after this long without new ones.
const REORDER_FLUSH: Duration = Duration::from_millis(100);

/// Faults to inject into every connection.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Drop the connection (abruptly, or with `close_code`) after this many events.
    pub disconnect_every: Option<u64>,
    /// Close with this code instead of dropping the TCP connection.
    pub close_code: Option<u16>,
    /// Probability of resending an earlier event after each event.
    pub duplicate_rate: f64,
    /// Probability of silently dropping each live event (backfill and REST keep it).
    pub drop_live_rate: f64,
    /// Shuffle live events within windows of this many.
    pub reorder_window: usize,
    /// Stop reading and writing for this long after every `STALL_EVERY` events.
    pub stall_ms: u64,
}

/// Events between stalls with `--stall-ms`.
pub const STALL_EVERY: u64 = 500;

/// Server-side settings of the websocket.
#[derive(Clone, Debug, Default)]
pub struct WsServerConfig {
    /// `PREFECT_SERVER_API_AUTH_STRING` equivalent.
    pub auth_string: Option<String>,
    /// Faults.
    pub faults: Faults,
}

type Socket = WebSocketStream<TokioIo<Upgraded>>;

/// How a connection ended (for logs).
enum End {
    /// Close with a code and reason.
    Close(u16, &'static str),
    /// Drop the TCP connection without a close frame.
    Drop,
    /// The client went away.
    Gone,
}

async fn finish(mut socket: Socket, end: End) {
    let (code, reason) = match end {
        End::Close(code, reason) => (code, reason.to_owned()),
        End::Drop | End::Gone => return,
    };
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    };
    let _ = socket.send(Message::Close(Some(frame))).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while let Some(Ok(_)) = socket.next().await {}
    })
    .await;
}

/// The next text message as JSON: `Err(End)` when the client sent something else or left.
async fn next_json(socket: &mut Socket) -> Result<Value, End> {
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) => {
                return serde_json::from_str(text.as_str()).map_err(|_| End::Drop)
            }
            Some(Ok(Message::Binary(bytes))) => {
                return serde_json::from_slice(&bytes).map_err(|_| End::Drop)
            }
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Err(End::Gone),
            Some(Ok(_)) => continue,
        }
    }
}

/// Runs one upgraded connection. `prefect_protocol` says whether the client offered the
/// `prefect` subprotocol (without it, and without auth, the legacy filter-first mode).
pub async fn connection(
    upgraded: Upgraded,
    prefect_protocol: bool,
    store: Arc<Store>,
    config: WsServerConfig,
    shutdown: CancellationToken,
) {
    let ws_config = WebSocketConfig::default().max_message_size(Some(MAX_FRAME_BYTES));
    let mut socket =
        WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(ws_config))
            .await;
    let end = match handshake(&mut socket, prefect_protocol, &config).await {
        Ok((filter, backfill)) => {
            stream(
                &mut socket,
                filter,
                backfill,
                store,
                &config.faults,
                shutdown,
            )
            .await
        }
        Err(end) => end,
    };
    finish(socket, end).await;
}

async fn handshake(
    socket: &mut Socket,
    prefect_protocol: bool,
    config: &WsServerConfig,
) -> Result<(EventFilter, bool), End> {
    if prefect_protocol {
        let auth = next_json(socket).await?;
        if auth.get("type").and_then(Value::as_str) != Some("auth") {
            return Err(End::Close(1008, "Expected 'auth' message"));
        }
        if let Some(expected) = &config.auth_string {
            match auth.get("token").and_then(Value::as_str) {
                None | Some("") => {
                    return Err(End::Close(1008, "Auth required but no token provided"))
                }
                Some(token) if token != expected => return Err(End::Close(1008, "Invalid token")),
                Some(_) => {}
            }
        }
        socket
            .send(Message::text(r#"{"type":"auth_success"}"#))
            .await
            .map_err(|_| End::Gone)?;
    }
    let message = next_json(socket).await?;
    let Some(kind) = message.get("type") else {
        return Err(End::Drop);
    };
    if kind.as_str() != Some("filter") {
        return Err(End::Close(1002, "Expected 'filter' message"));
    }
    let Some(raw) = message.get("filter") else {
        return Err(End::Close(1002, "Invalid filter: 'filter'"));
    };
    // Prefect's validation errors make close reasons too long to send: the TCP connection
    // just drops.
    let filter = EventFilter::parse(raw).map_err(|_| End::Drop)?;
    let backfill = message
        .get("backfill")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    Ok((filter, backfill))
}

/// Per-connection fault state.
struct Injector<'a> {
    faults: &'a Faults,
    sent: u64,
    history: Vec<Arc<StoredEvent>>,
    reorder: VecDeque<Arc<StoredEvent>>,
}

impl Injector<'_> {
    fn disconnect_due(&self) -> Option<End> {
        let every = self.faults.disconnect_every?;
        if self.sent == 0 || !self.sent.is_multiple_of(every) {
            return None;
        }
        Some(match self.faults.close_code {
            Some(code) => End::Close(code, "serve-replay --disconnect-every"),
            None => End::Drop,
        })
    }
}

async fn send_event(
    socket: &mut Socket,
    event: &Arc<StoredEvent>,
    injector: &mut Injector<'_>,
) -> Result<(), End> {
    // Fed, not flushed: frames go out in large writes; callers flush when they run dry.
    socket
        .feed(Message::Text(event.frame()))
        .await
        .map_err(|_| End::Gone)?;
    injector.sent += 1;
    injector.history.push(event.clone());
    if injector.faults.duplicate_rate > 0.0
        && rand::rng().random_bool(injector.faults.duplicate_rate.clamp(0.0, 1.0))
    {
        let index = rand::rng().random_range(0..injector.history.len());
        let again = injector.history[index].clone();
        socket
            .feed(Message::Text(again.frame()))
            .await
            .map_err(|_| End::Gone)?;
    }
    if injector.faults.stall_ms > 0 && injector.sent.is_multiple_of(STALL_EVERY) {
        flush(socket).await?;
        tokio::time::sleep(Duration::from_millis(injector.faults.stall_ms)).await;
    }
    if let Some(end) = injector.disconnect_due() {
        flush(socket).await?;
        return Err(end);
    }
    Ok(())
}

/// Sends what was fed.
async fn flush(socket: &mut Socket) -> Result<(), End> {
    socket.flush().await.map_err(|_| End::Gone)
}

async fn stream(
    socket: &mut Socket,
    filter: EventFilter,
    backfill: bool,
    store: Arc<Store>,
    faults: &Faults,
    shutdown: CancellationToken,
) -> End {
    let mut live = store.subscribe();
    let mut injector = Injector {
        faults,
        sent: 0,
        history: Vec::new(),
        reorder: VecDeque::new(),
    };
    let mut backfilled = HashSet::new();
    if backfill {
        let now = now_micros();
        let since = filter.backfill_since(now);
        let until = filter.until_or_now();
        let events = store.query(|e| {
            e.occurred >= since
                && e.occurred <= until
                && filter.matches_ignoring_time(&e.candidate())
        });
        for event in &events {
            backfilled.insert(event.id.clone());
            if let Err(end) = send_event(socket, event, &mut injector).await {
                return end;
            }
        }
        if let Err(end) = flush(socket).await {
            return end;
        }
    }
    let mut ping = tokio::time::interval(PING_INTERVAL);
    ping.tick().await;
    let mut awaiting_pong = false;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return End::Close(1012, ""),
            _ = ping.tick() => {
                if awaiting_pong {
                    return End::Close(1011, "keepalive ping timeout");
                }
                if socket.send(Message::Ping(Bytes::from_static(b"ping"))).await.is_err() {
                    return End::Gone;
                }
                awaiting_pong = true;
            }
            () = tokio::time::sleep(REORDER_FLUSH), if !injector.reorder.is_empty() => {
                while !injector.reorder.is_empty() {
                    let index = rand::rng().random_range(0..injector.reorder.len());
                    let Some(next) = injector.reorder.remove(index) else { break };
                    if let Err(end) = send_event(socket, &next, &mut injector).await {
                        return end;
                    }
                }
                if let Err(end) = flush(socket).await {
                    return end;
                }
            }
            incoming = socket.next() => match incoming {
                Some(Ok(Message::Pong(_))) => awaiting_pong = false,
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return End::Gone,
                Some(Ok(_)) => {}
            },
            received = live.recv() => {
                let event = match received {
                    Ok(event) => Some(event),
                    Err(RecvError::Lagged(missed)) => {
                        debug!(missed, "A slow subscriber missed live events (as Prefect's server drops them).");
                        None
                    }
                    Err(RecvError::Closed) => return End::Close(1012, ""),
                };
                if let Some(event) = event.filter(|e| live_wanted(e, &filter, &backfilled, faults)) {
                    injector.reorder.push_back(event);
                    while injector.reorder.len() > faults.reorder_window {
                        let index = rand::rng().random_range(0..injector.reorder.len());
                        let Some(next) = injector.reorder.remove(index) else { break };
                        if let Err(end) = send_event(socket, &next, &mut injector).await {
                            return end;
                        }
                    }
                }
                // More released already: keep filling the buffer; else send what was fed, also
                // when this event was skipped (an earlier one may be waiting in the buffer).
                if live.is_empty() {
                    if let Err(end) = flush(socket).await {
                        return end;
                    }
                }
            }
        }
    }
}

/// Whether a live event goes to this subscriber: not already sent by the backfill, matched by
/// its filter, and not dropped by `--drop-live-rate`.
fn live_wanted(
    event: &StoredEvent,
    filter: &EventFilter,
    backfilled: &HashSet<String>,
    faults: &Faults,
) -> bool {
    if backfilled.contains(&event.id) || !filter.matches(&event.candidate(), filter.until_or_now())
    {
        return false;
    }
    !(faults.drop_live_rate > 0.0 && rand::rng().random_bool(faults.drop_live_rate.clamp(0.0, 1.0)))
}
