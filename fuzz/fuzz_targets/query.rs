//! libFuzzer target: the query strings of the HTTP API (`web::query`), as a request's
//! `/api/v1/resources?...` hands them over, and path segments. Parsing never panics; an
//! accepted query has a limit in range; a refusal is a one-line message that echoes at most a
//! bounded, escaped piece of the request (no control characters reach a response).

#![no_main]

use libfuzzer_sys::fuzz_target;
use prefect_events_exporter::expose::resources::MAX_LIMIT;
use prefect_events_exporter::web::query::{parse_query, percent_decode, resource_query};

/// The longest refusal: a fixed sentence, plus one echo of at most 64 characters, each at
/// most `\u{10ffff}` when escaped, plus its `… (N bytes)` tail.
const MAX_MESSAGE_CHARS: usize = 200 + 64 * 10 + 32;

fn check_refusal(message: &str) {
    assert!(!message.is_empty(), "an empty refusal");
    assert!(
        !message.chars().any(char::is_control),
        "a control character in {message:?}"
    );
    assert!(
        message.chars().count() <= MAX_MESSAGE_CHARS,
        "a refusal of {} characters",
        message.chars().count()
    );
}

fuzz_target!(|data: &[u8]| {
    // The server hands over the URI's query as text.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(segment) = percent_decode(text) {
        assert!(
            segment.len() <= text.len(),
            "decoding never grows a segment"
        );
    }
    match parse_query(text).and_then(|params| resource_query(&params)) {
        Ok(query) => assert!((1..=MAX_LIMIT).contains(&query.limit)),
        Err(refusal) => check_refusal(&refusal.to_string()),
    }
});
