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
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ai_agent::{BudgetLimits, LlmConfig, RunCaps};
use async_trait::async_trait;
use harness::fixture::Fixture;
use harness::llm::{self as fake, FakeLlm, Reply, text_turn};
use harness::{TestClient, TestServer, WAIT, config, http, new_doc, notes};
use serde_json::{Value, json};
use sync_server::assistant::AssistantConfig;
use sync_server::ids::BoardId;
use sync_server::server::Config;
use sync_server::storage::layered::Layered;
use sync_server::storage::replay::replay_into;
use sync_server::storage::{
    CompactionStats, MaintenanceLock, NewRun, NewSnapshot, PendingCompaction, RunState, Snapshots,
    Storage, StorageError,
};

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

/// A run working on node A is cancelled from node B: B asks through the database, A stops the
/// run within about a second, and it is recorded cancelled; cancelling a run that is not
/// working is refused on either node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_on_one_node_is_cancelled_from_another() {
    let Some(fx) = Fixture::postgres().await else {
        return;
    };
    // A's model call would take 20 s.
    let fake = FakeLlm::start(vec![Reply::Stall(Duration::from_secs(20))]).await;
    let expiry = Duration::from_secs(30);
    let a =
        Arc::new(TestServer::start(node_config(assistant(&fake, expiry)), fx.store.clone()).await);
    let b = TestServer::start(node_config(assistant(&fake, expiry)), fx.reopen().await).await;
    create_board(&a, "cancelled").await;
    let working = {
        let a = a.clone();
        tokio::spawn(async move { prompt(&a, "cancelled", "a long one").await })
    };
    let run_id = active_run(&b, "cancelled").await;
    let path = format!("/v1/boards/cancelled/assistant/runs/{run_id}/cancel");
    let asked = tokio::time::Instant::now();
    let answer = http(b.addr, "POST", &path, JSON, b"").await;
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(answer.json()["cancelling"], true);
    let (status, outcome) = tokio::time::timeout(Duration::from_secs(5), working)
        .await
        .expect("the run stops within 5 s of the cancel")
        .unwrap();
    let took = asked.elapsed();
    assert_eq!(status, 200, "{outcome}");
    assert_eq!(outcome["status"], "cancelled", "{outcome}");
    assert!(
        took < Duration::from_secs(3),
        "stopped {took:?} after the cancel"
    );
    // Nothing is working now: a cancel is refused on both nodes.
    for node in [&*a, &b] {
        let again = http(node.addr, "POST", &path, JSON, b"").await;
        assert_eq!(again.status, 409);
        assert_eq!(again.json()["error"]["code"], "run_not_active");
    }
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

// ---------------------------------------------------------------------------------------------
// Maintenance

/// The value of the sample `series` on `node`'s `/metrics` (0 if absent).
async fn metric(node: &TestServer, series: &str) -> f64 {
    let text = String::from_utf8(http(node.addr, "GET", "/metrics", None, b"").await.body).unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse::<f64>().unwrap())
        })
        .unwrap_or(0.0)
}

async fn wait_metric(node: &TestServer, series: &str, at_least: f64) {
    tokio::time::timeout(WAIT, async {
        while metric(node, series).await < at_least {
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{series} never reached {at_least}"));
}

/// The board as stored: its notes, and the sequence its snapshot covers (0 if none).
async fn stored_notes(store: &dyn Storage, id: &str) -> (Vec<String>, i64) {
    let stored = store.load(&BoardId::parse(id).unwrap()).await.unwrap();
    let doc = new_doc();
    replay_into(&doc, &stored).unwrap();
    let snapshot_seq = stored.snapshot.as_ref().map_or(0, |s| s.seq);
    (notes(&doc).into_keys().collect(), snapshot_seq)
}

fn compacting_config() -> Config {
    let mut cfg = config();
    cfg.board.compact_rows = 4;
    cfg
}

/// While one node holds a board's maintenance lock, another node's compaction and automatic
/// version of it are skipped (counted in `sync_compactions_skipped_total` and
/// `sync_versions_skipped_total`, nothing written, nothing lost); once the lock is free, it
/// compacts and saves its version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compaction_is_skipped_while_another_node_holds_the_lock() {
    let Some(fx) = Fixture::postgres().await else {
        return;
    };
    let mut cfg = compacting_config();
    cfg.board.checkpoint_rows = 4;
    let node = TestServer::start(cfg, fx.reopen().await).await;
    let board = BoardId::parse("locked").unwrap();
    // Another node compacting the board: it holds the lock.
    let held = fx
        .store
        .try_lock_maintenance(&board)
        .await
        .unwrap()
        .unwrap();
    let client = TestClient::connect(node.addr, "locked", true).await;
    client.wait_synced().await;
    for i in 0..12 {
        client.put_note(&format!("n{i}"), "x");
        client.wait_all_acked().await;
    }
    let text = String::from_utf8(http(node.addr, "GET", "/metrics", None, b"").await.body).unwrap();
    std::fs::write("/tmp/metrics.txt", &text).unwrap();
    wait_metric(&node, "sync_compactions_skipped_total", 1.0).await;
    wait_metric(&node, "sync_versions_skipped_total", 1.0).await;
    assert_eq!(metric(&node, "sync_compactions_total").await, 0.0);
    assert!(fx.store.list_versions(&board).await.unwrap().is_empty());
    let (kept, snapshot_seq) = stored_notes(fx.store.as_ref(), "locked").await;
    assert_eq!(
        snapshot_seq, 0,
        "no snapshot written while the lock is held"
    );
    assert_eq!(kept.len(), 12);

    drop(held);
    // Retried once as many rows as the threshold were appended (the node's own compaction
    // and version take turns with the lock too, so it may take a few rounds).
    let mut written = 12;
    while metric(&node, "sync_compactions_total").await < 1.0
        || metric(&node, "sync_versions_saved_total").await < 1.0
    {
        assert!(
            written < 200,
            "no compaction or version once the lock was free"
        );
        client.put_note(&format!("n{written}"), "x");
        client.wait_all_acked().await;
        written += 1;
    }
    let (kept, snapshot_seq) = stored_notes(fx.store.as_ref(), "locked").await;
    assert!(snapshot_seq > 0);
    assert_eq!(kept.len(), written, "{kept:?}");
    client.close().await;
    node.shutdown().await.unwrap();
    fx.finish().await;
}

/// Compactions seen from the store: how many are being written at once (across every node
/// sharing these counters), the most ever, and how many committed. Each write is slowed down
/// so that two compactions not kept apart would overlap.
#[derive(Debug)]
struct Watched {
    inner: Arc<dyn Storage>,
    counters: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    in_flight: AtomicUsize,
    most: AtomicUsize,
    committed: AtomicUsize,
}

#[derive(Debug)]
struct WatchedCompaction<'a> {
    inner: Option<Box<dyn PendingCompaction + 'a>>,
    counters: Arc<Counters>,
}

#[async_trait]
impl PendingCompaction for WatchedCompaction<'_> {
    async fn commit(mut self: Box<Self>) -> Result<CompactionStats, StorageError> {
        let stats = self.inner.take().unwrap().commit().await;
        if stats.is_ok() {
            self.counters.committed.fetch_add(1, Ordering::SeqCst);
        }
        stats
    }
}

impl Drop for WatchedCompaction<'_> {
    fn drop(&mut self) {
        self.counters.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl Snapshots for Watched {
    async fn begin_compaction(
        &self,
        id: &BoardId,
        snapshot: NewSnapshot<'_>,
    ) -> Result<Box<dyn PendingCompaction + '_>, StorageError> {
        let now = self.counters.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.counters.most.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(30)).await;
        match self.inner.begin_compaction(id, snapshot).await {
            Ok(inner) => Ok(Box::new(WatchedCompaction {
                inner: Some(inner),
                counters: self.counters.clone(),
            })),
            Err(e) => {
                self.counters.in_flight.fetch_sub(1, Ordering::SeqCst);
                Err(e)
            }
        }
    }

    async fn try_lock_maintenance(
        &self,
        id: &BoardId,
    ) -> Result<Option<Box<dyn MaintenanceLock>>, StorageError> {
        self.inner.try_lock_maintenance(id).await
    }
}

/// Two nodes with the same board loaded, each with a client writing, each compacting every
/// few rows: no two compactions of the board are ever written at once, both nodes' compactions
/// land, and the stored board (snapshot and log) holds every note either client wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_never_compact_a_board_at_once_and_lose_nothing() {
    let Some(fx) = Fixture::postgres().await else {
        return;
    };
    let counters = Arc::new(Counters::default());
    let watched = |store: Arc<dyn Storage>| -> Arc<dyn Storage> {
        let snapshots = Arc::new(Watched {
            inner: store.clone(),
            counters: counters.clone(),
        });
        Arc::new(Layered::over(store).with_snapshots(snapshots))
    };
    let a = TestServer::start(compacting_config(), watched(fx.reopen().await)).await;
    let b = TestServer::start(compacting_config(), watched(fx.reopen().await)).await;
    let on_a = TestClient::connect(a.addr, "contested", true).await;
    on_a.wait_synced().await;
    let on_b = TestClient::connect(b.addr, "contested", true).await;
    on_b.wait_synced().await;
    const EDITS: usize = 40;
    let write = |client: TestClient, name: &'static str| async move {
        for i in 0..EDITS {
            client.put_note(&format!("{name}-{i}"), "x");
            client.wait_all_acked().await;
        }
        client
    };
    let (on_a, on_b) = tokio::join!(write(on_a, "a"), write(on_b, "b"));
    // Both nodes compacted (or were kept apart trying).
    let tried = |node| async move {
        metric(node, "sync_compactions_total").await
            + metric(node, "sync_compactions_skipped_total").await
    };
    assert!(tried(&a).await >= 1.0 && tried(&b).await >= 1.0);
    assert!(counters.committed.load(Ordering::SeqCst) >= 2);
    assert_eq!(
        counters.most.load(Ordering::SeqCst),
        1,
        "two compactions of the board were written at once"
    );
    let (kept, snapshot_seq) = stored_notes(fx.store.as_ref(), "contested").await;
    assert!(snapshot_seq > 0);
    assert_eq!(kept.len(), 2 * EDITS, "{kept:?}");
    on_a.close().await;
    on_b.close().await;
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
    fx.finish().await;
}

// ---------------------------------------------------------------------------------------------
// Budgets

/// The tokens used today by all users together, as stored.
async fn used_today(store: &dyn Storage) -> i64 {
    let mut used = 0;
    let mut read = |rows: &mut [sync_server::storage::BudgetRow]| {
        used = rows[0].used;
        false
    };
    store.update_budgets(&[""], &mut read).await.unwrap();
    used
}

/// Token budgets are the database's: a run on node A that spends the day's budget makes node
/// B refuse the next one (no model call is made), and so does a node started afterwards on the
/// same database (a restart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_are_shared_by_nodes_and_survive_restarts() {
    let Some(fx) = Fixture::postgres().await else {
        return;
    };
    // Every answer reports 5,000 tokens used: one run spends a budget of 3,000.
    let fake = FakeLlm::answering(|_| {
        Reply::Sse(vec![
            fake::chunk(json!({"role": "assistant", "content": ""}), None),
            fake::chunk(json!({"content": "Done."}), None),
            fake::chunk(json!({}), Some("stop")),
            fake::usage(4_990, 10),
        ])
    })
    .await;
    let settings = || {
        let mut settings = assistant(&fake, Duration::from_secs(30));
        settings.caps.max_completion_tokens = 100;
        settings.budgets = BudgetLimits {
            global_tokens_per_day: Some(3_000),
            ..BudgetLimits::default()
        };
        node_config(settings)
    };
    let a = TestServer::start(settings(), fx.reopen().await).await;
    let b = TestServer::start(settings(), fx.reopen().await).await;
    create_board(&a, "spend").await;
    create_board(&a, "other").await;
    let (status, spent) = prompt(&a, "spend", "spend it").await;
    assert_eq!(
        (status, spent["status"].as_str()),
        (200, Some("completed")),
        "{spent}"
    );
    // The charge is written in the background, shortly after.
    tokio::time::timeout(WAIT, async {
        while used_today(fx.store.as_ref()).await < 5_000 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the run's 5,000 tokens are charged");

    let refused = |outcome: &Value| {
        outcome["status"] == "failed"
            && outcome["error"]
                .as_str()
                .is_some_and(|e| e.contains("budget is exhausted"))
    };
    let (status, outcome) = prompt(&b, "other", "more").await;
    assert_eq!(status, 200, "{outcome}");
    assert!(
        refused(&outcome),
        "node B spends what node A spent: {outcome}"
    );
    assert_eq!(fake.hits(), 1);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();

    // A restart: a new server on the same database.
    let c = TestServer::start(settings(), fx.reopen().await).await;
    let (status, outcome) = prompt(&c, "other", "after a restart").await;
    assert_eq!(status, 200, "{outcome}");
    assert!(
        refused(&outcome),
        "the spent budget survives a restart: {outcome}"
    );
    assert_eq!(fake.hits(), 1);
    c.shutdown().await.unwrap();
    fx.finish().await;
}
