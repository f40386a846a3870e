//! `GET /api/v1/stream`: the exporter's changes pushed as Server-Sent Events.
//!
//! Each client gets a task that follows the state's change log ([`crate::state::changes`])
//! and its change signal, and writes events into a bounded channel the response body reads.
//! Ingestion never waits for a client: the log is a ring the tracker appends to under the
//! lock it holds anyway, and a client's task only reads it. A client that reads too slowly
//! (its buffer of [`CLIENT_BUFFER`] unwritten events stays full for [`STALL`], or the ring
//! forgot changes it had not sent yet) gets a final `overflow` event in the slot kept for
//! it, and the stream ends, counted; a connection that cannot even write that is dropped by
//! the server's write deadline ([`crate::web::write_deadline`]).
//!
//! Cost with many clients: a transition client wakes at most once per [`BATCH_WINDOW`]
//! (all on one grid), reads the log once under the lock, and sends everything new as one
//! chunk; each change's `transition` event is rendered once for all clients ([`Renders`]),
//! and each tick's `counts` document once for all counts clients.
//!
//! Events: `counts` (the `/api/v1/counts` document, first and then at most once per
//! `--stream-interval` while anything changes), `transition` (`?resource=`: the events that
//! moved the run's state, a late one, older than the run's state, is left out; the
//! `?kind=`/`state_type=`/`state_name=` filters: every counted entry, a late one marked
//! `"late": true`), `end` (the run's state became terminal),
//! `reset` (a `Last-Event-ID` older than the history), `overflow`, and `: ping` comments.
//! Ids are `<start>-<seq>`: resuming with one continues right after that event, if the same
//! process still holds it.

use std::sync::Arc;
use std::time::Duration;

use hyper::body::Bytes;
use hyper::header::{HeaderMap, HeaderValue, CACHE_CONTROL, CONNECTION, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use parking_lot::Mutex;
use prometheus::{IntCounter, IntGauge};
use serde_json::json;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use crate::expose::catalogue::HttpMetrics;
use crate::expose::report::CountsReport;
use crate::model::event::{RunKind, StateKey};
use crate::model::time::Micros;
use crate::state::changes::Forgotten;
use crate::state::record::{canonical_id, RunKey};
use crate::state::status::Status;
use crate::state::Shared;
use crate::web::query::StreamFilter;
use crate::web::response::{Body, Held, HttpResponse};
use crate::web::sse::{self, Renders};

/// Default of `--stream-interval`: at most four `counts` events a second.
pub const DEFAULT_STREAM_INTERVAL: Duration = Duration::from_millis(250);
/// Default of `--stream-ping-interval`.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(15);
/// Events a client may have waiting to be written; the last slot is kept for `overflow`.
pub const CLIENT_BUFFER: usize = 256;
/// How long a client with a full buffer has to make room before it gets `overflow`.
pub const STALL: Duration = Duration::from_secs(5);
/// Least time between two sends of transitions to one client: the changes of one window go
/// in one chunk, and a busy log wakes each client at most once per window.
pub const BATCH_WINDOW: Duration = Duration::from_millis(100);

/// How streams behave.
#[derive(Clone, Copy, Debug)]
pub struct StreamSettings {
    /// Least time between two `counts` events of one client.
    pub interval: Duration,
    /// Time between heartbeats.
    pub ping: Duration,
}

impl Default for StreamSettings {
    fn default() -> StreamSettings {
        StreamSettings {
            interval: DEFAULT_STREAM_INTERVAL,
            ping: DEFAULT_PING_INTERVAL,
        }
    }
}

/// Stream clients connected now and dropped for reading too slowly: the server's handle on
/// their library metrics (defined with the other HTTP families in the catalogue).
#[derive(Debug)]
pub struct StreamStats {
    open: IntGauge,
    dropped: IntCounter,
}

impl StreamStats {
    /// The handle on `metrics`' stream families.
    pub(crate) fn new(metrics: &HttpMetrics) -> StreamStats {
        StreamStats {
            open: metrics.stream_clients.clone(),
            dropped: metrics.stream_dropped.clone(),
        }
    }

    /// Clients connected now.
    pub fn open(&self) -> u64 {
        u64::try_from(self.open.get()).unwrap_or(0)
    }

    /// Clients closed with `overflow` so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.get()
    }
}

/// Counts a client as connected while it lives (it lives with the response body, so until
/// the connection has written it or was dropped).
struct Connected(Arc<StreamStats>);

impl Connected {
    fn new(stats: Arc<StreamStats>) -> Connected {
        stats.open.inc();
        Connected(stats)
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        self.0.open.dec();
    }
}

/// What every stream reads: the state, its readiness, the settings, and when to stop.
pub struct Streams {
    /// Counts and the change log.
    pub shared: Arc<Shared>,
    /// The source's condition (for `counts`).
    pub status: Arc<Status>,
    /// Intervals.
    pub settings: StreamSettings,
    /// Connected and dropped clients.
    pub stats: Arc<StreamStats>,
    /// Identifies this process in event ids (its start time), so an id from an earlier
    /// process is never taken for one of this process.
    pub start: Micros,
    /// Ends every stream at shutdown.
    pub shutdown: CancellationToken,
    /// The grid `counts` events are sent on, so clients share one document per tick.
    origin: Instant,
    /// The `counts` event of the newest tick: (tick, generation it shows, the event).
    counts: Mutex<Option<(u64, u64, Bytes)>>,
    /// The newest `transition` events of the entries filters, rendered once for all.
    renders: Mutex<Renders>,
}

impl Streams {
    /// Streams of `shared` and `status`, with event ids marked `start`.
    pub fn new(
        shared: Arc<Shared>,
        status: Arc<Status>,
        settings: StreamSettings,
        stats: Arc<StreamStats>,
        start: Micros,
        shutdown: CancellationToken,
    ) -> Streams {
        Streams {
            shared,
            status,
            settings,
            stats,
            start,
            shutdown,
            origin: Instant::now(),
            counts: Mutex::new(None),
            renders: Mutex::new(Renders::default()),
        }
    }

    /// The number of the interval `at` falls in.
    fn tick(&self, at: Instant) -> u64 {
        let interval = self.settings.interval.as_nanos().max(1);
        u64::try_from(at.duration_since(self.origin).as_nanos() / interval).unwrap_or(u64::MAX)
    }

    /// The end of the [`BATCH_WINDOW`] `at` falls in (windows start at the origin, so all
    /// clients wake together).
    fn window_end(&self, at: Instant) -> Instant {
        let window = BATCH_WINDOW.as_nanos();
        let n = at.duration_since(self.origin).as_nanos() / window + 1;
        let nanos = u64::try_from(n.saturating_mul(window)).unwrap_or(u64::MAX);
        self.origin + Duration::from_nanos(nanos)
    }

    /// When interval `tick` starts.
    fn tick_start(&self, tick: u64) -> Instant {
        let nanos = self
            .settings
            .interval
            .as_nanos()
            .saturating_mul(u128::from(tick));
        self.origin + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// A `counts` event and the generation it shows: for `Some(tick)`, the one every client
    /// sending in that tick shares (built by the first); for `None`, a fresh one.
    fn counts_event(&self, tick: Option<u64>) -> (u64, Bytes) {
        let mut cached = self.counts.lock();
        if let (Some(tick), Some((at, generation, event))) = (tick, cached.as_ref()) {
            if *at == tick {
                return (*generation, event.clone());
            }
        }
        let generation = self.shared.generation();
        let next = self.shared.with_counts(|c| c.changes.next_seq());
        let report = CountsReport::build(&self.shared, &self.status);
        let data = serde_json::to_vec(&report).unwrap_or_default();
        let event = Bytes::from(sse::event("counts", Some(&self.id(next)), &data));
        if let Some(tick) = tick {
            *cached = Some((tick, generation, event.clone()));
        }
        (generation, event)
    }
    /// Opens a stream following `filter`, resuming after the event `last_event_id` names
    /// (when it is one of this process); `head` answers a `HEAD` request without a body.
    pub fn open(
        self: &Arc<Streams>,
        filter: StreamFilter,
        headers: &HeaderMap,
        head: bool,
    ) -> HttpResponse {
        let body = if head {
            Body::full(Bytes::new())
        } else {
            let (tx, rx) = mpsc::channel(CLIENT_BUFFER);
            let resume = headers
                .get("last-event-id")
                .and_then(|v| v.to_str().ok())
                .and_then(|id| self.parse_id(id));
            let client = Client {
                streams: self.clone(),
                out: Outbox {
                    tx,
                    room: Arc::new(Semaphore::new(CLIENT_BUFFER - 1)),
                    stats: self.stats.clone(),
                    shutdown: self.shutdown.clone(),
                },
                filter,
            };
            tokio::spawn(client.run(resume));
            Body::Stream(rx, Held::new(Connected::new(self.stats.clone())))
        };
        let mut response = Response::new(body);
        *response.status_mut() = StatusCode::OK;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
        headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
        response
    }

    /// The event id of the position `next` in the change log.
    fn id(&self, next: u64) -> String {
        format!("{}-{next}", self.start)
    }

    /// The log position an id of this process names.
    fn parse_id(&self, id: &str) -> Option<u64> {
        let (start, next) = id.trim().split_once('-')?;
        (start.parse::<Micros>().ok()? == self.start)
            .then(|| next.parse().ok())
            .flatten()
    }
}

/// Why a stream ended early.
struct Stop;

/// The client's bounded buffer: a channel of chunks, and room for [`CLIENT_BUFFER`] - 1
/// events not yet written, a chunk holding its events' room until the connection wrote it.
struct Outbox {
    tx: mpsc::Sender<Bytes>,
    room: Arc<Semaphore>,
    stats: Arc<StreamStats>,
    shutdown: CancellationToken,
}

/// A chunk on its way to the client, holding its events' room in the buffer.
struct Queued {
    bytes: Bytes,
    _room: OwnedSemaphorePermit,
}

impl AsRef<[u8]> for Queued {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Outbox {
    /// Queues a chunk of `events` events once there is room for them (the last slot is kept
    /// for `overflow`); when the client has not made room within [`STALL`], queues
    /// `overflow` instead, and the stream ends.
    async fn send(&self, chunk: Bytes, events: usize) -> Result<(), Stop> {
        let events = u32::try_from(events.clamp(1, CLIENT_BUFFER - 1)).unwrap_or(1);
        let room = tokio::select! {
            () = self.shutdown.cancelled() => return Err(Stop),
            () = self.tx.closed() => return Err(Stop),
            room = tokio::time::timeout(STALL, self.room.clone().acquire_many_owned(events)) => room,
        };
        let room = match room {
            Ok(Ok(room)) => room,
            Ok(Err(_)) => return Err(Stop),
            Err(_) => return Err(self.overflow()),
        };
        // Every queued chunk holds room for one event at least, so the channel always has a
        // slot left: for this chunk, and then for `overflow`.
        let chunk = Bytes::from_owner(Queued {
            bytes: chunk,
            _room: room,
        });
        match self.tx.try_send(chunk) {
            Ok(()) => Ok(()),
            Err(TrySendError::Closed(_)) => Err(Stop),
            Err(TrySendError::Full(_)) => Err(self.overflow()),
        }
    }

    /// Queues the final `overflow` event (into the slot kept for it) and counts the drop.
    fn overflow(&self) -> Stop {
        let data = json!({"reason": "the client read too slowly", "buffered": CLIENT_BUFFER});
        let overflow = sse::event("overflow", None, data.to_string().as_bytes());
        if !self.tx.is_closed() {
            let _ = self.tx.try_send(Bytes::from(overflow));
            self.stats.dropped.inc();
        }
        Stop
    }
}

/// A change a client wants, with its states resolved.
struct Item {
    seq: u64,
    kind: RunKind,
    key: RunKey,
    canonical: bool,
    from: Option<StateKey>,
    to: StateKey,
    occurred: Micros,
    /// Older than the run's state when it arrived (the run stayed where it was).
    late: bool,
}

/// Most changes copied out of the log at once (and sent in one chunk).
const BATCH: usize = CLIENT_BUFFER / 2;

/// One connected client.
struct Client {
    streams: Arc<Streams>,
    out: Outbox,
    filter: StreamFilter,
}

impl Client {
    async fn run(self, resume: Option<u64>) {
        let _ = match self.filter {
            StreamFilter::Counts => self.counts().await,
            _ => self.changes(resume).await,
        };
    }

    /// Sleeps until the state changes from generation `seen` (when given), the next ping or
    /// `until`; pings when due. `Err` when the stream must end (shutdown, the client left,
    /// its buffer stayed full).
    async fn wait(
        &self,
        seen: Option<u64>,
        next_ping: &mut Instant,
        until: Option<Instant>,
    ) -> Result<(), Stop> {
        let streams = &self.streams;
        let notified = streams.shared.change_signal().notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if seen.is_some_and(|seen| streams.shared.generation() != seen) {
            return Ok(());
        }
        let far = Instant::now() + Duration::from_secs(3600);
        tokio::select! {
            () = streams.shutdown.cancelled() => Err(Stop),
            () = self.out.tx.closed() => Err(Stop),
            () = &mut notified, if seen.is_some() => Ok(()),
            () = sleep_until(until.unwrap_or(far)), if until.is_some() => Ok(()),
            () = sleep_until(*next_ping) => {
                *next_ping = Instant::now() + streams.settings.ping;
                self.out.send(Bytes::from_static(b": ping\n\n"), 1).await
            }
        }
    }

    /// The counts document now, then whenever it changed, at most once per interval.
    async fn counts(&self) -> Result<(), Stop> {
        let streams = &self.streams;
        let mut next_ping = Instant::now() + streams.settings.ping;
        let (mut sent, first) = streams.counts_event(None);
        self.out.send(first, 1).await?;
        let mut last_tick = streams.tick(Instant::now());
        loop {
            let current = streams.shared.generation();
            let mut due = None;
            if current != sent {
                let tick = streams.tick(Instant::now());
                if tick > last_tick {
                    let (generation, event) = streams.counts_event(Some(tick));
                    self.out.send(event, 1).await?;
                    (sent, last_tick) = (generation, tick);
                    continue;
                }
                due = Some(streams.tick_start(last_tick + 1));
            }
            // While a send is due, changes need not wake the task.
            let seen = if due.is_some() { None } else { Some(sent) };
            self.wait(seen, &mut next_ping, due).await?;
        }
    }

    /// Transitions of the filter, from `resume` (or, for one run, from the oldest change
    /// held; otherwise from now): whatever is new at the end of each [`BATCH_WINDOW`] in
    /// which something changed, as one chunk.
    async fn changes(&self, resume: Option<u64>) -> Result<(), Stop> {
        let streams = &self.streams;
        let shared = &streams.shared;
        let mut cursor = resume.unwrap_or_else(|| {
            shared.with_counts(|c| match self.filter {
                StreamFilter::Resource { .. } => c.changes.oldest_seq(),
                _ => c.changes.next_seq(),
            })
        });
        let mut next_ping = Instant::now() + streams.settings.ping;
        let mut items = Vec::new();
        let mut first = true;
        loop {
            let seen = shared.generation();
            loop {
                items.clear();
                match self.collect(cursor, &mut items) {
                    Ok(next) => cursor = next,
                    Err(Forgotten { oldest }) if first => {
                        let data = json!({"after": self.streams.id(cursor), "resumed_at": self.streams.id(oldest)});
                        let reset = sse::event("reset", None, data.to_string().as_bytes());
                        self.out.send(reset.into(), 1).await?;
                        cursor = oldest;
                        continue;
                    }
                    // Fell behind the log itself: as slow as a full buffer.
                    Err(_) => return Err(self.out.overflow()),
                }
                if items.is_empty() {
                    break;
                }
                let (chunk, events, ended) = self.render(&items);
                self.out.send(chunk.into(), events).await?;
                if ended {
                    return Err(Stop);
                }
                if items.len() < BATCH {
                    break;
                }
            }
            if first {
                first = false;
                if let Some(state) = self.terminal_now() {
                    return self.send_end(&state).await;
                }
            }
            self.wait(Some(seen), &mut next_ping, None).await?;
            // Something changed: let the rest of the window's changes join it.
            let window_end = streams.window_end(Instant::now());
            self.wait(None, &mut next_ping, Some(window_end)).await?;
        }
    }

    /// Copies the wanted changes from `cursor` on (at most [`BATCH`]) into `items`; the
    /// position to go on from.
    fn collect(&self, cursor: u64, items: &mut Vec<Item>) -> Result<u64, Forgotten> {
        self.streams.shared.with_counts(|c| {
            let mut next = cursor;
            for change in c.changes.since(cursor)? {
                next = change.seq + 1;
                let to = c.states.key(change.to);
                let wanted = match &self.filter {
                    StreamFilter::Counts => false,
                    // The run's own path: a late event did not move it.
                    StreamFilter::Resource { kind, key, .. } => {
                        change.kind == *kind && change.key == *key && change.current
                    }
                    StreamFilter::Entries {
                        kind,
                        state_type,
                        state_name,
                    } => {
                        change.kind == *kind
                            && change.from != Some(change.to)
                            && state_type.is_none_or(|t| t == to.ty)
                            && state_name.as_deref().is_none_or(|n| n == &*to.name)
                    }
                };
                if wanted {
                    items.push(Item {
                        seq: change.seq,
                        kind: change.kind,
                        key: change.key,
                        canonical: change.canonical,
                        from: change.from.map(|f| c.states.key(f).clone()),
                        to: to.clone(),
                        occurred: change.occurred,
                        late: !change.current,
                    });
                    if items.len() == BATCH {
                        break;
                    }
                }
            }
            Ok(next)
        })
    }

    /// The `prefect.resource.id` of an item's run.
    fn resource(&self, item: &Item) -> String {
        if let StreamFilter::Resource { id, .. } = &self.filter {
            return id.clone();
        }
        if item.canonical {
            return canonical_id(item.kind, item.key);
        }
        self.streams
            .shared
            .find_run(item.kind, item.key, |_, odd| odd.map(str::to_owned))
            .flatten()
            .unwrap_or_else(|| canonical_id(item.kind, item.key))
    }

    /// The items' `transition` events as one chunk, with the number of events in it and
    /// whether it ends the stream (a run's `end` follows its terminal transition). The
    /// entries filters share one render of each change.
    fn render(&self, items: &[Item]) -> (Vec<u8>, usize, bool) {
        let streams = &self.streams;
        let mut chunk = Vec::with_capacity(items.len() * 256);
        let transition = |item: &Item| {
            let id = streams.id(item.seq + 1);
            let from = item.from.as_ref();
            let late = item.late;
            sse::transition(
                &id,
                &self.resource(item),
                from,
                &item.to,
                item.occurred,
                late,
            )
        };
        if let StreamFilter::Resource { id, .. } = &self.filter {
            for (n, item) in items.iter().enumerate() {
                chunk.extend_from_slice(&transition(item));
                if item.to.ty.is_terminal() {
                    chunk.extend_from_slice(&sse::end(id, &item.to));
                    return (chunk, n + 2, true);
                }
            }
            return (chunk, items.len(), false);
        }
        let mut renders = streams.renders.lock();
        for item in items {
            chunk.extend_from_slice(&renders.get_or_render(item.seq, || transition(item)));
        }
        (chunk, items.len(), false)
    }

    async fn send_end(&self, state: &StateKey) -> Result<(), Stop> {
        let StreamFilter::Resource { id, .. } = &self.filter else {
            return Ok(());
        };
        self.out.send(sse::end(id, state).into(), 1).await?;
        Err(Stop)
    }

    /// With a resource filter: the run's state when it is tracked and terminal already.
    fn terminal_now(&self) -> Option<StateKey> {
        let StreamFilter::Resource { kind, key, .. } = &self.filter else {
            return None;
        };
        let shared = &self.streams.shared;
        let state = shared.find_run(*kind, *key, |record, _| record.state())?;
        let key = shared.with_counts(|c| c.states.key(state).clone());
        key.ty.is_terminal().then_some(key)
    }
}
