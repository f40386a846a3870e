//! `replay`: process recorded files offline as fast as possible, then print the counts (the
//! `/api/v1/counts` document or the `/metrics` text) and one throughput line.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::expose::collect::Metrics;
use crate::expose::exposition::Format;
use crate::expose::report::CountsReport;
use crate::ingest::Pipeline;
use crate::run::load::{check_readable, load_files, LoadSummary};
use crate::run::replay::recording_clock;
use crate::run::settings::{OutputFormat, ReplaySettings};
use crate::state::status::Status;

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
pub fn replay(settings: &ReplaySettings) -> Result<(String, String)> {
    check_readable("FILE", &settings.files)?;
    let mut pipeline = Pipeline::new(settings.engine.clone());
    let started = Instant::now();
    // A file that fails while it is read is as much a bad argument as one that cannot be
    // opened: exit code 2 either way.
    let load = load_files(&mut pipeline, &settings.files, None).map_err(|e| match e {
        Error::Read { path, source } => Error::Config {
            flag: "FILE",
            message: format!("cannot read {}: {source}", path.display()),
        },
        other => other,
    })?;
    let summary = ReplaySummary {
        load,
        elapsed: started.elapsed(),
    };
    let shared = pipeline.shared();
    let status = Arc::new(Status::new());
    let report = CountsReport::build(&shared, &status);
    let output = match settings.output {
        OutputFormat::Json => serde_json::to_string_pretty(&report).unwrap_or_default() + "\n",
        OutputFormat::Prometheus => {
            let metrics = Metrics::new(shared.clone(), status, recording_clock(shared));
            metrics.render(Format::Prometheus)
        }
    };
    Ok((output, summary.line(report.events.received)))
}
