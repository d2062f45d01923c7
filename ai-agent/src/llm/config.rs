//! [`LlmConfig`]: where the model lives, the key, timeouts and retry bounds.

use std::fmt;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

/// Configuration of an OpenAI-compatible chat completions endpoint.
///
/// `Debug` never shows the key (it is a [`SecretString`]); nothing in this crate logs or
/// formats it.
pub struct LlmConfig {
    /// API base including the version prefix and without a trailing slash, e.g.
    /// `https://api.openai.com/v1` or `http://127.0.0.1:8000/v1`; requests go to
    /// `{base_url}/chat/completions`. `https` needs the crate's `tls` feature.
    pub base_url: String,
    /// Bearer key. Trimmed before use; may be empty for local servers that want none.
    pub api_key: SecretString,
    /// Model name sent with every request.
    pub model: String,
    /// Limit on establishing a connection.
    pub connect_timeout: Duration,
    /// Limit on each read (response headers, then each streamed chunk). Not a total deadline:
    /// long streams that keep sending are fine; the run's wall-time cap bounds the total.
    pub read_timeout: Duration,
    /// Retries after the first attempt for 429, 5xx and connection failures.
    pub max_retries: u32,
    /// The longest single wait between attempts: a larger `Retry-After` is cut to this, and so
    /// is the exponential backoff.
    pub max_retry_after: Duration,
}

impl LlmConfig {
    /// A configuration with the default timeouts (connect 5 s, read 60 s), 2 retries and waits
    /// of at most 10 s.
    pub fn new(
        base_url: impl Into<String>,
        api_key: impl Into<String>,
        model: impl Into<String>,
    ) -> Self {
        LlmConfig {
            base_url: base_url.into(),
            api_key: SecretString::from(api_key.into()),
            model: model.into(),
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(60),
            max_retries: 2,
            max_retry_after: Duration::from_secs(10),
        }
    }
}

impl Clone for LlmConfig {
    fn clone(&self) -> Self {
        LlmConfig {
            base_url: self.base_url.clone(),
            api_key: SecretString::from(self.api_key.expose_secret()),
            model: self.model.clone(),
            connect_timeout: self.connect_timeout,
            read_timeout: self.read_timeout,
            max_retries: self.max_retries,
            max_retry_after: self.max_retry_after,
        }
    }
}

impl fmt::Debug for LlmConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LlmConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &"[redacted]")
            .field("model", &self.model)
            .field("connect_timeout", &self.connect_timeout)
            .field("read_timeout", &self.read_timeout)
            .field("max_retries", &self.max_retries)
            .field("max_retry_after", &self.max_retry_after)
            .finish()
    }
}
