//! HTTP errors: `{ "error": { "code", "message" } }` with the right status. Internal details
//! are logged, never sent.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tracing::error;

use crate::board::BoardError;
use crate::ids::InvalidBoardId;
use crate::storage::StorageError;
use crate::transfer::TransferError;

/// An error answer.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub(crate) fn board_not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "board_not_found", "no such board")
    }

    pub(crate) fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// A failure whose details stay in the log.
    pub(crate) fn internal(detail: &dyn std::fmt::Display) -> Self {
        error!(error = %detail, "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the server log",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "code": self.code, "message": self.message } });
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

impl From<InvalidBoardId> for ApiError {
    fn from(e: InvalidBoardId) -> Self {
        Self::bad_request("invalid_board_id", e.to_string())
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::BoardNotFound(_) | StorageError::BoardDeleted(_) => {
                Self::board_not_found()
            }
            StorageError::BoardExists(id) => Self::new(
                StatusCode::CONFLICT,
                "board_exists",
                format!("board `{id}` already exists"),
            ),
            other => Self::internal(&other),
        }
    }
}

impl From<TransferError> for ApiError {
    fn from(e: TransferError) -> Self {
        match e {
            TransferError::Storage(e) => e.into(),
            TransferError::InvalidSnapshot(e) => {
                Self::bad_request("invalid_snapshot", format!("not a Yjs update (v1): {e}"))
            }
            other => Self::internal(&other),
        }
    }
}

impl From<BoardError> for ApiError {
    fn from(e: BoardError) -> Self {
        match e {
            BoardError::NotFound | BoardError::Deleted => Self::board_not_found(),
            BoardError::Rejected(why) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "update_rejected", why)
            }
            BoardError::TooLarge(_) => Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "board_too_large",
                e.to_string(),
            ),
            BoardError::Full => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "board_full", e.to_string())
            }
            BoardError::Busy => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "board_busy", e.to_string())
            }
            BoardError::TooDeep(_) => Self::new(StatusCode::BAD_REQUEST, "too_deep", e.to_string()),
            BoardError::Gone | BoardError::CommitFailed | BoardError::LoadFailed => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                e.to_string(),
            ),
        }
    }
}
