//! What each command runs with, as plain values: the command line (`crate::cli`) builds these
//! and runtime code reads only these, never a clap type.

use std::path::PathBuf;
use std::time::Duration;

use crate::ingest::PipelineConfig;
use crate::model::secret::Credentials;
use crate::web::api::WebSettings;

/// Settings of `run`.
#[derive(Clone, Debug)]
pub struct RunSettings {
    /// The API server.
    pub web: WebSettings,
    /// How counts are computed.
    pub engine: PipelineConfig,
    /// The state file, if any.
    pub state_file: Option<StateFileSettings>,
    /// Where events come from.
    pub source: SourceSettings,
}

/// Where `run` takes events from.
#[derive(Clone, Debug)]
pub enum SourceSettings {
    /// Recorded JSONL files (`--replay`), then keep serving the counts.
    Replay(Vec<PathBuf>),
    /// A Prefect server.
    Server(ServerSettings),
}

/// A Prefect server to follow, and how to check against it.
#[derive(Clone, Debug)]
pub struct ServerSettings {
    /// Where the server is and how to authenticate.
    pub api: ApiSettings,
    /// How often to re-count runs over REST (zero: never).
    pub reconcile_interval: Duration,
    /// How often to verify closed windows of events (zero: never).
    pub verify_interval: Duration,
    /// How old a window must be before it is verified.
    pub verify_settle: Duration,
    /// Take the REST baseline at start.
    pub bootstrap: bool,
}

/// A Prefect API: its URL and credentials, and how long its events stream may stay silent.
#[derive(Clone, Debug)]
pub struct ApiSettings {
    /// `PREFECT_API_URL`, without a trailing `/`.
    pub url: String,
    /// How to authenticate.
    pub credentials: Credentials,
    /// An events stream silent this long (no event, no ping) is reconnected.
    pub stream_idle_timeout: Duration,
}

/// The state file of `run`.
#[derive(Clone, Debug)]
pub struct StateFileSettings {
    /// Where it is.
    pub path: PathBuf,
    /// Start fresh when it is unusable instead of refusing to start.
    pub discard_bad: bool,
    /// How often it is written.
    pub snapshot_interval: Duration,
}

/// Settings of `replay`.
#[derive(Clone, Debug)]
pub struct ReplaySettings {
    /// Recorded JSONL files, processed in order as one stream.
    pub files: Vec<PathBuf>,
    /// What to print.
    pub output: OutputFormat,
    /// How counts are computed.
    pub engine: PipelineConfig,
}

/// What `replay` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    /// The `/api/v1/counts` document.
    Json,
    /// The `/metrics` text (Prometheus 0.0.4).
    Prometheus,
}

/// Settings of `record`.
#[derive(Clone, Debug)]
pub struct RecordSettings {
    /// The JSONL file to append frames to.
    pub out: PathBuf,
    /// Also record task-run events.
    pub task_runs: bool,
    /// The server.
    pub api: ApiSettings,
}
