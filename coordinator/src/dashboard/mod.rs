//! The browser dashboard: static HTML, CSS and JavaScript compiled into the binary and
//! served under `/` (the API stays under `/api`). The page does everything through the
//! public API with the signed-in token; this module only hands out files, with headers that
//! forbid inline script, framing and content sniffing.
//!
//! There is no build step: the assets are plain ES modules, listed in `ASSETS` and embedded
//! with `include_bytes!`. Nothing here reads the disk, so no request path can reach a file.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};

/// The page's Content-Security-Policy: scripts, styles and connections only from this
/// origin, no inline script or style, no plugins, no framing, and no native form
/// submission (forms are handled by script, so a token can never end up in a URL).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; \
     manifest-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Browsers revalidate every asset (a cheap 304 thanks to the ETag), so a coordinator
/// upgrade never leaves a stale script running against a newer API.
const CACHE_CONTROL: &str = "no-cache";

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const SVG: &str = "image/svg+xml";

/// One embedded file: its path under `/assets/`, its media type and its bytes.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $type:expr) => {
        Asset {
            path: $path,
            content_type: $type,
            body: include_bytes!(concat!("assets/", $path)),
        }
    };
}

/// Every file of `assets/` (a unit test checks the list against the folder).
const ASSETS: &[Asset] = &[
    asset!("index.html", HTML),
    asset!("style.css", CSS),
    asset!("icon.svg", SVG),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("dom.js", JS),
    asset!("sse.js", JS),
    asset!("live.js", JS),
    asset!("plan.js", JS),
    asset!("pages/signin.js", JS),
    asset!("pages/projects.js", JS),
    asset!("pages/history.js", JS),
    asset!("pages/deploy.js", JS),
    asset!("pages/deployment.js", JS),
    asset!("pages/environments.js", JS),
    asset!("pages/agents.js", JS),
    asset!("pages/webhooks.js", JS),
];

/// A strong ETag per asset, from its content.
static ETAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|a| format!("\"{}\"", hex::encode(&Sha256::digest(a.body)[..12])))
        .collect()
});

/// The dashboard's routes, merged into the API router (they need no state).
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/assets/{*path}", get(asset))
}

async fn index(headers: HeaderMap) -> Response {
    serve("index.html", headers.get(header::IF_NONE_MATCH))
}

async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    serve(&path, headers.get(header::IF_NONE_MATCH))
}

/// The answer for a path outside `/api` that names no page or asset.
pub fn not_found() -> Response {
    secured(
        (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "no such page; the oCore dashboard is at /\n",
        )
            .into_response(),
    )
}

/// The response for the asset at `path`: the file, a 304 when `if_none_match` names its
/// current ETag, or a 404.
fn serve(path: &str, if_none_match: Option<&HeaderValue>) -> Response {
    let Some(i) = ASSETS.iter().position(|a| a.path == path) else {
        return not_found();
    };
    let (asset, etag) = (&ASSETS[i], ETAGS[i].as_str());
    let fresh = if_none_match
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let cache = [(header::ETAG, etag), (header::CACHE_CONTROL, CACHE_CONTROL)];
    let response = if fresh {
        (StatusCode::NOT_MODIFIED, cache).into_response()
    } else {
        (
            StatusCode::OK,
            cache,
            [(header::CONTENT_TYPE, asset.content_type)],
            asset.body,
        )
            .into_response()
    };
    secured(response)
}

/// Adds the headers every dashboard response carries.
fn secured(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    response
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::{Path as FsPath, PathBuf};

    use super::*;

    fn header(r: &Response, name: header::HeaderName) -> &str {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    fn files(dir: &FsPath, base: &FsPath, out: &mut BTreeSet<String>) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_dir() {
                files(&path, base, out)?;
            } else if let Ok(rel) = path.strip_prefix(base) {
                out.insert(rel.to_string_lossy().into_owned());
            }
        }
        Ok(())
    }

    fn assets_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/dashboard/assets")
    }

    #[test]
    fn every_file_of_the_assets_folder_is_embedded() -> std::io::Result<()> {
        let mut on_disk = BTreeSet::new();
        files(&assets_dir(), &assets_dir(), &mut on_disk)?;
        let listed: BTreeSet<String> = ASSETS.iter().map(|a| a.path.to_owned()).collect();
        assert_eq!(on_disk, listed);
        Ok(())
    }

    /// Every module a script imports is an embedded asset, so the page cannot break on a
    /// file left out of `ASSETS`.
    #[test]
    fn every_import_resolves_to_an_embedded_script() {
        let mut imports = 0;
        for a in ASSETS.iter().filter(|a| a.content_type == JS) {
            let text = String::from_utf8_lossy(a.body);
            let dir = a.path.rsplit_once('/').map_or("", |(d, _)| d);
            // `import … from '…';` on one line, or the closing line of a long one.
            let specs = text
                .lines()
                .map(str::trim)
                .filter(|l| l.starts_with("import ") || l.starts_with("} from '"))
                .filter_map(|l| l.split_once("from '"))
                .filter_map(|(_, rest)| rest.split_once('\''))
                .map(|(spec, _)| spec);
            for spec in specs {
                imports += 1;
                let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
                for piece in spec.split('/') {
                    match piece {
                        "." => {}
                        ".." => {
                            parts.pop();
                        }
                        p => parts.push(p),
                    }
                }
                let target = parts.join("/");
                assert!(
                    ASSETS.iter().any(|x| x.path == target),
                    "{} imports {spec} ({target}), which is not embedded",
                    a.path
                );
            }
        }
        assert!(imports > 20, "only {imports} imports found");
    }

    #[test]
    fn assets_carry_their_type_the_policy_and_a_validator() {
        for (path, kind) in [
            ("index.html", HTML),
            ("app.js", JS),
            ("pages/deployment.js", JS),
            ("style.css", CSS),
            ("icon.svg", SVG),
        ] {
            let r = serve(path, None);
            assert_eq!(r.status(), StatusCode::OK, "{path}");
            assert_eq!(header(&r, header::CONTENT_TYPE), kind, "{path}");
            assert_eq!(header(&r, header::X_CONTENT_TYPE_OPTIONS), "nosniff");
            assert_eq!(header(&r, header::CACHE_CONTROL), "no-cache");
            assert!(header(&r, header::ETAG).starts_with('"'), "{path}");
            let csp = header(&r, header::CONTENT_SECURITY_POLICY);
            assert!(csp.contains("script-src 'self';"), "{csp}");
            assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
            assert!(!csp.contains("unsafe"), "{csp}");
        }
    }

    #[test]
    fn a_known_etag_gets_304_and_unknown_paths_404() {
        let first = serve("app.js", None);
        let etag = HeaderValue::from_str(header(&first, header::ETAG)).expect("etag");
        let again = serve("app.js", Some(&etag));
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(header(&again, header::ETAG), etag.to_str().unwrap_or(""));
        let stale = HeaderValue::from_static("\"0000\"");
        assert_eq!(serve("app.js", Some(&stale)).status(), StatusCode::OK);
        for missing in [
            "nope.js",
            "../Cargo.toml",
            "pages/../../mod.rs",
            "",
            "pages",
        ] {
            let r = serve(missing, None);
            assert_eq!(r.status(), StatusCode::NOT_FOUND, "{missing}");
            assert_eq!(header(&r, header::X_CONTENT_TYPE_OPTIONS), "nosniff");
        }
    }

    /// The page loads only external scripts and styles: an inline one would be refused by
    /// the policy in every browser.
    #[test]
    fn the_page_has_no_inline_script_or_style() {
        let html = ASSETS
            .iter()
            .find(|a| a.path == "index.html")
            .map(|a| String::from_utf8_lossy(a.body).into_owned())
            .unwrap_or_default();
        for piece in html.split('<').skip(1) {
            let tag = piece.split('>').next().unwrap_or_default();
            if tag.starts_with("script") {
                assert!(tag.contains(" src=\"/assets/"), "inline script: <{tag}>");
            }
            assert!(!tag.starts_with("style"), "inline style: <{tag}>");
            assert!(!tag.contains(" style="), "inline style attribute: <{tag}>");
            assert!(
                !tag.split_whitespace().any(|a| a.starts_with("on")),
                "inline handler: <{tag}>"
            );
        }
    }

    /// Scripts build the page from text only, so nothing the API returns becomes markup.
    #[test]
    fn scripts_never_parse_html_or_evaluate_text() {
        for a in ASSETS.iter().filter(|a| a.content_type == JS) {
            let text = String::from_utf8_lossy(a.body);
            for banned in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
                "new Function",
            ] {
                assert!(!text.contains(banned), "{} uses {banned}", a.path);
            }
        }
    }
}
