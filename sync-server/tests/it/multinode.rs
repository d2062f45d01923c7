//! Several servers ("nodes") on one PostgreSQL database: the board-wide rules hold across them
//! because the database holds them. One assistant run per board, whichever node it started on,
//! and a node that stopped mid-run does not hold its board for ever; maintenance (compaction,
//! automatic versions, retention) of a board by one node at a time; token budgets and request
//! rates shared by every node and kept across restarts.
//!
//! Each test runs two in-process servers on two stores of the same database (the fixture's
//! schema), and needs `TEST_DATABASE_URL` (skipped with a message without it, except under
//! `CI=true`).

use std::sync::Arc;
use std::time::Duration;

use ai_agent::{BudgetLimits, LlmConfig, RunCaps};
use harness::fixture::Fixture;
use harness::llm::{self as fake, FakeLlm, Reply, text_turn};
use harness::{TestServer, WAIT, config, http};
use serde_json::{Value, json};
use sync_server::assistant::AssistantConfig;
use sync_server::ids::BoardId;
use sync_server::server::Config;
use sync_server::storage::{NewRun, RunState};

const JSON: Option<&str> = Some("application/json");

fn assistant(fake: &FakeLlm, run_expiry: Duration) -> AssistantConfig {
    let mut llm = LlmConfig::new(fake.base_url(), fake::KEY, "gpt-fake");
    llm.max_retries = 0;
    llm.read_timeout = Duration::from_secs(10);
    AssistantConfig {
        llm,
        caps: RunCaps::default(),
        budgets: BudgetLimits::default(),
        max_prompt_chars: 4000,
        run_expiry,
    }
}

fn node_config(assistant: AssistantConfig) -> Config {
    Config {
        assistant: Some(assistant),
        ..config()
    }
}

async fn create_board(node: &TestServer, id: &str) {
    let body = json!({ "id": id }).to_string();
    let created = http(node.addr, "POST", "/v1/boards", JSON, body.as_bytes()).await;
    assert_eq!(
        created.status,
        201,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
}

async fn prompt(node: &TestServer, board: &str, text: &str) -> (u16, Value) {
    let body = json!({ "prompt": text }).to_string();
    let path = format!("/v1/boards/{board}/assistant");
    let answer = http(node.addr, "POST", &path, JSON, body.as_bytes()).await;
    (answer.status, answer.json())
}

async fn runs(node: &TestServer, board: &str) -> Value {
    let path = format!("/v1/boards/{board}/assistant/runs");
    let answer = http(node.addr, "GET", &path, None, b"").await;
    assert_eq!(answer.status, 200);
    answer.json()
}

/// The run active on `board` as `node` sees it, once there is one.
async fn active_run(node: &TestServer, board: &str) -> String {
    tokio::time::timeout(WAIT, async {
        loop {
            if let Some(id) = runs(node, board).await["active"].as_str() {
                return id.to_owned();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("a run becomes active")
}

/// A run that works on node A holds its board on node B too: a prompt there is refused 409
/// `assistant_busy` naming A's run, for longer than several heartbeat expiries (A's heartbeat
/// keeps the claim alive); once A's run ended, B's prompt is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_on_another_node_is_refused_while_a_run_works() {
    let Some(fx) = Fixture::postgres().await else {
        return;
    };
    // A's model call takes 2 s (then fails); B's is answered at once.
    let fake = FakeLlm::start(vec![
        Reply::Stall(Duration::from_secs(2)),
        text_turn("Done on B."),
    ])
    .await;
    // An expiry far shorter than the run: only heartbeats keep its claim.
    let expiry = Duration::from_millis(450);
    let a =
        Arc::new(TestServer::start(node_config(assistant(&fake, expiry)), fx.store.clone()).await);
    let b = TestServer::start(node_config(assistant(&fake, expiry)), fx.reopen().await).await;
    create_board(&a, "shared").await;

    let first = {
        let a = a.clone();
        tokio::spawn(async move { prompt(&a, "shared", "slow one").await })
    };
    let run_id = active_run(&b, "shared").await;
    let started = tokio::time::Instant::now();
    let mut refusals = 0;
    // Refused all along, well past the expiry.
    while started.elapsed() < Duration::from_millis(1200) {
        let (status, refused) = prompt(&b, "shared", "second").await;
        assert_eq!(status, 409, "{refused}");
        assert_eq!(refused["error"]["code"], "assistant_busy");
        let message = refused["error"]["message"].as_str().unwrap();
        assert!(message.contains(&run_id), "{message}");
        refusals += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refusals >= 5);
    let (status, outcome) = first.await.unwrap();
    assert_eq!(status, 200, "{outcome}");
    assert_eq!(
        outcome["status"], "failed",
        "the stall ends in a 500: {outcome}"
    );

    let (status, accepted) = prompt(&b, "shared", "now").await;
    assert_eq!(status, 200, "{accepted}");
    assert_eq!(accepted["status"], "completed", "{accepted}");
    let listed = runs(&a, "shared").await;
    let states: Vec<&str> = listed["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["completed", "failed"], "{listed}");
    b.shutdown().await.unwrap();
    Arc::into_inner(a).unwrap().shutdown().await.unwrap();
    fx.finish().await;
}

/// A node that stopped mid-run leaves its run `running` with a heartbeat nobody refreshes:
/// the board is refused while the heartbeat is fresh, and accepted once it expired (the run
/// is then recorded `interrupted`). A node starting up meanwhile leaves the live runs of
/// other nodes alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_heartbeat_expired_stops_blocking() {
    let Some(fx) = Fixture::postgres().await else {
        return;
    };
    let fake = FakeLlm::start(vec![text_turn("Done.")]).await;
    let expiry = Duration::from_millis(800);
    let b = TestServer::start(node_config(assistant(&fake, expiry)), fx.store.clone()).await;
    create_board(&b, "orphaned").await;
    // The run of a node that stopped: recorded, never refreshed.
    let dead_node = fx.reopen().await;
    let board = BoardId::parse("orphaned").unwrap();
    dead_node
        .start_run(
            &board,
            NewRun {
                id: "dead-run",
                user: None,
                prompt: "p",
                model: "gpt-fake",
                before_version: None,
                expired_before: 0,
            },
        )
        .await
        .unwrap();
    dead_node.close().await;

    let (status, refused) = prompt(&b, "orphaned", "too early").await;
    assert_eq!(status, 409, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("dead-run")
    );
    // Another node starting now does not take the run for stale: its heartbeat is fresh.
    let c = TestServer::start(node_config(assistant(&fake, expiry)), fx.reopen().await).await;
    let run = fx.store.get_run(&board, "dead-run").await.unwrap().unwrap();
    assert_eq!(run.state, RunState::Running);

    tokio::time::sleep(expiry + Duration::from_millis(100)).await;
    let (status, accepted) = prompt(&c, "orphaned", "now").await;
    assert_eq!(status, 200, "{accepted}");
    assert_eq!(accepted["status"], "completed", "{accepted}");
    let run = fx.store.get_run(&board, "dead-run").await.unwrap().unwrap();
    assert_eq!(run.state, RunState::Interrupted);
    c.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
    fx.finish().await;
}
