//! The errors every snapshot operation shares, and the one classification the gRPC edge
//! turns into status codes.

use std::path::{Path, PathBuf};

use crate::db::DbError;
use crate::exec::ExecError;

/// What kind of failure an error is, for callers that map errors to protocol codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    NotFound,
    InvalidArgument,
    AlreadyExists,
    NoSpace,
    Corrupt,
    Cancelled,
    Busy,
    /// The host is not in the state the operation needs (its database does not exist).
    Precondition,
    Internal,
}

/// A filesystem call that failed, with the path it was about.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {path}: {source}")]
pub struct FsError {
    pub action: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl FsError {
    pub fn kind(&self) -> ErrorKind {
        if self.source.raw_os_error() == Some(nix::libc::ENOSPC)
            || self.source.kind() == std::io::ErrorKind::StorageFull
        {
            ErrorKind::NoSpace
        } else {
            ErrorKind::Internal
        }
    }
}

/// Builds the `map_err` closure for a filesystem call on `path`.
pub fn fs_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> FsError {
    let path = path.to_owned();
    move |source| FsError {
        action,
        path,
        source,
    }
}

/// A stored file whose content does not match its checksum.
#[derive(Debug, thiserror::Error)]
#[error("{path} is corrupt: {reason}")]
pub struct CorruptError {
    pub path: PathBuf,
    pub reason: String,
}

/// Free space below what an operation needs; says how much of each.
#[derive(Debug, thiserror::Error)]
#[error("not enough free disk for {what} on {path}: needs {} (estimate {} plus a reserve of {}), {} free", fmt_bytes(.estimate + .reserve), fmt_bytes(*.estimate), fmt_bytes(*.reserve), fmt_bytes(*.free))]
pub struct NotEnoughSpace {
    pub what: String,
    pub path: PathBuf,
    pub estimate: u64,
    pub reserve: u64,
    pub free: u64,
}

/// The PostgreSQL side of an operation: SQL through `crate::db` or a client tool.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error("database {database}: {message}")]
    State { database: String, message: String },
    #[error("no usable PostgreSQL client: {0}")]
    Client(String),
}

impl PgError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            PgError::Exec(ExecError::Cancelled { .. }) => ErrorKind::Cancelled,
            PgError::State { .. } => ErrorKind::Precondition,
            // The database is being swapped (a restore): a conflict with its state, for now.
            PgError::Db(e) if e.is_transient() => ErrorKind::Busy,
            _ => ErrorKind::Internal,
        }
    }
}

pub fn query_err(database: &str) -> impl FnOnce(tokio_postgres::Error) -> PgError {
    let database = database.to_owned();
    move |source| PgError::Db(DbError::Query { database, source })
}

/// Bytes for people: `512 B`, `3.2 MiB`.
pub fn fmt_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_well_and_space_errors_give_numbers() {
        assert_eq!(fmt_bytes(512), "512 B");
        assert_eq!(fmt_bytes(1536), "1.5 KiB");
        assert_eq!(fmt_bytes(5 * 1024 * 1024 * 1024), "5.0 GiB");
        let e = NotEnoughSpace {
            what: "snapshot abc".into(),
            path: "/var/lib/x".into(),
            estimate: 2048,
            reserve: 1024,
            free: 100,
        };
        assert_eq!(
            e.to_string(),
            "not enough free disk for snapshot abc on /var/lib/x: needs 3.0 KiB (estimate 2.0 KiB plus a reserve of 1.0 KiB), 100 B free"
        );
    }

    #[test]
    fn a_missing_database_is_a_precondition_not_an_internal_error() {
        let e = PgError::State {
            database: "shop".into(),
            message: "does not exist".into(),
        };
        assert_eq!(e.kind(), ErrorKind::Precondition);
    }

    #[test]
    fn enospc_is_classified() {
        let e = FsError {
            action: "write",
            path: "/x".into(),
            source: std::io::Error::from_raw_os_error(nix::libc::ENOSPC),
        };
        assert_eq!(e.kind(), ErrorKind::NoSpace);
        assert!(e.to_string().starts_with("cannot write /x: "), "{e}");
    }
}
