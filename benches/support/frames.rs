//! The bench stream shared by the benches: the distinct event frames of
//! `replay-data/prefect-3.9.1-main.jsonl`, eight times, with every UUID rewritten per copy
//! so the stream is large and unique.

use prefect_events_exporter::ingest::decode::{decode, Decoded};

/// Copies of the recording in the bench stream.
const COPIES: u32 = 8;

fn is_uuid_at(bytes: &[u8], i: usize) -> bool {
    const DASHES: [usize; 4] = [8, 13, 18, 23];
    i + 36 <= bytes.len()
        && (0..36).all(|j| {
            let b = bytes[i + j];
            if DASHES.contains(&j) {
                b == b'-'
            } else {
                b.is_ascii_hexdigit()
            }
        })
}

/// The frame with the first 8 hex digits of every UUID XORed with `copy`.
fn rewrite(frame: &[u8], copy: u32) -> Vec<u8> {
    let mut out = frame.to_vec();
    let mut i = 0;
    while i + 36 <= out.len() {
        if is_uuid_at(&out, i) {
            let head = std::str::from_utf8(&out[i..i + 8]).unwrap();
            let value = u32::from_str_radix(head, 16).unwrap() ^ copy;
            out[i..i + 8].copy_from_slice(format!("{value:08x}").as_bytes());
            i += 36;
        } else {
            i += 1;
        }
    }
    out
}

/// Distinct event frames of the main recording, eight times with fresh ids.
pub fn frames() -> Vec<Vec<u8>> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/replay-data/prefect-3.9.1-main.jsonl"
    );
    let text = std::fs::read(path).expect("replay-data/prefect-3.9.1-main.jsonl");
    let mut seen = std::collections::HashSet::new();
    let base: Vec<&[u8]> = text
        .split(|&b| b == b'\n')
        .filter(|line| match decode(line) {
            Decoded::Event(e) => seen.insert(e.id),
            _ => false,
        })
        .collect();
    (0..COPIES)
        .flat_map(|copy| base.iter().map(move |f| rewrite(f, copy)))
        .collect()
}
