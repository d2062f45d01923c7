//! The caller of an HTTP request: who they are and what their token allows.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use tracing::info;

use super::error::ApiError;
use super::state::AppState;
use crate::auth::{AuthError, Denied, Grant, Role};
use crate::ids::BoardId;
use crate::metrics::kind;

/// The token in an `Authorization: Bearer` header, if any.
pub(crate) fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// An authenticated caller (in open development mode, an anonymous admin). Extracting it
/// answers 401 when the token is missing or invalid.
#[derive(Debug)]
pub(crate) struct Caller {
    grant: Grant,
    open: bool,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let state = state.inner();
        match state.auth.authenticate(bearer_token(&parts.headers)) {
            Ok(grant) => Ok(Self {
                grant,
                open: state.auth.is_open(),
                metrics: state.metrics.clone(),
            }),
            Err(e) => {
                state.metrics.error(kind::UNAUTHORIZED);
                info!(error = %e, "request refused: not authenticated");
                Err(unauthorized(&e))
            }
        }
    }
}

fn unauthorized(e: &dyn std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string())
}

impl Caller {
    /// Checks that the caller may do what needs `role` on `board`.
    pub(crate) fn require(&self, board: &BoardId, role: Role) -> Result<(), ApiError> {
        self.grant
            .allows(board, role)
            .map_err(|denied| self.denied(denied))
    }

    /// Checks that the caller has `role` on every board.
    pub(crate) fn require_all_boards(&self, role: Role) -> Result<(), ApiError> {
        self.grant
            .allows_all_boards(role)
            .map_err(|denied| self.denied(denied))
    }

    fn denied(&self, denied: Denied) -> ApiError {
        info!(error = %denied, "request refused: not allowed");
        match denied {
            Denied::Expired => {
                self.metrics.error(kind::UNAUTHORIZED);
                unauthorized(&AuthError::Invalid(crate::auth::TokenError::Expired))
            }
            other => {
                self.metrics.error(kind::FORBIDDEN);
                ApiError::new(StatusCode::FORBIDDEN, "forbidden", other.to_string())
            }
        }
    }

    /// Who to record as the author of a version or run: the token's user; in open mode,
    /// whatever the request says.
    pub(crate) fn author<'a>(&'a self, claimed: Option<&'a str>) -> Option<&'a str> {
        if self.open {
            claimed
        } else {
            self.grant.author()
        }
    }
}
