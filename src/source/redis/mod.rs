//! Prefect's Redis `events` stream (prefect-redis messaging) as a source of raw frames, read
//! through a consumer group of the exporter's own.
//!
//! Each entry's `data` field is the event JSON, handed to the pipeline as it is; entries whose
//! `attributes` name an event outside the tracked run kinds (blocks, flows, other resources)
//! are acknowledged without being handed on, as the websocket's filter leaves them out. Per
//! connection: `XINFO GROUPS`; the group is created with `XGROUP CREATE … MKSTREAM` where the
//! exporter left off (the last entry it saw, or the state file's resume point less an
//! overlap; the stream start `0` on first use); then `XAUTOCLAIM` hands the consumer every
//! entry the group had delivered and not acknowledged (a previous run's, or in-flight reads
//! cut by a lost connection); then blocking `XREADGROUP … COUNT BLOCK >` reads. Each process
//! reads under its own consumer name, and only while no other consumer of the group is live
//! ([`consumers`]: first thing on each connection, and every minute while reading).
//!
//! Acknowledgement follows durability: after each batch the source sends
//! [`Frame::Delivered`] with a token, the pipeline publishes the newest token whose entries
//! are durable (applied without a state file; in a snapshot on disk with one), and the source
//! `XACK`s every entry up to it. Anything not acknowledged is delivered again after a restart
//! and dropped by dedup.
//!
//! Gaps are reported, never silent ([`StreamObserver::backfill_gap`]): the group was missing
//! although the exporter had a position (deleted, or Redis lost its data), the stream was
//! trimmed past entries the group had not been delivered, or pending entries were trimmed
//! before they were claimed. Connection losses reconnect with the shared backoff; the password
//! in the URL is never shown.

pub(crate) mod consumers;
pub(crate) mod reply;
pub(crate) mod target;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use ::redis::aio::MultiplexedConnection;
use ::redis::{AsyncConnectionConfig, Value};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::model::reject::RejectReason;
use crate::model::secret::{display_url, Secret};
use crate::model::time::{Micros, SECOND};
use crate::source::backoff::Retry;
use crate::source::{Frame, StreamError, StreamObserver};
use consumers::{Check, Refusal, CHECK_EVERY};
use reply::{Entry, StreamId};

/// Entries read per `XREADGROUP` (and claimed per `XAUTOCLAIM`).
pub const READ_COUNT: usize = 512;
/// How long one `XREADGROUP` blocks waiting for entries.
const BLOCK: Duration = Duration::from_secs(1);
/// Time allowed to connect (and authenticate).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for any reply (a blocking read's block included).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(15);
/// How far before a state file's resume point a re-created group starts (stream ids are
/// taken at `XADD`, after `occurred`).
const RESUME_OVERLAP: Micros = 60 * SECOND;
/// Most ids per `XACK`.
const ACK_CHUNK: usize = 4096;

/// Where and what to read.
#[derive(Clone, Debug)]
pub struct RedisConfig {
    /// `redis://` or `rediss://` URL (may hold a password).
    pub url: Secret,
    /// The stream (`events`).
    pub stream: String,
    /// The consumer group.
    pub group: String,
    /// Event-name prefixes to hand on (those the websocket would subscribe to); entries whose
    /// `attributes` name another event are acknowledged without being decoded.
    pub prefixes: Vec<&'static str>,
}

/// What the source remembers across reconnects.
pub(crate) struct Position {
    /// The newest id forwarded, or `None` before the first.
    last_seen: Option<StreamId>,
    /// Where a missing group is re-created when nothing was seen yet (the state file's
    /// resume point less the overlap); `None` on first use.
    resume: Option<StreamId>,
    /// Ids forwarded and not yet acknowledged, by the token sent after them.
    unacked: VecDeque<(u64, Vec<StreamId>)>,
    /// The token of the next batch.
    next_token: u64,
}

impl Position {
    /// Where a missing group starts, and whether entries may have been lost before it.
    fn restart_point(&self) -> (StreamId, bool) {
        match self.last_seen.or(self.resume) {
            Some(id) => (id, true),
            None => (StreamId::ZERO, false),
        }
    }
}

/// Maps a client error to a stream error, keeping the password out of it.
fn stream_error(e: &::redis::RedisError, url: &Secret, connecting: bool) -> StreamError {
    let text = scrub(&e.to_string(), url);
    if e.kind() == ::redis::ErrorKind::AuthenticationFailed
        || matches!(e.code(), Some("WRONGPASS" | "NOAUTH" | "NOPERM"))
    {
        StreamError::Auth(text)
    } else if connecting {
        StreamError::Connect(text)
    } else if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
        StreamError::Lost(text)
    } else {
        StreamError::Protocol(text)
    }
}

/// `text` with the URL's user information (and the URL itself) replaced.
fn scrub(text: &str, url: &Secret) -> String {
    let full = url.expose();
    let mut out = text.replace(full, &display_url(full));
    if let Some((_, rest)) = full.split_once("://") {
        let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
        if let Some(at) = authority.rfind('@') {
            let userinfo = &authority[..at];
            for secret in [userinfo, userinfo.split_once(':').map_or("", |(_, p)| p)] {
                if secret.len() >= 3 {
                    out = out.replace(secret, "[redacted]");
                }
            }
        }
    }
    out
}

/// A connection to the configured Redis.
async fn connect(config: &RedisConfig) -> Result<MultiplexedConnection, StreamError> {
    let client = ::redis::Client::open(config.url.expose())
        .map_err(|e| StreamError::Connect(scrub(&e.to_string(), &config.url)))?;
    let settings = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT));
    client
        .get_multiplexed_async_connection_with_config(&settings)
        .await
        .map_err(|e| stream_error(&e, &config.url, true))
}

/// One connection's reading: set-up, claims, then reads until shutdown or an error.
pub(crate) struct Session<'a> {
    config: &'a RedisConfig,
    /// This process's consumer name.
    consumer: &'a str,
    conn: MultiplexedConnection,
    frames: &'a mpsc::Sender<Frame>,
    observer: &'a dyn StreamObserver,
}

impl Session<'_> {
    async fn query(&mut self, cmd: &::redis::Cmd) -> Result<Value, StreamError> {
        cmd.query_async(&mut self.conn)
            .await
            .map_err(|e| stream_error(&e, &self.config.url, false))
    }

    /// Reports a gap once, with a log line saying what was lost.
    fn gap(&self, what: &str) {
        warn!(
            stream = %self.config.stream,
            group = %self.config.group,
            "{what}; the gap is closed by verification and reconciliation."
        );
        self.observer.backfill_gap(0);
    }

    /// Finds or creates the group, and reports a gap when entries were lost.
    async fn ensure_group(&mut self, position: &Position) -> Result<(), StreamError> {
        let (stream, group) = (&self.config.stream, &self.config.group);
        let groups = match self
            .query(::redis::cmd("XINFO").arg("GROUPS").arg(stream))
            .await
        {
            Ok(value) => reply::group_info(value, group).map_err(protocol)?,
            // No stream yet: no group either.
            Err(StreamError::Protocol(text)) if text.contains("no such key") => None,
            Err(e) => return Err(e),
        };
        let info = reply::stream_info(
            self.query(::redis::cmd("XINFO").arg("STREAM").arg(stream))
                .await
                .unwrap_or(Value::Array(Vec::new())),
        )
        .map_err(protocol)?;
        match groups {
            Some(existing) => {
                if reply::trimmed_unread(&existing, &info) {
                    self.gap(&format!(
                        "The stream was trimmed past entries the group had not read (its position {}, the stream's first entry {})",
                        existing.last_delivered,
                        info.first_entry.map_or_else(|| "none".to_owned(), |id| id.to_string())
                    ));
                }
            }
            None => {
                let (start, known) = position.restart_point();
                let created = self
                    .query(
                        ::redis::cmd("XGROUP")
                            .arg("CREATE")
                            .arg(stream)
                            .arg(group)
                            .arg(start.to_string())
                            .arg("MKSTREAM"),
                    )
                    .await;
                match created {
                    Ok(_) => {}
                    // Created by someone else in between: use it.
                    Err(StreamError::Protocol(text)) if text.contains("BUSYGROUP") => {}
                    Err(e) => return Err(e),
                }
                info!(%stream, %group, from = %start, "Created the consumer group.");
                if known {
                    self.gap(&format!(
                        "The consumer group was missing (deleted, or Redis lost its data); re-created it at {start}"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Takes over every entry the group delivered and nobody acknowledged.
    async fn claim_pending(&mut self, position: &mut Position) -> Result<(), StreamError> {
        let mut cursor = StreamId::ZERO;
        let mut lost = 0usize;
        loop {
            let value = self
                .query(
                    ::redis::cmd("XAUTOCLAIM")
                        .arg(&self.config.stream)
                        .arg(&self.config.group)
                        .arg(self.consumer)
                        .arg(0)
                        .arg(cursor.to_string())
                        .arg("COUNT")
                        .arg(READ_COUNT),
                )
                .await?;
            let claimed = reply::autoclaim(value).map_err(protocol)?;
            lost += claimed.deleted.len();
            if !claimed.entries.is_empty() {
                debug!(
                    entries = claimed.entries.len(),
                    "Claimed pending entries of the group."
                );
            }
            self.forward(claimed.entries, position).await?;
            if claimed.next == StreamId::ZERO {
                break;
            }
            cursor = claimed.next;
        }
        if lost > 0 {
            self.gap(&format!(
                "{lost} pending entries were trimmed from the stream before they were acknowledged"
            ));
        }
        Ok(())
    }

    /// Hands entries to the pipeline, then the token that marks them.
    async fn forward(
        &mut self,
        entries: Vec<Entry>,
        position: &mut Position,
    ) -> Result<(), StreamError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut ids = Vec::with_capacity(entries.len());
        for entry in entries {
            position.last_seen = Some(position.last_seen.map_or(entry.id, |l| l.max(entry.id)));
            ids.push(entry.id);
            let wanted = entry
                .event
                .as_deref()
                .is_none_or(|name| self.config.prefixes.iter().any(|p| name.starts_with(p)));
            if !wanted {
                continue;
            }
            let frame = match entry.data {
                Some(bytes) => Frame::Data(bytes),
                None => Frame::Rejected {
                    reason: RejectReason::MissingEvent,
                    bytes: 0,
                },
            };
            if self.frames.send(frame).await.is_err() {
                return Ok(());
            }
        }
        let token = position.next_token;
        position.next_token += 1;
        position.unacked.push_back((token, ids));
        let _ = self.frames.send(Frame::Delivered(token)).await;
        Ok(())
    }

    /// Acknowledges every entry whose token is durable.
    async fn acknowledge(
        &mut self,
        durable: u64,
        position: &mut Position,
    ) -> Result<(), StreamError> {
        let mut ids: Vec<StreamId> = Vec::new();
        let mut batches = 0;
        for (token, batch) in &position.unacked {
            if *token > durable {
                break;
            }
            ids.extend(batch);
            batches += 1;
        }
        for chunk in ids.chunks(ACK_CHUNK) {
            let mut cmd = ::redis::cmd("XACK");
            cmd.arg(&self.config.stream).arg(&self.config.group);
            for id in chunk {
                cmd.arg(id.to_string());
            }
            self.query(&cmd).await?;
        }
        position.unacked.drain(..batches);
        Ok(())
    }

    /// Reads until shutdown (`Ok(None)`), an error, or another live consumer of the group
    /// that this one yields to (`Ok(Some(reason))`), acknowledging as entries become durable.
    async fn read(
        &mut self,
        position: &mut Position,
        durable: &watch::Receiver<u64>,
        refusal: &mut Refusal,
        shutdown: &CancellationToken,
    ) -> Result<Option<String>, StreamError> {
        let block = u64::try_from(BLOCK.as_millis()).unwrap_or(1000);
        let mut checked = Instant::now();
        loop {
            let done = *durable.borrow();
            self.acknowledge(done, position).await?;
            if checked.elapsed() >= CHECK_EVERY {
                checked = Instant::now();
                if let Check::Yield(reason) = self.check_group(position, refusal).await? {
                    return Ok(Some(reason));
                }
            }
            let mut cmd = ::redis::cmd("XREADGROUP");
            cmd.arg("GROUP")
                .arg(&self.config.group)
                .arg(self.consumer)
                .arg("COUNT")
                .arg(READ_COUNT)
                .arg("BLOCK")
                .arg(block)
                .arg("STREAMS")
                .arg(&self.config.stream)
                .arg(">");
            // A read cut short by shutdown leaves its entries pending: claimed next time.
            let value = tokio::select! {
                () = shutdown.cancelled() => return Ok(None),
                value = self.query(&cmd) => value?,
            };
            let entries = reply::read_group(value).map_err(protocol)?;
            self.forward(entries, position).await?;
            if self.frames.is_closed() {
                return Ok(None);
            }
        }
    }
}

pub(crate) fn protocol(e: reply::ReplyError) -> StreamError {
    StreamError::Protocol(e.to_string())
}

/// Reads `config`'s stream through its group into `frames` until `shutdown`, reconnecting
/// with backoff. `resume` is the state file's resume point, if any; `durable` carries the
/// newest [`Frame::Delivered`] token whose entries are durable.
pub async fn run(
    config: RedisConfig,
    resume: Option<Micros>,
    frames: mpsc::Sender<Frame>,
    durable: watch::Receiver<u64>,
    observer: &dyn StreamObserver,
    shutdown: CancellationToken,
) {
    let shown = display_url(config.url.expose());
    let mut position = Position {
        last_seen: None,
        resume: resume.map(|r| StreamId::at_micros(r - RESUME_OVERLAP)),
        unacked: VecDeque::new(),
        next_token: 1,
    };
    let consumer = consumers::consumer_name();
    let mut refusal = Refusal::default();
    let mut retry = Retry::new("Redis", "The Redis stream", shown.clone());
    while !shutdown.is_cancelled() && !frames.is_closed() {
        let started = Instant::now();
        let mut was_connected = false;
        let outcome = async {
            let conn = connect(&config).await?;
            let mut session = Session {
                config: &config,
                consumer: &consumer,
                conn,
                frames: &frames,
                observer,
            };
            session.name_connection().await?;
            // Nothing is read or claimed while another consumer of the group is live.
            while session.wait_alone(&mut refusal, &shutdown).await? {
                session.ensure_group(&position).await?;
                session.claim_pending(&mut position).await?;
                session.forget_departed(&mut refusal).await?;
                info!(redis = %shown, stream = %config.stream, group = %config.group, %consumer, "Reading the Redis stream.");
                retry.connected();
                observer.connected();
                was_connected = true;
                match session
                    .read(&mut position, &durable, &mut refusal, &shutdown)
                    .await?
                {
                    None => break,
                    Some(reason) => refusal.refuse(&reason, observer),
                }
            }
            Ok(())
        };
        let outcome = tokio::select! {
            () = shutdown.cancelled() => break,
            outcome = outcome => outcome,
        };
        let Err(error) = outcome else { break };
        retry.lasted(started.elapsed());
        if !retry
            .wait_after(&error, was_connected, observer, &shutdown)
            .await
        {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_never_show_the_password() {
        let url = Secret::new("redis://exporter:hunter22@r.internal:6379/0");
        let text = scrub(
            "failed for redis://exporter:hunter22@r.internal:6379/0 (hunter22)",
            &url,
        );
        assert!(!text.contains("hunter22"), "{text}");
        assert!(text.contains("redis://r.internal:6379/0"), "{text}");
    }

    #[test]
    fn a_missing_group_is_a_gap_only_when_a_position_was_known() {
        let mut position = Position {
            last_seen: None,
            resume: None,
            unacked: VecDeque::new(),
            next_token: 1,
        };
        assert_eq!(position.restart_point(), (StreamId::ZERO, false));
        position.resume = Some(StreamId { ms: 5, seq: 0 });
        assert_eq!(position.restart_point(), (StreamId { ms: 5, seq: 0 }, true));
        position.last_seen = Some(StreamId { ms: 9, seq: 1 });
        assert_eq!(position.restart_point(), (StreamId { ms: 9, seq: 1 }, true));
    }
}
