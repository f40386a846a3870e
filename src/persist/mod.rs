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

pub(crate) mod error;
pub(crate) mod format;
pub(crate) mod mirror;
pub(crate) mod plausible;
pub(crate) mod restore;

pub use error::{OpenCause, OpenError, Unusable};

use std::fs::File;
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::ingest::dedup::IdBuckets;
use crate::ingest::{Changes, Pipeline};
use crate::model::time::{now_micros, Micros};
use crate::state::Shared;
use mirror::Mirror;

/// What [`open`] found.
#[derive(Debug, Clone, Default)]
pub struct Opened {
    /// Runs restored.
    pub runs: usize,
    /// Newest `occurred` in the file: where the stream resumes.
    pub resume: Option<Micros>,
    /// The REST baseline time in the file.
    pub baseline: Option<Micros>,
    /// With `run --replay`: how far the files had been read.
    pub replay: Option<format::ReplayV1>,
}

/// Loads `path` into `pipeline` (fresh, or a missing file: nothing to load), turns on the
/// pipeline's change journal, and starts the writer. `source` names where events come from
/// (the API URL, or `replay`); a file written for another source is refused.
pub fn open(
    path: &Path,
    discard_bad: bool,
    pipeline: &mut Pipeline,
    source: &str,
) -> Result<(Snapshotter, Opened), OpenError> {
    let fail = |cause: OpenCause| OpenError {
        path: path.to_owned(),
        cause,
    };
    let (window, capacity) = pipeline.dedup_limits();
    let config = pipeline.tracker_mut().config().clone();
    let group_by = config
        .group_by
        .iter()
        .map(|g| g.label().to_owned())
        .collect();
    let real = resolve(path).map_err(|e| fail(OpenCause::Resolve(e)))?;
    let path = real.as_path();
    check_kind(path).map_err(fail)?;
    let lock = lock(path).map_err(fail)?;
    let started = Instant::now();
    let mut opened = Opened::default();
    let mut mirror = None;
    if let Some((size, read)) = read_file(path).map_err(fail)? {
        let result = read
            .map_err(Unusable::from)
            .and_then(|state| load(state, pipeline, source));
        match result {
            Ok((restored, replay)) => {
                opened.replay = replay;
                opened.runs = restored.run_count();
                let shared = pipeline.shared();
                opened.resume = shared.last_occurred();
                opened.baseline = shared.with_counts(|counts| counts.baseline);
                info!(
                    path = %path.display(),
                    bytes = size,
                    runs = opened.runs,
                    seconds = started.elapsed().as_secs_f64(),
                    "State file loaded; counters continue from it."
                );
                mirror = Some(restored);
            }
            Err(unusable) if discard_bad => {
                let aside = path.with_extension("discarded");
                let _ = std::fs::rename(path, &aside);
                warn!(path = %path.display(), moved_to = %aside.display(), error = %unusable, "Discarding the unusable state file (--discard-bad-state); starting fresh.");
                pipeline.reset();
                opened = Opened::default();
            }
            Err(unusable) => return Err(fail(OpenCause::Unusable(unusable))),
        }
    }
    let mirror = match mirror {
        Some(mirror) => mirror,
        None => Mirror::new(
            source.to_owned(),
            config.track_task_runs,
            group_by,
            IdBuckets::new(window, capacity),
        ),
    };
    pipeline.journal();
    check_writable(path).map_err(|e| fail(OpenCause::Unwritable(e)))?;
    let shared = pipeline.shared();
    shared.enable_persist_stats();
    Ok((
        Snapshotter::start(path.to_owned(), mirror, shared, lock),
        opened,
    ))
}

/// Loads a state file's decoded contents into a fresh `pipeline`: the source, the settings
/// and every cross-reference are checked, and anything wrong is an [`Unusable`]. Returns the
/// writer's copy of what was loaded and how far `run --replay` had read.
fn load(
    mut state: format::StateV1,
    pipeline: &mut Pipeline,
    source: &str,
) -> Result<(Mirror, Option<format::ReplayV1>), Unusable> {
    check_source(&state.source, source)?;
    let restored = restore::restore(pipeline, &state)?;
    let aggregates = pipeline.tracker_mut().aggregates();
    let replay = state.replay.clone();
    Ok((
        Mirror::from_loaded(&mut state, restored, aggregates)?,
        replay,
    ))
}

/// The state-file reader as the `state_file` fuzz target drives it (`fuzz/`): the framing
/// checks and [`load`] on arbitrary bytes, returning the number of runs restored. Not part of the API.
#[doc(hidden)]
pub fn load_state_for_fuzzing(
    bytes: &[u8],
    pipeline: &mut Pipeline,
    source: &str,
) -> Result<usize, Unusable> {
    load(format::read(bytes)?, pipeline, source).map(|(mirror, _)| mirror.run_count())
}

/// Refuses a file written in the other mode (replay files vs a server); a server at another
/// URL is only a warning (a renamed host is common; reconciliation corrects the totals).
fn check_source(saved: &str, now: &str) -> Result<(), Unusable> {
    let replay = |s: &str| s == REPLAY_SOURCE;
    if replay(saved) != replay(now) {
        return Err(Unusable::OtherSource {
            saved: saved.to_owned(),
            now: now.to_owned(),
        });
    }
    if saved != now {
        warn!(
            saved,
            now, "The state file was written for another Prefect API URL; continuing from it."
        );
    }
    Ok(())
}

/// The most symbolic links followed to the state file.
const MAX_LINKS: usize = 40;

/// The state file's real path: symbolic links followed (a dangling one names the file to
/// create) and the directory made canonical, so the lock, the reads and the atomic rename
/// all act on the file itself, and a link to it stays a link.
fn resolve(path: &Path) -> io::Result<PathBuf> {
    let mut current = path.to_owned();
    for _ in 0..MAX_LINKS {
        let is_link = match std::fs::symlink_metadata(&current) {
            Ok(meta) => meta.file_type().is_symlink(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(e),
        };
        if !is_link {
            let Some(name) = current.file_name() else {
                return Ok(current);
            };
            let dir = match current.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir,
                _ => Path::new("."),
            };
            return Ok(std::fs::canonicalize(dir)?.join(name));
        }
        let target = std::fs::read_link(&current)?;
        // Relative to the link's directory; an absolute target replaces it.
        current = match current.parent() {
            Some(dir) => dir.join(target),
            None => target,
        };
    }
    Err(io::Error::other(format!(
        "more than {MAX_LINKS} symbolic links"
    )))
}

/// Refuses a path that exists but is not a regular file (a FIFO would block the start, a
/// device such as `/dev/zero` never ends), before the lock file is made beside it.
fn check_kind(path: &Path) -> Result<(), OpenCause> {
    use std::os::unix::fs::FileTypeExt;
    let kind = match std::fs::metadata(path) {
        Ok(meta) => meta.file_type(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(OpenCause::Read(e)),
    };
    let what = if kind.is_file() {
        return Ok(());
    } else if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_char_device() || kind.is_block_device() {
        "a device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    };
    Err(OpenCause::NotAFile { what })
}

/// A state file's length and its decoded content (or why that failed).
type Read = (u64, Result<format::StateV1, format::FormatError>);

/// The file's length and its decoded content (checked piece by piece, see
/// [`format::read_from`]), or `None` when there is no file yet.
fn read_file(path: &Path) -> Result<Option<Read>, OpenCause> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(OpenCause::Read(e)),
    };
    let meta = file.metadata().map_err(OpenCause::Read)?;
    if !meta.is_file() {
        // Swapped since the check.
        return Err(OpenCause::NotAFile {
            what: "not a regular file",
        });
    }
    let len = meta.len();
    let read = format::read_from(&mut file, len).map_err(OpenCause::Read)?;
    Ok(Some((len, read)))
}

/// The source name of `run --replay`.
pub const REPLAY_SOURCE: &str = "replay";

/// Takes an exclusive lock on `PATH.lock`, held while the process runs, so two exporters
/// never write one state file.
fn lock(path: &Path) -> Result<File, OpenCause> {
    let lock_path = sibling(path, ".lock");
    let failed = |source| OpenCause::Lock {
        lock: lock_path.clone(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(failed)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(OpenCause::Locked {
            lock: lock_path.clone(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(failed(e)),
    }
}

/// Creates and removes a temporary file once, so an unwritable directory fails at start.
fn check_writable(path: &Path) -> io::Result<()> {
    let temp = temp_path(path);
    File::create(&temp)?;
    std::fs::remove_file(&temp)
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(suffix);
    path.with_file_name(name)
}

/// The temporary file beside `path` (unique to this process; the lock makes it the only
/// writer).
fn temp_path(path: &Path) -> PathBuf {
    sibling(path, &format!(".{}.tmp", std::process::id()))
}

/// Changes for the writer, with how far `run --replay` had read.
type Snapshot = (Changes, Option<format::ReplayV1>);

enum Job {
    Changes(Snapshot),
    Flush(Snapshot, tokio::sync::oneshot::Sender<io::Result<u64>>),
}

/// The writer thread's handle.
#[derive(Debug)]
pub struct Snapshotter {
    jobs: mpsc::Sender<Job>,
    shared: Arc<Shared>,
    _lock: File,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Job")
    }
}

impl Snapshotter {
    fn start(path: PathBuf, mirror: Mirror, shared: Arc<Shared>, lock: File) -> Snapshotter {
        let (jobs, receiver) = mpsc::channel();
        let stats = shared.clone();
        std::thread::Builder::new()
            .name("state-file".into())
            .spawn(move || writer(path, mirror, receiver, &stats))
            .map(|_| ())
            .unwrap_or_else(|e| warn!(error = %e, "Cannot start the state-file writer."));
        Snapshotter {
            jobs,
            shared,
            _lock: lock,
        }
    }

    /// Copies the changes (the only time ingestion waits) and records how long it took.
    fn changes(&self, pipeline: &mut Pipeline) -> Changes {
        let started = Instant::now();
        let changes = pipeline.take_changes();
        let pause = started.elapsed().as_secs_f64();
        self.shared
            .update_persist_stats(|stats| stats.pause_seconds = pause);
        changes
    }

    /// Hands over changes for the next write (never blocks on the write).
    pub fn snapshot(&self, pipeline: &mut Pipeline) {
        self.send(Job::Changes((self.changes(pipeline), None)));
    }

    /// Hands over changes for the next write like [`Snapshotter::snapshot`], and answers
    /// once they are on disk (or the write failed): what a source that acknowledges entries
    /// only when they are durable waits for.
    pub fn snapshot_confirmed(
        &self,
        pipeline: &mut Pipeline,
    ) -> tokio::sync::oneshot::Receiver<io::Result<u64>> {
        let (done, wait) = tokio::sync::oneshot::channel();
        self.send(Job::Flush((self.changes(pipeline), None), done));
        wait
    }

    /// [`Snapshotter::snapshot`] in `run --replay`, with how far the files have been read.
    pub fn snapshot_replay(&self, pipeline: &mut Pipeline, position: format::ReplayV1) {
        self.send(Job::Changes((self.changes(pipeline), Some(position))));
    }

    fn send(&self, job: Job) {
        if self.jobs.send(job).is_err() {
            self.shared
                .update_persist_stats(|stats| stats.writes_failed += 1);
            tracing::error!(
                "The state-file writer has stopped; the state file is no longer updated."
            );
        }
    }

    /// Hands over the last changes (and the replay position, in `run --replay`) and waits
    /// until they are on disk (shutdown).
    pub async fn flush(
        &self,
        pipeline: &mut Pipeline,
        replay: Option<format::ReplayV1>,
    ) -> io::Result<u64> {
        let (done, wait) = tokio::sync::oneshot::channel();
        let changes = self.changes(pipeline);
        self.jobs
            .send(Job::Flush((changes, replay), done))
            .map_err(|_| io::Error::other("the state-file writer stopped"))?;
        wait.await
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
                Job::Changes((changes, replay)) => mirror.apply(changes, replay),
                Job::Flush((changes, replay), done) => {
                    mirror.apply(changes, replay);
                    waiting.push(done);
                }
            }
            next = jobs.try_recv().ok();
        }
        let started = Instant::now();
        let result = write_atomically(&path, &mut mirror);
        let seconds = started.elapsed().as_secs_f64();
        shared.update_persist_stats(|stats| {
            stats.write_seconds = seconds;
            match &result {
                Ok(bytes) => {
                    stats.writes_ok += 1;
                    stats.bytes = *bytes;
                }
                Err(_) => stats.writes_failed += 1,
            }
        });
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

/// Temp file, fsync, rename over `path`, fsync of the directory. A failed write removes its
/// temporary file and leaves the previous state file as it was.
fn write_atomically(path: &Path, mirror: &mut Mirror) -> io::Result<u64> {
    let temp = temp_path(path);
    let written = (|| {
        let file = File::create(&temp)?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let bytes = mirror.write(now_micros(), &mut out)?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(bytes)
    })();
    let bytes = match written {
        Ok(bytes) => bytes,
        Err(e) => {
            let _ = std::fs::remove_file(&temp);
            return Err(e);
        }
    };
    if let Err(e) = std::fs::rename(&temp, path) {
        let _ = std::fs::remove_file(&temp);
        return Err(e);
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    // The new file is in place; a directory that cannot be synced only weakens durability.
    if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
        tracing::debug!(error = %e, "Could not fsync the state file's directory.");
    }
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
    use crate::expose::collect::Metrics;
    use crate::expose::exposition::Format;
    use crate::expose::report::CountsReport;
    use crate::expose::resources::ResourceView;
    use crate::ingest::test_support::{frame, pipeline};
    use crate::model::event::RunKind;
    use crate::model::event::StateType::{Completed, Pending, Running, Scheduled};
    use crate::model::known_run::KnownRun;
    use crate::model::time::{Clock, SECOND};
    use crate::state::status::Status;
    use crate::state::test_support::{at, key};

    fn counts_json(p: &Pipeline) -> serde_json::Value {
        let mut report = serde_json::to_value(CountsReport::build(
            &p.shared(),
            &std::sync::Arc::new(Status::new()),
        ))
        .unwrap();
        report["as_of"] = serde_json::Value::Null;
        report
    }

    /// The exposition without the families that differ between any two scrapes (the
    /// process's and the scrape duration).
    fn metrics_text(p: &Pipeline) -> String {
        let clock: Clock = std::sync::Arc::new(|| 0);
        Metrics::new(p.shared(), std::sync::Arc::new(Status::new()), clock)
            .render(Format::Prometheus)
            .lines()
            .filter(|l| !l.contains("process_") && !l.contains("scrape_duration_seconds"))
            .map(|l| format!("{l}\n"))
            .collect()
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
        // A REST baseline at second 5, and a run known only from REST, as live mode has.
        let totals = [(key(Running), 7)].into_iter().collect();
        live.shared()
            .reconcile(vec![(RunKind::FlowRun, totals)], at(5), None)
            .unwrap();
        let seeded = KnownRun {
            id: "00000000-0000-4000-8000-000000000099".into(),
            name: Some("seeded".into()),
            state_type: Running,
            state_name: "Running".into(),
            state_timestamp: Some(0),
            work_queue: Some("default".into()),
            work_pool: Some("pool".into()),
        };
        live.seed_run(RunKind::FlowRun, &seeded, 0);
        let mut mirror = Mirror::new(
            "replay".into(),
            false,
            vec![],
            IdBuckets::new(1800 * SECOND, 1000),
        );
        // Two snapshots, so the mirror folds changes in more than once.
        live.ingest_batch(&frames[..3]);
        mirror.apply(live.take_changes(), None);
        live.ingest_batch(&frames[3..]);
        mirror.apply(live.take_changes(), None);
        let mut bytes = Vec::new();
        mirror.write(0, &mut bytes).unwrap();

        let mut loaded = format::read(&bytes).unwrap();
        let mut restored = pipeline();
        let parts = restore::restore(&mut restored, &loaded).unwrap();
        assert_eq!(counts_json(&restored), counts_json(&live));
        assert_eq!(run_json(&restored, 1), run_json(&live, 1));
        assert_eq!(run_json(&restored, 2), run_json(&live, 2));
        assert_eq!(run_json(&restored, 99), run_json(&live, 99));
        // Every metric family too: active runs, durations, histograms, checks, label sets.
        assert_eq!(metrics_text(&restored), metrics_text(&live));
        assert!(metrics_text(&live).contains("prefect_flow_run_state_duration_seconds_count"));

        // The dedup window came back: replaying every frame changes nothing but duplicates.
        let before = counts_json(&restored);
        restored.ingest_batch(&frames);
        let after = counts_json(&restored);
        assert_eq!(after["flow_runs"], before["flow_runs"]);
        assert_eq!(after["events"]["duplicates"], 6);

        // A mirror seeded from the file writes the same file again.
        let aggregates = restored.tracker_mut().aggregates();
        let mut again = Mirror::from_loaded(&mut loaded, parts, aggregates).unwrap();
        assert_eq!(again.run_count(), 3);
        let mut second = Vec::new();
        again.write(0, &mut second).unwrap();
        let reread = format::read(&second).unwrap();
        assert_eq!(reread.runs[0].len(), 3);
    }

    #[test]
    fn a_file_with_a_right_checksum_and_a_counter_at_u64_max_is_refused() {
        // Before: the file loaded, and the next run leaving Pending overflowed the bucket (a
        // panic with overflow checks on, a wrapped counter without), as `fuzz/` found.
        let frames = [
            frame(1, 1, 0, None, Pending),
            frame(2, 1, 1, Some(Pending), Running),
        ];
        let mut live = pipeline();
        live.journal();
        live.ingest_batch(&frames);
        let mut mirror = Mirror::new("replay".into(), false, vec![], IdBuckets::new(SECOND, 10));
        mirror.apply(live.take_changes(), None);
        let mut bytes = Vec::new();
        mirror.write(0, &mut bytes).unwrap();
        let mut state = format::read(&bytes).unwrap();
        let (_, pending) = &mut state.counts.kinds[0].durations[0];
        let slot = pending.buckets.iter().position(|&n| n == 1).unwrap();
        pending.buckets[slot] = u64::MAX;
        pending.count = u64::MAX;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.bin");
        format::write(&state, std::fs::File::create(&path).unwrap()).unwrap();

        let err = open(&path, false, &mut pipeline(), "replay").unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("state-duration histogram buckets is 18446744073709551615")
                && message.contains("above the plausible 9007199254740992"),
            "{message}"
        );
        assert!(message.contains("--discard-bad-state"), "{message}");
        // At the bound it loads.
        let (_, pending) = &mut state.counts.kinds[0].durations[0];
        pending.buckets[slot] = plausible::MAX_COUNT;
        pending.count = plausible::MAX_COUNT;
        format::write(&state, std::fs::File::create(&path).unwrap()).unwrap();
        assert!(open(&path, false, &mut pipeline(), "replay").is_ok());
    }

    #[test]
    fn open_refuses_bad_files_and_discards_them_on_request() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.bin");
        std::fs::write(&path, b"PEXSTATE\x01\x00\x00\x00garbage").unwrap();
        let err = open(&path, false, &mut pipeline(), "replay").unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
        assert!(err.to_string().contains("--discard-bad-state"), "{err}");
        let (_, opened) = open(&path, true, &mut pipeline(), "replay").unwrap();
        assert_eq!(opened.runs, 0);
        assert!(path.with_extension("discarded").exists());
    }
}
