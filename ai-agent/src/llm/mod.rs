//! The LLM client: streamed chat completions with tools over `async-openai`.
//!
//! [`LlmClient::new`] builds a `reqwest` client with the configured connect and read timeouts
//! and installs our own execution service (`retry.rs`) with `Client::with_http_service`, which
//! replaces async-openai's built-in retry layer (its `Retry-After` wait is uncapped).
//! [`LlmClient::stream_turn`] sends one request with `stream: true` and
//! `stream_options.include_usage`, joins the streamed tool-call fragments by index, and fails
//! with [`LlmError::Protocol`] when the stream ends before a `finish_reason`.

mod config;
mod error;
mod retry;
mod turn;

use std::fmt;
use std::time::Duration;

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::types::chat::{
    ChatCompletionRequestMessage, ChatCompletionStreamOptions, ChatCompletionToolChoiceOption,
    ChatCompletionTools, CreateChatCompletionRequest, ToolChoiceOptions,
};
use futures_util::StreamExt;
use secrecy::{ExposeSecret, SecretString};

pub use config::LlmConfig;
pub use error::LlmError;
pub use turn::{Finish, ToolCallRequest, Turn, Usage};

use error::scrub;
use retry::{BoundedRetry, HttpFailure, RetryPolicy};
use turn::TurnBuilder;

/// Longest message from the service kept in an error.
const MAX_ERROR_MESSAGE: usize = 300;

/// A chat completions client for one OpenAI-compatible endpoint and model.
#[derive(Clone)]
pub struct LlmClient {
    client: Client<OpenAIConfig>,
    model: String,
    base_url: String,
    read_timeout: Duration,
    /// Kept only to scrub it from error messages.
    key: std::sync::Arc<SecretString>,
}

impl fmt::Debug for LlmClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LlmClient")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .finish_non_exhaustive()
    }
}

impl LlmClient {
    /// Builds the client. Fails on an unusable base URL, an `https` URL without the `tls`
    /// feature, or a key that cannot travel in an HTTP header (async-openai would panic on it).
    pub fn new(config: LlmConfig) -> Result<Self, LlmError> {
        let base_url = config.base_url.trim().trim_end_matches('/').to_string();
        let scheme = base_url
            .split_once("://")
            .map(|(s, _)| s.to_ascii_lowercase())
            .ok_or_else(|| {
                LlmError::Config("the base URL needs an http:// or https:// scheme".into())
            })?;
        match scheme.as_str() {
            "http" => {}
            "https" if cfg!(feature = "tls") => {}
            "https" => return Err(LlmError::TlsNotEnabled),
            _ => {
                return Err(LlmError::Config(
                    "the base URL needs an http:// or https:// scheme".into(),
                ));
            }
        }
        reqwest::Url::parse(&format!("{base_url}/chat/completions"))
            .map_err(|e| LlmError::Config(format!("the base URL does not parse: {e}")))?;
        if config.model.trim().is_empty() {
            return Err(LlmError::Config("the model name is empty".into()));
        }
        let key = config.api_key.expose_secret().trim().to_string();
        if reqwest::header::HeaderValue::from_str(&format!("Bearer {key}")).is_err() {
            return Err(LlmError::Config(
                "the API key contains characters not allowed in an HTTP header".into(),
            ));
        }
        // reqwest's read timeout bounds the wait for response headers; while streaming, our own
        // per-chunk timeout (the same value) fires first and gives a typed `Timeout`.
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .read_timeout(config.read_timeout.saturating_add(Duration::from_secs(1)))
            .build()
            .map_err(|e| LlmError::Config(format!("cannot build the HTTP client: {e}")))?;
        let openai = OpenAIConfig::new()
            .with_api_base(base_url.clone())
            .with_api_key(key.clone())
            // `new()` reads these from the environment; never send whatever happens to be there.
            .with_org_id("")
            .with_project_id("");
        let service = BoundedRetry::new(
            http.clone(),
            RetryPolicy {
                max_retries: config.max_retries,
                max_wait: config.max_retry_after,
            },
        );
        let client = Client::build(http, openai).with_http_service(service);
        Ok(LlmClient {
            client,
            model: config.model,
            base_url,
            read_timeout: config.read_timeout,
            key: std::sync::Arc::new(SecretString::from(key)),
        })
    }

    /// The model name requests are sent with.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// A streaming request for one turn: tools offered with `tool_choice: auto` and parallel
    /// calls allowed, usage requested in the stream.
    pub fn request(
        &self,
        messages: Vec<ChatCompletionRequestMessage>,
        tools: Vec<ChatCompletionTools>,
        max_completion_tokens: u32,
    ) -> CreateChatCompletionRequest {
        let has_tools = !tools.is_empty();
        CreateChatCompletionRequest {
            model: self.model.clone(),
            messages,
            tools: has_tools.then_some(tools),
            tool_choice: has_tools.then_some(ChatCompletionToolChoiceOption::Mode(
                ToolChoiceOptions::Auto,
            )),
            parallel_tool_calls: has_tools.then_some(true),
            max_completion_tokens: Some(max_completion_tokens),
            stream: Some(true),
            stream_options: Some(ChatCompletionStreamOptions {
                include_usage: Some(true),
                include_obfuscation: None,
            }),
            ..Default::default()
        }
    }

    /// Sends `request` (streamed) and joins the response into a [`Turn`].
    ///
    /// Each wait for the next chunk is bounded by the read timeout; dropping the future
    /// cancels the request.
    pub async fn stream_turn(
        &self,
        mut request: CreateChatCompletionRequest,
    ) -> Result<Turn, LlmError> {
        request.stream = Some(true);
        let mut stream = self
            .client
            .chat()
            .create_stream(request)
            .await
            .map_err(|e| self.map_error(e))?;
        let mut builder = TurnBuilder::default();
        loop {
            let next = tokio::time::timeout(self.read_timeout, stream.next())
                .await
                .map_err(|_| LlmError::Timeout)?;
            match next {
                None => break,
                Some(Ok(chunk)) => builder.push(chunk)?,
                Some(Err(e)) => return Err(self.map_error(e)),
            }
        }
        builder.finish()
    }

    fn scrub(&self, message: &str) -> String {
        scrub(message, self.key.expose_secret(), MAX_ERROR_MESSAGE)
    }

    fn map_error(&self, error: OpenAIError) -> LlmError {
        match error {
            OpenAIError::Boxed(boxed) => match boxed.downcast::<HttpFailure>() {
                Ok(f) => self.map_failure(&f),
                Err(other) => LlmError::Protocol(self.scrub(&other.to_string())),
            },
            OpenAIError::Reqwest(e) if e.is_timeout() => LlmError::Timeout,
            OpenAIError::Reqwest(e) if e.is_connect() => {
                LlmError::Unavailable(self.scrub(&reqwest_reason(&e)))
            }
            OpenAIError::Reqwest(e) if e.is_builder() || e.is_request() => {
                LlmError::Unavailable(self.scrub(&reqwest_reason(&e)))
            }
            OpenAIError::Reqwest(e) => LlmError::Protocol(self.scrub(&reqwest_reason(&e))),
            OpenAIError::ApiError(api) => LlmError::Api {
                status: api.status_code.as_u16(),
                message: self.scrub(&api.api_error.message),
            },
            OpenAIError::JSONDeserialize(e, _) => {
                // Never keep the body: it is logged by async-openai at error level only.
                LlmError::Protocol(format!("a chunk did not parse: {e}"))
            }
            OpenAIError::StreamError(e) => LlmError::Protocol(self.scrub(&e.to_string())),
            OpenAIError::InvalidArgument(m) => LlmError::Config(self.scrub(&m)),
            other => LlmError::Protocol(self.scrub(&other.to_string())),
        }
    }

    fn map_failure(&self, f: &HttpFailure) -> LlmError {
        match f.status {
            429 if f.kind.as_deref() == Some("insufficient_quota") => LlmError::QuotaExhausted,
            429 => LlmError::RateLimited {
                retry_after: f.retry_after,
            },
            status => LlmError::Api {
                status,
                message: self.scrub(&f.message),
            },
        }
    }
}

/// A reqwest error's description with its sources (the URL in it is the configured base URL).
fn reqwest_reason(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}
