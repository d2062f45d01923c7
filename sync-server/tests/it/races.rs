//! Regression tests for races between board actors, HTTP requests and storage: deleting a
//! board while something loads it, rows another writer committed, versions taken from state
//! that was not durable, an undo whose caller went away, and callers racing an eviction.
//!
//! Each test holds a storage call at a [`Gate`](harness::Gate) (or uses a knob of
//! [`TestStore`]) to put the server exactly inside the window it once got wrong, instead of
//! sleeping and hoping the race happens.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use harness::llm as fake;
use harness::*;
use serde_json::{Value, json};
use sync_server::ids::BoardId;
use sync_server::storage::replay::replay_into;
use sync_server::storage::{NewUpdate, Storage};
use tokio::io::AsyncWriteExt;
use yrs::Doc;

const JSON: Option<&str> = Some("application/json");
const BINARY: Option<&str> = Some("application/octet-stream");

fn board(id: &str) -> BoardId {
    BoardId::parse(id).unwrap()
}

/// The board as the store holds it, replayed into a fresh doc.
async fn stored_doc(store: &dyn Storage, id: &str) -> Doc {
    let stored = store.load(&board(id)).await.unwrap();
    let doc = new_doc();
    replay_into(&doc, &stored).unwrap();
    doc
}

/// A note as another writer would make it: its own doc, its own client id.
fn foreign_note(id: &str, text: &str) -> Vec<u8> {
    put_note(&new_doc(), id, text)
}

async fn create_board(addr: std::net::SocketAddr, id: &str) {
    let body = json!({ "id": id }).to_string();
    let created = http(addr, "POST", "/v1/boards", JSON, body.as_bytes()).await;
    assert_eq!(
        created.status,
        201,
        "create {id}: {:?}",
        String::from_utf8_lossy(&created.body)
    );
}

async fn get_ok(addr: std::net::SocketAddr, path: &str) -> HttpResponse {
    let answer = http(addr, "GET", path, None, b"").await;
    assert_eq!(
        answer.status,
        200,
        "GET {path}: {:?}",
        String::from_utf8_lossy(&answer.body)
    );
    answer
}

/// The notes of a version, fetched as Yjs bytes over HTTP.
async fn version_notes(addr: std::net::SocketAddr, id: &str, v: i64) -> BTreeMap<String, String> {
    let bytes = get_ok(addr, &format!("/v1/boards/{id}/versions/{v}?format=yjs"))
        .await
        .body;
    notes(&doc_from(&bytes))
}

/// Every version of a board, newest first (as the API lists them).
async fn versions(addr: std::net::SocketAddr, id: &str) -> Vec<Value> {
    let listed = get_ok(addr, &format!("/v1/boards/{id}/versions"))
        .await
        .json();
    listed["versions"]
        .as_array()
        .unwrap_or_else(|| panic!("no versions array in {listed}"))
        .clone()
}

/// Sends an awareness state after whatever the client sent before, and waits for the server's
/// echo of it: the board's actor has then handled every earlier frame of this connection.
async fn actor_caught_up(client: &TestClient, clock: u32) {
    let id = client.client_id();
    let state = format!(r#"{{"mark":{clock}}}"#);
    client.send_raw(awareness_frame(&[(id, clock, &state)]));
    client
        .wait_for("the echo of the awareness mark", |s| {
            s.seen.awareness_of(id).as_deref() == Some(state.as_str())
        })
        .await;
}

// =============================================================================================
// 1. Delete, then resurrect

/// A write that arrives while a board is being deleted (after its actor stopped, before its
/// rows are gone) must not load the board into a new actor that outlives the deletion: once
/// the id is created again, a client must find an empty board, not the deleted content.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_during_a_delete_does_not_resurrect_the_board() {
    let store = TestStore::new(memory_store().await);
    let server = TestServer::start(config(), store.storage()).await;
    let addr = server.addr;
    create_board(addr, "doomed").await;
    let owner = TestClient::connect(addr, "doomed", true).await;
    owner.wait_synced().await;
    owner.put_note("old", "deleted content");
    owner.wait_all_acked().await;

    // The deletion is held after the actor stopped, before the store deletes anything.
    store.boards.delete_gate.close();
    let deleting =
        tokio::spawn(async move { http(addr, "DELETE", "/v1/boards/doomed", None, b"").await });
    store.boards.delete_gate.wait_for_waiting(1, "DELETE").await;
    assert_eq!(owner.wait_closed().await, 4404);

    // A write in that window.
    let during = foreign_note("during", "written while deleting");
    let written = http(addr, "POST", "/v1/boards/doomed/updates", BINARY, &during).await;
    assert_ne!(
        written.status / 100,
        5,
        "{:?}",
        String::from_utf8_lossy(&written.body)
    );

    store.boards.delete_gate.open();
    let deleted = deleting.await.unwrap();
    assert_eq!(
        deleted.status,
        204,
        "{:?}",
        String::from_utf8_lossy(&deleted.body)
    );

    // The id is taken back: a new, empty board.
    create_board(addr, "doomed").await;
    let fresh = TestClient::connect(addr, "doomed", true).await;
    fresh.wait_synced().await;
    fresh.barrier().await;
    assert_eq!(
        fresh.notes(),
        BTreeMap::new(),
        "a client of the re-created board sees the deleted board's content (the write during \
         the delete answered {})",
        written.status
    );
    assert_eq!(
        notes(&stored_doc(store.storage().as_ref(), "doomed").await),
        BTreeMap::new()
    );

    // And the new board works: what its client writes is what is stored.
    fresh.put_note("new", "after");
    fresh.wait_all_acked().await;
    let stored = notes(&stored_doc(store.storage().as_ref(), "doomed").await);
    assert_eq!(stored.keys().collect::<Vec<_>>(), ["new"], "{stored:?}");
    server.shutdown().await.unwrap();
}

/// The same with a WebSocket join in the window: it is refused as deleted (4404) instead of
/// loading the board, and a client of the re-created board sees an empty board.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_during_a_delete_does_not_resurrect_the_board() {
    let store = TestStore::new(memory_store().await);
    let server = TestServer::start(config(), store.storage()).await;
    let addr = server.addr;
    create_board(addr, "doomed2").await;
    let owner = TestClient::connect(addr, "doomed2", true).await;
    owner.wait_synced().await;
    owner.put_note("old", "deleted content");
    owner.wait_all_acked().await;

    store.boards.delete_gate.close();
    let deleting =
        tokio::spawn(async move { http(addr, "DELETE", "/v1/boards/doomed2", None, b"").await });
    store.boards.delete_gate.wait_for_waiting(1, "DELETE").await;
    assert_eq!(owner.wait_closed().await, 4404);

    let late = TestClient::connect(addr, "doomed2", false).await;
    let code = late.wait_close_frame_within(WAIT).await;
    assert_eq!(
        code.0,
        4404,
        "a join during the delete is refused as deleted ({code:?}; saw {:?})",
        late.notes()
    );

    store.boards.delete_gate.open();
    assert_eq!(deleting.await.unwrap().status, 204);

    create_board(addr, "doomed2").await;
    let fresh = TestClient::connect(addr, "doomed2", false).await;
    fresh.wait_synced().await;
    fresh.barrier().await;
    assert_eq!(
        fresh.notes(),
        BTreeMap::new(),
        "a client of the re-created board sees the deleted board's content"
    );
    assert_eq!(
        notes(&stored_doc(store.storage().as_ref(), "doomed2").await),
        BTreeMap::new()
    );
    server.shutdown().await.unwrap();
}

// =============================================================================================
// 2. Rows another writer committed; import in one transaction

/// A row another writer committed while the board is loaded (here: appended to the store
/// directly) is neither lost by compaction nor hidden from connected clients: compaction
/// folds the stored rows, and the actor reads the row it finds between its own commits and
/// broadcasts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_keeps_and_clients_receive_a_row_another_writer_committed() {
    let store = memory_store().await;
    let mut cfg = config();
    cfg.board.compact_rows = 5;
    let server = TestServer::start(cfg, store.clone()).await;
    let client = TestClient::connect(server.addr, "shared", true).await;
    client.wait_synced().await;
    client.put_note("mine-0", "first");
    client.wait_all_acked().await;

    // Another writer commits a row behind the actor's back.
    let id = board("shared");
    let foreign = foreign_note("foreign", "from another writer");
    let seqs = store
        .append(&[NewUpdate {
            board: &id,
            data: &foreign,
        }])
        .await
        .unwrap();
    let foreign_seq = *seqs.last().unwrap();

    // Enough edits of the client's own to compact past that row.
    for i in 1..=6 {
        client.put_note(&format!("mine-{i}"), "more");
        client.wait_all_acked().await;
    }

    let deadline = Instant::now() + WAIT;
    let stored = loop {
        let stored = store.load(&id).await.unwrap();
        if stored
            .snapshot
            .as_ref()
            .is_some_and(|s| s.seq >= foreign_seq)
        {
            break stored;
        }
        assert!(
            Instant::now() < deadline,
            "no compaction past row {foreign_seq} (snapshot: {:?}, rows: {:?})",
            stored.snapshot.as_ref().map(|s| s.seq),
            stored.updates.iter().map(|u| u.seq).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let doc = new_doc();
    replay_into(&doc, &stored).unwrap();
    let kept = notes(&doc);
    assert_eq!(
        kept.get("foreign").map(String::as_str),
        Some("from another writer"),
        "compaction (snapshot at {}) lost the row another writer committed at {foreign_seq}: \
         {kept:?}",
        stored.snapshot.as_ref().unwrap().seq
    );
    for i in 0..=6 {
        assert!(kept.contains_key(&format!("mine-{i}")), "{kept:?}");
    }

    // The connected client received it too, and a new one gets it in its sync.
    client.wait_note("foreign").await;
    let late = TestClient::connect(server.addr, "shared", false).await;
    late.wait_synced().await;
    assert_eq!(late.notes(), client.notes());
    server.shutdown().await.unwrap();
}

/// An import creates the board and its content in one step: a client that connects while the
/// import has not answered yet, but the board already exists, sees the imported content (not
/// an empty board that never learns of it). The content is the log's first row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_joining_during_an_import_sees_its_content() {
    let store = TestStore::new(memory_store().await);
    let server = TestServer::start(config(), store.storage()).await;
    let addr = server.addr;
    let source = new_doc();
    put_note(&source, "imported", "from the snapshot");
    let snapshot = doc_state(&source);

    // The import is held once the store created the board, before it answers.
    store.boards.created_gate.close();
    let body = snapshot.clone();
    let importing =
        tokio::spawn(
            async move { http(addr, "POST", "/v1/boards?id=imported", BINARY, &body).await },
        );
    store
        .boards
        .created_gate
        .wait_for_waiting(1, "the import")
        .await;
    let early = TestClient::connect(addr, "imported", false).await;
    early.wait_synced().await;
    store.boards.created_gate.open();
    let imported = importing.await.unwrap();
    assert_eq!(
        imported.status,
        201,
        "{:?}",
        String::from_utf8_lossy(&imported.body)
    );

    early
        .wait_for_within("the imported note", Duration::from_secs(2), |s| {
            notes(&s.doc).contains_key("imported")
        })
        .await;
    let stored = store.storage().load(&board("imported")).await.unwrap();
    assert!(stored.snapshot.is_none());
    assert_eq!(
        stored.updates.first().map(|u| u.seq),
        Some(1),
        "the content is the first row: {:?}",
        stored.updates.iter().map(|u| u.seq).collect::<Vec<_>>()
    );
    assert_eq!(
        notes(&doc_from(&stored.updates[0].data)),
        notes(&source),
        "row 1 holds the imported content"
    );
    server.shutdown().await.unwrap();
}

// =============================================================================================
// 3. Versions only from durable state

/// An automatic version is saved from durable state: with an update still being committed when
/// the checkpoint is taken (and its commit then failing), the version holds what was committed
/// and not that update.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_never_holds_an_update_whose_commit_failed() {
    let store = TestStore::new(memory_store().await);
    let mut cfg = config();
    cfg.board.checkpoint_rows = 1;
    // Overdue at once: the checkpoint is taken while the second update is in flight (from the
    // stored rows), instead of waiting for a quiet moment.
    cfg.board.checkpoint_interval = Duration::from_millis(1);
    let server = TestServer::start(cfg, store.storage()).await;
    let addr = server.addr;
    create_board(addr, "ckpt").await;
    let client = TestClient::connect(addr, "ckpt", true).await;
    client.wait_synced().await;
    client.barrier().await;

    // The first update's commit is held in the store; the second is applied meanwhile and
    // waits behind it.
    store.log.append_gate.close();
    client.put_note("first", "committed");
    store
        .log
        .append_gate
        .wait_for_waiting(1, "the first commit")
        .await;
    client.put_note("second", "never committed");
    actor_caught_up(&client, 1).await;

    // The first commit goes through (a checkpoint follows it); the second is held.
    store.log.append_gate.let_through(1);
    let deadline = Instant::now() + WAIT;
    while store.log.append_gate.arrived() < 2 {
        assert!(Instant::now() < deadline, "the second commit never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let deadline = Instant::now() + WAIT;
    let checkpoint = loop {
        let found = versions(addr, "ckpt")
            .await
            .into_iter()
            .find(|v| v["reason"] == "checkpoint");
        if let Some(v) = found {
            break v;
        }
        assert!(Instant::now() < deadline, "no checkpoint saved");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Then the second commit fails: the board closes its connections.
    store.log.set_fail_appends(true);
    store.log.append_gate.open();
    assert_eq!(client.wait_closed().await, 1011);
    store.log.set_fail_appends(false);

    let v = checkpoint["id"].as_i64().unwrap();
    let saved = version_notes(addr, "ckpt", v).await;
    assert!(saved.contains_key("first"), "{checkpoint}: {saved:?}");
    assert!(
        !saved.contains_key("second"),
        "the checkpoint {checkpoint} holds an update whose commit failed: {saved:?}"
    );
    // It is exactly the durable board.
    let durable = notes(&stored_doc(store.storage().as_ref(), "ckpt").await);
    assert_eq!(saved, durable);
    server.shutdown().await.unwrap();
}

/// An automatic version counts as taken only once it is saved: after a failed save, the next
/// commit tries again instead of waiting for another `checkpoint_rows` rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_checkpoint_is_retried_at_the_next_commit() {
    let store = TestStore::new(memory_store().await);
    let mut cfg = config();
    cfg.board.checkpoint_rows = 3;
    let server = TestServer::start(cfg, store.storage()).await;
    let addr = server.addr;
    create_board(addr, "retry").await;
    let client = TestClient::connect(addr, "retry", true).await;
    client.wait_synced().await;

    store.versions.fail_save_versions.store(1, Ordering::SeqCst);
    for i in 0..3 {
        client.put_note(&format!("n{i}"), "x");
        client.wait_all_acked().await;
    }
    // The checkpoint after row 3 failed ...
    let deadline = Instant::now() + WAIT;
    while store.versions.save_version_failures.load(Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "no checkpoint attempted after 3 rows"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // (room for the actor to learn of the failure before the next commit)
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(versions(addr, "retry").await.is_empty());

    // ... so row 4 takes one.
    client.put_note("n3", "x");
    client.wait_all_acked().await;
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let listed = versions(addr, "retry").await;
        if let Some(v) = listed.iter().find(|v| v["reason"] == "checkpoint") {
            assert_eq!(v["covers_seq"], 4, "{v}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no checkpoint after the failed one: it was counted as taken ({listed:?})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.shutdown().await.unwrap();
}

/// A restore in progress on board `id`: the board had `a` when version `v0` was saved, then
/// `b`; the restore back to `v0` is held while it saves the "before restore" version, and the
/// client makes note `e` in that window (seen by the board's actor before the save completes).
struct RestoreRace {
    client: TestClient,
    /// The client's document messages up to and including `e`.
    e_message: u64,
    restoring: tokio::task::JoinHandle<HttpResponse>,
}

async fn restore_race(store: &TestStore, addr: std::net::SocketAddr, id: &str) -> RestoreRace {
    create_board(addr, id).await;
    let client = TestClient::connect(addr, id, true).await;
    client.wait_synced().await;
    client.put_note("a", "in v0");
    client.wait_all_acked().await;
    let saved = http(
        addr,
        "POST",
        &format!("/v1/boards/{id}/versions"),
        JSON,
        json!({"label": "v0"}).to_string().as_bytes(),
    )
    .await;
    assert_eq!(
        saved.status,
        201,
        "{:?}",
        String::from_utf8_lossy(&saved.body)
    );
    let v0 = saved.json()["id"].as_i64().unwrap();
    client.put_note("b", "after v0");
    client.wait_all_acked().await;

    store.versions.save_version_gate.close();
    let path = format!("/v1/boards/{id}/restore");
    let restoring = tokio::spawn(async move {
        let body = json!({ "version": v0 }).to_string();
        http(addr, "POST", &path, JSON, body.as_bytes()).await
    });
    store
        .versions
        .save_version_gate
        .wait_for_waiting(1, "the version before the restore")
        .await;
    client.put_note("e", "made during the restore");
    let e_message = client.doc_messages_sent();
    actor_caught_up(&client, 1).await;
    store.versions.save_version_gate.open();
    RestoreRace {
        client,
        e_message,
        restoring,
    }
}

/// The "before restore" version and the restore are one step: an edit that arrives while the
/// version is being saved is not applied in between, so the restore (back to a version
/// without it) does not delete it. Before, it landed between the two: missing from the
/// version (saved just before it) and deleted by the restore, lost from both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_during_a_restore_is_not_lost_between_the_version_and_the_restore() {
    let store = TestStore::new(memory_store().await);
    let server = TestServer::start(config(), store.storage()).await;
    let addr = server.addr;
    let RestoreRace {
        client, restoring, ..
    } = restore_race(&store, addr, "restore").await;

    let restored = restoring.await.unwrap();
    assert_eq!(
        restored.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&restored.body)
    );
    let answer = restored.json();
    let before = answer["before_version"]["id"].as_i64().unwrap();
    let in_version = version_notes(addr, "restore", before).await;
    assert_eq!(
        in_version.keys().collect::<Vec<_>>(),
        ["a", "b"],
        "the version before the restore is the board when the restore began"
    );
    // The client receives the restore (b goes) ...
    client
        .wait_for("the restore", |s| !notes(&s.doc).contains_key("b"))
        .await;
    // ... and it did not delete e, which is in neither v0 nor the version before the restore.
    let report = &answer["report"];
    assert!(
        client.notes().contains_key("e") || in_version.contains_key("e"),
        "the edit made during the restore is lost: not in the version before it \
         ({in_version:?}) and deleted by the restore (report {report}; client now {:?})",
        client.notes()
    );
    assert_eq!(report["objects_removed"], 1, "only b is removed: {report}");
    server.shutdown().await.unwrap();
}

/// An update held back while a restore saves its "before restore" version is applied,
/// committed and acknowledged once the restore is, and no acknowledgement ever covers it
/// before it is stored.
///
/// Failed before its fix (found writing these tests): after the version is saved the
/// actor applies the restore, whose commit is then in flight, so `on_saved` does not release
/// the held-back updates; `on_committed` releases them only when a read waits
/// (`answer_waiting` is called only if `waiting` is not empty). The update stays in
/// `deferred` indefinitely, and later updates of the same connection are applied past it: the
/// next one's durable ack carries the count that covers the stuck update, which is not
/// stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_held_back_during_a_restore_is_committed_after_it() {
    let store = TestStore::new(memory_store().await);
    let server = TestServer::start(config(), store.storage()).await;
    let addr = server.addr;
    let RestoreRace {
        client,
        e_message,
        restoring,
    } = restore_race(&store, addr, "held").await;
    let restored = restoring.await.unwrap();
    assert_eq!(restored.status, 200);

    // A later edit of the same client.
    client.put_note("f", "after the restore");
    client
        .wait_for_within("an ack covering e", Duration::from_secs(3), |s| {
            s.seen.last_ack() >= e_message
        })
        .await;
    let stored = notes(&stored_doc(store.storage().as_ref(), "held").await);
    assert!(
        stored.contains_key("e"),
        "e (message {e_message}) is acknowledged (acks {:?}) but not stored: {stored:?}",
        client.with(|s| s.seen.acks.clone())
    );
    client.wait_all_acked().await;
    let stored = notes(&stored_doc(store.storage().as_ref(), "held").await);
    assert_eq!(stored.keys().collect::<Vec<_>>(), ["a", "e", "f"]);
    server.shutdown().await.unwrap();
}

// =============================================================================================
// 4. Undo whose caller went away

/// An undo runs to its end even if its caller disconnects after the run was claimed: the run
/// is undone (or its claim released), never left claimed with nothing undone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undo_completes_when_its_caller_disconnects() {
    use fake::{FakeLlm, call, text_turn, tool_turn};
    let fake = FakeLlm::start(vec![
        tool_turn(&[call(
            "c1",
            "createStickyNote",
            json!({"text": "From the assistant", "x": 0, "y": 40, "color": "yellow", "frame": null}),
        )]),
        text_turn("Added a note."),
    ])
    .await;
    let mut llm = ai_agent::LlmConfig::new(fake.base_url(), fake::KEY, "gpt-fake");
    llm.max_retries = 1;
    llm.max_retry_after = Duration::from_millis(50);
    llm.read_timeout = Duration::from_secs(5);
    let cfg = sync_server::server::Config {
        assistant: Some(sync_server::assistant::AssistantConfig {
            llm,
            caps: ai_agent::RunCaps::default(),
            budgets: ai_agent::BudgetLimits::default(),
            max_prompt_chars: 4000,
            run_expiry: sync_server::assistant::DEFAULT_RUN_EXPIRY,
        }),
        ..config()
    };
    let store = TestStore::new(memory_store().await);
    let server = TestServer::start(cfg, store.storage()).await;
    let addr = server.addr;
    create_board(addr, "undo").await;
    let watcher = TestClient::connect(addr, "undo", false).await;
    watcher.wait_synced().await;

    let prompt = json!({ "prompt": "add a note" }).to_string();
    let ran = http(
        addr,
        "POST",
        "/v1/boards/undo/assistant",
        JSON,
        prompt.as_bytes(),
    )
    .await;
    let outcome = ran.json();
    assert_eq!(ran.status, 200, "{outcome}");
    assert_eq!(outcome["status"], "completed", "{outcome}");
    let run_id = outcome["run_id"].as_str().unwrap().to_owned();
    watcher
        .wait_for("the run's note", |s| notes(&s.doc).len() == 1)
        .await;

    // The undo is held after the claim (reading the version before the run) ...
    store.versions.get_version_gate.close();
    let path = format!("/v1/boards/undo/assistant/runs/{run_id}/undo");
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    store
        .versions
        .get_version_gate
        .wait_for_waiting(1, "the undo's read of the version before the run")
        .await;
    // ... and its caller goes away. Give the server time to notice (an undo that dies with
    // its request stops waiting at the gate).
    drop(tcp);
    let deadline = Instant::now() + Duration::from_secs(1);
    while store.versions.get_version_gate.waiting() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let abandoned = store.versions.get_version_gate.waiting() == 0;
    store.versions.get_version_gate.open();

    // The undo completes regardless.
    let deadline = Instant::now() + WAIT;
    while !watcher.notes().is_empty() {
        if Instant::now() >= deadline {
            let again = http(addr, "POST", &path, None, b"").await;
            panic!(
                "the run was not undone after its caller disconnected (undo abandoned with \
                 the request: {abandoned}); the board still holds {:?}; a second undo \
                 answers {} {}",
                watcher.notes(),
                again.status,
                String::from_utf8_lossy(&again.body)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let run = get_ok(addr, &format!("/v1/boards/undo/assistant/runs/{run_id}"))
        .await
        .json();
    assert!(run["undone_at"].is_i64(), "{run}");
    let again = http(addr, "POST", &path, None, b"").await;
    assert_eq!(again.status, 409);
    assert_eq!(again.json()["error"]["code"], "run_already_undone");
    server.shutdown().await.unwrap();
}

// =============================================================================================
// 5. Callers racing an eviction

/// With boards evicted a millisecond after they go idle, HTTP updates and WebSocket joins
/// keep landing on actors that are stopping: each must be retried on a new actor (204, a
/// join), never answered "gone" (503, 1011). Each caller works on a board of its own,
/// sequentially, pausing 0, 1 or 2 ms between requests so that requests arrive around the
/// moment the board is evicted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_and_joins_racing_evictions_all_succeed() {
    let mut cfg = config();
    cfg.board.idle_timeout = Duration::from_millis(1);
    cfg.limits.http_rate = 0;
    cfg.limits.http_burst = 0;
    let store = memory_store().await;
    let server = TestServer::start(cfg, store.clone()).await;
    let addr = server.addr;

    const WRITERS: usize = 3;
    const WRITES: usize = 150;
    const JOINERS: usize = 2;
    const JOINS: usize = 60;
    let pause = |i: usize| Duration::from_millis((i % 3) as u64);
    for w in 0..WRITERS {
        create_board(addr, &format!("churn-w{w}")).await;
    }
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        tasks.push(tokio::spawn(async move {
            let path = format!("/v1/boards/churn-w{w}/updates");
            let mut failures = Vec::new();
            for i in 0..WRITES {
                let update = foreign_note(&format!("n{i}"), "x");
                let answer = http(addr, "POST", &path, BINARY, &update).await;
                if answer.status != 204 {
                    failures.push(format!(
                        "update {i} of churn-w{w}: {} {}",
                        answer.status,
                        String::from_utf8_lossy(&answer.body)
                    ));
                }
                tokio::time::sleep(pause(i)).await;
            }
            failures
        }));
    }
    for j in 0..JOINERS {
        tasks.push(tokio::spawn(async move {
            let board = format!("churn-j{j}");
            let mut failures = Vec::new();
            for i in 0..JOINS {
                let client = TestClient::connect(addr, &board, false).await;
                client
                    .wait_for("sync step 2 or a close", |s| {
                        s.seen.step2 > 0 || s.seen.close.is_some() || s.seen.ended
                    })
                    .await;
                if let Some(close) = client.close_frame() {
                    failures.push(format!("join {i} of {board}: closed {close:?}"));
                } else if client.with(|s| s.seen.step2 == 0) {
                    failures.push(format!("join {i} of {board}: ended without a close"));
                }
                client.close().await;
                drop(client);
                tokio::time::sleep(pause(i)).await;
            }
            failures
        }));
    }
    let mut failures = Vec::new();
    for task in tasks {
        failures.extend(task.await.unwrap());
    }
    let metrics = String::from_utf8(get_ok(addr, "/metrics").await.body).unwrap();
    let evictions: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("sync_evictions_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sync_evictions_total in:\n{metrics}"));
    assert!(
        failures.is_empty(),
        "{} of {} requests failed racing {evictions} evictions: {failures:#?}",
        failures.len(),
        WRITERS * WRITES + JOINERS * JOINS
    );
    for w in 0..WRITERS {
        let stored = notes(&stored_doc(store.as_ref(), &format!("churn-w{w}")).await);
        assert_eq!(stored.len(), WRITES, "churn-w{w}");
    }
    // It did race evictions: most requests found their board evicted.
    eprintln!("{evictions} evictions");
    assert!(evictions >= 100.0, "only {evictions} evictions");
    server.shutdown().await.unwrap();
}

// =============================================================================================
// Found while writing these tests, and fixed

/// Deletes `id` while one of its actor's background jobs is held at `gate`, and re-creates
/// the id; the caller then opens the gate. Works whether a fix makes the deletion wait for the
/// job (the gate is then opened while the deletion waits) or makes the job notice the
/// deletion.
async fn delete_and_recreate_around(addr: std::net::SocketAddr, gate: &Gate, id: &str) {
    let path = format!("/v1/boards/{id}");
    let mut deleting = tokio::spawn(async move { http(addr, "DELETE", &path, None, b"").await });
    let deleted = match tokio::time::timeout(Duration::from_millis(500), &mut deleting).await {
        Ok(deleted) => deleted.unwrap(),
        Err(_) => {
            gate.open();
            deleting.await.unwrap()
        }
    };
    assert_eq!(
        deleted.status,
        204,
        "{:?}",
        String::from_utf8_lossy(&deleted.body)
    );
    create_board(addr, id).await;
}

/// A deleted board's content never comes back as a version of a board created later under the
/// same id.
///
/// Failed before its fix: `Boards::delete` waits for the actor to stop, not for the jobs
/// it started. An automatic version being saved when the board is deleted is saved once the
/// id exists again, as a version of the new board (holding the deleted content; restoring it
/// brings that content back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_boards_checkpoint_never_lands_on_the_recreated_board() {
    let store = TestStore::new(memory_store().await);
    let mut cfg = config();
    cfg.board.checkpoint_rows = 1;
    let server = TestServer::start(cfg, store.storage()).await;
    let addr = server.addr;
    create_board(addr, "ghost").await;
    let owner = TestClient::connect(addr, "ghost", true).await;
    owner.wait_synced().await;
    store.versions.save_version_gate.close();
    owner.put_note("old", "deleted content");
    owner.wait_all_acked().await;
    store
        .versions
        .save_version_gate
        .wait_for_waiting(1, "the checkpoint")
        .await;

    delete_and_recreate_around(addr, &store.versions.save_version_gate, "ghost").await;
    store.versions.save_version_gate.open();

    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        let listed = versions(addr, "ghost").await;
        if let Some(v) = listed.first() {
            let held = version_notes(addr, "ghost", v["id"].as_i64().unwrap()).await;
            panic!("the re-created board has a version of the deleted one: {v} holding {held:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.shutdown().await.unwrap();
}

/// A compaction of a deleted board never commits on a board created later under the same id.
///
/// Failed before its fix: a compaction that read the deleted board's rows commits once
/// the new board has as many rows (sequence numbers start again at 1 for a new board): its
/// snapshot of the deleted content replaces the new board's rows, which are deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_boards_compaction_never_lands_on_the_recreated_board() {
    let store = TestStore::new(memory_store().await);
    let mut cfg = config();
    cfg.board.compact_rows = 3;
    let server = TestServer::start(cfg, store.storage()).await;
    let addr = server.addr;
    create_board(addr, "ghost2").await;
    let owner = TestClient::connect(addr, "ghost2", true).await;
    owner.wait_synced().await;
    store.compaction.gate.close();
    for i in 0..3 {
        owner.put_note(&format!("old-{i}"), "deleted content");
        owner.wait_all_acked().await;
    }
    store
        .compaction
        .gate
        .wait_for_waiting(1, "the compaction")
        .await;

    delete_and_recreate_around(addr, &store.compaction.gate, "ghost2").await;
    // The new board gets three rows (from another writer: no actor of its own compacts them).
    let id = board("ghost2");
    for i in 0..3 {
        let note = foreign_note(&format!("new-{i}"), "new content");
        store
            .storage()
            .append(&[NewUpdate {
                board: &id,
                data: &note,
            }])
            .await
            .unwrap();
    }
    store.compaction.gate.open();

    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        let stored = notes(&stored_doc(store.storage().as_ref(), "ghost2").await);
        assert_eq!(
            stored.keys().collect::<Vec<_>>(),
            ["new-0", "new-1", "new-2"],
            "the re-created board's rows were replaced by the deleted board's content"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.shutdown().await.unwrap();
}

/// A version holds every row up to the sequence it covers, rows another writer committed
/// included.
///
/// Failed before its fix: the commit that reveals a gap (`note_rows`) starts reading the
/// missing rows, and the checkpoint taken right after it uses the doc (`is_quiescent` does not
/// look at `healing`), which lacks them, while `covers_seq` counts them. Restoring that
/// version deletes them. (The same holds for named versions and "before restore" versions
/// saved while `healing` runs, and reads answered meanwhile miss them.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_holds_the_rows_another_writer_committed_before_it() {
    let store = TestStore::new(memory_store().await);
    let mut cfg = config();
    cfg.board.checkpoint_rows = 1;
    let server = TestServer::start(cfg, store.storage()).await;
    let addr = server.addr;
    let client = TestClient::connect(addr, "heal", true).await;
    client.wait_synced().await;
    client.put_note("mine-0", "first");
    client.wait_all_acked().await;
    let id = board("heal");
    let foreign = foreign_note("foreign", "from another writer");
    let foreign_seq = store
        .storage()
        .append(&[NewUpdate {
            board: &id,
            data: &foreign,
        }])
        .await
        .unwrap()[0];
    client.put_note("mine-1", "second");
    client.wait_all_acked().await;
    client.wait_note("foreign").await;

    let deadline = Instant::now() + WAIT;
    let covering = loop {
        let listed = versions(addr, "heal").await;
        if let Some(v) = listed
            .into_iter()
            .find(|v| v["covers_seq"].as_i64().unwrap() > foreign_seq)
        {
            break v;
        }
        assert!(Instant::now() < deadline, "no checkpoint after the row");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let held = version_notes(addr, "heal", covering["id"].as_i64().unwrap()).await;
    assert!(
        held.contains_key("foreign"),
        "version {covering} covers row {foreign_seq} but lacks its content: {held:?}"
    );
    server.shutdown().await.unwrap();
}

/// Rows committed while an automatic version is being saved get the next one once it is saved,
/// without waiting for another commit.
///
/// Failed before its fix: a checkpoint due while the previous one was being saved was skipped
/// (one at a time), and only the next commit asked again: a board whose last edits came during
/// a save kept no version of them (flaky in `a_checkpoint_holds_the_rows_...` under load).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_due_while_one_is_saved_follows_it() {
    let store = TestStore::new(memory_store().await);
    let mut cfg = config();
    cfg.board.checkpoint_rows = 1;
    let server = TestServer::start(cfg, store.storage()).await;
    let addr = server.addr;
    let client = TestClient::connect(addr, "saving", true).await;
    client.wait_synced().await;
    store.versions.save_version_gate.close();
    client.put_note("first", "1");
    client.wait_all_acked().await;
    store
        .versions
        .save_version_gate
        .wait_for_waiting(1, "the first automatic version")
        .await;
    client.put_note("second", "2");
    client.wait_all_acked().await;
    store.versions.save_version_gate.open();

    let deadline = Instant::now() + WAIT;
    let newest = loop {
        let listed = versions(addr, "saving").await;
        let newest = listed
            .iter()
            .map(|v| v["covers_seq"].as_i64().unwrap())
            .max()
            .unwrap_or(0);
        if newest >= 2 {
            break newest;
        }
        assert!(
            Instant::now() < deadline,
            "no automatic version covers the second row: {listed:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(newest, 2);
    server.shutdown().await.unwrap();
}

/// Every row another writer commits reaches the live board and its clients, also one found
/// while the actor is still reading an earlier one.
///
/// Failed before its fix: `note_rows` starts reading a gap only if no read is running
/// (`self.healing.is_none()`) and moves `last_seq` past the gap either way, so a second gap
/// found meanwhile is never read: connected clients never receive that row (until the board
/// is reloaded), and versions taken from the doc lack it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_row_of_another_writer_found_while_reading_the_first_reaches_clients() {
    let store = TestStore::new(memory_store().await);
    let server = TestServer::start(config(), store.storage()).await;
    let addr = server.addr;
    let client = TestClient::connect(addr, "gaps", true).await;
    client.wait_synced().await;
    client.put_note("mine-0", "x");
    client.wait_all_acked().await;
    let id = board("gaps");

    // A first row of another writer; the actor's read of it is held.
    store.log.load_gate.close();
    let a = foreign_note("foreign-a", "a");
    store
        .storage()
        .append(&[NewUpdate {
            board: &id,
            data: &a,
        }])
        .await
        .unwrap();
    client.put_note("mine-1", "x");
    client.wait_all_acked().await;
    store
        .log
        .load_gate
        .wait_for_waiting(1, "the read of the first row")
        .await;
    // A second one, found by the next commit while the first is still being read.
    let b = foreign_note("foreign-b", "b");
    store
        .storage()
        .append(&[NewUpdate {
            board: &id,
            data: &b,
        }])
        .await
        .unwrap();
    client.put_note("mine-2", "x");
    client.wait_all_acked().await;
    store.log.load_gate.open();

    client.wait_note("foreign-a").await;
    client.wait_note("foreign-b").await;
    server.shutdown().await.unwrap();
}
