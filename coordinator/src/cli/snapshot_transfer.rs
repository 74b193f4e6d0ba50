//! `ocore snapshot export` and `ocore snapshot import`: a snapshot as one archive file, to
//! keep or to take to another host. The download is written to a temporary file beside the
//! destination, synced, and renamed into place, so the file is complete or absent; its
//! SHA-256 is reported. Progress is drawn on a terminal (stderr).

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::client::ApiClient;
use super::mapping::encode;
use super::output::{self, field};
use super::snapshot::SnapshotRef;
use super::term::{self, Style};
use super::{CliError, Format};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ArchiveFormat {
    /// Manifest, dump and filestore; `ocore snapshot import` takes it back.
    #[value(name = "tar.zst")]
    TarZst,
    /// Odoo's backup zip (dump.sql, filestore/, manifest.json) for Odoo's database manager.
    #[value(name = "odoo-zip")]
    OdooZip,
}

impl ArchiveFormat {
    fn name(self) -> &'static str {
        match self {
            ArchiveFormat::TarZst => "tar.zst",
            ArchiveFormat::OdooZip => "odoo-zip",
        }
    }
}

#[derive(Args)]
pub struct ExportArgs {
    #[command(flatten)]
    target: SnapshotRef,
    /// Archive format.
    #[arg(long, value_enum, default_value_t = ArchiveFormat::TarZst)]
    format: ArchiveFormat,
    /// Where to write the archive (e.g. shop-prod.tar.zst).
    #[arg(long)]
    file: PathBuf,
    /// Replace the file if it exists.
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
pub struct ImportArgs {
    /// The environment the archive becomes a snapshot of.
    #[arg(long)]
    environment: String,
    /// The archive: a `snapshot export` .tar.zst or an Odoo backup zip.
    #[arg(long)]
    file: PathBuf,
}

/// A progress line on stderr, redrawn at most every 200 ms, on a terminal only.
struct ProgressLine {
    style: Style,
    verb: &'static str,
    last: Option<Instant>,
    drawn: bool,
}

impl ProgressLine {
    fn new(verb: &'static str) -> Self {
        Self {
            style: Style::stderr(),
            verb,
            last: None,
            drawn: false,
        }
    }

    fn update(&mut self, done: u64, total: Option<u64>) {
        if !self.style.live {
            return;
        }
        let complete = total.is_some_and(|t| done >= t);
        if !complete
            && self
                .last
                .is_some_and(|t| t.elapsed() < Duration::from_millis(200))
        {
            return;
        }
        self.last = Some(Instant::now());
        let text = match total {
            Some(t) if t > 0 => format!(
                "{} {} of {} ({}%)",
                self.verb,
                term::bytes(done),
                term::bytes(t),
                done.saturating_mul(100) / t
            ),
            _ => format!("{} {}", self.verb, term::bytes(done)),
        };
        eprint!("\r\x1b[2K{text}");
        let _ = std::io::stderr().flush();
        self.drawn = true;
    }

    fn finish(&mut self) {
        if self.drawn {
            eprint!("\r\x1b[2K");
            let _ = std::io::stderr().flush();
            self.drawn = false;
        }
    }
}

/// Writes through to a file while hashing what passes.
struct HashingWriter {
    file: File,
    hasher: Sha256,
}

impl Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// `dir/.name.partial-<pid>`: beside the destination, so the final rename stays on one
/// file system.
fn partial_path(dest: &Path) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "snapshot".to_owned());
    dest.with_file_name(format!(".{name}.partial-{}", std::process::id()))
}

pub fn export(client: &ApiClient, args: ExportArgs, format: Format) -> Result<(), CliError> {
    let dest = args.file.clone();
    if dest.is_dir() {
        return Err(CliError::Usage(format!(
            "--file {} is a directory; name the archive file",
            dest.display()
        )));
    }
    if dest.exists() && !args.force {
        return Err(CliError::Usage(format!(
            "{} exists; pass --force to replace it",
            dest.display()
        )));
    }
    let partial = partial_path(&dest);
    let local = |what: &str, path: &Path, e: std::io::Error| {
        CliError::Local(format!("cannot {what} {}: {e}", path.display()))
    };
    let file = File::create(&partial).map_err(|e| local("create", &partial, e))?;
    let mut sink = HashingWriter {
        file,
        hasher: Sha256::new(),
    };
    let mut progress = ProgressLine::new("downloading");
    let path = format!(
        "/api/environments/{}/snapshots/{}/export?format={}",
        encode(&args.target.environment),
        encode(&args.target.id()),
        args.format.name()
    );
    let result = client
        .download(&path, &mut sink, &mut |done, total| {
            progress.update(done, total)
        })
        .and_then(|bytes| {
            sink.file
                .sync_all()
                .map_err(|e| local("sync", &partial, e))?;
            std::fs::rename(&partial, &dest).map_err(|e| local("rename to", &dest, e))?;
            Ok(bytes)
        });
    progress.finish();
    let bytes = match result {
        Ok(bytes) => bytes,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    let sha256 = hex::encode(sink.hasher.finalize());
    let answer = json!({
        "snapshotId": args.target.id(),
        "environmentId": args.target.environment,
        "format": args.format.name(),
        "file": dest.display().to_string(),
        "bytes": bytes,
        "sha256": sha256,
    });
    match format {
        Format::Json => output::json(&answer),
        Format::Text => println!(
            "snapshot {} exported to {} ({}, {}, sha256 {sha256})",
            args.target.id(),
            dest.display(),
            args.format.name(),
            term::bytes(bytes)
        ),
    }
    Ok(())
}

/// Counts what the upload has read, for the progress line.
struct CountingReader<'a> {
    inner: File,
    done: u64,
    total: u64,
    progress: &'a mut ProgressLine,
}

impl Read for CountingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        self.progress.update(self.done, Some(self.total));
        Ok(n)
    }
}

pub fn import(client: &ApiClient, args: ImportArgs, format: Format) -> Result<(), CliError> {
    let file = File::open(&args.file)
        .map_err(|e| CliError::Usage(format!("cannot open {}: {e}", args.file.display())))?;
    let total = file
        .metadata()
        .map_err(|e| CliError::Local(format!("cannot stat {}: {e}", args.file.display())))?
        .len();
    let mut progress = ProgressLine::new("uploading");
    let path = format!(
        "/api/environments/{}/snapshots/import",
        encode(&args.environment)
    );
    let answer = {
        let mut reader = CountingReader {
            inner: file,
            done: 0,
            total,
            progress: &mut progress,
        };
        client.upload(&path, &mut reader, total)
    };
    progress.finish();
    let answer = answer?;
    match format {
        Format::Json => output::json(&answer),
        Format::Text => println!(
            "imported {} as snapshot {} of environment {} ({}, {})",
            args.file.display(),
            field(&answer, "id"),
            args.environment,
            field(&answer, "kind"),
            term::bytes(answer["sizeBytes"].as_u64().unwrap_or(0))
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_files_sit_beside_the_destination() {
        let p = partial_path(Path::new("/tmp/out/shop.tar.zst"));
        assert_eq!(p.parent(), Some(Path::new("/tmp/out")));
        assert!(p
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(".shop.tar.zst.partial-")));
    }
}
