//! Secrets at rest: repository deploy keys, HTTPS tokens and webhook secrets are stored
//! sealed (AES-256-GCM) with a key that lives in its own file, outside the store.
//!
//! A copy of the store (a backup, a stolen disk image of `<state_dir>/store`) therefore
//! reveals no secret without the key file as well. Each sealed value is bound to the record
//! it belongs to by its *context* (authenticated data such as `project/shop/repository`), so
//! a sealed value copied into another record does not open. The sealed text names the key
//! it was sealed with, so opening it with another key file says so instead of failing
//! obscurely.
//!
//! Only this module sees the key; callers get [`Sealed`] values, which never print their
//! contents, and plaintext only for the moment they use it.

use std::fmt;
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use base64::Engine as _;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Prefix of every sealed value; the version lets the format change later.
const PREFIX: &str = "ocs1";
const KEY_LEN: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("cannot read the secrets key {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the secrets key {path}: {message}")]
    Write { path: PathBuf, message: String },
    #[error("the secrets key {path} must be exactly {KEY_LEN} bytes as 64 hex characters")]
    Malformed { path: PathBuf },
    #[error(
        "the secrets key {path} is readable by other users (mode {mode:o}); run: chmod 600 {path}"
    )]
    TooOpen { path: PathBuf, mode: u32 },
    #[error("a stored secret is not a sealed value")]
    NotSealed,
    #[error("a stored secret was sealed with key {sealed_with}, but the loaded secrets key is {loaded}; restore the key file it was sealed with")]
    WrongKey { sealed_with: String, loaded: String },
    #[error("a stored secret does not open: it was altered or belongs to another record")]
    Tampered,
    #[error("no random numbers available from the operating system")]
    Random,
}

/// A sealed secret as stored. Its `Debug` and `Display` never show the sealed text.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Sealed(String);

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sealed(…)")
    }
}

/// The sealing key, loaded once at start.
pub struct SecretBox {
    key: LessSafeKey,
    /// First 8 hex characters of the key's SHA-256: names the key in sealed values and in
    /// error messages without revealing it.
    id: String,
    rng: SystemRandom,
}

impl fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretBox").field("id", &self.id).finish()
    }
}

impl SecretBox {
    /// Loads the key file, or creates it (mode 0600, 32 random bytes as hex) if it does
    /// not exist. A key file other users can read is refused.
    pub fn load_or_create(path: &Path) -> Result<Self, SecretsError> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let mode = std::fs::metadata(path)
                    .map_err(|source| SecretsError::Read {
                        path: path.to_owned(),
                        source,
                    })?
                    .permissions()
                    .mode()
                    & 0o777;
                if mode & 0o007 != 0 {
                    return Err(SecretsError::TooOpen {
                        path: path.to_owned(),
                        mode,
                    });
                }
                let bytes = hex::decode(text.trim())
                    .ok()
                    .filter(|b| b.len() == KEY_LEN)
                    .ok_or_else(|| SecretsError::Malformed {
                        path: path.to_owned(),
                    })?;
                Self::from_key(&bytes).ok_or_else(|| SecretsError::Malformed {
                    path: path.to_owned(),
                })
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let rng = SystemRandom::new();
                let mut bytes = [0u8; KEY_LEN];
                rng.fill(&mut bytes).map_err(|_| SecretsError::Random)?;
                let text = format!("{}\n", hex::encode(bytes));
                ocore_proto::tls::write_file_atomic(path, text.as_bytes(), 0o600).map_err(|e| {
                    SecretsError::Write {
                        path: path.to_owned(),
                        message: e.to_string(),
                    }
                })?;
                tracing::info!(
                    "created the secrets key {}; back it up with the store, but separately",
                    path.display()
                );
                Self::from_key(&bytes).ok_or(SecretsError::Random)
            }
            Err(source) => Err(SecretsError::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// A box around raw key bytes (32); `None` for another length.
    pub fn from_key(bytes: &[u8]) -> Option<Self> {
        let key = UnboundKey::new(&AES_256_GCM, bytes).ok()?;
        let id = hex::encode(&Sha256::digest(bytes)[..4]);
        Some(Self {
            key: LessSafeKey::new(key),
            id,
            rng: SystemRandom::new(),
        })
    }

    /// The key's public name (not secret).
    pub fn key_id(&self) -> &str {
        &self.id
    }

    /// Seals `plaintext` for the record named by `context`.
    pub fn seal(&self, context: &str, plaintext: &[u8]) -> Result<Sealed, SecretsError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| SecretsError::Random)?;
        let mut data = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut data,
            )
            .map_err(|_| SecretsError::Random)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        Ok(Sealed(format!("{PREFIX}.{}.{}", self.id, B64.encode(out))))
    }

    /// Opens a value sealed for `context`.
    pub fn open(&self, context: &str, sealed: &Sealed) -> Result<Vec<u8>, SecretsError> {
        let mut parts = sealed.0.splitn(3, '.');
        let (Some(PREFIX), Some(id), Some(body)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(SecretsError::NotSealed);
        };
        if id != self.id {
            return Err(SecretsError::WrongKey {
                sealed_with: id.to_owned(),
                loaded: self.id.clone(),
            });
        }
        let raw = B64.decode(body).map_err(|_| SecretsError::NotSealed)?;
        if raw.len() < NONCE_LEN {
            return Err(SecretsError::NotSealed);
        }
        let (nonce, data) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SecretsError::NotSealed)?;
        let mut data = data.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut data)
            .map_err(|_| SecretsError::Tampered)?;
        Ok(plain.to_vec())
    }

    /// Opens a sealed UTF-8 text.
    pub fn open_text(&self, context: &str, sealed: &Sealed) -> Result<String, SecretsError> {
        String::from_utf8(self.open(context, sealed)?).map_err(|_| SecretsError::Tampered)
    }

    /// `n` random bytes from the operating system (for new secrets).
    pub fn random_bytes(&self, n: usize) -> Result<Vec<u8>, SecretsError> {
        let mut bytes = vec![0u8; n];
        self.rng
            .fill(&mut bytes)
            .map_err(|_| SecretsError::Random)?;
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer(byte: u8) -> SecretBox {
        SecretBox::from_key(&[byte; KEY_LEN]).expect("key")
    }

    #[test]
    fn sealed_values_open_only_with_their_key_and_context() {
        let b = sealer(7);
        let s = b.seal("project/shop/repository", b"hunter2").expect("seal");
        assert!(!s.0.contains("hunter2"));
        assert_eq!(format!("{s:?}"), "Sealed(…)");
        assert_eq!(
            b.open("project/shop/repository", &s).expect("open"),
            b"hunter2"
        );
        // Another record's context does not open it.
        assert!(matches!(
            b.open("project/other/repository", &s),
            Err(SecretsError::Tampered)
        ));
        // Another key says which key it was sealed with.
        let err = sealer(8)
            .open("project/shop/repository", &s)
            .expect_err("wrong key");
        assert!(matches!(err, SecretsError::WrongKey { .. }), "{err}");
        // A flipped byte is refused.
        let mut raw = s.0.clone().into_bytes();
        let last = raw.len() - 2;
        raw[last] = if raw[last] == b'A' { b'B' } else { b'A' };
        let altered = Sealed(String::from_utf8(raw).expect("ascii"));
        assert!(b.open("project/shop/repository", &altered).is_err());
        assert!(matches!(
            b.open("x", &Sealed("plain".into())),
            Err(SecretsError::NotSealed)
        ));
    }

    #[test]
    fn two_seals_of_one_secret_differ() {
        let b = sealer(1);
        let one = b.seal("c", b"same").expect("seal");
        let two = b.seal("c", b"same").expect("seal");
        assert_ne!(one, two, "a fresh nonce per seal");
    }

    #[test]
    fn key_file_is_created_private_and_refused_when_open_to_others() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("secrets.key");
        let first = SecretBox::load_or_create(&path).expect("create");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let sealed = first.seal("c", b"v").expect("seal");
        let again = SecretBox::load_or_create(&path).expect("load");
        assert_eq!(again.key_id(), first.key_id());
        assert_eq!(again.open("c", &sealed).expect("open"), b"v");

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = SecretBox::load_or_create(&path).expect_err("too open");
        assert!(err.to_string().contains("chmod 600"), "{err}");

        std::fs::write(&path, "not hex").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert!(matches!(
            SecretBox::load_or_create(&path),
            Err(SecretsError::Malformed { .. })
        ));
    }
}
