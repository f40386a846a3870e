//! The live page at `/`: plain HTML, CSS and JavaScript embedded in the binary (no CDN, no
//! build step). It reads `/api/v1/stream` and the JSON documents like any other client, so
//! it needs nothing the API does not already serve, and works behind the same auth.

/// The files of the page: path, content type, content.
const FILES: [(&str, &str, &str); 3] = [
    (
        "/",
        "text/html; charset=utf-8",
        include_str!("page/live.html"),
    ),
    (
        "/static/live.css",
        "text/css; charset=utf-8",
        include_str!("page/live.css"),
    ),
    (
        "/static/live.js",
        "text/javascript; charset=utf-8",
        include_str!("page/live.js"),
    ),
];

/// The content type and content of the page's file at `path`, if it is one.
pub fn file(path: &str) -> Option<(&'static str, &'static str)> {
    FILES
        .iter()
        .find(|(p, _, _)| *p == path)
        .map(|&(_, content_type, content)| (content_type, content))
}
