//! The decoder against its oracle: `decode` must return exactly what the serde-visitor decoder
//! it replaced (`decode_oracle`) returns, on every input — same verdict, same reason, same
//! event, and the same borrowed/owned choice for every string.
//!
//! Inputs: every line of `replay-data/*.jsonl` as is; systematic edits of a real frame (every
//! byte deleted, every position given each token of a dictionary of JSON trouble); and
//! proptest cases that mutate recorded frames (bit flips, truncation, insertion of tokens,
//! duplicated or wrongly typed members for every key the decoder reads, nesting) or build
//! frames field by field. `PROPTEST_CASES` sets the case count of each property (default
//! 2,000, a few seconds); the `fuzz/` target runs the same check under libFuzzer.

use std::borrow::Cow;
use std::sync::OnceLock;

use prefect_events_exporter::ingest::decode::{decode, Decoded};
use prefect_events_exporter::model::event::Event;
use proptest::prelude::*;
use proptest::test_runner::Config;

use crate::decode_oracle;
use crate::support::replay_data;

/// Fails with both verdicts when the decoder and the oracle disagree on `bytes`.
fn assert_same(bytes: &[u8]) {
    let old = decode_oracle::decode(bytes);
    let new = decode(bytes);
    assert!(
        old == new && same_ownership(&old, &new),
        "decoders disagree on {:?}\n oracle: {old:?}\n    new: {new:?}",
        String::from_utf8_lossy(bytes)
    );
}

/// Both events borrow (or own) the same strings.
fn same_ownership(old: &Decoded<'_>, new: &Decoded<'_>) -> bool {
    #[allow(clippy::ptr_arg)] // the variant is the point
    fn owned(c: &Cow<'_, str>) -> bool {
        matches!(c, Cow::Owned(_))
    }
    fn owned_opt(c: &Option<Cow<'_, str>>) -> Option<bool> {
        c.as_ref().map(owned)
    }
    fn shape(e: &Event<'_>) -> Vec<Option<bool>> {
        let mut shape = vec![
            Some(owned(&e.name)),
            Some(owned(&e.resource_id)),
            owned_opt(&e.resource_name),
            owned_opt(&e.related.flow),
            owned_opt(&e.related.deployment),
            owned_opt(&e.related.work_pool),
            owned_opt(&e.related.work_queue),
        ];
        shape.extend(e.related.tags.iter().map(|t| Some(owned(t))));
        if let Some(state) = &e.state {
            shape.push(Some(owned(&state.to.name)));
            shape.push(state.from.as_ref().map(|f| owned(&f.name)));
        }
        shape
    }
    match (old, new) {
        (Decoded::Event(a), Decoded::Event(b)) => shape(a) == shape(b),
        _ => true,
    }
}

/// Every line of every recording and synthetic file.
fn corpus() -> &'static [Vec<u8>] {
    static CORPUS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let mut lines = Vec::new();
        let mut paths: Vec<_> = std::fs::read_dir(replay_data(""))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
            .collect();
        paths.sort();
        for path in paths {
            let bytes = std::fs::read(&path).unwrap();
            lines.extend(bytes.split(|&b| b == b'\n').map(<[u8]>::to_vec));
        }
        assert!(lines.len() > 5_000, "the corpus holds the recordings");
        lines
    })
}

/// A real flow-run state frame with every part the decoder reads.
const FRAME: &str = r#"{"type":"event","event":{"occurred":"2026-11-25T01:22:33.038215Z","event":"prefect.flow-run.Completed","resource":{"prefect.resource.id":"prefect.flow-run.1d0ed5a7-8a36-4beb-ba9c-90940da3462a","prefect.resource.name":"loutish-sambar","prefect.run-count":"1","prefect.state-message":"","prefect.state-name":"Completed","prefect.state-timestamp":"2026-11-25T01:22:33.038215+00:00","prefect.state-type":"COMPLETED"},"related":[{"prefect.resource.id":"prefect.flow.e0745856-2290-4a0b-b662-b4acae5c3db6","prefect.resource.role":"flow","prefect.resource.name":"ok-flow"},{"prefect.resource.id":"prefect.deployment.a","prefect.resource.role":"deployment","prefect.resource.name":"dep"},{"prefect.resource.id":"prefect.work-pool.b","prefect.resource.role":"work-pool","prefect.resource.name":"pool","prefect.work-pool.type":"process"},{"prefect.resource.id":"prefect.work-queue.c","prefect.resource.role":"work-queue","prefect.resource.name":"default"},{"prefect.resource.id":"prefect.tag.nightly","prefect.resource.role":"tag"}],"payload":{"intended":{"from":"RUNNING","to":"COMPLETED"},"initial_state":{"type":"RUNNING","name":"Running"},"validated_state":{"type":"COMPLETED","name":"Completed","message":""}},"id":"01a2104c-1b45-78ba-b5dd-e73befb0c0aa","follows":"01a2104c-1b45-78ba-b5dd-e73befb0c0a9","received":"2026-11-25T01:22:33.1Z"}}"#;

/// Byte strings that make JSON (and this decoder) interesting when dropped anywhere.
fn tokens() -> Vec<Vec<u8>> {
    let mut tokens: Vec<Vec<u8>> = [
        "{",
        "}",
        "[",
        "]",
        "\"",
        "\\",
        ":",
        ",",
        " ",
        "\t",
        "\r\n",
        "\x0c",
        "\0",
        "\x01",
        "\x1f",
        "\x7f",
        "0",
        "-",
        "-0",
        "01",
        "1.",
        ".5",
        "1e",
        "1E+2",
        "1e400",
        "-1e400",
        "1e-400",
        "18446744073709551616",
        "-9223372036854775809",
        "1.7976931348623157e308",
        "1.7976931348623159e308",
        "NaN",
        "Infinity",
        "null",
        "true",
        "false",
        "nul",
        "tru",
        "\\u0000",
        "\\ud800",
        "\\udc00",
        "\\ud800\\udc00",
        "\\ud800\\u0041",
        "\\ud800\\n",
        "\\ud83d\\ude00",
        "\\\"",
        "\\\\",
        "\\/",
        "\\b",
        "\\u0069",
        "\\u0065",
        "\\x",
        "\\u12",
        "\\uZZZZ",
        "\\U0041",
        "é",
        "\u{a0}",
        "\u{feff}",
        "{}",
        "[]",
        "\"\"",
        "\"x\":",
        "\"x\":1,",
        ",\"x\":1",
        "\"id\":",
        "\"event\":",
        "\"type\":\"event\",",
        "\"type\":1,",
        "\"event\":{},",
        "\"event\":[],",
        "\"event\":7,",
        "\"event\":\"e\",",
    ]
    .iter()
    .map(|t| t.as_bytes().to_vec())
    .collect();
    tokens.extend(
        [
            &[0xff][..],
            &[0xfe],
            &[0xc3],
            &[0x80],
            &[0xc0, 0xaf],
            &[0xed, 0xa0, 0x80],
            &[0xf4, 0x90, 0x80, 0x80],
            &[0xef, 0xbb, 0xbf],
        ]
        .iter()
        .map(|t| t.to_vec()),
    );
    tokens
}

/// A key the decoder reads, with a value of every JSON type (and some trouble).
fn member() -> impl Strategy<Value = String> {
    let keys = prop::sample::select(vec![
        "type",
        "event",
        "id",
        "occurred",
        "follows",
        "resource",
        "related",
        "payload",
        "prefect.resource.id",
        "prefect.resource.name",
        "prefect.resource.role",
        "prefect.state-type",
        "prefect.state-name",
        "prefect.state-timestamp",
        "initial_state",
        "validated_state",
        "name",
        "received",
        "\\u0069d",
        "ev\\u0065nt",
        "typ\\u0065",
        "prefect.resource.i\\u0064",
        "prefect.state-typ\\u0065",
        "\\ud800type",
        "type\\u0000",
        "\\u0074\\u0079\\u0070\\u0065",
    ]);
    (keys, value()).prop_map(|(k, v)| format!("\"{k}\":{v}"))
}

/// A JSON value (or near-JSON) of any type, some of them what the decoder wants.
fn value() -> impl Strategy<Value = String> {
    let leaf = prop::sample::select(vec![
        "null",
        "true",
        "false",
        "0",
        "-1",
        "1.5e3",
        "1e400",
        "-1e999",
        "1e-999",
        "123456789012345678901234567890",
        "\"\"",
        "\"event\"",
        "\"e\"",
        "\"x\\\"y\"",
        "\"\\u0065vent\"",
        "\"\\ud800\"",
        "\"\\udc00\"",
        "\"\\ud83d\\ude00\"",
        "\"prefect.tag.t\"",
        "\"prefect.tag.\\u0074\"",
        "\"prefect.flow-run.r\"",
        "\"RUNNING\"",
        "\"COMPLETED\"",
        "\"running\"",
        "\"Late\"",
        "\"flow\"",
        "\"tag\"",
        "\"deployment\"",
        "\"work-pool\"",
        "\"work-queue\"",
        "\"2026-11-25T01:00:00Z\"",
        "\"2026-11-25T01:00:00.5+02:00\"",
        "\"2026-02-30T01:00:00Z\"",
        "\"01a2104c-1b45-78ba-b5dd-e73befb0c0aa\"",
        "\"tab\there\"",
        "[]",
        "{}",
        "[1,{\"a\":[]}]",
        "{\"\\ud800\":1}",
        "{\"a\":\"\\ud800\"}",
        "[\"\\ud800\"]",
        "{\"type\":\"RUNNING\",\"name\":\"R\"}",
        "{\"type\":\"NOPE\"}",
        "{\"prefect.resource.id\":\"prefect.flow-run.z\",\"prefect.state-type\":\"PENDING\"}",
        "[{\"prefect.resource.role\":\"flow\",\"prefect.resource.name\":\"f\"}]",
        "[{\"prefect.resource.role\":\"tag\",\"prefect.resource.id\":\"prefect.tag.x\"},7]",
        "{\"initial_state\":null,\"validated_state\":{\"type\":\"PENDING\"}}",
        "{\"id\":\"i\",\"event\":\"e\",\"occurred\":\"2026-11-25T01:00:00Z\",\"resource\":{\"prefect.resource.id\":\"r\"}}",
    ])
    .prop_map(str::to_owned);
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec(inner, 0..4).prop_map(|v| {
                let members: Vec<String> = v
                    .iter()
                    .enumerate()
                    .map(|(i, v)| format!("\"k{i}\":{v}"))
                    .collect();
                format!("{{{}}}", members.join(","))
            }),
        ]
    })
}

/// One edit of a seed frame.
#[derive(Debug, Clone)]
enum Edit {
    /// XOR one byte with a mask.
    Flip(usize, u8),
    /// Cut the frame short.
    Truncate(usize),
    /// Delete a range.
    Delete(usize, usize),
    /// Insert one of [`tokens`].
    Insert(usize, usize),
    /// Insert a member right after the n-th `{` (before every other member).
    MemberFirst(usize, String),
    /// Insert a member right before the n-th `}` (after every other member).
    MemberLast(usize, String),
    /// Wrap the frame in a bare-event or frame envelope, or nest it deeper.
    Nest(usize, u8),
    /// Replace the string starting at the n-th quote with a value.
    Replace(usize, String),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        2 => (any::<usize>(), 1u8..=255).prop_map(|(a, m)| Edit::Flip(a, m)),
        1 => any::<usize>().prop_map(Edit::Truncate),
        1 => (any::<usize>(), 1usize..16).prop_map(|(a, n)| Edit::Delete(a, n)),
        3 => (any::<usize>(), any::<usize>()).prop_map(|(a, t)| Edit::Insert(a, t)),
        3 => (any::<usize>(), member()).prop_map(|(a, m)| Edit::MemberFirst(a, m)),
        3 => (any::<usize>(), member()).prop_map(|(a, m)| Edit::MemberLast(a, m)),
        1 => (0usize..200, any::<u8>()).prop_map(|(d, k)| Edit::Nest(d, k)),
        3 => (any::<usize>(), value()).prop_map(|(a, v)| Edit::Replace(a, v)),
    ]
}

/// Positions of `byte` in `bytes`.
fn positions(bytes: &[u8], byte: u8) -> Vec<usize> {
    bytes
        .iter()
        .enumerate()
        .filter(|(_, &b)| b == byte)
        .map(|(i, _)| i)
        .collect()
}

fn apply(frame: &mut Vec<u8>, edit: &Edit, tokens: &[Vec<u8>]) {
    let len = frame.len().max(1);
    match edit {
        Edit::Flip(at, mask) => {
            if let Some(b) = frame.get_mut(at % len) {
                *b ^= mask;
            }
        }
        Edit::Truncate(at) => frame.truncate(at % len),
        Edit::Delete(at, n) => {
            let a = (at % len).min(frame.len());
            let b = (a + n).min(frame.len());
            frame.drain(a..b);
        }
        Edit::Insert(at, t) => {
            let at = (at % len).min(frame.len());
            let token = &tokens[t % tokens.len()];
            frame.splice(at..at, token.iter().copied());
        }
        Edit::MemberFirst(n, member) => {
            let opens = positions(frame, b'{');
            if let Some(&at) = opens.get(n % opens.len().max(1)) {
                let text = format!("{member},");
                frame.splice(at + 1..at + 1, text.bytes());
            }
        }
        Edit::MemberLast(n, member) => {
            let closes = positions(frame, b'}');
            if let Some(&at) = closes.get(n % closes.len().max(1)) {
                let text = format!(",{member}");
                frame.splice(at..at, text.bytes());
            }
        }
        Edit::Nest(depth, kind) => {
            let (open, close): (&[u8], &[u8]) = match kind % 4 {
                0 => (br#"{"type":"event","event":"#, b"}"),
                1 => (br#"{"event":"#, b"}"),
                2 => (br#"{"x":["#, b"]}"),
                _ => (b"[", b"]"),
            };
            let mut out = open.repeat(*depth);
            out.extend_from_slice(frame);
            out.extend_from_slice(&close.repeat(*depth));
            *frame = out;
        }
        Edit::Replace(n, value) => {
            let quotes = positions(frame, b'"');
            if let Some(&at) = quotes.get(n % quotes.len().max(1)) {
                // The string's end: the next quote not preceded by a backslash.
                let end = quotes
                    .iter()
                    .copied()
                    .find(|&q| q > at && frame[q - 1] != b'\\')
                    .unwrap_or(at);
                frame.splice(at..=end, value.bytes());
            }
        }
    }
}

/// A frame built field by field: envelope, every read field present, absent, wrongly typed
/// or valid, and an unread field.
fn built_frame() -> impl Strategy<Value = String> {
    let id = prop::sample::select(vec![
        None,
        Some("\"01a2104c-1b45-78ba-b5dd-e73befb0c0aa\""),
        Some("\"x1\""),
        Some("\"\""),
        Some("5"),
        Some("null"),
        Some("\"\\u0030\""),
    ]);
    let name = prop::sample::select(vec![
        None,
        Some("\"prefect.flow-run.Running\""),
        Some("\"\""),
        Some("{}"),
        Some("[]"),
        Some("null"),
        Some("\"n\\u00e9\""),
    ]);
    let occurred = prop::sample::select(vec![
        None,
        Some("\"2026-11-25T01:22:33.038215Z\""),
        Some("\"2026-11-25T01:22:33+00:00\""),
        Some("\"2026-11-25 01:22:33Z\""),
        Some("\"yesterday\""),
        Some("1732500000"),
        Some("\"2026-11-25T01:22:60Z\""),
    ]);
    let state_type = prop::sample::select(vec![
        None,
        Some("\"RUNNING\""),
        Some("\"SCHEDULED\""),
        Some("\"DONE\""),
        Some("1"),
        Some("\"\\u0052UNNING\""),
    ]);
    let state = prop::sample::select(vec![
        None,
        Some("null"),
        Some("{\"type\":\"PENDING\",\"name\":\"Pending\"}"),
        Some("{\"type\":\"PENDING\"}"),
        Some("{\"name\":\"x\"}"),
        Some("{\"type\":\"BAD\"}"),
        Some("{\"type\":7}"),
        Some("\"PENDING\""),
        Some("[]"),
    ]);
    let timestamp = prop::sample::select(vec![
        None,
        Some("\"2026-11-25T01:22:34Z\""),
        Some("\"bad\""),
        Some("3"),
    ]);
    let related = prop::sample::select(vec![
        None,
        Some("[]"),
        Some("{}"),
        Some("[{\"prefect.resource.role\":\"flow\",\"prefect.resource.name\":\"f\"},{\"prefect.resource.role\":\"flow\"},{\"prefect.resource.role\":\"tag\",\"prefect.resource.id\":\"prefect.tag.a\"},{\"prefect.resource.role\":\"tag\",\"prefect.resource.id\":\"other\"},\"x\",[1],null]"),
        Some("[{\"prefect.resource.role\":\"work-pool\",\"prefect.resource.name\":\"p\\n\"},{\"prefect.resource.role\":\"work-queue\",\"prefect.resource.name\":null}]"),
    ]);
    (
        (id, name, occurred),
        (state_type, state.clone(), state, timestamp),
        related,
        any::<u8>(),
    )
        .prop_map(
            |((id, name, occurred), (ty, initial, validated, ts), related, envelope)| {
                let mut members = Vec::new();
                let mut push = |key: &str, value: Option<&str>| {
                    if let Some(v) = value {
                        members.push(format!("\"{key}\":{v}"));
                    }
                };
                push("id", id);
                push("event", name);
                push("occurred", occurred);
                let mut labels = vec!["\"prefect.resource.id\":\"prefect.flow-run.r\"".to_owned()];
                if let Some(ty) = ty {
                    labels.push(format!("\"prefect.state-type\":{ty}"));
                }
                if let Some(ts) = ts {
                    labels.push(format!("\"prefect.state-timestamp\":{ts}"));
                }
                let resource = format!("{{{}}}", labels.join(","));
                push("resource", Some(&resource));
                push("related", related);
                let mut payload = Vec::new();
                if let Some(s) = initial {
                    payload.push(format!("\"initial_state\":{s}"));
                }
                if let Some(s) = validated {
                    payload.push(format!("\"validated_state\":{s}"));
                }
                let payload = format!("{{{}}}", payload.join(","));
                push("payload", Some(&payload));
                push("received", Some("\"2026\""));
                let event = format!("{{{}}}", members.join(","));
                match envelope % 3 {
                    0 => event,
                    1 => format!("{{\"type\":\"event\",\"event\":{event}}}"),
                    _ => format!("{{\"event\":{event},\"type\":\"event\"}}"),
                }
            },
        )
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2_000)
}

#[test]
fn every_recorded_line_decodes_as_before() {
    for line in corpus() {
        assert_same(line);
    }
}

#[test]
fn every_deletion_and_token_insertion_in_a_real_frame_decodes_as_before() {
    let frame = FRAME.as_bytes();
    assert!(matches!(decode(frame), Decoded::Event(_)));
    let tokens = tokens();
    for at in 0..=frame.len() {
        assert_same(&frame[..at]);
        if at < frame.len() {
            let mut deleted = frame.to_vec();
            deleted.remove(at);
            assert_same(&deleted);
        }
        for token in &tokens {
            let mut inserted = frame.to_vec();
            inserted.splice(at..at, token.iter().copied());
            assert_same(&inserted);
        }
    }
}

#[test]
fn nesting_around_the_recursion_limit_decodes_as_before() {
    let inner = FRAME.split_once(r#""event":"#).unwrap().1;
    let inner = &inner[..inner.len() - 1];
    for depth in (0..140).chain([500, 10_000]) {
        for (open, close) in [
            (r#"{"type":"event","event":"#, "}"),
            (r#"{"event":"#, "}"),
            (r#"{"type":"event","event":["#, "]}"),
            (r#"{"id":"#, "}"),
            (r#"{"related":[{"prefect.resource.id":"#, "}]}"),
            (r#"{"payload":{"initial_state":{"type":"#, "}}}"),
            (r#"{"x":"#, "}"),
            ("[", "]"),
            (r#"{"event":{"resource":{"prefect.resource.id":"#, "}}}"),
        ] {
            for core in [
                inner,
                "1",
                "{}",
                "[]",
                "\"s\"",
                "{\"a\":[{}]}",
                "[1,{\"\\ud800\":2}]",
                "tru",
            ] {
                let line = format!("{}{core}{}", open.repeat(depth), close.repeat(depth));
                assert_same(line.as_bytes());
            }
        }
    }
}

#[test]
fn whitespace_bom_and_blank_lines_decode_as_before() {
    for prefix in ["", " ", "\t", "\r\n", "\x0c", "\u{feff}", "\u{a0}", "\x0b"] {
        for suffix in ["", " ", "\r", "\n\n", "\x0c", "\0", "x", "{}", ","] {
            assert_same(format!("{prefix}{FRAME}{suffix}").as_bytes());
            assert_same(format!("{prefix}{suffix}").as_bytes());
        }
    }
    let spaced = FRAME
        .replace(':', " :\t")
        .replace(',', "\r\n,  ")
        .replace('{', "{ ")
        .replace(']', " ]");
    assert_same(spaced.as_bytes());
}

proptest! {
    #![proptest_config(Config::with_cases(cases()))]

    #[test]
    fn arbitrary_bytes_decode_as_before(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        assert_same(&bytes);
    }

    #[test]
    fn arbitrary_values_decode_as_before(v in value(), members in prop::collection::vec(member(), 0..6)) {
        assert_same(v.as_bytes());
        assert_same(format!("{{{}}}", members.join(",")).as_bytes());
        assert_same(format!("{{\"type\":\"event\",\"event\":{{{}}}}}", members.join(",")).as_bytes());
    }

    #[test]
    fn mutated_recorded_frames_decode_as_before(
        seed in any::<prop::sample::Index>(),
        edits in prop::collection::vec(edit(), 1..5),
    ) {
        let tokens = tokens();
        let mut frame = seed.get::<Vec<u8>>(corpus()).clone();
        for edit in &edits {
            apply(&mut frame, edit, &tokens);
            assert_same(&frame);
        }
    }

    #[test]
    fn mutated_built_frames_decode_as_before(
        frame in built_frame(),
        edits in prop::collection::vec(edit(), 0..3),
    ) {
        let tokens = tokens();
        let mut frame = frame.into_bytes();
        assert_same(&frame);
        for edit in &edits {
            apply(&mut frame, edit, &tokens);
            assert_same(&frame);
        }
    }
}
