//! Reading recorded files into a pipeline, in batches: what `replay` and `run --replay` do
//! with their files.

use std::path::PathBuf;

use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::ingest::decode::RejectReason;
use crate::ingest::Pipeline;
use crate::source::replay::{Line, LineReader};

/// Frames applied per lock of the aggregates while loading files.
const LOAD_BATCH: usize = 1024;

/// Checks that every file can be opened and is not a directory before any work starts (a
/// configuration error naming `flag` otherwise: exit code 2).
pub fn check_readable(flag: &'static str, files: &[PathBuf]) -> Result<()> {
    for path in files {
        let unreadable = |cause: String| Error::Config {
            flag,
            message: format!("cannot read {}: {cause}", path.display()),
        };
        let file = std::fs::File::open(path).map_err(|e| unreadable(e.to_string()))?;
        if file.metadata().is_ok_and(|m| m.is_dir()) {
            return Err(unreadable("it is a directory".to_owned()));
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
) -> Result<LoadSummary> {
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
) -> Result<LoadSummary> {
    let mut summary = LoadSummary::default();
    let (first, offset) = resume.unwrap_or((0, 0));
    for (index, path) in files.iter().enumerate().skip(first) {
        let read_error = |source| Error::Read {
            path: path.clone(),
            source,
        };
        let start = if index == first { offset } else { 0 };
        let mut reader = LineReader::open_at(path, start).map_err(read_error)?;
        let started_at = reader.bytes_read();
        loop {
            if stop.is_some_and(CancellationToken::is_cancelled) {
                summary.stopped = true;
                return Ok(summary);
            }
            let mut batch = pipeline.batch();
            let mut ended = false;
            for _ in 0..LOAD_BATCH {
                let line = match reader.next_line() {
                    Ok(Some(line)) => line,
                    Ok(None) => {
                        ended = true;
                        break;
                    }
                    Err(e) => {
                        batch.finish();
                        return Err(read_error(e));
                    }
                };
                match line {
                    Line::Frame(frame) => {
                        batch.ingest(frame);
                    }
                    Line::Oversize(bytes) => batch.reject(RejectReason::Oversize, bytes),
                }
                summary.lines += 1;
            }
            batch.finish();
            if ended {
                break;
            }
            after_batch(pipeline, index, reader.bytes_read());
        }
        after_batch(pipeline, index, reader.bytes_read());
        summary.bytes += reader.bytes_read() - started_at;
    }
    Ok(summary)
}
