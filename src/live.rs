//! Live mode of `run`: the REST baseline, the websocket source, the pipeline task, and the
//! reconciliation and verification loops, wired together and stopped by one token.
//!
//! Order at start: HTTP first (so `/healthz` answers and `/readyz` explains the wait), then
//! the baseline (retried until the server answers), then the stream from the baseline time
//! minus the resume overlap. The socket reader only forwards frames into a bounded channel;
//! one task owns the pipeline and applies frames in batches.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Notify};
use tokio_tungstenite::tungstenite::Bytes;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::app::{AppError, HttpService};
use crate::config::RunArgs;
use crate::event::{RunKind, StateType};
use crate::persist::Snapshotter;
use crate::pipeline::Pipeline;
use crate::prefect_api::{ApiError, NameFilter, PrefectApi};
use crate::reconcile::Reconciler;
use crate::source::ws::{
    self, StreamError, StreamObserver, WsConfig, RESUME_OVERLAP, SERVER_BACKFILL,
};
use crate::state::Shared;
use crate::status::Status;
use crate::timestamp::{now_micros, Micros};
use crate::verify::{RepairBatch, Verifier, VerifyConfig};

/// Frames buffered between the socket reader and the pipeline.
const FRAME_QUEUE: usize = 16_384;
/// Frames applied per lock of the aggregates.
const BATCH: usize = 512;
/// Quiet time required around a reconciliation.
const RECONCILE_SETTLE: Duration = Duration::from_secs(3);
/// When each window is verified a second time.
const SECOND_PASS: Duration = Duration::from_secs(300);
/// Most non-terminal runs loaded from REST at start.
const SEED_LIMIT: usize = 50_000;

/// The event-name prefixes to subscribe to.
pub fn prefixes(task_runs: bool) -> Vec<&'static str> {
    let mut prefixes = vec![RunKind::FlowRun.resource_prefix()];
    if task_runs {
        prefixes.push(RunKind::TaskRun.resource_prefix());
    }
    prefixes
}

/// Reports the stream's condition into the shared state.
struct Observer {
    shared: Arc<Shared>,
    status: Arc<Status>,
    reconcile: Arc<Notify>,
}

impl StreamObserver for Observer {
    fn newest_applied(&self) -> Option<Micros> {
        self.shared.counts.lock().events.last_occurred
    }

    fn connected(&self) {
        self.status.set_connected(true);
        self.status.satisfy("stream");
    }

    fn disconnected(&self, error: &StreamError, _was_connected: bool) {
        self.status.set_connected(false);
        self.status
            .require("stream", format!("events stream: {error}"));
        self.status.count_reconnect(error.metric_label());
    }

    fn backfill_gap(&self, _gap: Micros) {
        self.shared.counts.lock().checks.backfill_gaps += 1;
        self.reconcile.notify_one();
    }
}

/// Takes the first baseline, retrying until it succeeds or `shutdown`.
async fn bootstrap(reconciler: &Reconciler, status: &Status, shutdown: &CancellationToken) -> bool {
    let mut delay = Duration::from_secs(1);
    let mut last_error = String::new();
    loop {
        match reconciler.attempt(false).await {
            Ok(_) => return true,
            Err(e) => {
                let message = e.to_string();
                let reason = match &e {
                    ApiError::Auth { .. } => format!("authentication failed: {message}"),
                    _ => format!("REST baseline failed: {message}"),
                };
                if message != last_error {
                    if matches!(e, ApiError::Auth { .. }) {
                        error!(error = %e, "The Prefect server refused the credentials.");
                    } else {
                        warn!(error = %e, "Could not take the REST baseline; retrying.");
                    }
                    last_error = message;
                }
                status.require("baseline", reason);
                if matches!(e, ApiError::Auth { .. }) {
                    delay = Duration::from_secs(60);
                }
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return false,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

/// Loads non-terminal runs (and late ones) so runs stuck since before the start are seen.
async fn seed_runs(api: &PrefectApi, pipeline: &mut Pipeline, kinds: &[RunKind]) {
    let active = [
        StateType::Pending,
        StateType::Running,
        StateType::Cancelling,
        StateType::Paused,
    ];
    let late = ["Late".to_owned()];
    for &kind in kinds {
        let mut runs = match api
            .list_runs(kind, &active, NameFilter::Any, SEED_LIMIT)
            .await
        {
            Ok(runs) => runs,
            Err(e) => {
                warn!(error = %e, kind = kind.as_str(), "Could not list non-terminal runs; they appear when their next event arrives.");
                continue;
            }
        };
        if let Ok(late_runs) = api
            .list_runs(
                kind,
                &[StateType::Scheduled],
                NameFilter::OneOf(&late),
                SEED_LIMIT,
            )
            .await
        {
            runs.extend(late_runs);
        }
        let now = now_micros();
        for run in &runs {
            pipeline.seed_run(kind, run, now);
        }
        info!(
            kind = kind.as_str(),
            runs = runs.len(),
            "Loaded non-terminal runs from REST."
        );
    }
}

/// Applies frames and repairs until both channels close or `shutdown`, handing changes to
/// the state-file writer every `snapshot_every` and a last time before it returns.
async fn pipeline_task(
    mut pipeline: Pipeline,
    mut frames: mpsc::Receiver<Bytes>,
    mut repairs: mpsc::Receiver<RepairBatch>,
    snapshotter: Option<Snapshotter>,
    snapshot_every: Duration,
    shutdown: CancellationToken,
) {
    let mut batch: Vec<Bytes> = Vec::with_capacity(BATCH);
    let mut snapshots = crate::persist::interval(snapshot_every);
    snapshots.reset();
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            _ = snapshots.tick(), if snapshotter.is_some() => {
                if let Some(snapshotter) = &snapshotter {
                    snapshotter.snapshot(&mut pipeline);
                }
            }
            Some(repair) = repairs.recv() => {
                let mut new = 0;
                {
                    let mut b = pipeline.batch();
                    for event in &repair.events {
                        if b.ingest(event).is_new_event() {
                            new += 1;
                        }
                    }
                }
                let _ = repair.done.send(new);
            }
            received = frames.recv_many(&mut batch, BATCH) => {
                if received == 0 {
                    break;
                }
                pipeline.ingest_batch(batch.drain(..));
            }
        }
    }
    crate::app::final_snapshot(snapshotter.as_ref(), &mut pipeline, None).await;
}

/// `run` against a Prefect server.
pub async fn run(args: RunArgs, shutdown: CancellationToken) -> Result<(), AppError> {
    let credentials = args.server.credentials();
    let api = PrefectApi::new(&args.server.prefect_api_url, &credentials).map_err(|e| {
        AppError::Config {
            flag: "--prefect-api-url",
            message: e.to_string(),
        }
    })?;
    let config = args.engine.pipeline_config();
    let prefixes = prefixes(config.state.track_task_runs);
    let mut pipeline = Pipeline::new(config);
    let source = args.server.prefect_api_url.clone();
    let (snapshotter, opened) = match crate::app::open_state(&args, &mut pipeline, &source)? {
        Some((snapshotter, opened)) => (Some(snapshotter), opened),
        None => (None, Default::default()),
    };
    let restored = opened.resume;
    pipeline.enable_ledger(prefixes.clone());
    let shared = pipeline.shared();
    let kinds: Vec<RunKind> = shared.kinds().collect();

    // A restored state file with a baseline carries it with the counts: no new baseline.
    let bootstrap_now = !args.no_bootstrap && opened.baseline.is_none();
    let status = Arc::new(Status::new());
    status.require("stream", "connecting to the events stream");
    if bootstrap_now {
        status.require("baseline", "taking the REST baseline");
    }
    let http = HttpService::start(
        args.listen,
        &args.web,
        shared.clone(),
        status.clone(),
        shutdown.clone(),
    )
    .await?;

    let reconcile_now = Arc::new(Notify::new());
    let reconciler = Reconciler::new(api.clone(), shared.clone(), RECONCILE_SETTLE);
    let start = restored.unwrap_or_else(now_micros);
    if let Some(resume) = restored {
        if now_micros().saturating_sub(resume) > SERVER_BACKFILL {
            warn!("The state file is older than the server's 15-minute backfill; the gap is closed by verification and reconciliation.");
            shared.counts.lock().checks.backfill_gaps += 1;
            reconcile_now.notify_one();
        }
    }
    if bootstrap_now {
        if !bootstrap(&reconciler, &status, &shutdown).await {
            return http.finish().await;
        }
        seed_runs(&api, &mut pipeline, &kinds).await;
        status.satisfy("baseline");
        info!(api = %args.server.prefect_api_url, "REST baseline taken.");
    }

    let (frame_tx, frame_rx) = mpsc::channel(FRAME_QUEUE);
    let (repair_tx, repair_rx) = mpsc::channel(4);
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(pipeline_task(
        pipeline,
        frame_rx,
        repair_rx,
        snapshotter,
        args.snapshot_interval,
        shutdown.clone(),
    ));

    let ws_config = WsConfig {
        api_url: args.server.prefect_api_url.clone(),
        credentials,
        prefixes: prefixes.clone(),
    };
    let observer = Observer {
        shared: shared.clone(),
        status: status.clone(),
        reconcile: reconcile_now.clone(),
    };
    let stream_stop = shutdown.clone();
    tasks.spawn(async move { ws::run(ws_config, start, frame_tx, &observer, stream_stop).await });

    if !args.reconcile_interval.is_zero() {
        let interval = args.reconcile_interval;
        let trigger = reconcile_now.clone();
        let stop = shutdown.clone();
        tasks.spawn(async move { reconciler.run(interval, trigger, stop).await });
    }
    if !args.verify_interval.is_zero() {
        let verifier = Verifier::new(
            api.clone(),
            shared.clone(),
            repair_tx,
            VerifyConfig {
                interval: args.verify_interval,
                settle: crate::config::micros(args.verify_settle),
                second_pass_after: SECOND_PASS,
            },
        );
        let trigger = reconcile_now.clone();
        let stop = shutdown.clone();
        // After a restart, windows up to the second pass are checked again (their ledger
        // was restored), so late events that missed the last snapshot are still repaired.
        let verify_from = match restored {
            Some(resume) => resume - crate::config::micros(SECOND_PASS),
            None => start - RESUME_OVERLAP,
        };
        tasks.spawn(async move { verifier.run(verify_from, trigger, stop).await });
    }

    let served = http.finish().await;
    // The pipeline task writes the state file on its way out: give a big one time.
    let grace = Duration::from_secs(if args.state_file.is_some() { 60 } else { 5 });
    if tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} })
        .await
        .is_err()
    {
        warn!(
            seconds = grace.as_secs(),
            "Background tasks did not stop in time; exiting anyway."
        );
    }
    served?;
    info!("Stopped.");
    Ok(())
}
