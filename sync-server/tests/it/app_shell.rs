//! The board app the server embeds (`client-wasm/app/`): the shell at `/` and `/b/{board}`,
//! the service worker, versioned files, their headers, ETags and gzip; and `token --url`.

use std::collections::BTreeSet;
use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use harness::*;

const CSP: &str = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; \
                   img-src 'self' data: blob:; connect-src 'self'; worker-src 'self'; \
                   manifest-src 'self'; object-src 'none'; base-uri 'none'; \
                   form-action 'self'; frame-ancestors 'none'";
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    http_request(addr, None, "GET", path, headers, b"").await
}

fn gunzip(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(body)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// The app's headers, on every response of its routes.
fn assert_app_headers(r: &HttpResponse, what: &str) {
    assert_eq!(r.header("content-security-policy"), Some(CSP), "{what}");
    assert_eq!(
        r.header("x-content-type-options"),
        Some("nosniff"),
        "{what}"
    );
    assert_eq!(r.header("referrer-policy"), Some("no-referrer"), "{what}");
}

/// The URL list `sw.js` was given (`__APP_ASSETS__`, a JSON array starting with `"/"`).
fn listed_urls(worker: &str) -> Vec<String> {
    let start = worker
        .find("[\"/\"")
        .unwrap_or_else(|| panic!("no URL list in sw.js: {worker}"));
    serde_json::Deserializer::from_str(&worker[start..])
        .into_iter::<Vec<String>>()
        .next()
        .unwrap()
        .unwrap()
}

/// Every file under client-wasm/app except the shell and the worker, as the server should
/// serve them (`dir/file`), hidden names left out.
fn app_files() -> BTreeSet<String> {
    fn walk(dir: &Path, prefix: &str, out: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().into_string().unwrap();
            if name.starts_with('.') {
                continue;
            }
            let path = format!("{prefix}{name}");
            if entry.file_type().unwrap().is_dir() {
                walk(&entry.path(), &format!("{path}/"), out);
            } else if path != "index.html" && path != "sw.js" {
                out.insert(path);
            }
        }
    }
    let mut out = BTreeSet::new();
    let app = Path::new(env!("CARGO_MANIFEST_DIR")).join("../client-wasm/app");
    walk(&app, "", &mut out);
    out
}

fn expected_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, e)| e) {
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("wasm") => "application/wasm",
        Some("svg") => "image/svg+xml",
        Some("json") => "application/json",
        Some("html") => "text/html; charset=utf-8",
        _ => "",
    }
}

/// The shell at `/` and `/b/{board}`, with the version filled in; `sw.js` lists every file of
/// the app and each listed URL answers, with the right type, immutable; an invalid board id, a
/// wrong version or an unknown file answer 404; metrics count routes by template.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_worker_and_versioned_files() {
    let server = TestServer::start(config(), memory_store().await).await;
    let addr = server.addr;

    let worker = get(addr, "/sw.js", &[]).await;
    assert_eq!(worker.status, 200, "{}", worker.text());
    assert_eq!(
        worker.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(worker.header("cache-control"), Some("no-cache"));
    assert!(worker.header("etag").is_some());
    assert_app_headers(&worker, "sw.js");
    let worker = String::from_utf8(worker.body).unwrap();
    assert!(!worker.contains("__APP_VERSION__") && !worker.contains("__APP_ASSETS__"));
    let urls = listed_urls(&worker);
    let version = urls[1]
        .strip_prefix("/app/")
        .and_then(|rest| rest.split_once('/'))
        .map(|(v, _)| v.to_owned())
        .unwrap_or_else(|| panic!("{urls:?}"));
    assert_eq!(version.len(), 12);
    assert!(version.bytes().all(|b| b.is_ascii_hexdigit()), "{version}");
    assert!(worker.contains(&version));
    let mut sorted = urls.clone();
    sorted.sort();
    assert_eq!(urls, sorted, "sorted");
    assert_eq!(urls[0], "/");
    let prefix = format!("/app/{version}/");
    let listed: BTreeSet<String> = urls[1..]
        .iter()
        .map(|u| u.strip_prefix(&prefix).unwrap().to_owned())
        .collect();
    assert_eq!(listed, app_files(), "sw.js lists every file of the app");
    assert!(listed.contains("pkg/client_wasm_bg.wasm") && listed.contains("pkg/client_wasm.js"));

    for url in &urls {
        let r = get(addr, url, &[]).await;
        assert_eq!(r.status, 200, "{url}: {}", r.text());
        assert_app_headers(&r, url);
        if url == "/" {
            continue;
        }
        assert_eq!(r.header("cache-control"), Some(IMMUTABLE), "{url}");
        let path = url.strip_prefix(&prefix).unwrap();
        let expected = expected_type(path);
        if !expected.is_empty() {
            assert_eq!(r.header("content-type"), Some(expected), "{url}");
        }
        let on_disk = std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../client-wasm/app")
                .join(path),
        )
        .unwrap();
        assert!(r.body == on_disk, "{url} is served as embedded");
    }
    let wasm = get(addr, &format!("{prefix}pkg/client_wasm_bg.wasm"), &[]).await;
    assert_eq!(wasm.header("content-type"), Some("application/wasm"));
    assert!(wasm.body.starts_with(b"\0asm"));

    // The shell, at `/` and at a board's page, with the version filled in.
    let root = get(addr, "/", &[]).await;
    assert_eq!(
        root.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(root.header("cache-control"), Some("no-cache"));
    let html = String::from_utf8(root.body.clone()).unwrap();
    assert!(html.contains(&prefix), "{html}");
    assert!(!html.contains("__APP_VERSION__"), "{html}");
    for board in ["some-board", "A.b_c-9", &"x".repeat(128)] {
        let page = get(addr, &format!("/b/{board}"), &[]).await;
        assert_eq!(page.status, 200, "{board}");
        assert_eq!(page.body, root.body, "{board}");
        assert_eq!(page.header("etag"), root.header("etag"));
        assert_eq!(page.header("cache-control"), Some("no-cache"));
        assert_app_headers(&page, board);
    }

    // Not a board id, another version, a file that is not there: 404.
    for path in [
        "/b/bad%20id".to_owned(),
        format!("/b/{}", "x".repeat(129)),
        "/b/a%2Fb".to_owned(),
        "/app/000000000000/app.css".to_owned(),
        format!("/app/{}/app.css", &version[..11]),
        format!("{prefix}nope.js"),
        format!("{prefix}index.html"),
        format!("{prefix}sw.js"),
        format!("{prefix}../Cargo.toml"),
    ] {
        let r = get(addr, &path, &[]).await;
        assert_eq!(r.status, 404, "{path}: {}", r.text());
        assert!(r.json()["error"]["code"].is_string(), "{path}");
        assert_app_headers(&r, &path);
    }
    assert_eq!(
        get(addr, "/b/bad%20id", &[]).await.json()["error"]["code"],
        "invalid_board_id"
    );

    // Counted by route template: no version, path or board id in the metrics.
    let metrics = String::from_utf8(get(addr, "/metrics", &[]).await.body).unwrap();
    for route in ["/", "/b/{board}", "/sw.js", "/app/{version}/{*path}"] {
        assert!(
            metrics.contains(&format!("route=\"{route}\"")),
            "{route} not counted"
        );
    }
    assert!(!metrics.contains(&version) && !metrics.contains("some-board"));

    server.shutdown().await.unwrap();
}

/// ETags with 304 on a match, gzip when accepted (the same bytes once decompressed, its own
/// ETag), and HEAD.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etags_gzip_and_head() {
    let server = TestServer::start(config(), memory_store().await).await;
    let addr = server.addr;
    let worker = String::from_utf8(get(addr, "/sw.js", &[]).await.body).unwrap();
    let urls = listed_urls(&worker);
    let wasm = urls
        .iter()
        .find(|u| u.ends_with(".wasm"))
        .unwrap()
        .to_owned();
    let glue = urls
        .iter()
        .find(|u| u.ends_with("/pkg/client_wasm.js"))
        .unwrap()
        .to_owned();

    // (Files too small for gzip to shrink are only ever sent as they are.)
    for url in ["/", "/b/etag-board", "/sw.js", wasm.as_str(), glue.as_str()] {
        let plain = get(addr, url, &[]).await;
        assert_eq!(plain.status, 200, "{url}");
        assert_eq!(plain.header("content-encoding"), None, "{url}");
        let etag = plain.header("etag").unwrap().to_owned();
        assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");

        // A matching If-None-Match: 304, no body, the same validators.
        let cached = get(addr, url, &[("If-None-Match", &etag)]).await;
        assert_eq!(cached.status, 304, "{url}");
        assert!(cached.body.is_empty(), "{url}");
        assert_eq!(cached.header("etag"), Some(etag.as_str()));
        assert_eq!(
            cached.header("cache-control"),
            plain.header("cache-control")
        );
        let weak = format!("\"other\", W/{etag}");
        assert_eq!(
            get(addr, url, &[("If-None-Match", &weak)]).await.status,
            304
        );
        let other = get(addr, url, &[("If-None-Match", "\"other\"")]).await;
        assert_eq!(other.status, 200, "{url}");
        assert_eq!(other.body, plain.body);

        // gzip when accepted.
        let gz = get(addr, url, &[("Accept-Encoding", "gzip, deflate, br")]).await;
        assert_eq!(gz.status, 200, "{url}");
        assert_eq!(gz.header("content-encoding"), Some("gzip"), "{url}");
        assert_eq!(gz.header("vary"), Some("accept-encoding"), "{url}");
        assert_eq!(plain.header("vary"), Some("accept-encoding"), "{url}");
        assert_eq!(gz.header("content-type"), plain.header("content-type"));
        assert!(gz.body.len() < plain.body.len(), "{url}");
        assert!(gunzip(&gz.body) == plain.body, "{url}: gunzipped differs");
        let gz_etag = gz.header("etag").unwrap().to_owned();
        assert_ne!(gz_etag, etag, "{url}: one ETag per encoding");
        let gz_cached = get(
            addr,
            url,
            &[("Accept-Encoding", "gzip"), ("If-None-Match", &gz_etag)],
        )
        .await;
        assert_eq!(gz_cached.status, 304, "{url}");
        // Refused gzip: identity.
        let refused = get(addr, url, &[("Accept-Encoding", "gzip;q=0, br")]).await;
        assert_eq!(refused.header("content-encoding"), None, "{url}");
        assert_eq!(refused.body, plain.body);

        // HEAD: the GET's headers, no body.
        let head = http_request(addr, None, "HEAD", url, &[], b"").await;
        assert_eq!(head.status, 200, "{url}");
        assert!(head.body.is_empty(), "{url}");
        assert_eq!(head.header("etag"), Some(etag.as_str()));
        assert_eq!(head.header("content-type"), plain.header("content-type"));
        assert_eq!(
            head.header("content-length"),
            Some(plain.body.len().to_string().as_str()),
            "{url}"
        );
    }

    server.shutdown().await.unwrap();
}

/// Open development mode's guard covers the app too: a page of another origin is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_mode_guards_the_app() {
    let server = TestServer::start(config(), memory_store().await).await;
    for path in ["/", "/b/x", "/sw.js"] {
        let r = get(server.addr, path, &[("Origin", "https://evil.example")]).await;
        assert_eq!(r.status, 403, "{path}");
        assert_eq!(r.json()["error"]["code"], "origin_not_allowed");
        let ok = get(server.addr, path, &[("Origin", "http://localhost:1")]).await;
        assert_eq!(ok.status, 200, "{path}");
    }
    server.shutdown().await.unwrap();
}

/// `token --url BASE` prints the token, then a link to the board (or the board list, for `*`)
/// with the token in the fragment; a BASE that is not an http(s) origin is refused.
#[test]
fn token_prints_a_link() {
    let token = |board: &str, url: &str| {
        Command::new(env!("CARGO_BIN_EXE_sync-server"))
            .args(["token", "--board", board, "--role", "write", "--url", url])
            .env("AUTH_SECRET", "app-shell test secret 3c9f1e7a5b2d4c6e8f0a")
            .env_remove("AUTH_SECRET_FILE")
            .output()
            .unwrap()
    };
    let out = token("my-board", "http://127.0.0.1:8080/");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert_eq!(lines[0].split('.').count(), 3, "a JWT first: {stdout}");
    assert_eq!(
        lines[1],
        format!("http://127.0.0.1:8080/b/my-board#token={}", lines[0])
    );
    assert!(!stderr.contains(lines[0]), "the token stays off stderr");

    let out = token("*", "https://boards.example.com");
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[1],
        format!("https://boards.example.com/#token={}", lines[0])
    );

    for bad in ["ftp://x", "boards.example.com", "https://x/path"] {
        let out = token("my-board", bad);
        assert!(!out.status.success(), "{bad}");
        assert!(out.stdout.is_empty(), "{bad}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("--url"),
            "{bad}"
        );
    }
}
