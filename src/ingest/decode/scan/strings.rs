//! Strings for the scanner: finding the next quote, backslash or control byte (sixteen bytes
//! at a time with SSE2, eight with SWAR elsewhere), and the three ways a string is read —
//! as a value kept, as a key compared, as a value skipped — with their escapes.
//!
//! The three modes mirror `serde_json`'s:
//! - [`Scanner::text`]: a string value the decoder reads (`parse_str`): control characters,
//!   invalid UTF-8 and unpaired surrogate escapes are errors.
//! - [`Scanner::key`]: an object key the decoder compares (`parse_str_raw`): raw bytes, so
//!   control characters and invalid UTF-8 pass; escapes must still be well formed.
//! - [`Scanner::skip_str`]: a string the decoder ignores (`ignore_str`): control characters
//!   are errors, UTF-8 is not checked, `\u` needs only four hex digits.

use std::borrow::Cow;

use super::{Fail, Scan, Scanner};

/// The longest key the reader compares (`prefect.state-timestamp`).
const KEY_CAPACITY: usize = 24;

/// An object key: borrowed when it had no escapes, else unescaped into a small buffer.
pub(super) enum Key<'a> {
    /// The raw bytes between the quotes.
    Plain(&'a [u8]),
    /// The unescaped key, when it fits and is ASCII.
    Unescaped { buf: [u8; KEY_CAPACITY], len: usize },
    /// An unescaped key that is longer than any key read, or not ASCII: it matches none.
    Unmatched,
}

impl Key<'_> {
    /// The key's bytes for comparison (empty for [`Key::Unmatched`]: no key read is empty).
    #[inline]
    pub(super) fn bytes(&self) -> &[u8] {
        match self {
            Key::Plain(b) => b,
            Key::Unescaped { buf, len } => &buf[..*len],
            Key::Unmatched => b"",
        }
    }
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// High bit set in every byte of `word` equal to `byte` (exact for the lowest match).
#[inline(always)]
fn bytes_equal(word: u64, byte: u8) -> u64 {
    let x = word ^ (ONES * u64::from(byte));
    x.wrapping_sub(ONES) & !x & HIGHS
}

/// High bit set in every byte of `word` below 0x20 (exact for the lowest match).
#[inline(always)]
fn bytes_control(word: u64) -> u64 {
    word.wrapping_sub(ONES * 0x20) & !word & HIGHS
}

/// Sixteen bytes at a time where SSE2 is there (every x86-64), through `safe_arch`'s safe
/// wrappers of the intrinsics; elsewhere the eight-byte SWAR loop below does it all.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
mod sse2 {
    use safe_arch::{
        bitor_m128i, cmp_eq_mask_i8_m128i, load_unaligned_m128i, max_u8_m128i, move_mask_i8_m128i,
        set_splat_i8_m128i,
    };

    /// One bit per byte of `chunk` that is `"` or `\` (or, with `control`, below 0x20).
    #[inline(always)]
    pub(super) fn special(chunk: &[u8; 16], control: bool) -> u32 {
        let v = load_unaligned_m128i(chunk);
        let quote = cmp_eq_mask_i8_m128i(v, set_splat_i8_m128i(b'"' as i8));
        let backslash = cmp_eq_mask_i8_m128i(v, set_splat_i8_m128i(b'\\' as i8));
        let mut hits = bitor_m128i(quote, backslash);
        if control {
            // x <= 0x1f exactly when max(x, 0x1f) == 0x1f (unsigned).
            let low = set_splat_i8_m128i(0x1f);
            hits = bitor_m128i(hits, cmp_eq_mask_i8_m128i(max_u8_m128i(v, low), low));
        }
        move_mask_i8_m128i(hits) as u32
    }
}

impl<'a> Scanner<'a> {
    /// The position of the first `"` or `\` (or, with `control`, byte below 0x20) at or after
    /// `from`, or the end of the input.
    #[inline(always)]
    fn find_special(&self, from: usize, control: bool) -> usize {
        let mut i = from;
        #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
        while let Some(chunk) = self.bytes.get(i..).and_then(<[u8]>::first_chunk::<16>) {
            let hits = sse2::special(chunk, control);
            if hits != 0 {
                return i + hits.trailing_zeros() as usize;
            }
            i += 16;
        }
        while let Some(chunk) = self.bytes.get(i..).and_then(<[u8]>::first_chunk::<8>) {
            let word = u64::from_le_bytes(*chunk);
            let mut hits = bytes_equal(word, b'"') | bytes_equal(word, b'\\');
            if control {
                hits |= bytes_control(word);
            }
            if hits != 0 {
                return i + (hits.trailing_zeros() / 8) as usize;
            }
            i += 8;
        }
        while let Some(&b) = self.bytes.get(i) {
            if b == b'"' || b == b'\\' || (control && b < 0x20) {
                return i;
            }
            i += 1;
        }
        i
    }

    /// Skips a string whose opening quote is consumed (`serde_json`'s `ignore_str`).
    #[inline(always)]
    pub(super) fn skip_str(&mut self) -> Scan<()> {
        let i = self.find_special(self.pos, true);
        if self.bytes.get(i) == Some(&b'"') {
            self.pos = i + 1;
            Ok(())
        } else {
            self.skip_escaped_str(i)
        }
    }

    /// The rest of [`Scanner::skip_str`] from the first special byte at `i` that is not its
    /// closing quote.
    #[cold]
    fn skip_escaped_str(&mut self, mut i: usize) -> Scan<()> {
        loop {
            match self.bytes.get(i) {
                Some(b'"') => {
                    self.pos = i + 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    self.pos = i + 1;
                    self.escape(&mut Discard)?;
                }
                _ => return Err(Fail::Malformed),
            }
            i = self.find_special(self.pos, true);
        }
    }

    /// Reads an object key whose opening quote is consumed (`serde_json`'s `parse_str_raw`:
    /// raw bytes, escapes decoded, lone surrogates allowed).
    #[inline]
    pub(super) fn key(&mut self) -> Scan<Key<'a>> {
        let start = self.pos;
        let i = self.find_special(start, false);
        match self.bytes.get(i) {
            Some(b'"') => {
                self.pos = i + 1;
                Ok(Key::Plain(&self.bytes[start..i]))
            }
            Some(_) => self.escaped_key(start, i),
            None => Err(Fail::Malformed),
        }
    }

    #[cold]
    fn escaped_key(&mut self, start: usize, first_escape: usize) -> Scan<Key<'a>> {
        let mut key = KeyBuf {
            buf: [0; KEY_CAPACITY],
            len: 0,
            matchable: true,
        };
        key.extend(&self.bytes[start..first_escape]);
        self.pos = first_escape + 1;
        loop {
            self.escape(&mut key)?;
            let i = self.find_special(self.pos, false);
            key.extend(&self.bytes[self.pos..i]);
            match self.bytes.get(i) {
                Some(b'"') => {
                    self.pos = i + 1;
                    return Ok(if key.matchable {
                        Key::Unescaped {
                            buf: key.buf,
                            len: key.len,
                        }
                    } else {
                        Key::Unmatched
                    });
                }
                Some(_) => self.pos = i + 1,
                None => return Err(Fail::Malformed),
            }
        }
    }

    /// Reads a string value whose opening quote is consumed (`serde_json`'s `parse_str`) into
    /// `out`, borrowed unless it holds escapes. Written in place rather than returned: a
    /// returned `Result<Cow<str>, _>` is copied through the stack in overlapping pieces that
    /// stall the CPU's store forwarding.
    #[inline]
    pub(in crate::ingest::decode) fn text(&mut self, out: &mut Option<Cow<'a, str>>) -> Scan<()> {
        let start = self.pos;
        let i = self.find_special(start, true);
        match self.bytes.get(i) {
            Some(b'"') => {
                self.pos = i + 1;
                // Quotes are ASCII, so a valid frame splits at them into valid strings.
                let text = match self.text.and_then(|t| t.get(start..i)) {
                    Some(text) => text,
                    None => {
                        std::str::from_utf8(&self.bytes[start..i]).map_err(|_| Fail::Malformed)?
                    }
                };
                *out = Some(Cow::Borrowed(text));
                Ok(())
            }
            Some(b'\\') => {
                *out = Some(Cow::Owned(self.escaped_text(start, i)?));
                Ok(())
            }
            _ => Err(Fail::Malformed),
        }
    }

    /// Reads a string value that is checked but not kept.
    pub(in crate::ingest::decode) fn check_text(&mut self) -> Scan<()> {
        self.text(&mut None)
    }

    #[cold]
    fn escaped_text(&mut self, start: usize, first_escape: usize) -> Scan<String> {
        let mut text = Strict(self.bytes[start..first_escape].to_vec());
        self.pos = first_escape + 1;
        loop {
            self.escape(&mut text)?;
            let i = self.find_special(self.pos, true);
            text.0.extend_from_slice(&self.bytes[self.pos..i]);
            match self.bytes.get(i) {
                Some(b'"') => {
                    self.pos = i + 1;
                    return String::from_utf8(text.0).map_err(|_| Fail::Malformed);
                }
                Some(b'\\') => self.pos = i + 1,
                _ => return Err(Fail::Malformed),
            }
        }
    }

    /// Reads one escape after its backslash into `sink`.
    #[inline]
    fn escape<S: EscapeSink>(&mut self, sink: &mut S) -> Scan<()> {
        let Some(&c) = self.bytes.get(self.pos) else {
            return Err(Fail::Malformed);
        };
        self.pos += 1;
        let byte = match c {
            b'"' => b'"',
            b'\\' => b'\\',
            b'/' => b'/',
            b'b' => b'\x08',
            b'f' => b'\x0c',
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => {
                let unit = self.hex4()?;
                return sink.unit(self, unit);
            }
            _ => return Err(Fail::Malformed),
        };
        sink.byte(byte);
        Ok(())
    }

    /// Reads the four hex digits of a `\u` escape.
    fn hex4(&mut self) -> Scan<u16> {
        let digits = self
            .bytes
            .get(self.pos..self.pos + 4)
            .ok_or(Fail::Malformed)?;
        let mut value = 0u16;
        for &d in digits {
            let nibble = match d {
                b'0'..=b'9' => d - b'0',
                b'a'..=b'f' => d - b'a' + 10,
                b'A'..=b'F' => d - b'A' + 10,
                _ => return Err(Fail::Malformed),
            };
            value = value << 4 | u16::from(nibble);
        }
        self.pos += 4;
        Ok(value)
    }
}

/// Where an escape's value goes.
trait EscapeSink {
    /// A simple escape (`\n`, `\"`, ...) decoded to its byte.
    fn byte(&mut self, byte: u8);
    /// A `\u` escape; `scanner` stands after its four digits, for a following low surrogate.
    fn unit(&mut self, scanner: &mut Scanner<'_>, unit: u16) -> Scan<()>;
}

/// A skipped string: escapes are only checked for form.
struct Discard;

impl EscapeSink for Discard {
    fn byte(&mut self, _: u8) {}
    fn unit(&mut self, _: &mut Scanner<'_>, _: u16) -> Scan<()> {
        Ok(())
    }
}

/// A key being unescaped: only short ASCII keys can match one the reader wants, so longer or
/// non-ASCII ones just stop being matchable. Surrogates (paired or not) are never ASCII, and
/// the escape after a lone one is read on its own, as `serde_json` does for keys.
struct KeyBuf {
    buf: [u8; KEY_CAPACITY],
    len: usize,
    matchable: bool,
}

impl KeyBuf {
    fn extend(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.byte(b);
        }
    }
}

impl EscapeSink for KeyBuf {
    fn byte(&mut self, byte: u8) {
        match self.buf.get_mut(self.len) {
            Some(slot) if byte.is_ascii() => {
                *slot = byte;
                self.len += 1;
            }
            _ => self.matchable = false,
        }
    }
    fn unit(&mut self, _: &mut Scanner<'_>, unit: u16) -> Scan<()> {
        match u8::try_from(unit) {
            Ok(b) if b.is_ascii() => self.byte(b),
            _ => self.matchable = false,
        }
        Ok(())
    }
}

/// A string value being unescaped: surrogates must pair up.
struct Strict(Vec<u8>);

impl EscapeSink for Strict {
    fn byte(&mut self, byte: u8) {
        self.0.push(byte);
    }
    fn unit(&mut self, scanner: &mut Scanner<'_>, unit: u16) -> Scan<()> {
        let code = match unit {
            0xDC00..=0xDFFF => return Err(Fail::Malformed),
            0xD800..=0xDBFF => {
                if scanner.bytes.get(scanner.pos..scanner.pos + 2) != Some(b"\\u") {
                    return Err(Fail::Malformed);
                }
                scanner.pos += 2;
                let low = scanner.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&low) {
                    return Err(Fail::Malformed);
                }
                0x1_0000 + ((u32::from(unit) - 0xD800) << 10 | (u32::from(low) - 0xDC00))
            }
            _ => u32::from(unit),
        };
        let c = char::from_u32(code).ok_or(Fail::Malformed)?;
        self.0
            .extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
        Ok(())
    }
}
