//! The HTTP API (listed in README.md, "API"), the WebSocket upgrade and the board app's files
//! ([`webapp`]): routes, their handlers, and the middleware around them. Handlers parse and
//! authorize, then call the services they take ([`state`]): the boards and their store, the
//! sessions ([`crate::ws`]), the assistant, restores.

mod assistant;
mod auth;
mod boards;
mod error;
mod extract;
mod health;
mod observe;
mod open_mode;
mod restore;
mod state;
mod sync;
mod tokens;
mod versions;
mod webapp;
mod ws_upgrade;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

use self::state::AppState;
pub(crate) use self::state::Services;

/// Every route of the server, serving `services`.
pub(crate) fn router(services: Services) -> Router {
    let state = AppState::new(services);
    let body_limit = state.inner().limits.max_message_bytes;
    let router = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/v1/sync/{board}", get(sync::upgrade))
        .route("/v1/hocuspocus", get(sync::upgrade_hocuspocus))
        .route("/v1/tokens", post(tokens::mint))
        .route("/v1/boards", post(boards::create).get(boards::list))
        .route(
            "/v1/boards/{id}",
            get(boards::get_json).delete(boards::delete),
        )
        .route("/v1/boards/{id}/state", get(boards::state))
        .route("/v1/boards/{id}/updates", post(boards::apply_update))
        .route("/v1/boards/{id}/stateless", post(boards::stateless))
        .route("/v1/boards/{id}/restore", post(restore::restore))
        .route(
            "/v1/boards/{id}/versions",
            post(versions::create).get(versions::list),
        )
        .route(
            "/v1/boards/{id}/versions/{v}",
            get(versions::get).delete(versions::delete),
        )
        .route("/v1/boards/{id}/assistant", post(assistant::start))
        .route("/v1/boards/{id}/assistant/runs", get(assistant::list))
        .route("/v1/boards/{id}/assistant/runs/{run}", get(assistant::get))
        .route(
            "/v1/boards/{id}/assistant/runs/{run}/cancel",
            post(assistant::cancel),
        )
        .route(
            "/v1/boards/{id}/assistant/runs/{run}/undo",
            post(assistant::undo),
        )
        // The board app: `/`, `/b/{board}`, `/sw.js`, `/app/{version}/...`.
        .merge(webapp::routes())
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            observe::observe,
        ))
        .layer(DefaultBodyLimit::max(body_limit));
    // Open development mode: every request, the WebSocket upgrade included, must be addressed
    // to a loopback host and come from no other web page (`open_mode.rs`).
    let router = if state.inner().auth.is_open() {
        router.layer(axum::middleware::from_fn_with_state(
            state.clone(),
            open_mode::guard,
        ))
    } else {
        router
    };
    router
        // Outermost: every response, routed or not, carries `x-request-id` (the client's own,
        // or a new UUID).
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(state)
}
