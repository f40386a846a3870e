//! `run --replay FILE...`: the HTTP service with events from recorded files instead of a
//! server. A blocking task reads the files into the pipeline (continuing where the state
//! file left off), then the counts keep being served until shutdown.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::error::Result;
use crate::ingest::Pipeline;
use crate::model::time::{now_micros, Clock};
use crate::persist::format::ReplayV1;
use crate::persist::{Opened, Snapshotter, REPLAY_SOURCE};
use crate::run::load::{check_readable, load_files_from};
use crate::run::service::{Ingested, Service, Tasks};
use crate::run::settings::RunSettings;
use crate::state::status::Status;
use crate::state::Shared;

/// `run --replay`: serves the counts of `files` until `shutdown`.
pub async fn run(
    settings: RunSettings,
    files: Vec<PathBuf>,
    shutdown: CancellationToken,
) -> Result<()> {
    check_readable("--replay", &files)?;
    let mut pipeline = Pipeline::new(settings.engine.clone());
    let clock = recording_clock(pipeline.shared());
    let (service, snapshotter, opened) = Service::start(
        &settings,
        &mut pipeline,
        REPLAY_SOURCE,
        |_| vec![("replay", "loading replay files")],
        clock,
        &shutdown,
    )
    .await?;
    let loader = Loader {
        names: files.iter().map(|f| f.display().to_string()).collect(),
        files,
        every: settings
            .state_file
            .as_ref()
            .map_or(Duration::MAX, |f| f.snapshot_interval),
        status: service.status().clone(),
        stop: shutdown,
    };
    let mut tasks = Tasks::new();
    tasks.spawn_blocking(move || Some(loader.load(pipeline, snapshotter, &opened)));
    service.finish(tasks).await
}

/// "Now" for ages in replay mode: the newest event applied, so a recording days old shows the
/// ages it had when it ended, not days (the wall clock before any event).
pub fn recording_clock(shared: Arc<Shared>) -> Clock {
    Arc::new(move || shared.last_occurred().unwrap_or_else(now_micros))
}

/// Reads the files into the pipeline, snapshotting the state file as it goes.
struct Loader {
    files: Vec<PathBuf>,
    names: Vec<String>,
    every: Duration,
    status: Arc<Status>,
    stop: CancellationToken,
}

impl Loader {
    /// Where to start: the state file's position when it was written for the same files.
    fn resume(&self, opened: &Opened) -> Option<(usize, u64)> {
        match &opened.replay {
            Some(saved) if saved.files == self.names => {
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
        }
    }

    fn load(
        self,
        mut pipeline: Pipeline,
        snapshotter: Option<Snapshotter>,
        opened: &Opened,
    ) -> Ingested {
        let started = Instant::now();
        let resume = self.resume(opened);
        let mut last_snapshot = Instant::now();
        let mut position = opened.replay.clone().filter(|_| resume.is_some());
        let mut after_batch = |pipeline: &mut Pipeline, file: usize, offset: u64| {
            let here = ReplayV1 {
                files: self.names.clone(),
                file: file as u32,
                offset,
            };
            if let Some(snapshotter) = &snapshotter {
                if last_snapshot.elapsed() >= self.every {
                    snapshotter.snapshot_replay(pipeline, here.clone());
                    last_snapshot = Instant::now();
                }
            }
            position = Some(here);
        };
        let loaded = load_files_from(
            &mut pipeline,
            &self.files,
            Some(&self.stop),
            resume,
            &mut after_batch,
        );
        match loaded {
            Ok(summary) if summary.stopped => {
                info!(lines = summary.lines, "Replay stopped at shutdown.");
            }
            Ok(summary) => {
                if let (Some(snapshotter), Some(here)) = (&snapshotter, &position) {
                    snapshotter.snapshot_replay(&mut pipeline, here.clone());
                }
                info!(
                    files = self.files.len(),
                    lines = summary.lines,
                    bytes = summary.bytes,
                    seconds = started.elapsed().as_secs_f64(),
                    "Replay files loaded."
                );
                self.status.satisfy("replay");
            }
            Err(e) => {
                error!(error = %e, "Replay stopped.");
                self.status.require("replay", format!("replay failed: {e}"));
            }
        }
        Ingested {
            pipeline,
            snapshotter,
            replay: position,
        }
    }
}
