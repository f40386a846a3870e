//! Redis stream ids and the replies of the stream commands the Redis source sends
//! (`XREADGROUP`, `XAUTOCLAIM`, `XINFO GROUPS`, `XINFO STREAM`, `XINFO CONSUMERS`,
//! `CLIENT LIST`), read from the client's raw
//! values in RESP2 or RESP3 shape; and the gap test that compares a group's position with
//! what the stream still holds. Pure: no I/O.

use std::collections::HashMap;
use std::fmt;

use ::redis::Value;
use thiserror::Error;
use tokio_tungstenite::tungstenite::Bytes;

/// A stream entry id `<ms>-<seq>`; ids order as (ms, seq) integers, never as strings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId {
    /// Redis's clock at `XADD`, in milliseconds.
    pub ms: u64,
    /// The sequence number within that millisecond.
    pub seq: u64,
}

impl StreamId {
    /// `0-0`: before every entry.
    pub const ZERO: StreamId = StreamId { ms: 0, seq: 0 };

    /// Parses `<ms>-<seq>` (or a bare `<ms>`, sequence 0).
    pub fn parse(text: &[u8]) -> Option<StreamId> {
        let text = std::str::from_utf8(text).ok()?;
        let (ms, seq) = text.split_once('-').unwrap_or((text, "0"));
        Some(StreamId {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }

    /// The first id of the millisecond `micros` falls in (negative times give `0-0`).
    pub fn at_micros(micros: i64) -> StreamId {
        StreamId {
            ms: u64::try_from(micros / 1000).unwrap_or(0),
            seq: 0,
        }
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// One entry: its id, its `data` field (`None` when it has none) and the event name of its
/// `attributes` field (`None` when it has none that parses).
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The entry's id.
    pub id: StreamId,
    /// The `data` field: the event JSON.
    pub data: Option<Bytes>,
    /// `attributes.event`: the event's name, as the publisher wrote it beside the data.
    pub event: Option<String>,
}

/// The `event` of an `attributes` field (`{"id": …, "event": …}`).
fn attributes_event(bytes: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Attributes {
        event: String,
    }
    serde_json::from_slice::<Attributes>(bytes)
        .ok()
        .map(|a| a.event)
}

/// A reply that does not have the shape the command documents.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("unexpected reply to {command}: {what}")]
pub struct ReplyError {
    /// The command.
    pub command: &'static str,
    /// What was wrong.
    pub what: &'static str,
}

fn bad(command: &'static str, what: &'static str) -> ReplyError {
    ReplyError { command, what }
}

/// Bytes of a bulk or simple string.
fn text(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        Value::VerbatimString { text, .. } => Some(text.as_bytes()),
        _ => None,
    }
}

fn id_of(value: &Value) -> Option<StreamId> {
    text(value).and_then(StreamId::parse)
}

fn integer(value: &Value) -> Option<u64> {
    match value {
        Value::Int(n) => u64::try_from(*n).ok(),
        other => text(other)
            .and_then(|t| std::str::from_utf8(t).ok())
            .and_then(|t| t.parse().ok()),
    }
}

/// Key-value pairs of a RESP2 flat array or a RESP3 map.
fn pairs(value: Value) -> Option<Vec<(Value, Value)>> {
    match value {
        Value::Map(pairs) => Some(pairs),
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len() / 2);
            let mut items = items.into_iter();
            while let (Some(k), Some(v)) = (items.next(), items.next()) {
                out.push((k, v));
            }
            Some(out)
        }
        _ => None,
    }
}

/// Entries `[[id, [field, value, …]], …]`; a nil entry (deleted, Redis 6.2) is skipped.
fn entries(command: &'static str, value: Value) -> Result<Vec<Entry>, ReplyError> {
    let Value::Array(items) = value else {
        return match value {
            Value::Nil => Ok(Vec::new()),
            _ => Err(bad(command, "entries are not an array")),
        };
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Value::Array(parts) = item else {
            continue;
        };
        let mut parts = parts.into_iter();
        let id = parts
            .next()
            .as_ref()
            .and_then(id_of)
            .ok_or_else(|| bad(command, "an entry without an id"))?;
        let (mut data, mut event) = (None, None);
        if let Some(fields) = parts.next().and_then(pairs) {
            for (field, value) in fields {
                match (text(&field), value) {
                    (Some(b"data"), Value::BulkString(bytes)) => data = Some(Bytes::from(bytes)),
                    (Some(b"attributes"), value) => {
                        event = text(&value).and_then(attributes_event);
                    }
                    _ => {}
                }
            }
        }
        out.push(Entry { id, data, event });
    }
    Ok(out)
}

/// `XREADGROUP … STREAMS <one stream> <id>`: the entries (none on a timeout).
pub fn read_group(value: Value) -> Result<Vec<Entry>, ReplyError> {
    const COMMAND: &str = "XREADGROUP";
    let streams = match value {
        Value::Nil => return Ok(Vec::new()),
        Value::Map(pairs) => pairs.into_iter().map(|(_, v)| v).collect::<Vec<_>>(),
        Value::Array(items) => items
            .into_iter()
            .filter_map(|s| match s {
                Value::Array(mut parts) if parts.len() == 2 => parts.pop(),
                _ => None,
            })
            .collect(),
        _ => return Err(bad(COMMAND, "not an array of streams")),
    };
    let mut out = Vec::new();
    for stream in streams {
        out.extend(entries(COMMAND, stream)?);
    }
    Ok(out)
}

/// What `XAUTOCLAIM` answered.
#[derive(Debug, PartialEq)]
pub struct Claimed {
    /// Where the next call starts (`0-0`: the pending list was scanned to its end).
    pub next: StreamId,
    /// The entries claimed.
    pub entries: Vec<Entry>,
    /// Pending entries that were no longer in the stream (Redis 7 removes them from the
    /// pending list): lost to trimming.
    pub deleted: Vec<StreamId>,
}

/// `XAUTOCLAIM`: `[next, entries, deleted ids]` (the third element since Redis 7).
pub fn autoclaim(value: Value) -> Result<Claimed, ReplyError> {
    const COMMAND: &str = "XAUTOCLAIM";
    let Value::Array(parts) = value else {
        return Err(bad(COMMAND, "not an array"));
    };
    let mut parts = parts.into_iter();
    let next = parts
        .next()
        .as_ref()
        .and_then(id_of)
        .ok_or_else(|| bad(COMMAND, "no cursor"))?;
    let entries = entries(COMMAND, parts.next().unwrap_or(Value::Nil))?;
    let deleted = match parts.next() {
        Some(Value::Array(ids)) => ids.iter().filter_map(id_of).collect(),
        _ => Vec::new(),
    };
    Ok(Claimed {
        next,
        entries,
        deleted,
    })
}

/// A consumer group as `XINFO GROUPS` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupInfo {
    /// Consumers known to the group.
    pub consumers: u64,
    /// Entries delivered and not acknowledged.
    pub pending: u64,
    /// The last id delivered to any consumer.
    pub last_delivered: StreamId,
    /// The logical count of entries read, when Redis can tell (nil otherwise).
    pub entries_read: Option<u64>,
}

/// `XINFO GROUPS <stream>`: the group named `group`, if the stream has it.
pub fn group_info(value: Value, group: &str) -> Result<Option<GroupInfo>, ReplyError> {
    const COMMAND: &str = "XINFO GROUPS";
    let Value::Array(groups) = value else {
        return Err(bad(COMMAND, "not an array"));
    };
    for entry in groups {
        let fields = pairs(entry).ok_or_else(|| bad(COMMAND, "a group is not a map"))?;
        let mut info = GroupInfo::default();
        let mut name_matches = false;
        for (key, value) in &fields {
            match text(key) {
                Some(b"name") => name_matches = text(value) == Some(group.as_bytes()),
                Some(b"consumers") => info.consumers = integer(value).unwrap_or(0),
                Some(b"pending") => info.pending = integer(value).unwrap_or(0),
                Some(b"last-delivered-id") => {
                    info.last_delivered = id_of(value).unwrap_or(StreamId::ZERO);
                }
                Some(b"entries-read") => info.entries_read = integer(value),
                _ => {}
            }
        }
        if name_matches {
            return Ok(Some(info));
        }
    }
    Ok(None)
}

/// A consumer of a group as `XINFO CONSUMERS` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConsumerInfo {
    /// Its name.
    pub name: String,
    /// Entries delivered to it and not acknowledged.
    pub pending: u64,
    /// Milliseconds since it last read (or tried to: Redis 7.2 splits that into `idle` and
    /// `inactive`; `idle` is the attempt either way).
    pub idle_ms: u64,
}

/// `XINFO CONSUMERS <stream> <group>`: every consumer of the group.
pub fn consumers(value: Value) -> Result<Vec<ConsumerInfo>, ReplyError> {
    const COMMAND: &str = "XINFO CONSUMERS";
    let Value::Array(items) = value else {
        return Err(bad(COMMAND, "not an array"));
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let fields = pairs(item).ok_or_else(|| bad(COMMAND, "a consumer is not a map"))?;
        let mut info = ConsumerInfo::default();
        let mut named = false;
        for (key, value) in &fields {
            match text(key) {
                Some(b"name") => {
                    let name = text(value).ok_or_else(|| bad(COMMAND, "a name is not text"))?;
                    info.name = String::from_utf8_lossy(name).into_owned();
                    named = true;
                }
                Some(b"pending") => info.pending = integer(value).unwrap_or(0),
                Some(b"idle") => info.idle_ms = integer(value).unwrap_or(0),
                _ => {}
            }
        }
        if !named {
            return Err(bad(COMMAND, "a consumer without a name"));
        }
        out.push(info);
    }
    Ok(out)
}

/// `CLIENT LIST`: the named connections, each name with the fewest seconds since one of
/// its connections last sent a command (unnamed connections are left out).
pub fn client_list(value: &Value) -> Result<HashMap<String, u64>, ReplyError> {
    const COMMAND: &str = "CLIENT LIST";
    let listing = text(value).ok_or_else(|| bad(COMMAND, "not text"))?;
    let mut out: HashMap<String, u64> = HashMap::new();
    for line in String::from_utf8_lossy(listing).lines() {
        let mut name = None;
        let mut idle = None;
        for field in line.split(' ') {
            match field.split_once('=') {
                Some(("name", value)) if !value.is_empty() => name = Some(value),
                Some(("idle", value)) => idle = value.parse::<u64>().ok(),
                _ => {}
            }
        }
        if let (Some(name), Some(idle)) = (name, idle) {
            let seen = out.entry(name.to_owned()).or_insert(idle);
            *seen = (*seen).min(idle);
        }
    }
    Ok(out)
}

/// A stream as `XINFO STREAM` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StreamInfo {
    /// Entries it holds now.
    pub length: u64,
    /// Entries ever added (Redis 7; never decreases).
    pub entries_added: Option<u64>,
    /// The newest id ever generated.
    pub last_generated: StreamId,
    /// The oldest entry it still holds.
    pub first_entry: Option<StreamId>,
}

/// `XINFO STREAM <stream>`.
pub fn stream_info(value: Value) -> Result<StreamInfo, ReplyError> {
    const COMMAND: &str = "XINFO STREAM";
    let fields = pairs(value).ok_or_else(|| bad(COMMAND, "not a map"))?;
    let mut info = StreamInfo::default();
    for (key, value) in &fields {
        match text(key) {
            Some(b"length") => info.length = integer(value).unwrap_or(0),
            Some(b"entries-added") => info.entries_added = integer(value),
            Some(b"last-generated-id") => {
                info.last_generated = id_of(value).unwrap_or(StreamId::ZERO);
            }
            Some(b"first-entry") => {
                if let Value::Array(entry) = value {
                    info.first_entry = entry.first().and_then(id_of);
                }
            }
            _ => {}
        }
    }
    Ok(info)
}

/// Whether entries the group had not been delivered were trimmed away: the stream holds
/// nothing at or before the group's position (so the entries in between are gone) and
/// something it added after that position is missing. With `entries-read` and
/// `entries-added` the missing entries are counted exactly; without them any entry newer than
/// the group's position that is not in the stream counts (the stream's first entry or, when it
/// is empty, its newest generated id lies past the position).
pub fn trimmed_unread(group: &GroupInfo, stream: &StreamInfo) -> bool {
    let position = group.last_delivered;
    match stream.first_entry {
        Some(first) if first <= position => false,
        first => {
            if stream.last_generated <= position {
                return false;
            }
            match (stream.entries_added, group.entries_read) {
                (Some(added), Some(read)) => added.saturating_sub(read) > stream.length,
                _ => first.is_none_or(|first| first > position),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn id(s: &str) -> StreamId {
        StreamId::parse(s.as_bytes()).unwrap()
    }

    #[test]
    fn ids_order_as_integers_not_strings() {
        assert!(id("5-10") > id("5-9"));
        assert!(id("10-0") > id("9-99"));
        assert_eq!(id("7").to_string(), "7-0");
        assert_eq!(StreamId::parse(b"x-1"), None);
        assert_eq!(StreamId::at_micros(1_500_999), id("1500-0"));
        assert_eq!(StreamId::at_micros(-5), StreamId::ZERO);
    }

    #[test]
    fn read_group_replies_in_resp2_and_resp3() {
        let entry = Value::Array(vec![
            bulk("1-0"),
            Value::Array(vec![
                bulk("data"),
                bulk("{}"),
                bulk("attributes"),
                bulk(r#"{"id":"x","event":"prefect.flow-run.Running"}"#),
            ]),
        ]);
        let no_data = Value::Array(vec![bulk("2-0"), Value::Array(vec![bulk("x"), bulk("y")])]);
        let resp2 = Value::Array(vec![Value::Array(vec![
            bulk("events"),
            Value::Array(vec![entry.clone(), no_data.clone()]),
        ])]);
        let expected = vec![
            Entry {
                id: id("1-0"),
                data: Some(Bytes::from_static(b"{}")),
                event: Some("prefect.flow-run.Running".to_owned()),
            },
            Entry {
                id: id("2-0"),
                data: None,
                event: None,
            },
        ];
        assert_eq!(read_group(resp2).unwrap(), expected);
        let resp3 = Value::Map(vec![(bulk("events"), Value::Array(vec![entry, no_data]))]);
        assert_eq!(read_group(resp3).unwrap(), expected);
        assert_eq!(read_group(Value::Nil).unwrap(), vec![]);
        assert!(read_group(Value::Int(3)).is_err());
    }

    #[test]
    fn autoclaim_reports_trimmed_pending_entries() {
        let reply = Value::Array(vec![
            bulk("0-0"),
            Value::Array(vec![]),
            Value::Array(vec![bulk("17-0"), bulk("18-0")]),
        ]);
        let claimed = autoclaim(reply).unwrap();
        assert_eq!(claimed.next, StreamId::ZERO);
        assert_eq!(claimed.deleted, vec![id("17-0"), id("18-0")]);
    }

    #[test]
    fn groups_and_stream_info_from_the_measured_replies() {
        let groups = Value::Array(vec![
            Value::Array(vec![
                bulk("name"),
                bulk("event-persister"),
                bulk("consumers"),
                Value::Int(1),
                bulk("pending"),
                Value::Int(0),
                bulk("last-delivered-id"),
                bulk("1796096075292-0"),
                bulk("entries-read"),
                Value::Int(21),
                bulk("lag"),
                Value::Int(92),
            ]),
            Value::Array(vec![
                bulk("name"),
                bulk("ours"),
                bulk("consumers"),
                Value::Int(2),
                bulk("pending"),
                Value::Int(3),
                bulk("last-delivered-id"),
                bulk("1796096074888-0"),
                bulk("entries-read"),
                Value::Nil,
                bulk("lag"),
                Value::Nil,
            ]),
        ]);
        let ours = group_info(groups.clone(), "ours").unwrap().unwrap();
        assert_eq!(
            ours,
            GroupInfo {
                consumers: 2,
                pending: 3,
                last_delivered: id("1796096074888-0"),
                entries_read: None,
            }
        );
        assert_eq!(group_info(groups, "missing").unwrap(), None);
        let stream = Value::Array(vec![
            bulk("length"),
            Value::Int(1),
            bulk("last-generated-id"),
            bulk("9-0"),
            bulk("entries-added"),
            Value::Int(182),
            bulk("first-entry"),
            Value::Array(vec![bulk("9-0"), Value::Array(vec![])]),
        ]);
        assert_eq!(
            stream_info(stream).unwrap(),
            StreamInfo {
                length: 1,
                entries_added: Some(182),
                last_generated: id("9-0"),
                first_entry: Some(id("9-0")),
            }
        );
    }

    #[test]
    fn consumers_in_resp2_and_resp3_with_or_without_inactive() {
        // Redis 7.0 (measured shape): name, pending, idle.
        let resp2 = Value::Array(vec![
            Value::Array(vec![
                bulk("name"),
                bulk("prefect-events-exporter-h-1-a"),
                bulk("pending"),
                Value::Int(3),
                bulk("idle"),
                Value::Int(812),
            ]),
            // Redis 7.2 adds inactive (-1: never read successfully).
            Value::Array(vec![
                bulk("name"),
                bulk("b"),
                bulk("pending"),
                Value::Int(0),
                bulk("idle"),
                Value::Int(61_000),
                bulk("inactive"),
                Value::Int(-1),
            ]),
        ]);
        let expected = vec![
            ConsumerInfo {
                name: "prefect-events-exporter-h-1-a".to_owned(),
                pending: 3,
                idle_ms: 812,
            },
            ConsumerInfo {
                name: "b".to_owned(),
                pending: 0,
                idle_ms: 61_000,
            },
        ];
        assert_eq!(consumers(resp2).unwrap(), expected);
        let resp3 = Value::Array(vec![Value::Map(vec![
            (bulk("name"), bulk("b")),
            (bulk("pending"), Value::Int(0)),
            (bulk("idle"), Value::Int(61_000)),
        ])]);
        assert_eq!(consumers(resp3).unwrap(), expected[1..]);
        assert_eq!(consumers(Value::Array(vec![])).unwrap(), vec![]);
        assert!(consumers(Value::Int(1)).is_err());
        assert!(consumers(Value::Array(vec![Value::Array(vec![
            bulk("idle"),
            Value::Int(1)
        ])]))
        .is_err());
    }

    #[test]
    fn client_list_names_with_their_freshest_connection() {
        // The measured shape (Redis 7.0), one line per connection.
        let listing = "id=3 addr=127.0.0.1:50412 laddr=127.0.0.1:6379 fd=8 name=exporter-a age=12 idle=0 flags=b db=0 cmd=xreadgroup\n\
                       id=4 addr=127.0.0.1:50414 laddr=127.0.0.1:6379 fd=9 name= age=3 idle=3 flags=N db=0 cmd=client|list\n\
                       id=5 addr=127.0.0.1:50416 laddr=127.0.0.1:6379 fd=10 name=exporter-a age=40 idle=31 flags=N db=0 cmd=xack\n\
                       id=6 addr=127.0.0.1:50418 laddr=127.0.0.1:6379 fd=11 name=exporter-b age=40 idle=9 flags=N db=0 cmd=xack\n";
        let clients = client_list(&bulk(listing)).unwrap();
        assert_eq!(clients.len(), 2, "{clients:?}");
        assert_eq!(clients["exporter-a"], 0);
        assert_eq!(clients["exporter-b"], 9);
        let verbatim = Value::VerbatimString {
            format: ::redis::VerbatimFormat::Text,
            text: "id=1 name=x idle=2\n".to_owned(),
        };
        assert_eq!(client_list(&verbatim).unwrap()["x"], 2);
        assert!(client_list(&Value::Int(1)).is_err());
    }

    #[test]
    fn a_trim_past_unread_entries_is_a_gap_and_nothing_else_is() {
        let group = |at: &str, read: Option<u64>| GroupInfo {
            last_delivered: id(at),
            entries_read: read,
            ..GroupInfo::default()
        };
        let stream =
            |first: Option<&str>, last: &str, length: u64, added: Option<u64>| StreamInfo {
                length,
                entries_added: added,
                last_generated: id(last),
                first_entry: first.map(id),
            };
        // The stream still holds the group's position: nothing lost.
        assert!(!trimmed_unread(
            &group("5-0", Some(5)),
            &stream(Some("3-0"), "9-0", 7, Some(9))
        ));
        // Caught up, and the stream was trimmed to its newest entry (the group's own).
        assert!(!trimmed_unread(
            &group("9-0", Some(9)),
            &stream(Some("9-0"), "9-0", 1, Some(9))
        ));
        // Caught up on an emptied stream.
        assert!(!trimmed_unread(
            &group("9-0", Some(9)),
            &stream(None, "9-0", 0, Some(9))
        ));
        // Counted: 10 added after the position, 5 still held.
        assert!(trimmed_unread(
            &group("5-0", Some(5)),
            &stream(Some("11-0"), "15-0", 5, Some(15))
        ));
        // Counted: the position was trimmed, but every later entry is still there.
        assert!(!trimmed_unread(
            &group("5-0", Some(5)),
            &stream(Some("6-0"), "15-0", 10, Some(15))
        ));
        // Unknown counts: an entry past the position is missing from the stream's start.
        assert!(trimmed_unread(
            &group("5-0", None),
            &stream(Some("11-0"), "15-0", 5, Some(15))
        ));
        assert!(trimmed_unread(
            &group("5-0", None),
            &stream(None, "15-0", 0, None)
        ));
    }
}
