//! The HTTP surface: a small HTTP/1.1 server over `std::net` (one thread per connection, one
//! request per connection) and the routes oCore and its tests touch on Odoo's two ports.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::config::DbParams;
use crate::{db, log, sha1};

const MAX_HEADER_BYTES: usize = 64 * 1024;
const MAX_BODY_BYTES: usize = 256 * 1024 * 1024;
const IO_TIMEOUT: Duration = Duration::from_secs(60);
/// Odoo 17 runs under Werkzeug; clients and proxies see this banner.
const SERVER_HEADER: &str = "Werkzeug/2.0.2 Python/3.10.12";
const COMMIT_FILE: &str = "/etc/odoo/ocore-commit";

/// Which of Odoo's two listeners a request arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Port {
    /// The main HTTP port (8069).
    Http,
    /// The gevent (longpolling/websocket) port (8072).
    Gevent,
}

impl Port {
    fn name(self) -> &'static str {
        match self {
            Port::Http => "http",
            Port::Gevent => "gevent",
        }
    }
}

/// What request handlers share.
pub struct App {
    pub db: DbParams,
    /// The database given with `-d` or `db_name`, if any.
    pub db_name: Option<String>,
    pub data_dir: PathBuf,
    /// Set when a deployed module carries `OCORE_FAIL_HEALTH`.
    pub fail_health: bool,
    pub in_flight: InFlight,
    /// Odoo's `workers`: with 0 the HTTP port serves websockets.
    pub workers: u32,
    /// Why the database's registry did not load, if it did not.
    pub registry_error: Option<String>,
}

/// Counts requests being handled, so shutdown can let them finish.
#[derive(Default)]
pub struct InFlight {
    count: Mutex<usize>,
    idle: Condvar,
}

/// Decrements the in-flight count when a request is done.
pub struct InFlightGuard<'a>(&'a InFlight);

impl InFlight {
    pub fn enter(&self) -> InFlightGuard<'_> {
        if let Ok(mut count) = self.count.lock() {
            *count += 1;
        }
        InFlightGuard(self)
    }

    /// Waits until no request is in flight, or the grace period ends. Returns the count left.
    pub fn wait_idle(&self, grace: Duration) -> usize {
        let Ok(count) = self.count.lock() else {
            return 0;
        };
        match self.idle.wait_timeout_while(count, grace, |c| *c > 0) {
            Ok((count, _)) => *count,
            Err(_) => 0,
        }
    }
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut count) = self.0.count.lock() {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.0.idle.notify_all();
            }
        }
    }
}

/// Accepts connections on `listener` forever, handling each on its own thread.
pub fn serve(listener: TcpListener, port: Port, app: Arc<App>) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else {
            continue;
        };
        let app = Arc::clone(&app);
        let spawned = std::thread::Builder::new()
            .name(format!("odoo.service.{}.request", port.name()))
            .spawn(move || handle_connection(stream, port, &app));
        if let Err(e) = spawned {
            log::error(
                None,
                "odoo.service.server",
                &format!("cannot start a request thread: {e}"),
            );
        }
    }
}

#[derive(Debug)]
struct Request {
    method: String,
    /// The request target as sent, for the access log.
    target: String,
    path: String,
    query: BTreeMap<String, String>,
    version: String,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

struct Response {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
    location: Option<String>,
    /// `Sec-WebSocket-Accept` of a 101 answer.
    accept: Option<String>,
}

impl Response {
    fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            content_type,
            body: body.into(),
            location: None,
            accept: None,
        }
    }

    fn json(status: u16, body: String) -> Response {
        Response::new(status, "application/json", body)
    }

    fn html(status: u16, body: String) -> Response {
        Response::new(status, "text/html; charset=utf-8", body)
    }

    fn text(status: u16, body: &str) -> Response {
        Response::new(status, "text/plain; charset=utf-8", body)
    }
}

fn handle_connection(stream: TcpStream, port: Port, app: &App) {
    let _guard = app.in_flight.enter();
    let started = Instant::now();
    let peer = stream
        .peer_addr()
        .map_or_else(|_| "-".to_string(), |a: SocketAddr| a.ip().to_string());
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let mut reader = BufReader::new(&stream);
    let (request, response) = match read_request(&mut reader) {
        Ok(Some(request)) => {
            let response = route(&request, port, app);
            (Some(request), response)
        }
        // The client connected and left without a request (a TCP health probe).
        Ok(None) => return,
        Err(message) => (
            None,
            Response::text(400, &format!("Bad Request: {message}\n")),
        ),
    };
    let head_only = request.as_ref().is_some_and(|r| r.method == "HEAD");
    let mut writer = &stream;
    let _ = write_response(&mut writer, &response, head_only);
    let _ = writer.flush();
    let line = match &request {
        Some(r) => format!(
            "{peer} - - \"{} {} {}\" {} - {:.3}",
            r.method,
            r.target,
            r.version,
            response.status,
            started.elapsed().as_secs_f64()
        ),
        None => format!("{peer} - - \"<malformed>\" {} -", response.status),
    };
    log::info(app.db_name.as_deref(), "werkzeug", &line);
}

/// Reads one request. `Ok(None)` means the peer closed the connection before sending anything.
fn read_request(reader: &mut impl BufRead) -> Result<Option<Request>, String> {
    let mut head = Vec::new();
    let mut first = true;
    loop {
        let mut line = Vec::new();
        let read = reader
            .by_ref()
            .take((MAX_HEADER_BYTES - head.len().min(MAX_HEADER_BYTES)) as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(|e| format!("reading request: {e}"))?;
        if read == 0 {
            if first {
                return Ok(None);
            }
            return Err("connection closed inside the request head".to_string());
        }
        first = false;
        if head.len() + line.len() > MAX_HEADER_BYTES {
            return Err("request head too large".to_string());
        }
        if line == b"\r\n" || line == b"\n" {
            if head.is_empty() {
                // Tolerate blank lines before the request line (RFC 9112 §2.2).
                continue;
            }
            break;
        }
        head.extend_from_slice(&line);
    }
    let head = String::from_utf8(head).map_err(|_| "request head is not UTF-8".to_string())?;
    let mut lines = head.lines();
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(format!("malformed request line {request_line:?}"));
    };
    let mut headers = BTreeMap::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("malformed header line {line:?}"))?;
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    if headers
        .get("transfer-encoding")
        .is_some_and(|v| !v.eq_ignore_ascii_case("identity"))
    {
        return Err("chunked request bodies are not supported; send Content-Length".to_string());
    }
    let length = match headers.get("content-length") {
        Some(value) => value
            .parse::<usize>()
            .map_err(|_| format!("bad Content-Length {value:?}"))?,
        None => 0,
    };
    if length > MAX_BODY_BYTES {
        return Err(format!(
            "body of {length} bytes is over the {MAX_BODY_BYTES} byte limit"
        ));
    }
    let mut body = vec![0u8; length];
    reader
        .read_exact(&mut body)
        .map_err(|e| format!("reading body: {e}"))?;
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, parse_query(query)),
        None => (target, BTreeMap::new()),
    };
    Ok(Some(Request {
        method: method.to_string(),
        target: target.to_string(),
        path: percent_decode(path, false),
        query,
        version: version.to_string(),
        headers,
        body,
    }))
}

fn parse_query(query: &str) -> BTreeMap<String, String> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) => (percent_decode(k, true), percent_decode(v, true)),
            None => (percent_decode(pair, true), String::new()),
        })
        .collect()
}

/// Decodes `%XX` escapes (and `+` as space in query strings); bad escapes stay as written.
fn percent_decode(text: &str, plus_is_space: bool) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(byte) => {
                        out.push(byte);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn write_response(
    writer: &mut impl Write,
    response: &Response,
    head_only: bool,
) -> std::io::Result<()> {
    if let Some(accept) = &response.accept {
        let head = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        );
        return writer.write_all(head.as_bytes());
    }
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nServer: {SERVER_HEADER}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        response.status,
        reason(response.status),
        response.content_type,
        response.body.len()
    );
    if let Some(location) = &response.location {
        let _ = write!(head, "Location: {location}\r\n");
    }
    head.push_str("\r\n");
    writer.write_all(head.as_bytes())?;
    if !head_only {
        writer.write_all(&response.body)?;
    }
    Ok(())
}

fn reason(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        303 => "See Other",
        400 => "Bad Request",
        404 => "NOT FOUND",
        405 => "METHOD NOT ALLOWED",
        500 => "INTERNAL SERVER ERROR",
        _ => "Unknown",
    }
}

fn route(request: &Request, port: Port, app: &App) -> Response {
    let method = request.method.as_str();
    let is_get = method == "GET" || method == "HEAD";
    let allowed = |ok: bool, response: &dyn Fn() -> Response| {
        if ok {
            response()
        } else {
            Response::text(405, "Method Not Allowed\n")
        }
    };
    match request.path.as_str() {
        "/web/health" => allowed(is_get, &|| health(app)),
        "/web/login" => allowed(is_get, &|| login(request, app)),
        "/web/database/selector" => allowed(is_get, &|| selector(app)),
        "/" => allowed(is_get, &|| home(app)),
        "/websocket" => allowed(is_get, &|| websocket(request, port, app)),
        "/ocore-test/attachment" => allowed(method == "POST", &|| attachment(request, app)),
        _ => Response::html(
            404,
            "<!doctype html>\n<title>404 Not Found</title>\n<h1>Not Found</h1>\n".to_string(),
        ),
    }
}

fn health(app: &App) -> Response {
    if app.fail_health {
        Response::json(500, "{\"status\": \"fail\"}".to_string())
    } else {
        Response::json(200, "{\"status\": \"pass\"}".to_string())
    }
}

/// `/web/login` proves the database loads by querying it, as rendering Odoo's login page does.
fn login(request: &Request, app: &App) -> Response {
    let Some(db_name) = request
        .query
        .get("db")
        .filter(|d| !d.is_empty())
        .cloned()
        .or_else(|| app.db_name.clone())
    else {
        let mut response = Response::html(303, String::new());
        response.location = Some("/web/database/selector".to_string());
        return response;
    };
    if let (Some(reason), Some(served)) = (&app.registry_error, &app.db_name) {
        if *served == db_name {
            return Response::html(
                500,
                format!(
                    "<!doctype html>\n<title>500 Internal Server Error</title>\n<p>{}</p>\n",
                    html_escape(reason)
                ),
            );
        }
    }
    let result =
        db::connect(&app.db, &db_name).and_then(|mut client| db::count_modules(&mut client));
    match result {
        Ok(count) => Response::html(
            200,
            format!(
                "<!doctype html>\n<html><head><title>Login | Odoo</title></head><body>\n<form class=\"oe_login_form\" action=\"/web/login\" method=\"post\">\n<p>database {}</p>\n<p>modules {count}</p>\n</form>\n</body></html>\n",
                html_escape(&db_name)
            ),
        ),
        Err(e) => {
            log::error(
                Some(&db_name),
                "odoo.sql_db",
                &format!("Connection to the database failed: {}", db::describe(&e)),
            );
            Response::html(
                500,
                format!(
                    "<!doctype html>\n<title>500 Internal Server Error</title>\n<p>database {} cannot be loaded: {}</p>\n",
                    html_escape(&db_name),
                    html_escape(&db::describe(&e))
                ),
            )
        }
    }
}

fn selector(app: &App) -> Response {
    match db::list_databases(&app.db) {
        Ok(names) => {
            let mut body = String::from("<!doctype html>\n<title>Odoo</title>\n<ul>\n");
            for name in names {
                let _ = writeln!(
                    body,
                    "<li><a href=\"/web/login?db={0}\">{0}</a></li>",
                    html_escape(&name)
                );
            }
            body.push_str("</ul>\n");
            Response::html(200, body)
        }
        Err(e) => Response::html(
            500,
            format!(
                "<p>cannot list databases: {}</p>\n",
                html_escape(&db::describe(&e))
            ),
        ),
    }
}

/// The deployed commit: `OCORE_COMMIT`, else `/etc/odoo/ocore-commit`.
fn commit() -> String {
    std::env::var("OCORE_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(|| std::fs::read_to_string(COMMIT_FILE).ok())
        .map_or_else(|| "unknown".to_string(), |c| c.trim().to_string())
}

/// `/` shows what is deployed, one greppable fact per line.
fn home(app: &App) -> Response {
    let mut facts = format!("commit {}\n", commit());
    let _ = writeln!(facts, "database {}", app.db_name.as_deref().unwrap_or("?"));
    if let Some(db_name) = &app.db_name {
        let modules =
            db::connect(&app.db, db_name).and_then(|mut client| db::installed_modules(&mut client));
        match modules {
            Ok(modules) => {
                for (name, version) in modules {
                    let _ = writeln!(facts, "module {name} {version}");
                }
            }
            Err(e) => {
                return Response::html(
                    500,
                    format!(
                        "<!doctype html>\n<title>500 Internal Server Error</title>\n<pre>\n{}error {}\n</pre>\n",
                        html_escape(&facts),
                        html_escape(&db::describe(&e))
                    ),
                )
            }
        }
    }
    Response::html(
        200,
        format!(
            "<!doctype html>\n<html><head><title>Odoo</title></head><body>\n<h1>Odoo 17.0 (oCore test stand-in)</h1>\n<pre>\n{}</pre>\n</body></html>\n",
            html_escape(&facts)
        ),
    )
}

/// `/websocket`: a threaded Odoo (`workers = 0`) answers it on the HTTP port; with workers
/// only the gevent process does, and the HTTP port refuses it. An upgrade request with an
/// `Origin` answers `101 Switching Protocols` (the connection is then closed: the stand-in
/// speaks no websocket frames).
fn websocket(request: &Request, port: Port, app: &App) -> Response {
    let serves = match port {
        Port::Gevent => app.workers > 0,
        Port::Http => app.workers == 0,
    };
    if !serves {
        return Response::text(
            400,
            "Couldn't bind the websocket. Is the connection opened on the evented port (8072)?\n",
        );
    }
    let header = |name: &str| request.headers.get(name).map(String::as_str).unwrap_or("");
    let upgrade = header("upgrade").eq_ignore_ascii_case("websocket")
        && header("connection")
            .split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    let key = header("sec-websocket-key");
    if !upgrade || key.is_empty() || header("sec-websocket-version") != "13" {
        return Response::text(400, "Bad Request: not a websocket handshake\n");
    }
    if header("origin").is_empty() {
        return Response::text(400, "Bad Request: missing Origin header\n");
    }
    if let Some(reason) = &app.registry_error {
        return Response::text(500, &format!("{reason}\n"));
    }
    let mut response = Response::new(101, "text/plain", Vec::new());
    response.accept = Some(websocket_accept(key));
    response
}

/// `Sec-WebSocket-Accept` for a key (RFC 6455 section 4.2.2).
fn websocket_accept(key: &str) -> String {
    let digest = sha1::raw_digest(format!("{key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11").as_bytes());
    base64(&digest)
}

fn base64(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Stores the body as an attachment: the file in Odoo's filestore layout, then the row.
fn attachment(request: &Request, app: &App) -> Response {
    let Some(db_name) = request
        .query
        .get("db")
        .filter(|d| !d.is_empty())
        .cloned()
        .or_else(|| app.db_name.clone())
    else {
        return Response::json(
            400,
            "{\"error\": \"no database: start with -d or pass ?db=\"}".to_string(),
        );
    };
    let name = request
        .query
        .get("name")
        .cloned()
        .unwrap_or_else(|| "attachment".to_string());
    let mimetype = request
        .headers
        .get("content-type")
        .cloned()
        .unwrap_or_else(|| "application/octet-stream".to_string());
    let checksum = sha1::hex_digest(&request.body);
    let store_fname = format!("{}/{}", &checksum[..2], checksum);
    let filestore = app.data_dir.join("filestore").join(&db_name);
    if let Err(e) = write_filestore_file(&filestore, &store_fname, &request.body) {
        log::error(Some(&db_name), "odoo.addons.base.models.ir_attachment", &e);
        return Response::json(500, format!("{{\"error\": {}}}", json_string(&e)));
    }
    let Ok(size) = i32::try_from(request.body.len()) else {
        return Response::json(400, "{\"error\": \"attachment too large\"}".to_string());
    };
    let inserted = db::connect(&app.db, &db_name).and_then(|mut client| {
        db::insert_attachment(&mut client, &name, &store_fname, &checksum, size, &mimetype)
    });
    match inserted {
        Ok(id) => Response::json(
            200,
            format!(
                "{{\"id\": {id}, \"store_fname\": {}, \"checksum\": {}}}",
                json_string(&store_fname),
                json_string(&checksum)
            ),
        ),
        Err(e) => Response::json(
            500,
            format!("{{\"error\": {}}}", json_string(&e.to_string())),
        ),
    }
}

/// Writes a filestore file as Odoo's `_file_write` does: only if absent (names are content
/// hashes, never rewritten), and with an empty marker under `checklist/` for the garbage
/// collector.
fn write_filestore_file(filestore: &Path, store_fname: &str, content: &[u8]) -> Result<(), String> {
    let full = filestore.join(store_fname);
    if full.exists() {
        return Ok(());
    }
    if let Some(parent) = full.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create filestore folder {}: {e}", parent.display()))?;
    }
    std::fs::write(&full, content)
        .map_err(|e| format!("cannot write filestore file {}: {e}", full.display()))?;
    let mark = filestore.join("checklist").join(store_fname);
    if let Some(parent) = mark.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create checklist folder {}: {e}", parent.display()))?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&mark)
        .map_err(|e| format!("cannot write checklist entry {}: {e}", mark.display()))?;
    Ok(())
}

fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            other => out.push(other),
        }
    }
    out
}

fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(raw: &[u8]) -> Result<Option<Request>, String> {
        read_request(&mut BufReader::new(raw))
    }

    #[test]
    fn reads_a_request_with_query_and_body() {
        let request = read(
            b"POST /ocore-test/attachment?name=my+file%2Etxt&db=t HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello",
        )
        .expect("parses")
        .expect("a request");
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/ocore-test/attachment");
        assert_eq!(
            request.query.get("name").map(String::as_str),
            Some("my file.txt")
        );
        assert_eq!(request.query.get("db").map(String::as_str), Some("t"));
        assert_eq!(
            request.headers.get("content-type").map(String::as_str),
            Some("text/plain")
        );
        assert_eq!(request.body, b"hello");
    }

    #[test]
    fn rejects_malformed_requests() {
        assert_eq!(read(b"").expect("empty is fine").map(|r| r.path), None);
        assert!(read(b"GET\r\n\r\n").is_err());
        assert!(read(b"GET / HTTP/1.1\r\nbad header\r\n\r\n").is_err());
        assert!(read(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nshort").is_err());
        assert!(read(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").is_err());
    }

    #[test]
    fn decodes_percent_escapes() {
        assert_eq!(percent_decode("a%20b+c", true), "a b c");
        assert_eq!(percent_decode("a+b", false), "a+b");
        assert_eq!(percent_decode("100%", true), "100%");
        assert_eq!(percent_decode("%zz", true), "%zz");
    }

    #[test]
    fn writes_responses_with_connection_close() {
        let mut out = Vec::new();
        write_response(
            &mut out,
            &Response::json(200, "{\"status\": \"pass\"}".into()),
            false,
        )
        .expect("writes");
        let text = String::from_utf8(out).expect("utf-8");
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(
            text.contains("Content-Type: application/json\r\n"),
            "{text}"
        );
        assert!(text.contains("Connection: close\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\n{\"status\": \"pass\"}"), "{text}");
    }

    #[test]
    fn websocket_accept_follows_rfc_6455() {
        // The example of RFC 6455 section 1.3.
        assert_eq!(
            websocket_accept("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"a"), "YQ==");
    }

    #[test]
    fn escapes_html_and_json() {
        assert_eq!(html_escape("<a&\"b'>"), "&lt;a&amp;&quot;b&#39;&gt;");
        assert_eq!(json_string("a\"b\\\n\u{1}"), "\"a\\\"b\\\\\\n\\u0001\"");
    }

    #[test]
    fn writes_filestore_files_in_odoo_layout() {
        let dir =
            std::env::temp_dir().join(format!("odoo-standin-filestore-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let checksum = sha1::hex_digest(b"content");
        let store_fname = format!("{}/{}", &checksum[..2], checksum);
        write_filestore_file(&dir, &store_fname, b"content").expect("writes");
        assert_eq!(
            std::fs::read(dir.join(&store_fname)).expect("file exists"),
            b"content"
        );
        assert!(dir.join("checklist").join(&store_fname).is_file());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn in_flight_waits_for_requests_to_finish() {
        let in_flight = Arc::new(InFlight::default());
        assert_eq!(in_flight.wait_idle(Duration::from_millis(1)), 0);
        let worker = Arc::clone(&in_flight);
        let (entered_tx, entered_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let handle = std::thread::spawn(move || {
            let _guard = worker.enter();
            let _ = entered_tx.send(());
            let _ = release_rx.recv();
        });
        entered_rx.recv().expect("worker entered");
        assert_eq!(in_flight.wait_idle(Duration::from_millis(10)), 1);
        release_tx.send(()).expect("release worker");
        assert_eq!(in_flight.wait_idle(Duration::from_secs(5)), 0);
        handle.join().expect("worker finishes");
    }
}
