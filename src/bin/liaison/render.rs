//! Human output: aligned tables, money, ages and times; and writing to
//! stdout without panicking when the reader (`head`, `less`) goes away.

use std::io::Write;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::fail::Fail;

/// Columns separated by two spaces, headers in capitals, no trailing blanks.
#[derive(Debug)]
pub(crate) struct Table {
    headers: Vec<String>,
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn new(headers: &[&str]) -> Self {
        Table {
            headers: headers.iter().map(|h| h.to_uppercase()).collect(),
            right: vec![false; headers.len()],
            rows: Vec::new(),
        }
    }

    /// Align these columns (numbers) to the right.
    pub(crate) fn right(mut self, columns: &[usize]) -> Self {
        for &c in columns {
            self.right[c] = true;
        }
        self
    }

    pub(crate) fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.headers.len());
        self.rows
            .push(cells.into_iter().map(|c| one_line(&c)).collect());
    }

    pub(crate) fn render(&self) -> String {
        let width = |s: &str| s.chars().count();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(width(cell));
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.headers).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                let pad = widths[i] - width(cell);
                if self.right[i] {
                    line.extend(std::iter::repeat_n(' ', pad));
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// On one line: line breaks and tabs (in a partner's error) become spaces,
/// other control characters are escaped as [`escape_controls`] does.
pub(crate) fn one_line(s: &str) -> String {
    let spaced: String = s
        .chars()
        .map(|c| {
            if matches!(c, '\n' | '\r' | '\t') {
                ' '
            } else {
                c
            }
        })
        .collect();
    escape_controls(&spaced).into_owned()
}

/// At most `max` characters, marked with `...` when cut.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    let s = one_line(s);
    if s.chars().count() <= max {
        return s;
    }
    let mut cut: String = s.chars().take(max.saturating_sub(3)).collect();
    cut.push_str("...");
    cut
}

/// `45s`, `12m`, `3h 05m`, `2d 4h`.
pub(crate) fn age_secs(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86_400 => format!("{}h {:02}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d {}h", secs / 86_400, secs % 86_400 / 3600),
    }
}

/// How long ago `at` was.
pub(crate) fn age(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    age_secs((now - at).num_seconds().max(0).unsigned_abs())
}

/// UTC, to the second.
pub(crate) fn time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// `-` for nothing.
pub(crate) fn or_dash(s: Option<impl ToString>) -> String {
    s.map_or_else(|| "-".to_owned(), |s| s.to_string())
}

/// `1 submission`, `2 submissions`.
pub(crate) fn count(n: impl Into<u64>, one: &str, many: &str) -> String {
    let n = n.into();
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `text` with every control character but line breaks (`\n`, `\r\n`: CSV
/// lines end so) escaped as `\u001b` (valid inside a JSON string too): a
/// partner name, an error or a header from outside cannot move the cursor,
/// retitle or recolour the terminal. Every printer goes through [`print`] or
/// [`note`], which apply it; fields that must stay on one line go through
/// [`one_line`] first.
pub(crate) fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    let bare = |c: char, next: Option<char>| {
        c == '\n' || (c == '\r' && next == Some('\n')) || !c.is_control()
    };
    let mut chars = text.chars().peekable();
    let mut clean = true;
    while let Some(c) = chars.next() {
        clean &= bare(c, chars.peek().copied());
    }
    if clean {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if bare(c, chars.peek().copied()) {
            out.push(c);
        } else {
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Write to stdout, control characters escaped; a closed pipe ends the
/// output quietly.
pub(crate) fn print(text: &str) -> Result<(), Fail> {
    let text = escape_controls(text);
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Fail::usage(format!("cannot write to stdout: {e}")))
        }
        _ => Ok(()),
    }
}

/// Pretty JSON and a newline on stdout.
pub(crate) fn print_json(value: &impl Serialize) -> Result<(), Fail> {
    let mut text = serde_json::to_string_pretty(value)
        .map_err(|e| Fail::usage(format!("cannot encode JSON: {e}")))?;
    text.push('\n');
    print(&text)
}

/// A line for the person at the terminal (progress, hints, errors): stderr,
/// control characters escaped.
pub(crate) fn note(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{}", escape_controls(text));
}

/// Quote `s` for a shell command line when it needs it.
pub(crate) fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_at_a_glance() {
        assert_eq!(age_secs(45), "45s");
        assert_eq!(age_secs(720), "12m");
        assert_eq!(age_secs(3 * 3600 + 5 * 60), "3h 05m");
        assert_eq!(age_secs(2 * 86_400 + 4 * 3600), "2d 4h");
    }

    #[test]
    fn tables_align_and_cut() {
        let mut t = Table::new(&["id", "n"]).right(&[1]);
        t.row(vec!["a".into(), "10".into()]);
        t.row(vec!["long\nname".into(), "7".into()]);
        assert_eq!(t.render(), "ID          N\na          10\nlong name   7\n");
        assert_eq!(truncate("abcdefgh", 6), "abc...");
        assert_eq!(truncate("abc", 6), "abc");
    }

    #[test]
    fn control_characters_are_escaped_but_newlines_kept() {
        assert_eq!(escape_controls("plain\nline"), "plain\nline");
        assert_eq!(escape_controls("csv\r\nline"), "csv\r\nline");
        assert_eq!(
            escape_controls("\u{1b}[31mred\r\u{9b}x\u{7}"),
            "\\u001b[31mred\\u000d\\u009bx\\u0007"
        );
        // Still JSON once escaped inside a JSON string.
        let json = serde_json::to_string(&"a\u{9b}b").unwrap();
        let back: String = serde_json::from_str(&escape_controls(&json)).unwrap();
        assert_eq!(back, "a\u{9b}b");
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(shell_quote("/var/db/outbox.db"), "/var/db/outbox.db");
        assert_eq!(shell_quote("my db's"), r"'my db'\''s'");
    }
}
