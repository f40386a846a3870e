//! Bytes to [`Event`]: one websocket frame or replay line in, one verdict out.
//!
//! Pure and synchronous. A line is either a frame (`{"type":"event","event":{...}}`) or a bare
//! event object. Only the fields the exporter uses are read; everything else is skipped without
//! allocating, and strings are borrowed from the input unless they contain escapes.
//!
//! Every way a line can be unusable maps to one [`RejectReason`]; decoding never panics and
//! never stops the caller. Frames of another `type` (`auth_success`, ...) are [`Decoded::Skip`].
//! [`RejectReason::FutureTimestamp`] is never decided here: it needs the wall clock, and the
//! pipeline applies it to decoded events.
//!
//! Layout: `scan` lexes JSON (whitespace, strings, numbers, skipping whole values) exactly as
//! `serde_json` 1.x accepts and refuses it; `read` walks the frame's shape and keeps the keys
//! the exporter uses; this module turns those into an [`Event`] or a [`RejectReason`]. This
//! hand-written scanner replaced a `serde_json` + serde-visitor decoder that cost 2.5 times
//! what `serde_json` needs merely to read the same bytes; that decoder is the test oracle in
//! `tests/integration/decode_oracle.rs`, and `decode_differential` (plus the `fuzz/` target)
//! checks that both return the same [`Decoded`] for every input.

use std::borrow::Cow;

pub use crate::model::event::MAX_FRAME_BYTES;
use crate::model::event::{Event, EventId, RawState, StateChange, StateType};
pub use crate::model::reject::RejectReason;
use crate::model::time::parse_rfc3339;

mod read;
mod scan;

use read::{Fields, StateFields};
use scan::{Fail, Scanner};

/// What one line or frame turned out to be.
// A transient return value on the stack: boxing the event would allocate once per event.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A valid event.
    Event(Event<'a>),
    /// A frame of another type, or a blank line: not an event, not an error.
    Skip,
    /// Unusable input, with the reason it is counted under.
    Rejected(RejectReason),
}

/// Decodes one frame or replay line (without its line ending).
pub fn decode(bytes: &[u8]) -> Decoded<'_> {
    if bytes.len() > MAX_FRAME_BYTES {
        return Decoded::Rejected(RejectReason::Oversize);
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Decoded::Skip;
    }
    let mut scanner = Scanner::new(bytes);
    let mut frame = (Fields::default(), None);
    match read::line(&mut scanner, &mut frame) {
        Ok(_) if !scanner.at_end() => Decoded::Rejected(RejectReason::MalformedJson),
        Ok(true) => {
            let (fields, event_object) = &mut frame;
            fields.take_decoded(event_object)
        }
        Ok(false) => Decoded::Rejected(RejectReason::NotAnObject),
        Err(Fail::TooDeep) => Decoded::Rejected(RejectReason::TooDeep),
        Err(Fail::Malformed) => Decoded::Rejected(RejectReason::MalformedJson),
    }
}

impl<'a> Fields<'a> {
    /// The verdict on a top-level object, given the last object under its `event` key.
    /// Takes the strings it keeps out of the fields (which are spent afterwards): moving the
    /// field structs around whole costs more than decoding some of them.
    fn take_decoded(&mut self, event_object: &mut Option<Fields<'a>>) -> Decoded<'a> {
        match self.frame_type.as_deref() {
            Some("event") => match event_object {
                Some(inner) => inner.take_event(),
                None if self.event_not_object || self.event_name.is_some() => {
                    Decoded::Rejected(RejectReason::NotAnObject)
                }
                None => Decoded::Rejected(RejectReason::MissingEvent),
            },
            Some(_) => Decoded::Skip,
            None => self.take_event(),
        }
    }

    /// The verdict on an event object.
    fn take_event(&mut self) -> Decoded<'a> {
        match self.validate() {
            Ok(event) => Decoded::Event(event),
            Err(reason) => Decoded::Rejected(reason),
        }
    }

    /// The event, or why it is unusable.
    fn validate(&mut self) -> Result<Event<'a>, RejectReason> {
        let id = match &self.id {
            Some(id) if !id.is_empty() => EventId::from_text(id),
            _ => return Err(RejectReason::MissingId),
        };
        let name = match self.event_name.take() {
            Some(name) if !name.is_empty() => name,
            _ => return Err(RejectReason::MissingEvent),
        };
        let occurred = match &self.occurred {
            Some(text) => parse_rfc3339(text).ok_or(RejectReason::BadTimestamp)?,
            None => return Err(RejectReason::MissingOccurred),
        };
        let resource = self
            .resource
            .as_mut()
            .ok_or(RejectReason::MissingResourceId)?;
        let resource_id = match resource.id.take() {
            Some(id) if !id.is_empty() => id,
            _ => return Err(RejectReason::MissingResourceId),
        };
        let state = match &resource.state_type {
            None => None,
            Some(label_type) => {
                let label_type = parse_state_type(label_type).ok_or(RejectReason::BadStateType)?;
                let label_state = RawState {
                    name: resource
                        .state_name
                        .take()
                        .unwrap_or(Cow::Borrowed(label_type.default_name())),
                    ty: label_type,
                };
                let to = match self.validated_state.take() {
                    Some(validated) => validated.into_state()?.unwrap_or(label_state),
                    None => label_state,
                };
                let from = match self.initial_state.take() {
                    Some(initial) => initial.into_state()?,
                    None => None,
                };
                let timestamp = resource
                    .state_timestamp
                    .as_deref()
                    .and_then(parse_rfc3339)
                    .unwrap_or(occurred);
                Some(StateChange {
                    from,
                    to,
                    timestamp,
                })
            }
        };
        Ok(Event {
            id,
            name,
            occurred,
            resource_id,
            resource_name: resource.name.take(),
            state,
            related: std::mem::take(&mut self.related),
            follows: self.follows.as_deref().map(EventId::from_text),
        })
    }
}

impl<'a> StateFields<'a> {
    /// `Ok(None)` when the state is null or has no type; an error when the type is unknown.
    fn into_state(self) -> Result<Option<RawState<'a>>, RejectReason> {
        if !self.present {
            return Ok(None);
        }
        let Some(ty) = self.ty else { return Ok(None) };
        let ty = parse_state_type(&ty).ok_or(RejectReason::BadStateType)?;
        let name = self.name.unwrap_or(Cow::Borrowed(ty.default_name()));
        Ok(Some(RawState { ty, name }))
    }
}

/// [`StateType::parse`] as one `match` instead of a search (checked against it in the tests).
fn parse_state_type(text: &str) -> Option<StateType> {
    Some(match text {
        "SCHEDULED" => StateType::Scheduled,
        "PENDING" => StateType::Pending,
        "RUNNING" => StateType::Running,
        "COMPLETED" => StateType::Completed,
        "FAILED" => StateType::Failed,
        "CANCELLED" => StateType::Cancelled,
        "CRASHED" => StateType::Crashed,
        "PAUSED" => StateType::Paused,
        "CANCELLING" => StateType::Cancelling,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMPLETED: &str = r#"{"type":"event","event":{"occurred":"2026-11-25T01:22:33.038215Z","event":"prefect.flow-run.Completed","resource":{"prefect.resource.id":"prefect.flow-run.1d0ed5a7-8a36-4beb-ba9c-90940da3462a","prefect.resource.name":"loutish-sambar","prefect.run-count":"1","prefect.state-message":"","prefect.state-name":"Completed","prefect.state-timestamp":"2026-11-25T01:22:33.038215+00:00","prefect.state-type":"COMPLETED"},"related":[{"prefect.resource.id":"prefect.flow.e0745856-2290-4a0b-b662-b4acae5c3db6","prefect.resource.role":"flow","prefect.resource.name":"ok-flow"},{"prefect.resource.id":"prefect.tag.nightly","prefect.resource.role":"tag"}],"payload":{"intended":{"from":"RUNNING","to":"COMPLETED"},"initial_state":{"type":"RUNNING","name":"Running"},"validated_state":{"type":"COMPLETED","name":"Completed"}},"id":"01a2104c-1b45-78ba-b5dd-e73befb0c0aa","follows":"01a2104c-1b45-78ba-b5dd-e73befb0c0a9","received":"2026-11-25T01:22:33.1Z"}}"#;

    fn event(line: &str) -> Event<'_> {
        match decode(line.as_bytes()) {
            Decoded::Event(e) => e,
            other => panic!("expected an event, got {other:?}"),
        }
    }

    fn rejected(line: &[u8]) -> RejectReason {
        match decode(line) {
            Decoded::Rejected(r) => r,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn state_types_parse_as_the_event_module_parses_them() {
        for ty in StateType::ALL {
            assert_eq!(parse_state_type(ty.as_str()), Some(ty));
        }
        for text in ["", "completed", "COMPLETED ", "DONE", "Running"] {
            assert_eq!(parse_state_type(text), StateType::parse(text), "{text:?}");
        }
    }

    #[test]
    fn decodes_a_real_state_frame() {
        let e = event(COMPLETED);
        assert_eq!(e.name, "prefect.flow-run.Completed");
        assert_eq!(
            e.resource_id,
            "prefect.flow-run.1d0ed5a7-8a36-4beb-ba9c-90940da3462a"
        );
        assert_eq!(e.resource_name.as_deref(), Some("loutish-sambar"));
        assert!(
            matches!(e.resource_id, Cow::Borrowed(_)),
            "strings are borrowed"
        );
        let state = e.state.unwrap();
        assert_eq!(state.to.ty, StateType::Completed);
        assert_eq!(state.to.name, "Completed");
        let from = state.from.unwrap();
        assert_eq!(
            (from.ty, from.name.as_ref()),
            (StateType::Running, "Running")
        );
        assert_eq!(state.timestamp, e.occurred);
        assert_eq!(e.related.flow.as_deref(), Some("ok-flow"));
        assert_eq!(e.related.tags, vec![Cow::Borrowed("nightly")]);
        assert_eq!(
            e.follows,
            Some(EventId::from_text("01a2104c-1b45-78ba-b5dd-e73befb0c0a9"))
        );
    }

    #[test]
    fn bare_events_decode_like_frames() {
        let frame: serde_json::Value = serde_json::from_str(COMPLETED).unwrap();
        let bare = frame["event"].to_string();
        assert_eq!(event(&bare), event(COMPLETED));
    }

    #[test]
    fn other_frame_types_and_blank_lines_are_skipped() {
        assert_eq!(decode(br#"{"type":"auth_success"}"#), Decoded::Skip);
        assert_eq!(decode(b"   "), Decoded::Skip);
        assert_eq!(decode(b""), Decoded::Skip);
    }

    #[test]
    fn new_run_has_no_from_state_and_labels_fill_a_missing_validated_state() {
        let line = r#"{"id":"x1","event":"prefect.flow-run.Late","occurred":"2026-11-25T01:00:00Z","resource":{"prefect.resource.id":"prefect.flow-run.a","prefect.state-type":"SCHEDULED","prefect.state-name":"Late"},"payload":{"initial_state":null}}"#;
        let state = event(line).state.unwrap();
        assert_eq!(state.from, None);
        assert_eq!(
            (state.to.ty, state.to.name.as_ref()),
            (StateType::Scheduled, "Late")
        );
    }

    #[test]
    fn escaped_strings_are_unescaped() {
        let line = r#"{"id":"x1","event":"prefect.flow-run.X","occurred":"2026-11-25T01:00:00Z","resource":{"prefect.resource.id":"prefect.flow-run.a","prefect.state-type":"RUNNING"},"payload":{"validated_state":{"type":"RUNNING","name":"Qu\"o\\te\nÜ"}}}"#;
        assert_eq!(event(line).state.unwrap().to.name, "Qu\"o\\te\nÜ");
    }

    #[test]
    fn every_rejection_reason() {
        let base = |id: &str, name: &str, occurred: &str, resource: &str| {
            format!(r#"{{"id":{id},"event":{name},"occurred":{occurred},"resource":{resource}}}"#)
        };
        let ok_res = r#"{"prefect.resource.id":"prefect.flow-run.a"}"#;
        let ts = r#""2026-11-25T01:00:00Z""#;
        assert_eq!(rejected(b"{not json"), RejectReason::MalformedJson);
        assert_eq!(rejected(b"{\"a\":1} trailing"), RejectReason::MalformedJson);
        assert_eq!(
            rejected(b"{\"id\":\"\xff\xfe\"}"),
            RejectReason::MalformedJson
        );
        assert_eq!(rejected(b"[1,2]"), RejectReason::NotAnObject);
        assert_eq!(rejected(b"42"), RejectReason::NotAnObject);
        assert_eq!(
            rejected(br#"{"type":"event","event":7}"#),
            RejectReason::NotAnObject
        );
        assert_eq!(rejected(br#"{"type":"event"}"#), RejectReason::MissingEvent);
        let nested_events = r#"{"event":"#.repeat(10_000) + &"}".repeat(10_000);
        assert_eq!(
            rejected(format!(r#"{{"type":"event","event":{nested_events}}}"#).as_bytes()),
            RejectReason::TooDeep
        );
        // Deep nesting inside fields the decoder skips is harmless (skipped iteratively).
        let deep = "[".repeat(100_000) + &"]".repeat(100_000);
        assert_eq!(
            rejected(format!(r#"{{"id":"a","x":{deep}}}"#).as_bytes()),
            RejectReason::MissingEvent
        );
        assert_eq!(
            rejected(&vec![b' '; MAX_FRAME_BYTES + 1]),
            RejectReason::Oversize
        );
        let line = base("5", r#""e""#, ts, ok_res);
        assert_eq!(rejected(line.as_bytes()), RejectReason::MissingId);
        let line = base(r#""a""#, "null", ts, ok_res);
        assert_eq!(rejected(line.as_bytes()), RejectReason::MissingEvent);
        let line = base(r#""a""#, r#""e""#, "1732500000", ok_res);
        assert_eq!(rejected(line.as_bytes()), RejectReason::MissingOccurred);
        let line = base(r#""a""#, r#""e""#, r#""yesterday""#, ok_res);
        assert_eq!(rejected(line.as_bytes()), RejectReason::BadTimestamp);
        let line = base(r#""a""#, r#""e""#, ts, r#"{"prefect.resource.id":3}"#);
        assert_eq!(rejected(line.as_bytes()), RejectReason::MissingResourceId);
        let line = base(r#""a""#, r#""e""#, ts, r#"["prefect.flow-run.a"]"#);
        assert_eq!(rejected(line.as_bytes()), RejectReason::MissingResourceId);
        let bad_state =
            r#"{"prefect.resource.id":"prefect.flow-run.a","prefect.state-type":"DONE"}"#;
        let line = base(r#""a""#, r#""e""#, ts, bad_state);
        assert_eq!(rejected(line.as_bytes()), RejectReason::BadStateType);
    }
}
