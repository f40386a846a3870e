//! `record`: subscribe like `run` and append every raw frame to a JSONL file, building replay
//! data from a real server. Reconnects resume from the newest `occurred` recorded (the
//! overlap then appears twice in the file, as it does live; dedup absorbs it on replay).

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::error::{Error, Result};
use crate::ingest::decode::{decode, Decoded};
use crate::model::event::RunKind;
use crate::model::time::{now_micros, Micros};
use crate::run::settings::RecordSettings;
use crate::source::ws::{self, WsConfig};
use crate::source::{Frame, StreamError, StreamObserver};

/// Tracks the resume point from the frames written.
#[derive(Default)]
struct Progress {
    newest: Mutex<Option<Micros>>,
}

impl StreamObserver for Progress {
    fn newest_applied(&self) -> Option<Micros> {
        *self.newest.lock()
    }
    fn connected(&self) {}
    fn disconnected(&self, _error: &StreamError, _was_connected: bool) {}
    fn backfill_gap(&self, _gap: Micros) {}
    fn exclusive(&self, _refused: Option<&str>) {}
}

fn open(path: &Path) -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::Config {
            flag: "--out",
            message: format!("cannot open {}: {e}", path.display()),
        })
}

/// Appends frames to `file` until the channel closes (a frame the source could not hold,
/// over the size limit, is logged and left out).
async fn write_frames(
    mut frames: mpsc::Receiver<Frame>,
    file: std::fs::File,
    progress: Arc<Progress>,
) -> std::io::Result<u64> {
    let mut out = std::io::BufWriter::new(file);
    let mut written = 0u64;
    let mut batch = Vec::with_capacity(256);
    while frames.recv_many(&mut batch, 256).await > 0 {
        for frame in batch.drain(..) {
            let frame = match frame {
                Frame::Data(bytes) => bytes,
                Frame::Rejected { reason, bytes } => {
                    warn!(
                        reason = reason.as_str(),
                        frame_bytes = bytes,
                        "A frame was left out of the recording."
                    );
                    continue;
                }
                // Only a Redis source marks its batches; `record` reads the websocket.
                Frame::Delivered(_) => continue,
            };
            if let Decoded::Event(event) = decode(&frame) {
                let mut newest = progress.newest.lock();
                if newest.is_none_or(|n| event.occurred > n) {
                    *newest = Some(event.occurred);
                }
            }
            if frame.contains(&b'\n') {
                let compact = serde_json::from_slice::<serde_json::Value>(&frame)
                    .map(|v| v.to_string().into_bytes())
                    .unwrap_or_else(|_| {
                        frame
                            .iter()
                            .map(|&b| if b == b'\n' { b' ' } else { b })
                            .collect()
                    });
                out.write_all(&compact)?;
            } else {
                out.write_all(&frame)?;
            }
            out.write_all(b"\n")?;
            written += 1;
        }
        out.flush()?;
    }
    out.flush()?;
    Ok(written)
}

/// `record --out FILE`.
pub async fn record(settings: RecordSettings, shutdown: CancellationToken) -> Result<()> {
    let file = open(&settings.out)?;
    let progress = Arc::new(Progress::default());
    let (tx, rx) = mpsc::channel(16_384);
    let writer = tokio::spawn(write_frames(rx, file, progress.clone()));
    let config = WsConfig {
        api_url: settings.api.url.clone(),
        credentials: settings.api.credentials.clone(),
        prefixes: RunKind::subscribed_prefixes(settings.task_runs),
        idle_timeout: settings.api.stream_idle_timeout,
    };
    info!(out = %settings.out.display(), "Recording the events stream.");
    ws::run(config, now_micros(), tx, progress.as_ref(), shutdown).await;
    match writer.await {
        Ok(Ok(frames)) => {
            info!(frames, "Recording stopped.");
            Ok(())
        }
        Ok(Err(source)) => Err(Error::Read {
            path: settings.out,
            source,
        }),
        Err(e) => {
            warn!(error = %e, "The writer task failed.");
            Ok(())
        }
    }
}
