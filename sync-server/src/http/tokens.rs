//! `POST /v1/tokens` (admin): mint a token for a board (or every board) and a role.
//!
//! A minted token never gives more than the token that asked for it: not more boards, not a
//! higher role, and not a longer life (a lifetime reaching past the caller's own expiry is cut
//! to it, and the answer's `expires_at` and `clamped` say so).

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Caller;
use super::error::ApiError;
use crate::auth::token::TokenRequest;
use crate::auth::{Auth, Denied, Role, Scope, TokenError};

/// Lifetime of a token when the request names none.
const DEFAULT_TTL: Duration = Duration::from_secs(3600);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MintRequest {
    /// A board id, or `*` for every board.
    board: String,
    role: Role,
    /// Lifetime: seconds, or a duration such as `"15m"`, `"12h"`, `"7d"`.
    ttl: Option<Ttl>,
    /// Who the token is for.
    user: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Ttl {
    Seconds(u64),
    Text(String),
}

/// `POST /v1/tokens` `{"board": "b1" | "*", "role": "read" | "write" | "admin", "ttl"?: 3600 |
/// "1h", "user"?: "alice"}`: needs `admin` on the board asked for (or on every board for `*`).
/// The token expires at the latest when the caller's does.
pub(crate) async fn mint(
    State(auth): State<Arc<Auth>>,
    caller: Caller,
    headers: HeaderMap,
    body: Option<Json<MintRequest>>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Auth::Tokens(keys) = auth.as_ref() else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "auth_disabled",
            "the server runs without AUTH_SECRET (open development mode), so it mints no tokens",
        ));
    };
    let Some(Json(request)) = body else {
        return Err(ApiError::bad_request(
            "invalid_body",
            "expected a JSON body {\"board\": ID or \"*\", \"role\": \"read\"|\"write\"|\"admin\", \"ttl\"?: \"1h\", \"user\"?: NAME}",
        ));
    };
    let scope = Scope::parse(&request.board)?;
    match &scope {
        Scope::All => caller.require_all_boards(Role::Admin)?,
        Scope::Board(board) => caller.require(board, Role::Admin)?,
    }
    let ttl = match request.ttl {
        None => DEFAULT_TTL,
        Some(Ttl::Seconds(s)) => Duration::from_secs(s),
        Some(Ttl::Text(text)) => humantime::parse_duration(&text).map_err(|e| {
            ApiError::bad_request("invalid_ttl", format!("`ttl` is not a duration: {e}"))
        })?,
    };
    let user = request.user.filter(|u| !u.trim().is_empty());
    if user.as_ref().is_some_and(|u| u.chars().count() > 200) {
        return Err(ApiError::bad_request(
            "invalid_user",
            "`user` is longer than 200 characters",
        ));
    }
    // What the caller's own token allows (`Caller` checked it already; it keeps its grant to
    // itself), so the new token can be kept within it.
    let grant = auth
        .authenticate(super::auth::bearer_token(&headers))
        .map_err(|e| unauthorized(&e))?;
    let not_after = grant
        .delegable(&scope, request.role)
        .map_err(|denied| match denied {
            Denied::Expired => unauthorized(&TokenError::Expired),
            other => ApiError::new(StatusCode::FORBIDDEN, "forbidden", other.to_string()),
        })?;
    let minted = keys
        .mint_until(
            &TokenRequest {
                user: user.clone(),
                scope: scope.clone(),
                role: request.role,
                ttl,
            },
            not_after,
        )
        .map_err(|e| match e {
            TokenError::Expired => unauthorized(&e),
            other => ApiError::bad_request("invalid_ttl", other.to_string()),
        })?;
    tracing::info!(
        board = %scope,
        role = %request.role,
        ttl_secs = ttl.as_secs(),
        clamped = minted.clamped,
        "token minted"
    );
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "token": minted.token,
            "board": scope.to_string(),
            "role": request.role,
            "user": user,
            "expires_at": minted.expires_at,
            "clamped": minted.clamped,
        })),
    ))
}

fn unauthorized(e: &dyn std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string())
}
