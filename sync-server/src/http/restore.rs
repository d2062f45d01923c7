//! `POST /v1/boards/{id}/restore`: restore a board to a version or an uploaded snapshot, as a
//! forward change that connected clients receive like any other edit.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use serde::Deserialize;
use serde_json::{Value, json};
use yrs::{Doc, ReadTxn, Transact};

use super::auth::Caller;
use super::boards::existing;
use super::error::ApiError;
use super::extract::ApiPath;
use crate::auth::Role;
use crate::board::{BoardCmd, Read, VersionMeta};
use crate::ids::VersionId;
use crate::protocol::decode_update;
use crate::server::AppState;
use crate::storage::VersionKind;

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
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(raw): ApiPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let id = existing(&state, &caller, &raw, Role::Write).await?;
    let store = state.boards.store();
    let binary = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/octet-stream"));
    let (target, author, source) = if binary {
        (body.to_vec(), None, json!({ "snapshot_bytes": body.len() }))
    } else {
        let request: RestoreBody = serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request(
                "invalid_body",
                format!("expected {{\"version\": ID}} or a binary snapshot: {e}"),
            )
        })?;
        let version = store
            .get_version(&id, VersionId(request.version))
            .await?
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "version_not_found",
                    "no such version",
                )
            })?;
        (
            version.data,
            request.author,
            json!({ "version": request.version }),
        )
    };
    if binary {
        // An upload must be a whole state; a version is one the board had (parts of it that
        // waited for dependencies when it was saved are left out by the restore).
        check_full_state(&target)?;
    }

    let restore_id = uuid::Uuid::now_v7().simple().to_string();
    let origin = format!("restore:{restore_id}");
    // The actor saves the state before as a version and applies the restore right after,
    // with no change in between: restoring that version undoes exactly this restore.
    let before = VersionMeta {
        kind: VersionKind::Auto,
        label: None,
        author: caller.author(author.as_deref()).map(str::to_owned),
        reason: Some("before restore".into()),
    };
    let (report, saved) = state
        .boards
        .call(&id, |reply| {
            BoardCmd::Read(Read::Restore {
                target: target.clone(),
                from_version: !binary,
                origin: origin.clone(),
                before: before.clone(),
                reply,
            })
        })
        .await??;
    Ok((
        StatusCode::OK,
        Json(json!({
            "restore_id": restore_id,
            "restored_from": source,
            "before_version": saved,
            "report": report,
        })),
    ))
}

/// Refuses anything but a complete Yjs state: an incremental update would make the restore
/// delete everything it does not mention.
fn check_full_state(target: &[u8]) -> Result<(), ApiError> {
    let update = decode_update(target).map_err(|e| {
        ApiError::bad_request("invalid_snapshot", format!("not a Yjs update (v1): {e}"))
    })?;
    let doc = Doc::new();
    let mut txn = doc.transact_mut();
    txn.apply_update(update).map_err(|e| {
        ApiError::bad_request(
            "invalid_snapshot",
            format!("the snapshot does not apply: {e}"),
        )
    })?;
    if txn.has_missing_updates() {
        return Err(ApiError::bad_request(
            "incomplete_snapshot",
            "the snapshot depends on updates it does not contain; restore needs a full state",
        ));
    }
    Ok(())
}
