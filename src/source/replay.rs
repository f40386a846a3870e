//! Recorded JSONL files as a source: one frame or bare event per line.
//!
//! Lines end in `\n` or `\r\n`; blank lines are passed on (the decoder skips them). A UTF-8
//! byte order mark at the very start of a file (as Windows editors write) is skipped. A line
//! longer than [`MAX_FRAME_BYTES`] is never held in memory: it is read past and reported as
//! [`Line::Oversize`].

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::Path;

use crate::model::event::MAX_FRAME_BYTES;

/// One line of a replay file.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// The line's bytes, without its line ending.
    Frame(&'a [u8]),
    /// A line over the size limit, with its length in bytes.
    Oversize(usize),
}

/// Reads lines with a reusable buffer and a size limit.
pub struct LineReader<R> {
    reader: R,
    buf: Vec<u8>,
    limit: usize,
    bytes_read: u64,
    /// Whether the next line is the file's first (where a byte order mark may stand).
    at_start: bool,
}

/// The UTF-8 byte order mark.
const BOM: &[u8] = b"\xEF\xBB\xBF";

impl LineReader<BufReader<File>> {
    /// Opens a file for reading.
    pub fn open(path: &Path) -> io::Result<Self> {
        LineReader::open_at(path, 0)
    }

    /// Opens a file for reading from byte `offset` (a line start saved earlier); a file
    /// shorter than that, or one that cannot seek, is read from its start.
    pub fn open_at(path: &Path, offset: u64) -> io::Result<Self> {
        let mut file = File::open(path)?;
        let mut start = 0;
        if offset > 0
            && file
                .metadata()
                .is_ok_and(|m| m.is_file() && m.len() >= offset)
        {
            use std::io::Seek;
            start = file.seek(io::SeekFrom::Start(offset))?;
        }
        let mut reader = LineReader::new(BufReader::with_capacity(256 * 1024, file));
        reader.bytes_read = start;
        reader.at_start = start == 0;
        Ok(reader)
    }
}

impl<R: BufRead> LineReader<R> {
    /// Wraps a buffered reader, with the limit of [`MAX_FRAME_BYTES`].
    pub fn new(reader: R) -> Self {
        LineReader::with_limit(reader, MAX_FRAME_BYTES)
    }

    /// Wraps a buffered reader with a line-length limit.
    pub fn with_limit(reader: R, limit: usize) -> Self {
        LineReader {
            reader,
            buf: Vec::new(),
            limit,
            bytes_read: 0,
            at_start: true,
        }
    }

    /// Bytes consumed so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// The next line, or `None` at the end of the input. A byte order mark opening the
    /// input is left out of the first line (and still counted in [`LineReader::bytes_read`]).
    pub fn next_line(&mut self) -> io::Result<Option<Line<'_>>> {
        self.buf.clear();
        let first = std::mem::take(&mut self.at_start);
        let mut total = 0usize;
        let mut oversize = false;
        loop {
            let available = match self.reader.fill_buf() {
                Ok(available) => available,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if available.is_empty() {
                if total == 0 {
                    return Ok(None);
                }
                break;
            }
            let (chunk, done) = match memchr::memchr(b'\n', available) {
                Some(i) => (&available[..=i], true),
                None => (available, false),
            };
            let used = chunk.len();
            total += used;
            if !oversize && self.buf.len() + used > self.limit + 2 {
                oversize = true;
                self.buf.clear();
            }
            if !oversize {
                self.buf.extend_from_slice(chunk);
            }
            self.reader.consume(used);
            self.bytes_read += used as u64;
            if done {
                break;
            }
        }
        if oversize {
            return Ok(Some(Line::Oversize(total)));
        }
        let mut line = self.buf.as_slice();
        if first {
            line = line.strip_prefix(BOM).unwrap_or(line);
        }
        if let Some(rest) = line.strip_suffix(b"\n") {
            line = rest;
        }
        if let Some(rest) = line.strip_suffix(b"\r") {
            line = rest;
        }
        if line.len() > self.limit {
            return Ok(Some(Line::Oversize(line.len())));
        }
        Ok(Some(Line::Frame(line)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8], limit: usize) -> Vec<Result<Vec<u8>, usize>> {
        let mut reader = LineReader::with_limit(BufReader::with_capacity(4, input), limit);
        let mut out = Vec::new();
        while let Some(line) = reader.next_line().unwrap() {
            out.push(match line {
                Line::Frame(f) => Ok(f.to_vec()),
                Line::Oversize(n) => Err(n),
            });
        }
        out
    }

    #[test]
    fn splits_lf_and_crlf_and_keeps_blank_lines() {
        assert_eq!(
            lines(b"ab\r\n\ncd\nef", 100),
            vec![
                Ok(b"ab".to_vec()),
                Ok(vec![]),
                Ok(b"cd".to_vec()),
                Ok(b"ef".to_vec())
            ]
        );
    }

    #[test]
    fn a_leading_byte_order_mark_is_skipped_and_no_other() {
        assert_eq!(
            lines(b"\xEF\xBB\xBFab\n\xEF\xBB\xBFcd\n", 100),
            vec![Ok(b"ab".to_vec()), Ok(b"\xEF\xBB\xBFcd".to_vec())]
        );
        assert_eq!(lines(b"\xEF\xBB\xBF", 100), vec![Ok(vec![])]);
        assert_eq!(lines(b"\xEF\xBBab", 100), vec![Ok(b"\xEF\xBBab".to_vec())]);
    }

    #[test]
    fn a_file_read_from_an_offset_keeps_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bom.jsonl");
        std::fs::write(&path, b"\xEF\xBB\xBFab\ncd\n").unwrap();
        let mut reader = LineReader::open(&path).unwrap();
        assert_eq!(reader.next_line().unwrap(), Some(Line::Frame(b"ab")));
        assert_eq!(
            reader.bytes_read(),
            6,
            "the mark counts as read: offsets are file offsets"
        );
        let mut resumed = LineReader::open_at(&path, 6).unwrap();
        assert_eq!(resumed.next_line().unwrap(), Some(Line::Frame(b"cd")));
    }

    #[test]
    fn long_lines_are_reported_not_buffered() {
        let mut input = vec![b'x'; 50];
        input.extend_from_slice(b"\nok\n");
        assert_eq!(lines(&input, 10), vec![Err(51), Ok(b"ok".to_vec())]);
    }
}
