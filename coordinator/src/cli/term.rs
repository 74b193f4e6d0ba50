//! What the terminal allows and how values read for people: colour only on a terminal
//! without `NO_COLOR`, live redrawing (spinners, progress) only on a terminal, and
//! durations, sizes, ages and short SHAs in their human forms.

use std::io::IsTerminal;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// How human output may be drawn on one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    /// ANSI colours: a terminal, and `NO_COLOR` unset or empty.
    pub color: bool,
    /// Redrawn lines (spinners, progress): a terminal that is not `TERM=dumb`.
    pub live: bool,
}

impl Style {
    /// For standard output.
    pub fn stdout() -> Self {
        Self::detect(std::io::stdout().is_terminal())
    }

    /// For standard error (progress of transfers, prompts).
    pub fn stderr() -> Self {
        Self::detect(std::io::stderr().is_terminal())
    }

    fn detect(terminal: bool) -> Self {
        let dumb = std::env::var("TERM").is_ok_and(|t| t == "dumb");
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Self {
            color: terminal && !dumb && !no_color,
            live: terminal && !dumb,
        }
    }

    pub fn plain() -> Self {
        Self {
            color: false,
            live: false,
        }
    }

    pub fn paint(&self, color: Color, text: &str) -> String {
        if self.color {
            format!("\x1b[{}m{text}\x1b[0m", color.code())
        } else {
            text.to_owned()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Color {
    Green,
    Red,
    Yellow,
    Cyan,
    Dim,
    Bold,
}

impl Color {
    fn code(self) -> &'static str {
        match self {
            Color::Green => "32",
            Color::Red => "31",
            Color::Yellow => "33",
            Color::Cyan => "36",
            Color::Dim => "2",
            Color::Bold => "1",
        }
    }
}

/// The colour of a deployment, step or snapshot status.
pub fn status_color(status: &str) -> Option<Color> {
    match status {
        "succeeded" | "completed" | "ready" | "connected" | "active" => Some(Color::Green),
        "failed" | "refused" | "unreachable" => Some(Color::Red),
        "running" | "queued" | "creating" | "pending-enrolment" => Some(Color::Yellow),
        "cancelled" | "skipped" | "revoked" | "deleted" => Some(Color::Dim),
        _ => None,
    }
}

/// Spinner frames (ASCII, so every terminal and font shows them).
pub const SPINNER: [&str; 4] = ["|", "/", "-", "\\"];

/// `1.2s`, `4m 05s`, `2h 03m`.
pub fn duration_ms(ms: u64) -> String {
    let secs = ms / 1000;
    match secs {
        0..=59 => format!("{}.{}s", secs, (ms % 1000) / 100),
        60..=3599 => format!("{}m {:02}s", secs / 60, secs % 60),
        _ => format!("{}h {:02}m", secs / 3600, (secs % 3600) / 60),
    }
}

/// `512 B`, `3.4 KiB`, `12.0 MiB`, `1.5 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

pub fn parse_time(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &Rfc3339).ok()
}

/// How long ago an RFC 3339 time was, from `now`: `just now`, `5m ago`, `3h ago`, `2d ago`.
pub fn age(text: &str, now: OffsetDateTime) -> String {
    let Some(t) = parse_time(text) else {
        return "-".to_owned();
    };
    let secs = (now - t).whole_seconds().max(0);
    match secs {
        0..=9 => "just now".to_owned(),
        10..=59 => format!("{secs}s ago"),
        60..=3599 => format!("{}m ago", secs / 60),
        3600..=86_399 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

/// The first 7 characters of a commit SHA, as Git abbreviates it.
pub fn short_sha(sha: &str) -> String {
    sha.chars().take(7).collect()
}

/// The name part of `Name <email>`.
pub fn author_name(author: &str) -> String {
    author
        .split_once(" <")
        .map_or(author, |(name, _)| name)
        .trim()
        .to_owned()
}

/// `text` cut to `max` characters, with `…` when cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// Columns of the terminal: `COLUMNS` when set, else 100.
pub fn width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse::<usize>().ok())
        .filter(|c| *c >= 20)
        .unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_sizes_and_ages_read_naturally() {
        assert_eq!(duration_ms(1234), "1.2s");
        assert_eq!(duration_ms(65_000), "1m 05s");
        assert_eq!(duration_ms(7_380_000), "2h 03m");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 * 1024 * 1024 + 512 * 1024), "3.5 MiB");
        let now = parse_time("2024-05-01T12:00:00.000Z").expect("time");
        assert_eq!(age("2024-05-01T11:55:00.000Z", now), "5m ago");
        assert_eq!(age("2024-04-29T12:00:00Z", now), "2d ago");
        assert_eq!(age("2024-05-01T12:00:03Z", now), "just now");
        assert_eq!(age("garbage", now), "-");
    }

    #[test]
    fn shas_authors_and_long_text_are_shortened() {
        assert_eq!(short_sha("0123456789abcdef"), "0123456");
        assert_eq!(
            author_name("Ada Lovelace <ada@example.com>"),
            "Ada Lovelace"
        );
        assert_eq!(author_name("ci-bot"), "ci-bot");
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 4), "abc");
    }

    #[test]
    fn no_colour_unless_a_terminal() {
        let plain = Style::detect(false);
        assert!(!plain.color && !plain.live);
        assert_eq!(plain.paint(Color::Red, "x"), "x");
        let colour = Style {
            color: true,
            live: true,
        };
        assert_eq!(colour.paint(Color::Red, "x"), "\x1b[31mx\x1b[0m");
    }
}
