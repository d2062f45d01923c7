//! Open development mode's guard against other web pages.
//!
//! Without a secret every caller is an admin, and the server listens on loopback only. A web
//! page the developer happens to visit can still reach it, two ways:
//!
//! - a cross-origin request or WebSocket to `http://127.0.0.1:PORT` (CORS does not stop a
//!   request from being sent, and does not apply to WebSockets at all): the browser names the
//!   page in `Origin`;
//! - DNS rebinding: a name the page's owner controls is made to resolve to 127.0.0.1, so the
//!   page is "same-origin" with the server; the browser names it in `Host`.
//!
//! So in open mode every request must be addressed to a loopback host (`localhost`, a name
//! under `.localhost`, which browsers resolve to loopback themselves, 127.0.0.0/8 or `[::1]`,
//! any port), and a browser's `Origin`, if sent, must be a loopback origin or one of
//! `--allowed-origins`. `--insecure` (open mode on a non-loopback address) drops the `Host`
//! check, since the server is then reached by other names, but keeps the `Origin` check.
//! Requests without `Host` or `Origin` come from no browser, and are not refused for it.
//! With a secret there is nothing to guard here: tokens are never sent by a browser on its own.

use std::net::{IpAddr, Ipv6Addr};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::info;

use super::error::ApiError;
use super::state::{AppState, Inner};
use crate::metrics::kind;

/// Why open mode refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    /// `Host` is not a loopback name or address.
    #[error(
        "this server runs without AUTH_SECRET (open development mode) and answers only requests \
         addressed to localhost, 127.0.0.1 or [::1]; set AUTH_SECRET to serve other host names"
    )]
    Host,
    /// `Origin` is neither a loopback origin nor allowed.
    #[error(
        "this server runs without AUTH_SECRET (open development mode) and answers browsers only \
         from pages on localhost, 127.0.0.1 or [::1], or from origins in --allowed-origins"
    )]
    Origin,
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        let code = match refusal {
            Refusal::Host => "host_not_allowed",
            Refusal::Origin => "origin_not_allowed",
        };
        Self::new(StatusCode::FORBIDDEN, code, refusal.to_string())
    }
}

/// The middleware: in open mode, refuses requests for another host or from another origin.
pub(crate) async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let state = state.inner();
    match check(state, &request) {
        Ok(()) => next.run(request).await,
        Err(refusal) => {
            state.metrics.error(match refusal {
                Refusal::Host => kind::HOST,
                Refusal::Origin => kind::ORIGIN,
            });
            info!(
                request_id = %super::observe::request_id(request.headers()),
                path = request.uri().path(),
                ?refusal,
                "refused: open development mode answers loopback only"
            );
            ApiError::from(refusal).into_response()
        }
    }
}

fn check(state: &Inner, request: &Request) -> Result<(), Refusal> {
    if !state.open_any_host {
        let hosts = request
            .headers()
            .get_all(header::HOST)
            .iter()
            .map(|h| h.to_str().ok())
            .chain(request.uri().authority().map(|a| Some(a.as_str())));
        for host in hosts {
            if !host.is_some_and(is_loopback_authority) {
                return Err(Refusal::Host);
            }
        }
    }
    origin_allowed(&state.limits.allowed_origins, request.headers())
}

/// Every `Origin` sent is a loopback origin or listed in `allowed` (`*` allows any).
fn origin_allowed(allowed: &[String], headers: &HeaderMap) -> Result<(), Refusal> {
    for origin in headers.get_all(header::ORIGIN) {
        let Ok(origin) = origin.to_str() else {
            return Err(Refusal::Origin);
        };
        let listed = allowed
            .iter()
            .any(|a| a == "*" || a.eq_ignore_ascii_case(origin));
        let loopback = ["http://", "https://"].iter().any(|scheme| {
            origin
                .get(..scheme.len())
                .is_some_and(|s| s.eq_ignore_ascii_case(scheme))
                && is_loopback_authority(&origin[scheme.len()..])
        });
        if !listed && !loopback {
            return Err(Refusal::Origin);
        }
    }
    Ok(())
}

/// Whether `authority` (`host[:port]`) names a loopback host.
fn is_loopback_authority(authority: &str) -> bool {
    let host = if authority.starts_with('[') {
        let Some((host, rest)) = authority.split_once(']') else {
            return false;
        };
        if !(rest.is_empty() || rest.strip_prefix(':').is_some_and(is_port)) {
            return false;
        }
        return host[1..].parse::<Ipv6Addr>().is_ok_and(|ip| {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        });
    } else {
        match authority.split_once(':') {
            Some((host, port)) if is_port(port) => host,
            Some(_) => return false,
            None => authority,
        }
    };
    is_loopback_host(host)
}

fn is_port(s: &str) -> bool {
    !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit())
}

/// `localhost`, a name under `.localhost` (RFC 6761: browsers resolve them to loopback
/// without asking DNS, so no one else's DNS can answer for them), or an IPv4 loopback address;
/// a trailing dot allowed.
fn is_loopback_host(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    if host == "localhost" {
        return true;
    }
    if let Some(sub) = host.strip_suffix(".localhost") {
        return !sub.is_empty()
            && sub.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
    }
    host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_authorities() {
        for ok in [
            "localhost",
            "localhost:8080",
            "LocalHost.",
            "app.localhost:5173",
            "a.b.localhost",
            "127.0.0.1",
            "127.255.0.9:1",
            "[::1]",
            "[::1]:8080",
            "[::ffff:127.0.0.1]:80",
        ] {
            assert!(is_loopback_authority(ok), "{ok}");
        }
        for refused in [
            "",
            "evil.example",
            "localhost.evil.example",
            "evil-localhost",
            ".localhost",
            "a..localhost",
            "127.0.0.1.nip.io",
            "128.0.0.1",
            "0.0.0.0",
            "10.0.0.1:80",
            "[::2]",
            "[::1",
            "::1",
            "localhost:",
            "localhost:80x",
            "localhost:123456",
            "local host",
            "localhost@evil.example",
        ] {
            assert!(!is_loopback_authority(refused), "{refused:?}");
        }
    }

    #[test]
    fn origins() {
        let headers = |origin: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::ORIGIN, origin.parse().expect("a header value"));
            h
        };
        let allowed = vec!["https://app.example.com".to_owned()];
        for ok in [
            "http://localhost:3000",
            "HTTPS://127.0.0.1",
            "http://[::1]:8080",
            "https://app.example.com",
            "https://APP.example.com",
        ] {
            assert_eq!(origin_allowed(&allowed, &headers(ok)), Ok(()), "{ok}");
        }
        for refused in [
            "null",
            "file://",
            "ws://localhost",
            "http://evil.example",
            "http://localhost.evil.example",
            "https://app.example.com.evil.net",
        ] {
            assert_eq!(
                origin_allowed(&allowed, &headers(refused)),
                Err(Refusal::Origin),
                "{refused}"
            );
        }
        assert_eq!(origin_allowed(&allowed, &HeaderMap::new()), Ok(()));
        assert_eq!(
            origin_allowed(&["*".to_owned()], &headers("http://evil.example")),
            Ok(())
        );
    }
}
