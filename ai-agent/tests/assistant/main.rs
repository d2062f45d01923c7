//! Integration tests of the assistant against a fake OpenAI-compatible server (real HTTP) and an
//! in-memory board peer.

#![allow(clippy::unwrap_used, clippy::needless_pass_by_value, unreachable_pub)]

mod budgets;
mod llm_client;
mod peer;
mod run_loop;

use std::time::Duration;

use ai_agent::{
    Budgets, LlmClient, LlmConfig, RunCaps, RunEvent, RunOutcome, RunRequest, Viewport, run,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use harness::llm as fake;
use harness::llm::{FakeLlm, KEY};
use peer::MemoryPeer;

/// A client for `fake` with short waits (retries capped at 50 ms).
pub fn client(fake: &FakeLlm) -> LlmClient {
    client_with(&fake.base_url(), |_| {})
}

pub fn client_with(base_url: &str, tweak: impl FnOnce(&mut LlmConfig)) -> LlmClient {
    let mut config = LlmConfig::new(base_url, KEY, "gpt-fake");
    config.connect_timeout = Duration::from_secs(2);
    config.read_timeout = Duration::from_secs(5);
    config.max_retries = 2;
    config.max_retry_after = Duration::from_millis(50);
    tweak(&mut config);
    LlmClient::new(config).unwrap()
}

pub fn request(run_id: &str, prompt: &str) -> RunRequest {
    RunRequest {
        run_id: run_id.to_string(),
        user: "alice".to_string(),
        prompt: prompt.to_string(),
        viewport: Some(Viewport {
            x: 0.0,
            y: 0.0,
            w: 1600.0,
            h: 900.0,
        }),
    }
}

pub fn caps() -> RunCaps {
    RunCaps {
        wall_time: Duration::from_secs(20),
        ..RunCaps::default()
    }
}

/// Runs to the end and returns the outcome and every event.
pub async fn run_to_end(
    llm: &LlmClient,
    peer: &MemoryPeer,
    budgets: &Budgets,
    request: RunRequest,
    caps: &RunCaps,
) -> (RunOutcome, Vec<RunEvent>) {
    let (tx, mut rx) = mpsc::channel(1024);
    let outcome = run(
        llm,
        peer,
        budgets,
        request,
        caps,
        tx,
        CancellationToken::new(),
    )
    .await;
    let mut events = Vec::new();
    while let Ok(e) = rx.try_recv() {
        events.push(e);
    }
    (outcome, events)
}
