//! The decoder as it was before the hand-written scanner (`serde_json` driving serde
//! visitors), kept verbatim as the test oracle: `decode_differential` and the `fuzz/` target
//! assert that `prefect_events_exporter::ingest::decode::decode` returns exactly what this
//! returns, on every input. Only the imports changed (the public types now come from the crate).
//! Do not "fix" anything here: a change of behaviour belongs in the decoder, with the
//! difference listed in its module doc.

use std::borrow::Cow;
use std::fmt;

use prefect_events_exporter::ingest::decode::{Decoded, RejectReason, MAX_FRAME_BYTES};
use prefect_events_exporter::model::event::{
    Event, EventId, RawState, RelatedNames, StateChange, StateType,
};
use prefect_events_exporter::model::time::parse_rfc3339;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

/// Decodes one frame or replay line (without its line ending).
pub fn decode(bytes: &[u8]) -> Decoded<'_> {
    if bytes.len() > MAX_FRAME_BYTES {
        return Decoded::Rejected(RejectReason::Oversize);
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Decoded::Skip;
    }
    match serde_json::from_slice::<Line<'_>>(bytes) {
        Ok(Line::Object(fields)) => fields.into_decoded(),
        Ok(Line::NotObject) => Decoded::Rejected(RejectReason::NotAnObject),
        Err(e) if e.to_string().starts_with("recursion limit exceeded") => {
            Decoded::Rejected(RejectReason::TooDeep)
        }
        Err(_) => Decoded::Rejected(RejectReason::MalformedJson),
    }
}

/// The top-level JSON value of a line.
enum Line<'a> {
    Object(Box<Fields<'a>>),
    NotObject,
}

/// The keys of a frame or of an event object that the exporter reads. A frame and a bare
/// event share one shape: `event` is an object in a frame and a string in an event.
#[derive(Default)]
struct Fields<'a> {
    frame_type: Option<Cow<'a, str>>,
    event_name: Option<Cow<'a, str>>,
    event_object: Option<Box<Fields<'a>>>,
    event_not_object: bool,
    id: Option<Cow<'a, str>>,
    occurred: Option<Cow<'a, str>>,
    follows: Option<Cow<'a, str>>,
    resource: Option<ResourceFields<'a>>,
    related: RelatedNames<'a>,
    initial_state: Option<StateFields<'a>>,
    validated_state: Option<StateFields<'a>>,
}

impl<'a> Fields<'a> {
    fn into_decoded(self) -> Decoded<'a> {
        match self.frame_type.as_deref() {
            Some("event") => match self.event_object {
                Some(inner) => inner.into_event(),
                None if self.event_not_object || self.event_name.is_some() => {
                    Decoded::Rejected(RejectReason::NotAnObject)
                }
                None => Decoded::Rejected(RejectReason::MissingEvent),
            },
            Some(_) => Decoded::Skip,
            None => self.into_event(),
        }
    }

    fn into_event(self) -> Decoded<'a> {
        match self.validate() {
            Ok(event) => Decoded::Event(event),
            Err(reason) => Decoded::Rejected(reason),
        }
    }

    fn validate(self) -> Result<Event<'a>, RejectReason> {
        let id = match self.id {
            Some(id) if !id.is_empty() => EventId::from_text(&id),
            _ => return Err(RejectReason::MissingId),
        };
        let name = match self.event_name {
            Some(name) if !name.is_empty() => name,
            _ => return Err(RejectReason::MissingEvent),
        };
        let occurred = match self.occurred {
            Some(text) => parse_rfc3339(&text).ok_or(RejectReason::BadTimestamp)?,
            None => return Err(RejectReason::MissingOccurred),
        };
        let resource = self.resource.ok_or(RejectReason::MissingResourceId)?;
        let resource_id = match resource.id {
            Some(id) if !id.is_empty() => id,
            _ => return Err(RejectReason::MissingResourceId),
        };
        let state = match resource.state_type {
            None => None,
            Some(label_type) => {
                let label_type = StateType::parse(&label_type).ok_or(RejectReason::BadStateType)?;
                let label_state = RawState {
                    name: resource
                        .state_name
                        .unwrap_or(Cow::Borrowed(label_type.default_name())),
                    ty: label_type,
                };
                let to = match self.validated_state {
                    Some(validated) => validated.into_state()?.unwrap_or(label_state),
                    None => label_state,
                };
                let from = match self.initial_state {
                    Some(initial) => initial.into_state()?,
                    None => None,
                };
                let timestamp = resource
                    .state_timestamp
                    .and_then(|t| parse_rfc3339(&t))
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
            resource_name: resource.name,
            state,
            related: self.related,
            follows: self.follows.map(|f| EventId::from_text(&f)),
        })
    }
}

/// The keys of `resource` that the exporter reads.
#[derive(Default)]
struct ResourceFields<'a> {
    id: Option<Cow<'a, str>>,
    name: Option<Cow<'a, str>>,
    state_type: Option<Cow<'a, str>>,
    state_name: Option<Cow<'a, str>>,
    state_timestamp: Option<Cow<'a, str>>,
}

/// `payload.initial_state` / `payload.validated_state`: `{type, name, ...}`.
#[derive(Default)]
struct StateFields<'a> {
    ty: Option<Cow<'a, str>>,
    name: Option<Cow<'a, str>>,
    present: bool,
}

impl<'a> StateFields<'a> {
    /// `Ok(None)` when the state is null or has no type; an error when the type is unknown.
    fn into_state(self) -> Result<Option<RawState<'a>>, RejectReason> {
        if !self.present {
            return Ok(None);
        }
        let Some(ty) = self.ty else { return Ok(None) };
        let ty = StateType::parse(&ty).ok_or(RejectReason::BadStateType)?;
        let name = self.name.unwrap_or(Cow::Borrowed(ty.default_name()));
        Ok(Some(RawState { ty, name }))
    }
}

// ---------------------------------------------------------------------------------------------
// Visitors. Each accepts any JSON value: a value of the wrong type becomes "absent" (and the
// validation above turns a required absent field into its rejection reason), never an error.
// ---------------------------------------------------------------------------------------------

/// Implements the non-string, non-container `visit_*` methods of a visitor as "absent".
macro_rules! absent_scalars {
    ($absent:expr) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok($absent)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok($absent)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok($absent)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok($absent)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok($absent)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok($absent)
        }
    };
}

/// Drains a sequence the visitor does not want.
fn skip_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

/// Drains a map the visitor does not want.
fn skip_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

/// An object key as raw (unescaped) bytes: keys are only compared, so they skip UTF-8
/// validation.
struct Key<'a>(Cow<'a, [u8]>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_bytes<E: de::Error>(self, v: &'de [u8]) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_vec())))
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v.as_bytes())))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.as_bytes().to_vec())))
            }
        }
        deserializer.deserialize_bytes(KeyVisitor)
    }
}

/// A string, borrowed when possible; `None` for any other JSON value.
struct Text<'a>(Option<Cow<'a, str>>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Some(Cow::Borrowed(v))))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Some(Cow::Owned(v.to_owned()))))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Some(Cow::Owned(v))))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                skip_seq(seq).map(|()| Text(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                skip_map(map).map(|()| Text(None))
            }
            absent_scalars!(Text(None));
        }
        deserializer.deserialize_any(TextVisitor)
    }
}

impl<'de> Deserialize<'de> for Line<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct LineVisitor;
        impl<'de> Visitor<'de> for LineVisitor {
            type Value = Line<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                read_fields(map).map(|f| Line::Object(Box::new(f)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                skip_seq(seq).map(|()| Line::NotObject)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(Line::NotObject)
            }
            absent_scalars!(Line::NotObject);
        }
        deserializer.deserialize_any(LineVisitor)
    }
}

/// The value of a frame's or event's `event` key: a name, an event object, or neither.
enum EventValue<'a> {
    Name(Cow<'a, str>),
    Object(Box<Fields<'a>>),
    Neither,
}

impl<'de> Deserialize<'de> for EventValue<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EventValueVisitor;
        impl<'de> Visitor<'de> for EventValueVisitor {
            type Value = EventValue<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an event name or an event object")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(EventValue::Name(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(EventValue::Name(Cow::Owned(v.to_owned())))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                read_fields(map).map(|f| EventValue::Object(Box::new(f)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                skip_seq(seq).map(|()| EventValue::Neither)
            }
            absent_scalars!(EventValue::Neither);
        }
        deserializer.deserialize_any(EventValueVisitor)
    }
}

fn read_fields<'de, A: MapAccess<'de>>(mut map: A) -> Result<Fields<'de>, A::Error> {
    let mut fields = Fields::default();
    while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
        match &*key {
            b"type" => fields.frame_type = map.next_value::<Text<'de>>()?.0,
            b"event" => match map.next_value::<EventValue<'de>>()? {
                EventValue::Name(name) => fields.event_name = Some(name),
                EventValue::Object(object) => fields.event_object = Some(object),
                EventValue::Neither => fields.event_not_object = true,
            },
            b"id" => fields.id = map.next_value::<Text<'de>>()?.0,
            b"occurred" => fields.occurred = map.next_value::<Text<'de>>()?.0,
            b"follows" => fields.follows = map.next_value::<Text<'de>>()?.0,
            b"resource" => fields.resource = map.next_value::<Resource<'de>>()?.0,
            b"related" => fields.related = map.next_value::<Related<'de>>()?.0,
            b"payload" => {
                let payload = map.next_value::<Payload<'de>>()?;
                fields.initial_state = payload.initial_state;
                fields.validated_state = payload.validated_state;
            }
            _ => {
                map.next_value::<IgnoredAny>()?;
            }
        }
    }
    Ok(fields)
}

/// `resource`: an object of string labels; `None` when not an object.
struct Resource<'a>(Option<ResourceFields<'a>>);

impl<'de> Deserialize<'de> for Resource<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ResourceVisitor;
        impl<'de> Visitor<'de> for ResourceVisitor {
            type Value = Resource<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a resource object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut r = ResourceFields::default();
                while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
                    let slot = match &*key {
                        b"prefect.resource.id" => &mut r.id,
                        b"prefect.resource.name" => &mut r.name,
                        b"prefect.state-type" => &mut r.state_type,
                        b"prefect.state-name" => &mut r.state_name,
                        b"prefect.state-timestamp" => &mut r.state_timestamp,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    };
                    *slot = map.next_value::<Text<'de>>()?.0;
                }
                Ok(Resource(Some(r)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                skip_seq(seq).map(|()| Resource(None))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(Resource(None))
            }
            absent_scalars!(Resource(None));
        }
        deserializer.deserialize_any(ResourceVisitor)
    }
}

/// `related`: a list of resource objects, folded into the names the exporter labels with.
struct Related<'a>(RelatedNames<'a>);

/// One entry of `related`.
#[derive(Default)]
struct RelatedEntry<'a> {
    id: Option<Cow<'a, str>>,
    role: Option<Cow<'a, str>>,
    name: Option<Cow<'a, str>>,
}

impl<'de> Deserialize<'de> for Related<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RelatedVisitor;
        impl<'de> Visitor<'de> for RelatedVisitor {
            type Value = Related<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of related resources")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut names = RelatedNames::default();
                while let Some(entry) = seq.next_element::<RelatedItem<'de>>()? {
                    let Some(entry) = entry.0 else { continue };
                    let slot = match entry.role.as_deref() {
                        Some("flow") => &mut names.flow,
                        Some("deployment") => &mut names.deployment,
                        Some("work-pool") => &mut names.work_pool,
                        Some("work-queue") => &mut names.work_queue,
                        Some("tag") => {
                            if let Some(tag) = entry.id.and_then(tag_name) {
                                names.tags.push(tag);
                            }
                            continue;
                        }
                        _ => continue,
                    };
                    if entry.name.is_some() {
                        *slot = entry.name;
                    }
                }
                Ok(Related(names))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                skip_map(map).map(|()| Related(RelatedNames::default()))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(Related(RelatedNames::default()))
            }
            absent_scalars!(Related(RelatedNames::default()));
        }
        deserializer.deserialize_any(RelatedVisitor)
    }
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
struct RelatedItem<'a>(Option<RelatedEntry<'a>>);

impl<'de> Deserialize<'de> for RelatedItem<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ItemVisitor;
        impl<'de> Visitor<'de> for ItemVisitor {
            type Value = RelatedItem<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a related resource")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entry = RelatedEntry::default();
                while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
                    let slot = match &*key {
                        b"prefect.resource.id" => &mut entry.id,
                        b"prefect.resource.role" => &mut entry.role,
                        b"prefect.resource.name" => &mut entry.name,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    };
                    *slot = map.next_value::<Text<'de>>()?.0;
                }
                Ok(RelatedItem(Some(entry)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                skip_seq(seq).map(|()| RelatedItem(None))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(RelatedItem(None))
            }
            absent_scalars!(RelatedItem(None));
        }
        deserializer.deserialize_any(ItemVisitor)
    }
}

/// `payload`: only `initial_state` and `validated_state` are read.
#[derive(Default)]
struct Payload<'a> {
    initial_state: Option<StateFields<'a>>,
    validated_state: Option<StateFields<'a>>,
}

impl<'de> Deserialize<'de> for Payload<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PayloadVisitor;
        impl<'de> Visitor<'de> for PayloadVisitor {
            type Value = Payload<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a payload object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut payload = Payload::default();
                while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
                    let slot = match &*key {
                        b"initial_state" => &mut payload.initial_state,
                        b"validated_state" => &mut payload.validated_state,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    };
                    *slot = Some(map.next_value::<StateFields<'de>>()?);
                }
                Ok(payload)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                skip_seq(seq).map(|()| Payload::default())
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(Payload::default())
            }
            absent_scalars!(Payload::default());
        }
        deserializer.deserialize_any(PayloadVisitor)
    }
}

impl<'de> Deserialize<'de> for StateFields<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StateVisitor;
        impl<'de> Visitor<'de> for StateVisitor {
            type Value = StateFields<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a state object or null")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut state = StateFields {
                    present: true,
                    ..StateFields::default()
                };
                while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
                    let slot = match &*key {
                        b"type" => &mut state.ty,
                        b"name" => &mut state.name,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    };
                    *slot = map.next_value::<Text<'de>>()?.0;
                }
                Ok(state)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                skip_seq(seq).map(|()| StateFields::default())
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(StateFields::default())
            }
            absent_scalars!(StateFields::default());
        }
        deserializer.deserialize_any(StateVisitor)
    }
}
