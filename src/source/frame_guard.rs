//! A guard between the socket (after TLS) and the websocket protocol, so that no single
//! message from the server can end the connection.
//!
//! tungstenite ends a connection for good on a text frame that is not UTF-8 and on a message
//! over its size limit (it cannot skip one), and Prefect's backfill then sends the same
//! message after every reconnect: a loop. The guard reads the server's bytes as they arrive,
//! follows the frame headers, and rewrites the data frames before tungstenite sees them:
//!
//! - text frames become binary frames, so tungstenite never checks UTF-8; the pipeline's
//!   decoder checks it and counts a bad frame under `malformed_json`, as for a replay line;
//! - a message over the limit is read past and never held: in its place comes a pong frame
//!   (the exporter never pings, so no real pong is expected) carrying a marker, this
//!   connection's random nonce, and the message's size, which the reader counts under
//!   `oversize`. When a fragmented message crosses the limit after some fragments were
//!   passed on, the marker says so, and an empty final fragment ends the partial message,
//!   which the reader then drops.
//!
//! Control frames pass unchanged. Only headers are rewritten; payload bytes are copied
//! through a buffer of one read's size, so memory does not grow with a message's size.
//! Before the frames, the HTTP response of the upgrade passes through unchanged.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 64 * 1024;
/// First bytes of a marker's payload.
const MARKER_TAG: &[u8; 8] = b"PEX-SKIP";
/// Length of a marker's payload: tag, nonce, flag, size.
const MARKER_LEN: usize = 8 + 8 + 1 + 8;

const OP_CONTINUE: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_PONG: u8 = 0xA;
const FIN: u8 = 0x80;

/// A message the guard read past instead of passing it on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// Its size in bytes (for a fragmented message cut short: the size when it was cut).
    pub bytes: u64,
    /// Whether a truncated remainder of it follows as a message of its own, to be dropped.
    pub truncated_follows: bool,
}

/// The marker of a skipped message, if `payload` (of a pong) is one made with `nonce`.
pub fn parse_marker(payload: &[u8], nonce: [u8; 8]) -> Option<Skipped> {
    if payload.len() != MARKER_LEN || &payload[..8] != MARKER_TAG || payload[8..16] != nonce {
        return None;
    }
    let mut size = [0u8; 8];
    size.copy_from_slice(&payload[17..25]);
    Some(Skipped {
        bytes: u64::from_be_bytes(size),
        truncated_follows: payload[16] == 1,
    })
}

/// Where the incoming byte stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Position {
    /// In the HTTP response of the upgrade; how many bytes of `\r\n\r\n` were just seen.
    HttpHead(u8),
    /// Gathering a frame header.
    Header,
    /// In a frame's payload: bytes left, and whether they are passed on.
    Payload { left: u64, pass: bool },
}

/// The data message in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Message {
    None,
    /// Fragments passed on so far, in bytes.
    Passing(u64),
    /// Being read past; whether its marker was sent already.
    Dropping {
        bytes: u64,
        marked: bool,
    },
}

/// The frame-rewriting state, fed bytes as they arrive (pure: no I/O).
#[derive(Debug)]
struct Rewriter {
    limit: u64,
    nonce: [u8; 8],
    position: Position,
    header: [u8; 14],
    header_len: usize,
    /// The first header byte of the frame whose payload is being read.
    frame_first: u8,
    message: Message,
}

impl Rewriter {
    fn new(limit: usize, nonce: [u8; 8]) -> Rewriter {
        Rewriter {
            limit: limit as u64,
            nonce,
            position: Position::HttpHead(0),
            header: [0; 14],
            header_len: 0,
            frame_first: 0,
            message: Message::None,
        }
    }

    /// Consumes all of `input`, appending what tungstenite should see to `out`.
    fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        while !input.is_empty() {
            match self.position {
                Position::HttpHead(seen) => {
                    let mut seen = seen;
                    let mut used = 0;
                    for &b in input {
                        used += 1;
                        seen = match (seen, b) {
                            (0 | 2, b'\r') => seen + 1,
                            (1 | 3, b'\n') => seen + 1,
                            (_, b'\r') => 1,
                            _ => 0,
                        };
                        if seen == 4 {
                            break;
                        }
                    }
                    out.extend_from_slice(&input[..used]);
                    input = &input[used..];
                    self.position = if seen == 4 {
                        Position::Header
                    } else {
                        Position::HttpHead(seen)
                    };
                }
                Position::Header => {
                    let need = header_len(&self.header[..self.header_len]);
                    let take = (need - self.header_len).min(input.len());
                    self.header[self.header_len..self.header_len + take]
                        .copy_from_slice(&input[..take]);
                    self.header_len += take;
                    input = &input[take..];
                    if self.header_len == header_len(&self.header[..self.header_len]) {
                        self.start_frame(out);
                    }
                }
                Position::Payload { left, pass } => {
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(input.len());
                    if pass {
                        out.extend_from_slice(&input[..take]);
                    }
                    input = &input[take..];
                    let left = left - take as u64;
                    self.position = Position::Payload { left, pass };
                    if left == 0 {
                        self.end_frame(out);
                    }
                }
            }
        }
    }

    /// A complete header is in `self.header`: decides what to do with the frame.
    fn start_frame(&mut self, out: &mut Vec<u8>) {
        let header = &mut self.header[..self.header_len];
        let opcode = header[0] & 0x0F;
        let len = payload_len(header);
        if let (OP_TEXT | OP_BINARY, Message::Dropping { bytes, marked }) = (opcode, self.message) {
            // A new message before the dropped one's final fragment: close the books on it.
            if !marked {
                self.marker(bytes, false, out);
            }
            self.message = Message::None;
        }
        let header = &mut self.header[..self.header_len];
        let mut pass = true;
        match (opcode, self.message) {
            (OP_TEXT | OP_BINARY, Message::None) if len > self.limit => {
                pass = false;
                self.message = Message::Dropping {
                    bytes: len,
                    marked: false,
                };
            }
            (OP_TEXT | OP_BINARY, Message::None) => {
                header[0] = (header[0] & 0xF0) | OP_BINARY;
                self.message = Message::Passing(len);
            }
            (OP_CONTINUE, Message::Passing(so_far)) if so_far.saturating_add(len) > self.limit => {
                pass = false;
                let bytes = so_far.saturating_add(len);
                self.marker(bytes, true, out);
                out.extend_from_slice(&[FIN | OP_CONTINUE, 0]);
                self.message = Message::Dropping {
                    bytes,
                    marked: true,
                };
            }
            (OP_CONTINUE, Message::Passing(so_far)) => {
                self.message = Message::Passing(so_far + len);
            }
            (OP_CONTINUE, Message::Dropping { bytes, marked }) => {
                pass = false;
                self.message = Message::Dropping {
                    bytes: bytes.saturating_add(len),
                    marked,
                };
            }
            // Control frames, and protocol violations tungstenite reports itself.
            _ => {}
        }
        self.frame_first = self.header[0];
        if pass {
            out.extend_from_slice(&self.header[..self.header_len]);
        }
        self.header_len = 0;
        self.position = Position::Payload { left: len, pass };
        if len == 0 {
            self.end_frame(out);
        }
    }

    /// A frame's payload has been read: ends its message if it was the final fragment.
    fn end_frame(&mut self, out: &mut Vec<u8>) {
        self.position = Position::Header;
        let fin = self.frame_first & FIN != 0;
        let opcode = self.frame_first & 0x0F;
        if opcode >= 0x8 || !fin {
            return;
        }
        if let Message::Dropping {
            bytes,
            marked: false,
        } = self.message
        {
            self.marker(bytes, false, out);
        }
        self.message = Message::None;
    }

    /// Appends a pong frame carrying the marker of a skipped message.
    fn marker(&self, bytes: u64, truncated_follows: bool, out: &mut Vec<u8>) {
        out.extend_from_slice(&[FIN | OP_PONG, MARKER_LEN as u8]);
        out.extend_from_slice(MARKER_TAG);
        out.extend_from_slice(&self.nonce);
        out.push(u8::from(truncated_follows));
        out.extend_from_slice(&bytes.to_be_bytes());
    }
}

/// The length of the header that starts with `partial` (2 until the second byte is known).
fn header_len(partial: &[u8]) -> usize {
    let Some(&second) = partial.get(1) else {
        return 2;
    };
    let extended = match second & 0x7F {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if second & 0x80 != 0 { 4 } else { 0 };
    2 + extended + mask
}

/// The payload length a complete header announces.
fn payload_len(header: &[u8]) -> u64 {
    match header[1] & 0x7F {
        126 => u64::from(u16::from_be_bytes([header[2], header[3]])),
        127 => {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&header[2..10]);
            u64::from_be_bytes(bytes)
        }
        n => u64::from(n),
    }
}

/// The socket (`S`) as tungstenite should see it: see the module docs.
#[derive(Debug)]
pub struct FrameGuard<S> {
    inner: S,
    rewriter: Rewriter,
    input: Box<[u8]>,
    out: Vec<u8>,
    out_pos: usize,
}

impl<S> FrameGuard<S> {
    /// Guards `inner`, passing data messages of at most `limit` bytes; markers carry `nonce`.
    pub fn new(inner: S, limit: usize, nonce: [u8; 8]) -> FrameGuard<S> {
        FrameGuard {
            inner,
            rewriter: Rewriter::new(limit, nonce),
            input: vec![0; READ_CHUNK].into_boxed_slice(),
            out: Vec::with_capacity(READ_CHUNK + 2 * (MARKER_LEN + 2)),
            out_pos: 0,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FrameGuard<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.out_pos < this.out.len() {
                let n = (this.out.len() - this.out_pos).min(buf.remaining());
                buf.put_slice(&this.out[this.out_pos..this.out_pos + n]);
                this.out_pos += n;
                if this.out_pos == this.out.len() {
                    this.out.clear();
                    this.out_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            let mut read = ReadBuf::new(&mut this.input);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            let filled = read.filled();
            if filled.is_empty() {
                return Poll::Ready(Ok(()));
            }
            this.rewriter.feed(filled, &mut this.out);
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FrameGuard<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
