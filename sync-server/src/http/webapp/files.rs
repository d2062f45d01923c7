//! The board app's files, embedded in the binary, and the bodies made from them once per
//! process: the app's version, the shell and the service worker with it filled in, each body's
//! gzip and ETags.
//!
//! Every file under `client-wasm/app/` is read when the crate is compiled, in debug builds too
//! (rust-embed's `debug-embed`), so tests serve exactly what a release serves and nothing is
//! read from disk at run time; `build.rs` recompiles the crate when a file there is added,
//! changed or removed. Names with a segment starting with `.` (`.gitignore`, `.DS_Store`) are
//! left out.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::OnceLock;

use axum::http::HeaderValue;
use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};
use tokio::task::JoinError;

#[derive(rust_embed::Embed)]
#[folder = "../client-wasm/app/"]
struct Embedded;

/// The app shell, served at `/` and `/b/{board}`.
const SHELL: &str = "index.html";
/// The service worker, served at `/sw.js`.
const WORKER: &str = "sw.js";
/// Replaced by the version in the shell and the service worker.
const VERSION_MARK: &[u8] = b"__APP_VERSION__";
/// Replaced by the JSON array of the URLs the offline shell needs, in the service worker.
const ASSETS_MARK: &[u8] = b"__APP_ASSETS__";
/// Hex digits of the version.
const VERSION_LEN: usize = 12;

/// The app as served: built on first use, once per process.
#[derive(Debug)]
pub(super) struct WebApp {
    /// A hash of every file's path and bytes (12 hex digits): the `{version}` of asset URLs.
    pub(super) version: String,
    /// `index.html`, the version filled in; `None` if the directory has none.
    pub(super) shell: Option<Body>,
    /// `sw.js`, the version and the URL list filled in; `None` if the directory has none.
    pub(super) worker: Option<Body>,
    /// Every other file, by its path under the directory (`app.css`, `pkg/client_wasm.js`).
    pub(super) assets: HashMap<String, Body>,
}

/// One file ready to send.
#[derive(Debug)]
pub(super) struct Body {
    pub(super) content_type: &'static str,
    pub(super) identity: Encoded,
    /// For compressible types, when it is smaller.
    pub(super) gzip: Option<Encoded>,
}

/// A body in one content coding, with its ETag.
#[derive(Debug)]
pub(super) struct Encoded {
    pub(super) bytes: Bytes,
    pub(super) etag: HeaderValue,
}

static APP: OnceLock<WebApp> = OnceLock::new();

/// The app, built the first time it is asked for (hashing and compressing take a moment, on the
/// blocking pool, so neither a server that never serves it nor a runtime thread pays for it).
pub(super) async fn app() -> Result<&'static WebApp, JoinError> {
    if let Some(app) = APP.get() {
        return Ok(app);
    }
    tokio::task::spawn_blocking(|| APP.get_or_init(|| WebApp::build(embedded()))).await
}

/// The embedded files by path (sorted), without hidden ones.
fn embedded() -> BTreeMap<String, Bytes> {
    Embedded::iter()
        .filter(|path| !path.split('/').any(|segment| segment.starts_with('.')))
        .filter_map(|path| {
            let data = match Embedded::get(&path)?.data {
                Cow::Borrowed(data) => Bytes::from_static(data),
                Cow::Owned(data) => Bytes::from(data),
            };
            Some((path.into_owned(), data))
        })
        .collect()
}

impl WebApp {
    fn build(files: BTreeMap<String, Bytes>) -> Self {
        let version = version(&files);
        let mut urls = vec!["/".to_owned()];
        let (mut shell, mut worker) = (None, None);
        let mut assets = HashMap::new();
        for (path, data) in files {
            match path.as_str() {
                SHELL => shell = Some(data),
                WORKER => worker = Some(data),
                _ => {
                    urls.push(format!("/app/{version}/{path}"));
                    let body = Body::new(content_type(&path), data);
                    assets.insert(path, body);
                }
            }
        }
        urls.sort();
        let urls = serde_json::Value::from(urls).to_string();
        let shell = shell.map(|data| {
            let data = replace(&data, VERSION_MARK, version.as_bytes());
            Body::new(content_type(SHELL), data.into())
        });
        let worker = worker.map(|data| {
            let data = replace(&data, ASSETS_MARK, urls.as_bytes());
            let data = replace(&data, VERSION_MARK, version.as_bytes());
            Body::new(content_type(WORKER), data.into())
        });
        Self {
            version,
            shell,
            worker,
            assets,
        }
    }
}

impl Body {
    fn new((content_type, compressible): (&'static str, bool), bytes: Bytes) -> Self {
        let gzip = compressible
            .then(|| gzip(&bytes))
            .flatten()
            .filter(|gz| gz.len() < bytes.len())
            .map(|gz| Encoded::new(gz.into()));
        Self {
            content_type,
            identity: Encoded::new(bytes),
            gzip,
        }
    }
}

impl Encoded {
    fn new(bytes: Bytes) -> Self {
        let digest = hex(&Sha256::digest(&bytes));
        // Hex digits and quotes: always a valid header value.
        let etag = HeaderValue::try_from(format!("\"{}\"", &digest[..32]))
            .unwrap_or_else(|_| HeaderValue::from_static("\"\""));
        Self { bytes, etag }
    }
}

/// The first 12 hex digits of a SHA-256 over every file's path and bytes, lengths included so
/// that no two different sets of files hash the same input.
fn version(files: &BTreeMap<String, Bytes>) -> String {
    let mut hash = Sha256::new();
    for (path, data) in files {
        hash.update((path.len() as u64).to_le_bytes());
        hash.update(path.as_bytes());
        hash.update((data.len() as u64).to_le_bytes());
        hash.update(data);
    }
    let mut version = hex(&hash.finalize());
    version.truncate(VERSION_LEN);
    version
}

/// The media type of a file by its extension, and whether gzip is worth trying on it.
fn content_type(path: &str) -> (&'static str, bool) {
    let extension = path.rsplit_once('.').map_or("", |(_, e)| e);
    match extension.to_ascii_lowercase().as_str() {
        "html" => ("text/html; charset=utf-8", true),
        "js" | "mjs" => ("text/javascript; charset=utf-8", true),
        "css" => ("text/css; charset=utf-8", true),
        "wasm" => ("application/wasm", true),
        "svg" => ("image/svg+xml", true),
        "json" | "map" => ("application/json", true),
        "webmanifest" => ("application/manifest+json", true),
        "txt" => ("text/plain; charset=utf-8", true),
        "png" => ("image/png", false),
        "jpg" | "jpeg" => ("image/jpeg", false),
        "webp" => ("image/webp", false),
        "ico" => ("image/x-icon", true),
        "woff2" => ("font/woff2", false),
        _ => ("application/octet-stream", false),
    }
}

/// `data` gzipped at the best level (no file name, time 0: the same bytes every time).
fn gzip(data: &[u8]) -> Option<Vec<u8>> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
    encoder.write_all(data).ok()?;
    encoder.finish().ok()
}

/// `data` with every occurrence of `mark` replaced by `with`.
fn replace(data: &[u8], mark: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut rest = data;
    while let Some(at) = rest.windows(mark.len()).position(|w| w == mark) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(with);
        rest = &rest[at + mark.len()..];
    }
    out.extend_from_slice(rest);
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::io::Read;

    use super::*;

    fn files(entries: &[(&str, &[u8])]) -> BTreeMap<String, Bytes> {
        entries
            .iter()
            .map(|(p, d)| ((*p).to_owned(), Bytes::copy_from_slice(d)))
            .collect()
    }

    const SAMPLE: &[(&str, &[u8])] = &[
        (
            "index.html",
            b"<link href=\"/app/__APP_VERSION__/app.css\">",
        ),
        ("sw.js", b"const V = '__APP_VERSION__', A = __APP_ASSETS__"),
        ("app.css", b"body{margin:0}"),
        ("js/main.js", b"console.log(1)"),
    ];

    #[test]
    fn version_changes_with_any_byte_or_name() {
        let base = version(&files(SAMPLE));
        assert_eq!(base.len(), VERSION_LEN);
        assert!(base.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(version(&files(SAMPLE)), base, "deterministic");
        for (i, &(path, data)) in SAMPLE.iter().enumerate() {
            for at in 0..data.len() {
                let mut changed = SAMPLE.to_vec();
                let mut bytes = data.to_vec();
                bytes[at] ^= 1;
                changed[i] = (path, &bytes);
                assert_ne!(version(&files(&changed)), base, "{path} byte {at}");
            }
            let mut renamed = SAMPLE.to_vec();
            let name = format!("x{path}");
            renamed[i] = (name.as_str(), data);
            assert_ne!(version(&files(&renamed)), base, "{path} renamed");
        }
        // Bytes moved from one file's end to the next file's name.
        assert_ne!(
            version(&files(&[("a", b"bc"), ("d", b"")])),
            version(&files(&[("a", b"b"), ("cd", b"")]))
        );
        let mut added = SAMPLE.to_vec();
        added.push(("more.js", b""));
        assert_ne!(version(&files(&added)), base);
    }

    #[test]
    fn shell_and_worker_are_filled_in() {
        let app = WebApp::build(files(SAMPLE));
        let v = &app.version;
        let shell = &app.shell.as_ref().unwrap().identity.bytes;
        assert_eq!(
            std::str::from_utf8(shell).unwrap(),
            format!("<link href=\"/app/{v}/app.css\">")
        );
        let worker = &app.worker.as_ref().unwrap().identity.bytes;
        assert_eq!(
            std::str::from_utf8(worker).unwrap(),
            format!("const V = '{v}', A = [\"/\",\"/app/{v}/app.css\",\"/app/{v}/js/main.js\"]")
        );
        let mut assets: Vec<_> = app.assets.keys().map(String::as_str).collect();
        assets.sort();
        assert_eq!(assets, ["app.css", "js/main.js"]);
        assert_eq!(
            app.assets["app.css"].content_type,
            "text/css; charset=utf-8"
        );
    }

    #[test]
    fn gzip_round_trips_and_etags_differ() {
        let text = "function f() { return 1 }\n".repeat(100);
        let body = Body::new(content_type("a.js"), Bytes::from(text.clone()));
        let gz = body.gzip.as_ref().unwrap();
        let mut out = String::new();
        flate2::read::GzDecoder::new(&gz.bytes[..])
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, text);
        assert_ne!(gz.etag, body.identity.etag);
        // Not compressible, or not smaller: identity only.
        assert!(Body::new(content_type("a.png"), text.into()).gzip.is_none());
        assert!(
            Body::new(content_type("a.js"), Bytes::from_static(b"x"))
                .gzip
                .is_none()
        );
    }

    #[test]
    fn the_embedded_app_has_a_shell_and_a_worker() {
        let files = embedded();
        assert!(files.contains_key(SHELL) && files.contains_key(WORKER));
        let app = WebApp::build(files);
        for body in [app.shell.unwrap(), app.worker.unwrap()] {
            let text = std::str::from_utf8(&body.identity.bytes).unwrap();
            assert!(!text.contains("__APP_VERSION__") && !text.contains("__APP_ASSETS__"));
        }
    }

    #[test]
    fn replace_every_mark() {
        assert_eq!(replace(b"aXbXX", b"X", b"yy"), b"ayybyyyy");
        assert_eq!(replace(b"abc", b"X", b"y"), b"abc");
        assert_eq!(replace(b"", b"X", b"y"), b"");
    }
}
