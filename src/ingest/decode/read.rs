//! The schema-specific half of the decoder: which keys of a frame are read and how, on top of
//! the lexer in `scan`.
//!
//! A frame and a bare event share one shape ([`Fields`]): `event` is an object in a frame and a
//! string in an event. Only `type`, `event`, `id`, `occurred`, `follows`, `resource` (five
//! labels), `related` (`id`, `role`, `name` of each entry) and `payload` (`initial_state` and
//! `validated_state`, their `type` and `name`) are read; everything else is skipped.
//!
//! The rules are those of the serde visitors this replaced, kept bit for bit (the test oracle
//! in `tests/integration/decode_oracle.rs` is that code):
//! - a value of the wrong type reads as absent, never as an error;
//! - a repeated key overwrites the earlier value (with absent, if the later one has the wrong
//!   type), except `event`, where a name, an object and "neither" are remembered separately;
//! - keys are compared after unescaping;
//! - every container opened on this read path counts against the 128-level recursion limit
//!   (only nested `event` objects can reach it); skipped values nest without limit.

use std::borrow::Cow;

use super::scan::{enter, Scan, Scanner, Start};
use crate::model::event::RelatedNames;

/// The keys of a frame or of an event object that the exporter reads.
#[derive(Default)]
pub(super) struct Fields<'a> {
    /// `type` (a frame's type).
    pub(super) frame_type: Option<Cow<'a, str>>,
    /// `event` when a string (an event's name).
    pub(super) event_name: Option<Cow<'a, str>>,
    /// `event` was seen with a value that is neither a string nor an object.
    pub(super) event_not_object: bool,
    /// `id`.
    pub(super) id: Option<Cow<'a, str>>,
    /// `occurred`.
    pub(super) occurred: Option<Cow<'a, str>>,
    /// `follows`.
    pub(super) follows: Option<Cow<'a, str>>,
    /// `resource`, when an object.
    pub(super) resource: Option<ResourceFields<'a>>,
    /// The names folded from `related`.
    pub(super) related: RelatedNames<'a>,
    /// `payload.initial_state`.
    pub(super) initial_state: Option<StateFields<'a>>,
    /// `payload.validated_state`.
    pub(super) validated_state: Option<StateFields<'a>>,
}

/// The keys of `resource` that the exporter reads.
#[derive(Default)]
pub(super) struct ResourceFields<'a> {
    /// `prefect.resource.id`.
    pub(super) id: Option<Cow<'a, str>>,
    /// `prefect.resource.name`.
    pub(super) name: Option<Cow<'a, str>>,
    /// `prefect.state-type`.
    pub(super) state_type: Option<Cow<'a, str>>,
    /// `prefect.state-name`.
    pub(super) state_name: Option<Cow<'a, str>>,
    /// `prefect.state-timestamp`.
    pub(super) state_timestamp: Option<Cow<'a, str>>,
}

/// `payload.initial_state` / `payload.validated_state`: `{type, name, ...}`.
#[derive(Default)]
pub(super) struct StateFields<'a> {
    /// `type`.
    pub(super) ty: Option<Cow<'a, str>>,
    /// `name`.
    pub(super) name: Option<Cow<'a, str>>,
    /// The state was an object (not `null` or another type).
    pub(super) present: bool,
}

/// One entry of `related`.
#[derive(Default)]
struct RelatedEntry<'a> {
    id: Option<Cow<'a, str>>,
    role: Option<Cow<'a, str>>,
    name: Option<Cow<'a, str>>,
}

/// Reads the top-level value of a line (the caller checks that nothing follows it): `true`
/// when it is an object, whose fields go to `frame.0` and whose last `event` object to
/// `frame.1`.
pub(super) fn line<'a>(
    s: &mut Scanner<'a>,
    frame: &mut (Fields<'a>, Option<Fields<'a>>),
) -> Scan<bool> {
    match s.start()? {
        Start::Object => {
            let depth = enter(0)?;
            let (outer, inner) = frame;
            fields(s, depth, outer, Some(inner))?;
            Ok(true)
        }
        Start::Array => {
            enter(0)?;
            s.skip_elements()?;
            Ok(false)
        }
        Start::Str => s.check_text().map(|()| false),
        Start::Scalar => Ok(false),
    }
}

/// The keys of a frame or event object, in the order Prefect writes them (a frame's two,
/// then an event's).
const FIELD_KEYS: &[(&[u8], Option<Field>)] = &[
    (b"type", Some(Field::Type)),
    (b"event", Some(Field::Event)),
    (b"occurred", Some(Field::Occurred)),
    (b"event", Some(Field::Event)),
    (b"resource", Some(Field::Resource)),
    (b"related", Some(Field::Related)),
    (b"payload", Some(Field::Payload)),
    (b"id", Some(Field::Id)),
    (b"follows", Some(Field::Follows)),
    (b"received", None),
];

/// Where [`FIELD_KEYS`] expects an event's first key.
const EVENT_KEYS_START: usize = 2;

/// The members of a frame or event object that are read.
#[derive(Clone, Copy)]
enum Field {
    Type,
    Event,
    Occurred,
    Resource,
    Related,
    Payload,
    Id,
    Follows,
}

/// Reads the members of a frame or event object whose `{` is consumed, at nesting `depth`.
/// The last object under `event` goes to `event_object` when given, else is read and dropped.
fn fields<'a>(
    s: &mut Scanner<'a>,
    depth: u32,
    out: &mut Fields<'a>,
    mut event_object: Option<&mut Option<Fields<'a>>>,
) -> Scan<()> {
    let hint = if event_object.is_some() {
        0
    } else {
        EVENT_KEYS_START
    };
    s.members(FIELD_KEYS, hint, |s, field| {
        let Some(field) = field.flatten() else {
            return s.skip_value();
        };
        match field {
            Field::Type => text(s, depth, &mut out.frame_type)?,
            Field::Event => match s.start()? {
                Start::Str => s.text(&mut out.event_name)?,
                Start::Object => {
                    let inner_depth = enter(depth)?;
                    match event_object.as_deref_mut() {
                        Some(slot) => {
                            let inner = slot.insert(Fields::default());
                            fields(s, inner_depth, inner, None)?;
                        }
                        None => fields(s, inner_depth, &mut Fields::default(), None)?,
                    }
                }
                Start::Array => {
                    enter(depth)?;
                    s.skip_elements()?;
                    out.event_not_object = true;
                }
                Start::Scalar => out.event_not_object = true,
            },
            Field::Id => text(s, depth, &mut out.id)?,
            Field::Occurred => text(s, depth, &mut out.occurred)?,
            Field::Follows => text(s, depth, &mut out.follows)?,
            Field::Resource => resource(s, depth, &mut out.resource)?,
            Field::Related => related(s, depth, &mut out.related)?,
            Field::Payload => payload(s, depth, &mut out.initial_state, &mut out.validated_state)?,
        }
        Ok(())
    })
}

/// A string into `out`, borrowed when possible; `None` for any other value (read and dropped).
#[inline]
fn text<'a>(s: &mut Scanner<'a>, depth: u32, out: &mut Option<Cow<'a, str>>) -> Scan<()> {
    if s.eat(b'"') {
        return s.text(out);
    }
    let start = s.start()?;
    if start == Start::Str {
        return s.text(out);
    }
    *out = None;
    other(s, start, depth)
}

/// Reads a value that is not the object or array the caller wants: dropped, but read the
/// way the old visitors read it (strings checked as text, containers drained).
fn other(s: &mut Scanner<'_>, start: Start, depth: u32) -> Scan<()> {
    match start {
        Start::Str => s.check_text(),
        Start::Object => {
            enter(depth)?;
            s.skip_members()
        }
        Start::Array => {
            enter(depth)?;
            s.skip_elements()
        }
        Start::Scalar => Ok(()),
    }
}

/// `resource`: an object of string labels; `None` when not an object. Written in place (as
/// every reader here), so the large field structs are never moved.
fn resource<'a>(s: &mut Scanner<'a>, depth: u32, out: &mut Option<ResourceFields<'a>>) -> Scan<()> {
    let start = s.start()?;
    if start != Start::Object {
        *out = None;
        return other(s, start, depth);
    }
    let depth = enter(depth)?;
    let r = out.insert(ResourceFields::default());
    // Prefect's order; unread labels it always sends are listed so they need no scan.
    const KEYS: &[(&[u8], Option<u8>)] = &[
        (b"prefect.resource.id", Some(0)),
        (b"prefect.resource.name", Some(1)),
        (b"prefect.run-count", None),
        (b"prefect.state-message", None),
        (b"prefect.state-name", Some(2)),
        (b"prefect.state-timestamp", Some(3)),
        (b"prefect.state-type", Some(4)),
    ];
    s.members(KEYS, 0, |s, key| {
        let slot = match key.flatten() {
            Some(0) => &mut r.id,
            Some(1) => &mut r.name,
            Some(2) => &mut r.state_name,
            Some(3) => &mut r.state_timestamp,
            Some(4) => &mut r.state_type,
            _ => return s.skip_value(),
        };
        text(s, depth, slot)
    })
}

/// `related`: a list of resource objects, folded into the names the exporter labels with.
fn related<'a>(s: &mut Scanner<'a>, depth: u32, names: &mut RelatedNames<'a>) -> Scan<()> {
    let start = s.start()?;
    *names = RelatedNames::default();
    if start != Start::Array {
        return other(s, start, depth);
    }
    let depth = enter(depth)?;
    s.elements(|s| {
        let Some(entry) = related_entry(s, depth)? else {
            return Ok(());
        };
        let slot = match entry.role.as_deref() {
            Some("flow") => &mut names.flow,
            Some("deployment") => &mut names.deployment,
            Some("work-pool") => &mut names.work_pool,
            Some("work-queue") => &mut names.work_queue,
            Some("tag") => {
                if let Some(tag) = entry.id.and_then(tag_name) {
                    names.tags.push(tag);
                }
                return Ok(());
            }
            _ => return Ok(()),
        };
        if entry.name.is_some() {
            *slot = entry.name;
        }
        Ok(())
    })
}

/// The tag name of a `prefect.tag.<name>` resource id.
fn tag_name(id: Cow<'_, str>) -> Option<Cow<'_, str>> {
    const PREFIX: &str = "prefect.tag.";
    match id {
        Cow::Borrowed(s) => s.strip_prefix(PREFIX).map(Cow::Borrowed),
        Cow::Owned(s) => s.strip_prefix(PREFIX).map(|t| Cow::Owned(t.to_owned())),
    }
}

/// One element of `related`; `None` when not an object.
fn related_entry<'a>(s: &mut Scanner<'a>, depth: u32) -> Scan<Option<RelatedEntry<'a>>> {
    let start = s.start()?;
    if start != Start::Object {
        return other(s, start, depth).map(|()| None);
    }
    let depth = enter(depth)?;
    let mut entry = RelatedEntry::default();
    const KEYS: &[(&[u8], u8)] = &[
        (b"prefect.resource.id", 0),
        (b"prefect.resource.role", 1),
        (b"prefect.resource.name", 2),
    ];
    s.members(KEYS, 0, |s, key| {
        let slot = match key {
            Some(0) => &mut entry.id,
            Some(1) => &mut entry.role,
            Some(2) => &mut entry.name,
            _ => return s.skip_value(),
        };
        text(s, depth, slot)
    })?;
    Ok(Some(entry))
}

/// `payload`: only `initial_state` and `validated_state` are read; both `None` when the
/// payload is not an object.
fn payload<'a>(
    s: &mut Scanner<'a>,
    depth: u32,
    initial: &mut Option<StateFields<'a>>,
    validated: &mut Option<StateFields<'a>>,
) -> Scan<()> {
    let start = s.start()?;
    (*initial, *validated) = (None, None);
    if start != Start::Object {
        return other(s, start, depth);
    }
    let depth = enter(depth)?;
    const KEYS: &[(&[u8], Option<bool>)] = &[
        (b"intended", None),
        (b"initial_state", Some(false)),
        (b"validated_state", Some(true)),
    ];
    s.members(KEYS, 0, |s, key| {
        let slot = match key.flatten() {
            Some(false) => &mut *initial,
            Some(true) => &mut *validated,
            None => return s.skip_value(),
        };
        state(s, depth, slot.insert(StateFields::default()))
    })
}

/// A state object, into a default `state`; not `present` when the value is not an object.
fn state<'a>(s: &mut Scanner<'a>, depth: u32, state: &mut StateFields<'a>) -> Scan<()> {
    let start = s.start()?;
    if start != Start::Object {
        return other(s, start, depth);
    }
    let depth = enter(depth)?;
    state.present = true;
    const KEYS: &[(&[u8], bool)] = &[(b"type", true), (b"name", false)];
    s.members(KEYS, 0, |s, key| {
        let slot = match key {
            Some(true) => &mut state.ty,
            Some(false) => &mut state.name,
            None => return s.skip_value(),
        };
        text(s, depth, slot)
    })
}
