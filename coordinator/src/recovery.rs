//! Break-glass admin recovery: `ocore token recover-admin` on the coordinator host, for
//! when every admin token is lost, revoked or expired.
//!
//! The command never opens the store itself (a running server holds it, and a store
//! written by root would lock out the `ocore` user). It writes the new token's *record*
//! (its hash, never its text) as a request file in `<state_dir>/admin-recovery/`, and the
//! server inserts it: at once when it runs (it looks every [`POLL`]), or when it next
//! starts. The secret goes to a 0600 file. Whoever can write the state directory owns the
//! coordinator anyway, so the request directory asks for nothing more: files must belong to
//! the state directory's owner or root, and be readable by nobody else.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::store::{Store, TokenRecord};

/// Folder of the state directory holding pending requests.
pub const REQUEST_DIR: &str = "admin-recovery";
/// Default file the recovered token's secret is written to.
pub const SECRET_FILE: &str = "recovered-admin-token";
/// How often a running server looks for requests.
pub const POLL: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error("{0}")]
    Io(String),
}

fn io(what: impl std::fmt::Display, e: impl std::fmt::Display) -> RecoveryError {
    RecoveryError::Io(format!("{what}: {e}"))
}

/// What `ocore token recover-admin` did.
#[derive(Debug)]
pub struct Requested {
    pub token_id: String,
    pub secret_file: PathBuf,
    /// True when a running server took the request within the wait.
    pub applied: bool,
    /// True when the store is held by a process (a running server).
    pub server_running: bool,
    pub request_file: PathBuf,
}

/// Writes a request for a new admin token named `name`, its secret to `secret_file`, and
/// waits up to `wait` for a running server to apply it.
pub fn request(
    state_dir: &Path,
    store_dir: &Path,
    name: &str,
    secret_file: &Path,
    wait: Duration,
) -> Result<Requested, RecoveryError> {
    let owner = std::fs::metadata(state_dir).map_err(|e| {
        io(
            format!("cannot read the state directory {}", state_dir.display()),
            e,
        )
    })?;
    let dir = state_dir.join(REQUEST_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| io(format!("cannot create {}", dir.display()), e))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| io(format!("cannot set the mode of {}", dir.display()), e))?;
    // Run as root, the files still belong to the server's user, which removes them.
    let give = |path: &Path| {
        std::os::unix::fs::chown(path, Some(owner.uid()), Some(owner.gid())).map_err(|e| {
            io(
                format!(
                    "cannot give {} to the state directory's owner",
                    path.display()
                ),
                e,
            )
        })
    };
    give(&dir)?;

    let (record, secret) = crate::api::tokens::new_token_record(name, true, Vec::new(), None);
    // The secret first: a request whose secret nobody has would be a token nobody can use.
    ocore_proto::tls::write_file_atomic(secret_file, format!("{secret}\n").as_bytes(), 0o600)
        .map_err(|e| io("cannot write the token file", e))?;
    let request_file = dir.join(format!("{}.json", record.id));
    let bytes = serde_json::to_vec(&record).map_err(|e| io("cannot encode the request", e))?;
    if let Err(e) = ocore_proto::tls::write_file_atomic(&request_file, &bytes, 0o600)
        .map_err(|e| io("cannot write the request", e))
        .and_then(|()| give(&request_file))
    {
        let _ = std::fs::remove_file(&request_file);
        let _ = std::fs::remove_file(secret_file);
        return Err(e);
    }
    let server_running = store_in_use(store_dir);
    let started = Instant::now();
    let mut applied = false;
    while server_running && started.elapsed() < wait {
        if !request_file.exists() {
            applied = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(Requested {
        token_id: record.id,
        secret_file: secret_file.to_owned(),
        applied,
        server_running,
        request_file,
    })
}

/// True when a process holds the store's lock (sled `flock`s `db` for its whole life).
/// Taking the lock here for an instant changes nothing; it is released on return.
fn store_in_use(store_dir: &Path) -> bool {
    let Ok(file) = std::fs::File::open(store_dir.join("db")) else {
        return false;
    };
    use nix::fcntl::{Flock, FlockArg};
    matches!(
        Flock::lock(file, FlockArg::LockExclusiveNonblock),
        Err((_, nix::errno::Errno::EWOULDBLOCK))
    )
}

/// Inserts every pending request into the store and removes it; returns how many were
/// applied. A request that is unsafe (wrong owner, readable by others) or malformed is
/// refused, logged and moved aside as `*.refused`, so it is neither applied nor retried.
pub fn apply_pending(store: &Store, state_dir: &Path) -> usize {
    let dir = state_dir.join(REQUEST_DIR);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return 0;
    };
    let owner = std::fs::metadata(state_dir).map(|m| m.uid()).ok();
    let mut applied = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        match read_request(&path, owner) {
            Ok(record) => match store.insert_token(&record) {
                Ok(()) => {
                    if let Err(e) = std::fs::remove_file(&path) {
                        tracing::error!(
                            "cannot remove the applied request {}: {e}",
                            path.display()
                        );
                    }
                    applied += 1;
                    tracing::warn!(
                        token = %record.id,
                        name = %record.name,
                        "break-glass: admin token {} ({}) created by `ocore token recover-admin`",
                        record.name,
                        record.id
                    );
                }
                Err(e) => tracing::error!(
                    "cannot store the admin token requested in {}: {e}; it is tried again",
                    path.display()
                ),
            },
            Err(why) => {
                tracing::error!(
                    "refused the admin recovery request {}: {why}",
                    path.display()
                );
                let _ = std::fs::rename(&path, path.with_extension("refused"));
            }
        }
    }
    applied
}

fn read_request(path: &Path, owner: Option<u32>) -> Result<TokenRecord, String> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.uid() != 0 && Some(meta.uid()) != owner {
        return Err(format!(
            "owned by uid {}, neither root nor the state directory's owner",
            meta.uid()
        ));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(format!(
            "mode {:o}: readable or writable by others",
            meta.mode() & 0o777
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let record: TokenRecord = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    let hex = record.hash.len() == 64 && record.hash.bytes().all(|b| b.is_ascii_hexdigit());
    if !record.admin || !hex || record.revoked_at.is_some() || record.name.is_empty() {
        return Err("not an admin token request".into());
    }
    Ok(record)
}

/// Applies requests while the server runs, until `cancel`.
pub async fn watch(store: Store, state_dir: PathBuf, cancel: tokio_util::sync::CancellationToken) {
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(POLL) => {}
        }
        let store = store.clone();
        let dir = state_dir.clone();
        let _ = tokio::task::spawn_blocking(move || apply_pending(&store, &dir)).await;
    }
}
