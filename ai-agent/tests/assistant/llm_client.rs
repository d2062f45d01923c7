//! The LLM client against the fake server: retries, caps on waits, broken streams, errors.

use std::time::{Duration, Instant};

use ai_agent::{Budgets, LlmClient, LlmConfig, LlmError, RunStatus};
use serde_json::json;

use crate::fake::{FakeLlm, KEY, Reply, chunk, text_turn};
use crate::peer::{MemoryPeer, sticky};
use crate::{caps, client, client_with, request, run_to_end};

fn rate_limited(retry_after: &'static str) -> Reply {
    Reply::Status(
        429,
        Some(retry_after),
        json!({"error": {"message": "slow down", "type": "rate_limit_error", "param": null, "code": null}}),
    )
}

#[tokio::test]
async fn rate_limit_429_with_retry_after_1_is_retried_then_succeeds() {
    let fake = FakeLlm::start(vec![rate_limited("1"), text_turn("hello")]).await;
    let llm = client_with(&fake.base_url(), |c| {
        c.max_retry_after = Duration::from_secs(5)
    });
    let peer = MemoryPeer::new(&[]);
    let started = Instant::now();
    let (outcome, _) = run_to_end(
        &llm,
        &peer,
        &Budgets::unlimited(),
        request("r-429", "hi"),
        &caps(),
    )
    .await;
    assert_eq!(outcome.status, RunStatus::Completed, "{outcome:?}");
    assert_eq!(outcome.summary, "hello");
    assert_eq!(fake.hits(), 2);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(950),
        "Retry-After not honoured: {waited:?}"
    );
    assert!(waited < Duration::from_secs(4), "{waited:?}");
}

#[tokio::test]
async fn retry_after_3600_is_capped() {
    let fake = FakeLlm::start(vec![rate_limited("3600"), text_turn("hello")]).await;
    let llm = client_with(&fake.base_url(), |c| {
        c.max_retry_after = Duration::from_millis(100)
    });
    let peer = MemoryPeer::new(&[]);
    let started = Instant::now();
    let (outcome, _) = tokio::time::timeout(
        Duration::from_secs(10),
        run_to_end(
            &llm,
            &peer,
            &Budgets::unlimited(),
            request("r-3600", "hi"),
            &caps(),
        ),
    )
    .await
    .expect("Retry-After: 3600 was not capped");
    assert_eq!(outcome.status, RunStatus::Completed, "{outcome:?}");
    assert_eq!(fake.hits(), 2);
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn rate_limit_that_persists_is_a_clear_error_with_the_servers_wish() {
    let fake = FakeLlm::start(vec![
        rate_limited("3600"),
        rate_limited("3600"),
        rate_limited("3600"),
    ])
    .await;
    let (outcome, _) = run_to_end(
        &client(&fake),
        &MemoryPeer::new(&[]),
        &Budgets::unlimited(),
        request("r-429s", "hi"),
        &caps(),
    )
    .await;
    assert_eq!(outcome.status, RunStatus::Failed);
    assert_eq!(fake.hits(), 3);
    let error = outcome.error.unwrap();
    assert!(
        error.contains("rate limiting") && error.contains("3600 s"),
        "{error}"
    );
}

#[tokio::test]
async fn server_errors_are_retried_a_bounded_number_of_times_then_fail_clearly() {
    let boom = || Reply::Status(500, None, json!("upstream exploded"));
    let fake = FakeLlm::start(vec![boom(), boom(), boom(), text_turn("too late")]).await;
    let peer = MemoryPeer::new(&[sticky("a", 0.0, 0.0, "keep")]);
    let before = peer.state();
    let budgets = Budgets::unlimited();
    let (outcome, _) = run_to_end(
        &client(&fake),
        &peer,
        &budgets,
        request("r-500", "hi"),
        &caps(),
    )
    .await;
    assert_eq!(outcome.status, RunStatus::Failed);
    assert_eq!(fake.hits(), 3, "1 attempt + max_retries (2), no more");
    let error = outcome.error.unwrap();
    assert!(error.contains("HTTP 500"), "{error}");
    assert!(outcome.tool_calls.is_empty());
    assert_eq!(peer.state(), before);
    assert_eq!(peer.update_count(), 0);
    assert_eq!(peer.presence_log().last(), Some(&None));
    // Nothing was generated: the reservation was given back.
    let snap = budgets.snapshot();
    assert_eq!((snap.global.used, snap.global.reserved), (0, 0));
}

#[tokio::test]
async fn llm_outage_before_any_tool_call_leaves_the_board_untouched() {
    // A port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let llm = client_with(&format!("http://127.0.0.1:{port}/v1"), |_| {});
    let peer = MemoryPeer::new(&[sticky("a", 0.0, 0.0, "keep")]);
    let before = peer.state();
    let (outcome, _) = run_to_end(
        &llm,
        &peer,
        &Budgets::unlimited(),
        request("r-down", "hi"),
        &caps(),
    )
    .await;
    assert_eq!(outcome.status, RunStatus::Failed);
    let error = outcome.error.unwrap();
    assert!(error.contains("unreachable"), "{error}");
    assert!(outcome.tool_calls.is_empty());
    assert_eq!(peer.state(), before);
    assert!(peer.origins().is_empty());
    assert_eq!(peer.presence_log().last(), Some(&None));
}

#[tokio::test]
async fn quota_exhausted_is_not_retried() {
    let fake = FakeLlm::start(vec![
        Reply::Status(429, None, json!({"error": {"message": "You exceeded your current quota", "type": "insufficient_quota", "code": "insufficient_quota"}})),
        text_turn("never"),
    ])
    .await;
    let (outcome, _) = run_to_end(
        &client(&fake),
        &MemoryPeer::new(&[]),
        &Budgets::unlimited(),
        request("r-q", "hi"),
        &caps(),
    )
    .await;
    assert_eq!(outcome.status, RunStatus::Failed);
    assert_eq!(fake.hits(), 1);
    assert!(outcome.error.unwrap().contains("quota"));
}

#[tokio::test]
async fn a_stream_cut_before_done_is_an_error() {
    let fake = FakeLlm::start(vec![Reply::Cut(vec![
        chunk(json!({"role": "assistant", "content": null}), None),
        chunk(
            json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
            "function": {"name": "createStickyNote", "arguments": "{\"text\": \"half"}}]}),
            None,
        ),
    ])])
    .await;
    let peer = MemoryPeer::new(&[]);
    let budgets = Budgets::unlimited();
    let (outcome, _) = run_to_end(
        &client(&fake),
        &peer,
        &budgets,
        request("r-cut", "hi"),
        &caps(),
    )
    .await;
    assert_eq!(outcome.status, RunStatus::Failed);
    let error = outcome.error.unwrap();
    assert!(error.contains("cut off"), "{error}");
    assert!(outcome.tool_calls.is_empty(), "a half call was applied");
    assert_eq!(peer.update_count(), 0);
    // The request was sent and may have been billed: charged in full, nothing left reserved.
    let snap = budgets.snapshot();
    assert!(snap.global.used > 2048, "{snap:?}");
    assert_eq!(snap.global.reserved, 0);
}

#[tokio::test]
async fn a_silent_stream_times_out() {
    let fake = FakeLlm::start(vec![Reply::Silent(vec![chunk(
        json!({"role": "assistant", "content": "thinking"}),
        None,
    )])])
    .await;
    let llm = client_with(&fake.base_url(), |c| {
        c.read_timeout = Duration::from_millis(300)
    });
    let started = Instant::now();
    let (outcome, _) = run_to_end(
        &llm,
        &MemoryPeer::new(&[]),
        &Budgets::unlimited(),
        request("r-silent", "hi"),
        &caps(),
    )
    .await;
    assert_eq!(outcome.status, RunStatus::Failed);
    assert!(outcome.error.unwrap().contains("in time"));
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn error_messages_never_contain_the_key_and_bodies_parse_leniently() {
    let fake = FakeLlm::start(vec![
        Reply::Status(401, None, json!({"error": {"message": format!("Incorrect API key provided: {KEY}."), "type": "invalid_request_error", "code": "invalid_api_key"}})),
        // A numeric code (async-openai's own parser rejects it).
        Reply::Status(400, None, json!({"error": {"message": "model not found", "code": 404}})),
    ])
    .await;
    let (outcome, _) = run_to_end(
        &client(&fake),
        &MemoryPeer::new(&[]),
        &Budgets::unlimited(),
        request("r-401", "hi"),
        &caps(),
    )
    .await;
    let error = outcome.error.unwrap();
    assert!(
        error.contains("HTTP 401") && error.contains("[redacted]"),
        "{error}"
    );
    assert!(!error.contains(KEY));
    let (outcome, _) = run_to_end(
        &client(&fake),
        &MemoryPeer::new(&[]),
        &Budgets::unlimited(),
        request("r-400", "hi"),
        &caps(),
    )
    .await;
    assert_eq!(
        outcome.error.unwrap(),
        "the LLM service answered HTTP 400: model not found"
    );

    let config = LlmConfig::new(fake.base_url(), KEY, "gpt-fake");
    assert!(!format!("{config:?}").contains(KEY));
    assert!(!format!("{:?}", LlmClient::new(config).unwrap()).contains(KEY));
}

#[test]
fn unusable_configurations_are_typed_errors() {
    let new = |url: &str, key: &str, model: &str| LlmClient::new(LlmConfig::new(url, key, model));
    #[cfg(not(feature = "tls"))]
    {
        let err = new("https://api.openai.com/v1", KEY, "m").unwrap_err();
        assert_eq!(err, LlmError::TlsNotEnabled);
        assert!(err.to_string().contains("`tls` feature"));
    }
    #[cfg(feature = "tls")]
    assert!(new("https://api.openai.com/v1", KEY, "m").is_ok());
    // A key with a newline would make async-openai panic on the first request.
    let err = new("http://127.0.0.1:1/v1", "sk-abc\ndef", "m").unwrap_err();
    assert!(matches!(err, LlmError::Config(_)));
    assert!(!err.to_string().contains("sk-abc"));
    assert!(matches!(
        new("ftp://x/v1", KEY, "m"),
        Err(LlmError::Config(_))
    ));
    assert!(matches!(
        new("http://127.0.0.1:1/v1", KEY, " "),
        Err(LlmError::Config(_))
    ));
    // Surrounding whitespace in the key is trimmed, a trailing slash in the URL dropped.
    assert!(new("http://127.0.0.1:1/v1/", " sk-ok \n", "m").is_ok());
}
