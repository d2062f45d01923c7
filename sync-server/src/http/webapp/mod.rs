//! The board app (`client-wasm/app/`), served from the files embedded in the binary
//! ([`files`]):
//!
//! - `GET /` (the board list) and `GET /b/{board}` (one board; a valid board id, else 404): the
//!   app shell, `index.html`;
//! - `GET /sw.js`: the service worker, at the root so that its scope is the whole app;
//! - `GET /app/{version}/{*path}`: every other file, under the app's version (a hash of all its
//!   files); another version answers 404, so a page cached from an older build never loads
//!   files of a newer one.
//!
//! The shell and the worker are `no-cache` (revalidated with their ETag on every load), the
//! versioned files `immutable`. Every response carries `nosniff`, `no-referrer` and the app's
//! Content-Security-Policy; compressible files go gzipped (compressed once) to clients that
//! accept it; a matching `If-None-Match` gets 304.

mod files;

use axum::Router;
use axum::http::header::{
    ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG,
    IF_NONE_MATCH, REFERRER_POLICY, VARY, X_CONTENT_TYPE_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::task::JoinError;

use self::files::Body;
use super::error::ApiError;
use super::extract::ApiPath;
use super::state::AppState;
use crate::ids::{BoardId, InvalidBoardId};

/// The app's Content-Security-Policy: its own files only; `wasm-unsafe-eval` to compile the
/// client's WebAssembly; no plugins, no framing, no `<base>`.
const CSP: &str = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; \
                   img-src 'self' data: blob:; connect-src 'self'; worker-src 'self'; \
                   manifest-src 'self'; object-src 'none'; base-uri 'none'; \
                   form-action 'self'; frame-ancestors 'none'";
/// Pages and the service worker: cached, but revalidated before every use.
const REVALIDATE: &str = "no-cache";
/// Files under a version URL never change.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// The app's routes, with its headers on every response (errors included).
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(board_list))
        .route("/b/{board}", get(board))
        .route("/sw.js", get(worker))
        .route("/app/{version}/{*path}", get(asset))
        .layer(axum::middleware::map_response(app_headers))
}

/// Why an app route answers with an error.
#[derive(Debug, thiserror::Error)]
enum WebAppError {
    #[error("no such file")]
    NotFound,
    #[error("no board page: {0}")]
    InvalidBoard(#[from] InvalidBoardId),
    #[error("cannot prepare the app's files: {0}")]
    Prepare(#[from] JoinError),
}

impl IntoResponse for WebAppError {
    fn into_response(self) -> Response {
        match self {
            Self::NotFound => ApiError::new(StatusCode::NOT_FOUND, "not_found", self.to_string()),
            Self::InvalidBoard(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "invalid_board_id", self.to_string())
            }
            Self::Prepare(_) => ApiError::internal(&self),
        }
        .into_response()
    }
}

async fn board_list(headers: HeaderMap) -> Result<Response, WebAppError> {
    shell(&headers).await
}

async fn board(
    ApiPath(board): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Response, WebAppError> {
    BoardId::parse(&board)?;
    shell(&headers).await
}

async fn shell(headers: &HeaderMap) -> Result<Response, WebAppError> {
    let app = files::app().await?;
    let shell = app.shell.as_ref().ok_or(WebAppError::NotFound)?;
    Ok(respond(shell, REVALIDATE, headers))
}

async fn worker(headers: HeaderMap) -> Result<Response, WebAppError> {
    let app = files::app().await?;
    let worker = app.worker.as_ref().ok_or(WebAppError::NotFound)?;
    Ok(respond(worker, REVALIDATE, &headers))
}

async fn asset(
    ApiPath((version, path)): ApiPath<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, WebAppError> {
    let app = files::app().await?;
    if version != app.version {
        return Err(WebAppError::NotFound);
    }
    let asset = app.assets.get(&path).ok_or(WebAppError::NotFound)?;
    Ok(respond(asset, IMMUTABLE, &headers))
}

/// `body` gzipped if the client accepts it and it has a gzip, else as is; 304 without it if
/// the client's `If-None-Match` names its ETag.
fn respond(body: &Body, cache_control: &'static str, request: &HeaderMap) -> Response {
    let gzip = body.gzip.as_ref().filter(|_| accepts_gzip(request));
    let encoded = gzip.unwrap_or(&body.identity);
    let mut headers = HeaderMap::new();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static(cache_control));
    headers.insert(ETAG, encoded.etag.clone());
    if body.gzip.is_some() {
        headers.insert(VARY, HeaderValue::from_static("accept-encoding"));
    }
    if if_none_match(request, &encoded.etag) {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(body.content_type));
    if gzip.is_some() {
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    (headers, encoded.bytes.clone()).into_response()
}

/// Whether `Accept-Encoding` allows gzip: `gzip` (or `x-gzip`) with a nonzero weight, or else
/// `*` with one.
fn accepts_gzip(request: &HeaderMap) -> bool {
    let (mut gzip, mut any) = (None, None);
    let codings = request
        .get_all(ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','));
    for coding in codings {
        let mut parts = coding.split(';').map(str::trim);
        let name = parts.next().unwrap_or_default();
        let weight = parts
            .find_map(|p| p.strip_prefix("q=").or_else(|| p.strip_prefix("Q=")))
            .map_or(Some(1.0), |q| q.parse::<f32>().ok());
        let allowed = weight.is_some_and(|q| q > 0.0);
        if name.eq_ignore_ascii_case("gzip") || name.eq_ignore_ascii_case("x-gzip") {
            gzip = Some(allowed);
        } else if name == "*" {
            any = Some(allowed);
        }
    }
    gzip.or(any).unwrap_or(false)
}

/// Whether `If-None-Match` is `*` or lists `etag` (weak comparison, as RFC 9110 asks for it).
fn if_none_match(request: &HeaderMap, etag: &HeaderValue) -> bool {
    let opaque = |tag: &str| tag.strip_prefix("W/").unwrap_or(tag).to_owned();
    let Ok(ours) = etag.to_str().map(opaque) else {
        return false;
    };
    request
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || opaque(tag) == ours)
}

/// The app's headers, on every response of its routes.
async fn app_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(name: axum::http::HeaderName, value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(name, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn gzip_when_accepted() {
        for (value, accepted) in [
            ("gzip, deflate, br, zstd", true),
            ("br;q=1.0, gzip;q=0.8", true),
            ("GZIP", true),
            ("x-gzip", true),
            ("*", true),
            ("gzip;q=0", false),
            ("gzip;q=0.0, *", false),
            ("*;q=0", false),
            ("br", false),
            ("identity", false),
            ("gzip;q=x", false),
        ] {
            assert_eq!(
                accepts_gzip(&request(ACCEPT_ENCODING, value)),
                accepted,
                "{value}"
            );
        }
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn etag_matches() {
        let etag = HeaderValue::from_static("\"abc\"");
        for (value, matches) in [
            ("\"abc\"", true),
            ("W/\"abc\"", true),
            ("\"x\", \"abc\"", true),
            ("*", true),
            ("\"abcd\"", false),
            ("abc", false),
        ] {
            assert_eq!(
                if_none_match(&request(IF_NONE_MATCH, value), &etag),
                matches,
                "{value}"
            );
        }
        assert!(!if_none_match(&HeaderMap::new(), &etag));
    }
}
