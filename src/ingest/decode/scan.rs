//! The byte-level half of the decoder: a cursor over one frame that lexes JSON exactly as
//! `serde_json` 1.x does on the paths the previous serde-based decoder took, so every input is
//! accepted or refused the same way.
//!
//! It owns whitespace, strings, numbers, literals, and skipping whole
//! values. It never recurses and never allocates on well-formed Prefect frames: skipped values
//! are walked with an explicit bit stack (one bit per open bracket, spilling to the heap only
//! past 64 levels), strings are borrowed unless they hold escapes. It knows nothing about
//! Prefect's event shape; `read` decides which values to keep.
//!
//! Strings (the three ways one is read, escapes, the SIMD search for the next quote) are in
//! `strings`.

mod strings;

/// Why scanning stopped: the two ways a frame can fail inside the JSON itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Fail {
    /// Anything `serde_json` refuses.
    Malformed,
    /// `serde_json`'s recursion limit on the path the reader descends through.
    TooDeep,
}

/// The result of one scanning step.
pub(super) type Scan<T> = Result<T, Fail>;

/// The nesting at which `serde_json` gives up: its budget of 128 levels is spent when the
/// 128th container on the read path opens.
const RECURSION_LIMIT: u32 = 128;

/// Fails with [`Fail::TooDeep`] when opening a container at `depth` (1 = the top level)
/// exceeds `serde_json`'s recursion limit.
#[inline]
pub(super) fn enter(depth: u32) -> Scan<u32> {
    let depth = depth + 1;
    if depth >= RECURSION_LIMIT {
        Err(Fail::TooDeep)
    } else {
        Ok(depth)
    }
}

/// What a value turned out to be once its first byte was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Start {
    /// A string; its opening quote is consumed.
    Str,
    /// An object; its `{` is consumed.
    Object,
    /// An array; its `[` is consumed.
    Array,
    /// A number, `true`, `false` or `null`, already consumed whole.
    Scalar,
}

/// `haystack` starts with `prefix`: eight bytes at a time (overlapping at the end) for the
/// short keys compared on every member, instead of a call to `memcmp`.
#[inline(always)]
fn starts_with(haystack: &[u8], prefix: &[u8]) -> bool {
    let n = prefix.len();
    if n < 8 || haystack.len() < n {
        return haystack.starts_with(prefix);
    }
    let word = |bytes: &[u8], at: usize| {
        bytes
            .get(at..)
            .and_then(<[u8]>::first_chunk::<8>)
            .map(|w| u64::from_ne_bytes(*w))
    };
    let mut at = 0;
    while at + 8 < n {
        if word(haystack, at) != word(prefix, at) {
            return false;
        }
        at += 8;
    }
    word(haystack, n - 8) == word(prefix, n - 8)
}

/// A cursor over one frame.
pub(super) struct Scanner<'a> {
    bytes: &'a [u8],
    /// The whole frame as text, when it is valid UTF-8 (Prefect's always are): string values
    /// are then sliced from it instead of being validated one by one. `simdutf8` checks it
    /// (SIMD chosen at run time, same verdict as `std::str::from_utf8`).
    text: Option<&'a str>,
    pos: usize,
}

impl<'a> Scanner<'a> {
    /// A cursor at the start of `bytes`.
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        Scanner {
            bytes,
            text: simdutf8::basic::from_utf8(bytes).ok(),
            pos: 0,
        }
    }

    /// Skips JSON whitespace (space, tab, LF, CR) and returns the next byte, not consumed.
    #[inline(always)]
    pub(super) fn peek(&mut self) -> Option<u8> {
        match self.bytes.get(self.pos) {
            // Prefect's frames are compact: no whitespace between tokens.
            Some(&b) if b > b' ' => Some(b),
            _ => self.peek_after_whitespace(),
        }
    }

    #[cold]
    fn peek_after_whitespace(&mut self) -> Option<u8> {
        loop {
            match self.bytes.get(self.pos) {
                Some(b' ' | b'\n' | b'\t' | b'\r') => self.pos += 1,
                other => return other.copied(),
            }
        }
    }

    /// Skips whitespace and consumes `byte`, or fails.
    #[inline(always)]
    pub(super) fn expect(&mut self, byte: u8) -> Scan<()> {
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(Fail::Malformed)
        }
    }

    /// Consumes `byte` when it is next, with no whitespace before it (the compact fast path;
    /// callers fall back to [`Scanner::peek`]).
    #[inline(always)]
    pub(super) fn eat(&mut self, byte: u8) -> bool {
        let next = self.bytes.get(self.pos) == Some(&byte);
        self.pos += usize::from(next);
        next
    }

    /// True when only whitespace is left.
    pub(super) fn at_end(&mut self) -> bool {
        self.peek().is_none()
    }

    /// Reads the start of a value in a position the reader reads: consumes the opening quote or
    /// bracket, or the whole scalar. Numbers are checked the way `serde_json` parses them
    /// (a float that overflows `f64` is an error there, though only when parsed, not skipped).
    #[inline]
    pub(super) fn start(&mut self) -> Scan<Start> {
        match self.peek() {
            Some(b'"') => {
                self.pos += 1;
                Ok(Start::Str)
            }
            Some(b'{') => {
                self.pos += 1;
                Ok(Start::Object)
            }
            Some(b'[') => {
                self.pos += 1;
                Ok(Start::Array)
            }
            Some(b'-' | b'0'..=b'9') => {
                let start = self.pos;
                self.number()?;
                if parses_as_f64(&self.bytes[start..self.pos]) {
                    Ok(Start::Scalar)
                } else {
                    Err(Fail::Malformed)
                }
            }
            Some(b'n') => self.literal(b"null").map(|()| Start::Scalar),
            Some(b't') => self.literal(b"true").map(|()| Start::Scalar),
            Some(b'f') => self.literal(b"false").map(|()| Start::Scalar),
            _ => Err(Fail::Malformed),
        }
    }

    /// Consumes `word` exactly.
    fn literal(&mut self, word: &[u8]) -> Scan<()> {
        match self.bytes.get(self.pos..self.pos + word.len()) {
            Some(found) if found == word => {
                self.pos += word.len();
                Ok(())
            }
            _ => Err(Fail::Malformed),
        }
    }

    /// Consumes a number: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
    fn number(&mut self) -> Scan<()> {
        if self.bytes.get(self.pos) == Some(&b'-') {
            self.pos += 1;
        }
        match self.bytes.get(self.pos) {
            Some(b'0') => {
                self.pos += 1;
                if self.bytes.get(self.pos).is_some_and(u8::is_ascii_digit) {
                    return Err(Fail::Malformed);
                }
            }
            Some(b'1'..=b'9') => {
                self.pos += 1;
                self.digits();
            }
            _ => return Err(Fail::Malformed),
        }
        if self.bytes.get(self.pos) == Some(&b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return Err(Fail::Malformed);
            }
        }
        if let Some(b'e' | b'E') = self.bytes.get(self.pos) {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.bytes.get(self.pos) {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return Err(Fail::Malformed);
            }
        }
        Ok(())
    }

    /// Consumes ASCII digits and returns how many.
    fn digits(&mut self) -> usize {
        let start = self.pos;
        while self.bytes.get(self.pos).is_some_and(u8::is_ascii_digit) {
            self.pos += 1;
        }
        self.pos - start
    }

    /// Skips one whole value of any kind and depth (`serde_json`'s `ignore_value`), with an
    /// explicit stack: nesting costs one bit per level, never recursion.
    pub(super) fn skip_value(&mut self) -> Scan<()> {
        // Fast path: a scalar or string at the top.
        match self.peek() {
            Some(b'"') => {
                self.pos += 1;
                return self.skip_str();
            }
            Some(b'{' | b'[') => {}
            Some(b'-' | b'0'..=b'9') => return self.number(),
            Some(b'n') => return self.literal(b"null"),
            Some(b't') => return self.literal(b"true"),
            Some(b'f') => return self.literal(b"false"),
            _ => return Err(Fail::Malformed),
        }
        let mut open = BitStack::default();
        loop {
            // A value starts here.
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    self.skip_str()?;
                }
                Some(b'{') => {
                    self.pos += 1;
                    if self.peek() == Some(b'}') {
                        self.pos += 1;
                    } else {
                        open.push(true);
                        self.skip_key_and_colon()?;
                        continue;
                    }
                }
                Some(b'[') => {
                    self.pos += 1;
                    if self.peek() == Some(b']') {
                        self.pos += 1;
                    } else {
                        open.push(false);
                        continue;
                    }
                }
                Some(b'-' | b'0'..=b'9') => self.number()?,
                Some(b'n') => self.literal(b"null")?,
                Some(b't') => self.literal(b"true")?,
                Some(b'f') => self.literal(b"false")?,
                _ => return Err(Fail::Malformed),
            }
            // A value ended: close what it ends, or move on to the next element.
            loop {
                let Some(in_object) = open.top() else {
                    return Ok(());
                };
                match self.peek() {
                    Some(b',') => {
                        self.pos += 1;
                        if in_object {
                            self.skip_key_and_colon()?;
                        }
                        break;
                    }
                    Some(b'}') if in_object => {
                        self.pos += 1;
                        open.pop();
                    }
                    Some(b']') if !in_object => {
                        self.pos += 1;
                        open.pop();
                    }
                    _ => return Err(Fail::Malformed),
                }
            }
        }
    }

    /// Inside a skipped object: an ignored key and its colon.
    #[inline]
    fn skip_key_and_colon(&mut self) -> Scan<()> {
        self.expect(b'"')?;
        self.skip_str()?;
        self.expect(b':')
    }

    /// Walks the elements of an array whose `[` is consumed, calling `element` for each (with
    /// the scanner positioned before the element), up to and including the `]`.
    #[inline]
    pub(super) fn elements(&mut self, element: impl FnMut(&mut Self) -> Scan<()>) -> Scan<()> {
        self.separated(b']', element)
    }

    /// Walks comma-separated items up to and including `close` (no trailing comma), calling
    /// `item` for each with the scanner positioned before it.
    #[inline(always)]
    fn separated(&mut self, close: u8, mut item: impl FnMut(&mut Self) -> Scan<()>) -> Scan<()> {
        if self.peek() == Some(close) {
            self.pos += 1;
            return Ok(());
        }
        loop {
            item(self)?;
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b) if b == close => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return Err(Fail::Malformed),
            }
        }
    }

    /// Walks the members of an object whose `{` is consumed, up to and including the `}`:
    /// each key is looked up in `keys` and `member` is called with what it names (`None` for
    /// a key not in the table), the scanner standing after the colon.
    ///
    /// Prefect writes keys in a fixed order, so the entry after the last one found (starting
    /// at `hint`) is tried first, straight against the input: a key that is exactly that entry
    /// followed by its closing quote needs no scan. Otherwise the key is read in full
    /// ([`Scanner::key`], escapes decoded) and searched for.
    #[inline(always)]
    pub(super) fn members<T: Copy>(
        &mut self,
        keys: &[(&[u8], T)],
        mut hint: usize,
        mut member: impl FnMut(&mut Self, Option<T>) -> Scan<()>,
    ) -> Scan<()> {
        match self.peek() {
            Some(b'}') => {
                self.pos += 1;
                return Ok(());
            }
            Some(b'"') => self.pos += 1,
            _ => return Err(Fail::Malformed),
        }
        loop {
            let found = self.lookup_key(keys, &mut hint)?;
            self.expect(b':')?;
            member(self, found)?;
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.expect(b'"')?;
                }
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return Err(Fail::Malformed),
            }
        }
    }

    /// Reads a key whose opening quote is consumed and finds it in `keys`, trying
    /// `keys[*hint]` first; on a find, `*hint` moves past it.
    #[inline(always)]
    fn lookup_key<T: Copy>(&mut self, keys: &[(&[u8], T)], hint: &mut usize) -> Scan<Option<T>> {
        if let Some(&(key, value)) = keys.get(*hint) {
            // `key` and its closing quote, straight from the input.
            if let Some(rest) = self.bytes.get(self.pos..) {
                if rest.get(key.len()) == Some(&b'"') && starts_with(rest, key) {
                    self.pos += key.len() + 1;
                    *hint += 1;
                    return Ok(Some(value));
                }
            }
        }
        let key = self.key()?;
        let key = key.bytes();
        Ok(keys.iter().position(|&(k, _)| k == key).map(|i| {
            *hint = i + 1;
            keys[i].1
        }))
    }

    /// Skips the rest of an array whose `[` is consumed, its elements ignored.
    pub(super) fn skip_elements(&mut self) -> Scan<()> {
        self.elements(Self::skip_value)
    }

    /// Skips the rest of an object whose `{` is consumed, its values ignored but its keys
    /// checked as string values (what `serde_json` does when a visitor drains a map).
    pub(super) fn skip_members(&mut self) -> Scan<()> {
        self.separated(b'}', |s| {
            s.expect(b'"')?;
            s.check_text()?;
            s.expect(b':')?;
            s.skip_value()
        })
    }
}

/// Whether `serde_json` parses this number (already checked for form) when a visitor asks for
/// it: only an `f64` overflow fails, which only `serde_json` itself decides exactly.
#[cold]
fn parses_as_f64(number: &[u8]) -> bool {
    struct AnyNumber;
    impl serde::de::Visitor<'_> for AnyNumber {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a number")
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
    }
    let mut de = serde_json::Deserializer::from_slice(number);
    serde::Deserializer::deserialize_any(&mut de, AnyNumber).is_ok()
}

/// The open brackets of a skipped value, innermost last: `true` for an object.
#[derive(Default)]
struct BitStack {
    /// The innermost up to 64 levels, innermost in the lowest bit.
    word: u64,
    /// Levels held in `word`.
    len: u32,
    /// Full words of outer levels, spilled past 64 levels.
    spilled: Vec<u64>,
}

impl BitStack {
    #[inline]
    fn push(&mut self, object: bool) {
        if self.len == 64 {
            self.spilled.push(self.word);
            self.word = 0;
            self.len = 0;
        }
        self.word = self.word << 1 | u64::from(object);
        self.len += 1;
    }

    #[inline]
    fn top(&self) -> Option<bool> {
        if self.len == 0 {
            None
        } else {
            Some(self.word & 1 == 1)
        }
    }

    #[inline]
    fn pop(&mut self) {
        self.word >>= 1;
        self.len -= 1;
        if self.len == 0 {
            if let Some(word) = self.spilled.pop() {
                self.word = word;
                self.len = 64;
            }
        }
    }
}
