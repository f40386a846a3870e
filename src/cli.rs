//! The command line: every flag, its environment variable, its default and its `--help` text,
//! turned into the plain settings the commands run with ([`Cli::invocation`]).
//!
//! The `///` on a field is its help text and its README line. Values are parsed and checked
//! here, once; a bad value is a one-line error naming the flag and exit code 2 (see `main`).
//! Nothing below this module sees a clap type.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::fake_server::{Faults, Pace, PlayConfig, ServeReplaySettings};
use crate::ingest::PipelineConfig;
use crate::model::group_by::GroupBy;
use crate::model::secret::{Credentials, Secret};
use crate::model::time::{micros, parse_duration, HumanDuration};
use crate::run::settings::{
    ApiSettings, OutputFormat as Output, RecordSettings, RedisSettings, ReplaySettings,
    RunSettings, ServerSettings, SourceSettings, StateFileSettings,
};
use crate::state::StateConfig;

mod sources;
mod web;

pub use sources::{error_line, parse, FromEnv};
pub use web::WebArgs;

/// A flag value that does not parse, with what is expected instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadValue(String);

/// Exact, real-time counts of Prefect flow-run and task-run states from Prefect's events
/// websocket, served as Prometheus/OpenMetrics and JSON.
#[derive(Debug, Parser)]
#[command(
    name = "prefect-events-exporter",
    version,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// What to do (default: `run`).
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Options of `run` when no subcommand is given.
    #[command(flatten)]
    pub run: RunArgs,

    /// Log format (the level is set by `RUST_LOG`).
    #[arg(long, global = true, env = "PREFECT_EXPORTER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// A command and the settings it runs with.
#[allow(
    clippy::large_enum_variant,
    reason = "made once per process; boxing would only add noise"
)]
#[derive(Debug)]
pub enum Invocation {
    /// `run` (or no subcommand).
    Run(RunSettings),
    /// `replay`.
    Replay(ReplaySettings),
    /// `record`.
    Record(RecordSettings),
    /// `serve-replay`.
    ServeReplay(ServeReplaySettings),
}

impl Cli {
    /// The command these flags ask for, with its settings.
    pub fn invocation(self) -> Invocation {
        match self.command {
            Some(Command::Run(args)) => Invocation::Run(args.settings()),
            Some(Command::Replay(args)) => Invocation::Replay(args.settings()),
            Some(Command::Record(args)) => Invocation::Record(args.settings()),
            Some(Command::ServeReplay(args)) => Invocation::ServeReplay(args.settings()),
            None => Invocation::Run(self.run.settings()),
        }
    }
}

/// The subcommands.
#[allow(
    clippy::large_enum_variant,
    reason = "parsed once per process; boxing would only add noise"
)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Follow a Prefect server's events stream (`--prefect-api-url`), or recorded files with
    /// `--replay`, and serve the counts over HTTP until SIGINT/SIGTERM.
    Run(RunArgs),
    /// Process recorded files offline as fast as possible and print the final counts.
    Replay(ReplayArgs),
    /// Subscribe like `run` and append every raw frame to a JSONL file (replay format).
    Record(RecordArgs),
    /// Act as a Prefect events server (websocket and REST) playing recorded files, with
    /// optional fault injection: for testing event consumers without Prefect.
    ServeReplay(ServeReplayArgs),
}

/// Options of `serve-replay`.
#[derive(Clone, Debug, Args)]
pub struct ServeReplayArgs {
    /// Recorded JSONL files, played in order as one timeline.
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,

    /// Address to listen on; clients use `PREFECT_API_URL=http://ADDR/api`.
    #[arg(long)]
    pub listen: SocketAddr,

    /// Release events at this many per second, or `max` for all at once (default: the
    /// recorded pace, times `--speed`).
    #[arg(long, value_parser = parse_rate, allow_hyphen_values = true)]
    pub rate: Option<Rate>,

    /// Play the recorded pace this many times faster.
    #[arg(long, default_value_t = 1.0, value_parser = parse_positive, allow_hyphen_values = true)]
    pub speed: f64,

    /// Keep the recorded timestamps instead of moving the first event to the server's start.
    #[arg(long)]
    pub keep_timestamps: bool,

    /// Play the file again, with fresh ids, after it ends (soak tests).
    #[arg(long = "loop")]
    pub r#loop: bool,

    /// Require this auth string (`user:pass`) like `PREFECT_SERVER_API_AUTH_STRING`.
    #[arg(long, env = "PREFECT_SERVER_API_AUTH_STRING", hide_env_values = true)]
    pub auth_string: Option<Secret>,

    /// Fault: drop each websocket connection abruptly after this many events.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..), allow_hyphen_values = true)]
    pub disconnect_every: Option<u64>,

    /// Fault: with `--disconnect-every`, send this close code instead of dropping the TCP
    /// connection.
    #[arg(long, requires = "disconnect_every", value_parser = clap::value_parser!(u16).range(1000..5000), allow_hyphen_values = true)]
    pub close_code: Option<u16>,

    /// Fault: after each event, resend a random earlier one with this probability.
    #[arg(long, default_value_t = 0.0, value_parser = parse_probability, allow_hyphen_values = true)]
    pub duplicate_rate: f64,

    /// Fault: drop each live event silently with this probability, as the real server does
    /// under bursts (backfill and REST still have it).
    #[arg(long, default_value_t = 0.0, value_parser = parse_probability, allow_hyphen_values = true)]
    pub drop_live_rate: f64,

    /// Fault: shuffle live events within windows of this many.
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    pub reorder_window: usize,

    /// Fault: stop reading and writing for this many milliseconds after every 500 events.
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    pub stall_ms: u64,
}

/// `--rate`: events per second or all at once.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rate {
    /// Events per second.
    PerSecond(f64),
    /// All at once.
    Max,
}

impl ServeReplayArgs {
    fn settings(self) -> ServeReplaySettings {
        let pace = match self.rate {
            Some(Rate::Max) => Pace::Max,
            Some(Rate::PerSecond(n)) => Pace::Rate(n),
            None => Pace::Recorded(self.speed),
        };
        ServeReplaySettings {
            files: self.files,
            listen: self.listen,
            play: PlayConfig {
                pace,
                keep_timestamps: self.keep_timestamps,
                looped: self.r#loop,
            },
            auth_string: self.auth_string,
            faults: Faults {
                disconnect_every: self.disconnect_every,
                close_code: self.close_code,
                duplicate_rate: self.duplicate_rate,
                drop_live_rate: self.drop_live_rate,
                reorder_window: self.reorder_window,
                stall_ms: self.stall_ms,
            },
        }
    }
}

fn parse_rate(text: &str) -> Result<Rate, BadValue> {
    if text == "max" {
        return Ok(Rate::Max);
    }
    parse_positive(text)
        .map(Rate::PerSecond)
        .map_err(|_| BadValue("a positive number of events per second, or max".to_owned()))
}

fn parse_positive(text: &str) -> Result<f64, BadValue> {
    match text.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        _ => Err(BadValue("must be a positive number".to_owned())),
    }
}

fn parse_probability(text: &str) -> Result<f64, BadValue> {
    match text.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(BadValue("must be a probability from 0 to 1".to_owned())),
    }
}

/// Where the Prefect server is and how to authenticate.
#[derive(Clone, Debug, Args)]
pub struct ServerArgs {
    /// Prefect API URL: OSS `http://host:4200/api`, or Cloud
    /// `https://api.prefect.cloud/api/accounts/{account}/workspaces/{workspace}`.
    #[arg(long, env = "PREFECT_API_URL", default_value = "http://127.0.0.1:4200/api", value_parser = parse_api_url)]
    pub prefect_api_url: String,

    /// Prefect Cloud API key (sent as a Bearer token and as the websocket token). Never logged.
    #[arg(
        long,
        env = "PREFECT_API_KEY",
        hide_env_values = true,
        conflicts_with = "auth_string"
    )]
    pub api_key: Option<Secret>,

    /// Prefect OSS auth string `user:pass` (HTTP Basic for REST, the raw string as the
    /// websocket token). Never logged.
    #[arg(long, env = "PREFECT_API_AUTH_STRING", hide_env_values = true)]
    pub auth_string: Option<Secret>,

    /// Reconnect when the events stream has been silent this long: no event and no ping
    /// (Prefect pings every 20 s, so a live connection is never silent for long).
    #[arg(long, env = "PREFECT_EXPORTER_STREAM_IDLE_TIMEOUT", default_value = "45s", value_parser = parse_positive_duration)]
    pub stream_idle_timeout: Duration,
}

impl ServerArgs {
    /// The credentials these flags give (empty values count as absent).
    pub fn credentials(&self) -> Credentials {
        match (&self.api_key, &self.auth_string) {
            (Some(key), _) if !key.expose().is_empty() => Credentials::ApiKey(key.clone()),
            (_, Some(auth)) if !auth.expose().is_empty() => Credentials::AuthString(auth.clone()),
            _ => Credentials::None,
        }
    }

    fn settings(&self) -> ApiSettings {
        ApiSettings {
            url: self.prefect_api_url.clone(),
            credentials: self.credentials(),
            stream_idle_timeout: self.stream_idle_timeout,
        }
    }
}

impl RecordArgs {
    fn settings(self) -> RecordSettings {
        RecordSettings {
            api: self.server.settings(),
            out: self.out,
            task_runs: self.task_runs,
        }
    }
}

/// Options of `record`.
#[derive(Clone, Debug, Args)]
pub struct RecordArgs {
    /// The JSONL file to append frames to (created if missing).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,

    /// Also record task-run events.
    #[arg(long, env = "PREFECT_EXPORTER_TASK_RUNS")]
    pub task_runs: bool,

    /// The server.
    #[command(flatten)]
    pub server: ServerArgs,
}

/// How the counts are computed: shared by every command that ingests events.
#[derive(Clone, Debug, Args)]
pub struct EngineArgs {
    /// Also track task runs (`prefect.task-run.*` state events).
    #[arg(long, env = "PREFECT_EXPORTER_TASK_RUNS")]
    pub task_runs: bool,

    /// Extra label dimensions of the entry and active-run metrics, from the runs' related
    /// resources: a comma-separated list of `deployment`, `flow`, `work_pool`, `work_queue`,
    /// `tag` (or empty for none).
    #[arg(
        long,
        env = "PREFECT_EXPORTER_GROUP_BY",
        default_value = "deployment,work_pool",
        value_parser = parse_group_by
    )]
    pub group_by: GroupByList,

    /// How long (event time) an event id is remembered for deduplication.
    #[arg(long, env = "PREFECT_EXPORTER_DEDUP_WINDOW", default_value = "30m", value_parser = parse_duration, allow_hyphen_values = true)]
    pub dedup_window: Duration,

    /// The most event ids remembered for deduplication; the oldest are dropped first.
    #[arg(long, env = "PREFECT_EXPORTER_DEDUP_CAPACITY", default_value_t = 4_000_000, value_parser = clap::value_parser!(u64).range(1..), allow_hyphen_values = true)]
    pub dedup_capacity: u64,

    /// The most group-by label sets (and distinct state names); past it new ones fold into
    /// `__other__`.
    #[arg(long, env = "PREFECT_EXPORTER_MAX_SERIES", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..), allow_hyphen_values = true)]
    pub max_series: u64,

    /// The most runs of each kind held in memory; past it, the terminal run longest without
    /// an event (or else the run waiting longest in its state) is dropped, its contribution
    /// to the totals kept. Bounds memory against a flood of distinct run ids.
    #[arg(long, env = "PREFECT_EXPORTER_MAX_TRACKED_RUNS", default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..), allow_hyphen_values = true)]
    pub max_tracked_runs: u64,

    /// Forget terminal runs after this long (event time) without an event; their
    /// contribution to the totals stays.
    #[arg(long, env = "PREFECT_EXPORTER_TERMINAL_RETENTION", default_value = "1h", value_parser = parse_duration, allow_hyphen_values = true)]
    pub terminal_retention: Duration,
}

impl EngineArgs {
    /// The pipeline settings these flags describe.
    fn pipeline_config(&self) -> PipelineConfig {
        PipelineConfig {
            state: StateConfig {
                track_task_runs: self.task_runs,
                terminal_retention: micros(self.terminal_retention),
                max_series: usize::try_from(self.max_series).unwrap_or(usize::MAX),
                max_tracked_runs: usize::try_from(self.max_tracked_runs).unwrap_or(usize::MAX),
                group_by: self.group_by.0.clone(),
            },
            dedup_window: micros(self.dedup_window),
            dedup_capacity: usize::try_from(self.dedup_capacity).unwrap_or(usize::MAX),
        }
    }
}

/// Options of `run`.
#[derive(Clone, Debug, Args)]
pub struct RunArgs {
    /// Take events from these recorded JSONL files instead of a Prefect server, then keep
    /// serving the counts.
    #[arg(long, value_name = "FILE", num_args = 1.., env = "PREFECT_EXPORTER_REPLAY", value_delimiter = ',')]
    pub replay: Vec<PathBuf>,

    /// Address of the HTTP server (`/metrics`, `/api/v1/...`).
    #[arg(
        long,
        env = "PREFECT_EXPORTER_LISTEN",
        default_value = "127.0.0.1:9742"
    )]
    pub listen: SocketAddr,

    /// How the HTTP server protects itself.
    #[command(flatten)]
    pub web: WebArgs,

    /// How often to re-count runs over REST and correct drift (`0` = never).
    #[arg(long, env = "PREFECT_EXPORTER_RECONCILE_INTERVAL", default_value = "5m", value_parser = parse_duration, allow_hyphen_values = true)]
    pub reconcile_interval: Duration,

    /// How often to compare closed windows of events with the server's stored events and
    /// repair those that differ (`0` = never).
    #[arg(long, env = "PREFECT_EXPORTER_VERIFY_INTERVAL", default_value = "15s", value_parser = parse_duration, allow_hyphen_values = true)]
    pub verify_interval: Duration,

    /// How old a window of events must be before it is verified (the server persists events
    /// in batches, and client-side task-run events arrive late).
    #[arg(long, env = "PREFECT_EXPORTER_VERIFY_SETTLE", default_value = "15s", value_parser = parse_duration, allow_hyphen_values = true)]
    pub verify_settle: Duration,

    /// Skip the REST baseline at start: totals then cover only runs seen in the stream until
    /// the first reconciliation.
    #[arg(long, env = "PREFECT_EXPORTER_NO_BOOTSTRAP")]
    pub no_bootstrap: bool,

    /// Keep counters, tracked runs, the dedup window and the resume point in this file:
    /// loaded at start (counters continue, the stream resumes from the saved point), written
    /// atomically every `--snapshot-interval` and at shutdown.
    #[arg(long, env = "PREFECT_EXPORTER_STATE_FILE", value_name = "PATH")]
    pub state_file: Option<PathBuf>,

    /// How often the state file is written.
    #[arg(long, env = "PREFECT_EXPORTER_SNAPSHOT_INTERVAL", default_value = "10s", value_parser = parse_positive_duration, allow_hyphen_values = true)]
    pub snapshot_interval: Duration,

    /// Start fresh when the state file is corrupt, truncated, from a newer release or
    /// written with other settings (it is moved aside to `PATH.discarded`), instead of
    /// refusing to start.
    #[arg(
        long,
        env = "PREFECT_EXPORTER_DISCARD_BAD_STATE",
        requires = "state_file"
    )]
    pub discard_bad_state: bool,

    /// The server (ignored with `--replay`).
    #[command(flatten)]
    pub server: ServerArgs,

    /// Read events from Prefect's Redis messaging stream (prefect-redis) at this URL
    /// (`redis://[user:password@]host:port/db`, `rediss://` for TLS) instead of the
    /// websocket; REST still gives the baseline, verification and reconciliation. Without it,
    /// Prefect's own PREFECT_REDIS_MESSAGING_HOST/_PORT/_DB/_USERNAME/_PASSWORD/_SSL are used
    /// when host, port or db is set. Never logged.
    #[arg(long, env = "PREFECT_REDIS_MESSAGING_URL", hide_env_values = true)]
    pub redis_url: Option<Secret>,

    /// The Redis stream Prefect publishes events to.
    #[arg(long, env = "PREFECT_EXPORTER_REDIS_STREAM", default_value = "events", value_parser = parse_redis_name)]
    pub redis_stream: String,

    /// The exporter's own consumer group on the stream: one per exporter (replicas for high
    /// availability each need their own). Must not start with `ephemeral` (Prefect deletes
    /// those groups).
    #[arg(long, env = "PREFECT_EXPORTER_REDIS_GROUP", default_value = "prefect-events-exporter", value_parser = parse_redis_group)]
    pub redis_group: String,

    /// Counting options.
    #[command(flatten)]
    pub engine: EngineArgs,
}

impl RunArgs {
    fn settings(self) -> RunSettings {
        let source = if self.replay.is_empty() {
            SourceSettings::Server(ServerSettings {
                api: self.server.settings(),
                reconcile_interval: self.reconcile_interval,
                verify_interval: self.verify_interval,
                verify_settle: self.verify_settle,
                bootstrap: !self.no_bootstrap,
                redis: RedisSettings {
                    url: self.redis_url.filter(|u| !u.expose().is_empty()),
                    stream: self.redis_stream,
                    group: self.redis_group,
                },
            })
        } else {
            SourceSettings::Replay(self.replay)
        };
        let web = self.web;
        RunSettings {
            web: web.settings(self.listen),
            engine: self.engine.pipeline_config(),
            state_file: self.state_file.map(|path| StateFileSettings {
                path,
                discard_bad: self.discard_bad_state,
                snapshot_interval: self.snapshot_interval,
            }),
            source,
        }
    }
}

/// Options of `replay`.
#[derive(Clone, Debug, Args)]
pub struct ReplayArgs {
    /// Recorded JSONL files, processed in order as one stream.
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,

    /// Output format of the final counts.
    #[arg(long, value_enum, default_value_t = OutputFormat::Json)]
    pub output: OutputFormat,

    /// Counting options.
    #[command(flatten)]
    pub engine: EngineArgs,
}

impl ReplayArgs {
    fn settings(self) -> ReplaySettings {
        ReplaySettings {
            engine: self.engine.pipeline_config(),
            files: self.files,
            output: match self.output {
                OutputFormat::Json => Output::Json,
                OutputFormat::Prometheus => Output::Prometheus,
            },
        }
    }
}

/// Output of `replay`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// The `/api/v1/counts` document.
    Json,
    /// The `/metrics` text (Prometheus 0.0.4).
    Prometheus,
}

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The parsed `--group-by` list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupByList(pub Vec<GroupBy>);

fn parse_group_by(text: &str) -> Result<GroupByList, BadValue> {
    let mut dims = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let dim = GroupBy::parse(part).ok_or_else(|| {
            let choices: Vec<&str> = GroupBy::ALL.iter().map(|g| g.label()).collect();
            BadValue(format!(
                "unknown dimension '{part}' (choices: {})",
                choices.join(", ")
            ))
        })?;
        if dims.contains(&dim) {
            return Err(BadValue(format!("dimension '{part}' given twice")));
        }
        dims.push(dim);
    }
    Ok(GroupByList(dims))
}

/// Checks a Prefect API URL (http or https with a host) and drops a trailing `/`.
fn parse_api_url(text: &str) -> Result<String, crate::model::Error> {
    crate::source::ws::events_url(text)?;
    Ok(text.trim_end_matches('/').to_owned())
}

/// A stream or group name: not empty, no whitespace or control characters.
fn parse_redis_name(text: &str) -> Result<String, BadValue> {
    if text.is_empty() {
        return Err(BadValue("must not be empty".to_owned()));
    }
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(BadValue(
            "must not contain spaces or control characters".to_owned(),
        ));
    }
    Ok(text.to_owned())
}

/// A consumer group name: Prefect deletes groups named `ephemeral…` when they are empty.
fn parse_redis_group(text: &str) -> Result<String, BadValue> {
    let name = parse_redis_name(text)?;
    if name.starts_with("ephemeral") {
        return Err(BadValue(
            "must not start with 'ephemeral' (Prefect deletes such groups)".to_owned(),
        ));
    }
    Ok(name)
}

fn parse_positive_duration(text: &str) -> Result<Duration, BadValue> {
    match parse_duration(text).map_err(|e| BadValue(e.to_string()))? {
        Duration::ZERO => Err(BadValue("must be longer than 0".to_owned())),
        duration => Ok(duration),
    }
}

fn parse_positive_human_duration(text: &str) -> Result<HumanDuration, BadValue> {
    parse_positive_duration(text).map(HumanDuration)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::web::server::DEFAULT_HEADER_TIMEOUT;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn group_by_parses_and_rejects() {
        assert_eq!(
            parse_group_by("deployment, work_pool").unwrap().0,
            vec![GroupBy::Deployment, GroupBy::WorkPool]
        );
        assert_eq!(parse_group_by("").unwrap().0, vec![]);
        assert!(parse_group_by("deployment,color")
            .unwrap_err()
            .to_string()
            .contains("'color'"));
        assert!(parse_group_by("tag,tag").is_err());
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let cli = Cli::try_parse_from(["x", "--auth-string", "admin:hunter2"]).unwrap();
        assert!(!format!("{cli:?}").contains("hunter2"));
        let cli = Cli::try_parse_from(["x", "--api-key", "pnu_secret"]).unwrap();
        assert!(!format!("{cli:?}").contains("pnu_secret"));
        assert!(matches!(
            cli.run.server.credentials(),
            Credentials::ApiKey(_)
        ));
        let cli = Cli::try_parse_from(["x", "--web-auth-token", "scrape-token-42"]).unwrap();
        assert!(!format!("{cli:?}").contains("scrape-token-42"));
        let hash = "$2b$04$abcdefghijklmnopqrstuuJtpZ6p3cb0uA1GvjhJq0LmnGUlCx0Ga";
        let cli = Cli::try_parse_from(["x", "--web-basic-auth", &format!("prom:{hash}")]).unwrap();
        let debug = format!("{cli:?}");
        assert!(!debug.contains(hash) && !debug.contains("prom:"), "{debug}");
    }

    #[test]
    fn web_auth_flags_conflict_and_tls_flags_need_each_other() {
        let both = ["x", "--web-auth-token", "t", "--web-basic-auth", "u:h"];
        assert!(Cli::try_parse_from(both).is_err());
        assert!(Cli::try_parse_from(["x", "--web-tls-cert", "c.pem"]).is_err());
        assert!(Cli::try_parse_from(["x", "--web-tls-key", "k.pem"]).is_err());
        let cli = Cli::try_parse_from(["x", "--web-tls-cert", "c.pem", "--web-tls-key", "k.pem"])
            .unwrap();
        assert_eq!(cli.run.web.web_tls_key, Some(PathBuf::from("k.pem")));
        let Invocation::Run(settings) = cli.invocation() else {
            panic!("bare flags are run");
        };
        assert_eq!(
            settings.web.tls,
            Some((PathBuf::from("c.pem"), PathBuf::from("k.pem")))
        );
        assert_eq!(settings.web.header_timeout, DEFAULT_HEADER_TIMEOUT);
        assert!(Cli::try_parse_from(["x", "--web-header-timeout", "0"]).is_err());
        assert!(Cli::try_parse_from(["x", "--web-max-connections", "0"]).is_err());
    }

    #[test]
    fn api_url_is_checked() {
        assert!(Cli::try_parse_from(["x", "--prefect-api-url", "localhost:4200"]).is_err());
        let cli = Cli::try_parse_from(["x", "--prefect-api-url", "http://h:4200/api/"]).unwrap();
        assert_eq!(cli.run.server.prefect_api_url, "http://h:4200/api");
    }

    #[test]
    fn log_format_is_one_global_flag() {
        for args in [
            &["x", "--log-format", "json"][..],
            &["x", "run", "--log-format", "json"],
            &["x", "replay", "a.jsonl", "--log-format", "json"],
            &[
                "x",
                "serve-replay",
                "a.jsonl",
                "--listen",
                "127.0.0.1:0",
                "--log-format",
                "json",
            ],
            &["x", "record", "--out", "o.jsonl", "--log-format", "json"],
        ] {
            let cli = Cli::try_parse_from(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            assert_eq!(cli.log_format, LogFormat::Json, "{args:?}");
        }
    }

    #[test]
    fn bare_invocation_is_run() {
        let cli =
            Cli::try_parse_from(["x", "--listen", "127.0.0.1:1", "--replay", "a.jsonl"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.run.replay, vec![PathBuf::from("a.jsonl")]);
    }
}
