//! `/v1/boards`: create, list, read, write and delete boards.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Caller;
use super::error::ApiError;
use super::extract::{ApiPath, ApiQuery};
use crate::auth::Role;
use crate::board::registry::Boards;
use crate::board::{BoardCmd, Read};
use crate::ids::BoardId;
use crate::protocol::decode_update;
use crate::refusal::Refusal;
use crate::storage::Storage;
use crate::transfer::import_board;

const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;

#[derive(Debug, Deserialize)]
pub(crate) struct CreateQuery {
    id: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct CreateBody {
    id: Option<String>,
}

/// `POST /v1/boards`: creates a board. The id comes from a JSON body `{"id": ...}` or the
/// `?id=` parameter; without one, a random id is chosen. A body of type
/// `application/octet-stream` is a Yjs update v1 (a snapshot) that becomes the board's content.
pub(crate) async fn create(
    State(store): State<Arc<dyn Storage>>,
    caller: Caller,
    ApiQuery(query): ApiQuery<CreateQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let binary = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/octet-stream"));
    let mut requested = query.id;
    if !binary && !body.is_empty() {
        let parsed: CreateBody = serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request("invalid_body", format!("invalid JSON body: {e}"))
        })?;
        requested = requested.or(parsed.id);
    }
    let id = match requested {
        Some(raw) => BoardId::parse(&raw)?,
        None => {
            // A random id: only a token for every board can name a board not yet chosen.
            caller.require_all_boards(Role::Write)?;
            BoardId::parse(&uuid::Uuid::new_v4().simple().to_string())?
        }
    };
    caller.require(&id, Role::Write)?;
    let info = if binary && !body.is_empty() {
        import_board(store.as_ref(), &id, &body).await?
    } else {
        store.create_board(&id).await?
    };
    Ok((
        StatusCode::CREATED,
        Json(json!({ "id": info.id, "created_at": info.created_at })),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
pub(crate) struct ListQuery {
    after: Option<String>,
    limit: Option<u32>,
}

/// `GET /v1/boards?after=ID&limit=N`: boards in id order, a page at a time.
pub(crate) async fn list(
    State(store): State<Arc<dyn Storage>>,
    caller: Caller,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    caller.require_all_boards(Role::Read)?;
    let after = query.after.as_deref().map(BoardId::parse).transpose()?;
    let limit = query.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let boards = store.list_boards(after.as_ref(), limit).await?;
    let next = (boards.len() == limit as usize)
        .then(|| boards.last().map(|b| b.id.clone()))
        .flatten();
    Ok(Json(json!({ "boards": boards, "next_after": next })))
}

/// Parses the id, checks that the caller has `role` on the board, then that it exists (in
/// that order, so a caller without access cannot probe which boards exist).
pub(super) async fn existing(
    store: &dyn Storage,
    caller: &Caller,
    raw: &str,
    role: Role,
) -> Result<BoardId, ApiError> {
    let id = BoardId::parse(raw)?;
    caller.require(&id, role)?;
    match store.get_board(&id).await? {
        Some(_) => Ok(id),
        None => Err(ApiError::board_not_found()),
    }
}

/// `GET /v1/boards/{id}`: the board as typed JSON (the crdt-schema view), from durable state.
pub(crate) async fn get_json(
    State(store): State<Arc<dyn Storage>>,
    State(boards): State<Boards>,
    caller: Caller,
    ApiPath(raw): ApiPath<String>,
) -> Result<Json<crdt_schema::Board>, ApiError> {
    let id = existing(store.as_ref(), &caller, &raw, Role::Read).await?;
    let board = boards
        .call(&id, |reply| BoardCmd::Read(Read::Json { reply }))
        .await??;
    Ok(Json(board))
}

#[derive(Debug, Deserialize)]
pub(crate) struct StateQuery {
    format: Option<String>,
}

/// `GET /v1/boards/{id}/state`: the whole board as one Yjs update v1 (the export format), or
/// with `?format=json` the typed JSON of `GET /v1/boards/{id}`.
pub(crate) async fn state(
    State(store): State<Arc<dyn Storage>>,
    State(boards): State<Boards>,
    caller: Caller,
    ApiPath(raw): ApiPath<String>,
    ApiQuery(query): ApiQuery<StateQuery>,
) -> Result<Response, ApiError> {
    match query.format.as_deref() {
        None | Some("yjs" | "binary") => {}
        Some("json") => {
            return get_json(State(store), State(boards), caller, ApiPath(raw))
                .await
                .map(IntoResponse::into_response);
        }
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_format",
                format!("unknown format {other:?}; use yjs or json"),
            ));
        }
    }
    let id = existing(store.as_ref(), &caller, &raw, Role::Read).await?;
    let bytes = boards
        .call(&id, |reply| BoardCmd::Read(Read::State { reply }))
        .await??;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

/// `POST /v1/boards/{id}/updates`: applies a binary Yjs update v1 through the same durable
/// path as WebSocket clients; answers once it is committed. Connected clients receive it.
pub(crate) async fn apply_update(
    State(store): State<Arc<dyn Storage>>,
    State(boards): State<Boards>,
    caller: Caller,
    ApiPath(raw): ApiPath<String>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let id = existing(store.as_ref(), &caller, &raw, Role::Write).await?;
    // Refuse bad bytes here with a 400; the actor decodes them again when it applies them.
    decode_update(&body).map_err(|e| ApiError::bad_request("invalid_update", e.to_string()))?;
    let raw = body.to_vec();
    let result = boards
        .call(&id, |reply| BoardCmd::HttpUpdate {
            raw: raw.clone(),
            reply,
        })
        .await?;
    result?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/boards/{id}/stateless`: sends the body (UTF-8 text, up to the message size limit)
/// as a stateless message to every connection of the board that takes them (Hocuspocus
/// documents; y-websocket clients have no such message). Nothing is stored. Answers how many
/// it was queued to; a board no one has open is not loaded for it (0).
pub(crate) async fn stateless(
    State(store): State<Arc<dyn Storage>>,
    State(boards): State<Boards>,
    caller: Caller,
    ApiPath(raw): ApiPath<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let id = existing(store.as_ref(), &caller, &raw, Role::Write).await?;
    let payload = std::str::from_utf8(&body)
        .map_err(|_| ApiError::bad_request("invalid_body", "a stateless message is UTF-8 text"))?;
    let delivered = boards.send_stateless(&id, payload).await;
    Ok(Json(json!({ "delivered": delivered })))
}

/// `DELETE /v1/boards/{id}`: closes the board's connections (code 4404, so clients stop
/// reconnecting) and deletes it with its history.
pub(crate) async fn delete(
    State(store): State<Arc<dyn Storage>>,
    State(boards): State<Boards>,
    caller: Caller,
    ApiPath(raw): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let id = existing(store.as_ref(), &caller, &raw, Role::Admin).await?;
    // An admin's doing, not the clients': not counted as their refusal.
    if boards.delete(&id, Refusal::Deleted.into()).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::board_not_found())
    }
}
