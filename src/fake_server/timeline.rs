//! The recorded events as a timeline: loaded once, re-timed so the first event happens when
//! the server starts, released at their recorded pace (or a fixed rate, or all at once) into
//! the [`Store`] that the websocket and REST sides read.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use serde_json::Value;
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::ingest::decode::{decode, Decoded};
use crate::model::event::{RunKind, StateType};
use crate::model::time::{format_rfc3339, now_micros, parse_rfc3339, Micros, SECOND};
use crate::source::replay::{Line, LineReader};

/// How events are released.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pace {
    /// At their recorded pace, times a speed factor.
    Recorded(f64),
    /// At a fixed rate, events per second.
    Rate(f64),
    /// All at once.
    Max,
}

/// A run's state as the REST side reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct RunInfo {
    /// Flow or task run.
    pub kind: RunKind,
    /// The run's UUID.
    pub id: String,
    /// The run's name.
    pub name: Option<String>,
    /// State type.
    pub state_type: StateType,
    /// State name.
    pub state_name: String,
    /// State timestamp.
    pub state_at: Micros,
}

/// One released event.
#[derive(Debug)]
pub struct StoredEvent {
    /// Event id.
    pub id: String,
    /// Event name.
    pub name: String,
    /// `occurred` (after re-timing).
    pub occurred: Micros,
    /// `prefect.resource.id`.
    pub resource_id: String,
    /// The run state it carries, if it is a state event of a run.
    pub run: Option<RunInfo>,
    /// The websocket frame carrying it, made once (sending clones a reference).
    frame: Utf8Bytes,
}

/// What goes before the event object in its frame.
const FRAME_HEAD: &str = r#"{"type":"event","event":"#;

impl StoredEvent {
    /// The websocket frame carrying it.
    pub fn frame(&self) -> Utf8Bytes {
        self.frame.clone()
    }

    /// The event object as JSON text.
    pub fn json(&self) -> &str {
        let frame: &str = &self.frame;
        &frame[FRAME_HEAD.len()..frame.len() - 1]
    }

    /// The filter's view of it.
    pub fn candidate(&self) -> super::filter::Candidate<'_> {
        super::filter::Candidate {
            id: &self.id,
            name: &self.name,
            occurred: self.occurred,
            resource_id: &self.resource_id,
        }
    }
}

/// A loaded event, before re-timing.
#[derive(Clone, Debug)]
pub struct Template {
    value: Value,
    occurred: Micros,
}

/// Why recordings cannot be played.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// No line of any file is an event.
    #[error("the files hold no events")]
    NoEvents,
}

/// Reads events from files: frames or bare events, validated by the exporter's own decoder;
/// other lines are skipped, and an id seen before keeps its first copy (a server stores each
/// event once).
pub fn load(files: &[PathBuf]) -> Result<Vec<Template>, LoadError> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for path in files {
        let unreadable = |source| LoadError::Read {
            path: path.clone(),
            source,
        };
        let mut reader = LineReader::open(path).map_err(unreadable)?;
        while let Some(line) = reader.next_line().map_err(unreadable)? {
            let Line::Frame(bytes) = line else { continue };
            let Decoded::Event(event) = decode(bytes) else {
                continue;
            };
            if !seen.insert(event.id) {
                continue;
            }
            let Ok(mut value) = serde_json::from_slice::<Value>(bytes) else {
                continue;
            };
            if value.get("type").is_some() {
                value = value["event"].take();
            }
            out.push(Template {
                value,
                occurred: event.occurred,
            });
        }
    }
    if out.is_empty() {
        return Err(LoadError::NoEvents);
    }
    Ok(out)
}

/// What the server has released so far.
pub struct Store {
    events: RwLock<Vec<Arc<StoredEvent>>>,
    runs: Mutex<HashMap<String, RunInfo>>,
    live: broadcast::Sender<Arc<StoredEvent>>,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            events: RwLock::new(Vec::new()),
            runs: Mutex::new(HashMap::new()),
            live: broadcast::channel(65_536).0,
        }
    }
}

impl Store {
    /// Releases one event: stored, counted, and sent to live subscribers.
    pub fn release(&self, event: StoredEvent) {
        let event = Arc::new(event);
        if let Some(run) = &event.run {
            let mut runs = self.runs.lock();
            let current = runs
                .entry(event.resource_id.clone())
                .or_insert_with(|| run.clone());
            if run.state_at >= current.state_at {
                *current = run.clone();
            }
        }
        self.events.write().push(event.clone());
        let _ = self.live.send(event);
    }

    /// A receiver of events released from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<StoredEvent>> {
        self.live.subscribe()
    }

    /// Released events matching `keep`, ascending by `occurred`.
    pub fn query(&self, keep: impl Fn(&StoredEvent) -> bool) -> Vec<Arc<StoredEvent>> {
        let mut out: Vec<Arc<StoredEvent>> = self
            .events
            .read()
            .iter()
            .filter(|e| keep(e))
            .cloned()
            .collect();
        out.sort_by_key(|e| e.occurred);
        out
    }

    /// Current run states.
    pub fn runs(&self) -> Vec<RunInfo> {
        self.runs.lock().values().cloned().collect()
    }

    /// How many events were released.
    pub fn len(&self) -> usize {
        self.events.read().len()
    }
}

/// How to play the file.
#[derive(Clone, Debug)]
pub struct PlayConfig {
    /// Release pace.
    pub pace: Pace,
    /// Keep recorded timestamps (no re-timing).
    pub keep_timestamps: bool,
    /// Play again with fresh ids after the end, until shutdown.
    pub looped: bool,
}

fn shift_field(value: &mut Value, map: impl Fn(Micros) -> Micros, plus_zero: bool) {
    if let Some(t) = value.as_str().and_then(parse_rfc3339) {
        let text = format_rfc3339(map(t));
        *value = Value::String(if plus_zero {
            text.replace('Z', "+00:00")
        } else {
            text
        });
    }
}

fn stored(
    mut value: Value,
    retime: &dyn Fn(Micros) -> Micros,
    ids: Option<&mut HashMap<String, String>>,
) -> Option<StoredEvent> {
    shift_field(&mut value["occurred"], retime, false);
    if value.get("received").is_some() {
        shift_field(&mut value["received"], retime, false);
    }
    if value["resource"].get("prefect.state-timestamp").is_some() {
        shift_field(
            &mut value["resource"]["prefect.state-timestamp"],
            retime,
            true,
        );
    }
    if let Some(ids) = ids {
        for field in ["id", "follows"] {
            if let Some(old) = value[field].as_str().map(str::to_owned) {
                let fresh = ids.entry(old).or_insert_with(fresh_uuid).clone();
                value[field] = Value::String(fresh);
            }
        }
    }
    let id = value["id"].as_str()?.to_owned();
    let json = value.to_string();
    let Decoded::Event(event) = decode(json.as_bytes()) else {
        return None;
    };
    let run = match (RunKind::of_resource(&event.resource_id), &event.state) {
        (Some(kind), Some(change)) => Some(RunInfo {
            kind,
            id: event.resource_id[kind.resource_prefix().len()..].to_owned(),
            name: event.resource_name.as_deref().map(str::to_owned),
            state_type: change.to.ty,
            state_name: change.to.name.to_string(),
            state_at: change.timestamp,
        }),
        _ => None,
    };
    Some(StoredEvent {
        id,
        name: event.name.to_string(),
        occurred: event.occurred,
        resource_id: event.resource_id.to_string(),
        run,
        frame: Utf8Bytes::from(format!("{FRAME_HEAD}{json}}}")),
    })
}

/// A random (version 4) UUID as text.
fn fresh_uuid() -> String {
    uuid::Builder::from_random_bytes(rand::random())
        .into_uuid()
        .hyphenated()
        .to_string()
}

/// Releases the timeline into `store` until it ends (or, looped, until `shutdown`).
pub async fn play(
    templates: Vec<Template>,
    store: Arc<Store>,
    config: PlayConfig,
    shutdown: CancellationToken,
) {
    let first = templates.iter().map(|t| t.occurred).min().unwrap_or(0);
    let last = templates.iter().map(|t| t.occurred).max().unwrap_or(0);
    let span = (last - first).max(1) as f64;
    // Per event: when it is released and when it occurred, in micros after the start of an
    // iteration. An event never occurs after it is released, as on a real server.
    let (release, occurs): (Vec<Micros>, Vec<Micros>) = match config.pace {
        Pace::Recorded(speed) => {
            let occurs: Vec<Micros> = templates
                .iter()
                .map(|t| ((t.occurred - first) as f64 / speed) as Micros)
                .collect();
            let mut latest = 0;
            let release = occurs
                .iter()
                .map(|&o| {
                    latest = latest.max(o);
                    latest
                })
                .collect();
            (release, occurs)
        }
        Pace::Rate(rate) => {
            let release: Vec<Micros> = (0..templates.len())
                .map(|i| (i as f64 / rate * SECOND as f64) as Micros)
                .collect();
            (release.clone(), release)
        }
        // All at once: the recording is squeezed into the second before the release.
        Pace::Max => (
            vec![0; templates.len()],
            templates
                .iter()
                .map(|t| ((t.occurred - first) as f64 * SECOND as f64 / span) as Micros - SECOND)
                .collect(),
        ),
    };
    let iteration_length = release.last().copied().unwrap_or(0) + 2 * SECOND;
    let started = now_micros();
    let mut iteration: i64 = 0;
    loop {
        let base = started + iteration * iteration_length;
        let mut ids = HashMap::new();
        for ((template, offset), occurs) in templates.iter().zip(&release).zip(&occurs) {
            let due = base + offset;
            let wait = due - now_micros();
            if wait > 0 {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_micros(wait as u64)) => {}
                }
            } else if shutdown.is_cancelled() {
                return;
            }
            // Every timestamp of the event moves by the same amount.
            let shift = if config.keep_timestamps {
                iteration * iteration_length
            } else {
                base + occurs - template.occurred
            };
            let retime = |t: Micros| t + shift;
            let fresh_ids = (iteration > 0).then_some(&mut ids);
            if let Some(event) = stored(template.value.clone(), &retime, fresh_ids) {
                store.release(event);
            }
        }
        info!(iteration, released = store.len(), "Timeline played.");
        if !config.looped {
            return;
        }
        iteration += 1;
    }
}
