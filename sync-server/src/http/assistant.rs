//! The assistant's routes: start a run (server-sent events or one JSON answer), list runs,
//! read one, cancel one, undo one.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use ai_agent::{RunEvent, Viewport};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Caller;
use super::boards::existing;
use super::error::ApiError;
use super::extract::{ApiPath, ApiQuery};
use crate::assistant::{Assistant, AssistantError, StartRequest};
use crate::auth::Role;
use crate::storage::{RunRecord, Storage};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PromptBody {
    prompt: String,
    viewport: Option<Viewport>,
    /// Who is asking, in open development mode only (tokens name their user).
    user: Option<String>,
}

/// `POST /v1/boards/{id}/assistant`: runs the assistant on `{prompt, viewport?}`. With
/// `Accept: text/event-stream` the answer streams `run`, `step`, `tool`, `text` and `done`
/// events; otherwise one JSON answer comes when the run ends.
pub(crate) async fn start(
    State(store): State<Arc<dyn Storage>>,
    State(assistant): State<Arc<Assistant>>,
    caller: Caller,
    ApiPath(raw): ApiPath<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let id = existing(store.as_ref(), &caller, &raw, Role::Write).await?;
    if !assistant.is_configured() {
        return Err(not_configured());
    }
    let body: PromptBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            "invalid_body",
            format!(
                "expected {{\"prompt\": \"...\", \"viewport\"?: {{\"x\",\"y\",\"w\",\"h\"}}}}: {e}"
            ),
        )
    })?;
    let user = caller.author(body.user.as_deref()).map(str::to_owned);
    let started = assistant
        .start(StartRequest {
            board: id,
            user,
            prompt: body.prompt,
            viewport: body.viewport,
        })
        .await
        .map_err(api_error)?;
    let streaming = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    let opening = json!({ "run_id": started.run_id, "before_version": started.before_version });
    if streaming {
        let first = stream::once(async move { Ok(sse("run", &opening)) });
        let events = stream::unfold(started.events, |mut rx| async move {
            let event = rx.recv().await?;
            let name = match &event {
                RunEvent::Step { .. } => "step",
                RunEvent::Tool(_) => "tool",
                RunEvent::Text { .. } => "text",
                RunEvent::Done(_) => "done",
            };
            let data = match event {
                RunEvent::Done(outcome) => json!(outcome),
                RunEvent::Tool(call) => json!(call),
                other => json!(other),
            };
            Some((Ok::<_, Infallible>(sse(name, &data)), rx))
        });
        let body = Sse::new(first.chain(events))
            .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)));
        return Ok(body.into_response());
    }
    let mut events = started.events;
    while let Some(event) = events.recv().await {
        if let RunEvent::Done(outcome) = event {
            let mut answer = json!(outcome);
            answer["before_version"] = opening["before_version"].clone();
            return Ok((StatusCode::OK, Json(answer)).into_response());
        }
    }
    Err(ApiError::internal(&"the run ended without an outcome"))
}

fn sse(name: &str, data: &Value) -> Event {
    Event::default().event(name).data(data.to_string())
}

#[derive(Debug, Deserialize)]
pub(crate) struct RunsQuery {
    limit: Option<u32>,
}

/// `GET /v1/boards/{id}/assistant/runs?limit=N`: the board's runs, newest first (50 by
/// default, at most 500).
pub(crate) async fn list(
    State(store): State<Arc<dyn Storage>>,
    State(assistant): State<Arc<Assistant>>,
    caller: Caller,
    ApiPath(raw): ApiPath<String>,
    ApiQuery(query): ApiQuery<RunsQuery>,
) -> Result<Json<Value>, ApiError> {
    let id = existing(store.as_ref(), &caller, &raw, Role::Read).await?;
    let limit = query.limit.unwrap_or(50).clamp(1, 500);
    let (runs, active) = assistant.runs(&id, limit).await?;
    Ok(Json(json!({
        "active": active,
        "runs": runs.iter().map(run_json).collect::<Vec<_>>(),
    })))
}

/// `GET /v1/boards/{id}/assistant/runs/{run}`: one run.
pub(crate) async fn get(
    State(store): State<Arc<dyn Storage>>,
    State(assistant): State<Arc<Assistant>>,
    caller: Caller,
    ApiPath((raw, run)): ApiPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let id = existing(store.as_ref(), &caller, &raw, Role::Read).await?;
    let record = assistant.run(&id, &run).await.map_err(api_error)?;
    Ok(Json(run_json(&record)))
}

/// `POST /v1/boards/{id}/assistant/runs/{run}/cancel`: stops a working run (it ends
/// `cancelled`; what it applied stays, and can be undone).
pub(crate) async fn cancel(
    State(store): State<Arc<dyn Storage>>,
    State(assistant): State<Arc<Assistant>>,
    caller: Caller,
    ApiPath((raw, run)): ApiPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let id = existing(store.as_ref(), &caller, &raw, Role::Write).await?;
    let working = assistant
        .cancel(&id, &run)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    if !working {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "run_not_active",
            "that run is not working on this board",
        ));
    }
    Ok(Json(json!({ "run_id": run, "cancelling": true })))
}

/// `POST /v1/boards/{id}/assistant/runs/{run}/undo`: reverts what the run did as one forward
/// change (see the assistant module docs for the rules).
pub(crate) async fn undo(
    State(store): State<Arc<dyn Storage>>,
    State(assistant): State<Arc<Assistant>>,
    caller: Caller,
    ApiPath((raw, run)): ApiPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let id = existing(store.as_ref(), &caller, &raw, Role::Write).await?;
    let by = caller.author(None).map(str::to_owned);
    // A task of its own that the server tracks (see `Assistant::undo`).
    let report = assistant.undo(id, run, by).await.map_err(api_error)?;
    Ok(Json(json!(report)))
}

fn run_json(run: &RunRecord) -> Value {
    let mut value = json!(run);
    value["tool_calls"] = serde_json::from_str(&run.tool_calls)
        .unwrap_or_else(|_| Value::String(run.tool_calls.clone()));
    value
}

fn not_configured() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "assistant_not_configured",
        "the assistant has no model service: set OPENAI_API_KEY (OpenAI's service) or \
         OPENAI_BASE_URL / --llm-base-url (any OpenAI-compatible service), and ASSISTANT_MODEL / \
         --llm-model for another model than the default, then restart the server",
    )
}

fn api_error(e: AssistantError) -> ApiError {
    match e {
        AssistantError::NotConfigured => not_configured(),
        AssistantError::UndoTask(e) => ApiError::internal(&e),
        AssistantError::BadPrompt(why) => ApiError::bad_request("invalid_prompt", why),
        AssistantError::Busy(_) => {
            ApiError::new(StatusCode::CONFLICT, "assistant_busy", e.to_string())
        }
        AssistantError::RunNotFound => {
            ApiError::new(StatusCode::NOT_FOUND, "run_not_found", e.to_string())
        }
        AssistantError::RunActive(_) => {
            ApiError::new(StatusCode::CONFLICT, "run_active", e.to_string())
        }
        AssistantError::AlreadyUndone(_) => {
            ApiError::new(StatusCode::CONFLICT, "run_already_undone", e.to_string())
        }
        AssistantError::Undo(_) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "undo_failed",
            e.to_string(),
        ),
        AssistantError::Board(e) => e.into(),
        AssistantError::Storage(e) => e.into(),
    }
}
