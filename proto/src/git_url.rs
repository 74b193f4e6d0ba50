//! Which server a Git URL names, as both sides decide it: the coordinator forgets a
//! project's pinned SSH host key when its URL moves to another server, and the agent hands
//! a project's credentials and pin only to submodules on the project's own server.

/// The server part of a Git URL (`host` or `host:port`, lower-cased, without user info);
/// `None` for local paths and `file://` URLs.
pub fn server(url: &str) -> Option<String> {
    let authority = match url.split_once("://") {
        Some(("file", _)) => return None,
        Some((_, rest)) => rest.split('/').next()?,
        None if url.starts_with('/') || url.starts_with('.') => return None,
        // scp-like `user@host:path`
        None => url.split_once(':')?.0,
    };
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_are_found_in_every_url_form() {
        assert_eq!(
            server("ssh://git@Example.com:2222/a/b.git").as_deref(),
            Some("example.com:2222")
        );
        assert_eq!(
            server("git@github.com:acme/shop.git").as_deref(),
            Some("github.com")
        );
        assert_eq!(
            server("https://ci@GitHub.com/OCA/web.git").as_deref(),
            Some("github.com")
        );
        assert_ne!(
            server("https://github.com/OCA/web.git"),
            server("ssh://git@github.com:2222/acme/shop.git")
        );
        assert_eq!(server("/srv/git/shop"), None);
        assert_eq!(server("../tools.git"), None);
        assert_eq!(server("file:///srv/git/shop"), None);
    }
}
