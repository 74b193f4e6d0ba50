//! API tokens: stored by id with only the SHA-256 of the secret; a second tree maps the
//! hash to the id so a bearer token is found without scanning.

use serde::{Deserialize, Serialize};

use crate::auth::Permission;

/// A permission on one project.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Grant {
    pub project: String,
    pub permission: Permission,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TokenRecord {
    pub id: String,
    pub name: String,
    /// SHA-256 (hex) of the token text; the text itself is shown once and never stored.
    pub hash: String,
    pub admin: bool,
    #[serde(default)]
    pub grants: Vec<Grant>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

impl TokenRecord {
    /// Neither revoked nor expired at `now`: the token authenticates.
    pub fn is_active(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|at| now < at)
    }
}

/// Why revoking `id` is refused: it is the last active admin token among `tokens`, and
/// revoking it would lock every administrator out for good.
pub fn last_admin_refusal(tokens: &[TokenRecord], id: &str, now: i64) -> Option<String> {
    let target = tokens.iter().find(|t| t.id == id)?;
    if !target.admin || !target.is_active(now) {
        return None;
    }
    let others = tokens
        .iter()
        .filter(|t| t.id != id && t.admin && t.is_active(now))
        .count();
    (others == 0).then(|| {
        format!(
            "token {id} is the last active admin token; revoking it would leave no way to administer oCore. Create another admin token first (ocore token create --admin --name NAME); if every admin token is lost, run `ocore token recover-admin` on the coordinator host"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(
        id: &str,
        admin: bool,
        expires_at: Option<i64>,
        revoked_at: Option<i64>,
    ) -> TokenRecord {
        TokenRecord {
            id: id.into(),
            name: id.into(),
            hash: format!("hash-{id}"),
            admin,
            grants: Vec::new(),
            created_at: 0,
            expires_at,
            revoked_at,
        }
    }

    #[test]
    fn the_last_active_admin_token_cannot_be_revoked() {
        let now = 1_000;
        let cases: &[(&str, Vec<TokenRecord>, &str, bool)] = &[
            ("only admin", vec![token("a", true, None, None)], "a", true),
            (
                "another admin stays",
                vec![token("a", true, None, None), token("b", true, None, None)],
                "a",
                false,
            ),
            (
                "the other admin is revoked",
                vec![
                    token("a", true, None, None),
                    token("b", true, None, Some(5)),
                ],
                "a",
                true,
            ),
            (
                "the other admin has expired",
                vec![
                    token("a", true, None, None),
                    token("b", true, Some(now), None),
                ],
                "a",
                true,
            ),
            (
                "the other admin expires later",
                vec![
                    token("a", true, None, None),
                    token("b", true, Some(now + 1), None),
                ],
                "a",
                false,
            ),
            (
                "a non-admin token",
                vec![token("a", true, None, None), token("c", false, None, None)],
                "c",
                false,
            ),
            (
                "already revoked",
                vec![
                    token("a", true, None, None),
                    token("r", true, None, Some(1)),
                ],
                "r",
                false,
            ),
            ("unknown id", vec![token("a", true, None, None)], "x", false),
        ];
        for (what, tokens, id, refused) in cases {
            assert_eq!(
                last_admin_refusal(tokens, id, now).is_some(),
                *refused,
                "{what}"
            );
        }
    }
}
