//! Around every routed request: the per-address rate limit, a span carrying the request id,
//! one log line, and the HTTP metrics. (`x-request-id` itself is set, or kept from the client,
//! by tower-http's request-id layers on every response, routed or not.)

use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::{Instrument, debug, info};

use super::error::ApiError;
use super::state::AppState;
use crate::metrics::kind;

/// The request's id, as the request-id layer set it.
pub(crate) fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned()
}

/// Routes that are never rate limited: probes and scrapes.
fn exempt(route: &str) -> bool {
    matches!(route, "/healthz" | "/readyz" | "/metrics")
}

pub(crate) async fn observe(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    // The route's template, never the path: one metric series per route, whatever the path.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    // Logged as sent; counted in metrics as one of a fixed set (see `Metrics::http_request`).
    let method = request.method().clone();
    let id = request_id(request.headers());
    // The path only: query strings can carry tokens.
    let span = tracing::info_span!("http", request_id = %id, method = %method, route = %route);
    let state = state.inner();
    if let Some(limiter) = &state.http_limiter
        && !exempt(&route)
        && let Err(wait) = limiter.check(peer.ip())
    {
        state.metrics.error(kind::HTTP_RATE);
        span.in_scope(|| info!(addr = %peer.ip(), "refused: HTTP rate limit"));
        let seconds = wait.as_secs() + 1;
        let mut response = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("too many requests from this address; retry in {seconds} s"),
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        state.metrics.http_request(
            method.as_str(),
            &route,
            429,
            started.elapsed().as_secs_f64(),
        );
        return response;
    }
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    state
        .metrics
        .http_request(method.as_str(), &route, status, elapsed.as_secs_f64());
    span.in_scope(|| {
        if exempt(&route) {
            debug!(status, micros = elapsed.as_micros() as u64, "request");
        } else {
            info!(status, micros = elapsed.as_micros() as u64, "request");
        }
    });
    response
}
