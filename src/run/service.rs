//! The start-up and shutdown sequence every `run` shares, whatever the source: the state file
//! opened into a fresh pipeline, readiness conditions set, the API server started; then, at
//! shutdown, the server drained, the background tasks awaited, the state file written a last
//! time.
//!
//! Shutdown is bounded as a whole: the server's drain and the background tasks share one
//! grace period, and the last state-file write has its own limit. Every background task ends
//! at the shutdown token (REST calls and their retries included), so the grace is a backstop,
//! not a wait.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::error::Result;
use crate::ingest::Pipeline;
use crate::model::time::Clock;
use crate::persist::format::ReplayV1;
use crate::persist::{Opened, Snapshotter};
use crate::prefect::accounting::ApiStats;
use crate::run::settings::RunSettings;
use crate::state::status::Status;
use crate::web::api::ApiServer;

/// How long shutdown waits for the API server and background tasks when the state file must
/// be written last (a big one takes seconds), and when not.
const GRACE_WITH_STATE_FILE: Duration = Duration::from_secs(60);
const GRACE: Duration = Duration::from_secs(5);
/// How long the last state-file write may take (1 M runs take about a second).
const FINAL_WRITE_LIMIT: Duration = Duration::from_secs(60);

/// What the ingestion task hands back when it stops, for the last state-file write.
pub struct Ingested {
    /// The pipeline, with everything applied.
    pub pipeline: Pipeline,
    /// The state file's writer, when there is one.
    pub snapshotter: Option<Snapshotter>,
    /// With `run --replay`: how far the files were read.
    pub replay: Option<ReplayV1>,
}

/// Background tasks of a running service; the one that owns the pipeline returns it.
pub type Tasks = JoinSet<Option<Ingested>>;

/// A running `run`: its readiness and its API server.
pub struct Service {
    status: Arc<Status>,
    api: ApiServer,
    state_file: bool,
    shutdown: CancellationToken,
}

impl Service {
    /// Opens the state file (if any) into `pipeline` for events from `source`, marks the
    /// readiness `conditions` (name, reason) that what it holds leaves unmet, and starts the
    /// API server, which measures ages against `clock`.
    pub async fn start(
        settings: &RunSettings,
        pipeline: &mut Pipeline,
        source: &str,
        conditions: impl FnOnce(&Opened) -> Vec<(&'static str, &'static str)>,
        clock: Clock,
        shutdown: &CancellationToken,
    ) -> Result<(Service, Option<Snapshotter>, Opened)> {
        let (snapshotter, opened) = match &settings.state_file {
            Some(file) => {
                let (snapshotter, opened) =
                    crate::persist::open(&file.path, file.discard_bad, pipeline, source)?;
                (Some(snapshotter), opened)
            }
            None => (None, Opened::default()),
        };
        let status = Arc::new(Status::new());
        for (condition, reason) in conditions(&opened) {
            status.require(condition, reason);
        }
        let api = ApiServer::start(
            &settings.web,
            pipeline.shared(),
            status.clone(),
            clock,
            shutdown.clone(),
        )
        .await?;
        let service = Service {
            status,
            api,
            state_file: settings.state_file.is_some(),
            shutdown: shutdown.clone(),
        };
        Ok((service, snapshotter, opened))
    }

    /// Handles on the REST client's families in the served metrics.
    pub(crate) fn api_stats(&self) -> ApiStats {
        let families = self.api.api_metrics();
        ApiStats::new(families.requests.clone(), families.duration.clone())
    }

    /// Readiness and the stream's condition.
    pub fn status(&self) -> &Arc<Status> {
        &self.status
    }

    /// Waits for shutdown (or the API server's end), then for the server to drain and for
    /// `tasks` (within one grace period), writes the state file a last time from the
    /// pipeline a task handed back, and reports how the server ended.
    pub async fn finish(self, mut tasks: Tasks) -> Result<()> {
        let grace = if self.state_file {
            GRACE_WITH_STATE_FILE
        } else {
            GRACE
        };
        let mut serving = std::pin::pin!(self.api.finish());
        let stopped = tokio::select! {
            served = &mut serving => Some(served),
            () = self.shutdown.cancelled() => None,
        };
        let deadline = tokio::time::Instant::now() + grace;
        let served = match stopped {
            Some(served) => served,
            None => match tokio::time::timeout_at(deadline, serving).await {
                Ok(served) => served,
                Err(_) => {
                    warn!(
                        seconds = grace.as_secs(),
                        "The API server did not stop in time."
                    );
                    Ok(())
                }
            },
        };
        let mut ingested = None;
        let waited = tokio::time::timeout_at(deadline, async {
            while let Some(done) = tasks.join_next().await {
                if let Ok(Some(done)) = done {
                    ingested = Some(done);
                }
            }
        })
        .await;
        if waited.is_err() {
            warn!(
                seconds = grace.as_secs(),
                "Background tasks did not stop in time; exiting anyway."
            );
        }
        match ingested {
            Some(mut done) => final_snapshot(&mut done).await,
            None if self.state_file => {
                error!("Ingestion did not stop in time; the state file keeps its last snapshot.")
            }
            None => {}
        }
        served?;
        info!("Stopped.");
        Ok(())
    }
}

/// Writes the state file a last time at shutdown, within [`FINAL_WRITE_LIMIT`] (logging a
/// failure).
async fn final_snapshot(done: &mut Ingested) {
    if let Some(snapshotter) = &done.snapshotter {
        let write = snapshotter.flush(&mut done.pipeline, done.replay.take());
        match tokio::time::timeout(FINAL_WRITE_LIMIT, write).await {
            Ok(Ok(bytes)) => info!(bytes, "State file written at shutdown."),
            Ok(Err(e)) => error!(error = %e, "Could not write the state file at shutdown."),
            Err(_) => error!(
                seconds = FINAL_WRITE_LIMIT.as_secs(),
                "The last state-file write did not finish in time; the file keeps its last snapshot."
            ),
        }
    }
}
