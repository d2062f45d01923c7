//! The HTTP API (DESIGN §6) and the WebSocket route.

mod boards;
mod error;
mod health;
mod restore;
mod versions;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

use crate::server::AppState;

/// Every route of the server.
pub(crate) fn router(state: AppState) -> Router {
    let body_limit = state.limits.max_message_bytes;
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/v1/sync/{board}", get(crate::ws::upgrade))
        .route("/v1/boards", post(boards::create).get(boards::list))
        .route(
            "/v1/boards/{id}",
            get(boards::get_json).delete(boards::delete),
        )
        .route("/v1/boards/{id}/state", get(boards::state))
        .route("/v1/boards/{id}/updates", post(boards::apply_update))
        .route("/v1/boards/{id}/restore", post(restore::restore))
        .route(
            "/v1/boards/{id}/versions",
            post(versions::create).get(versions::list),
        )
        .route(
            "/v1/boards/{id}/versions/{v}",
            get(versions::get).delete(versions::delete),
        )
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}
