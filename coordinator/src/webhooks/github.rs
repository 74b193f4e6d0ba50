//! GitHub webhooks: `X-GitHub-Event` (`push`, `ping`, …), `X-GitHub-Delivery` (a GUID that
//! GitHub keeps when a delivery is redelivered) and `X-Hub-Signature-256`
//! (`sha256=` HMAC-SHA256 of the raw body keyed with the webhook's secret).

use axum::http::HeaderMap;
use serde::Deserialize;

use super::{
    author, is_zero_sha, json_body, message, required, split_ref, verify_hmac_sha256, Event,
    Parsed, RefUpdate, WebhookError,
};

pub const EVENT: &str = "X-GitHub-Event";
pub const DELIVERY: &str = "X-GitHub-Delivery";
const SIGNATURE: &str = "X-Hub-Signature-256";
/// Headers kept for a redeliver.
pub const KEPT: &[&str] = &[EVENT, DELIVERY, "X-GitHub-Hook-ID", "Content-Type"];

#[derive(Deserialize)]
struct Push {
    #[serde(rename = "ref")]
    git_ref: String,
    after: String,
    #[serde(default)]
    deleted: bool,
    head_commit: Option<Commit>,
    pusher: Option<Pusher>,
}

#[derive(Deserialize)]
struct Commit {
    id: String,
    message: Option<String>,
    author: Option<Person>,
}

#[derive(Deserialize)]
struct Person {
    name: Option<String>,
    email: Option<String>,
}

#[derive(Deserialize)]
struct Pusher {
    name: Option<String>,
}

pub fn verify(headers: &HeaderMap, body: &[u8], secret: &str) -> Result<(), WebhookError> {
    let Some(signature) = super::header(headers, SIGNATURE)
        .map_err(|e| WebhookError::Unauthenticated(e.to_string()))?
    else {
        let legacy = headers.contains_key("X-Hub-Signature");
        return Err(WebhookError::Unauthenticated(if legacy {
            format!("missing header {SIGNATURE} (only the SHA-1 X-Hub-Signature was sent, which oCore does not accept)")
        } else {
            format!("missing header {SIGNATURE}: set the webhook's Secret in GitHub to the one `ocore webhook reconfigure` printed")
        }));
    };
    verify_hmac_sha256(SIGNATURE, &signature, body, secret)
}

pub fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Parsed, WebhookError> {
    let event = required(headers, EVENT, "is this request from GitHub?")?;
    let delivery_id = required(headers, DELIVERY, "is this request from GitHub?")?;
    let kind = match event.as_str() {
        "push" => {
            let push: Push = json_body(headers, body, "GitHub")?;
            let (kind, name) = split_ref(&push.git_ref);
            // For an annotated tag `after` is the tag object; the head commit is the commit.
            let head = push.head_commit.as_ref();
            let deleted = push.deleted || is_zero_sha(&push.after);
            let update = RefUpdate {
                kind,
                name,
                commit_sha: (!deleted)
                    .then(|| head.map_or_else(|| push.after.clone(), |c| c.id.clone())),
                message: message(head.and_then(|c| c.message.as_deref())),
                author: head
                    .and_then(|c| c.author.as_ref())
                    .and_then(|a| author(a.name.as_deref(), a.email.as_deref())),
            };
            Event::Push {
                updates: vec![update],
                pusher: push.pusher.and_then(|p| p.name),
            }
        }
        "ping" => {
            json_body::<serde_json::Value>(headers, body, "GitHub")?;
            Event::Ping
        }
        _ => {
            json_body::<serde_json::Value>(headers, body, "GitHub")?;
            Event::Other
        }
    };
    Ok(Parsed {
        event,
        delivery_id,
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::{fixture, headers, sign};
    use super::super::RefKind;
    use super::*;

    fn github(event: &str, signature: &str) -> HeaderMap {
        headers(&[
            (EVENT, event),
            (DELIVERY, "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
            (SIGNATURE, signature),
            ("Content-Type", "application/json"),
        ])
    }

    #[test]
    fn a_documented_push_gives_its_branch_head_commit_and_author() {
        let body = fixture("github-push.json");
        let h = github("push", &sign("s3cret", &body));
        assert_eq!(verify(&h, &body, "s3cret"), Ok(()));
        let parsed = parse(&h, &body).expect("push");
        assert_eq!(parsed.event, "push");
        assert_eq!(parsed.delivery_id, "72d3162e-cc78-11e3-81ab-4c9367dc0958");
        assert_eq!(
            parsed.kind,
            Event::Push {
                updates: vec![RefUpdate {
                    kind: RefKind::Branch,
                    name: "main".into(),
                    commit_sha: Some("2b9c6e1d1a0f4c6e8e1f0b7d5c3a9e8f7d6c5b4a".into()),
                    message: Some("Update the sale order report".into()),
                    author: Some(
                        "Codertocat <21031067+Codertocat@users.noreply.github.com>".into()
                    ),
                }],
                pusher: Some("Codertocat".into()),
            }
        );
    }

    #[test]
    fn deleted_branches_ping_and_other_events() {
        let body = fixture("github-delete-branch.json");
        let Event::Push { updates, .. } = parse(&github("push", ""), &body).expect("push").kind
        else {
            panic!("a push");
        };
        assert_eq!(updates[0].name, "feature/old-report");
        assert_eq!(updates[0].commit_sha, None, "deleted");
        let ping = parse(&github("ping", ""), &fixture("github-ping.json")).expect("ping");
        assert_eq!(ping.kind, Event::Ping);
        let issues = parse(&github("issues", ""), &fixture("github-issues.json")).expect("issues");
        assert_eq!(issues.kind, Event::Other);
        assert_eq!(issues.event, "issues");
    }

    #[test]
    fn signatures_and_headers_are_required() {
        let body = fixture("github-push.json");
        let missing = headers(&[(EVENT, "push"), (DELIVERY, "d")]);
        let err = verify(&missing, &body, "s3cret").expect_err("missing");
        assert!(matches!(err, WebhookError::Unauthenticated(_)));
        assert!(err.to_string().contains(SIGNATURE), "{err}");
        let legacy = headers(&[(EVENT, "push"), ("X-Hub-Signature", "sha1=00")]);
        assert!(verify(&legacy, &body, "s3cret")
            .expect_err("sha1")
            .to_string()
            .contains("SHA-1"));
        let other_secret = github("push", &sign("other", &body));
        assert!(matches!(
            verify(&other_secret, &body, "s3cret"),
            Err(WebhookError::Unauthenticated(_))
        ));
        let no_delivery = headers(&[(EVENT, "push")]);
        let err = parse(&no_delivery, &body).expect_err("no delivery id");
        assert!(err.to_string().contains(DELIVERY), "{err}");
        let err = parse(&github("push", ""), b"{\"ref\": 1}").expect_err("bad type");
        assert!(matches!(err, WebhookError::Malformed(_)));
        assert!(parse(&github("ping", ""), b"not json").is_err());
    }
}
