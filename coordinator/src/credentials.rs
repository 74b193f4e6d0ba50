//! Repository credentials: generating a project's ed25519 deploy key, sealing an HTTPS
//! token, and opening either for exactly one Deploy request.
//!
//! Plaintext exists only here and in the request the dispatcher sends over mTLS: the
//! store holds the sealed form (`crate::secrets`), the API shows only public halves, and
//! [`RepoAccess`] never prints its secret.

use std::fmt;

use ring::signature::{Ed25519KeyPair, KeyPair as _};
use ssh_key::private::{Ed25519Keypair, Ed25519PrivateKey, KeypairData};
use ssh_key::public::Ed25519PublicKey;
use ssh_key::{HashAlg, LineEnding, PrivateKey};

use crate::domain::{repository_secret_context, Project, RepositoryCredentials};
use crate::secrets::{SecretBox, SecretsError};

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("cannot generate a deploy key: {0}")]
    Generate(String),
    #[error("cannot open the repository credentials of project {project}: {source}")]
    Open {
        project: String,
        source: SecretsError,
    },
    #[error(transparent)]
    Seal(#[from] SecretsError),
}

/// A fresh ed25519 deploy key for `project`, its private half sealed.
pub fn generate_deploy_key(
    secrets: &SecretBox,
    project: &str,
    now: i64,
) -> Result<RepositoryCredentials, CredentialsError> {
    let seed: [u8; 32] = secrets
        .random_bytes(32)?
        .try_into()
        .map_err(|_| CredentialsError::Generate("short random seed".to_owned()))?;
    let pair = Ed25519KeyPair::from_seed_unchecked(&seed)
        .map_err(|e| CredentialsError::Generate(e.to_string()))?;
    let public: [u8; 32] = pair
        .public_key()
        .as_ref()
        .try_into()
        .map_err(|_| CredentialsError::Generate("unexpected public key length".to_owned()))?;
    let keypair = Ed25519Keypair {
        public: Ed25519PublicKey(public),
        private: Ed25519PrivateKey::from_bytes(&seed),
    };
    let key = PrivateKey::new(
        KeypairData::Ed25519(keypair),
        format!("ocore-deploy-{project}"),
    )
    .map_err(|e| CredentialsError::Generate(e.to_string()))?;
    let private_pem = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| CredentialsError::Generate(e.to_string()))?;
    let public_key = key
        .public_key()
        .to_openssh()
        .map_err(|e| CredentialsError::Generate(e.to_string()))?;
    let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
    let secret = secrets.seal(&repository_secret_context(project), private_pem.as_bytes())?;
    Ok(RepositoryCredentials::SshKey {
        public_key,
        fingerprint,
        secret,
        created_at: now,
    })
}

/// An HTTPS token for `project`, sealed. The caller has validated it.
pub fn seal_token(
    secrets: &SecretBox,
    project: &str,
    username: &str,
    token: &str,
    now: i64,
) -> Result<RepositoryCredentials, CredentialsError> {
    Ok(RepositoryCredentials::HttpsToken {
        username: username.to_owned(),
        secret: secrets.seal(&repository_secret_context(project), token.as_bytes())?,
        created_at: now,
    })
}

/// The secret an agent fetches with, in plaintext for one request.
#[derive(Clone)]
pub enum RepoSecret {
    SshKey { private_key_openssh: String },
    HttpsToken { username: String, token: String },
}

/// What one Deploy request carries about repository access.
#[derive(Clone, Default)]
pub struct RepoAccess {
    pub secret: Option<RepoSecret>,
    /// The pinned host key (`<type> <base64>`), or `None` before first use.
    pub known_host_key: Option<String>,
}

impl fmt::Debug for RepoAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secret = match &self.secret {
            None => "none",
            Some(RepoSecret::SshKey { .. }) => "ssh-key <redacted>",
            Some(RepoSecret::HttpsToken { .. }) => "https-token <redacted>",
        };
        f.debug_struct("RepoAccess")
            .field("secret", &secret)
            .field("known_host_key", &self.known_host_key)
            .finish()
    }
}

/// Opens the project's secret for a Deploy request; `None` when the project has neither
/// credentials nor a pinned host key (a public repository).
pub fn open_for_deploy(
    secrets: &SecretBox,
    project: &Project,
) -> Result<Option<RepoAccess>, CredentialsError> {
    let known_host_key = project.ssh_host_key.as_ref().map(|k| k.key.clone());
    let secret = match &project.credentials {
        None => None,
        Some(credentials) => {
            let plain = secrets
                .open_text(
                    &repository_secret_context(&project.id),
                    credentials.secret(),
                )
                .map_err(|source| CredentialsError::Open {
                    project: project.id.clone(),
                    source,
                })?;
            Some(match credentials {
                RepositoryCredentials::SshKey { .. } => RepoSecret::SshKey {
                    private_key_openssh: plain,
                },
                RepositoryCredentials::HttpsToken { username, .. } => RepoSecret::HttpsToken {
                    username: username.clone(),
                    token: plain,
                },
            })
        }
    };
    if secret.is_none() && known_host_key.is_none() {
        return Ok(None);
    }
    Ok(Some(RepoAccess {
        secret,
        known_host_key,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(credentials: Option<RepositoryCredentials>) -> Project {
        Project {
            id: "shop".into(),
            name: "shop".into(),
            repository_url: "git@example.com:acme/shop.git".into(),
            addons_subpath: String::new(),
            credentials,
            ssh_host_key: None,
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn deploy_keys_are_openssh_ed25519_and_sealed_per_project() -> Result<(), CredentialsError> {
        let secrets =
            SecretBox::from_key(&[3; 32]).ok_or(CredentialsError::Generate("key".into()))?;
        let generated = generate_deploy_key(&secrets, "shop", 7)?;
        let RepositoryCredentials::SshKey {
            public_key,
            fingerprint,
            secret,
            created_at,
        } = &generated
        else {
            panic!("not a deploy key: {generated:?}");
        };
        assert!(
            public_key.starts_with("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5"),
            "{public_key}"
        );
        assert!(public_key.ends_with(" ocore-deploy-shop"), "{public_key}");
        assert!(fingerprint.starts_with("SHA256:"), "{fingerprint}");
        assert_eq!(*created_at, 7);
        // The private key opens, parses back as OpenSSH and matches the public key shown.
        let access = open_for_deploy(&secrets, &project(Some(generated.clone())))?
            .ok_or(CredentialsError::Generate("no access".into()))?;
        let Some(RepoSecret::SshKey {
            private_key_openssh,
        }) = &access.secret
        else {
            panic!("no ssh key in {access:?}");
        };
        assert!(private_key_openssh.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----\n"));
        let parsed = PrivateKey::from_openssh(private_key_openssh)
            .map_err(|e| CredentialsError::Generate(e.to_string()))?;
        assert_eq!(
            parsed.public_key().to_openssh().ok().as_deref(),
            Some(public_key.as_str())
        );
        // The debug form and the sealed form never show it.
        assert!(!format!("{access:?}").contains("PRIVATE"));
        let body: String = private_key_openssh
            .lines()
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        assert!(!format!("{secret:?}").contains(&body));
        // Another key every time.
        let again = generate_deploy_key(&secrets, "shop", 8)?;
        assert_ne!(
            match &again {
                RepositoryCredentials::SshKey { public_key, .. } => public_key,
                _ => "",
            },
            public_key
        );
        // Sealed for this project only.
        let mut elsewhere = project(Some(generated));
        elsewhere.id = "other".into();
        assert!(matches!(
            open_for_deploy(&secrets, &elsewhere),
            Err(CredentialsError::Open { .. })
        ));
        Ok(())
    }

    #[test]
    fn tokens_open_with_their_user_name_and_public_projects_send_nothing(
    ) -> Result<(), CredentialsError> {
        let secrets =
            SecretBox::from_key(&[4; 32]).ok_or(CredentialsError::Generate("key".into()))?;
        assert!(open_for_deploy(&secrets, &project(None))?.is_none());
        let sealed = seal_token(&secrets, "shop", "ci", "glpat-s3cret", 1)?;
        assert!(!format!("{sealed:?}").contains("s3cret"));
        let access = open_for_deploy(&secrets, &project(Some(sealed)))?
            .ok_or(CredentialsError::Generate("no access".into()))?;
        assert!(matches!(
            &access.secret,
            Some(RepoSecret::HttpsToken { username, token }) if username == "ci" && token == "glpat-s3cret"
        ));
        assert!(!format!("{access:?}").contains("s3cret"));
        Ok(())
    }
}
