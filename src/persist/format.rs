//! The state file on disk: a framed, versioned, checksummed postcard document.
//!
//! ```text
//! "PEXSTATE" | version u32 LE | postcard(StateV1) | payload length u64 LE | CRC-32 u32 LE | "PEX!"
//! ```
//!
//! The header says what the file is and which layout follows, so a file from a newer release
//! is refused by its version before anything is decoded; the trailer's length and CRC-32 catch
//! a truncated or corrupted file before it is trusted. postcard (varint integers, no field
//! names) keeps 1 M runs compact; ids are written as 16 raw bytes, and strings that repeat
//! across runs (state names, flow/deployment/pool names) once, in tables the runs index.
//!
//! The types here are the file's layout, kept apart from the in-memory types so that
//! changing those never changes the format silently: a new layout is a new version.

use std::io::{self, Read, Seek, SeekFrom, Write};

use serde::{Deserialize, Serialize};

/// First bytes of every state file.
pub const MAGIC: &[u8; 8] = b"PEXSTATE";
/// Last bytes of every state file.
pub const END: &[u8; 4] = b"PEX!";
/// The layout this build writes and reads.
pub const VERSION: u32 = 1;
const HEADER: usize = MAGIC.len() + 4;
const TRAILER: usize = 8 + 4 + END.len();
/// The largest state file read: about 20 times the 217 MB that 1 M runs and 4 M dedup ids
/// take. The checks before it hold no more than a 64 KiB buffer, so a huge or endless
/// file costs nothing; only a file that passes them is read into memory.
pub const MAX_FILE_BYTES: u64 = 4 << 30;

/// Why a state file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// Not a state file at all.
    #[error("not a prefect-events-exporter state file (bad magic bytes)")]
    Magic,
    /// Written by a newer (or unknown) release.
    #[error("state file version {found} is not supported (this build reads version {VERSION})")]
    Version {
        /// The version in the file.
        found: u32,
    },
    /// Cut short.
    #[error("state file is truncated ({len} bytes; the trailer is missing or does not match)")]
    Truncated {
        /// The file's length.
        len: u64,
    },
    /// Larger than any state file this build writes.
    #[error("state file is too large ({len} bytes; at most {MAX_FILE_BYTES} are read)")]
    TooLarge {
        /// The file's length.
        len: u64,
    },
    /// The checksum does not match.
    #[error("state file is corrupt (CRC-32 {found:08x}, expected {expected:08x})")]
    Checksum {
        /// Computed over the payload.
        found: u32,
        /// Written in the trailer.
        expected: u32,
    },
    /// The payload does not decode.
    #[error("state file is corrupt (cannot decode: {0})")]
    Decode(String),
}

/// A whole state file, layout version 1. The dedup buckets and runs are type parameters so
/// the writer can serialize them from its own maps without copying; reading gives the
/// defaults.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct StateV1<B = Vec<(i64, RunBytes)>, R = [Vec<RunBytes>; 2]> {
    /// Wall-clock micros when written.
    pub written_at: i64,
    /// What the events came from: the Prefect API URL, or `replay`. A file is only used
    /// with the same source.
    pub source: String,
    /// With `replay`: the files and how far they had been read.
    pub replay: Option<ReplayV1>,
    /// Settings the counts depend on; a file written with others is refused.
    pub track_task_runs: bool,
    /// `--group-by` labels, in order.
    pub group_by: Vec<String>,
    /// State keys the runs and aggregates index: (type index, name).
    pub states: Vec<(u8, String)>,
    /// Label strings the runs index.
    pub strings: Vec<String>,
    /// The aggregates.
    pub counts: CountsV1,
    /// Dedup window: newest `occurred` seen.
    pub dedup_newest: Option<i64>,
    /// Dedup window: ids dropped because it was full.
    pub dedup_evicted: u64,
    /// Dedup window: (second of `occurred`, ids as 16-byte little-endian values), oldest
    /// first, each in eviction order.
    pub dedup_buckets: B,
    /// Encoded [`RunV1`]s of flow runs, then task runs.
    pub runs: R,
}

/// How far `run --replay` had read when the state was saved.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayV1 {
    /// The files, as given.
    pub files: Vec<String>,
    /// Index of the file being read.
    pub file: u32,
    /// Bytes of it already applied.
    pub offset: u64,
}

/// Raw bytes: one postcard-encoded [`RunV1`], or a bucket of ids.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct RunBytes(#[serde(with = "serde_bytes")] pub Vec<u8>);

/// The aggregates ([`crate::state::counts::Counts`]).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct CountsV1 {
    /// Flow runs, then task runs.
    pub kinds: [KindV1; 2],
    /// Stream counters.
    pub events: EventsV1,
    /// Group-by label sets in id order.
    pub series: Vec<Vec<String>>,
    /// Id of the `__other__` set.
    pub series_other: Option<u32>,
    /// Events whose label set folded.
    pub series_folded: u64,
    /// REST baseline time.
    pub baseline: Option<i64>,
    /// Baseline generation.
    pub baseline_epoch: u64,
    /// Verification ledger: per second, (event name, distinct events).
    pub ledger: Option<Vec<LedgerSecondV1>>,
    /// Verification and reconciliation counters.
    pub checks: ChecksV1,
}

/// One second of the verification ledger: (second, [(event name, distinct events)]).
pub type LedgerSecondV1 = (i64, Vec<(String, u32)>);

/// Aggregates of one run kind; states are indexes into [`StateV1::states`].
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct KindV1 {
    /// Runs per state.
    pub current: Vec<(u32, i64)>,
    /// Entries per (state, label set).
    pub entries: Vec<(u32, u32, u64)>,
    /// Transitions by type, row-major `[10][9]`.
    pub transitions: Vec<u64>,
    /// Self-transitions per state.
    pub self_transitions: Vec<(u32, u64)>,
    /// Active runs per (state, label set).
    pub active: Vec<(u32, u32, i64)>,
    /// Time in each state.
    pub durations: Vec<(u32, HistogramV1)>,
}

/// A histogram's buckets (not cumulative), sum and count.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct HistogramV1 {
    /// Per bucket, `+Inf` last.
    pub buckets: Vec<u64>,
    /// Sum of observations.
    pub sum: f64,
    /// Number of observations.
    pub count: u64,
}

/// Stream counters ([`crate::state::counts::EventCounts`]).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct EventsV1 {
    /// Decoded state events.
    pub state: u64,
    /// Decoded other events.
    pub other: u64,
    /// Duplicates dropped.
    pub duplicates: u64,
    /// Rejected lines by reason index.
    pub rejected: Vec<u64>,
    /// Same-state events.
    pub self_transitions: u64,
    /// Broken `follows` chains.
    pub chain_gaps: u64,
    /// Newest `occurred` applied: the resume point.
    pub last_occurred: Option<i64>,
    /// Event delay histogram.
    pub delay: HistogramV1,
    /// Runs retired.
    pub runs_retired: u64,
    /// Runs evicted at the cap.
    pub runs_evicted: u64,
    /// State names folded.
    pub folded_state_names: u64,
    /// Label sets folded.
    pub folded_label_sets: u64,
}

/// Verification counters ([`crate::state::counts::CheckCounts`]).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ChecksV1 {
    /// Windows that matched.
    pub windows_match: u64,
    /// Windows repaired.
    pub windows_repaired: u64,
    /// Windows that failed.
    pub windows_failed: u64,
    /// Events repaired.
    pub events_repaired: u64,
    /// Reconciliation corrections by state type.
    pub corrections: Vec<u64>,
    /// Last drift by state type.
    pub last_drift: Vec<i64>,
    /// Reconciliations.
    pub reconciliations: u64,
    /// Backfill gaps.
    pub backfill_gaps: u64,
}

/// A reference to a label string: an index into [`StateV1::strings`], or the text itself
/// (names beyond the interning cap are not worth a table slot).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StrV1 {
    /// Index into the string table.
    Table(u32),
    /// The string.
    Inline(String),
}

/// One run. Times are micros; `since`, `last_occurred` and the recent transitions' times are
/// stored relative to `state_at`, which keeps them short varints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunV1 {
    /// The map key (UUID or hash of an odd id), little-endian.
    pub key: [u8; 16],
    /// The resource id when not canonical.
    pub odd_id: Option<String>,
    /// Run name.
    pub name: Option<String>,
    /// Current state (index into the state table).
    pub state: u32,
    /// State timestamp of the current state's event.
    pub state_at: i64,
    /// Entered the current state at `state_at - since_before`.
    pub since_before: i64,
    /// Newest `occurred` is `state_at + occurred_after`.
    pub occurred_after: i64,
    /// The current state's event id.
    pub state_event: [u8; 16],
    /// Label set id.
    pub series: u32,
    /// flow, deployment, work pool, work queue.
    pub labels: [Option<StrV1>; 4],
    /// Tags.
    pub tags: Vec<StrV1>,
    /// (from, to, count).
    pub transitions: Vec<(Option<u32>, u32, u32)>,
    /// (from, to, `at - state_at`, event id), oldest first.
    pub recent: Vec<(Option<u32>, u32, i64, [u8; 16])>,
    /// Baseline anchor: (epoch, `at - state_at`, before, state).
    pub base: (u64, i64, bool, Option<u32>),
}

/// Writes a framed state file to `out`; returns the bytes written.
pub fn write<B: Serialize, R: Serialize>(
    state: &StateV1<B, R>,
    out: impl Write,
) -> io::Result<u64> {
    let mut out = Framed {
        inner: out,
        crc: crc32fast::Hasher::new(),
        len: 0,
    };
    out.inner.write_all(MAGIC)?;
    out.inner.write_all(&VERSION.to_le_bytes())?;
    postcard::to_io(state, &mut out).map_err(io::Error::other)?;
    let Framed {
        mut inner,
        crc,
        len,
    } = out;
    inner.write_all(&len.to_le_bytes())?;
    inner.write_all(&crc.finalize().to_le_bytes())?;
    inner.write_all(END)?;
    inner.flush()?;
    Ok(len + (HEADER + TRAILER) as u64)
}

/// Checks the framing of a whole file in memory and decodes it (for tests and the fuzz
/// target; a file on disk goes through [`read_from`]).
pub fn read(bytes: &[u8]) -> Result<StateV1, FormatError> {
    let len = bytes.len() as u64;
    // Reading from memory cannot fail.
    read_from(&mut io::Cursor::new(bytes), len).unwrap_or(Err(FormatError::Truncated { len }))
}

/// Reads and decodes the state file `file`, `len` bytes long (from its metadata), checking
/// before anything is held in memory: magic and version (the first 12 bytes), the size cap,
/// the end marker and payload length in the trailer, then the CRC-32 computed through a
/// 64 KiB buffer. Only a file that passes them all is read whole and decoded. The outer
/// error is the file's (unreadable), the inner one its content's.
pub fn read_from<F: Read + Seek>(
    file: &mut F,
    len: u64,
) -> io::Result<Result<StateV1, FormatError>> {
    let truncated = FormatError::Truncated { len };
    let mut header = [0u8; HEADER];
    let got = read_up_to(file, &mut header)?;
    let header = &header[..got];
    if header.len() < MAGIC.len() || &header[..MAGIC.len()] != MAGIC {
        return Ok(Err(if MAGIC.starts_with(header) && len == got as u64 {
            truncated
        } else {
            FormatError::Magic
        }));
    }
    let Some(version) = header.get(MAGIC.len()..HEADER) else {
        return Ok(Err(truncated));
    };
    let version = u32::from_le_bytes(version.try_into().unwrap_or_default());
    if version != VERSION {
        return Ok(Err(FormatError::Version { found: version }));
    }
    if len > MAX_FILE_BYTES {
        return Ok(Err(FormatError::TooLarge { len }));
    }
    let Some(payload_len) = len.checked_sub((HEADER + TRAILER) as u64) else {
        return Ok(Err(truncated));
    };
    file.seek(SeekFrom::Start(len - TRAILER as u64))?;
    let mut trailer = [0u8; TRAILER];
    if read_up_to(file, &mut trailer)? < TRAILER || !trailer.ends_with(END) {
        return Ok(Err(truncated));
    }
    let written_len = u64::from_le_bytes(trailer[..8].try_into().unwrap_or_default());
    let expected = u32::from_le_bytes(trailer[8..12].try_into().unwrap_or_default());
    if written_len != payload_len {
        return Ok(Err(truncated));
    }
    file.seek(SeekFrom::Start(HEADER as u64))?;
    let mut crc = crc32fast::Hasher::new();
    let mut buffer = vec![0u8; 64 * 1024];
    let mut payload = file.by_ref().take(payload_len);
    let mut hashed = 0u64;
    loop {
        let n = payload.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        crc.update(&buffer[..n]);
        hashed += n as u64;
    }
    drop(buffer);
    let found = crc.finalize();
    if hashed != payload_len {
        return Ok(Err(truncated));
    }
    if found != expected {
        return Ok(Err(FormatError::Checksum { found, expected }));
    }
    file.seek(SeekFrom::Start(HEADER as u64))?;
    let mut bytes = Vec::with_capacity(usize::try_from(payload_len).unwrap_or(0));
    file.by_ref().take(payload_len).read_to_end(&mut bytes)?;
    if bytes.len() as u64 != payload_len || crc32fast::hash(&bytes) != expected {
        // Changed under us since the check.
        return Ok(Err(truncated));
    }
    Ok(postcard::from_bytes(&bytes).map_err(|e| FormatError::Decode(e.to_string())))
}

/// Fills as much of `buf` as `file` has; returns how much.
fn read_up_to(file: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Encodes one run.
pub fn encode_run(run: &RunV1) -> Vec<u8> {
    postcard::to_stdvec(run).unwrap_or_default()
}

/// Decodes one run.
pub fn decode_run(bytes: &[u8]) -> Result<RunV1, FormatError> {
    postcard::from_bytes(bytes).map_err(|e| FormatError::Decode(format!("run record: {e}")))
}

/// A writer that counts and checksums what passes through.
struct Framed<W> {
    inner: W,
    crc: crc32fast::Hasher,
    len: u64,
}

impl<W: Write> Write for Framed<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let state: StateV1 = StateV1 {
            written_at: 42,
            group_by: vec!["deployment".into()],
            states: vec![(3, "Completed".into())],
            ..StateV1::default()
        };
        let mut out = Vec::new();
        write(&state, &mut out).unwrap();
        out
    }

    #[test]
    fn round_trip() {
        let state = read(&sample()).unwrap();
        assert_eq!(state.written_at, 42);
        assert_eq!(state.states, vec![(3, "Completed".to_owned())]);
    }

    #[test]
    fn truncation_corruption_and_versions_are_refused() {
        let bytes = sample();
        for cut in [0, 3, 8, 12, bytes.len() / 2, bytes.len() - 1] {
            assert!(
                matches!(read(&bytes[..cut]), Err(FormatError::Truncated { .. })),
                "cut at {cut}"
            );
        }
        let mut flipped = bytes.clone();
        flipped[HEADER + 1] ^= 0x40;
        assert!(matches!(read(&flipped), Err(FormatError::Checksum { .. })));
        let mut future = bytes.clone();
        future[8..12].copy_from_slice(&2u32.to_le_bytes());
        assert!(matches!(
            read(&future),
            Err(FormatError::Version { found: 2 })
        ));
        assert!(matches!(read(b"{\"json\": true}"), Err(FormatError::Magic)));
    }
}
