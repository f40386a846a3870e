//! Responses of the exporter's HTTP server (and of `serve-replay`): a complete body with its
//! content type; every JSON error is `{"error": "..."}`.

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde::Serialize;

/// A response with a complete body.
pub type HttpResponse = Response<Full<Bytes>>;

/// A response with a body and content type.
pub fn respond(status: StatusCode, content_type: &'static str, body: String) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A JSON response.
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> HttpResponse {
    match serde_json::to_string(value) {
        Ok(body) => respond(status, "application/json", body),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot encode response: {e}"),
        ),
    }
}

/// A JSON error response: `{"error": message}`.
pub fn error(status: StatusCode, message: &str) -> HttpResponse {
    let body = serde_json::json!({ "error": message }).to_string();
    respond(status, "application/json", body)
}

/// Most characters of request text (a method, a path, an id, a query parameter) an error
/// message repeats; longer text is cut and its length in bytes said instead.
pub const ECHO_MAX_CHARS: usize = 64;

/// Request text as an error message may show it: at most [`ECHO_MAX_CHARS`] characters
/// (then `… (N bytes)`), control characters and invisible formatting characters (bidi
/// overrides, zero-width characters, the BOM) written as `\u{…}`, so a response never
/// reflects a large or deceptive payload back.
pub fn echo(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(ECHO_MAX_CHARS * 2));
    for (count, c) in text.chars().enumerate() {
        if count == ECHO_MAX_CHARS {
            out.push_str(&format!("… ({} bytes)", text.len()));
            break;
        }
        if c.is_control() || is_invisible_format(c) {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// Formatting characters that change how text displays without showing themselves.
fn is_invisible_format(c: char) -> bool {
    matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_cuts_long_text_and_escapes_invisible_characters() {
        assert_eq!(echo("GET"), "GET");
        assert_eq!(echo("Läuft"), "Läuft");
        assert_eq!(
            echo("a\nb\u{1b}[0m\u{202e}c\u{feff}"),
            "a\\u{a}b\\u{1b}[0m\\u{202e}c\\u{feff}"
        );
        let long = "é".repeat(100);
        assert_eq!(echo(&long), format!("{}… (200 bytes)", "é".repeat(64)));
        assert_eq!(echo(&"x".repeat(64)), "x".repeat(64));
    }
}
