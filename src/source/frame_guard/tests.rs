//! Unit tests of the frame guard's rewriting, fed in every chunking.

use super::*;

const NONCE: [u8; 8] = *b"n0nce-42";
const HEAD: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n";

/// A server frame (unmasked) with `first` as its first header byte.
fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n <= 0xFFFF => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
    out
}

fn marker(bytes: u64, truncated_follows: bool) -> Vec<u8> {
    let mut payload = MARKER_TAG.to_vec();
    payload.extend_from_slice(&NONCE);
    payload.push(u8::from(truncated_follows));
    payload.extend_from_slice(&bytes.to_be_bytes());
    frame(FIN | OP_PONG, &payload)
}

/// The guard's output for `input` after the upgrade response, fed `chunk` bytes at a time.
fn rewrite(input: &[u8], limit: usize, chunk: usize) -> Vec<u8> {
    let mut rewriter = Rewriter::new(limit, NONCE);
    let mut out = Vec::new();
    let mut all = HEAD.to_vec();
    all.extend_from_slice(input);
    for piece in all.chunks(chunk) {
        rewriter.feed(piece, &mut out);
    }
    assert_eq!(
        &out[..HEAD.len()],
        HEAD,
        "the upgrade response passes unchanged"
    );
    out.split_off(HEAD.len())
}

/// Asserts the same output for every chunking.
fn assert_rewrites(input: &[u8], limit: usize, expected: &[u8]) {
    for chunk in [1, 2, 3, 7, 64, usize::MAX] {
        assert_eq!(
            rewrite(input, limit, chunk.min(HEAD.len() + input.len())),
            expected,
            "chunks of {chunk}"
        );
    }
}

#[test]
fn text_frames_become_binary_with_the_same_payload() {
    let payload = b"{\"type\":\"event\"}";
    assert_rewrites(
        &frame(FIN | OP_TEXT, payload),
        100,
        &frame(FIN | OP_BINARY, payload),
    );
    let invalid_utf8 = b"{\"id\":\"\xff\xfe\"}";
    assert_rewrites(
        &frame(FIN | OP_TEXT, invalid_utf8),
        100,
        &frame(FIN | OP_BINARY, invalid_utf8),
    );
}

#[test]
fn a_message_over_the_limit_is_replaced_by_a_marker_and_the_stream_goes_on() {
    let big = vec![b'x'; 70_000];
    let mut input = frame(FIN | OP_TEXT, &big);
    input.extend(frame(FIN | OP_TEXT, b"after"));
    let mut expected = marker(70_000, false);
    expected.extend(frame(FIN | OP_BINARY, b"after"));
    assert_rewrites(&input, 65_536, &expected);
    assert_eq!(
        parse_marker(&marker(70_000, false)[2..], NONCE),
        Some(Skipped {
            bytes: 70_000,
            truncated_follows: false
        })
    );
    assert_eq!(
        parse_marker(&marker(70_000, false)[2..], *b"other-nc"),
        None
    );
    assert_eq!(parse_marker(b"a real pong", NONCE), None);
}

#[test]
fn a_message_exactly_at_the_limit_passes() {
    let payload = vec![b'y'; 300];
    assert_rewrites(
        &frame(FIN | OP_TEXT, &payload),
        300,
        &frame(FIN | OP_BINARY, &payload),
    );
}

#[test]
fn fragments_within_the_limit_pass_with_control_frames_between_them() {
    let mut input = frame(OP_TEXT, b"ab");
    input.extend(frame(FIN | 0x9, b"ping"));
    input.extend(frame(OP_CONTINUE, b"cd"));
    input.extend(frame(FIN | OP_CONTINUE, b"ef"));
    let mut expected = frame(OP_BINARY, b"ab");
    expected.extend(frame(FIN | 0x9, b"ping"));
    expected.extend(frame(OP_CONTINUE, b"cd"));
    expected.extend(frame(FIN | OP_CONTINUE, b"ef"));
    assert_rewrites(&input, 6, &expected);
}

#[test]
fn fragments_crossing_the_limit_end_the_partial_message_and_mark_it() {
    let mut input = frame(OP_TEXT, b"abcd");
    input.extend(frame(OP_CONTINUE, b"efgh"));
    input.extend(frame(FIN | 0x9, b"p"));
    input.extend(frame(FIN | OP_CONTINUE, b"ijkl"));
    input.extend(frame(FIN | OP_TEXT, b"next"));
    let mut expected = frame(OP_BINARY, b"abcd");
    expected.extend(marker(8, true));
    expected.extend([FIN | OP_CONTINUE, 0]);
    expected.extend(frame(FIN | 0x9, b"p"));
    expected.extend(frame(FIN | OP_BINARY, b"next"));
    assert_rewrites(&input, 6, &expected);
}

#[test]
fn a_fragmented_message_over_the_limit_from_its_first_frame_is_marked_once_at_its_end() {
    let mut input = frame(OP_BINARY, &[1; 10]);
    input.extend(frame(OP_CONTINUE, &[2; 10]));
    input.extend(frame(FIN | OP_CONTINUE, &[3; 10]));
    assert_rewrites(&input, 6, &marker(30, false));
}

#[test]
fn large_lengths_use_the_extended_header_forms() {
    let payload = vec![b'z'; 70_000];
    assert_rewrites(
        &frame(FIN | OP_BINARY, &payload),
        100_000,
        &frame(FIN | OP_BINARY, &payload),
    );
    let mut huge = vec![FIN | OP_TEXT, 127];
    huge.extend_from_slice(&(1u64 << 40).to_be_bytes());
    huge.extend_from_slice(&[0; 100]);
    assert_eq!(
        rewrite(&huge, 100, usize::MAX),
        b"",
        "still reading past it"
    );
}
