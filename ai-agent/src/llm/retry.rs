//! Our HTTP execution under async-openai: bounded retries with a capped `Retry-After`.
//!
//! async-openai ≥ 0.38 wraps every client built with `Client::build`/`with_config` in its own
//! `OpenAIRetryLayer`, which sleeps for whatever `Retry-After` says (3600 s included).
//! `Client::with_http_service` (feature `middleware`) replaces that executor entirely; we
//! install [`BoundedRetry`] there, so the only retries are these:
//!
//! - 429 (except `insufficient_quota`), 5xx and connection failures are retried at most
//!   `max_retries` times;
//! - the wait is `Retry-After` (seconds) if given, else 200 ms doubling per attempt, and
//!   **never more than `max_retry_after`**;
//! - a final error status is turned into an [`HttpFailure`] here (the body read and parsed
//!   leniently: a numeric `code` or a non-JSON body are fine), so no error body goes through
//!   async-openai's deserializer (which logs whole bodies).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use async_openai::error::OpenAIError;
use async_openai::middleware::HttpRequestFactory;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{Response, StatusCode};

const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// Bytes of an error body we read at most.
const MAX_ERROR_BODY: usize = 16 * 1024;

/// When and how long to wait between attempts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RetryPolicy {
    pub(crate) max_retries: u32,
    pub(crate) max_wait: Duration,
}

impl RetryPolicy {
    /// The wait before retry number `attempt + 1` (`attempt` counts from 0).
    pub(crate) fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let wanted = retry_after
            .unwrap_or_else(|| FIRST_BACKOFF.saturating_mul(2u32.saturating_pow(attempt.min(16))));
        wanted.min(self.max_wait)
    }
}

/// A final HTTP error status, carried to [`super::LlmClient`] inside `OpenAIError::Boxed`.
#[derive(Debug, thiserror::Error)]
#[error("HTTP {status}")]
pub(crate) struct HttpFailure {
    pub(crate) status: u16,
    pub(crate) retry_after: Option<Duration>,
    /// `error.type` of an OpenAI-style error body.
    pub(crate) kind: Option<String>,
    /// `error.message`, or the start of a non-JSON body (unscrubbed: the client scrubs).
    pub(crate) message: String,
}

/// The tower service installed with `Client::with_http_service`.
#[derive(Debug, Clone)]
pub(crate) struct BoundedRetry {
    http: reqwest::Client,
    policy: RetryPolicy,
}

impl BoundedRetry {
    pub(crate) fn new(http: reqwest::Client, policy: RetryPolicy) -> Self {
        BoundedRetry { http, policy }
    }
}

type ResponseFuture = Pin<Box<dyn Future<Output = Result<Response, OpenAIError>> + Send>>;

impl tower_service::Service<HttpRequestFactory> for BoundedRetry {
    type Response = Response;
    type Error = OpenAIError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: HttpRequestFactory) -> Self::Future {
        Box::pin(send(self.http.clone(), self.policy, request))
    }
}

async fn send(
    http: reqwest::Client,
    policy: RetryPolicy,
    factory: HttpRequestFactory,
) -> Result<Response, OpenAIError> {
    let mut attempt = 0u32;
    loop {
        let request = factory.build().await?;
        let last = attempt >= policy.max_retries;
        let retry_after = match http.execute(request).await {
            Ok(response) if response.status().is_success() => return Ok(response),
            Ok(response) => {
                let status = response.status();
                let retryable = status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
                let failure = failure(response).await;
                let permanent = failure.kind.as_deref() == Some("insufficient_quota");
                if !retryable || permanent || last {
                    return Err(OpenAIError::Boxed(Box::new(failure)));
                }
                failure.retry_after
            }
            Err(e) if e.is_connect() && !last => None,
            Err(e) => return Err(OpenAIError::Reqwest(e)),
        };
        let delay = policy.delay(attempt, retry_after);
        tracing::debug!(
            attempt = attempt + 1,
            delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            "retrying the LLM request"
        );
        tokio::time::sleep(delay).await;
        attempt += 1;
    }
}

/// Reads an error response (headers and at most [`MAX_ERROR_BODY`] bytes of body).
async fn failure(mut response: Response) -> HttpFailure {
    let status = response.status().as_u16();
    let retry_after = parse_retry_after(response.headers());
    let mut body = Vec::new();
    while body.len() < MAX_ERROR_BODY {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    body.truncate(MAX_ERROR_BODY);
    let (kind, message) = match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(v) => {
            let error = v.get("error").unwrap_or(&v);
            let text = |key: &str| error.get(key).and_then(|m| m.as_str()).map(str::to_string);
            (
                text("type"),
                text("message").unwrap_or_else(|| reason(status)),
            )
        }
        Err(_) if body.is_empty() => (None, reason(status)),
        Err(_) => (None, String::from_utf8_lossy(&body).into_owned()),
    };
    HttpFailure {
        status,
        retry_after,
        kind,
        message,
    }
}

fn reason(status: u16) -> String {
    StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("error")
        .to_string()
}

/// `Retry-After` in (possibly fractional) seconds; HTTP dates are ignored (backoff applies).
pub(crate) fn parse_retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let secs: f64 = value.parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(1e9)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn waits_are_capped() {
        let p = RetryPolicy {
            max_retries: 3,
            max_wait: Duration::from_secs(2),
        };
        assert_eq!(
            p.delay(0, Some(Duration::from_secs(3600))),
            Duration::from_secs(2)
        );
        assert_eq!(
            p.delay(0, Some(Duration::from_secs(1))),
            Duration::from_secs(1)
        );
        assert_eq!(p.delay(0, None), Duration::from_millis(200));
        assert_eq!(p.delay(1, None), Duration::from_millis(400));
        assert_eq!(p.delay(30, None), Duration::from_secs(2));
    }

    #[test]
    fn parses_retry_after_seconds_only() {
        let mut h = HeaderMap::new();
        assert_eq!(parse_retry_after(&h), None);
        h.insert(RETRY_AFTER, HeaderValue::from_static("3600"));
        assert_eq!(parse_retry_after(&h), Some(Duration::from_secs(3600)));
        h.insert(RETRY_AFTER, HeaderValue::from_static("0.5"));
        assert_eq!(parse_retry_after(&h), Some(Duration::from_millis(500)));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(parse_retry_after(&h), None);
        h.insert(RETRY_AFTER, HeaderValue::from_static("-1"));
        assert_eq!(parse_retry_after(&h), None);
    }
}
