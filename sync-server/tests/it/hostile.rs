//! Hostile input against the server in process: nesting that would overflow the stack, a
//! reader that makes the server encode the board again and again, connections that try to make
//! the server hold more than its limits, state that waits for durability without bound.

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use harness::wire::write_var_u64;
use harness::*;
use sync_server::auth::token::TokenRequest;
use sync_server::auth::{Auth, Keys, Role, Scope, Secret};
use sync_server::ids::BoardId;
use sync_server::server::Config;
use sync_server::storage::NewUpdate;
use tokio_tungstenite::tungstenite::Message;
use yrs::block::ClientID;
use yrs::{Map, MapPrelim, Transact};

const BINARY: Option<&str> = Some("application/octet-stream");

/// lib0 varuint.
fn deep_value_update(depth: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for n in [1, 1, 99, 0] {
        write_var_u64(&mut out, n); // one client (99, clock 0) with one block
    }
    out.push(0b0010_0000 | 8); // an item with a parent key; content: values
    write_var_u64(&mut out, 1); // the parent is a root, by name
    write_var_u64(&mut out, 7);
    out.extend_from_slice(b"objects");
    write_var_u64(&mut out, 1);
    out.push(b'k');
    write_var_u64(&mut out, 1); // one value
    for _ in 0..depth {
        out.push(117); // an array
        write_var_u64(&mut out, 1); // of one element
    }
    out.push(126); // null
    write_var_u64(&mut out, 0); // no deletions
    out
}

/// A chain of `levels` maps nested under `objects/chain` (continuing `from`, the innermost map
/// of an earlier call, if given), as one update made by `doc`.
fn chain(doc: &yrs::Doc, from: Option<yrs::MapRef>, levels: usize) -> (Vec<u8>, yrs::MapRef) {
    let objects = doc.get_or_insert_map("objects");
    let mut txn = doc.transact_mut();
    let mut map = match from {
        Some(map) => map,
        None => objects.insert(&mut txn, "chain", MapPrelim::default()),
    };
    for _ in 0..levels {
        map = map.insert(&mut txn, "c", MapPrelim::default());
    }
    (txn.encode_update_v1(), map)
}

fn board(id: &str) -> BoardId {
    BoardId::parse(id).unwrap()
}

const SECRET: &[u8] = b"hostile input tests: 0123456789abcdef0123456789";

fn keys() -> Keys {
    Keys::new(&Secret::new(SECRET).unwrap())
}

fn token(keys: &Keys, board: &str, role: Role) -> String {
    keys.mint(&TokenRequest {
        user: Some("mallory".into()),
        scope: Scope::parse(board).unwrap(),
        role,
        ttl: Duration::from_secs(3600),
    })
    .unwrap()
    .token
}

async fn scrape(addr: std::net::SocketAddr) -> String {
    let r = http(addr, "GET", "/metrics", None, &[]).await;
    assert_eq!(r.status, 200);
    String::from_utf8(r.body).unwrap()
}

/// A counter's value in a scrape (absent: zero).
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse::<f64>().unwrap())
        })
        .unwrap_or(0.0)
}

fn errors(text: &str, kind: &str) -> f64 {
    value(text, &format!("sync_errors_total{{kind=\"{kind}\"}}"))
}

/// Nesting deeper than the limit is refused at every door, from every role, before yrs decodes
/// it; the server stays up and other boards keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_nesting_is_refused_at_every_door() {
    let keys = keys();
    let config = Config {
        auth: Auth::Tokens(Box::new(keys.clone())),
        ..config()
    };
    let server = TestServer::start(config, memory_store().await).await;
    let addr = server.addr;
    let admin = token(&keys, "*", Role::Admin);
    let bearer = format!("Bearer {admin}");
    let other_a =
        TestClient::connect_path(addr, "a", &format!("/v1/sync/other?token={admin}")).await;
    let other_b =
        TestClient::connect_path(addr, "b", &format!("/v1/sync/other?token={admin}")).await;
    other_a.wait_synced().await;
    other_b.wait_synced().await;
    let created = http_request(
        addr,
        None,
        "POST",
        "/v1/boards",
        &[
            ("authorization", bearer.as_str()),
            ("content-type", "application/json"),
        ],
        br#"{"id": "deep"}"#,
    )
    .await;
    assert_eq!(created.status, 201);

    let deep = deep_value_update(200_000);
    let frame = sync_server::protocol::update(&deep).to_vec();
    for role in [Role::Read, Role::Write] {
        let path = format!("/v1/sync/deep?token={}", token(&keys, "deep", role));
        let mut socket = ws_connect(addr, &path).await;
        socket
            .send(Message::Binary(frame.clone().into()))
            .await
            .unwrap();
        assert_eq!(
            expect_close_frame(&mut socket, WAIT).await,
            (4422, "update nests too deeply".to_owned()),
            "{role:?}"
        );
    }
    // Over HTTP: an update, an import, a restore upload.
    for (path, method) in [
        ("/v1/boards/deep/updates", "POST"),
        ("/v1/boards?id=deep2", "POST"),
        ("/v1/boards/deep/restore", "POST"),
    ] {
        let r = http_request(
            addr,
            None,
            method,
            path,
            &[
                ("authorization", bearer.as_str()),
                ("content-type", "application/octet-stream"),
            ],
            &deep,
        )
        .await;
        assert_eq!(
            r.status,
            400,
            "{path}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert!(
            String::from_utf8_lossy(&r.body).contains("64 levels"),
            "{path}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    // Just within the limit is fine.
    let writer = TestClient::connect_path(
        addr,
        "w",
        &format!("/v1/sync/deep?token={}", token(&keys, "deep", Role::Write)),
    )
    .await;
    writer.wait_synced().await;
    writer.send_update(&deep_value_update(64));
    writer.barrier().await;
    assert!(writer.is_open(), "{:?}", writer.close_frame());

    other_a.put_note("still", "here");
    other_b.wait_note("still").await;
    let metrics = scrape(addr).await;
    assert!(errors(&metrics, "too_deep") >= 2.0, "{metrics}");
    server.shutdown().await.unwrap();
}

/// Shared types nested past the limit are refused even when each update adds only a few
/// levels: the board checks every update against its own nesting. A chain at the limit can be
/// deleted (yrs deletes nested types recursively: 10,000 levels overflowed the stack).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nesting_built_a_few_levels_at_a_time_is_refused() {
    let server = TestServer::start(config(), memory_store().await).await;
    let client = TestClient::connect(server.addr, "chain", true).await;
    let watcher = TestClient::connect(server.addr, "chain", false).await;
    client.wait_synced().await;
    watcher.wait_synced().await;
    let doc = new_doc();
    let (first, inner) = chain(&doc, None, 40);
    client.send_update(&first);
    client.barrier().await;
    assert!(client.is_open());
    let (second, _) = chain(&doc, Some(inner), 40);
    client.send_update(&second);
    assert_eq!(
        client.wait_close_frame_within(WAIT).await,
        (4422, "update nests too deeply".to_owned())
    );
    // The chain that was accepted can be deleted, and the board goes on.
    let deleter = TestClient::connect(server.addr, "chain", true).await;
    deleter.wait_synced().await;
    deleter.edit(|doc| {
        let objects = doc.get_or_insert_map("objects");
        let mut txn = doc.transact_mut();
        objects.remove(&mut txn, "chain");
        txn.encode_update_v1()
    });
    deleter.wait_all_acked().await;
    deleter.put_note("after", "the chain");
    watcher.wait_note("after").await;
    server.shutdown().await.unwrap();
}

/// One update holding a chain of 10,000 nested maps (150 KB) is refused; deleting such a chain
/// is what overflowed yrs' recursion (it deletes nested types recursively).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deep_chain_of_maps_in_one_update_is_refused() {
    let server = TestServer::start(config(), memory_store().await).await;
    let client = TestClient::connect(server.addr, "chain1", true).await;
    let watcher = TestClient::connect(server.addr, "chain1", false).await;
    client.wait_synced().await;
    watcher.wait_synced().await;
    let (update, _) = chain(&new_doc(), None, 10_000);
    client.send_update(&update);
    assert_eq!(
        client.wait_close_frame_within(WAIT).await,
        (4422, "update nests too deeply".to_owned())
    );
    let writer = TestClient::connect(server.addr, "chain1", false).await;
    writer.wait_synced().await;
    writer.put_note("fine", "after");
    watcher.wait_note("fine").await;
    assert!(!watcher.with(|s| notes(&s.doc).contains_key("chain")));
    server.shutdown().await.unwrap();
}

/// A stored row nested too deep (written before the check existed, or by another program)
/// fails only its board's load; the server and other boards carry on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_row_nested_too_deep_fails_only_its_board() {
    let store = memory_store().await;
    store.create_board(&board("poisoned")).await.unwrap();
    let deep = deep_value_update(200_000);
    store
        .append(&[NewUpdate {
            board: &board("poisoned"),
            data: &deep,
        }])
        .await
        .unwrap();
    let server = TestServer::start(config(), store.clone()).await;
    let mut socket = ws_connect(server.addr, "/v1/sync/poisoned").await;
    assert_eq!(
        expect_close_frame(&mut socket, WAIT).await,
        (1011, "board unavailable; reconnect".to_owned())
    );
    let state = http(server.addr, "GET", "/v1/boards/poisoned/state", None, &[]).await;
    assert_eq!(state.status, 503);
    let a = TestClient::connect(server.addr, "healthy", false).await;
    let b = TestClient::connect(server.addr, "healthy", false).await;
    a.wait_synced().await;
    b.wait_synced().await;
    a.put_note("fine", "yes");
    b.wait_note("fine").await;
    let metrics = scrape(server.addr).await;
    assert!(errors(&metrics, "load_failed") >= 1.0, "{metrics}");
    server.shutdown().await.unwrap();
}

/// A client that asks for the board again and again without reading gets it once or twice,
/// not once per request: the server does not queue a full copy of the board for each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_sync_requests_from_a_reader_are_answered_once() {
    let server = TestServer::start(config(), memory_store().await).await;
    let writer = TestClient::connect(server.addr, "big", true).await;
    writer.wait_synced().await;
    writer.put_note("big", &"x".repeat(256 << 10));
    writer.wait_all_acked().await;

    let mut reader = ws_connect(server.addr, "/v1/sync/big").await;
    for _ in 0..200 {
        reader
            .send(Message::Binary(vec![0, 0, 1, 0].into()))
            .await
            .unwrap();
    }
    // Give the server time to answer everything it will, then read it all.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut step2 = 0;
    let mut bytes = 0;
    while let Ok(Some(Ok(message))) =
        tokio::time::timeout(Duration::from_millis(500), reader.next()).await
    {
        if let Message::Binary(frame) = message
            && frame.starts_with(&[0, 1])
        {
            step2 += 1;
            bytes += frame.len();
        }
    }
    eprintln!("200 sync requests unread: {step2} answers, {bytes} bytes");
    assert!(step2 >= 1);
    assert!(
        step2 <= 40,
        "{step2} full copies of a 256 KB board answered 200 unread requests"
    );
    server.shutdown().await.unwrap();
}

/// A connection that stops reading is closed once its queue holds `outbound_queue_bytes`,
/// whatever the number of frames: what it can make the server hold is bounded in bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbound_queue_is_bounded_in_bytes() {
    let mut cfg = config();
    cfg.limits.outbound_queue = 1_000_000;
    cfg.limits.outbound_queue_bytes = 512 << 10;
    let server = TestServer::start(cfg, memory_store().await).await;
    let writer = TestClient::connect(server.addr, "wide", true).await;
    writer.wait_synced().await;
    let mut stalled = ws_connect(server.addr, "/v1/sync/wide").await;
    // 300 notes of 64 KB: far more than the kernel's socket buffers and the queue hold.
    for i in 0..300 {
        writer.put_note(&format!("n{i}"), &"y".repeat(64 << 10));
    }
    // Closed as too slow. Its close frame sits behind everything it did not read, so the
    // connection is dropped instead once the grace period is over.
    let metrics = wait_for_metric(server.addr, |m| errors(m, "too_slow") >= 1.0).await;
    assert_eq!(errors(&metrics, "too_slow"), 1.0, "{metrics}");
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match stalled.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return None,
            }
        }
    })
    .await
    .expect("the stalled connection ends");
    assert!(matches!(ended, None | Some(1013)), "{ended:?}");
    assert!(writer.is_open());
    server.shutdown().await.unwrap();
}

/// Scrapes until `pred` holds (or fails after a while); returns the last scrape.
async fn wait_for_metric(addr: std::net::SocketAddr, pred: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let metrics = scrape(addr).await;
        if pred(&metrics) || std::time::Instant::now() > deadline {
            return metrics;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Awareness a connection announces is bounded: client ids and state size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awareness_is_bounded_per_connection() {
    let server = TestServer::start(config(), memory_store().await).await;
    let addr = server.addr;
    let watcher = TestClient::connect(addr, "aw", false).await;
    watcher.wait_synced().await;

    // Sixteen client ids are fine; the seventeenth is refused.
    let many = TestClient::connect(addr, "aw", false).await;
    many.wait_synced().await;
    for id in 1..=16u64 {
        many.send_raw(awareness_frame(&[(ClientID::new(id), 1, r#"{"u":1}"#)]));
    }
    many.barrier().await;
    assert!(many.is_open(), "{:?}", many.close_frame());
    many.send_raw(awareness_frame(&[(ClientID::new(17), 1, r#"{"u":1}"#)]));
    assert_eq!(
        many.wait_close_frame_within(WAIT).await,
        (4413, "awareness over its limits".to_owned())
    );

    // A state of 64 KiB is fine; a larger one is refused.
    let big = TestClient::connect(addr, "aw", false).await;
    big.wait_synced().await;
    let fits = format!(r#"{{"u":"{}"}}"#, "z".repeat((64 << 10) - 8));
    big.send_raw(awareness_frame(&[(ClientID::new(100), 1, &fits)]));
    big.barrier().await;
    assert!(big.is_open(), "{:?}", big.close_frame());
    let huge = format!(r#"{{"u":"{}"}}"#, "z".repeat(64 << 10));
    big.send_raw(awareness_frame(&[(ClientID::new(100), 2, &huge)]));
    assert_eq!(
        big.wait_close_frame_within(WAIT).await,
        (4413, "awareness over its limits".to_owned())
    );
    // The others are unharmed, and the closed connections' states are gone.
    watcher.put_note("ok", "fine");
    watcher.barrier().await;
    let metrics = scrape(addr).await;
    assert_eq!(errors(&metrics, "awareness_limit"), 2.0, "{metrics}");
    server.shutdown().await.unwrap();
}

/// While its commits are slow, a connection may have at most `max_uncommitted_bytes` of
/// updates in the server; then the server stops reading it (nothing is lost: the rest comes
/// in as commits complete).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uncommitted_bytes_per_connection_are_bounded() {
    let store = TestStore::new(memory_store().await);
    let mut cfg = config();
    cfg.limits.max_message_bytes = 64 << 10;
    cfg.limits.max_uncommitted_bytes = 128 << 10;
    let server = TestServer::start(cfg, store.storage()).await;
    let client = TestClient::connect(server.addr, "slow", true).await;
    client.wait_synced().await;
    store.log.append_delay_ms.store(1000, Ordering::SeqCst);
    for i in 0..10 {
        client.put_note(&format!("n{i}"), &"w".repeat(40 << 10));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let metrics = scrape(server.addr).await;
    let received = value(&metrics, "sync_updates_received_total");
    assert!(
        received <= 4.0,
        "{received} updates of 40 KB taken in with a 128 KB budget while commits stall"
    );
    store.log.append_delay_ms.store(0, Ordering::SeqCst);
    tokio::time::timeout(Duration::from_secs(30), client.wait_all_acked())
        .await
        .expect("everything is committed once commits are fast again");
    server.shutdown().await.unwrap();
}

/// While reads wait for durable state, what a board holds back is bounded: reads past
/// `max_waiting_reads` get 503, updates past `max_deferred_bytes` are refused (503 over HTTP;
/// a WebSocket client is closed with 1013 and resends when it reconnects).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_waits_for_durable_state_is_bounded() {
    let store = TestStore::new(memory_store().await);
    let mut cfg = config();
    cfg.board.max_waiting_reads = 4;
    cfg.board.max_deferred_bytes = 64 << 10;
    cfg.limits.http_rate = 0;
    let server = TestServer::start(cfg, store.storage()).await;
    let addr = server.addr;
    let client = TestClient::connect(addr, "held", true).await;
    let pusher = TestClient::connect(addr, "held", true).await;
    client.wait_synced().await;
    pusher.wait_synced().await;
    store.log.append_delay_ms.store(1500, Ordering::SeqCst);
    client.put_note("in-flight", "slow commit");
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Six reads while the commit is in flight: four wait, two are refused.
    let reads: Vec<_> = (0..6)
        .map(|_| tokio::spawn(http(addr, "GET", "/v1/boards/held/state", None, &[])))
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Updates arriving meanwhile are held back, up to 64 KB.
    let body = put_note(&new_doc(), "http", &"h".repeat(40 << 10));
    let first =
        tokio::spawn(
            async move { http(addr, "POST", "/v1/boards/held/updates", BINARY, &body).await },
        );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let body = put_note(&new_doc(), "http2", &"h".repeat(40 << 10));
    let second = http(addr, "POST", "/v1/boards/held/updates", BINARY, &body).await;
    assert_eq!(
        second.status,
        503,
        "{}",
        String::from_utf8_lossy(&second.body)
    );
    assert_eq!(second.json()["error"]["code"], "board_busy");
    pusher.put_note("ws", &"p".repeat(40 << 10));
    assert_eq!(
        pusher.wait_close_frame_within(WAIT).await,
        (1013, "board busy; reconnect".to_owned())
    );
    store.log.append_delay_ms.store(0, Ordering::SeqCst);
    let mut statuses = Vec::new();
    for read in reads {
        statuses.push(read.await.unwrap().status);
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 200, 200, 503, 503]);
    assert_eq!(first.await.unwrap().status, 204);
    client.wait_all_acked().await;
    let metrics = scrape(addr).await;
    assert!(errors(&metrics, "board_busy") >= 4.0, "{metrics}");
    server.shutdown().await.unwrap();
}
