//! Text a remote server supplied (websocket close reasons, `auth_failure` reasons, REST error
//! bodies), made safe to show.
//!
//! Such text reaches text logs, error messages and `/readyz` only through [`escape`]: a
//! newline in it could forge a log line and an escape sequence could drive the terminal that
//! shows the log, so every control character, line separator and direction override becomes
//! a visible escape, and the text is cut to a length. It never decides anything: it is only
//! shown.

/// How many characters of server-supplied text are shown.
pub const SHOWN_CHARS: usize = 200;

/// `text` with control characters (C0, DEL, C1), Unicode line and paragraph separators and
/// direction overrides written as escapes (`\n`, `\r`, `\t`, `\u{1b}`, …) and backslashes
/// doubled, cut after `max_chars` characters of input (then ending in `…`).
pub fn escape(text: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_chars.saturating_mul(2)));
    for (shown, c) in text.chars().enumerate() {
        if shown == max_chars {
            out.push('…');
            break;
        }
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}

/// [`escape`] of bytes that may not be UTF-8 (invalid sequences become `U+FFFD`).
pub fn escape_bytes(bytes: &[u8], max_chars: usize) -> String {
    escape(&String::from_utf8_lossy(bytes), max_chars)
}

/// Characters that change how a line is displayed or where it ends.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newline_cannot_forge_a_log_line() {
        assert_eq!(
            escape("bye\n2026-01-01T00:00:00Z ERROR forged", 200),
            "bye\\n2026-01-01T00:00:00Z ERROR forged"
        );
        assert_eq!(escape("a\r\nb\tc", 200), "a\\r\\nb\\tc");
    }

    #[test]
    fn escape_codes_and_direction_overrides_are_shown_not_obeyed() {
        assert_eq!(escape("\u{1b}[31mred\u{7}", 200), "\\u{1b}[31mred\\u{7}");
        assert_eq!(escape("\u{9b}2J", 200), "\\u{9b}2J");
        assert_eq!(escape("x\u{202e}y\u{2028}z", 200), "x\\u{202e}y\\u{2028}z");
        assert_eq!(escape("C:\\path", 200), "C:\\\\path");
    }

    #[test]
    fn ordinary_text_is_unchanged_and_long_text_is_cut() {
        assert_eq!(
            escape("Invalid token — retry", 200),
            "Invalid token — retry"
        );
        assert_eq!(escape("abcdef", 3), "abc…");
        assert_eq!(escape("abc", 3), "abc");
        assert_eq!(escape_bytes(b"ok\xff\n", 200), "ok\u{fffd}\\n");
    }
}
