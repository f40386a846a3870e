//! The stream's events in the Server-Sent Events wire format, and [`Renders`]: each change's
//! `transition` event rendered once and shared by every client that sends it.
//!
//! With 50 clients following every transition, rendering per client made each event cost 50
//! JSON encodings; the cache keeps the newest renders by change sequence number, so the first
//! client to send a change encodes it and the others copy its bytes.

use std::collections::VecDeque;

use hyper::body::Bytes;
use serde::Serialize;

use crate::model::event::StateKey;
use crate::model::time::{format_rfc3339, Micros};

/// Renders kept: far more than one batch of every client, so a client in step with the others
/// never renders again what another rendered.
const KEPT: usize = 4096;

/// Appends one event in the wire format (`data` is one line of JSON).
pub(super) fn push_event(out: &mut Vec<u8>, event: &str, id: Option<&str>, data: &[u8]) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(event.as_bytes());
    if let Some(id) = id {
        out.extend_from_slice(b"\nid: ");
        out.extend_from_slice(id.as_bytes());
    }
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\n\n");
}

/// One event in the wire format.
pub(super) fn event(event: &str, id: Option<&str>, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(event.len() + data.len() + 64);
    push_event(&mut out, event, id, data);
    out
}

/// A state as events show it: `{"name", "type"}`.
#[derive(Serialize)]
struct State<'a> {
    name: &'a str,
    #[serde(rename = "type")]
    ty: &'static str,
}

impl<'a> State<'a> {
    fn of(key: &'a StateKey) -> State<'a> {
        State {
            name: &key.name,
            ty: key.ty.as_str(),
        }
    }
}

/// `transition`'s data.
#[derive(Serialize)]
struct Transition<'a> {
    from: Option<State<'a>>,
    /// Present (true) only for an event older than the run's state when it arrived.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    late: bool,
    occurred: String,
    resource: &'a str,
    to: State<'a>,
}

/// `end`'s data.
#[derive(Serialize)]
struct End<'a> {
    resource: &'a str,
    state: State<'a>,
}

/// JSON of a value that cannot fail to encode (strings and options of them).
fn json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// A `transition` event with id `id`: `resource` went from `from` to `to` at `occurred`
/// (`late`: an event older than the run's state when it arrived).
pub(super) fn transition(
    id: &str,
    resource: &str,
    from: Option<&StateKey>,
    to: &StateKey,
    occurred: Micros,
    late: bool,
) -> Vec<u8> {
    let data = json(&Transition {
        from: from.map(State::of),
        late,
        occurred: format_rfc3339(occurred),
        resource,
        to: State::of(to),
    });
    event("transition", Some(id), &data)
}

/// An `end` event: `resource` reached the terminal `state`.
pub(super) fn end(resource: &str, state: &StateKey) -> Vec<u8> {
    let data = json(&End {
        resource,
        state: State::of(state),
    });
    event("end", None, &data)
}

/// The newest rendered `transition` events, by the sequence number of their change.
#[derive(Debug, Default)]
pub(super) struct Renders {
    /// Ordered by sequence number.
    ring: VecDeque<(u64, Bytes)>,
}

impl Renders {
    /// The event of change `seq`, rendered by `render` unless it is held already.
    pub(super) fn get_or_render(&mut self, seq: u64, render: impl FnOnce() -> Vec<u8>) -> Bytes {
        let at = match self.ring.binary_search_by_key(&seq, |(s, _)| *s) {
            Ok(at) => return self.ring[at].1.clone(),
            Err(at) => at,
        };
        let bytes = Bytes::from(render());
        self.ring.insert(at, (seq, bytes.clone()));
        if self.ring.len() > KEPT {
            self.ring.pop_front();
        }
        bytes
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::model::event::StateType;

    fn state(ty: StateType, name: &str) -> StateKey {
        StateKey {
            ty,
            name: Arc::from(name),
        }
    }

    #[test]
    fn events_are_in_the_wire_format() {
        let running = state(StateType::Running, "Running");
        let done = state(StateType::Completed, "Completed");
        let text = transition("7-3", "prefect.flow-run.a", Some(&running), &done, 0, false);
        assert_eq!(
            String::from_utf8(text).unwrap(),
            "event: transition\nid: 7-3\ndata: {\"from\":{\"name\":\"Running\",\"type\":\"RUNNING\"},\
             \"occurred\":\"1970-01-01T00:00:00Z\",\"resource\":\"prefect.flow-run.a\",\
             \"to\":{\"name\":\"Completed\",\"type\":\"COMPLETED\"}}\n\n"
        );
        let first = transition("7-4", "r\"q", None, &running, 0, false);
        assert!(String::from_utf8(first)
            .unwrap()
            .contains("{\"from\":null,\"occurred\""));
        let late = transition("7-5", "r", Some(&running), &running, 0, true);
        assert!(String::from_utf8(late)
            .unwrap()
            .contains("{\"from\":{\"name\":\"Running\",\"type\":\"RUNNING\"},\"late\":true,"));
        assert_eq!(
            String::from_utf8(end("prefect.flow-run.a", &done)).unwrap(),
            "event: end\ndata: {\"resource\":\"prefect.flow-run.a\",\
             \"state\":{\"name\":\"Completed\",\"type\":\"COMPLETED\"}}\n\n"
        );
    }

    #[test]
    fn a_change_is_rendered_once_and_the_oldest_renders_are_forgotten() {
        let mut renders = Renders::default();
        let mut calls = 0;
        for seq in [5, 3, 5, 4, 3] {
            let bytes = renders.get_or_render(seq, || {
                calls += 1;
                seq.to_string().into_bytes()
            });
            assert_eq!(&bytes[..], seq.to_string().as_bytes());
        }
        assert_eq!(calls, 3, "5, 3 and 4 rendered once each");
        let seqs: Vec<u64> = renders.ring.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, vec![3, 4, 5], "kept in order");
        for seq in 6..(6 + KEPT as u64) {
            renders.get_or_render(seq, Vec::new);
        }
        assert_eq!(renders.ring.len(), KEPT);
        assert_eq!(renders.ring.front().map(|(s, _)| *s), Some(6));
    }
}
