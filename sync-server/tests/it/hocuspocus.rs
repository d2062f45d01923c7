//! The Hocuspocus dialect (`/v1/hocuspocus`) in process, with raw sockets speaking its framing:
//! hostile frames close only their socket; SyncStatus waits for the commit; frames sent before
//! a document's Auth message are held, bounded, then applied; a board's size limit closes only
//! that document; documents of one socket stay apart.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use harness::wire::hocuspocus::{
    ServerFrame, auth_frame, close_frame, doc_frame, parse, stateless_frame,
};
use harness::wire::{self, write_var_u64};
use harness::*;
use sync_server::server::Config;
use tokio_tungstenite::tungstenite::Message;
use yrs::{Doc, GetString, Map, Text, Transact};

/// A raw Hocuspocus socket.
struct Hp {
    socket: Socket,
    /// Frames read and not yet consumed by a wait.
    seen: Vec<Vec<u8>>,
}

impl Hp {
    async fn connect(addr: std::net::SocketAddr) -> Self {
        Self {
            socket: ws_connect(addr, "/v1/hocuspocus").await,
            seen: Vec::new(),
        }
    }

    async fn send(&mut self, frame: impl Into<Vec<u8>>) {
        self.socket
            .send(Message::Binary(frame.into().into()))
            .await
            .unwrap();
    }

    /// Reads the next binary frame (answering pings), or `None` once the socket ends.
    async fn read(&mut self, within: Duration) -> Option<Vec<u8>> {
        loop {
            let msg = tokio::time::timeout(within, self.socket.next())
                .await
                .ok()??;
            match msg {
                Ok(Message::Binary(frame)) if frame[..] == [wire::hocuspocus::PING] => {
                    self.send(vec![wire::hocuspocus::PONG]).await;
                }
                Ok(Message::Binary(frame)) => return Some(frame.to_vec()),
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Reads until a frame matches `pred` (remembering the others), failing after [`WAIT`].
    async fn wait_for(&mut self, what: &str, pred: impl Fn(&ServerFrame<'_>) -> bool) -> Vec<u8> {
        if let Some(i) = self
            .seen
            .iter()
            .position(|f| parse(f).is_ok_and(|f| pred(&f)))
        {
            return self.seen.remove(i);
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(frame) = self.read(left).await else {
                panic!("{what}: the socket ended or nothing came within {WAIT:?}");
            };
            if parse(&frame).is_ok_and(|f| pred(&f)) {
                return frame;
            }
            self.seen.push(frame);
        }
    }

    /// Opens document `name` and waits for `Authenticated`; returns the scope.
    async fn open(&mut self, name: &str, token: &str) -> String {
        self.send(auth_frame(name, token)).await;
        // The provider sends its step 1 right after its Auth message.
        self.send(doc_frame(name, &wire::step1_frame(&Default::default())))
            .await;
        let frame = self
            .wait_for(
                "Authenticated",
                |f| matches!(f, ServerFrame::Auth { name: n, sub: 2 | 1, .. } if *n == name),
            )
            .await;
        let ServerFrame::Auth { sub, text, .. } = parse(&frame).unwrap() else {
            unreachable!()
        };
        assert_eq!(sub, 2, "authenticated, not denied: {text:?}");
        text.unwrap().to_owned()
    }

    async fn sync_status(&mut self, name: &str) -> bool {
        let frame = self
            .wait_for(
                "a SyncStatus",
                |f| matches!(f, ServerFrame::SyncStatus { name: n, .. } if *n == name),
            )
            .await;
        let ServerFrame::SyncStatus { committed, .. } = parse(&frame).unwrap() else {
            unreachable!()
        };
        committed
    }

    /// Whether any frame matching `pred` arrives within `within`.
    async fn gets_within(
        &mut self,
        within: Duration,
        pred: impl Fn(&ServerFrame<'_>) -> bool,
    ) -> bool {
        if self.seen.iter().any(|f| parse(f).is_ok_and(|f| pred(&f))) {
            return true;
        }
        let deadline = tokio::time::Instant::now() + within;
        while let Some(frame) = self
            .read(deadline.saturating_duration_since(tokio::time::Instant::now()))
            .await
        {
            let hit = parse(&frame).is_ok_and(|f| pred(&f));
            self.seen.push(frame);
            if hit {
                return true;
            }
        }
        false
    }
}

/// An update setting `objects[key] = value` in `doc`.
fn set(doc: &Doc, key: &str, value: &str) -> Vec<u8> {
    let objects = doc.get_or_insert_map("objects");
    let mut txn = doc.transact_mut();
    objects.insert(&mut txn, key, value);
    txn.encode_update_v1()
}

fn update(name: &str, update: &[u8]) -> bytes::Bytes {
    doc_frame(name, &wire::update_frame(update))
}

/// `objects[key]` of the board as the server stores it.
async fn stored(addr: std::net::SocketAddr, board: &str, key: &str) -> Option<String> {
    let r = http(addr, "GET", &format!("/v1/boards/{board}/state"), None, &[]).await;
    assert_eq!(r.status, 200);
    let doc = doc_from(&r.body);
    let objects = doc.get_or_insert_map("objects");
    let txn = doc.transact();
    objects.get(&txn, key).map(|v| v.to_string(&txn))
}

/// Both dialects on one board keep syncing: an edit from each reaches the other.
async fn still_syncing(hp: &mut Hp, ws: &TestClient, board: &str, round: usize) {
    let doc = Doc::new();
    let key = format!("hp-{round}");
    hp.send(update(board, &set(&doc, &key, "v"))).await;
    assert!(hp.sync_status(board).await, "round {round}: committed");
    ws.wait_for(
        &format!("round {round}: the y-websocket client sees it"),
        |s| {
            let objects = s.doc.get_or_insert_map("objects");
            objects.get(&s.doc.transact(), &key).is_some()
        },
    )
    .await;
    let key = format!("ws-{round}");
    ws.edit(|d| set(d, &key, "v"));
    hp.wait_for(
        &format!("round {round}: the Hocuspocus socket sees it"),
        |f| {
            matches!(f, ServerFrame::Yjs { name, body }
            if *name == board && body.windows(key.len()).any(|w| w == key.as_bytes()))
        },
    )
    .await;
}

/// Frames no provider sends close their socket with 4400 (4413 past what may wait for
/// authentication, 4422 for an update nested too deeply); a socket and a y-websocket client on
/// the same board are unharmed, and the server stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_frames_close_only_their_socket() {
    let server = TestServer::start(config(), memory_store().await).await;
    let board = "hp-hostile";
    let mut good = Hp::connect(server.addr).await;
    assert_eq!(good.open(board, "").await, "read-write");
    let ws = TestClient::connect(server.addr, board, false).await;
    ws.wait_synced().await;

    // A name declaring 2^35 bytes; a name that is not UTF-8; a message type no provider
    // sends after a valid name; an auth message of the server's kind; garbage after a close.
    let mut huge = Vec::new();
    write_var_u64(&mut huge, 1 << 35);
    huge.extend_from_slice(b"abc");
    let mut deep = wire::update_frame(&deep_update(100_000)).to_vec();
    deep.splice(0..0, doc_frame(board, &[]).iter().copied());
    let hostile: Vec<(&str, Vec<Vec<u8>>, u16)> = vec![
        ("a huge name length", vec![huge], 4400),
        (
            "a name that is not UTF-8",
            vec![vec![3, 0xff, 0xfe, 0xfd, 0]],
            4400,
        ),
        (
            "an unknown message type",
            vec![doc_frame(board, &[200, 1, 2]).to_vec()],
            4400,
        ),
        (
            "a server-only auth message",
            vec![doc_frame(board, &[2, 2, 0]).to_vec()],
            4400,
        ),
        (
            "garbage after a close",
            vec![doc_frame(board, &[7, 1, 2, 3]).to_vec()],
            4400,
        ),
        (
            "a truncated y-protocols body",
            vec![
                auth_frame(board, "").to_vec(),
                doc_frame(board, &[0, 2, 50, 1]).to_vec(),
            ],
            4400,
        ),
        (
            "an update nested 100,000 deep",
            vec![auth_frame(board, "").to_vec(), deep],
            4422,
        ),
        (
            "frames before authentication past the bound",
            (0..1100)
                .map(|_| update("unauthenticated", &[0, 0]).to_vec())
                .collect(),
            4413,
        ),
        (
            "too many documents waiting for authentication",
            (0..20)
                .map(|i| update(&format!("waiting-{i}"), &[0, 0]).to_vec())
                .collect(),
            4413,
        ),
    ];
    for (round, (what, frames, code)) in hostile.into_iter().enumerate() {
        let mut bad = Hp::connect(server.addr).await;
        for frame in frames {
            // The server may close before the last of them.
            if bad
                .socket
                .send(Message::Binary(frame.into()))
                .await
                .is_err()
            {
                break;
            }
        }
        let (got, reason) = expect_close_frame(&mut bad.socket, WAIT).await;
        assert_eq!(got, code, "{what}: closed with {got} ({reason})");
        still_syncing(&mut good, &ws, board, round).await;
    }
    let r = http(server.addr, "GET", "/healthz", None, &[]).await;
    assert_eq!(r.status, 200);
}

/// An update nesting `depth` arrays in one value.
fn deep_update(depth: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for n in [1, 1, 99, 0] {
        write_var_u64(&mut out, n);
    }
    out.push(0b0010_0000 | 8);
    write_var_u64(&mut out, 1);
    write_var_u64(&mut out, 7);
    out.extend_from_slice(b"objects");
    write_var_u64(&mut out, 1);
    out.push(b'k');
    write_var_u64(&mut out, 1);
    for _ in 0..depth {
        out.push(117);
        write_var_u64(&mut out, 1);
    }
    out.push(126);
    write_var_u64(&mut out, 0);
    out
}

/// SyncStatus 1 comes only once the update is committed: with appends held at a gate, none
/// comes; once they pass, it does, and the board holds the update.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_status_waits_for_the_commit() {
    let store = TestStore::new(memory_store().await);
    let server = TestServer::start(config(), store.storage()).await;
    let board = "hp-durable";
    let mut hp = Hp::connect(server.addr).await;
    hp.open(board, "").await;
    // The answer to the provider's step 1: a step 2, then the board's step 1, which the
    // provider answers with a step 2 of its own (acknowledged like any document message).
    hp.wait_for(
        "the step 2",
        |f| matches!(f, ServerFrame::Yjs { body, .. } if body.starts_with(&[0, 1])),
    )
    .await;
    hp.wait_for(
        "the board's step 1",
        |f| matches!(f, ServerFrame::Yjs { body, .. } if body.starts_with(&[0, 0])),
    )
    .await;
    hp.send(doc_frame(board, &wire::step2_frame(vec![0, 0])))
        .await;
    assert!(hp.sync_status(board).await);

    store.log.append_gate.close();
    let doc = Doc::new();
    hp.send(update(board, &set(&doc, "k", "v"))).await;
    store
        .log
        .append_gate
        .wait_for_waiting(1, "the commit")
        .await;
    assert!(
        !hp.gets_within(Duration::from_millis(300), |f| matches!(
            f,
            ServerFrame::SyncStatus { .. }
        ))
        .await,
        "no SyncStatus while the commit waits"
    );
    store.log.append_gate.open();
    assert!(hp.sync_status(board).await, "SyncStatus 1 once committed");
    assert_eq!(stored(server.addr, board, "k").await.as_deref(), Some("v"));
}

/// Frames sent before a document's Auth message are held, then applied in order once it is
/// open; a document left with `[name][7]` gets nothing more; documents of one socket stay
/// apart; stateless messages reach the board's other documents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_of_one_socket_are_held_opened_and_left_apart() {
    let server = TestServer::start(config(), memory_store().await).await;
    let mut hp = Hp::connect(server.addr).await;
    let doc = Doc::new();
    let text = doc.get_or_insert_text("t");
    let first = {
        let mut txn = doc.transact_mut();
        text.insert(&mut txn, 0, "held ");
        txn.encode_update_v1()
    };
    let second = {
        let mut txn = doc.transact_mut();
        text.insert(&mut txn, 5, "then applied");
        txn.encode_update_v1()
    };
    hp.send(update("hp-one", &first)).await;
    hp.send(update("hp-one", &second)).await;
    assert!(
        !hp.gets_within(Duration::from_millis(200), |_| true).await,
        "nothing answers a document before its Auth message"
    );
    hp.open("hp-one", "").await;
    assert!(hp.sync_status("hp-one").await);
    assert!(hp.sync_status("hp-one").await);
    let r = http(server.addr, "GET", "/v1/boards/hp-one/state", None, &[]).await;
    let board = doc_from(&r.body);
    let t = board.get_or_insert_text("t");
    assert_eq!(t.get_string(&board.transact()), "held then applied");

    hp.open("hp-two", "").await;
    let other = Hp::connect(server.addr).await;
    let mut other = other;
    other.open("hp-two", "").await;
    hp.send(update("hp-two", &set(&Doc::new(), "two", "x")))
        .await;
    assert!(hp.sync_status("hp-two").await);
    assert_eq!(stored(server.addr, "hp-one", "two").await, None);
    assert_eq!(
        stored(server.addr, "hp-two", "two").await.as_deref(),
        Some("x")
    );

    hp.send(stateless_frame("hp-two", "ping")).await;
    other
        .wait_for("the stateless message", |f| {
            matches!(
                f,
                ServerFrame::Stateless {
                    name: "hp-two",
                    payload: "ping"
                }
            )
        })
        .await;

    hp.send(close_frame("hp-one")).await;
    // A ping after the close: once its pong is here, everything queued before the close is.
    hp.send(vec![wire::hocuspocus::PING]).await;
    while hp.read(WAIT).await.expect("the pong") != [wire::hocuspocus::PONG] {}
    hp.seen.clear();
    // The other socket writes to hp-one: the closed document hears nothing of it.
    other.open("hp-one", "").await;
    other
        .send(update("hp-one", &set(&Doc::new(), "after-close", "x")))
        .await;
    assert!(other.sync_status("hp-one").await);
    assert!(
        !hp.gets_within(Duration::from_millis(300), |f| matches!(
            f,
            ServerFrame::Yjs { name: "hp-one", .. }
        ))
        .await,
        "a closed document receives nothing"
    );
}

/// An update past the board's size limit is refused with SyncStatus 0 and closes only its
/// document (`[name][7]`); the socket's other documents go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_board_size_limit_closes_only_that_document() {
    let mut cfg: Config = config();
    cfg.board.max_board_bytes = 4096;
    let server = TestServer::start(cfg, memory_store().await).await;
    let mut hp = Hp::connect(server.addr).await;
    hp.open("hp-big", "").await;
    hp.open("hp-small", "").await;
    let big = set(&Doc::new(), "big", &"x".repeat(8000));
    hp.send(update("hp-big", &big)).await;
    assert!(
        !hp.sync_status("hp-big").await,
        "SyncStatus 0 for the refused update"
    );
    let frame = hp
        .wait_for("the document's close", |f| {
            matches!(f, ServerFrame::Close { name: "hp-big", .. })
        })
        .await;
    assert!(matches!(
        parse(&frame).unwrap(),
        ServerFrame::Close {
            reason: "board size limit reached",
            ..
        }
    ));
    hp.send(update("hp-small", &set(&Doc::new(), "small", "ok")))
        .await;
    assert!(
        hp.sync_status("hp-small").await,
        "the other document goes on"
    );
    assert!(stored(server.addr, "hp-small", "small").await.is_some());
    assert!(stored(server.addr, "hp-big", "big").await.is_none());
}
