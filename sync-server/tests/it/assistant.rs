//! The assistant hosted by the server, end to end: a real HTTP fake of an OpenAI-compatible
//! service, the server in-process, y-websocket test clients on the board.

use std::sync::Arc;
use std::time::Duration;

use ai_agent::{BudgetLimits, LlmConfig, RunCaps};
use harness::llm::{self as fake, FakeLlm, Reply, call, text_turn, tool_turn};
use harness::{
    SqliteDb, TestClient, TestServer, WAIT, config, http, http_request, memory_store, notes,
};
use serde_json::{Value, json};
use sync_server::assistant::AssistantConfig;
use sync_server::auth::token::TokenRequest;
use sync_server::auth::{Auth, Keys, Role, Scope, Secret};
use sync_server::server::Config;

const JSON: Option<&str> = Some("application/json");

fn assistant(fake: &FakeLlm) -> AssistantConfig {
    let mut llm = LlmConfig::new(fake.base_url(), fake::KEY, "gpt-fake");
    llm.max_retries = 1;
    llm.max_retry_after = Duration::from_millis(50);
    llm.read_timeout = Duration::from_secs(5);
    AssistantConfig {
        llm,
        caps: RunCaps::default(),
        budgets: BudgetLimits::default(),
        max_prompt_chars: 4000,
        run_expiry: sync_server::assistant::DEFAULT_RUN_EXPIRY,
    }
}

fn with_assistant(fake: &FakeLlm) -> Config {
    Config {
        assistant: Some(assistant(fake)),
        ..config()
    }
}

async fn create_board(server: &TestServer, id: &str) {
    let body = json!({ "id": id }).to_string();
    let created = http(server.addr, "POST", "/v1/boards", JSON, body.as_bytes()).await;
    assert_eq!(
        created.status,
        201,
        "{:?}",
        String::from_utf8_lossy(&created.body)
    );
}

async fn prompt(server: &TestServer, board: &str, text: &str) -> (u16, Value) {
    let body = json!({ "prompt": text }).to_string();
    let path = format!("/v1/boards/{board}/assistant");
    let answer = http(server.addr, "POST", &path, JSON, body.as_bytes()).await;
    (answer.status, answer.json())
}

async fn get_json(server: &TestServer, path: &str) -> Value {
    let answer = http(server.addr, "GET", path, None, b"").await;
    assert_eq!(
        answer.status,
        200,
        "{path}: {:?}",
        String::from_utf8_lossy(&answer.body)
    );
    answer.json()
}

fn sticky(id: &str, text: &str, x: i64) -> fake::Call<'static> {
    let id: &'static str = Box::leak(id.to_owned().into_boxed_str());
    call(
        id,
        "createStickyNote",
        json!({"text": text, "x": x, "y": 40, "color": "yellow", "frame": null}),
    )
}

/// Server-sent events of a response body: (event, data).
fn sse_events(body: &[u8]) -> Vec<(String, Value)> {
    let text = String::from_utf8_lossy(body);
    text.split("\n\n")
        .filter_map(|block| {
            let mut name = None;
            let mut data = String::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    name = Some(v.trim().to_owned());
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            Some((name?, serde_json::from_str(&data).ok()?))
        })
        .collect()
}

/// A prompt's edits reach every connected client through the normal durable path, the
/// assistant shows in awareness while it works, and the run is recorded with its tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_edits_the_board_like_a_peer_and_is_recorded() {
    let fake = FakeLlm::start(vec![
        tool_turn(&[call("c0", "getBoardState", json!({"region": null}))]),
        tool_turn(&[
            sticky("c1", "Went well", 0),
            sticky("c2", "To improve", 300),
        ]),
        text_turn("Added two notes."),
    ])
    .await;
    let server = TestServer::start(with_assistant(&fake), memory_store().await).await;
    create_board(&server, "retro").await;
    let watcher = TestClient::connect(server.addr, "retro", false).await;
    watcher.wait_synced().await;

    let path = "/v1/boards/retro/assistant";
    let body =
        json!({"prompt": "lay out a retro", "viewport": {"x": 0, "y": 0, "w": 1600, "h": 900}});
    let answer = http_request(
        server.addr,
        None,
        "POST",
        path,
        &[
            ("content-type", "application/json"),
            ("accept", "text/event-stream"),
        ],
        body.to_string().as_bytes(),
    )
    .await;
    assert_eq!(answer.status, 200);
    assert!(
        answer
            .header("content-type")
            .unwrap()
            .starts_with("text/event-stream")
    );
    let events = sse_events(&answer.body);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"run"), "{names:?}");
    assert_eq!(names.last(), Some(&"done"), "{names:?}");
    assert_eq!(
        names.iter().filter(|n| **n == "tool").count(),
        3,
        "{names:?}"
    );
    let run_id = events[0].1["run_id"].as_str().unwrap().to_owned();
    let done = &events.last().unwrap().1;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["objects_created"], 2);

    // The watcher received both notes, with their text.
    watcher
        .wait_for("two notes", |s| notes(&s.doc).len() == 2)
        .await;
    let mut texts: Vec<String> = watcher.with(|s| notes(&s.doc).into_values().collect());
    texts.sort();
    assert_eq!(texts, ["To improve", "Went well"]);
    // The assistant appeared in awareness and was cleared at the end (the clearing frame was
    // queued before `done` was sent, but this client may read it a moment later).
    watcher
        .wait_for("the assistant's presence cleared", |s| {
            s.seen
                .awareness
                .last()
                .and_then(|u| u.clients.values().last())
                .is_some_and(|e| &*e.json == "null")
        })
        .await;
    let assistant_states: Vec<String> = watcher.with(|s| {
        s.seen
            .awareness
            .iter()
            .flat_map(|u| u.clients.values().map(|e| e.json.to_string()))
            .collect()
    });
    assert!(
        assistant_states
            .iter()
            .any(|j| j.contains("\"assistant\":true") && j.contains(&run_id)),
        "{assistant_states:?}"
    );
    assert_eq!(
        assistant_states.last().map(String::as_str),
        Some("null"),
        "the assistant's state is cleared last"
    );

    // Recorded: who, prompt, tool calls, tokens, state; the version before the run exists.
    let runs = get_json(&server, "/v1/boards/retro/assistant/runs").await;
    let run = &runs["runs"][0];
    assert_eq!(run["id"], run_id.as_str());
    assert_eq!(run["state"], "completed");
    assert_eq!(run["prompt"], "lay out a retro");
    assert_eq!(run["tool_calls"].as_array().unwrap().len(), 3);
    assert_eq!(run["prompt_tokens"], 250);
    assert_eq!(run["completion_tokens"], 50);
    assert_eq!(run["objects_created"], 2);
    assert!(runs["active"].is_null());
    let versions = get_json(&server, "/v1/boards/retro/versions").await;
    assert!(
        versions["versions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["reason"] == "before assistant run"),
        "{versions}"
    );
    // The board's JSON view shows the notes (they are durable).
    let board = get_json(&server, "/v1/boards/retro").await;
    assert_eq!(board["objects"].as_array().unwrap().len(), 2);
    let metrics = http(server.addr, "GET", "/metrics", None, b"").await;
    let metrics = String::from_utf8(metrics.body).unwrap();
    assert!(
        metrics.contains("assistant_runs_total{status=\"completed\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("assistant_tokens_total{kind=\"prompt\"} 250"),
        "{metrics}"
    );
    server.shutdown().await.unwrap();
}

/// Undo removes exactly what the run added and restores what it deleted, with its content,
/// even after a restart (the live doc no longer holds deleted content then); a human's note
/// made after the run stays; a second undo is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undo_reverts_a_run_after_a_restart() {
    let db = SqliteDb::new();
    let fake = FakeLlm::start(vec![
        tool_turn(&[call("c0", "getBoardState", json!({"region": null}))]),
        tool_turn(&[
            call("c1", "deleteObject", json!({"id": "n1"})),
            sticky("c2", "From the assistant", 500),
        ]),
        text_turn("Replaced it."),
    ])
    .await;
    let store = sync_server::storage::open(&db.url, &Default::default())
        .await
        .unwrap();
    let server = TestServer::start(with_assistant(&fake), store).await;
    create_board(&server, "undo").await;
    let human = TestClient::connect(server.addr, "undo", true).await;
    human.wait_synced().await;
    human.put_note("mine", "human text");
    human.wait_all_acked().await;

    let (status, outcome) = prompt(&server, "undo", "replace my note").await;
    assert_eq!(status, 200, "{outcome}");
    assert_eq!(outcome["status"], "completed", "{outcome}");
    assert_eq!(outcome["objects_deleted"], 1, "{outcome}");
    let run_id = outcome["run_id"].as_str().unwrap().to_owned();
    human
        .wait_for("the run's edits", |s| {
            let n = notes(&s.doc);
            !n.contains_key("mine") && n.len() == 1
        })
        .await;
    human.put_note("later", "after the run");
    human.wait_all_acked().await;
    drop(human);
    server.shutdown().await.unwrap();

    // A restart: the board is loaded from the database.
    let store = sync_server::storage::open(&db.url, &Default::default())
        .await
        .unwrap();
    let server = TestServer::start(with_assistant(&fake), store).await;
    let watcher = TestClient::connect(server.addr, "undo", false).await;
    watcher.wait_synced().await;
    let path = format!("/v1/boards/undo/assistant/runs/{run_id}/undo");
    let undone = http(server.addr, "POST", &path, None, b"").await;
    assert_eq!(
        undone.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&undone.body)
    );
    let report = undone.json();
    assert_eq!(report["changed"], true);
    assert_eq!(report["restored_from_version"], true);
    watcher
        .wait_for("the undo", |s| notes(&s.doc).contains_key("mine"))
        .await;
    let after = watcher.with(|s| notes(&s.doc));
    assert_eq!(after.get("mine").map(String::as_str), Some("human text"));
    assert_eq!(
        after.get("later").map(String::as_str),
        Some("after the run")
    );
    assert_eq!(after.len(), 2, "the assistant's note is gone: {after:?}");

    let again = http(server.addr, "POST", &path, None, b"").await;
    assert_eq!(again.status, 409);
    assert_eq!(again.json()["error"]["code"], "run_already_undone");
    let run = get_json(&server, &format!("/v1/boards/undo/assistant/runs/{run_id}")).await;
    assert!(run["undone_at"].is_i64(), "{run}");
    let missing = http(
        server.addr,
        "POST",
        "/v1/boards/undo/assistant/runs/nope/undo",
        None,
        b"",
    )
    .await;
    assert_eq!(missing.status, 404);
    server.shutdown().await.unwrap();
}

/// One run per board: a second prompt is refused with 409 naming the active run, another
/// board is not affected, and cancelling ends the run `cancelled`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_run_per_board_and_cancel() {
    let fake = FakeLlm::start(vec![
        Reply::Stall(Duration::from_secs(4)),
        text_turn("Other board done."),
    ])
    .await;
    let server = Arc::new(TestServer::start(with_assistant(&fake), memory_store().await).await);
    create_board(&server, "busy").await;
    create_board(&server, "other").await;
    let first = {
        let server = server.clone();
        tokio::spawn(async move { prompt(&server, "busy", "slow one").await })
    };
    // Wait for the first run to be active and its model call to have taken the stalling
    // reply, so the other board's run gets the next one.
    let run_id = tokio::time::timeout(WAIT, async {
        loop {
            let runs = get_json(&server, "/v1/boards/busy/assistant/runs").await;
            if let Some(id) = runs["active"].as_str()
                && fake.hits() == 1
            {
                return id.to_owned();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    let (status, refused) = prompt(&server, "busy", "second").await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["error"]["code"], "assistant_busy");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&run_id)
    );
    let (status, other) = prompt(&server, "other", "fine").await;
    assert_eq!(status, 200, "{other}");
    assert_eq!(other["status"], "completed");

    let path = format!("/v1/boards/busy/assistant/runs/{run_id}/cancel");
    let cancelled = http(server.addr, "POST", &path, None, b"").await;
    assert_eq!(cancelled.status, 200);
    let (status, outcome) = tokio::time::timeout(Duration::from_secs(2), first)
        .await
        .expect("cancel stops the run at once")
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(outcome["status"], "cancelled", "{outcome}");
    let run = get_json(&server, &format!("/v1/boards/busy/assistant/runs/{run_id}")).await;
    assert_eq!(run["state"], "cancelled");
    let again = http(server.addr, "POST", &path, None, b"").await;
    assert_eq!(again.status, 409);
}

/// An outage of the model service: the caller gets a clear error, the run is recorded as
/// failed, and the board is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_llm_outage_leaves_the_board_untouched() {
    let outage = json!({"error": {"message": "upstream down", "type": "server_error"}});
    let fake = FakeLlm::start(vec![
        Reply::Status(500, None, outage.clone()),
        Reply::Status(503, Some("0"), outage.clone()),
    ])
    .await;
    let server = TestServer::start(with_assistant(&fake), memory_store().await).await;
    create_board(&server, "calm").await;
    let before = http(server.addr, "GET", "/v1/boards/calm/state", None, b"")
        .await
        .body;
    let (status, outcome) = prompt(&server, "calm", "do something").await;
    assert_eq!(status, 200);
    assert_eq!(outcome["status"], "failed", "{outcome}");
    let error = outcome["error"].as_str().unwrap();
    assert!(error.contains("503") || error.contains("500"), "{error}");
    assert!(!error.contains(fake::KEY));
    let after = http(server.addr, "GET", "/v1/boards/calm/state", None, b"")
        .await
        .body;
    assert_eq!(before, after, "the board did not change");
    let runs = get_json(&server, "/v1/boards/calm/assistant/runs").await;
    assert_eq!(runs["runs"][0]["state"], "failed");
    // Nothing to undo.
    let run_id = outcome["run_id"].as_str().unwrap();
    let path = format!("/v1/boards/calm/assistant/runs/{run_id}/undo");
    let undone = http(server.addr, "POST", &path, None, b"").await;
    assert_eq!(undone.status, 200);
    assert_eq!(undone.json()["changed"], false);
    server.shutdown().await.unwrap();
}

/// Without a model service the endpoint says which settings to set; bad prompts are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unconfigured_and_bad_requests_get_clear_errors() {
    let server = TestServer::start(config(), memory_store().await).await;
    create_board(&server, "plain").await;
    let (status, answer) = prompt(&server, "plain", "hello").await;
    assert_eq!(status, 503);
    assert_eq!(answer["error"]["code"], "assistant_not_configured");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(message.contains("OPENAI_BASE_URL") && message.contains("ASSISTANT_MODEL"));
    let runs = get_json(&server, "/v1/boards/plain/assistant/runs").await;
    assert_eq!(runs["runs"], json!([]));
    server.shutdown().await.unwrap();

    let fake = FakeLlm::start(vec![]).await;
    let server = TestServer::start(with_assistant(&fake), memory_store().await).await;
    create_board(&server, "plain").await;
    let (status, answer) = prompt(&server, "plain", "   ").await;
    assert_eq!(status, 400);
    assert_eq!(answer["error"]["code"], "invalid_prompt");
    let (status, answer) = prompt(&server, "plain", &"x".repeat(4001)).await;
    assert_eq!(status, 400, "{answer}");
    let garbage = http(
        server.addr,
        "POST",
        "/v1/boards/plain/assistant",
        JSON,
        b"{\"prompt\": 3}",
    )
    .await;
    assert_eq!(garbage.status, 400);
    assert_eq!(garbage.json()["error"]["code"], "invalid_body");
    let (status, _) = prompt(&server, "missing", "hello").await;
    assert_eq!(status, 404);
    assert_eq!(fake.hits(), 0, "no model call for refused requests");
    server.shutdown().await.unwrap();
}

/// Roles: a read token cannot prompt or undo; the run is attributed to the token's user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompts_need_write_and_runs_carry_the_tokens_user() {
    let keys = Keys::new(&Secret::new(b"assistant tests: 0123456789abcdef0123456789").unwrap());
    let mint = |role: Role, user: &str| {
        keys.mint(&TokenRequest {
            user: Some(user.to_owned()),
            scope: Scope::parse("team").unwrap(),
            role,
            ttl: Duration::from_secs(600),
        })
        .unwrap()
        .token
    };
    let fake = FakeLlm::start(vec![text_turn("Nothing to do.")]).await;
    let cfg = Config {
        auth: Auth::Tokens(Box::new(keys.clone())),
        ..with_assistant(&fake)
    };
    let server = TestServer::start(cfg, memory_store().await).await;
    let admin = format!("Bearer {}", mint(Role::Admin, "root"));
    let created = http_request(
        server.addr,
        None,
        "POST",
        "/v1/boards",
        &[
            ("content-type", "application/json"),
            ("authorization", &admin),
        ],
        br#"{"id":"team"}"#,
    )
    .await;
    assert_eq!(created.status, 201);
    let body = br#"{"prompt":"tidy up"}"#;
    let post = |token: String| {
        let addr = server.addr;
        async move {
            let auth = format!("Bearer {token}");
            http_request(
                addr,
                None,
                "POST",
                "/v1/boards/team/assistant",
                &[
                    ("content-type", "application/json"),
                    ("authorization", &auth),
                ],
                body,
            )
            .await
        }
    };
    let refused = post(mint(Role::Read, "reader")).await;
    assert_eq!(refused.status, 403);
    assert_eq!(fake.hits(), 0);
    let ran = post(mint(Role::Write, "ada")).await;
    assert_eq!(ran.status, 200);
    let runs = http_request(
        server.addr,
        None,
        "GET",
        "/v1/boards/team/assistant/runs",
        &[(
            "authorization",
            &format!("Bearer {}", mint(Role::Read, "reader")),
        )],
        b"",
    )
    .await;
    assert_eq!(runs.status, 200);
    assert_eq!(runs.json()["runs"][0]["user"], "ada");
    server.shutdown().await.unwrap();
}

/// 50 prompts at once on 50 boards never pass a budget: with a per-user limit of 10 model
/// calls a minute, exactly 10 reach the model service and 40 fail with a budget error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_prompts_never_exceed_the_budget() {
    let fake = FakeLlm::start((0..50).map(|_| text_turn("ok")).collect()).await;
    let mut settings = assistant(&fake);
    settings.budgets = BudgetLimits {
        user_requests_per_minute: Some(10),
        ..BudgetLimits::default()
    };
    let cfg = Config {
        assistant: Some(settings),
        ..config()
    };
    let server = Arc::new(TestServer::start(cfg, memory_store().await).await);
    for i in 0..50 {
        create_board(&server, &format!("b{i}")).await;
    }
    let mut tasks = Vec::new();
    for i in 0..50 {
        let server = server.clone();
        tasks.push(tokio::spawn(async move {
            prompt(&server, &format!("b{i}"), "go").await
        }));
    }
    let mut completed = 0;
    let mut refused = 0;
    for task in tasks {
        let (status, outcome) = task.await.unwrap();
        assert_eq!(status, 200, "{outcome}");
        match outcome["status"].as_str().unwrap() {
            "completed" => completed += 1,
            "failed" => {
                assert!(
                    outcome["error"].as_str().unwrap().contains("budget")
                        || outcome["error"].as_str().unwrap().contains("rate"),
                    "{outcome}"
                );
                refused += 1;
            }
            other => panic!("unexpected status {other}: {outcome}"),
        }
    }
    assert_eq!(fake.hits(), 10);
    assert_eq!((completed, refused), (10, 40));
}

/// A caller that stops reading its event stream loses progress events, never the run: the run
/// goes on, is recorded and releases the board. (The run used to wait for the reader once its
/// event channels filled.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_reader_that_stops_reading_does_not_stall_the_run() {
    // Three turns, each with a 3.9 MB text (under the 4 MiB a turn may have) and 150 calls:
    // the texts fill the sockets' buffers (up to 4 MiB), and each turn's 150 progress events
    // after its text are more than the run's event channels hold.
    let text = "w".repeat(3_900_000);
    let turn = |t: usize| {
        let calls: Vec<fake::Call<'static>> = (0..150)
            .map(|i| sticky(&format!("t{t}c{i}"), "note", i))
            .collect();
        let mut chunks = vec![
            fake::chunk(json!({"role": "assistant", "content": ""}), None),
            fake::chunk(json!({"content": text}), None),
        ];
        for (i, c) in calls.iter().enumerate() {
            chunks.extend(fake::call_fragments(i, c));
        }
        chunks.push(fake::chunk(json!({}), Some("tool_calls")));
        chunks.push(fake::usage(100, 20));
        Reply::Sse(chunks)
    };
    let mut script: Vec<Reply> = (0..3).map(turn).collect();
    script.push(text_turn("Added many notes."));
    let fake = FakeLlm::start(script).await;
    let mut config = assistant(&fake);
    config.caps.max_tool_calls = 500;
    config.caps.max_creates = 500;
    let server = TestServer::start(
        Config {
            assistant: Some(config),
            ..harness::config()
        },
        memory_store().await,
    )
    .await;
    create_board(&server, "stalled").await;

    // Start the run with an event stream, read its head, then stop reading (keep the socket,
    // with a small receive buffer, so that the server's writes soon block).
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut tcp = socket.connect(server.addr).await.unwrap();
    let body = json!({ "prompt": "lay out a lot" }).to_string();
    let head = format!(
        "POST /v1/boards/stalled/assistant HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        server.addr,
        body.len()
    );
    tokio::io::AsyncWriteExt::write_all(&mut tcp, head.as_bytes())
        .await
        .unwrap();
    let mut first_bytes = [0u8; 512];
    let n = tokio::io::AsyncReadExt::read(&mut tcp, &mut first_bytes)
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&first_bytes[..n]).starts_with("HTTP/1.1 200"));

    // The run finishes and is recorded although nobody reads its stream.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let (state, calls) = loop {
        let runs = get_json(&server, "/v1/boards/stalled/assistant/runs").await;
        let run = &runs["runs"][0];
        if run["state"] != "running" && runs["active"].is_null() {
            let calls = run["tool_calls"].as_array().map_or(0, Vec::len);
            break (run["state"].clone(), calls);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the run is still working with its reader stalled (step {})",
            run["steps"]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!((state, calls), (json!("completed"), 450));
    drop(tcp);
    server.shutdown().await.unwrap();
}
