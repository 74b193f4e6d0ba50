//! Certificate identities: how the coordinator and each agent are named inside certificates
//! issued by the oCore CA, and how a CA is fingerprinted for pinning.
//!
//! Both daemons must agree on these rules, so they live with the wire contract.

use sha2::{Digest, Sha256};

/// DNS name carried (as a subject alternative name) by the coordinator's client certificate.
pub const COORDINATOR_DNS_NAME: &str = "coordinator.ocore.internal";

/// Suffix of every agent's DNS name: agent `web1` is `web1.agent.ocore.internal`.
pub const AGENT_DNS_SUFFIX: &str = ".agent.ocore.internal";

/// Longest agent name; keeps the name a single DNS label.
pub const MAX_AGENT_NAME_LEN: usize = 63;

/// Why a proposed agent name is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidAgentName(pub String);

impl std::fmt::Display for InvalidAgentName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidAgentName {}

/// Checks that `name` is a lower-case DNS label (letters, digits, inner hyphens, 1-63 long).
///
/// Agent names end up in certificate names and file names, so nothing else is accepted.
pub fn validate_agent_name(name: &str) -> Result<(), InvalidAgentName> {
    if name.is_empty() || name.len() > MAX_AGENT_NAME_LEN {
        return Err(InvalidAgentName(format!(
            "agent name must be 1 to {MAX_AGENT_NAME_LEN} characters, got {}",
            name.len()
        )));
    }
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !ok_chars || name.starts_with('-') || name.ends_with('-') {
        return Err(InvalidAgentName(format!(
            "agent name {name:?} must use only a-z, 0-9 and inner '-'"
        )));
    }
    Ok(())
}

/// The DNS name an agent's server certificate carries.
pub fn agent_dns_name(name: &str) -> String {
    format!("{name}{AGENT_DNS_SUFFIX}")
}

/// Extracts the agent name from a DNS name built by [`agent_dns_name`].
pub fn agent_name_from_dns(dns: &str) -> Option<&str> {
    let name = dns.strip_suffix(AGENT_DNS_SUFFIX)?;
    validate_agent_name(name).ok().map(|()| name)
}

/// SHA-256 fingerprint of a DER certificate, lower-case hex. Enrolment tokens carry the CA's.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_names_are_dns_labels() {
        assert!(validate_agent_name("web-1").is_ok());
        assert!(validate_agent_name("a").is_ok());
        for bad in [
            "",
            "-a",
            "a-",
            "Web",
            "a.b",
            "a_b",
            "a/b",
            "a b",
            &"x".repeat(64),
        ] {
            assert!(validate_agent_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn dns_name_round_trips() {
        let dns = agent_dns_name("web-1");
        assert_eq!(dns, "web-1.agent.ocore.internal");
        assert_eq!(agent_name_from_dns(&dns), Some("web-1"));
        assert_eq!(agent_name_from_dns("web-1.other"), None);
        assert_eq!(agent_name_from_dns(".agent.ocore.internal"), None);
    }

    #[test]
    fn fingerprint_is_sha256_hex() {
        assert_eq!(
            fingerprint(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
