//! The snapshot manifest (`manifest.json`): what a snapshot holds and the checksums that
//! prove it, plus the small summary (`meta.json`) that listing reads instead.
//!
//! A manifest can come from an imported archive, so loading one validates every name in it
//! before any of them is used in a path.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Version of the manifest layout written by this agent.
pub const MANIFEST_FORMAT: u32 = 1;

/// Why a snapshot was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SnapshotKind {
    PreDeploy,
    Manual,
    Scheduled,
}

impl SnapshotKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotKind::PreDeploy => "pre-deploy",
            SnapshotKind::Manual => "manual",
            SnapshotKind::Scheduled => "scheduled",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub format: u32,
    pub id: String,
    pub instance_id: String,
    pub kind: SnapshotKind,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub deployment_id: Option<String>,
    pub commit_sha: Option<String>,
    pub database: DatabaseInfo,
    /// Installed modules and their `latest_version`, from `ir_module_module`.
    pub modules: BTreeMap<String, Option<String>>,
    pub dump: DumpInfo,
    pub filestore: FilestoreInfo,
    /// Bytes this snapshot added to the store: its dump plus the blobs it stored first.
    pub stored_bytes: u64,
    /// What the estimate said before the snapshot started.
    pub estimated_bytes: u64,
    pub timings: Timings,
    /// Set when the snapshot came from an archive rather than from this instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imported: Option<Imported>,
}

/// Where an imported snapshot came from. The coordinator uses it to tell a snapshot of
/// this environment (whose image it knows) from one taken elsewhere.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Imported {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// The id the snapshot had where it was first taken (an oCore export's manifest id,
    /// kept through re-imports); `None` for an Odoo backup zip.
    pub original_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DatabaseInfo {
    pub name: String,
    pub server_version: String,
    pub server_version_num: u32,
    /// `pg_database_size` when the snapshot was taken.
    pub size_bytes: u64,
    pub encoding: String,
    pub collate: String,
    pub ctype: String,
    pub owner: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DumpInfo {
    /// Always `directory` (`pg_dump -Fd`).
    pub format: String,
    /// The `--compress` argument used, e.g. `zstd` or `gzip:1`.
    pub compression: String,
    pub client_version: String,
    /// False for dumps made without owners (imported Odoo backups): restores then create
    /// every object as the database owner.
    #[serde(default = "yes")]
    pub with_owners: bool,
    /// Every file of the dump directory, relative to the snapshot (`db/...`).
    pub parts: Vec<Part>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Part {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct FilestoreInfo {
    /// Every file of `filestore/<db>`, sorted by path. Each names the blob holding it.
    pub files: Vec<FileEntry>,
    pub total_bytes: u64,
    /// Blobs this snapshot stored first, their content bytes and their compressed bytes.
    pub new_blobs: u64,
    pub new_bytes: u64,
    pub new_stored_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileEntry {
    /// Relative to `filestore/<db>`, '/'-separated.
    pub path: String,
    /// The content's sha1 (lower-case hex): the address of its blob.
    pub sha1: String,
    pub size: u64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Default)]
pub struct Timings {
    pub database_ms: u64,
    pub filestore_ms: u64,
    pub total_ms: u64,
}

/// The summary kept beside the manifest; listing reads only these.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    pub id: String,
    pub instance_id: String,
    pub kind: SnapshotKind,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub deployment_id: Option<String>,
    pub commit_sha: Option<String>,
    pub database: String,
    pub stored_bytes: u64,
    pub estimated_bytes: u64,
    pub file_count: u64,
    pub filestore_bytes: u64,
    /// What estimates learn from: database size vs dump bytes, new content vs stored bytes.
    #[serde(default)]
    pub database_size: u64,
    #[serde(default)]
    pub dump_bytes: u64,
    #[serde(default)]
    pub new_bytes: u64,
    #[serde(default)]
    pub new_stored_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imported: Option<Imported>,
}

impl Manifest {
    pub fn summary(&self) -> Summary {
        Summary {
            id: self.id.clone(),
            instance_id: self.instance_id.clone(),
            kind: self.kind,
            created_at: self.created_at,
            deployment_id: self.deployment_id.clone(),
            commit_sha: self.commit_sha.clone(),
            database: self.database.name.clone(),
            stored_bytes: self.stored_bytes,
            estimated_bytes: self.estimated_bytes,
            file_count: self.filestore.files.len() as u64,
            filestore_bytes: self.filestore.total_bytes,
            database_size: self.database.size_bytes,
            dump_bytes: self.dump.parts.iter().map(|p| p.size).sum(),
            new_bytes: self.filestore.new_bytes,
            new_stored_bytes: self.filestore.new_stored_bytes,
            imported: self.imported.clone(),
        }
    }

    /// Checks every name and checksum format, so that paths built from this manifest stay
    /// inside their directories. Returns the first problem.
    pub fn validate(&self) -> Result<(), String> {
        if self.format != MANIFEST_FORMAT {
            return Err(format!(
                "manifest format {} is not supported (this agent reads format {MANIFEST_FORMAT})",
                self.format
            ));
        }
        validate_snapshot_id(&self.id)?;
        if let Some(original) = self.imported.as_ref().and_then(|i| i.original_id.as_ref()) {
            validate_snapshot_id(original)?;
        }
        if self.dump.format != "directory" {
            return Err(format!(
                "dump format {:?} is not supported",
                self.dump.format
            ));
        }
        let mut seen = BTreeSet::new();
        if !self.dump.parts.iter().any(|p| p.path == "db/toc.dat") {
            return Err("the dump has no db/toc.dat".to_owned());
        }
        for part in &self.dump.parts {
            let rel = safe_relative_path(&part.path)?;
            if !rel.starts_with("db") || rel.components().count() != 2 {
                return Err(format!("dump part {:?} is not a file of db/", part.path));
            }
            if !is_hex(&part.sha256, 64) {
                return Err(format!("dump part {:?} has no valid sha256", part.path));
            }
            if !seen.insert(part.path.as_str()) {
                return Err(format!("dump part {:?} is listed twice", part.path));
            }
        }
        let mut seen = BTreeSet::new();
        for file in &self.filestore.files {
            safe_relative_path(&file.path)?;
            if !is_hex(&file.sha1, 40) {
                return Err(format!("filestore file {:?} has no valid sha1", file.path));
            }
            if !seen.insert(file.path.as_str()) {
                return Err(format!("filestore file {:?} is listed twice", file.path));
            }
        }
        for (what, value) in [
            ("encoding", &self.database.encoding),
            ("collation", &self.database.collate),
            ("ctype", &self.database.ctype),
        ] {
            if !is_locale_name(value) {
                return Err(format!("database {what} {value:?} is not a plain name"));
            }
        }
        Ok(())
    }

    /// Every distinct blob the manifest references.
    pub fn blob_ids(&self) -> impl Iterator<Item = &str> {
        self.filestore.files.iter().map(|f| f.sha1.as_str())
    }
}

/// Snapshot ids come from the coordinator and become directory names.
pub fn validate_snapshot_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "snapshot id {:?} must be 1-64 characters of A-Z, a-z, 0-9 and '-'",
            id.chars().take(80).collect::<String>()
        ))
    }
}

/// A relative path that stays below the directory it is joined to: only normal components,
/// no `..`, no root, no empty or `.` components, no NUL or backslash.
pub fn safe_relative_path(path: &str) -> Result<PathBuf, String> {
    let bad = || format!("path {:?} is not a plain relative path", truncate(path));
    if path.is_empty() || path.len() > 4096 || path.contains(['\0', '\\']) {
        return Err(bad());
    }
    if path
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(bad());
    }
    let rel = PathBuf::from(path);
    if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(bad());
    }
    Ok(rel)
}

/// The '/'-separated form of a relative path found on disk, if it is plain UTF-8.
pub fn path_to_manifest(rel: &Path) -> Option<String> {
    let mut out = String::new();
    for c in rel.components() {
        match c {
            Component::Normal(s) => {
                if !out.is_empty() {
                    out.push('/');
                }
                out.push_str(s.to_str()?);
            }
            _ => return None,
        }
    }
    safe_relative_path(&out).ok().map(|_| out)
}

pub fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn is_locale_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'@'))
}

fn yes() -> bool {
    true
}

fn truncate(s: &str) -> String {
    s.chars().take(120).collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> Manifest {
        Manifest {
            format: MANIFEST_FORMAT,
            id: "snap-1".into(),
            instance_id: "shop".into(),
            kind: SnapshotKind::PreDeploy,
            created_at: time::macros::datetime!(2025-01-02 03:04:05 UTC),
            deployment_id: Some("dep-1".into()),
            commit_sha: Some("abc123".into()),
            database: DatabaseInfo {
                name: "shop".into(),
                server_version: "15.18".into(),
                server_version_num: 150018,
                size_bytes: 1000,
                encoding: "UTF8".into(),
                collate: "C.UTF-8".into(),
                ctype: "C.UTF-8".into(),
                owner: "odoo".into(),
            },
            modules: BTreeMap::from([("base".to_owned(), Some("17.0.1.3".to_owned()))]),
            dump: DumpInfo {
                format: "directory".into(),
                compression: "gzip:1".into(),
                client_version: "15.18".into(),
                with_owners: true,
                parts: vec![Part {
                    path: "db/toc.dat".into(),
                    size: 10,
                    sha256: "a".repeat(64),
                }],
            },
            filestore: FilestoreInfo {
                files: vec![FileEntry {
                    path: "ab/ab12".into(),
                    sha1: "b".repeat(40),
                    size: 3,
                }],
                total_bytes: 3,
                new_blobs: 1,
                new_bytes: 3,
                new_stored_bytes: 12,
            },
            stored_bytes: 22,
            estimated_bytes: 30,
            timings: Timings::default(),
            imported: None,
        }
    }

    #[test]
    fn manifest_round_trips_through_json() {
        let m = sample();
        let text = serde_json::to_string_pretty(&m).expect("serialises");
        assert!(text.contains("\"kind\": \"pre-deploy\""), "{text}");
        assert!(
            text.contains("\"created_at\": \"2025-01-02T03:04:05Z\""),
            "{text}"
        );
        let back: Manifest = serde_json::from_str(&text).expect("parses");
        assert_eq!(back, m);
        assert!(back.validate().is_ok());
        assert_eq!(back.summary().file_count, 1);
        // A snapshot taken here writes no import facts, so older agents read it unchanged.
        assert!(!text.contains("imported"), "{text}");
        let mut imported = sample();
        imported.imported = Some(Imported {
            at: time::macros::datetime!(2025-02-01 00:00 UTC),
            original_id: Some("snap-0".into()),
        });
        let text = serde_json::to_string(&imported).expect("serialises");
        let back: Manifest = serde_json::from_str(&text).expect("parses");
        assert_eq!(back.summary().imported, imported.imported);
    }

    #[test]
    fn validation_refuses_hostile_names() {
        let mut m = sample();
        m.filestore.files[0].path = "../../etc/passwd".into();
        assert!(m.validate().is_err());
        let mut m = sample();
        m.dump.parts[0].path = "db/../../x".into();
        assert!(m.validate().is_err());
        let mut m = sample();
        m.dump.parts.push(Part {
            path: "manifest.json".into(),
            size: 1,
            sha256: "c".repeat(64),
        });
        assert!(m.validate().is_err());
        let mut m = sample();
        m.id = "../x".into();
        assert!(m.validate().is_err());
        let mut m = sample();
        m.imported = Some(Imported {
            at: time::macros::datetime!(2025-02-01 00:00 UTC),
            original_id: Some("../../x".into()),
        });
        assert!(m.validate().is_err());
        let mut m = sample();
        m.filestore.files[0].sha1 = "XYZ".into();
        assert!(m.validate().is_err());
        let mut m = sample();
        m.database.collate = "C'; DROP".into();
        assert!(m.validate().is_err());
        let mut m = sample();
        m.filestore.files.push(m.filestore.files[0].clone());
        assert!(m.validate().is_err());
    }

    #[test]
    fn relative_paths_are_checked() {
        for good in ["a", "ab/abcdef", "checklist/ab/cd", "a.b-c_d/e"] {
            assert!(safe_relative_path(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a//b",
            "./a",
            "a/.",
            "a\\b",
            "a\0b",
            "a/",
        ] {
            assert!(safe_relative_path(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            path_to_manifest(Path::new("ab/cdef")).as_deref(),
            Some("ab/cdef")
        );
        assert_eq!(path_to_manifest(Path::new("/abs")), None);
    }

    #[test]
    fn snapshot_ids_are_checked() {
        assert!(validate_snapshot_id("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b").is_ok());
        for bad in ["", "a/b", "..", "a b", "a_b", &"x".repeat(65)] {
            assert!(validate_snapshot_id(bad).is_err(), "{bad:?}");
        }
    }
}
