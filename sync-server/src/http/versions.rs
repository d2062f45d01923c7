//! `/v1/boards/{id}/versions`: named and automatic versions of a board.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use yrs::{Doc, Transact};

use super::auth::Caller;
use super::boards::existing;
use super::error::ApiError;
use super::extract::{ApiPath, ApiQuery};
use crate::auth::Role;
use crate::board::registry::Boards;
use crate::board::{BoardCmd, Read, VersionMeta};
use crate::ids::VersionId;
use crate::protocol::decode_update;
use crate::storage::{Storage, VersionKind};

/// Longest version label, in characters.
const MAX_LABEL: usize = 200;

#[derive(Debug, Deserialize)]
pub(crate) struct NewNamedVersion {
    label: String,
    author: Option<String>,
}

/// `POST /v1/boards/{id}/versions` `{"label": ..., "author"?: ...}`: saves the board's current
/// durable state as a named version (kept until deleted).
pub(crate) async fn create(
    State(store): State<Arc<dyn Storage>>,
    State(boards): State<Boards>,
    caller: Caller,
    ApiPath(raw): ApiPath<String>,
    body: Option<Json<NewNamedVersion>>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Some(Json(body)) = body else {
        return Err(ApiError::bad_request(
            "invalid_body",
            "expected a JSON body {\"label\": \"...\"}",
        ));
    };
    let label = body.label.trim();
    if label.is_empty() || label.chars().count() > MAX_LABEL {
        return Err(ApiError::bad_request(
            "invalid_label",
            format!("a version label needs 1 to {MAX_LABEL} characters"),
        ));
    }
    let id = existing(store.as_ref(), &caller, &raw, Role::Write).await?;
    // Saved by the board's actor: exactly the board's state at this point of its history.
    let meta = VersionMeta {
        kind: VersionKind::Named,
        label: Some(label.to_owned()),
        author: caller.author(body.author.as_deref()).map(str::to_owned),
        reason: None,
    };
    let info = boards
        .call(&id, |reply| {
            BoardCmd::Read(Read::SaveVersion {
                meta: meta.clone(),
                reply,
            })
        })
        .await??;
    Ok((StatusCode::CREATED, Json(json!(info))))
}

/// `GET /v1/boards/{id}/versions`: the board's versions, newest first.
pub(crate) async fn list(
    State(store): State<Arc<dyn Storage>>,
    caller: Caller,
    ApiPath(raw): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let id = existing(store.as_ref(), &caller, &raw, Role::Read).await?;
    let versions = store.list_versions(&id).await?;
    Ok(Json(json!({ "versions": versions })))
}

#[derive(Debug, Deserialize)]
pub(crate) struct VersionQuery {
    format: Option<String>,
}

fn version_id(raw: &str) -> Result<VersionId, ApiError> {
    raw.parse().map(VersionId).map_err(|_| {
        ApiError::bad_request("invalid_version", format!("{raw:?} is not a version id"))
    })
}

/// `GET /v1/boards/{id}/versions/{v}`: the version as typed JSON, or as a binary Yjs update
/// with `Accept: application/octet-stream` or `?format=yjs`. Never changes the board.
pub(crate) async fn get(
    State(store): State<Arc<dyn Storage>>,
    caller: Caller,
    ApiPath((raw, v)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<VersionQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = existing(store.as_ref(), &caller, &raw, Role::Read).await?;
    let vid = version_id(&v)?;
    let binary = match query.format.as_deref() {
        Some("yjs" | "binary") => true,
        Some("json") => false,
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_format",
                format!("unknown format {other:?}; use yjs or json"),
            ));
        }
        None => headers
            .get(header::ACCEPT)
            .is_some_and(|a| a.as_bytes().starts_with(b"application/octet-stream")),
    };
    let version = store
        .get_version(&id, vid)
        .await?
        .ok_or_else(version_not_found)?;
    if binary {
        return Ok((
            [(header::CONTENT_TYPE, "application/octet-stream")],
            version.data,
        )
            .into_response());
    }
    let update = decode_update(&version.data)
        .map_err(|e| ApiError::internal(&format!("version {vid} of `{id}`: {e}")))?;
    let doc = Doc::new();
    crdt_schema::declare_roots(&doc);
    doc.transact_mut()
        .apply_update(update)
        .map_err(|e| ApiError::internal(&format!("version {vid} of `{id}`: {e}")))?;
    let board = crdt_schema::read_board(&doc.transact());
    Ok(Json(json!({ "version": version.info, "board": board })).into_response())
}

fn version_not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "version_not_found",
        "no such version",
    )
}

/// `DELETE /v1/boards/{id}/versions/{v}`: deletes a named version. Automatic versions are
/// managed by retention and refused here (409).
pub(crate) async fn delete(
    State(store): State<Arc<dyn Storage>>,
    caller: Caller,
    ApiPath((raw, v)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let id = existing(store.as_ref(), &caller, &raw, Role::Admin).await?;
    let vid = version_id(&v)?;
    let version = store
        .get_version(&id, vid)
        .await?
        .ok_or_else(version_not_found)?;
    if version.info.kind == VersionKind::Auto {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "automatic_version",
            "automatic versions are pruned by retention, not deleted",
        ));
    }
    if store.delete_version(&id, vid).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(version_not_found())
    }
}
