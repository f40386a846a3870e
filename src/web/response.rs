//! Responses of the exporter's HTTP server (and of `serve-replay`): a complete body with its
//! content type, or a stream of chunks from a bounded channel ([`Body::Stream`], the event
//! stream); every JSON error is `{"error": "..."}`.

use std::any::Any;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use http_body_util::Full;
use hyper::body::{Bytes, Frame, SizeHint};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde::Serialize;
use tokio::sync::mpsc;

/// A response of the HTTP server.
pub type HttpResponse = Response<Body>;

/// A response body: complete, or chunks sent by a task until it drops its sender.
#[derive(Debug)]
pub enum Body {
    /// The whole body at once.
    Full(Full<Bytes>),
    /// Chunks as they come; the body ends when the sender is dropped. The [`Held`] value
    /// lives as long as the body, that is until the connection has written it or closed.
    Stream(mpsc::Receiver<Bytes>, Held),
}

/// Something a streamed body keeps until it is dropped (a gauge's guard).
pub struct Held {
    _value: Box<dyn Any + Send + Sync>,
}

impl Held {
    /// Keeps `value` with the body.
    pub fn new(value: impl Any + Send + Sync) -> Held {
        Held {
            _value: Box::new(value),
        }
    }
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Held")
    }
}

impl Body {
    /// A complete body.
    pub fn full(bytes: impl Into<Bytes>) -> Body {
        Body::Full(Full::new(bytes.into()))
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Body::Full(full) => Pin::new(full).poll_frame(cx),
            Body::Stream(chunks, _) => chunks
                .poll_recv(cx)
                .map(|chunk| chunk.map(|bytes| Ok(Frame::data(bytes)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Full(full) => full.is_end_stream(),
            Body::Stream(..) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(full) => full.size_hint(),
            Body::Stream(..) => SizeHint::default(),
        }
    }
}

/// A response with a body and content type.
pub fn respond(status: StatusCode, content_type: &'static str, body: String) -> HttpResponse {
    let mut response = Response::new(Body::full(body));
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
