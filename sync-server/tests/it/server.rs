//! End-to-end tests of the sync server: a server in-process, y-websocket clients over real
//! sockets, the HTTP API over raw HTTP/1.1, and the database underneath.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use harness::*;
use sync_server::ids::BoardId;
use sync_server::protocol;
use sync_server::server::{Limits, Pacing};
use sync_server::storage::VersionKind;
use sync_server::storage::replay::replay_into;
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message;
use yrs::sync::{Message as YMessage, SyncMessage};
use yrs::updates::decoder::Decode;
use yrs::{Doc, Map, ReadTxn, StateVector, Transact, Update};

fn board(id: &str) -> BoardId {
    BoardId::parse(id).unwrap()
}

/// The board as the store holds it, replayed into a fresh doc.
async fn stored_doc(store: &dyn sync_server::storage::Storage, id: &str) -> Doc {
    let stored = store.load(&board(id)).await.unwrap();
    let doc = new_doc();
    replay_into(&doc, &stored).unwrap();
    doc
}

/// 1. Two clients converge through the server; a third one that connects later gets
/// everything through sync step 2 alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_converge_and_late_joiner_gets_everything() {
    let server = TestServer::start(config(), memory_store().await).await;
    let a = TestClient::connect(server.addr, "converge", false).await;
    let b = TestClient::connect(server.addr, "converge", false).await;
    a.wait_synced().await;
    b.wait_synced().await;

    a.put_note("from-a", "hello from a");
    b.put_note("from-b", "hello from b");
    a.put_note("from-a-2", "second from a");
    a.wait_note("from-b").await;
    b.wait_note("from-a").await;
    b.wait_note("from-a-2").await;
    assert_eq!(a.notes(), b.notes());
    assert_eq!(a.notes().len(), 3);
    assert_eq!(a.state_vector(), b.state_vector());

    let c = TestClient::connect(server.addr, "converge", false).await;
    c.wait_synced().await;
    // Everything came in the step 2 answer: no live update was needed.
    assert_eq!(c.with(|s| s.seen.updates), 0);
    assert_eq!(c.notes(), a.notes());
    assert_eq!(c.state_vector(), a.state_vector());

    server.shutdown().await.unwrap();
}

/// 2. Durable acknowledgements: with `?ack=1` every document message sent (the step 2 answer
/// and three updates) is acknowledged; a client without `?ack=1` never receives type 100.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_ack_only_for_clients_that_ask() {
    let server = TestServer::start(config(), memory_store().await).await;
    let acked = TestClient::connect(server.addr, "acks", true).await;
    let plain = TestClient::connect(server.addr, "acks", false).await;
    acked.wait_synced().await;
    plain.wait_synced().await;

    for i in 0..3 {
        acked.put_note(&format!("acked-{i}"), "x");
    }
    // Step 2 answer + 3 updates.
    assert_eq!(acked.doc_messages_sent(), 4);
    acked
        .wait_for("an ack covering the 3 updates", |s| s.seen.last_ack() >= 4)
        .await;
    let acks = acked.with(|s| s.seen.acks.clone());
    assert!(
        acks.windows(2).all(|w| w[0] < w[1]),
        "acks increase: {acks:?}"
    );
    assert!(
        acks.iter().all(|&n| n <= 4),
        "never more than was sent: {acks:?}"
    );
    assert_eq!(*acks.last().unwrap(), 4);
    assert!(acks.last().unwrap() >= &3);

    // The plain client sends 3 updates too; the acked client sees them (so they are durable,
    // and any ack for them has been queued), then a round trip flushes the plain connection.
    for i in 0..3 {
        plain.put_note(&format!("plain-{i}"), "y");
    }
    for i in 0..3 {
        acked.wait_note(&format!("plain-{i}")).await;
    }
    plain.wait_note("acked-2").await;
    plain.barrier().await;
    plain.with(|s| {
        assert!(
            s.seen.acks.is_empty(),
            "a client without ?ack=1 got acks {:?}",
            s.seen.acks
        );
        assert!(
            s.seen.unknown.is_empty(),
            "a client without ?ack=1 got unknown frames {:?}",
            s.seen.unknown
        );
    });
    // No ack was sent for the plain client's messages to the acked one either.
    acked.barrier().await;
    assert_eq!(acked.with(|s| s.seen.last_ack()), 4);

    server.shutdown().await.unwrap();
}

/// 3. Durable before broadcast: when the commit fails, the sender is closed with 1011, nobody
/// sees the update, HTTP reads don't show it; once the store works again the sender's resync
/// delivers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_commit_is_never_broadcast_and_resync_recovers() {
    let store = TestStore::new(memory_store().await);
    let server = TestServer::start(config(), store.storage()).await;
    let a = TestClient::connect(server.addr, "durable", false).await;
    let b = TestClient::connect(server.addr, "durable", false).await;
    a.wait_synced().await;
    b.wait_synced().await;
    a.put_note("ok", "committed");
    b.wait_note("ok").await;

    // The failing commit takes a while, so that a read arrives while it is in flight.
    store.log.append_delay_ms.store(300, Ordering::SeqCst);
    store.log.set_fail_appends(true);
    a.put_note("lost", "not durable");
    tokio::time::sleep(Duration::from_millis(50)).await;
    // A read during the commit waits for durable state; the board then reloads from the
    // database, where the update is not.
    let state = http(server.addr, "GET", "/v1/boards/durable/state", None, &[]).await;
    assert_eq!(state.status, 200);
    let served = notes(&doc_from(&state.body));
    assert!(served.contains_key("ok"));
    assert!(
        !served.contains_key("lost"),
        "GET state served an update whose commit failed"
    );
    assert_eq!(
        a.wait_closed().await,
        1011,
        "the sender is closed with 1011"
    );
    // Give a broadcast every chance to arrive.
    tokio::time::sleep(Duration::from_millis(100)).await;
    b.with(|s| {
        assert!(
            !notes(&s.doc).contains_key("lost"),
            "a peer received an update whose commit failed"
        );
        if let Some((code, _)) = &s.seen.close {
            assert_eq!(*code, 1011, "other peers, if closed, are closed with 1011");
        }
    });
    let state = http(server.addr, "GET", "/v1/boards/durable/state", None, &[]).await;
    assert_eq!(state.status, 200);
    assert!(!notes(&doc_from(&state.body)).contains_key("lost"));

    store.log.append_delay_ms.store(0, Ordering::SeqCst);
    store.log.set_fail_appends(false);
    let b2 = TestClient::connect(server.addr, "durable", false).await;
    b2.wait_synced().await;
    assert!(b2.notes().contains_key("ok"));
    assert!(!b2.notes().contains_key("lost"));
    // A reconnects with the doc it kept; its step 2 answer carries the lost update.
    let a2 = TestClient::connect_with_doc(server.addr, "durable", false, a.doc()).await;
    b2.wait_note("lost").await;
    a2.wait_synced().await;
    assert_eq!(a2.notes(), b2.notes());
    let state = http(server.addr, "GET", "/v1/boards/durable/state", None, &[]).await;
    assert!(notes(&doc_from(&state.body)).contains_key("lost"));

    server.shutdown().await.unwrap();
}

/// 4. A client that stops reading is closed with 1013; the writer and another reader carry on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_is_closed_with_1013() {
    let mut cfg = config();
    cfg.limits = Limits {
        max_message_bytes: 1 << 20,
        outbound_queue: 4,
        ..Limits::default()
    };
    let server = TestServer::start(cfg, memory_store().await).await;

    // The slow client: a tiny receive buffer, reads the server's step 1 and then nothing.
    let tcp = TcpSocket::new_v4().unwrap();
    tcp.set_recv_buffer_size(4096).unwrap();
    let tcp = tcp.connect(server.addr).await.unwrap();
    let mut slow = ws_handshake(tcp, server.addr, "/v1/sync/slow").await;
    let first = tokio::time::timeout(WAIT, slow.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(matches!(first, Message::Binary(_)), "the server's step 1");

    let reader = TestClient::connect(server.addr, "slow", false).await;
    let writer = TestClient::connect(server.addr, "slow", true).await;
    reader.wait_synced().await;
    writer.wait_synced().await;

    let started = Instant::now();
    let blob = "x".repeat(64 << 10);
    let n = 200;
    for i in 0..n {
        writer.edit(|doc| {
            let blobs = doc.get_or_insert_map("blobs");
            let mut txn = doc.transact_mut();
            blobs.insert(&mut txn, format!("blob-{i}"), blob.as_str());
            txn.encode_update_v1()
        });
        // One update per commit: one 64 KiB frame per update for every reader.
        writer.wait_all_acked().await;
    }
    reader
        .wait_for("every blob", |s| {
            s.doc.get_or_insert_map("blobs").len(&s.doc.transact()) == n
        })
        .await;
    assert_eq!(reader.state_vector(), writer.state_vector());
    eprintln!("slow consumer: {n} updates in {:?}", started.elapsed());

    // The slow client reads again: what was buffered, then the close frame.
    let code = expect_close(&mut slow, Duration::from_secs(10)).await;
    assert_eq!(
        code, 1013,
        "a client too slow to keep up is closed with 1013"
    );

    // The others keep working.
    writer.put_note("after", "still here");
    reader.wait_note("after").await;
    writer.wait_all_acked().await;
    assert!(reader.with(|s| s.seen.close.is_none() && !s.seen.ended));

    server.shutdown().await.unwrap();
}

/// A board's updates go to the committer while an earlier one of its commits is still waiting
/// (here for pacing), so they join that next group instead of waiting for a group of their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_join_the_next_group_while_one_is_in_flight() {
    let mut cfg = config();
    cfg.commit = Pacing {
        interval: Duration::from_millis(1000),
        min_rate: 0,
        ..Pacing::default()
    };
    let store = TestStore::new(memory_store().await);
    let server = TestServer::start(cfg, store.storage()).await;
    let client = TestClient::connect(server.addr, "piped", true).await;
    client.wait_synced().await;
    // The committer was idle: committed at once.
    client.put_note("a", "1");
    client.wait_all_acked().await;
    let before = store.log.appends.load(Ordering::SeqCst);
    // Waits for pacing, a second after the previous group started (the margin is for a
    // loaded machine)...
    client.put_note("b", "2");
    tokio::time::sleep(Duration::from_millis(100)).await;
    // ... and this one, sent meanwhile, goes with it.
    client.put_note("c", "3");
    client.wait_all_acked().await;
    assert_eq!(
        store.log.appends.load(Ordering::SeqCst) - before,
        1,
        "b and c were committed in one group"
    );
    server.shutdown().await.unwrap();
}

/// A connection that sends nothing for the read timeout is closed with 1011; one that answers
/// the server's pings (three per timeout) stays open however long it says nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed_and_live_ones_kept() {
    let mut cfg = config();
    cfg.limits = Limits {
        // Two seconds, not one, so that a loaded machine does not starve the live client.
        read_timeout: Duration::from_secs(2),
        ..Limits::default()
    };
    let server = TestServer::start(cfg, memory_store().await).await;
    let live = TestClient::connect(server.addr, "quiet", true).await;
    live.wait_synced().await;
    // Not read for a while, so it answers no ping (reading would answer them).
    let mut silent = ws_connect(server.addr, "/v1/sync/quiet").await;
    // Read after the timeout (2 s) but before the server stops waiting for a close reply (1 s
    // later): reading answers the pings it queued, and a pong written to a socket the server
    // has dropped would fail the read before the close frame is seen.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (code, reason) = expect_close_frame(&mut silent, WAIT).await;
    assert_eq!((code, reason.as_str()), (1011, "no traffic; reconnect"));
    // Three timeouts after it connected, the live client is still connected and still works.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert!(live.with(|s| s.seen.close.is_none() && !s.seen.ended));
    live.put_note("still", "here");
    live.wait_all_acked().await;
    server.shutdown().await.unwrap();
}

/// A y-protocols update message found by `protocol_fuzz`: a map entry whose block declares two
/// items of content but carries none.
const UNREENCODABLE_UPDATE: &[u8] = &[
    0, 2, 46, 1, 2, 7, 9, 66, 0, 40, 1, 7, 111, 98, 106, 101, 99, 116, 115, 2, 107, 49, 1, 2, 124,
    63, 128, 0, 0, 63, 192, 0, 0, 68, 7, 1, 11, 104, 195, 169, 108, 108, 111, 32, 240, 159, 145,
    139, 0,
];

/// 5. Bad input closes only the offending socket, with the documented code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_closes_only_that_socket() {
    let mut cfg = config();
    cfg.limits.max_message_bytes = 64 << 10;
    let server = TestServer::start(cfg, memory_store().await).await;
    let good = TestClient::connect(server.addr, "bad", false).await;
    let other = TestClient::connect(server.addr, "bad", false).await;
    good.wait_synced().await;
    other.wait_synced().await;

    let mut failures = Vec::new();
    let cases: Vec<(&str, String, Message, u16)> = vec![
        (
            "unknown message type",
            "/v1/sync/bad".into(),
            Message::Binary(vec![0xff, 0x01, 0x02].into()),
            4400,
        ),
        (
            "undecodable sync message",
            "/v1/sync/bad".into(),
            Message::Binary(vec![0, 9].into()),
            4400,
        ),
        (
            "empty frame",
            "/v1/sync/bad".into(),
            Message::Binary(Vec::new().into()),
            4400,
        ),
        (
            "oversized frame",
            "/v1/sync/bad".into(),
            Message::Binary(vec![0u8; 200 << 10].into()),
            4413,
        ),
        (
            "update that does not decode",
            "/v1/sync/bad".into(),
            Message::Binary(vec![0, 2, 3, 0xff, 0xff, 0xff].into()),
            4422,
        ),
        (
            // Decodes, but yrs cannot read back its own encoding of it (a block longer than its
            // content). Kept as pending data it made every later state encode panic.
            "update yrs cannot re-encode",
            "/v1/sync/bad".into(),
            Message::Binary(UNREENCODABLE_UPDATE.to_vec().into()),
            4422,
        ),
        (
            "text frame",
            "/v1/sync/bad".into(),
            Message::Text("hello".into()),
            4400,
        ),
    ];
    for (i, (what, path, frame, expected)) in cases.into_iter().enumerate() {
        let mut socket = ws_connect(server.addr, &path).await;
        let _ = socket.send(frame).await;
        let code = expect_close(&mut socket, WAIT).await;
        if code != expected {
            failures.push(format!("{what}: closed with {code}, expected {expected}"));
        }
        // The other connections are unharmed.
        let id = format!("after-{i}");
        other.put_note(&id, what);
        good.wait_note(&id).await;
    }
    for path in [
        "/v1/sync/bad%20id".to_string(),
        format!("/v1/sync/{}", "a".repeat(200)),
    ] {
        let mut socket = ws_connect(server.addr, &path).await;
        let code = expect_close(&mut socket, WAIT).await;
        if code != 4400 {
            failures.push(format!(
                "board id {path}: closed with {code}, expected 4400"
            ));
        }
    }
    other.put_note("last", "still syncing");
    good.wait_note("last").await;
    assert_eq!(good.notes(), other.notes());
    // The board still encodes its whole state for a newcomer.
    let late = TestClient::connect(server.addr, "bad", false).await;
    late.wait_synced().await;
    late.wait_note("last").await;
    assert_eq!(late.notes(), good.notes());
    assert!(good.with(|s| s.seen.close.is_none() && !s.seen.ended));
    assert!(other.with(|s| s.seen.close.is_none() && !s.seen.ended));
    assert!(failures.is_empty(), "wrong close codes: {failures:#?}");

    server.shutdown().await.unwrap();
}

/// 6. The HTTP board API: create, conflict, list, write, read, delete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_board_api() {
    let server = TestServer::start(config(), memory_store().await).await;
    let addr = server.addr;
    let json = Some("application/json");

    let created = http(addr, "POST", "/v1/boards", json, br#"{"id":"x"}"#).await;
    assert_eq!(created.status, 201);
    assert_eq!(created.json()["id"], "x");
    let again = http(addr, "POST", "/v1/boards", json, br#"{"id":"x"}"#).await;
    assert_eq!(again.status, 409);
    let error = again.json();
    assert!(error["error"]["code"].is_string(), "{error}");
    assert!(error["error"]["message"].is_string(), "{error}");

    let list = http(addr, "GET", "/v1/boards", None, &[]).await;
    assert_eq!(list.status, 200);
    let ids: Vec<String> = list.json()["boards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_string())
        .collect();
    assert!(ids.contains(&"x".to_string()), "{ids:?}");

    // A query string that does not parse is refused in the same JSON error format.
    for bad in ["/v1/boards?limit=abc", "/v1/boards?limit=-1"] {
        let refused = http(addr, "GET", bad, None, &[]).await;
        assert_eq!(refused.status, 400, "{bad}");
        let error = refused.json();
        assert_eq!(error["error"]["code"], "invalid_query", "{bad}: {error}");
        assert!(
            error["error"]["message"]
                .as_str()
                .unwrap()
                .contains("limit"),
            "{bad}: {error}"
        );
    }

    // So is a path segment that is not UTF-8, and a plain GET of the sync endpoint.
    let refused = http(addr, "GET", "/v1/boards/%FF", None, &[]).await;
    assert_eq!(refused.status, 400);
    assert_eq!(refused.json()["error"]["code"], "invalid_path");
    let refused = http(addr, "GET", "/v1/sync/x", None, &[]).await;
    assert_eq!(refused.status, 400);
    assert_eq!(refused.json()["error"]["code"], "websocket_required");

    let client = TestClient::connect(addr, "x", false).await;
    client.wait_synced().await;

    // A server-side writer's update reaches connected clients.
    let writer = new_doc();
    let update = put_note(&writer, "note-1", "from http");
    let posted = http(
        addr,
        "POST",
        "/v1/boards/x/updates",
        Some("application/octet-stream"),
        &update,
    )
    .await;
    assert_eq!(posted.status, 204);
    client.wait_note("note-1").await;
    assert_eq!(client.notes()["note-1"], "from http");

    let corrupt = http(
        addr,
        "POST",
        "/v1/boards/x/updates",
        Some("application/octet-stream"),
        &[0xff, 0xff, 0xff, 0x01],
    )
    .await;
    assert_eq!(corrupt.status, 400);
    assert!(corrupt.json()["error"]["code"].is_string());

    let got = http(addr, "GET", "/v1/boards/x", None, &[]).await;
    assert_eq!(got.status, 200);
    let board_json = got.json();
    let objects = board_json["objects"].as_array().unwrap();
    let note = objects
        .iter()
        .find(|o| o["id"] == "note-1")
        .unwrap_or_else(|| panic!("note-1 in {board_json}"));
    assert_eq!(note["kind"], "sticky");
    assert_eq!(note["text"], "from http");

    let missing = http(addr, "GET", "/v1/boards/nope", None, &[]).await;
    assert_eq!(missing.status, 404);
    assert!(missing.json()["error"]["code"].is_string());

    let deleted = http(addr, "DELETE", "/v1/boards/x", None, &[]).await;
    assert!(
        deleted.status == 204 || deleted.status == 200,
        "{}",
        deleted.status
    );
    assert_eq!(client.wait_closed().await, 4404);
    let gone = http(addr, "GET", "/v1/boards/x", None, &[]).await;
    assert_eq!(gone.status, 404);

    // A client that missed the deletion and reconnects with the old content does not bring the
    // board back: it is closed with 4404 too, and the board stays deleted.
    let stale = new_doc();
    put_note(&stale, "note-1", "from http");
    let late = TestClient::connect_with_doc(addr, "x", false, stale).await;
    assert_eq!(late.wait_closed().await, 4404);
    let still_gone = http(addr, "GET", "/v1/boards/x", None, &[]).await;
    assert_eq!(still_gone.status, 404);

    // Creating it explicitly takes the id back, empty.
    let recreated = http(addr, "POST", "/v1/boards", json, br#"{"id":"x"}"#).await;
    assert_eq!(recreated.status, 201);
    let fresh = TestClient::connect(addr, "x", false).await;
    fresh.wait_synced().await;
    assert!(fresh.notes().is_empty(), "{:?}", fresh.notes());
    fresh.close().await;

    server.shutdown().await.unwrap();
}

/// 7. Twenty first connections at once reach one replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_connections_share_one_replica() {
    let store = TestStore::new(memory_store().await);
    // A slow load keeps the window between the first connections wide open.
    store.log.load_delay_ms.store(150, Ordering::SeqCst);
    let server = TestServer::start(config(), store.storage()).await;
    let clients = futures_util::future::join_all(
        (0..20).map(|_| TestClient::connect(server.addr, "crowd", false)),
    )
    .await;
    for (i, c) in clients.iter().enumerate() {
        c.put_note(&format!("client-{i}"), &format!("hello {i}"));
    }
    for c in &clients {
        c.wait_for("20 notes", |s| notes(&s.doc).len() == 20).await;
    }
    let first = clients[0].notes();
    let sv = clients[0].state_vector();
    for c in &clients {
        assert_eq!(c.notes(), first);
        assert_eq!(c.state_vector(), sv);
    }
    assert_eq!(
        store.boards.ensures(),
        1,
        "the board was loaded (and created) by exactly one actor"
    );
    assert_eq!(
        notes(&stored_doc(store.storage().as_ref(), "crowd").await).len(),
        20
    );

    server.shutdown().await.unwrap();
}

/// 8. An idle board is evicted after everything is durable and reloads intact, also across a
/// full restart on the same SQLite file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_eviction_and_reload() {
    let db = SqliteDb::new();
    let mut cfg = config();
    cfg.board.idle_timeout = Duration::from_millis(200);
    let store = TestStore::new(db.open().await);
    let server = TestServer::start(cfg.clone(), store.storage()).await;

    let c = TestClient::connect(server.addr, "evict", true).await;
    c.wait_synced().await;
    c.put_note("kept", "survives eviction");
    c.wait_all_acked().await;
    let expected = c.notes();
    c.close().await;
    let loads = store.log.loads();
    assert!(loads >= 1);

    // Eviction saves an automatic version ("idle") of the changed board.
    let deadline = Instant::now() + WAIT;
    loop {
        let versions = store
            .storage()
            .list_versions(&board("evict"))
            .await
            .unwrap();
        if versions
            .iter()
            .any(|v| v.kind == VersionKind::Auto && v.reason.as_deref() == Some("idle"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no idle checkpoint: the board was not evicted ({versions:?})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let c2 = TestClient::connect(server.addr, "evict", false).await;
    c2.wait_synced().await;
    assert_eq!(
        store.log.loads(),
        loads + 1,
        "the reconnect loaded the board again"
    );
    assert_eq!(c2.notes(), expected);
    drop(c2);
    server.shutdown().await.unwrap();

    // A full restart on the same file.
    let server = TestServer::start(cfg, db.open().await).await;
    let c3 = TestClient::connect(server.addr, "evict", false).await;
    c3.wait_synced().await;
    assert_eq!(c3.notes(), expected);
    server.shutdown().await.unwrap();
}

/// 9. Graceful shutdown: sockets close with 1012, updates received are committed,
/// `run_with_store` returns Ok, and a new server has them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_commits_what_was_received() {
    let db = SqliteDb::new();
    let store = TestStore::new(db.open().await);
    let mut server = TestServer::start(config(), store.storage()).await;
    let c = TestClient::connect(server.addr, "shutdown", false).await;
    c.wait_synced().await;

    // Slow commits: the first update's commit is in flight when the shutdown starts, the
    // second waits behind it.
    store.log.append_delay_ms.store(300, Ordering::SeqCst);
    c.put_note("first", "in flight");
    tokio::time::sleep(Duration::from_millis(50)).await;
    c.put_note("second", "queued");
    tokio::time::sleep(Duration::from_millis(50)).await;
    server.trigger_shutdown();
    assert_eq!(c.wait_closed().await, 1012);
    server.shutdown().await.unwrap();

    let server = TestServer::start(config(), db.open().await).await;
    let c2 = TestClient::connect(server.addr, "shutdown", false).await;
    c2.wait_synced().await;
    let got = c2.notes();
    assert!(got.contains_key("first"), "{got:?}");
    assert!(got.contains_key("second"), "{got:?}");
    server.shutdown().await.unwrap();
}

/// 10. Compaction writes a snapshot that replays to the client's content.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_writes_a_replayable_snapshot() {
    let db = SqliteDb::new();
    let mut cfg = config();
    cfg.board.compact_rows = 10;
    let server = TestServer::start(cfg, db.open().await).await;
    let c = TestClient::connect(server.addr, "compact", true).await;
    c.wait_synced().await;
    for i in 0..50 {
        c.put_note(&format!("n{i}"), &format!("note {i}"));
    }
    c.wait_all_acked().await;

    let reader = db.open().await;
    let deadline = Instant::now() + WAIT;
    let stored = loop {
        let stored = reader.load(&board("compact")).await.unwrap();
        if stored.snapshot.as_ref().is_some_and(|s| s.seq >= 10) {
            break stored;
        }
        assert!(
            Instant::now() < deadline,
            "no snapshot written (rows: {})",
            stored.updates.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let snapshot_seq = stored.snapshot.as_ref().unwrap().seq;
    assert!(stored.updates.iter().all(|u| u.seq > snapshot_seq));
    assert!(stored.updates.len() < 50, "covered rows were deleted");
    let doc = new_doc();
    replay_into(&doc, &stored).unwrap();
    assert_eq!(notes(&doc), c.notes());
    assert_eq!(notes(&doc).len(), 50);
    assert_eq!(doc.transact().state_vector(), c.state_vector());
    reader.close().await;

    server.shutdown().await.unwrap();
}

/// 11. Awareness: relayed to others, echoed to the sender, cleared when the sender leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awareness_is_relayed_echoed_and_cleared() {
    let server = TestServer::start(config(), memory_store().await).await;
    let a = TestClient::connect(server.addr, "aware", false).await;
    let b = TestClient::connect(server.addr, "aware", false).await;
    a.wait_synced().await;
    b.wait_synced().await;

    let id = a.client_id();
    let state = r#"{"user":{"name":"a"}}"#;
    a.send_raw(awareness_frame(&[(id, 1, state)]));
    b.wait_for("A's awareness", |s| {
        s.seen.awareness_of(id).as_deref() == Some(state)
    })
    .await;
    a.wait_for("the echo of A's awareness", |s| {
        s.seen.awareness_of(id).as_deref() == Some(state)
    })
    .await;

    a.close().await;
    b.wait_for("A's awareness cleared", |s| {
        s.seen.awareness_of(id).as_deref() == Some("null")
    })
    .await;

    server.shutdown().await.unwrap();
}

/// A client coming back after its presence was removed announces the clock it had, which the
/// removal passed: the server tells it of the removal (a y-protocols client then announces
/// itself with a newer clock), and its next state reaches everyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_back_after_its_presence_was_removed_is_told_and_seen_again() {
    let server = TestServer::start(config(), memory_store().await).await;
    let board = "presence-back";
    let observer = TestClient::connect(server.addr, board, false).await;
    observer.wait_synced().await;
    let id = yrs::block::ClientID::new(0x5eed);
    let first = TestClient::connect(server.addr, board, false).await;
    first.wait_synced().await;
    first.send_raw(awareness_frame(&[(id, 1, r#"{"name":"Ada"}"#)]));
    observer
        .wait_for("Ada", |s| {
            s.seen.awareness_of(id).is_some_and(|j| j.contains("Ada"))
        })
        .await;
    first.close().await;
    // The server removed the state at clock 2.
    observer
        .wait_for("Ada removed", |s| {
            s.seen.awareness_of(id).as_deref() == Some("null")
        })
        .await;
    let back = TestClient::connect(server.addr, board, false).await;
    back.wait_synced().await;
    back.send_raw(awareness_frame(&[(id, 2, r#"{"name":"Ada again"}"#)]));
    back.wait_for("the removal, told to the client coming back", |s| {
        s.seen.awareness.iter().any(|u| {
            u.clients
                .get(&id)
                .is_some_and(|e| e.clock == 2 && &*e.json == "null")
        })
    })
    .await;
    back.send_raw(awareness_frame(&[(id, 3, r#"{"name":"Ada again"}"#)]));
    observer
        .wait_for("Ada seen again", |s| {
            s.seen.awareness_of(id).is_some_and(|j| j.contains("again"))
        })
        .await;
}

/// A sync step 2 longer than one frame goes out as a first frame and continuations of at most
/// 64 KiB each (so a connection's write buffer holds one fragment, not a copy of the board),
/// and a client that knows nothing of fragments gets the whole board as one message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_sync_answer_is_written_in_fragments() {
    use std::io::{Read, Write};
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameSocket};

    let server = TestServer::start(config(), memory_store().await).await;
    let text = "0123456789abcdef".repeat(20_000); // 320,000 bytes
    let writer = TestClient::connect(server.addr, "fragments", true).await;
    writer.wait_synced().await;
    writer.put_note("big", &text);
    writer.wait_all_acked().await;

    // An ordinary client: the fragments are reassembled below it.
    let reader = TestClient::connect(server.addr, "fragments", false).await;
    reader.wait_note("big").await;
    assert_eq!(reader.notes()["big"], text);

    // A raw one, reading frame by frame.
    let addr = server.addr;
    let frames = tokio::task::spawn_blocking(move || {
        let mut tcp = std::net::TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(WAIT)).unwrap();
        write!(
            tcp,
            "GET /v1/sync/fragments HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\n\
             Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        .unwrap();
        // The response head, a byte at a time so that no frame byte is read with it.
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8];
            tcp.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        // RFC 6455's own example key and accept value.
        assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{head}");

        let mut socket = FrameSocket::new(tcp);
        let mut step1 = Frame::message(
            protocol::sync_step1(&StateVector::default()),
            OpCode::Data(Data::Binary),
            true,
        );
        step1.header_mut().mask = Some([7, 1, 8, 2]);
        socket.send(step1).unwrap();
        // Frames until the step 2 message is complete: (opcode, is_final, payload).
        let mut frames = Vec::new();
        let mut in_step2 = false;
        loop {
            let frame = socket.read(None).unwrap().expect("a frame");
            let (opcode, fin) = (frame.header().opcode, frame.header().is_final);
            let payload = frame.into_payload();
            if !in_step2 && opcode == OpCode::Data(Data::Binary) && payload.starts_with(&[0, 1]) {
                in_step2 = true;
            }
            if in_step2 {
                frames.push((opcode, fin, payload));
                if fin {
                    return frames;
                }
            }
        }
    })
    .await
    .unwrap();

    assert!(frames.len() >= 5, "{} frames", frames.len());
    assert_eq!(frames[0].0, OpCode::Data(Data::Binary));
    for (i, (opcode, fin, payload)) in frames.iter().enumerate() {
        let last = i == frames.len() - 1;
        assert_eq!(*fin, last, "only the last frame ends the message");
        if i > 0 {
            assert_eq!(*opcode, OpCode::Data(Data::Continue));
        }
        assert!(
            payload.len() <= 64 << 10,
            "frame {i}: {} bytes",
            payload.len()
        );
    }
    let message: Vec<u8> = frames
        .iter()
        .flat_map(|(_, _, p)| p.iter().copied())
        .collect();
    let YMessage::Sync(SyncMessage::SyncStep2(update)) = YMessage::decode_v1(&message).unwrap()
    else {
        panic!("not a sync step 2");
    };
    let doc = new_doc();
    doc.transact_mut()
        .apply_update(Update::decode_v1(&update).unwrap())
        .unwrap();
    assert_eq!(notes(&doc)["big"], text);

    server.shutdown().await.unwrap();
}
