//! Where raw frames come from. Every source yields frames as bytes and never decodes them;
//! the pipeline does the rest: recorded JSONL files ([`replay`]), Prefect's events
//! websocket ([`ws`]) and Prefect's Redis `events` stream ([`redis`]), with the reconnect
//! delay the live ones share ([`backoff`]). A live source reports its condition through a [`StreamObserver`] and
//! its failures as [`StreamError`]s, whatever it reads from, and hands the pipeline
//! [`Frame`]s: raw bytes, or a frame it had to read past without holding it.

pub(crate) mod backoff;
pub(crate) mod connect;
pub(crate) mod frame_guard;
pub(crate) mod redis;
pub(crate) mod replay;
pub(crate) mod ws;

use std::time::Duration;

use thiserror::Error;
use tokio_tungstenite::tungstenite::Bytes;

use crate::model::reject::RejectReason;
use crate::model::time::Micros;

/// What a live source hands the pipeline.
#[derive(Debug)]
pub enum Frame {
    /// A raw frame, as received.
    Data(Bytes),
    /// A frame the source read past without holding it, to be counted as rejected.
    Rejected {
        /// Why (`oversize`).
        reason: RejectReason,
        /// Its size.
        bytes: u64,
    },
    /// Every frame before this one of a source that acknowledges (Redis) is handed over:
    /// once they are durable, the pipeline publishes this token back to the source.
    Delivered(u64),
}

/// Why a subscription failed or ended.
#[derive(Debug, Error)]
pub enum StreamError {
    /// The server refused the credentials (its reason, escaped).
    #[error("authentication failed: {0}")]
    Auth(String),
    /// Could not connect or upgrade.
    #[error("connect failed: {0}")]
    Connect(String),
    /// The server closed the stream.
    #[error("closed by server (code {code}{}{reason})", if reason.is_empty() { "" } else { ": " })]
    Closed {
        /// The close code.
        code: u16,
        /// The close reason, escaped.
        reason: String,
    },
    /// The connection broke without a close frame.
    #[error("connection lost: {0}")]
    Lost(String),
    /// The server said something the protocol does not allow.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// Nothing arrived for this long (Prefect pings every 20 s): the connection is taken
    /// for dead.
    #[error("no frame and no ping for {} s; the connection is taken for dead", .0.as_secs())]
    Idle(Duration),
    /// The server sent more control frames (pings, pongs) than any keepalive needs.
    #[error("{frames} control frames within {} s (a ping flood)", .within.as_secs())]
    Flood {
        /// How many arrived.
        frames: u32,
        /// Within how long.
        within: Duration,
    },
}

impl StreamError {
    /// The `reason` label of `prefect_exporter_stream_reconnects_total`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            StreamError::Auth(_) => "auth",
            StreamError::Connect(_) => "connect",
            StreamError::Closed { code: 1012, .. } => "server_restart",
            StreamError::Closed { .. } => "closed",
            StreamError::Lost(_) => "lost",
            StreamError::Protocol(_) => "protocol",
            StreamError::Idle(_) => "idle",
            StreamError::Flood { .. } => "flood",
        }
    }
}

/// What the subscription loop reports and reads.
pub trait StreamObserver: Send + Sync {
    /// The resume point: newest `occurred` applied, if any.
    fn newest_applied(&self) -> Option<Micros>;
    /// The stream is subscribed.
    fn connected(&self);
    /// The stream ended or could not start, and will be retried.
    fn disconnected(&self, error: &StreamError, was_connected: bool);
    /// A reconnect resumes from further back than the server can replay.
    fn backfill_gap(&self, gap: Micros);
    /// The source refuses to read (`Some(reason)`: another reader holds what it would
    /// read, so it is not connected and the service not ready), or reads again (`None`).
    fn exclusive(&self, refused: Option<&str>);
}
