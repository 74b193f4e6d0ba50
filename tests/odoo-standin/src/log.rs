//! Logging to stderr in Odoo's format: `<date> <time>,<ms> <pid> <LEVEL> <db> <logger>: <message>`.
//!
//! Odoo writes `?` in place of the database when a line belongs to no database; tests and oCore
//! read these lines, so the layout follows `odoo.netsvc` exactly.

use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Severity of a log line, ordered from the most verbose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug = 10,
    Info = 20,
    Warning = 30,
    Error = 40,
    Critical = 50,
}

impl Level {
    fn name(self) -> &'static str {
        match self {
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warning => "WARNING",
            Level::Error => "ERROR",
            Level::Critical => "CRITICAL",
        }
    }

    /// Maps a value of Odoo's `--log-level` option to the level it enables.
    pub fn from_odoo_option(value: &str) -> Option<Level> {
        match value {
            "debug" | "debug_rpc" | "debug_sql" | "debug_rpc_answer" | "notset" => {
                Some(Level::Debug)
            }
            "info" | "test" | "runbot" => Some(Level::Info),
            "warn" => Some(Level::Warning),
            "error" => Some(Level::Error),
            "critical" => Some(Level::Critical),
            _ => None,
        }
    }
}

static THRESHOLD: AtomicU8 = AtomicU8::new(Level::Info as u8);

/// Sets the lowest level that is written.
pub fn set_level(level: Level) {
    THRESHOLD.store(level as u8, Ordering::Relaxed);
}

/// Writes one line (or several, for tracebacks) in Odoo's format.
pub fn write(level: Level, db: Option<&str>, logger: &str, message: &str) {
    if (level as u8) < THRESHOLD.load(Ordering::Relaxed) {
        return;
    }
    let line = format_line(
        SystemTime::now(),
        std::process::id(),
        level,
        db,
        logger,
        message,
    );
    // A failed write to stderr has nowhere better to be reported.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

pub fn debug(db: Option<&str>, logger: &str, message: &str) {
    write(Level::Debug, db, logger, message);
}

pub fn info(db: Option<&str>, logger: &str, message: &str) {
    write(Level::Info, db, logger, message);
}

pub fn warning(db: Option<&str>, logger: &str, message: &str) {
    write(Level::Warning, db, logger, message);
}

pub fn error(db: Option<&str>, logger: &str, message: &str) {
    write(Level::Error, db, logger, message);
}

pub fn critical(db: Option<&str>, logger: &str, message: &str) {
    write(Level::Critical, db, logger, message);
}

fn format_line(
    now: SystemTime,
    pid: u32,
    level: Level,
    db: Option<&str>,
    logger: &str,
    message: &str,
) -> String {
    format!(
        "{} {} {} {} {}: {}\n",
        timestamp(now),
        pid,
        level.name(),
        db.unwrap_or("?"),
        logger,
        message
    )
}

/// Formats a time as Odoo's log does (`2026-11-27 13:12:10,123`), in UTC as containers run.
pub fn timestamp(now: SystemTime) -> String {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02},{:03}",
        year,
        month,
        day,
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// Converts days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_lines_like_odoo() {
        let at = UNIX_EPOCH + Duration::from_millis(1_795_785_130_123);
        let line = format_line(
            at,
            42,
            Level::Info,
            Some("testdb"),
            "odoo.modules.loading",
            "Modules loaded.",
        );
        assert_eq!(
            line,
            "2026-11-27 13:12:10,123 42 INFO testdb odoo.modules.loading: Modules loaded.\n"
        );
        let line = format_line(at, 7, Level::Warning, None, "odoo", "x");
        assert_eq!(line, "2026-11-27 13:12:10,123 7 WARNING ? odoo: x\n");
    }

    #[test]
    fn converts_dates_around_leap_years() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn maps_odoo_log_level_choices() {
        assert_eq!(Level::from_odoo_option("warn"), Some(Level::Warning));
        assert_eq!(Level::from_odoo_option("debug_sql"), Some(Level::Debug));
        assert_eq!(Level::from_odoo_option("loud"), None);
    }
}
