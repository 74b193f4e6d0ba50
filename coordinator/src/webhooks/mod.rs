//! Git provider webhooks as pure code: each provider's headers, the verification of its
//! signature or token over the raw body (constant time), the parsing of its push
//! payloads into ref updates, and the per-project rate limiter. One file per provider.
//! Nothing here does I/O; `api::webhooks` receives the requests and acts on them.

mod bitbucket;
mod github;
mod gitlab;
mod ratelimit;

pub use ratelimit::{RateLimit, RateLimiter};

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use ring::hmac;

use crate::domain::Provider;

/// Longest header value read from a delivery (event names, delivery ids, signatures).
const MAX_HEADER_CHARS: usize = 200;

/// Why a delivery cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// The signature or token is missing or wrong (HTTP 401).
    #[error("{0}")]
    Unauthenticated(String),
    /// A header or the body is malformed (HTTP 400).
    #[error("{0}")]
    Malformed(String),
}

/// What kind of ref a push updated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefKind {
    Branch,
    Tag,
    /// Any other ref (notes, Mercurial bookmarks): never deployed.
    Other,
}

impl RefKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RefKind::Branch => "branch",
            RefKind::Tag => "tag",
            RefKind::Other => "ref",
        }
    }
}

/// One ref a push changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefUpdate {
    pub kind: RefKind,
    /// The branch or tag name (`main`, `v1.0`); the full ref for `Other`.
    pub name: String,
    /// The pushed head commit; `None` when the ref was deleted.
    pub commit_sha: Option<String>,
    pub message: Option<String>,
    /// `Name <email>`, as the agent records authors.
    pub author: Option<String>,
}

/// What a delivery is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The provider checking the endpoint (GitHub's `ping`).
    Ping,
    Push {
        updates: Vec<RefUpdate>,
        /// Who pushed, as the provider names them.
        pusher: Option<String>,
    },
    /// Any other event (issues, merge requests, …): never deployed.
    Other,
}

/// A delivery read and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub event: String,
    pub delivery_id: String,
    pub kind: Event,
}

/// The event name and delivery id as far as they can be read, for the log of a delivery
/// refused before it was parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Envelope {
    pub event: Option<String>,
    pub delivery_id: Option<String>,
}

/// The headers naming a provider's event and delivery id.
fn id_headers(provider: Provider) -> (&'static str, &'static [&'static str]) {
    match provider {
        Provider::Github => (github::EVENT, &[github::DELIVERY]),
        Provider::Gitlab => (gitlab::EVENT, &[gitlab::DELIVERY, gitlab::IDEMPOTENCY]),
        Provider::Bitbucket => (bitbucket::EVENT, &[bitbucket::DELIVERY]),
    }
}

/// Reads the event name and delivery id without failing (for logging a rejection).
pub fn envelope(provider: Provider, headers: &HeaderMap, body: Option<&[u8]>) -> Envelope {
    let (event, ids) = id_headers(provider);
    let read = |name: &str| header(headers, name).ok().flatten();
    let mut delivery_id = ids.iter().find_map(|h| read(h));
    if delivery_id.is_none() && provider == Provider::Gitlab {
        delivery_id = body.map(gitlab::body_delivery_id);
    }
    Envelope {
        event: read(event),
        delivery_id,
    }
}

/// Checks the delivery's signature (GitHub, Bitbucket) or token (GitLab) against the
/// project's secret, in constant time, over the raw body.
pub fn verify(
    provider: Provider,
    headers: &HeaderMap,
    body: &[u8],
    secret: &str,
) -> Result<(), WebhookError> {
    match provider {
        Provider::Github => github::verify(headers, body, secret),
        Provider::Gitlab => gitlab::verify(headers, secret),
        Provider::Bitbucket => bitbucket::verify(headers, body, secret),
    }
}

/// Refuses a delivery whose body is not declared as JSON. GitHub can also send
/// `application/x-www-form-urlencoded` (its "Content type" setting); GitLab and Bitbucket
/// always send `application/json`. The message says where to change it.
pub fn require_json(provider: Provider, headers: &HeaderMap) -> Result<(), String> {
    let declared = headers
        .get(axum::http::header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let essence = declared.as_deref().map(|v| {
        v.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    });
    if essence.as_deref() == Some("application/json") {
        return Ok(());
    }
    let got = match &declared {
        Some(v) => format!("Content-Type {:?}", v.chars().take(100).collect::<String>()),
        None => "no Content-Type".to_owned(),
    };
    let fix = match provider {
        Provider::Github => {
            "in the GitHub webhook's settings, set Content type to application/json"
        }
        Provider::Gitlab | Provider::Bitbucket => {
            "send the payload as application/json, as the provider does"
        }
    };
    Err(format!(
        "webhook deliveries must be sent as application/json (this one has {got}): {fix}"
    ))
}

/// Reads an authenticated delivery: its event, delivery id and, for pushes, the refs it
/// updated.
pub fn parse(provider: Provider, headers: &HeaderMap, body: &[u8]) -> Result<Parsed, WebhookError> {
    match provider {
        Provider::Github => github::parse(headers, body),
        Provider::Gitlab => gitlab::parse(headers, body),
        Provider::Bitbucket => bitbucket::parse(headers, body),
    }
}

/// The headers kept with a verified delivery so a redeliver replays it: those that name
/// the event and the delivery, never a signature or token.
pub fn kept_headers(provider: Provider, headers: &HeaderMap) -> Vec<(String, String)> {
    let names: &[&str] = match provider {
        Provider::Github => github::KEPT,
        Provider::Gitlab => gitlab::KEPT,
        Provider::Bitbucket => bitbucket::KEPT,
    };
    names
        .iter()
        .filter_map(|name| {
            header(headers, name)
                .ok()
                .flatten()
                .map(|v| ((*name).to_owned(), v))
        })
        .collect()
}

/// Rebuilds the headers of a kept request.
pub fn headers_from(kept: &[(String, String)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in kept {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            map.insert(k, v);
        }
    }
    map
}

/// A new webhook secret: 32 random bytes (256 bits) as 64 hex characters, which every
/// provider's secret field accepts.
pub fn new_secret(random: &[u8; 32]) -> String {
    hex::encode(random)
}

/// A header's value: `None` when absent; printable ASCII of bounded length, or an error
/// naming the header.
pub(crate) fn header(headers: &HeaderMap, name: &str) -> Result<Option<String>, WebhookError> {
    let Some(value) = headers.get(name) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|v| v.len() <= MAX_HEADER_CHARS && v.bytes().all(|b| (0x20..0x7f).contains(&b)))
        .ok_or_else(|| {
            WebhookError::Malformed(format!(
                "header {name} must be printable ASCII of at most {MAX_HEADER_CHARS} characters"
            ))
        })?;
    Ok((!text.is_empty()).then(|| text.to_owned()))
}

/// A header that must be present.
pub(crate) fn required(
    headers: &HeaderMap,
    name: &str,
    hint: &str,
) -> Result<String, WebhookError> {
    header(headers, name)?
        .ok_or_else(|| WebhookError::Malformed(format!("missing header {name}; {hint}")))
}

/// Verifies `sha256=<hex HMAC-SHA256 of body>` (GitHub's and Bitbucket's format), in
/// constant time.
pub(crate) fn verify_hmac_sha256(
    header_name: &str,
    value: &str,
    body: &[u8],
    secret: &str,
) -> Result<(), WebhookError> {
    let hex_tag = value.strip_prefix("sha256=").ok_or_else(|| {
        WebhookError::Unauthenticated(format!(
            "header {header_name} must be sha256=<hex HMAC-SHA256 of the body>"
        ))
    })?;
    let tag = hex::decode(hex_tag)
        .ok()
        .filter(|t| t.len() == 32)
        .ok_or_else(|| {
            WebhookError::Unauthenticated(format!(
                "header {header_name} does not hold a 64-hex-character SHA-256 HMAC"
            ))
        })?;
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    hmac::verify(&key, body, &tag).map_err(|_| {
        WebhookError::Unauthenticated(format!(
            "header {header_name} does not match the body signed with this project's secret: \
             the secret in the provider differs from oCore's (run `ocore webhook reconfigure` \
             and paste the new one), or the body was changed on the way"
        ))
    })
}

/// Compares a presented token with the secret in constant time: both are compared as
/// HMACs under one key, so the comparison time does not depend on where they differ.
pub(crate) fn token_matches(presented: &str, secret: &str) -> bool {
    let key = hmac::Key::new(hmac::HMAC_SHA256, b"ocore webhook token comparison");
    let expected = hmac::sign(&key, secret.as_bytes());
    hmac::verify(&key, presented.as_bytes(), expected.as_ref()).is_ok()
}

/// Splits `refs/heads/x` and `refs/tags/x`; other refs are `Other` with the full ref.
pub(crate) fn split_ref(full: &str) -> (RefKind, String) {
    if let Some(b) = full.strip_prefix("refs/heads/") {
        (RefKind::Branch, b.to_owned())
    } else if let Some(t) = full.strip_prefix("refs/tags/") {
        (RefKind::Tag, t.to_owned())
    } else {
        (RefKind::Other, full.to_owned())
    }
}

/// Git's "no object" id: what `after` is when a ref was deleted.
pub(crate) fn is_zero_sha(sha: &str) -> bool {
    !sha.is_empty() && sha.bytes().all(|b| b == b'0')
}

/// `Name <email>` from the parts a payload gives.
pub(crate) fn author(name: Option<&str>, email: Option<&str>) -> Option<String> {
    let name = name.map(str::trim).filter(|n| !n.is_empty());
    let email = email.map(str::trim).filter(|e| !e.is_empty());
    match (name, email) {
        (Some(n), Some(e)) => Some(format!("{n} <{e}>")),
        (Some(n), None) => Some(n.to_owned()),
        (None, Some(e)) => Some(e.to_owned()),
        (None, None) => None,
    }
}

/// A commit message as the agent records it (trimmed), bounded.
pub(crate) fn message(m: Option<&str>) -> Option<String> {
    let m = m.map(str::trim).filter(|m| !m.is_empty())?;
    Some(m.chars().take(4096).collect())
}

/// Parses a JSON body, refusing a form-encoded one with the setting to change.
pub(crate) fn json_body<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: &[u8],
    provider: &str,
) -> Result<T, WebhookError> {
    let form = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if form {
        return Err(WebhookError::Malformed(format!(
            "the body is form-encoded; set the {provider} webhook's content type to application/json"
        )));
    }
    serde_json::from_slice(body).map_err(|e| {
        WebhookError::Malformed(format!("the body is not a valid {provider} payload: {e}"))
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `sha256=<hex>` of `body` under `secret`, as GitHub and Bitbucket sign.
    pub fn sign(secret: &str, body: &[u8]) -> String {
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
        format!("sha256={}", hex::encode(hmac::sign(&key, body).as_ref()))
    }

    #[test]
    fn deliveries_must_be_declared_as_json() {
        let ok = [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON",
        ];
        for v in ok {
            let h = headers(&[("content-type", v)]);
            assert!(require_json(Provider::Github, &h).is_ok(), "{v}");
        }
        let form = headers(&[("content-type", "application/x-www-form-urlencoded")]);
        let e = require_json(Provider::Github, &form).expect_err("form");
        assert!(e.contains("Content type to application/json"), "{e}");
        assert!(e.contains("x-www-form-urlencoded"), "{e}");
        let e = require_json(Provider::Gitlab, &headers(&[])).expect_err("none");
        assert!(e.contains("no Content-Type"), "{e}");
        let e = require_json(
            Provider::Bitbucket,
            &headers(&[("content-type", "text/json")]),
        );
        assert!(e.is_err());
    }

    pub fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let kept: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        headers_from(&kept)
    }

    /// A fixture payload from `tests/fixtures/webhooks/`.
    pub fn fixture(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/webhooks")
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn hmac_signatures_are_checked_over_the_raw_body() {
        let body = br#"{"ref":"refs/heads/main"}"#;
        let good = sign("s3cret", body);
        assert_eq!(verify_hmac_sha256("X-Sig", &good, body, "s3cret"), Ok(()));
        // One byte of body, the secret, or the tag changed: refused.
        assert!(
            verify_hmac_sha256("X-Sig", &good, br#"{"ref":"refs/heads/mai"}"#, "s3cret").is_err()
        );
        assert!(verify_hmac_sha256("X-Sig", &good, body, "s3cres").is_err());
        let mut flipped = good.clone().into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'0' { b'1' } else { b'0' };
        let flipped = String::from_utf8(flipped).expect("ascii");
        assert!(verify_hmac_sha256("X-Sig", &flipped, body, "s3cret").is_err());
        // Wrong format: no prefix, sha1, short.
        for bad in [&good[7..], "sha1=abcd", "sha256=abcd", "sha256=zz"] {
            let err = verify_hmac_sha256("X-Sig", bad, body, "s3cret").expect_err(bad);
            assert!(matches!(err, WebhookError::Unauthenticated(_)), "{err}");
            assert!(err.to_string().contains("X-Sig"), "{err}");
        }
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(token_matches("abc", "abc"));
        assert!(!token_matches("abd", "abc"));
        assert!(!token_matches("ab", "abc"));
        assert!(!token_matches("abcd", "abc"));
        assert!(!token_matches("", "abc"));
    }

    #[test]
    fn headers_are_bounded_printable_ascii() {
        let h = headers(&[("X-A", "push"), ("X-B", "  ")]);
        assert_eq!(header(&h, "X-A"), Ok(Some("push".to_owned())));
        assert_eq!(header(&h, "X-B"), Ok(None), "blank is absent");
        assert_eq!(header(&h, "X-C"), Ok(None));
        let long = "a".repeat(MAX_HEADER_CHARS + 1);
        let h = headers(&[("X-A", &long)]);
        assert!(matches!(header(&h, "X-A"), Err(WebhookError::Malformed(_))));
        let mut h = HeaderMap::new();
        h.insert(
            "x-a",
            HeaderValue::from_bytes(b"caf\xc3\xa9").expect("value"),
        );
        assert!(header(&h, "X-A").is_err());
    }

    #[test]
    fn refs_authors_and_secrets() {
        assert_eq!(
            split_ref("refs/heads/feature/x"),
            (RefKind::Branch, "feature/x".to_owned())
        );
        assert_eq!(
            split_ref("refs/tags/v1.0"),
            (RefKind::Tag, "v1.0".to_owned())
        );
        assert_eq!(
            split_ref("refs/notes/commits"),
            (RefKind::Other, "refs/notes/commits".to_owned())
        );
        assert!(is_zero_sha("0000000000000000000000000000000000000000"));
        assert!(!is_zero_sha("0000000000000000000000000000000000000001"));
        assert!(!is_zero_sha(""));
        assert_eq!(
            author(Some("Ada"), Some("ada@example.com")).as_deref(),
            Some("Ada <ada@example.com>")
        );
        assert_eq!(author(Some(" "), None), None);
        let secret = new_secret(&[0xab; 32]);
        assert_eq!(secret.len(), 64);
        assert!(secret.bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn kept_headers_never_include_a_token_or_signature() {
        let h = headers(&[
            ("X-Gitlab-Event", "Push Hook"),
            ("X-Gitlab-Token", "s3cret"),
            ("X-Gitlab-Event-UUID", "u-1"),
        ]);
        let kept = kept_headers(Provider::Gitlab, &h);
        assert!(kept.iter().all(|(k, _)| k != "X-Gitlab-Token"), "{kept:?}");
        assert!(kept
            .iter()
            .any(|(k, v)| k == "X-Gitlab-Event-UUID" && v == "u-1"));
        let h = headers(&[
            ("X-GitHub-Event", "push"),
            ("X-Hub-Signature-256", "sha256=00"),
        ]);
        let kept = kept_headers(Provider::Github, &h);
        assert_eq!(kept, vec![("X-GitHub-Event".to_owned(), "push".to_owned())]);
        // A replay reads the same values back.
        let back = headers_from(&kept);
        assert_eq!(header(&back, "x-github-event"), Ok(Some("push".to_owned())));
    }

    #[test]
    fn form_encoded_bodies_name_the_setting() {
        let h = headers(&[("Content-Type", "application/x-www-form-urlencoded")]);
        let err =
            json_body::<serde_json::Value>(&h, b"payload=%7B%7D", "GitHub").expect_err("form");
        assert!(err.to_string().contains("application/json"), "{err}");
        let err = json_body::<serde_json::Value>(&HeaderMap::new(), b"{not json", "GitHub")
            .expect_err("json");
        assert!(matches!(err, WebhookError::Malformed(_)));
    }
}
