//! Live mode of `run`: the REST baseline, the stream source (Prefect's websocket, or its
//! Redis `events` stream through a consumer group), the pipeline task, and the
//! reconciliation and verification loops, wired together and stopped by one token.
//!
//! Order at start: HTTP first (so `/healthz` answers and `/readyz` explains the wait), then
//! the baseline (retried until the server answers), then the stream (the websocket from the
//! baseline time minus the resume overlap; Redis from the group's position). The reader only
//! forwards frames into a bounded channel; one task owns the pipeline and applies frames in
//! batches, and tells a Redis source which entries are durable, so it acknowledges only
//! those.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::error::{Error, Result};
use crate::ingest::Pipeline;
use crate::model::event::{RunKind, StateType};
use crate::model::secret::display_url;
use crate::model::time::{micros, now_micros, wall_clock, Micros};
use crate::persist::{Opened, Snapshotter};
use crate::prefect::api::{ApiError, NameFilter, PrefectApi};
use crate::prefect::reconcile::Reconciler;
use crate::prefect::verify::{RepairBatch, Verifier, VerifyConfig};
use crate::run::service::{Ingested, Service, Tasks};
use crate::run::settings::{RunSettings, ServerSettings};
use crate::source::redis::target::{self, TargetError};
use crate::source::redis::{self as redis_source, RedisConfig};
use crate::source::ws::{self, WsConfig, RESUME_OVERLAP, SERVER_BACKFILL};
use crate::source::{Frame, StreamError, StreamObserver};
use crate::state::status::Status;
use crate::state::Shared;

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

/// Reports the stream's condition into the shared state.
struct Observer {
    shared: Arc<Shared>,
    status: Arc<Status>,
    reconcile: Arc<Notify>,
}

impl StreamObserver for Observer {
    fn newest_applied(&self) -> Option<Micros> {
        self.shared.last_occurred()
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
        self.shared.count_backfill_gap();
        self.reconcile.notify_one();
    }

    fn exclusive(&self, refused: Option<&str>) {
        match refused {
            Some(reason) => {
                self.status.set_connected(false);
                self.status.require("redis_group", reason);
            }
            None => self.status.satisfy("redis_group"),
        }
    }
}

/// Takes the first baseline, retrying until it succeeds or `shutdown`.
async fn bootstrap(reconciler: &Reconciler, status: &Status, shutdown: &CancellationToken) -> bool {
    let mut delay = Duration::from_secs(1);
    let mut last_error = String::new();
    loop {
        match reconciler.attempt(false).await {
            Ok(_) => return true,
            Err(ApiError::Cancelled) => return false,
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
            Err(ApiError::Cancelled) => return,
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

/// Publishes the newest [`Frame::Delivered`] token whose frames are durable.
struct Acks {
    durable: watch::Sender<u64>,
    applied: u64,
}

impl Acks {
    /// Raises the durable token to `token` (never lowers it).
    fn publish(durable: &watch::Sender<u64>, token: u64) {
        durable.send_if_modified(|done| {
            let newer = token > *done;
            if newer {
                *done = token;
            }
            newer
        });
    }
}

/// Applies frames and repairs until both channels close or `shutdown`, handing changes to
/// the state-file writer every `snapshot_every`; hands the pipeline back at the end. With
/// `acks` (a source that acknowledges), publishes which frames are durable: applied ones
/// without a state file, those in a snapshot on disk with one.
async fn pipeline_task(
    mut pipeline: Pipeline,
    mut frames: mpsc::Receiver<Frame>,
    mut repairs: mpsc::Receiver<RepairBatch>,
    snapshotter: Option<Snapshotter>,
    snapshot_every: Duration,
    mut acks: Option<Acks>,
    shutdown: CancellationToken,
) -> Ingested {
    let mut batch: Vec<Frame> = Vec::with_capacity(BATCH);
    let mut snapshots = crate::persist::interval(snapshot_every);
    snapshots.reset();
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            _ = snapshots.tick(), if snapshotter.is_some() => {
                match (&snapshotter, &acks) {
                    (Some(snapshotter), Some(acks)) => {
                        let written = snapshotter.snapshot_confirmed(&mut pipeline);
                        let (durable, token) = (acks.durable.clone(), acks.applied);
                        tokio::spawn(async move {
                            if let Ok(Ok(_)) = written.await {
                                Acks::publish(&durable, token);
                            }
                        });
                    }
                    (Some(snapshotter), None) => snapshotter.snapshot(&mut pipeline),
                    (None, _) => {}
                }
            }
            Some(repair) = repairs.recv() => {
                let mut new = 0;
                let mut b = pipeline.batch();
                for event in &repair.events {
                    if b.ingest(event).is_new_event() {
                        new += 1;
                    }
                }
                b.finish();
                let _ = repair.done.send(new);
            }
            received = frames.recv_many(&mut batch, BATCH) => {
                if received == 0 {
                    break;
                }
                let mut applying = pipeline.batch();
                for frame in batch.drain(..) {
                    match frame {
                        Frame::Data(bytes) => {
                            applying.ingest(&bytes);
                        }
                        Frame::Rejected { reason, bytes } => {
                            applying.reject(reason, usize::try_from(bytes).unwrap_or(usize::MAX));
                        }
                        Frame::Delivered(token) => {
                            if let Some(acks) = &mut acks {
                                acks.applied = token;
                            }
                        }
                    }
                }
                applying.finish();
                if let (None, Some(acks)) = (&snapshotter, &acks) {
                    Acks::publish(&acks.durable, acks.applied);
                }
            }
        }
    }
    Ingested {
        pipeline,
        snapshotter,
        replay: None,
    }
}

/// `run` against a Prefect server.
pub async fn run(
    settings: RunSettings,
    server: ServerSettings,
    shutdown: CancellationToken,
) -> Result<()> {
    let api = PrefectApi::new(&server.api.url, &server.api.credentials, shutdown.clone()).map_err(
        |e| Error::Config {
            flag: "--prefect-api-url",
            message: e.to_string(),
        },
    )?;
    let prefixes = RunKind::subscribed_prefixes(settings.engine.state.track_task_runs);
    let redis = redis_config(&server, &prefixes)?;
    let mut pipeline = Pipeline::new(settings.engine.clone());
    // A restored state file with a baseline carries it with the counts: no new baseline.
    let needs_baseline = |opened: &Opened| server.bootstrap && opened.baseline.is_none();
    let (service, snapshotter, opened) = Service::start(
        &settings,
        &mut pipeline,
        &display_url(&server.api.url),
        |opened| {
            let mut unmet = vec![("stream", "connecting to the events stream")];
            if needs_baseline(opened) {
                unmet.push(("baseline", "taking the REST baseline"));
            }
            unmet
        },
        wall_clock(),
        &shutdown,
    )
    .await?;
    let api = api.with_stats(service.api_stats());
    let restored = opened.resume;
    pipeline.enable_ledger(prefixes.clone());
    let shared = pipeline.shared();
    let status = service.status().clone();
    status.set_source(if redis.is_some() {
        "redis"
    } else {
        "websocket"
    });
    let bootstrap_now = needs_baseline(&opened);

    let reconcile_now = Arc::new(Notify::new());
    let reconciler = Reconciler::new(api.clone(), shared.clone(), RECONCILE_SETTLE);
    let start = restored.unwrap_or_else(now_micros);
    if let (Some(resume), None) = (restored, &redis) {
        if now_micros().saturating_sub(resume) > SERVER_BACKFILL {
            warn!("The state file is older than the server's 15-minute backfill; the gap is closed by verification and reconciliation.");
            shared.count_backfill_gap();
            reconcile_now.notify_one();
        }
    }
    let mut tasks = Tasks::new();
    if bootstrap_now {
        if !bootstrap(&reconciler, &status, &shutdown).await {
            tasks.spawn(std::future::ready(Some(Ingested {
                pipeline,
                snapshotter,
                replay: None,
            })));
            return service.finish(tasks).await;
        }
        seed_runs(&api, &mut pipeline, &shared.kinds().collect::<Vec<_>>()).await;
        status.satisfy("baseline");
        info!(api = %display_url(&server.api.url), "REST baseline taken.");
    }

    let (frame_tx, frame_rx) = mpsc::channel(FRAME_QUEUE);
    let (repair_tx, repair_rx) = mpsc::channel(4);
    let snapshot_every = settings
        .state_file
        .as_ref()
        .map_or(Duration::MAX, |f| f.snapshot_interval);
    let (durable_tx, durable_rx) = watch::channel(0u64);
    let acks = redis.is_some().then(|| Acks {
        durable: durable_tx,
        applied: 0,
    });
    let pipeline_stop = shutdown.clone();
    tasks.spawn(async move {
        let ingested = pipeline_task(
            pipeline,
            frame_rx,
            repair_rx,
            snapshotter,
            snapshot_every,
            acks,
            pipeline_stop,
        );
        Some(ingested.await)
    });
    let observer = Observer {
        shared: shared.clone(),
        status: status.clone(),
        reconcile: reconcile_now.clone(),
    };
    let stream_stop = shutdown.clone();
    match redis {
        Some(config) => {
            tasks.spawn(async move {
                redis_source::run(
                    config,
                    restored,
                    frame_tx,
                    durable_rx,
                    &observer,
                    stream_stop,
                )
                .await;
                None
            });
        }
        None => {
            let ws_config = WsConfig {
                api_url: server.api.url.clone(),
                credentials: server.api.credentials.clone(),
                prefixes,
                idle_timeout: server.api.stream_idle_timeout,
            };
            tasks.spawn(async move {
                ws::run(ws_config, start, frame_tx, &observer, stream_stop).await;
                None
            });
        }
    }
    let checks = Checks {
        api,
        shared,
        status,
        reconciler,
        trigger: reconcile_now,
        // After a restart, windows up to the second pass are checked again (their ledger
        // was restored), so late events that missed the last snapshot are still repaired.
        verify_from: match restored {
            Some(resume) => resume - micros(SECOND_PASS),
            None => start - RESUME_OVERLAP,
        },
    };
    checks.spawn(&mut tasks, &server, repair_tx, &shutdown);
    service.finish(tasks).await
}

/// The Redis stream to read, if `--redis-url` or Prefect's own variables name one.
fn redis_config(server: &ServerSettings, prefixes: &[&'static str]) -> Result<Option<RedisConfig>> {
    let bad = |e: TargetError| Error::Config {
        flag: "--redis-url",
        message: e.to_string(),
    };
    let url = match &server.redis.url {
        Some(url) => url.clone(),
        None => match target::from_prefect_env(|name| std::env::var(name).ok()).map_err(bad)? {
            Some(url) => url,
            None => return Ok(None),
        },
    };
    target::check_url(&url).map_err(bad)?;
    Ok(Some(RedisConfig {
        url,
        stream: server.redis.stream.clone(),
        group: server.redis.group.clone(),
        prefixes: prefixes.to_vec(),
    }))
}

/// Reconciliation and verification, as background tasks of live mode.
struct Checks {
    api: PrefectApi,
    shared: Arc<Shared>,
    status: Arc<Status>,
    reconciler: Reconciler,
    trigger: Arc<Notify>,
    verify_from: Micros,
}

impl Checks {
    /// Starts the loops `server` turns on; verification sends repairs to `repairs`.
    fn spawn(
        self,
        tasks: &mut Tasks,
        server: &ServerSettings,
        repairs: mpsc::Sender<RepairBatch>,
        shutdown: &CancellationToken,
    ) {
        if !server.reconcile_interval.is_zero() {
            let interval = server.reconcile_interval;
            let (reconciler, trigger, stop) =
                (self.reconciler, self.trigger.clone(), shutdown.clone());
            tasks.spawn(async move {
                reconciler.run(interval, trigger, stop).await;
                None
            });
        }
        if !server.verify_interval.is_zero() {
            let config = VerifyConfig {
                interval: server.verify_interval,
                settle: micros(server.verify_settle),
                second_pass_after: SECOND_PASS,
            };
            let verifier = Verifier::new(self.api, self.shared, self.status, repairs, config);
            let (from, trigger, stop) = (self.verify_from, self.trigger, shutdown.clone());
            tasks.spawn(async move {
                verifier.run(from, trigger, stop).await;
                None
            });
        }
    }
}
