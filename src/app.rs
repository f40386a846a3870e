//! Wires a source to the pipeline, the pipeline to the HTTP server, and orders shutdown.
//!
//! `run`: check the web flags, bind HTTP, load events, serve until the shutdown token is cancelled, drain.
//! `replay`: process files offline and report.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::{OutputFormat, ReplayArgs, RunArgs, WebArgs};
use crate::decode::RejectReason;
use crate::exposition::Format;
use crate::http::{serve_api, AppState, ServeConfig};
use crate::metrics::{wall_clock, Metrics};
use crate::persist::format::ReplayV1;
use crate::persist::{Opened, Snapshotter};
use crate::pipeline::Pipeline;
use crate::report::CountsReport;
use crate::source::replay::{Line, LineReader};
use crate::state::Shared;
use crate::status::Status;
use crate::web_auth::Authenticator;
use crate::web_limits::{ConnectionCap, HttpStats};

/// Frames applied per lock of the aggregates while loading files.
const LOAD_BATCH: usize = 1024;

/// Why a command failed.
#[derive(Debug, Error)]
pub enum AppError {
    /// Bad configuration: exit code 2.
    #[error("{flag}: {message}")]
    Config {
        /// The flag (or argument) at fault.
        flag: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The HTTP server could not start or failed.
    #[error("HTTP server on {addr}: {source}")]
    Http {
        /// The listen address.
        addr: String,
        /// The cause.
        source: io::Error,
    },
}

impl AppError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            AppError::Config { .. } => 2,
            _ => 1,
        }
    }
}

/// Opens `--state-file` (when given) into a fresh `pipeline`: an unusable file is a
/// configuration error (exit 2).
pub fn open_state(
    args: &RunArgs,
    pipeline: &mut Pipeline,
    source: &str,
) -> Result<Option<(Snapshotter, Opened)>, AppError> {
    let Some(path) = &args.state_file else {
        return Ok(None);
    };
    crate::persist::open(path, args.discard_bad_state, pipeline, source)
        .map(Some)
        .map_err(|e| AppError::Config {
            flag: "--state-file",
            message: e.to_string(),
        })
}

/// Writes the state file a last time at shutdown (logging a failure); `replay` is how far
/// `run --replay` had read.
pub async fn final_snapshot(
    snapshotter: Option<&Snapshotter>,
    pipeline: &mut Pipeline,
    replay: Option<ReplayV1>,
) {
    if let Some(snapshotter) = snapshotter {
        match snapshotter.flush(pipeline, replay).await {
            Ok(bytes) => info!(bytes, "State file written at shutdown."),
            Err(e) => error!(error = %e, "Could not write the state file at shutdown."),
        }
    }
}

/// Checks that every file can be opened before any work starts.
fn check_readable(flag: &'static str, files: &[PathBuf]) -> Result<(), AppError> {
    for path in files {
        if let Err(e) = std::fs::File::open(path) {
            return Err(AppError::Config {
                flag,
                message: format!("cannot read {}: {e}", path.display()),
            });
        }
    }
    Ok(())
}

/// What loading files amounted to.
#[derive(Debug, Default, Clone, Copy)]
pub struct LoadSummary {
    /// Lines read.
    pub lines: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Whether shutdown stopped the load before the end.
    pub stopped: bool,
}

/// Feeds every line of `files` through `pipeline`, in batches. Stops early (returning what was
/// done) when `stop` is cancelled.
pub fn load_files(
    pipeline: &mut Pipeline,
    files: &[PathBuf],
    stop: Option<&CancellationToken>,
) -> Result<LoadSummary, AppError> {
    load_files_from(pipeline, files, stop, None, &mut |_, _, _| {})
}

/// [`load_files`] starting at file `resume.0`, byte `resume.1`, calling `after_batch` with
/// the file index and the bytes of it applied after every batch.
pub fn load_files_from(
    pipeline: &mut Pipeline,
    files: &[PathBuf],
    stop: Option<&CancellationToken>,
    resume: Option<(usize, u64)>,
    after_batch: &mut dyn FnMut(&mut Pipeline, usize, u64),
) -> Result<LoadSummary, AppError> {
    let mut summary = LoadSummary::default();
    let (first, offset) = resume.unwrap_or((0, 0));
    for (index, path) in files.iter().enumerate().skip(first) {
        let read_error = |source| AppError::Read {
            path: path.clone(),
            source,
        };
        let start = if index == first { offset } else { 0 };
        let mut reader = LineReader::open_at(path, start).map_err(read_error)?;
        let started_at = reader.bytes_read();
        'file: loop {
            if stop.is_some_and(CancellationToken::is_cancelled) {
                summary.stopped = true;
                return Ok(summary);
            }
            {
                let mut batch = pipeline.batch();
                for _ in 0..LOAD_BATCH {
                    match reader.next_line().map_err(read_error)? {
                        None => break 'file,
                        Some(Line::Frame(frame)) => {
                            batch.ingest(frame);
                        }
                        Some(Line::Oversize(bytes)) => batch.reject(RejectReason::Oversize, bytes),
                    }
                    summary.lines += 1;
                }
            }
            after_batch(pipeline, index, reader.bytes_read());
        }
        after_batch(pipeline, index, reader.bytes_read());
        summary.bytes += reader.bytes_read() - started_at;
    }
    Ok(summary)
}

/// Binds a TCP listener and returns it with the address it got (port 0 picks a free one).
pub async fn bind(
    listen: std::net::SocketAddr,
) -> Result<(TcpListener, std::net::SocketAddr), AppError> {
    let http_error = |source| AppError::Http {
        addr: listen.to_string(),
        source,
    };
    let listener = TcpListener::bind(listen).await.map_err(http_error)?;
    let local = listener.local_addr().map_err(http_error)?;
    Ok((listener, local))
}

/// The HTTP side of `run`: bound, serving until the shutdown token is cancelled.
pub struct HttpService {
    /// Where it listens.
    pub local: std::net::SocketAddr,
    handle: tokio::task::JoinHandle<io::Result<()>>,
    addr: String,
}

impl HttpService {
    /// Checks the `--web-*` flags (a bad one is a configuration error), binds `listen` and
    /// serves `shared` and `status`.
    pub async fn start(
        listen: std::net::SocketAddr,
        web: &WebArgs,
        shared: Arc<Shared>,
        status: Arc<Status>,
        shutdown: CancellationToken,
    ) -> Result<HttpService, AppError> {
        let auth =
            Authenticator::from_flags(web.web_auth_token.as_ref(), web.web_basic_auth.as_ref())?;
        let tls = match (&web.web_tls_cert, &web.web_tls_key) {
            (Some(cert), Some(key)) => Some(crate::web_tls::acceptor(cert, key)?),
            _ => None,
        };
        let stats = Arc::new(HttpStats::default());
        let config = ServeConfig {
            header_timeout: web.web_header_timeout,
            cap: ConnectionCap::new(
                usize::try_from(web.web_max_connections).unwrap_or(usize::MAX),
                stats.clone(),
            ),
            tls,
        };
        let clock = wall_clock();
        let metrics = Metrics::new(shared.clone(), status.clone(), clock.clone());
        metrics.register_http(stats.clone());
        let (listener, local) = bind(listen).await?;
        let addr = listen.to_string();
        info!(
            listen = %local,
            tls = config.tls.is_some(),
            auth = auth.as_ref().map_or("none", Authenticator::scheme_name),
            max_connections = config.cap.limit(),
            "Serving HTTP."
        );
        let state = Arc::new(AppState {
            shared,
            status,
            metrics,
            clock,
            auth,
            stats,
            body_timeout: web.web_header_timeout,
        });
        let handle = tokio::spawn(serve_api(listener, config, state, shutdown));
        Ok(HttpService {
            local,
            handle,
            addr,
        })
    }

    /// Waits for the server to drain and stop.
    pub async fn finish(self) -> Result<(), AppError> {
        match self.handle.await {
            Ok(result) => result.map_err(|source| AppError::Http {
                addr: self.addr,
                source,
            }),
            Err(e) => Err(AppError::Http {
                addr: self.addr,
                source: io::Error::other(e.to_string()),
            }),
        }
    }
}

/// `run`: serve HTTP until `shutdown`, with events from `--replay` files or from the
/// Prefect server.
pub async fn run(args: RunArgs, shutdown: CancellationToken) -> Result<(), AppError> {
    if args.replay.is_empty() {
        return crate::live::run(args, shutdown).await;
    }
    check_readable("--replay", &args.replay)?;
    let mut pipeline = Pipeline::new(args.engine.pipeline_config());
    let (snapshotter, opened) =
        match open_state(&args, &mut pipeline, crate::persist::REPLAY_SOURCE)? {
            Some((snapshotter, opened)) => (Some(snapshotter), opened),
            None => (None, Opened::default()),
        };
    let files = args.replay.clone();
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    let resume = match &opened.replay {
        Some(saved) if saved.files == names => {
            info!(
                file = saved.file,
                offset = saved.offset,
                "Continuing the replay where the state file left it."
            );
            Some((saved.file as usize, saved.offset))
        }
        Some(_) => {
            warn!("The replay files differ from the state file's; reading them from the start (events still in the dedup window count once).");
            None
        }
        None => None,
    };
    let status = Arc::new(Status::new());
    status.require("replay", "loading replay files");
    let http = HttpService::start(
        args.listen,
        &args.web,
        pipeline.shared(),
        status.clone(),
        shutdown.clone(),
    )
    .await?;

    let loader_stop = shutdown.clone();
    let every = args.snapshot_interval;
    let loader = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut last_snapshot = Instant::now();
        let mut position = opened.replay.clone().filter(|_| resume.is_some());
        let mut after_batch = |pipeline: &mut Pipeline, file: usize, offset: u64| {
            let here = ReplayV1 {
                files: names.clone(),
                file: file as u32,
                offset,
            };
            if let Some(snapshotter) = &snapshotter {
                if last_snapshot.elapsed() >= every {
                    snapshotter.snapshot_replay(pipeline, here.clone());
                    last_snapshot = Instant::now();
                }
            }
            position = Some(here);
        };
        match load_files_from(
            &mut pipeline,
            &files,
            Some(&loader_stop),
            resume,
            &mut after_batch,
        ) {
            Ok(summary) if summary.stopped => {
                info!(lines = summary.lines, "Replay stopped at shutdown.");
            }
            Ok(summary) => {
                if let (Some(snapshotter), Some(here)) = (&snapshotter, &position) {
                    snapshotter.snapshot_replay(&mut pipeline, here.clone());
                }
                info!(
                    files = files.len(),
                    lines = summary.lines,
                    bytes = summary.bytes,
                    seconds = started.elapsed().as_secs_f64(),
                    "Replay files loaded."
                );
                status.satisfy("replay");
            }
            Err(e) => {
                error!(error = %e, "Replay stopped.");
                status.require("replay", format!("replay failed: {e}"));
            }
        }
        (pipeline, snapshotter, position)
    });

    let served = http.finish().await;
    // The loader checks the token between batches; give it a moment to stop.
    match tokio::time::timeout(Duration::from_secs(30), loader).await {
        Ok(Ok((mut pipeline, snapshotter, position))) => {
            final_snapshot(snapshotter.as_ref(), &mut pipeline, position).await;
        }
        _ if args.state_file.is_some() => {
            error!(
                "The replay loader did not stop in time; the state file keeps its last snapshot."
            );
        }
        _ => {}
    }
    served?;
    info!("Stopped.");
    Ok(())
}

/// What `replay` prints on stderr.
#[derive(Debug, Clone, Copy)]
pub struct ReplaySummary {
    /// Lines and bytes read.
    pub load: LoadSummary,
    /// Wall time.
    pub elapsed: Duration,
}

impl ReplaySummary {
    /// The one-line throughput summary (with the peak RSS where the OS reports it).
    pub fn line(&self, events: u64) -> String {
        let seconds = self.elapsed.as_secs_f64().max(1e-9);
        let rss = peak_rss_mb()
            .map(|mb| format!(", peak RSS {mb:.0} MB"))
            .unwrap_or_default();
        format!(
            "replayed {} lines ({:.1} MB, {} events) in {:.3} s: {:.0} events/s, {:.1} MB/s{rss}",
            self.load.lines,
            self.load.bytes as f64 / 1e6,
            events,
            seconds,
            events as f64 / seconds,
            self.load.bytes as f64 / 1e6 / seconds,
        )
    }
}

/// Peak resident memory of this process in MB (`VmHWM` on Linux).
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// `replay`: processes the files and returns the output to print and the summary line.
pub fn replay(args: &ReplayArgs) -> Result<(String, String), AppError> {
    check_readable("FILE", &args.files)?;
    let mut pipeline = Pipeline::new(args.engine.pipeline_config());
    let started = Instant::now();
    let load = load_files(&mut pipeline, &args.files, None)?;
    let summary = ReplaySummary {
        load,
        elapsed: started.elapsed(),
    };
    let shared = pipeline.shared();
    let status = Arc::new(Status::new());
    let report = CountsReport::build(&shared, &status);
    let output = match args.output {
        OutputFormat::Json => serde_json::to_string_pretty(&report).unwrap_or_default() + "\n",
        OutputFormat::Prometheus => {
            let metrics = Metrics::new(shared, status, wall_clock());
            metrics.render(Format::Prometheus)
        }
    };
    Ok((output, summary.line(report.events.received)))
}
