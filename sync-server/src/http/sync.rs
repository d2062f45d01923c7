//! `GET /v1/sync/{board}` and `GET /v1/hocuspocus`: the WebSocket upgrades, handed to the
//! sessions ([`crate::ws`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tracing::info;

use super::auth::bearer_token;
use super::error::ApiError;
use super::extract::{ApiPath, ApiQuery};
use super::observe::request_id;
use super::ws_upgrade::{WsRejection, WsUpgrade};
use crate::metrics::{Metrics, kind};
use crate::ws::{READ_BUFFER, Sessions, WRITE_BUFFER};

/// Upgrades to a WebSocket speaking y-protocols. `?ack=1` asks for durable acknowledgements;
/// `?token=` (or `Authorization: Bearer`) carries the token.
///
/// A disallowed `Origin` is refused before the upgrade (403). Every other refusal (no or bad
/// token, another board's token, a connection limit) upgrades and then closes with a
/// documented code and reason, which WebSocket clients can read, unlike an HTTP status.
pub(crate) async fn upgrade(
    State(sessions): State<Arc<Sessions>>,
    State(metrics): State<Arc<Metrics>>,
    ApiPath(board): ApiPath<String>,
    ApiQuery(params): ApiQuery<HashMap<String, String>>,
    ConnectInfo(peer_addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: Result<WsUpgrade, WsRejection>,
) -> Response {
    // A plain GET, or a handshake missing a header: say so in the usual JSON.
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    if !origin_allowed(&sessions.limits().allowed_origins, &headers) {
        metrics.error(kind::ORIGIN);
        info!("refused a WebSocket from an origin that is not allowed");
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "origin_not_allowed",
            "this origin may not open WebSockets to this server",
        )
        .into_response();
    }
    let wants_acks = params.get("ack").is_some_and(|v| v == "1" || v == "true");
    let token = params
        .get("token")
        .map(String::as_str)
        .or_else(|| bearer_token(&headers));
    let admission = sessions.admit(&board, token, peer_addr.ip());
    let request = request_id(&headers);
    let config = socket_config(sessions.limits().max_message_bytes);
    let tracker = sessions.tracker().clone();
    ws.on_upgrade(&tracker, config, move |socket| {
        let (sink, stream) = socket.split();
        sessions.serve(stream, sink, admission, wants_acks, &board, &request)
    })
}

/// Upgrades to a WebSocket speaking the Hocuspocus dialect (`@hocuspocus/provider`): one socket,
/// many boards, each authenticated by its own Auth message (`crate::ws::hocuspocus`).
///
/// A disallowed `Origin` is refused before the upgrade (403), as on `/v1/sync`; the
/// per-address limit upgrades and then closes (4503).
pub(crate) async fn upgrade_hocuspocus(
    State(sessions): State<Arc<Sessions>>,
    State(metrics): State<Arc<Metrics>>,
    ConnectInfo(peer_addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: Result<WsUpgrade, WsRejection>,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    if !origin_allowed(&sessions.limits().allowed_origins, &headers) {
        metrics.error(kind::ORIGIN);
        info!("refused a WebSocket from an origin that is not allowed");
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "origin_not_allowed",
            "this origin may not open WebSockets to this server",
        )
        .into_response();
    }
    let admission = sessions.admit_socket(peer_addr.ip());
    let request = request_id(&headers);
    let config = socket_config(sessions.limits().max_message_bytes);
    let tracker = sessions.tracker().clone();
    ws.on_upgrade(&tracker, config, move |socket| {
        let (sink, stream) = socket.split();
        sessions.serve_hocuspocus(stream, sink, admission, &request)
    })
}

/// A connection's tungstenite settings: messages and frames up to `max_message_bytes`, and
/// the small buffers (`crate::ws`) that keep an idle connection cheap.
fn socket_config(max_message_bytes: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(max_message_bytes))
        .max_frame_size(Some(max_message_bytes))
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
}

/// Whether the request's `Origin` (if any) may open a WebSocket.
fn origin_allowed(allowed: &[String], headers: &HeaderMap) -> bool {
    if allowed.is_empty() {
        return true;
    }
    match headers.get(header::ORIGIN).map(|o| o.to_str()) {
        // Non-browser clients send no Origin; the allow-list guards against other web pages.
        None => true,
        Some(Ok(origin)) => allowed
            .iter()
            .any(|a| a == "*" || a.eq_ignore_ascii_case(origin)),
        Some(Err(_)) => false,
    }
}
