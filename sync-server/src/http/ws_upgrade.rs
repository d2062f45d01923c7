//! The WebSocket handshake (RFC 6455, HTTP/1.1): checks the request, answers 101 and hands the
//! upgraded connection over as a tungstenite [`Socket`].
//!
//! axum's own `WebSocketUpgrade` wraps the socket in a message type that cannot send a message
//! as several frames. The sessions need that: a 50 MB board's sync step 2 written as one frame
//! is copied whole into each connection's write buffer, which keeps its capacity for the life of
//! the connection (50 joiners held 2.5 GB; BENCHMARKS.md, large board). Written in fragments
//! (`crate::ws::writer`), each connection buffers at most one fragment.

use std::future::Future;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version, header};
use axum::response::{IntoResponse, Response};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_util::task::TaskTracker;
use tracing::debug;

use super::error::ApiError;

/// An upgraded WebSocket connection, server side.
pub(crate) type Socket = WebSocketStream<TokioIo<Upgraded>>;

/// A valid WebSocket upgrade request, waiting to be answered.
pub(crate) struct WsUpgrade {
    key: HeaderValue,
    on_upgrade: OnUpgrade,
}

/// Why a request is not a WebSocket upgrade: answered with the status and a message naming
/// what is missing, as the usual JSON error (`websocket_required`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum WsRejection {
    #[error("a WebSocket upgrade must be a GET")]
    MethodNotGet,
    #[error("a WebSocket upgrade needs HTTP/1.1")]
    NotHttp11,
    #[error("the Connection header does not include 'upgrade'")]
    ConnectionHeader,
    #[error("the Upgrade header is not 'websocket'")]
    UpgradeHeader,
    #[error("the Sec-WebSocket-Version header is not '13'")]
    VersionHeader,
    #[error("the Sec-WebSocket-Key header is missing")]
    KeyMissing,
    #[error("this connection cannot be upgraded")]
    NotUpgradable,
}

impl WsRejection {
    fn status(self) -> StatusCode {
        match self {
            Self::MethodNotGet => StatusCode::METHOD_NOT_ALLOWED,
            Self::NotHttp11 | Self::NotUpgradable => StatusCode::UPGRADE_REQUIRED,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

impl IntoResponse for WsRejection {
    fn into_response(self) -> Response {
        ApiError::new(self.status(), "websocket_required", self.to_string()).into_response()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for WsUpgrade {
    type Rejection = WsRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        if parts.method != Method::GET {
            return Err(WsRejection::MethodNotGet);
        }
        if parts.version != Version::HTTP_11 {
            return Err(WsRejection::NotHttp11);
        }
        if !header_has_token(&parts.headers, header::CONNECTION, "upgrade") {
            return Err(WsRejection::ConnectionHeader);
        }
        if !header_is(&parts.headers, header::UPGRADE, "websocket") {
            return Err(WsRejection::UpgradeHeader);
        }
        if !header_is(&parts.headers, header::SEC_WEBSOCKET_VERSION, "13") {
            return Err(WsRejection::VersionHeader);
        }
        let key = parts
            .headers
            .get(header::SEC_WEBSOCKET_KEY)
            .ok_or(WsRejection::KeyMissing)?
            .clone();
        let on_upgrade = parts
            .extensions
            .remove::<OnUpgrade>()
            .ok_or(WsRejection::NotUpgradable)?;
        Ok(Self { key, on_upgrade })
    }
}

impl WsUpgrade {
    /// Answers 101 and, once hyper hands the connection over, runs `session` on it as a
    /// tungstenite socket with `config`, as a task of `tracker` (so a shutdown waits for a
    /// connection upgraded as it began, which then closes 1012). A connection that fails to
    /// upgrade (the client left after the request) is logged at debug and dropped.
    pub(crate) fn on_upgrade<F, Fut>(
        self,
        tracker: &TaskTracker,
        config: WebSocketConfig,
        session: F,
    ) -> Response
    where
        F: FnOnce(Socket) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Self { key, on_upgrade } = self;
        tracker.spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    let socket = WebSocketStream::from_raw_socket(
                        TokioIo::new(upgraded),
                        Role::Server,
                        Some(config),
                    )
                    .await;
                    session(socket).await;
                }
                Err(e) => debug!(error = %e, "a WebSocket upgrade failed"),
            }
        });
        let accept = derive_accept_key(key.as_bytes());
        (
            StatusCode::SWITCHING_PROTOCOLS,
            [
                (header::CONNECTION, HeaderValue::from_static("upgrade")),
                (header::UPGRADE, HeaderValue::from_static("websocket")),
                (
                    header::SEC_WEBSOCKET_ACCEPT,
                    HeaderValue::from_str(&accept).expect("base64 is a valid header value"),
                ),
            ],
        )
            .into_response()
    }
}

/// Whether `name` is `value` (ASCII case-insensitive).
fn header_is(headers: &HeaderMap, name: HeaderName, value: &str) -> bool {
    headers
        .get(name)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(value.as_bytes()))
}

/// Whether `name` is a comma-separated list with `token` in it (ASCII case-insensitive), as
/// `Connection: keep-alive, Upgrade` is.
fn header_has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use axum::body::Body;
    use axum::http::Request;

    use super::*;

    /// A valid upgrade request's parts (without hyper's upgrade handle: no real connection).
    fn request() -> Parts {
        Request::builder()
            .method(Method::GET)
            .uri("/v1/sync/b")
            .header("connection", "keep-alive, Upgrade")
            .header("upgrade", "WebSocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .body(Body::empty())
            .unwrap()
            .into_parts()
            .0
    }

    async fn check(change: impl FnOnce(&mut Parts)) -> WsRejection {
        let mut parts = request();
        change(&mut parts);
        match WsUpgrade::from_request_parts(&mut parts, &()).await {
            Ok(_) => panic!("accepted without an upgrade handle"),
            Err(rejection) => rejection,
        }
    }

    fn set(parts: &mut Parts, name: HeaderName, value: &'static str) {
        parts.headers.insert(name, HeaderValue::from_static(value));
    }

    #[tokio::test]
    async fn each_missing_piece_is_named() {
        assert_eq!(
            check(|p| p.method = Method::POST).await,
            WsRejection::MethodNotGet
        );
        assert_eq!(
            check(|p| p.version = Version::HTTP_10).await,
            WsRejection::NotHttp11
        );
        assert_eq!(
            check(|p| set(p, header::CONNECTION, "close")).await,
            WsRejection::ConnectionHeader
        );
        assert_eq!(
            check(|p| set(p, header::UPGRADE, "h2c")).await,
            WsRejection::UpgradeHeader
        );
        assert_eq!(
            check(|p| set(p, header::SEC_WEBSOCKET_VERSION, "8")).await,
            WsRejection::VersionHeader
        );
        assert_eq!(
            check(|p| {
                p.headers.remove(header::SEC_WEBSOCKET_KEY);
            })
            .await,
            WsRejection::KeyMissing
        );
        // Everything in order, but no connection to take over.
        assert_eq!(check(|_| ()).await, WsRejection::NotUpgradable);
        assert_eq!(
            WsRejection::MethodNotGet.status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }

    #[test]
    fn connection_tokens_are_matched_whole() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert!(header_has_token(&headers, header::CONNECTION, "upgrade"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrades"));
        assert!(!header_has_token(&headers, header::CONNECTION, "upgrade"));
    }
}
