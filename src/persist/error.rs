//! Why a state file cannot be used: refused at start with a message naming the cause.

use std::path::PathBuf;

use super::format::FormatError;

/// Why the state file cannot be used at start.
#[derive(Debug, thiserror::Error)]
#[error("{}: {cause}", path.display())]
pub struct OpenError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong, and what to do.
    pub cause: OpenCause,
}

/// What is wrong with the state file or its place.
#[derive(Debug, thiserror::Error)]
pub enum OpenCause {
    /// Another process holds the lock.
    #[error("another process holds {}; one state file serves one exporter", lock.display())]
    Locked {
        /// The lock file.
        lock: PathBuf,
    },
    /// The lock file cannot be opened or locked.
    #[error("cannot lock {}: {source}", lock.display())]
    Lock {
        /// The lock file.
        lock: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The path's directory or symbolic links cannot be followed.
    #[error("cannot resolve the state file's path: {0}")]
    Resolve(std::io::Error),
    /// The path names something other than a regular file.
    #[error("it is {what}; --state-file needs a regular file (created if missing)")]
    NotAFile {
        /// What it is.
        what: &'static str,
    },
    /// The file exists but cannot be read.
    #[error("cannot read the state file: {0}")]
    Read(std::io::Error),
    /// Its directory cannot take the temporary file of a write.
    #[error("cannot write beside the state file: {0}")]
    Unwritable(std::io::Error),
    /// The file cannot be used (and `--discard-bad-state` is off).
    #[error("{0}; fix or remove it, or start with --discard-bad-state")]
    Unusable(Unusable),
}

/// Why the content of a state file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Unusable {
    /// The framing or the payload is bad.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// Written in the other mode (replay files versus a server).
    #[error("it was written reading from {saved:?}, not {now:?}")]
    OtherSource {
        /// The source in the file.
        saved: String,
        /// The source now.
        now: String,
    },
    /// Written with the other `--task-runs` setting.
    #[error("it was written {} --task-runs; start with the same setting or discard it", if *saved { "with" } else { "without" })]
    TaskRuns {
        /// The setting in the file.
        saved: bool,
    },
    /// Written with another `--group-by`.
    #[error("it was written with --group-by {saved:?}, not {now:?}; start with the same setting or discard it")]
    GroupBy {
        /// The setting in the file.
        saved: String,
        /// The setting now.
        now: String,
    },
    /// It passes its checksum but does not fit together.
    #[error("state file does not fit: {0}")]
    Invalid(Invalid),
}

/// How a checksummed file fails to fit together (written by a buggy build, or edited).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// An index into one of its tables is out of range.
    #[error("{table} index {index} out of range")]
    Index {
        /// Which table.
        table: &'static str,
        /// The index.
        index: u64,
    },
    /// A time outside years 1 to 9999.
    #[error("time {0} is out of range")]
    Time(i64),
    /// A time offset that overflows.
    #[error("time offset overflows")]
    Overflow,
    /// A counter (or the sum of counters of one kind) above what any real stream reaches
    /// (see `plausible`): restored, the next event would overflow it.
    #[error("{what}{} is {value}, above the plausible {limit}", if *summed { " (summed)" } else { "" })]
    Implausible {
        /// Which counters.
        what: &'static str,
        /// The value (or the sum so far).
        value: i128,
        /// Whether `value` is the sum of several counters.
        summed: bool,
        /// The bound.
        limit: u64,
    },
    /// A part whose size or shape is wrong.
    #[error("{0}")]
    Shape(&'static str),
}

impl From<Invalid> for Unusable {
    fn from(e: Invalid) -> Unusable {
        Unusable::Invalid(e)
    }
}
