//! Portable exports of a snapshot: one `.tar.zst` (manifest, dump directory, filestore) that
//! `import` takes back, and Odoo's own backup zip (`dump.sql`, `filestore/`,
//! `manifest.json`) that Odoo's database manager restores. Blobs are verified as they are
//! written; the file appears at its destination only when complete.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::blobs::BlobError;
use super::catalog::{self, SnapshotError};
use super::disk;
use super::dump::{self, PgTools};
use super::errors::{fs_err, CorruptError, ErrorKind, FsError, PgError};
use super::manifest::{safe_relative_path, Manifest};
use super::{blocking, Ctx, Snapshots, UnknownInstance};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// `.tar.zst`: `manifest.json`, `db/…` (the `pg_dump -Fd` directory), `filestore/…`.
    TarZst,
    /// Odoo's backup zip: `dump.sql` (plain SQL), `filestore/…`, `manifest.json`.
    OdooZip,
}

impl ExportFormat {
    pub fn extension(self) -> &'static str {
        match self {
            ExportFormat::TarZst => "tar.zst",
            ExportFormat::OdooZip => "zip",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exported {
    pub path: PathBuf,
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    UnknownInstance(#[from] UnknownInstance),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("export refused: {0}")]
    Corrupt(#[from] CorruptError),
    #[error("export to {path}: {source}")]
    Write { path: PathBuf, source: FsError },
    #[error("export: converting the dump to SQL: {0}")]
    Pg(#[from] PgError),
    #[error("export to {0} was cancelled")]
    Cancelled(PathBuf),
}

impl ExportError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::UnknownInstance(_) => ErrorKind::NotFound,
            Self::Snapshot(e) => e.kind(),
            Self::Corrupt(_) => ErrorKind::Corrupt,
            Self::Write { source, .. } => source.kind(),
            Self::Pg(e) => e.kind(),
            Self::Cancelled(_) => ErrorKind::Cancelled,
        }
    }
}

/// The fields Odoo writes in its backup's `manifest.json` (`odoo.service.db.dump_db_manifest`).
#[derive(Debug, Serialize)]
pub struct OdooManifest {
    pub odoo_dump: String,
    pub db_name: String,
    pub version: String,
    pub version_info: (u32, u32, u32, String, u32, String),
    pub major_version: String,
    pub pg_version: String,
    pub modules: BTreeMap<String, Option<String>>,
}

impl OdooManifest {
    pub fn from_manifest(m: &Manifest) -> Self {
        // Odoo's release is the first two parts of `base`'s version (`17.0.1.3` → `17.0`).
        let base = m.modules.get("base").cloned().flatten().unwrap_or_default();
        let mut parts = base.split('.').map(|p| p.parse::<u32>().ok());
        let major = parts.next().flatten().unwrap_or(0);
        let minor = parts.next().flatten().unwrap_or(0);
        let series = format!("{major}.{minor}");
        let n = m.database.server_version_num;
        OdooManifest {
            odoo_dump: "1".to_owned(),
            db_name: m.database.name.clone(),
            version: series.clone(),
            version_info: (major, minor, 0, "final".to_owned(), 0, String::new()),
            major_version: series,
            // Odoo's own formula: "%d.%d" % divmod(server_version / 100, 100).
            pg_version: format!("{}.{}", n / 10000, (n / 100) % 100),
            modules: m.modules.clone(),
        }
    }
}

impl Snapshots {
    /// Writes snapshot `snapshot_id` to `dest` in `format`.
    pub async fn export(
        &self,
        instance_id: &str,
        snapshot_id: &str,
        format: ExportFormat,
        dest: &Path,
        cancel: &CancellationToken,
    ) -> Result<Exported, ExportError> {
        let ctx = self.ctx(instance_id)?;
        let _store = ctx.locks.store.read().await;
        let (c, id) = (ctx.clone(), snapshot_id.to_owned());
        let manifest = blocking(move || catalog::published_manifest(&c, &id)).await?;
        let partial = partial_path(dest);
        let write_err = |source| ExportError::Write {
            path: dest.to_owned(),
            source,
        };
        let result = match format {
            ExportFormat::TarZst => {
                let (c, m, p) = (ctx.clone(), manifest.clone(), partial.clone());
                let cancel = cancel.clone();
                blocking(move || write_tar_zst(&c, &m, &p, &cancel)).await
            }
            ExportFormat::OdooZip => self.write_odoo_zip(&ctx, &manifest, &partial, cancel).await,
        };
        let result = result.and_then(|()| {
            std::fs::rename(&partial, dest)
                .map_err(fs_err("move into place", dest))
                .map_err(write_err)
        });
        if let Err(e) = result {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
        let bytes = std::fs::metadata(dest)
            .map(|m| m.len())
            .map_err(fs_err("stat", dest))
            .map_err(write_err)?;
        Ok(Exported {
            path: dest.to_owned(),
            bytes,
        })
    }

    /// A directory for temporary export files of the instance (inside its store).
    pub fn export_dir(&self, instance_id: &str) -> Result<PathBuf, UnknownInstance> {
        Ok(self.ctx(instance_id)?.tmp_dir())
    }

    async fn write_odoo_zip(
        &self,
        ctx: &Ctx,
        m: &Manifest,
        partial: &Path,
        cancel: &CancellationToken,
    ) -> Result<(), ExportError> {
        let verify = {
            let (c, m) = (ctx.clone(), m.clone());
            blocking(move || catalog::verify_parts(&c.snap_dir(&m.id), &m)).await
        };
        verify.map_err(|e| match e {
            SnapshotError::Corrupt(c) => ExportError::Corrupt(c),
            other => other.into(),
        })?;
        let tools = PgTools::discover(
            ctx.settings.pg_bin_dir.as_deref(),
            m.database.server_version_num / 10000,
            cancel,
        )
        .await?;
        let sql = partial.with_extension("sql.tmp");
        let converted =
            dump::to_plain_sql(&tools, &ctx.snap_dir(&m.id).join("db"), &sql, cancel).await;
        if let Err(e) = converted {
            let _ = std::fs::remove_file(&sql);
            return Err(e.into());
        }
        let (c, m2, p, s) = (ctx.clone(), m.clone(), partial.to_owned(), sql.clone());
        let cancel = cancel.clone();
        let r = blocking(move || write_zip(&c, &m2, &p, &s, &cancel)).await;
        let _ = std::fs::remove_file(&sql);
        r
    }
}

fn partial_path(dest: &Path) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dest.with_file_name(format!(".{name}.partial"))
}

fn blob_err(e: BlobError, dest: &Path) -> ExportError {
    match e {
        BlobError::Corrupt(c) => ExportError::Corrupt(c),
        BlobError::Fs(source) => ExportError::Write {
            path: dest.to_owned(),
            source,
        },
    }
}

fn write_tar_zst(
    ctx: &Ctx,
    m: &Manifest,
    dest: &Path,
    cancel: &CancellationToken,
) -> Result<(), ExportError> {
    let w = |source: FsError| ExportError::Write {
        path: dest.to_owned(),
        source,
    };
    let io = |e: std::io::Error| w(fs_err("write", dest)(e));
    let snap = ctx.snap_dir(&m.id);
    catalog::verify_parts(&snap, m).map_err(|e| match e {
        SnapshotError::Corrupt(c) => ExportError::Corrupt(c),
        other => other.into(),
    })?;
    let file = File::create(dest)
        .map_err(fs_err("create", dest))
        .map_err(w)?;
    let mut enc = zstd::stream::write::Encoder::new(BufWriter::new(file), 3).map_err(io)?;
    enc.multithread(ctx.threads() as u32).map_err(io)?;
    let mut tar = tar::Builder::new(enc);
    let mtime = m.created_at.unix_timestamp().max(0) as u64;
    let header = |size: u64| {
        let mut h = tar::Header::new_gnu();
        h.set_size(size);
        h.set_mode(0o644);
        h.set_mtime(mtime);
        h.set_entry_type(tar::EntryType::Regular);
        h
    };
    let manifest = snap.join("manifest.json");
    let bytes = std::fs::read(&manifest)
        .map_err(fs_err("read", &manifest))
        .map_err(w)?;
    tar.append_data(&mut header(bytes.len() as u64), "manifest.json", &bytes[..])
        .map_err(io)?;
    for part in &m.dump.parts {
        let path = snap.join(safe_relative_path(&part.path).map_err(|e| {
            w(FsError {
                action: "use",
                path: snap.join(&part.path),
                source: std::io::Error::other(e),
            })
        })?);
        let f = File::open(&path)
            .map_err(fs_err("open", &path))
            .map_err(w)?;
        tar.append_data(&mut header(part.size), &part.path, f)
            .map_err(io)?;
    }
    let store = ctx.blobs();
    for f in &m.filestore.files {
        if cancel.is_cancelled() {
            return Err(ExportError::Cancelled(dest.to_owned()));
        }
        let mut reader = store.open(&f.sha1, f.size).map_err(|e| blob_err(e, dest))?;
        let name = format!("filestore/{}", f.path);
        if let Err(e) = tar.append_data(&mut header(f.size), &name, &mut reader) {
            return Err(blob_err(reader.failure(e), dest));
        }
    }
    let enc = tar.into_inner().map_err(io)?;
    let mut out = enc.finish().map_err(io)?;
    out.flush().map_err(io)?;
    out.into_inner()
        .map_err(|e| io(e.into_error()))?
        .sync_all()
        .map_err(io)?;
    Ok(())
}

fn write_zip(
    ctx: &Ctx,
    m: &Manifest,
    dest: &Path,
    sql: &Path,
    cancel: &CancellationToken,
) -> Result<(), ExportError> {
    use zip::write::SimpleFileOptions;
    let w = |source: FsError| ExportError::Write {
        path: dest.to_owned(),
        source,
    };
    let io = |e: std::io::Error| w(fs_err("write", dest)(e));
    let zerr = |e: zip::result::ZipError| io(std::io::Error::other(e));
    let file = File::create(dest)
        .map_err(fs_err("create", dest))
        .map_err(w)?;
    let mut zip = zip::ZipWriter::new(BufWriter::new(file));
    let opts = |size: u64| {
        SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .compression_level(Some(1))
            .unix_permissions(0o644)
            .large_file(size >= u64::from(u32::MAX))
    };
    let odoo = serde_json::to_vec_pretty(&OdooManifest::from_manifest(m))
        .map_err(|e| io(std::io::Error::other(e)))?;
    zip.start_file("manifest.json", opts(odoo.len() as u64))
        .map_err(zerr)?;
    zip.write_all(&odoo).map_err(io)?;
    let sql_len = std::fs::metadata(sql)
        .map_err(fs_err("stat", sql))
        .map_err(w)?
        .len();
    zip.start_file("dump.sql", opts(sql_len)).map_err(zerr)?;
    let mut f = File::open(sql).map_err(fs_err("open", sql)).map_err(w)?;
    std::io::copy(&mut f, &mut zip).map_err(io)?;
    let store = ctx.blobs();
    for f in &m.filestore.files {
        if cancel.is_cancelled() {
            return Err(ExportError::Cancelled(dest.to_owned()));
        }
        zip.start_file(format!("filestore/{}", f.path), opts(f.size))
            .map_err(zerr)?;
        let mut reader = store.open(&f.sha1, f.size).map_err(|e| blob_err(e, dest))?;
        if let Err(e) = std::io::copy(&mut reader, &mut zip) {
            return Err(blob_err(reader.failure(e), dest));
        }
    }
    let mut out = zip.finish().map_err(zerr)?;
    out.flush().map_err(io)?;
    out.into_inner()
        .map_err(|e| io(e.into_error()))?
        .sync_all()
        .map_err(io)?;
    let _ = disk::fsync_dir(dest.parent().unwrap_or(Path::new(".")));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odoo_manifest_has_odoos_fields() {
        let mut m = crate::snapshot::manifest::tests::sample();
        m.database.server_version_num = 150018;
        let o = OdooManifest::from_manifest(&m);
        let v = serde_json::to_value(&o).expect("json");
        assert_eq!(v["odoo_dump"], "1");
        assert_eq!(v["db_name"], "shop");
        assert_eq!(v["version"], "17.0");
        assert_eq!(v["major_version"], "17.0");
        assert_eq!(v["pg_version"], "15.0");
        assert_eq!(
            v["version_info"],
            serde_json::json!([17, 0, 0, "final", 0, ""])
        );
        assert_eq!(v["modules"]["base"], "17.0.1.3");
        m.database.server_version_num = 90624;
        assert_eq!(OdooManifest::from_manifest(&m).pg_version, "9.6");
    }
}
