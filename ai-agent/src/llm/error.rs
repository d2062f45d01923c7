//! [`LlmError`]: what can go wrong talking to the model. Messages never contain the API key.

use std::time::Duration;

/// A failed model call. Every message is safe to log and to show to the user who asked: it
/// never contains the API key (messages from the service are scrubbed of it and shortened).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LlmError {
    /// The configuration is unusable (bad base URL, a key with characters HTTP forbids, ...).
    #[error("invalid LLM configuration: {0}")]
    Config(String),
    /// The base URL is `https` but the crate was built without TLS.
    #[error("the LLM base URL uses https, but ai-agent was built without its `tls` feature")]
    TlsNotEnabled,
    /// No connection could be made (after the allowed retries).
    #[error("the LLM service is unreachable: {0}")]
    Unavailable(String),
    /// HTTP 429 after the allowed retries.
    #[error("the LLM service is rate limiting requests{}", retry_hint(*.retry_after))]
    RateLimited {
        /// What the last `Retry-After` asked for, if anything (not capped).
        retry_after: Option<Duration>,
    },
    /// HTTP 429 with `insufficient_quota`: the account is out of credit; never retried.
    #[error("the LLM account has no quota left")]
    QuotaExhausted,
    /// Connecting, or waiting for the response or its next chunk, took too long.
    #[error("the LLM service did not answer in time")]
    Timeout,
    /// The response broke the protocol: the stream ended before the model finished (no
    /// `finish_reason` / `[DONE]`), a chunk did not parse, or the body was cut.
    #[error("the LLM response was malformed or cut off: {0}")]
    Protocol(String),
    /// Any other HTTP error status (after retries for 5xx).
    #[error("the LLM service answered HTTP {status}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The service's message, scrubbed and shortened.
        message: String,
    },
}

fn retry_hint(retry_after: Option<Duration>) -> String {
    match retry_after {
        Some(d) => format!(" (retry after {} s)", d.as_secs()),
        None => String::new(),
    }
}

impl LlmError {
    /// Whether the failure happened before the service did any billable work (an error status
    /// or no connection), so a token reservation for the call can be released.
    pub fn before_generation(&self) -> bool {
        matches!(
            self,
            LlmError::Config(_)
                | LlmError::TlsNotEnabled
                | LlmError::Unavailable(_)
                | LlmError::RateLimited { .. }
                | LlmError::QuotaExhausted
                | LlmError::Api { .. }
        )
    }
}

/// Removes `secret` from `message` and shortens it to at most `max` characters.
pub(crate) fn scrub(message: &str, secret: &str, max: usize) -> String {
    let cleaned = if secret.len() >= 4 {
        message.replace(secret, "[redacted]")
    } else {
        message.to_string()
    };
    let cleaned: String = cleaned
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let cleaned = cleaned.trim();
    if cleaned.chars().count() > max {
        let mut s: String = cleaned.chars().take(max).collect();
        s.push('…');
        s
    } else {
        cleaned.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_removes_the_key_and_shortens() {
        let s = scrub("bad key sk-secret-123 given\n", "sk-secret-123", 100);
        assert_eq!(s, "bad key [redacted] given");
        assert_eq!(scrub("abcdef", "", 3), "abc…");
    }
}
