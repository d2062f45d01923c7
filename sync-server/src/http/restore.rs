//! `POST /v1/boards/{id}/restore`: restore a board to a version or an uploaded snapshot, as a
//! forward change that connected clients receive like any other edit ([`crate::restore`]).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Caller;
use super::boards::existing;
use super::error::ApiError;
use super::extract::ApiPath;
use crate::auth::Role;
use crate::ids::VersionId;
use crate::restore::{RestoreError, Restorer, Target};
use crate::storage::Storage;

#[derive(Debug, Deserialize)]
struct RestoreBody {
    version: i64,
    author: Option<String>,
}

/// Restores the board to `{"version": V}` (JSON) or to the full state in an
/// `application/octet-stream` body. First saves the current state as an automatic version
/// (reason `before restore`), so the restore can itself be undone by restoring that version.
/// Answers once the restore is durable, with the restore's id, that version and what changed.
pub(crate) async fn restore(
    State(store): State<Arc<dyn Storage>>,
    State(restorer): State<Restorer>,
    caller: Caller,
    ApiPath(raw): ApiPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let id = existing(store.as_ref(), &caller, &raw, Role::Write).await?;
    let binary = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/octet-stream"));
    let (target, author, source) = if binary {
        (
            Target::Snapshot(body.to_vec()),
            None,
            json!({ "snapshot_bytes": body.len() }),
        )
    } else {
        let request: RestoreBody = serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request(
                "invalid_body",
                format!("expected {{\"version\": ID}} or a binary snapshot: {e}"),
            )
        })?;
        (
            Target::Version(VersionId(request.version)),
            request.author,
            json!({ "version": request.version }),
        )
    };
    let author = caller.author(author.as_deref()).map(str::to_owned);
    let restored = restorer
        .restore(&id, target, author)
        .await
        .map_err(api_error)?;
    Ok((
        StatusCode::OK,
        Json(json!({
            "restore_id": restored.restore_id,
            "restored_from": source,
            "before_version": restored.before_version,
            "report": restored.report,
        })),
    ))
}

fn api_error(e: RestoreError) -> ApiError {
    match e {
        RestoreError::VersionNotFound => {
            ApiError::new(StatusCode::NOT_FOUND, "version_not_found", e.to_string())
        }
        RestoreError::InvalidSnapshot(why) => ApiError::bad_request("invalid_snapshot", why),
        RestoreError::IncompleteSnapshot => {
            ApiError::bad_request("incomplete_snapshot", e.to_string())
        }
        RestoreError::Storage(e) => e.into(),
        RestoreError::Board(e) => e.into(),
    }
}
