//! What the HTTP server refuses: connections past the cap, request heads and bodies past a
//! size or time limit, and the counts of these.
//!
//! It owns [`ConnectionCap`] (a slot per open connection, fitted to the process's open-file
//! limit; at the cap the oldest connection that has not sent a request yet is shed to make
//! room, and only when there is none is the newcomer refused; refusals counted and logged
//! rate-limited) and [`read_body`]; their counts go to [`HttpStats`]. It never touches sockets or routes: `http`
//! asks it whether to admit, and what to answer.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::{Body, Bytes, Incoming};
use hyper::header::{HeaderValue, CONNECTION};
use hyper::StatusCode;
use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::web::metrics::HttpStats;
use crate::web::response::{error, HttpResponse};

/// Default of `--web-max-connections`: far above what scrapers need (one keep-alive
/// connection per Prometheus), low enough that idle connections cost a few MiB at most.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 1024;

/// Open files kept for everything but HTTP connections: stdio, the runtime, the events
/// socket, the REST client's pool, the state file and replay files.
const RESERVED_FDS: u64 = 64;

/// At most one log line about refused connections per this interval.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Most bytes of a request head (request line and headers). A scrape sends a few hundred
/// bytes (a bearer token or basic credentials included); hyper's default, about 400 KiB,
/// let 1,000 half-sent heads hold over 500 MB. Past it the answer is 431 and the connection
/// closes.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Most bytes a connection's read buffer may hold: the head limit plus one read of slack.
pub const MAX_READ_BUFFER: usize = 2 * MAX_HEAD_BYTES;

/// Why a request was refused before its handler ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// Missing or wrong credentials (401).
    Unauthorized,
    /// A body over the limit (413).
    BodyTooLarge,
    /// A body that did not arrive in time (408).
    BodyTimeout,
}

impl Rejection {
    /// Every reason, in label order.
    pub const ALL: [Rejection; 3] = [
        Rejection::Unauthorized,
        Rejection::BodyTooLarge,
        Rejection::BodyTimeout,
    ];

    /// The `reason` label value.
    pub fn label(self) -> &'static str {
        match self {
            Rejection::Unauthorized => "unauthorized",
            Rejection::BodyTooLarge => "body_too_large",
            Rejection::BodyTimeout => "body_timeout",
        }
    }
}

/// The most connections served at once. At the cap, the oldest connection that has not
/// sent a request yet (an idle socket, a handshake that never ends) is closed to make room;
/// only when every connection has sent one is a newcomer refused. So idle sockets, however
/// many, cannot keep a scrape or a liveness probe out.
pub struct ConnectionCap {
    slots: Arc<Semaphore>,
    limit: usize,
    stats: Arc<HttpStats>,
    fresh: Arc<Mutex<Fresh>>,
    refusals: Mutex<RefusalLog>,
}

/// Refusals since the last log line.
struct RefusalLog {
    last_logged: Option<Instant>,
    unlogged: u64,
}

/// The connections that have not sent a request yet, by admission order: the ones shed.
#[derive(Default)]
struct Fresh {
    next: u64,
    by_age: BTreeMap<u64, Sheddable>,
}

/// What shedding a connection takes: its close signal, and its place under the cap (which
/// passes to the newcomer at once, so no other connection can take it first).
struct Sheddable {
    shed: CancellationToken,
    permit: Arc<Mutex<Option<OwnedSemaphorePermit>>>,
}

/// An admitted connection's place under the cap; freed on drop.
pub struct Slot {
    permit: Arc<Mutex<Option<OwnedSemaphorePermit>>>,
    stats: Arc<HttpStats>,
    activity: Activity,
    shed: CancellationToken,
}

/// Marks a connection as having sent a request (it is then never shed); cheap to clone.
#[derive(Clone)]
pub struct Activity {
    id: u64,
    seen: Arc<AtomicBool>,
    fresh: Arc<Mutex<Fresh>>,
}

impl Activity {
    /// A request arrived on the connection.
    pub fn requested(&self) {
        if !self.seen.swap(true, Ordering::Relaxed) {
            self.fresh.lock().by_age.remove(&self.id);
        }
    }
}

impl Slot {
    fn new(
        permit: OwnedSemaphorePermit,
        stats: &Arc<HttpStats>,
        fresh: &Arc<Mutex<Fresh>>,
    ) -> Slot {
        stats.opened();
        let shed = CancellationToken::new();
        let permit = Arc::new(Mutex::new(Some(permit)));
        let id = {
            let mut fresh = fresh.lock();
            let id = fresh.next;
            fresh.next += 1;
            let sheddable = Sheddable {
                shed: shed.clone(),
                permit: permit.clone(),
            };
            fresh.by_age.insert(id, sheddable);
            id
        };
        Slot {
            permit,
            stats: stats.clone(),
            activity: Activity {
                id,
                seen: Arc::new(AtomicBool::new(false)),
                fresh: fresh.clone(),
            },
            shed,
        }
    }

    /// The handle that marks a request's arrival.
    pub fn activity(&self) -> Activity {
        self.activity.clone()
    }

    /// Cancelled when the connection is shed to make room; it should close at once.
    pub fn shed(&self) -> &CancellationToken {
        &self.shed
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.activity.requested();
        self.permit.lock().take();
        self.stats.closed();
    }
}

impl ConnectionCap {
    /// A cap of `requested` connections, lowered (with a warning) to fit the process's
    /// open-file limit.
    pub fn new(requested: usize, stats: Arc<HttpStats>) -> ConnectionCap {
        let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
        let limit = fit_to_fd_limit(requested, soft);
        if limit < requested {
            warn!(
                requested,
                limit,
                open_files_limit = soft,
                "--web-max-connections lowered to fit the open-file limit (ulimit -n)."
            );
        }
        ConnectionCap {
            slots: Arc::new(Semaphore::new(limit)),
            limit,
            stats,
            fresh: Arc::default(),
            refusals: Mutex::new(RefusalLog {
                last_logged: None,
                unlogged: 0,
            }),
        }
    }

    /// The effective cap.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// A slot for a new connection: a free one, or at the cap that of the oldest connection
    /// without a request, which is told to close (counted). `None` (counted, logged
    /// rate-limited) when every connection has sent a request.
    pub fn admit(&self) -> Option<Slot> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Some(Slot::new(permit, &self.stats, &self.fresh));
        }
        loop {
            let Some((_, oldest)) = self.fresh.lock().by_age.pop_first() else {
                break;
            };
            oldest.shed.cancel();
            // Gone already if that connection closed on its own in the meantime.
            let Some(permit) = oldest.permit.lock().take() else {
                continue;
            };
            self.stats.count_shed();
            return Some(Slot::new(permit, &self.stats, &self.fresh));
        }
        self.stats.count_refused();
        self.log_refusal();
        None
    }

    fn log_refusal(&self) {
        let mut log = self.refusals.lock();
        log.unlogged += 1;
        let due = log
            .last_logged
            .is_none_or(|at| at.elapsed() >= REFUSAL_LOG_INTERVAL);
        if due {
            warn!(
                refused = log.unlogged,
                max_connections = self.limit,
                "Refused HTTP connections: at --web-max-connections, and every connection has sent a request."
            );
            log.last_logged = Some(Instant::now());
            log.unlogged = 0;
        }
    }
}

/// `requested`, lowered to leave [`RESERVED_FDS`] of the soft open-file limit (`None`:
/// unlimited) for the rest of the process; at least 1.
fn fit_to_fd_limit(requested: usize, soft_limit: Option<u64>) -> usize {
    let requested = requested.min(Semaphore::MAX_PERMITS);
    let Some(soft) = soft_limit else {
        return requested;
    };
    let available = usize::try_from(soft.saturating_sub(RESERVED_FDS)).unwrap_or(usize::MAX);
    requested.min(available).max(1)
}

/// Why a request body was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyError {
    /// Larger than the limit (announced or sent).
    TooLarge,
    /// Not complete in time.
    Timeout,
    /// The connection failed while reading it.
    Broken,
}

impl BodyError {
    /// The response to send (the connection closes after it: the body was not read).
    pub fn response(self) -> HttpResponse {
        let mut response = match self {
            BodyError::TooLarge => error(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"),
            BodyError::Timeout => error(
                StatusCode::REQUEST_TIMEOUT,
                "request body not received in time",
            ),
            BodyError::Broken => error(StatusCode::BAD_REQUEST, "request body unreadable"),
        };
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
        response
    }

    /// The counted reason, if any.
    pub fn rejection(self) -> Option<Rejection> {
        match self {
            BodyError::TooLarge => Some(Rejection::BodyTooLarge),
            BodyError::Timeout => Some(Rejection::BodyTimeout),
            BodyError::Broken => None,
        }
    }
}

/// Reads a request body of at most `max_bytes` within `timeout`. A body announced larger
/// (`Content-Length`) is refused before any of it is read; a chunked one as soon as it
/// passes the limit.
pub async fn read_body(
    body: Incoming,
    max_bytes: usize,
    timeout: Duration,
) -> Result<Bytes, BodyError> {
    if body.size_hint().lower() > u64::try_from(max_bytes).unwrap_or(u64::MAX) {
        return Err(BodyError::TooLarge);
    }
    if body.is_end_stream() {
        return Ok(Bytes::new());
    }
    match tokio::time::timeout(timeout, Limited::new(body, max_bytes).collect()).await {
        Err(_) => Err(BodyError::Timeout),
        Ok(Err(e)) if e.is::<LengthLimitError>() => Err(BodyError::TooLarge),
        Ok(Err(_)) => Err(BodyError::Broken),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_leaves_room_under_the_open_file_limit() {
        assert_eq!(fit_to_fd_limit(1024, Some(20_000)), 1024);
        assert_eq!(fit_to_fd_limit(1024, Some(1024)), 960);
        assert_eq!(fit_to_fd_limit(1024, Some(10)), 1);
        assert_eq!(fit_to_fd_limit(1024, None), 1024);
    }

    #[test]
    fn cap_refuses_past_the_limit_and_frees_on_drop() {
        let stats = Arc::new(HttpStats::default());
        let cap = ConnectionCap::new(2, stats.clone());
        let first = cap.admit().expect("first");
        let second = cap.admit().expect("second");
        first.activity().requested();
        second.activity().requested();
        assert!(cap.admit().is_none());
        assert!(cap.admit().is_none());
        assert_eq!((stats.open(), stats.refused()), (2, 2));
        drop(first);
        assert_eq!(stats.open(), 1);
        assert!(cap.admit().is_some());
    }

    #[test]
    fn at_the_cap_the_oldest_connection_without_a_request_is_shed() {
        let stats = Arc::new(HttpStats::default());
        let cap = ConnectionCap::new(3, stats.clone());
        let oldest = cap.admit().expect("first");
        let used = cap.admit().expect("second");
        used.activity().requested();
        let younger = cap.admit().expect("third");
        let newcomer = cap.admit().expect("an idle connection is shed for it");
        assert!(oldest.shed().is_cancelled(), "the oldest idle one goes");
        assert!(!used.shed().is_cancelled() && !younger.shed().is_cancelled());
        assert_eq!((stats.open(), stats.shed(), stats.refused()), (4, 1, 0));
        drop(oldest);
        assert_eq!(stats.open(), 3);
        // Next in line: the younger idle one, then the newcomer; then nothing is left.
        younger.activity().requested();
        newcomer.activity().requested();
        assert!(cap.admit().is_none());
    }
}
