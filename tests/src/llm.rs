//! The fake model service: an OpenAI-compatible server on real HTTP (127.0.0.1:0) answering
//! chat completions from a script, or from a function of each request, and recording request
//! bodies. Used by the assistant's tests (`ai-agent`) and the server's.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

/// The API key the fake accepts (`Authorization: Bearer KEY`); others get 401.
pub const KEY: &str = "sk-test-key-0123456789";

/// One scripted answer.
#[derive(Debug, Clone)]
pub enum Reply {
    /// SSE chunks, then `data: [DONE]`.
    Sse(Vec<Value>),
    /// SSE chunks, then the body ends without `[DONE]`.
    Cut(Vec<Value>),
    /// SSE chunks, then silence (the connection stays open).
    Silent(Vec<Value>),
    /// An error status with an optional `Retry-After` and a body.
    Status(u16, Option<&'static str>, Value),
    /// Waits this long, then answers 500.
    Stall(Duration),
}

/// Answers a request once the script is exhausted.
type Responder = Arc<dyn Fn(&Value) -> Reply + Send + Sync>;

#[derive(Default)]
struct Inner {
    script: VecDeque<Reply>,
    requests: Vec<Value>,
    responder: Option<Responder>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("script", &self.script)
            .field("requests", &self.requests.len())
            .field("responder", &self.responder.is_some())
            .finish()
    }
}

/// A running fake model service; it runs until the runtime that started it ends.
#[derive(Clone, Debug)]
pub struct FakeLlm {
    addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
}

impl FakeLlm {
    /// Answers requests with `script`, in order; once it is exhausted, with 500.
    pub async fn start(script: Vec<Reply>) -> FakeLlm {
        Self::serve(Inner {
            script: script.into(),
            ..Inner::default()
        })
        .await
    }

    /// Answers every request with what `respond` makes of its body (JSON, `null` if it is
    /// not).
    pub async fn answering(respond: impl Fn(&Value) -> Reply + Send + Sync + 'static) -> FakeLlm {
        Self::serve(Inner {
            responder: Some(Arc::new(respond)),
            ..Inner::default()
        })
        .await
    }

    async fn serve(inner: Inner) -> FakeLlm {
        let inner = Arc::new(Mutex::new(inner));
        // Requests carry the whole conversation; some tests make it large on purpose.
        let app = Router::new()
            .route("/v1/chat/completions", post(handle))
            .layer(axum::extract::DefaultBodyLimit::max(64 << 20))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeLlm { addr, inner }
    }

    /// The base URL to configure a client with (`http://127.0.0.1:PORT/v1`).
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Bodies of every request received, in order.
    pub fn requests(&self) -> Vec<Value> {
        self.inner.lock().unwrap().requests.clone()
    }

    /// How many requests arrived (with the right key).
    pub fn hits(&self) -> usize {
        self.inner.lock().unwrap().requests.len()
    }
}

async fn handle(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if auth != Some(&format!("Bearer {KEY}")) {
        return (StatusCode::UNAUTHORIZED, "bad key").into_response();
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let reply = {
        let mut inner = inner.lock().unwrap();
        let reply = inner
            .script
            .pop_front()
            .or_else(|| inner.responder.as_ref().map(|respond| respond(&body)));
        inner.requests.push(body);
        reply
    };
    let Some(reply) = reply else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "script exhausted").into_response();
    };
    match reply {
        Reply::Sse(chunks) => sse(chunks, Tail::Done),
        Reply::Cut(chunks) => sse(chunks, Tail::Cut),
        Reply::Silent(chunks) => sse(chunks, Tail::Silent),
        Reply::Status(status, retry_after, body) => {
            let mut response = (
                StatusCode::from_u16(status).unwrap(),
                [(header::CONTENT_TYPE, "application/json")],
                body.to_string(),
            )
                .into_response();
            if let Some(ra) = retry_after {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, ra.parse().unwrap());
            }
            response
        }
        Reply::Stall(d) => {
            tokio::time::sleep(d).await;
            (StatusCode::INTERNAL_SERVER_ERROR, "stalled").into_response()
        }
    }
}

#[derive(Clone, Copy)]
enum Tail {
    Done,
    Cut,
    Silent,
}

fn sse(chunks: Vec<Value>, tail: Tail) -> Response {
    let mut events: Vec<Result<Bytes, Infallible>> = chunks
        .into_iter()
        .map(|c| Ok(Bytes::from(format!("data: {c}\n\n"))))
        .collect();
    if matches!(tail, Tail::Done) {
        events.push(Ok(Bytes::from_static(b"data: [DONE]\n\n")));
    }
    let stream = futures_util::stream::iter(events);
    let body = match tail {
        Tail::Silent => Body::from_stream(futures_util::StreamExt::chain(
            stream,
            futures_util::stream::pending(),
        )),
        _ => Body::from_stream(stream),
    };
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(body)
        .unwrap()
}

// ---- chunk builders ----

/// One `chat.completion.chunk` event with `delta`, and `finish_reason` if given.
#[allow(clippy::needless_pass_by_value)] // Called with `json!(...)` temporaries.
pub fn chunk(delta: Value, finish: Option<&str>) -> Value {
    json!({
        "id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1700000000,
        "model": "gpt-fake",
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]
    })
}

/// A final chunk with token usage and no choices.
pub fn usage(prompt: u32, completion: u32) -> Value {
    json!({
        "id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1700000000,
        "model": "gpt-fake", "choices": [],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                  "total_tokens": prompt + completion}
    })
}

/// A tool call as (id, name, arguments JSON text).
pub type Call<'a> = (&'a str, &'a str, String);

/// Fragments of call `index`: the first with id and name and half the arguments, the second
/// with the rest.
pub fn call_fragments(index: usize, call: &Call<'_>) -> [Value; 2] {
    let (id, name, args) = call;
    let split = args
        .char_indices()
        .nth(args.chars().count() / 2)
        .map_or(0, |(i, _)| i);
    let (a, b) = args.split_at(split);
    [
        chunk(
            json!({"tool_calls": [{"index": index, "id": id, "type": "function",
                   "function": {"name": name, "arguments": a}}]}),
            None,
        ),
        chunk(
            json!({"tool_calls": [{"index": index, "function": {"arguments": b}}]}),
            None,
        ),
    ]
}

/// A turn calling `calls` in order, each in two fragments, then `finish_reason: tool_calls`
/// and usage.
pub fn tool_turn(calls: &[Call<'_>]) -> Reply {
    let mut chunks = vec![chunk(json!({"role": "assistant", "content": null}), None)];
    for (i, c) in calls.iter().enumerate() {
        chunks.extend(call_fragments(i, c));
    }
    chunks.push(chunk(json!({}), Some("tool_calls")));
    chunks.push(usage(100, 20));
    Reply::Sse(chunks)
}

/// A final text turn.
pub fn text_turn(text: &str) -> Reply {
    Reply::Sse(vec![
        chunk(json!({"role": "assistant", "content": ""}), None),
        chunk(json!({"content": text}), None),
        chunk(json!({}), Some("stop")),
        usage(50, 10),
    ])
}

/// A tool call `name(args)` with call id `id`.
#[allow(clippy::needless_pass_by_value)] // Called with `json!(...)` temporaries.
pub fn call<'a>(id: &'a str, name: &'a str, args: Value) -> Call<'a> {
    (id, name, args.to_string())
}

/// The messages of a recorded request.
pub fn messages(request: &Value) -> Vec<Value> {
    request["messages"].as_array().cloned().unwrap_or_default()
}

/// The tool result messages of a request, parsed, by call id.
pub fn tool_results(request: &Value) -> Vec<(String, Value)> {
    messages(request)
        .into_iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| {
            let content: Value = serde_json::from_str(m["content"].as_str().unwrap()).unwrap();
            (m["tool_call_id"].as_str().unwrap().to_string(), content)
        })
        .collect()
}
