//! `--state-file` (SPEC §8): counters, runs, dedup window, resume point and baseline survive
//! a restart.
//!
//! At start, [`open`] loads the file into a fresh pipeline (refusing a corrupt, truncated,
//! future-version or incompatible file unless `--discard-bad-state`) and starts the writer
//! thread. Every `--snapshot-interval` and at shutdown the pipeline task hands the writer the
//! [`Changes`] since the last snapshot (see [`mirror`]); the writer folds them into its copy
//! and writes the whole file atomically: a temporary file beside it, fsync, rename, fsync of
//! the directory. A crash at any moment leaves the previous file or the new one, never a mix;
//! events after the last snapshot are fetched again from the resume point, and the restored
//! dedup window drops the ones already counted.

pub mod format;
pub mod mirror;
pub mod restore;

use std::fs::File;
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::pipeline::Pipeline;
use crate::state::{PersistStats, Shared};
use crate::timestamp::{now_micros, Micros};
use mirror::{Aggregates, Changes, Mirror};

/// Why the state file cannot be used at start.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct OpenError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong, and what to do.
    pub message: String,
}

/// What [`open`] found.
#[derive(Debug, Clone, Copy)]
pub struct Opened {
    /// Runs restored.
    pub runs: usize,
    /// Newest `occurred` in the file: where the stream resumes.
    pub resume: Option<Micros>,
}

/// Loads `path` into `pipeline` (fresh, or a missing file: nothing to load), turns on the
/// pipeline's change journal, and starts the writer.
pub fn open(
    path: &Path,
    discard_bad: bool,
    pipeline: &mut Pipeline,
) -> Result<(Snapshotter, Opened), OpenError> {
    let fail = |message: String| OpenError {
        path: path.to_owned(),
        message,
    };
    let (window, capacity) = pipeline.dedup_limits();
    let config = pipeline.tracker_mut().config().clone();
    let group_by = config
        .group_by
        .iter()
        .map(|g| g.label().to_owned())
        .collect();
    let started = Instant::now();
    let loaded = match std::fs::read(path) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(fail(format!("cannot read the state file: {e}"))),
    };
    let mut opened = Opened {
        runs: 0,
        resume: None,
    };
    let mut mirror = None;
    if let Some(bytes) = loaded {
        let size = bytes.len();
        let result = format::read(&bytes)
            .map_err(|e| e.to_string())
            .and_then(|mut state| {
                let restored = restore::restore(pipeline, &state)
                    .map_err(|e| format!("state file does not fit: {e}"))?;
                let aggregates = Aggregates::copy(&pipeline.shared().counts.lock());
                Mirror::from_loaded(&mut state, restored, aggregates)
            });
        drop(bytes);
        match result {
            Ok(restored) => {
                opened.runs = restored.run_count();
                opened.resume = pipeline.shared().counts.lock().events.last_occurred;
                info!(
                    path = %path.display(),
                    bytes = size,
                    runs = opened.runs,
                    seconds = started.elapsed().as_secs_f64(),
                    "State file loaded; counters continue from it."
                );
                mirror = Some(restored);
            }
            Err(message) if discard_bad => {
                let aside = path.with_extension("discarded");
                let _ = std::fs::rename(path, &aside);
                warn!(path = %path.display(), moved_to = %aside.display(), error = %message, "Discarding the unusable state file (--discard-bad-state); starting fresh.");
                pipeline.reset();
            }
            Err(message) => {
                return Err(fail(format!(
                    "{message}; fix or remove it, or start with --discard-bad-state"
                )))
            }
        }
    }
    let mirror = match mirror {
        Some(mirror) => mirror,
        None => Mirror::new(
            config.track_task_runs,
            group_by,
            crate::dedup::IdBuckets::new(window, capacity),
        ),
    };
    pipeline.journal();
    check_writable(path).map_err(|e| fail(format!("cannot write beside the state file: {e}")))?;
    let shared = pipeline.shared();
    *shared.persist.lock() = Some(PersistStats::default());
    Ok((Snapshotter::start(path.to_owned(), mirror, shared), opened))
}

/// Creates and removes the temporary file once, so an unwritable directory fails at start.
fn check_writable(path: &Path) -> io::Result<()> {
    let temp = temp_path(path);
    File::create(&temp)?;
    std::fs::remove_file(&temp)
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".tmp");
    path.with_file_name(name)
}

enum Job {
    Changes(Changes),
    Flush(Changes, tokio::sync::oneshot::Sender<io::Result<u64>>),
}

/// The writer thread's handle.
#[derive(Debug)]
pub struct Snapshotter {
    jobs: mpsc::Sender<Job>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Job")
    }
}

impl Snapshotter {
    fn start(path: PathBuf, mirror: Mirror, shared: Arc<Shared>) -> Snapshotter {
        let (jobs, receiver) = mpsc::channel();
        let stats = shared.clone();
        std::thread::Builder::new()
            .name("state-file".into())
            .spawn(move || writer(path, mirror, receiver, &stats))
            .map(|_| ())
            .unwrap_or_else(|e| warn!(error = %e, "Cannot start the state-file writer."));
        Snapshotter { jobs, shared }
    }

    /// Copies the changes (the only time ingestion waits) and records how long it took.
    fn changes(&self, pipeline: &mut Pipeline) -> Changes {
        let started = Instant::now();
        let changes = pipeline.take_changes();
        if let Some(stats) = self.shared.persist.lock().as_mut() {
            stats.pause_seconds = started.elapsed().as_secs_f64();
        }
        changes
    }

    /// Hands over changes for the next write (never blocks on the write).
    pub fn snapshot(&self, pipeline: &mut Pipeline) {
        let _ = self.jobs.send(Job::Changes(self.changes(pipeline)));
    }

    /// Hands over the last changes and waits until they are on disk (shutdown).
    pub async fn flush(&self, pipeline: &mut Pipeline) -> io::Result<u64> {
        let (done, wait) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Job::Flush(self.changes(pipeline), done))
            .map_err(|_| io::Error::other("the state-file writer stopped"))?;
        wait.await
            .unwrap_or_else(|_| Err(io::Error::other("the state-file writer stopped")))
    }

    /// [`Snapshotter::flush`] from a blocking thread.
    pub fn flush_blocking(&self, pipeline: &mut Pipeline) -> io::Result<u64> {
        let (done, wait) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Job::Flush(self.changes(pipeline), done))
            .map_err(|_| io::Error::other("the state-file writer stopped"))?;
        wait.blocking_recv()
            .unwrap_or_else(|_| Err(io::Error::other("the state-file writer stopped")))
    }
}

/// The writer thread: folds in every pending change, then writes once.
fn writer(path: PathBuf, mut mirror: Mirror, jobs: mpsc::Receiver<Job>, shared: &Shared) {
    let mut last_error = String::new();
    while let Ok(job) = jobs.recv() {
        let mut waiting = Vec::new();
        let mut next = Some(job);
        while let Some(job) = next.take() {
            match job {
                Job::Changes(changes) => mirror.apply(changes),
                Job::Flush(changes, done) => {
                    mirror.apply(changes);
                    waiting.push(done);
                }
            }
            next = jobs.try_recv().ok();
        }
        let started = Instant::now();
        let result = write_atomically(&path, &mut mirror);
        if let Some(stats) = shared.persist.lock().as_mut() {
            stats.write_seconds = started.elapsed().as_secs_f64();
            match &result {
                Ok(bytes) => {
                    stats.writes_ok += 1;
                    stats.bytes = *bytes;
                }
                Err(_) => stats.writes_failed += 1,
            }
        }
        match &result {
            Ok(bytes) => {
                last_error.clear();
                tracing::debug!(
                    bytes,
                    runs = mirror.run_count(),
                    ms = started.elapsed().as_secs_f64() * 1e3,
                    "State file written."
                );
            }
            Err(e) => {
                let message = e.to_string();
                if message != last_error {
                    warn!(path = %path.display(), error = %message, "Cannot write the state file; will retry at the next snapshot.");
                    last_error = message;
                }
            }
        }
        for done in waiting {
            let _ = done.send(match &result {
                Ok(bytes) => Ok(*bytes),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            });
        }
    }
}

/// Temp file, fsync, rename over `path`, fsync of the directory.
fn write_atomically(path: &Path, mirror: &mut Mirror) -> io::Result<u64> {
    let temp = temp_path(path);
    let file = File::create(&temp)?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let bytes = mirror.write(now_micros(), &mut out)?;
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temp, path)?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()?;
    Ok(bytes)
}

/// How often to hand changes to the writer.
pub fn interval(every: Duration) -> tokio::time::Interval {
    let mut interval = tokio::time::interval(every.max(Duration::from_millis(100)));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::StateType::{Completed, Pending, Running, Scheduled};
    use crate::report::{CountsReport, ResourceView};
    use crate::status::Status;
    use crate::test_support::{frame, pipeline};

    fn counts_json(p: &Pipeline) -> serde_json::Value {
        let mut report = serde_json::to_value(CountsReport::build(
            &p.shared(),
            &std::sync::Arc::new(Status::new()),
        ))
        .unwrap();
        report["as_of"] = serde_json::Value::Null;
        report
    }

    fn run_json(p: &Pipeline, run: u32) -> serde_json::Value {
        let id = format!("prefect.flow-run.00000000-0000-4000-8000-{run:012}");
        serde_json::to_value(ResourceView::find(&p.shared(), &id, 0).expect("tracked")).unwrap()
    }

    #[test]
    fn a_written_file_restores_the_same_counts_runs_and_dedup_window() {
        let frames = [
            frame(1, 1, 0, None, Scheduled),
            frame(2, 1, 1, Some(Scheduled), Pending),
            frame(3, 2, 2, None, Scheduled),
            frame(4, 1, 3, Some(Pending), Running),
            frame(5, 1, 9, Some(Running), Completed),
            frame(6, 2, 10, Some(Scheduled), Pending),
        ];
        let mut live = pipeline();
        live.journal();
        let mut mirror = Mirror::new(
            false,
            vec![],
            crate::dedup::IdBuckets::new(1800 * crate::timestamp::SECOND, 1000),
        );
        // Two snapshots, so the mirror folds changes in more than once.
        live.ingest_batch(&frames[..3]);
        mirror.apply(live.take_changes());
        live.ingest_batch(&frames[3..]);
        mirror.apply(live.take_changes());
        let mut bytes = Vec::new();
        mirror.write(0, &mut bytes).unwrap();

        let mut loaded = format::read(&bytes).unwrap();
        let mut restored = pipeline();
        let parts = restore::restore(&mut restored, &loaded).unwrap();
        assert_eq!(counts_json(&restored), counts_json(&live));
        assert_eq!(run_json(&restored, 1), run_json(&live, 1));
        assert_eq!(run_json(&restored, 2), run_json(&live, 2));

        // The dedup window came back: replaying every frame changes nothing but duplicates.
        let before = counts_json(&restored);
        restored.ingest_batch(&frames);
        let after = counts_json(&restored);
        assert_eq!(after["flow_runs"], before["flow_runs"]);
        assert_eq!(after["events"]["duplicates"], 6);

        // A mirror seeded from the file writes the same file again.
        let aggregates = Aggregates::copy(&restored.shared().counts.lock());
        let mut again = Mirror::from_loaded(&mut loaded, parts, aggregates).unwrap();
        assert_eq!(again.run_count(), 2);
        let mut second = Vec::new();
        again.write(0, &mut second).unwrap();
        let reread = format::read(&second).unwrap();
        assert_eq!(reread.runs[0].len(), 2);
    }

    #[test]
    fn open_refuses_bad_files_and_discards_them_on_request() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.bin");
        std::fs::write(&path, b"PEXSTATE\x01\x00\x00\x00garbage").unwrap();
        let err = open(&path, false, &mut pipeline()).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
        assert!(err.to_string().contains("--discard-bad-state"), "{err}");
        let (_, opened) = open(&path, true, &mut pipeline()).unwrap();
        assert_eq!(opened.runs, 0);
        assert!(path.with_extension("discarded").exists());
    }
}
