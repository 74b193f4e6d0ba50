//! Importing an archive as a snapshot: an oCore `.tar.zst` export or an Odoo backup zip.
//!
//! Archives come from outside, so extraction accepts only regular files and directories
//! whose names are plain relative paths: `..`, absolute names, links and devices are refused
//! and nothing is ever written outside the extraction directory. Every part is then checked
//! against its checksum before it joins the store.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;

use super::catalog::{self, check_id, SnapshotError};
use super::create::{meta_from, publish};
use super::disk;
use super::dump::{self, PgTools};
use super::errors::{fs_err, CorruptError, ErrorKind, FsError, PgError};
use super::filestore::{self, CaptureError, StatIndex};
use super::journal::{self, Marker};
use super::manifest::{
    safe_relative_path, DatabaseInfo, DumpInfo, FilestoreInfo, Imported, Manifest, SnapshotKind,
    Timings, MANIFEST_FORMAT,
};
use super::{
    blocking, temp_db_name, Ctx, Progress, SnapshotMeta, SnapshotProgress, Snapshots,
    UnknownInstance,
};

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    UnknownInstance(#[from] UnknownInstance),
    #[error("{0}")]
    InvalidId(String),
    #[error("snapshot {id} of instance {instance} already exists")]
    AlreadyExists { instance: String, id: String },
    #[error("archive {archive}: entry {entry:?} refused: {reason}")]
    UnsafeEntry {
        archive: PathBuf,
        entry: String,
        reason: &'static str,
    },
    #[error("archive {archive} is not a snapshot export or an Odoo backup: {message}")]
    BadArchive { archive: PathBuf, message: String },
    #[error("archive {archive} refused: {source}")]
    Corrupt {
        archive: PathBuf,
        source: CorruptError,
    },
    #[error("import of {archive}: {source}")]
    Fs { archive: PathBuf, source: FsError },
    #[error("import of {archive}: database: {source}")]
    Pg {
        archive: PathBuf,
        source: Box<PgError>,
    },
    #[error("import of {0} was cancelled")]
    Cancelled(PathBuf),
}

impl ImportError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::UnknownInstance(_) => ErrorKind::NotFound,
            Self::InvalidId(_) | Self::UnsafeEntry { .. } | Self::BadArchive { .. } => {
                ErrorKind::InvalidArgument
            }
            Self::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            Self::Corrupt { .. } => ErrorKind::Corrupt,
            Self::Fs { source, .. } => source.kind(),
            Self::Pg { source, .. } => source.kind(),
            Self::Cancelled(_) => ErrorKind::Cancelled,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    TarZst,
    Zip,
}

/// Why an archive entry name is refused, if it is.
pub fn check_entry_name(raw: &[u8]) -> Result<PathBuf, &'static str> {
    let name = std::str::from_utf8(raw).map_err(|_| "the name is not UTF-8")?;
    if name.starts_with('/') {
        return Err("absolute paths are not accepted");
    }
    let name = name.strip_prefix("./").unwrap_or(name);
    let name = name.strip_suffix('/').unwrap_or(name);
    if name.split('/').any(|c| c == "..") {
        return Err("'..' is not accepted");
    }
    safe_relative_path(name).map_err(|_| "the name is not a plain relative path")
}

impl Snapshots {
    /// Imports `archive` (an exported `.tar.zst` or an Odoo backup zip) as snapshot
    /// `snapshot_id` of the instance.
    pub async fn import(
        &self,
        instance_id: &str,
        snapshot_id: &str,
        archive: &Path,
        progress: Progress<'_>,
        cancel: &CancellationToken,
    ) -> Result<SnapshotMeta, ImportError> {
        let ctx = self.ctx(instance_id)?;
        check_id(snapshot_id).map_err(|e| ImportError::InvalidId(e.to_string()))?;
        let _live = ctx.locks.live.lock().await;
        let _store = ctx.locks.store.read().await;
        if ctx.snap_dir(snapshot_id).exists() {
            return Err(ImportError::AlreadyExists {
                instance: ctx.instance.clone(),
                id: snapshot_id.to_owned(),
            });
        }
        let work = ctx
            .tmp_dir()
            .join(format!("import-{snapshot_id}.{}", disk::unique_name()));
        let result = self
            .import_in(&ctx, snapshot_id, archive, &work, progress, cancel)
            .await;
        let c = ctx.clone();
        let failed = result.is_err();
        let cleanup = blocking(move || {
            disk::remove_all(&work)?;
            if failed {
                catalog::collect_garbage(&c)?;
            }
            Ok::<_, SnapshotError>(())
        })
        .await;
        if let Err(e) = cleanup {
            tracing::warn!("cleanup after an import: {e}");
        }
        result
    }

    async fn import_in(
        &self,
        ctx: &Ctx,
        id: &str,
        archive: &Path,
        work: &Path,
        progress: Progress<'_>,
        cancel: &CancellationToken,
    ) -> Result<SnapshotMeta, ImportError> {
        let fs = |source: FsError| ImportError::Fs {
            archive: archive.to_owned(),
            source,
        };
        let x = work.join("x");
        let snap = work.join("snap");
        disk::create_dir_all(&x).map_err(fs)?;
        disk::create_dir_all(&snap).map_err(fs)?;
        let format = detect(archive)?;
        progress(SnapshotProgress::Phase {
            phase: "extract",
            done: 0,
            total: 1,
        });
        let (a, xd) = (archive.to_owned(), x.clone());
        blocking(move || match format {
            Format::TarZst => extract_tar_zst(&a, &xd),
            Format::Zip => extract_zip(&a, &xd),
        })
        .await?;
        progress(SnapshotProgress::Phase {
            phase: "extract",
            done: 1,
            total: 1,
        });
        if cancel.is_cancelled() {
            return Err(ImportError::Cancelled(archive.to_owned()));
        }
        let manifest = match format {
            Format::TarZst => {
                self.import_export(ctx, id, archive, &x, &snap, cancel)
                    .await?
            }
            Format::Zip => {
                self.import_odoo(ctx, id, archive, &x, &snap, progress, cancel)
                    .await?
            }
        };
        let (c, s, m) = (ctx.clone(), snap.clone(), manifest.clone());
        blocking(move || {
            let dest = c
                .tmp_dir()
                .join(format!("{}.{}", m.id, disk::unique_name()));
            std::fs::rename(&s, &dest).map_err(fs_err("move", &s))?;
            publish(&c, &dest, &m, None)
        })
        .await
        .map_err(fs)?;
        progress(SnapshotProgress::Log(format!(
            "imported {} as snapshot {id} ({} files)",
            archive.display(),
            manifest.filestore.files.len()
        )));
        Ok(meta_from(&manifest, false))
    }

    /// An oCore export: its manifest, dump parts and files are checked, then stored.
    async fn import_export(
        &self,
        ctx: &Ctx,
        id: &str,
        archive: &Path,
        x: &Path,
        snap: &Path,
        cancel: &CancellationToken,
    ) -> Result<Manifest, ImportError> {
        let (c, a, xd, sd, id, cancel) = (
            ctx.clone(),
            archive.to_owned(),
            x.to_owned(),
            snap.to_owned(),
            id.to_owned(),
            cancel.clone(),
        );
        blocking(move || {
            let fs = |source: FsError| ImportError::Fs {
                archive: a.clone(),
                source,
            };
            let corrupt = |source: CorruptError| ImportError::Corrupt {
                archive: a.clone(),
                source,
            };
            let bad = |message: String| ImportError::BadArchive {
                archive: a.clone(),
                message,
            };
            let mut m = catalog::load_manifest(&xd).map_err(|e| match e {
                SnapshotError::BadManifest { message, .. } => bad(message),
                SnapshotError::Fs(e) => bad(format!("no readable manifest.json: {e}")),
                other => bad(other.to_string()),
            })?;
            catalog::verify_parts(&xd, &m).map_err(|e| match e {
                SnapshotError::Corrupt(c) => corrupt(c),
                other => bad(other.to_string()),
            })?;
            let (captured, _) =
                store_files(&c, &xd.join("filestore"), &cancel).map_err(|e| capture_err(e, &a))?;
            // Every file the manifest lists must be in the archive with that content.
            let got: std::collections::HashMap<&str, (&str, u64)> = captured
                .files
                .iter()
                .map(|f| (f.path.as_str(), (f.sha1.as_str(), f.size)))
                .collect();
            for f in &m.filestore.files {
                match got.get(f.path.as_str()) {
                    Some((sha1, size)) if *sha1 == f.sha1 && *size == f.size => {}
                    Some((sha1, _)) => {
                        return Err(corrupt(CorruptError {
                            path: xd.join("filestore").join(&f.path),
                            reason: format!("content sha1 is {sha1}, the manifest says {}", f.sha1),
                        }))
                    }
                    None => {
                        return Err(corrupt(CorruptError {
                            path: xd.join("filestore").join(&f.path),
                            reason: "listed in the manifest but missing".to_owned(),
                        }))
                    }
                }
            }
            std::fs::rename(xd.join("db"), sd.join("db"))
                .map_err(fs_err("move", &xd.join("db")))
                .map_err(fs)?;
            let dump_bytes: u64 = m.dump.parts.iter().map(|p| p.size).sum();
            // The id it had where it was taken, also through an export of an import.
            let original_id = m
                .imported
                .take()
                .and_then(|i| i.original_id)
                .unwrap_or_else(|| m.id.clone());
            m.imported = Some(Imported {
                at: time::OffsetDateTime::now_utc(),
                original_id: Some(original_id),
            });
            m.id = id;
            m.instance_id = c.instance.clone();
            m.filestore.new_blobs = captured.new_blob_ids.len() as u64;
            m.filestore.new_bytes = captured.new_bytes;
            m.filestore.new_stored_bytes = captured.new_stored_bytes;
            m.stored_bytes = dump_bytes + captured.new_stored_bytes;
            Ok(m)
        })
        .await
    }

    /// An Odoo backup: `dump.sql` goes through a temporary database to become a
    /// `pg_dump -Fd` dump like every other snapshot's; `filestore/` goes to the blob store.
    #[allow(clippy::too_many_arguments)]
    async fn import_odoo(
        &self,
        ctx: &Ctx,
        id: &str,
        archive: &Path,
        x: &Path,
        snap: &Path,
        progress: Progress<'_>,
        cancel: &CancellationToken,
    ) -> Result<Manifest, ImportError> {
        let pg = |source: PgError| ImportError::Pg {
            archive: archive.to_owned(),
            source: Box::new(source),
        };
        let fs = |source: FsError| ImportError::Fs {
            archive: archive.to_owned(),
            source,
        };
        let sql = x.join("dump.sql");
        if !sql.is_file() {
            return Err(ImportError::BadArchive {
                archive: archive.to_owned(),
                message: "it has no dump.sql".to_owned(),
            });
        }
        let (_, server_num) = dump::server_version(&self.pg).await.map_err(pg)?;
        let tools = PgTools::discover(
            ctx.settings.pg_bin_dir.as_deref(),
            server_num / 10000,
            cancel,
        )
        .await
        .map_err(pg)?;
        let tmp_db = temp_db_name();
        let marker = journal::write(
            &ctx.journal_dir(),
            &format!("import-{}", disk::unique_name()),
            &Marker::Import {
                tmp_db: tmp_db.clone(),
            },
        )
        .map_err(fs)?;
        let converted = async {
            progress(SnapshotProgress::Phase {
                phase: "database",
                done: 0,
                total: 2,
            });
            dump::create_default(&self.pg, &tmp_db).await?;
            dump::load_plain_sql(&self.pg, &tools, &sql, &tmp_db, cancel).await?;
            progress(SnapshotProgress::Phase {
                phase: "database",
                done: 1,
                total: 2,
            });
            let facts = dump::facts(&self.pg, &tmp_db).await?;
            dump::dump(
                &self.pg,
                &tools,
                &tmp_db,
                &snap.join("db"),
                ctx.settings.pg_dump_jobs,
                &mut || {},
                cancel,
            )
            .await?;
            Ok::<_, PgError>(facts)
        }
        .await;
        let dropped = dump::drop_if_exists(&self.pg, &tmp_db).await;
        let facts = converted.map_err(pg)?;
        dropped.map_err(pg)?;
        journal::remove(&marker).map_err(fs)?;
        progress(SnapshotProgress::Phase {
            phase: "database",
            done: 2,
            total: 2,
        });
        let (c, a, xd, sd, cancel2) = (
            ctx.clone(),
            archive.to_owned(),
            x.to_owned(),
            snap.to_owned(),
            cancel.clone(),
        );
        let (captured, parts) = blocking(move || {
            let (captured, warnings) =
                store_files(&c, &xd.join("filestore"), &cancel2).map_err(|e| capture_err(e, &a))?;
            for w in warnings {
                tracing::warn!("import {}: {w}", a.display());
            }
            let parts =
                super::create::dump_parts_of(&sd.join("db")).map_err(|source| ImportError::Fs {
                    archive: a.clone(),
                    source,
                })?;
            Ok::<_, ImportError>((captured, parts))
        })
        .await?;
        let dump_bytes: u64 = parts.iter().map(|p| p.size).sum();
        Ok(Manifest {
            format: MANIFEST_FORMAT,
            id: id.to_owned(),
            instance_id: ctx.instance.clone(),
            kind: SnapshotKind::Manual,
            created_at: time::OffsetDateTime::now_utc(),
            deployment_id: None,
            commit_sha: None,
            database: DatabaseInfo {
                name: ctx.database.clone(),
                server_version: facts.server_version,
                server_version_num: facts.server_version_num,
                size_bytes: facts.size_bytes,
                encoding: facts.encoding,
                collate: facts.collate,
                ctype: facts.ctype,
                owner: facts.owner,
            },
            modules: facts.modules,
            dump: DumpInfo {
                format: "directory".to_owned(),
                compression: tools.compression(),
                client_version: tools.version.clone(),
                with_owners: false,
                parts,
            },
            filestore: FilestoreInfo {
                files: captured.files,
                total_bytes: captured.total_bytes,
                new_blobs: captured.new_blob_ids.len() as u64,
                new_bytes: captured.new_bytes,
                new_stored_bytes: captured.new_stored_bytes,
            },
            stored_bytes: dump_bytes + captured.new_stored_bytes,
            estimated_bytes: 0,
            timings: Timings::default(),
            imported: Some(Imported {
                at: time::OffsetDateTime::now_utc(),
                original_id: None,
            }),
        })
    }
}

fn capture_err(e: CaptureError, archive: &Path) -> ImportError {
    match e {
        CaptureError::Fs(source) => ImportError::Fs {
            archive: archive.to_owned(),
            source,
        },
        CaptureError::Cancelled(_) => ImportError::Cancelled(archive.to_owned()),
    }
}

/// Stores every file below `dir` in the blob store, hashing each (no stat index applies).
fn store_files(
    ctx: &Ctx,
    dir: &Path,
    cancel: &CancellationToken,
) -> Result<(filestore::Captured, Vec<String>), CaptureError> {
    let scan = filestore::scan(dir)?;
    let known = ctx.blobs().list()?;
    let captured = filestore::capture(
        dir,
        scan,
        &StatIndex::default(),
        &ctx.blobs(),
        known,
        ctx.threads(),
        &|_, _| {},
        cancel,
    )?;
    let warnings = captured.warnings.clone();
    Ok((captured, warnings))
}

fn detect(archive: &Path) -> Result<Format, ImportError> {
    let mut magic = [0u8; 4];
    let mut f = File::open(archive).map_err(|e| ImportError::Fs {
        archive: archive.to_owned(),
        source: fs_err("open", archive)(e),
    })?;
    f.read_exact(&mut magic)
        .map_err(|_| ImportError::BadArchive {
            archive: archive.to_owned(),
            message: "it is shorter than 4 bytes".to_owned(),
        })?;
    match magic {
        [0x28, 0xb5, 0x2f, 0xfd] => Ok(Format::TarZst),
        [b'P', b'K', 3, 4] | [b'P', b'K', 5, 6] => Ok(Format::Zip),
        _ => Err(ImportError::BadArchive {
            archive: archive.to_owned(),
            message: "it is neither zstd nor zip".to_owned(),
        }),
    }
}

fn write_entry(
    archive: &Path,
    dest: &Path,
    rel: &Path,
    content: &mut dyn Read,
) -> Result<(), ImportError> {
    let fs = |source: FsError| ImportError::Fs {
        archive: archive.to_owned(),
        source,
    };
    let path = dest.join(rel);
    if let Some(parent) = path.parent() {
        disk::create_dir_all(parent).map_err(fs)?;
    }
    // create_new: a second entry with the same name cannot replace the first.
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(fs_err("create", &path))
        .map_err(fs)?;
    std::io::copy(content, &mut out)
        .map_err(fs_err("write", &path))
        .map_err(fs)?;
    Ok(())
}

fn extract_tar_zst(archive: &Path, dest: &Path) -> Result<(), ImportError> {
    let bad = |message: String| ImportError::BadArchive {
        archive: archive.to_owned(),
        message,
    };
    let f = File::open(archive).map_err(|e| ImportError::Fs {
        archive: archive.to_owned(),
        source: fs_err("open", archive)(e),
    })?;
    let dec = zstd::stream::read::Decoder::new(f).map_err(|e| bad(e.to_string()))?;
    let mut tar = tar::Archive::new(dec);
    for entry in tar.entries().map_err(|e| bad(e.to_string()))? {
        let mut entry = entry.map_err(|e| bad(e.to_string()))?;
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let refuse = |reason| ImportError::UnsafeEntry {
            archive: archive.to_owned(),
            entry: shown.clone(),
            reason,
        };
        let rel = check_entry_name(&raw).map_err(refuse)?;
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                write_entry(archive, dest, &rel, &mut entry)?
            }
            tar::EntryType::Directory => {
                disk::create_dir_all(&dest.join(&rel)).map_err(|source| ImportError::Fs {
                    archive: archive.to_owned(),
                    source,
                })?
            }
            tar::EntryType::Symlink | tar::EntryType::Link => {
                return Err(refuse("links are not accepted"))
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                return Err(refuse("devices and fifos are not accepted"))
            }
            _ => return Err(refuse("only regular files and directories are accepted")),
        }
    }
    Ok(())
}

fn extract_zip(archive: &Path, dest: &Path) -> Result<(), ImportError> {
    let bad = |message: String| ImportError::BadArchive {
        archive: archive.to_owned(),
        message,
    };
    let f = File::open(archive).map_err(|e| ImportError::Fs {
        archive: archive.to_owned(),
        source: fs_err("open", archive)(e),
    })?;
    let mut zip = zip::ZipArchive::new(f).map_err(|e| bad(e.to_string()))?;
    for i in 0..zip.len() {
        let mut file = zip.by_index(i).map_err(|e| bad(e.to_string()))?;
        let raw = file.name_raw().to_vec();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let refuse = |reason| ImportError::UnsafeEntry {
            archive: archive.to_owned(),
            entry: shown.clone(),
            reason,
        };
        let rel = check_entry_name(&raw).map_err(refuse)?;
        match file.unix_mode().map(|m| m & 0o170000) {
            None | Some(0) | Some(0o100000) | Some(0o040000) => {}
            Some(0o120000) => return Err(refuse("links are not accepted")),
            Some(_) => return Err(refuse("devices and fifos are not accepted")),
        }
        if file.is_dir() {
            disk::create_dir_all(&dest.join(&rel)).map_err(|source| ImportError::Fs {
                archive: archive.to_owned(),
                source,
            })?;
        } else {
            write_entry(archive, dest, &rel, &mut file)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names_are_checked() {
        for good in [
            "manifest.json",
            "./db/toc.dat",
            "filestore/ab/cd",
            "filestore/",
        ] {
            assert!(check_entry_name(good.as_bytes()).is_ok(), "{good}");
        }
        assert_eq!(
            check_entry_name(b"/etc/passwd"),
            Err("absolute paths are not accepted")
        );
        assert_eq!(check_entry_name(b"../x"), Err("'..' is not accepted"));
        assert_eq!(check_entry_name(b"a/../../x"), Err("'..' is not accepted"));
        assert!(check_entry_name(b"a\\..\\x").is_err());
        assert!(check_entry_name(b"a//b").is_err());
        assert!(check_entry_name(&[0xff, 0xfe]).is_err());
    }
}
