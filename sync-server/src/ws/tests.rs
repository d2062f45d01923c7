//! Sessions through channels: a client is a pair of channels standing in for the socket, so
//! these run without a listener or a WebSocket handshake.

#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Sink, Stream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use yrs::{Doc, Map, ReadTxn, StateVector, Transact};

use super::reader::{READ_ONLY_REASON, notify_read_only};
use super::{SessionDeps, Sessions};
use crate::auth::token::TokenRequest;
use crate::auth::{Auth, Keys, Role, Scope, Secret};
use crate::board::peer::PeerLink;
use crate::board::registry::{Boards, RegistryConfig};
use crate::commit::{Committer, Pacing};
use crate::ids::BoardId;
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::protocol;
use crate::refusal::Refusal;
use crate::storage::{self, Storage, StorageOptions};

const WAIT: Duration = Duration::from_secs(5);
const PEER: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Sessions over an in-memory store, as the server wires them.
struct Server {
    sessions: Arc<Sessions>,
    store: Arc<dyn Storage>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
}

async fn server(auth: Auth) -> Server {
    let store = storage::open("memory:", &StorageOptions::default())
        .await
        .unwrap();
    let tracker = TaskTracker::new();
    let shutdown = CancellationToken::new();
    let metrics = Arc::new(Metrics::new());
    let committer = Committer::spawn(store.clone(), &tracker, Pacing::default(), metrics.clone());
    let boards = Boards::new(
        store.clone(),
        committer,
        RegistryConfig::default(),
        tracker.clone(),
        shutdown.clone(),
        metrics.clone(),
        crate::cluster::Cluster::single(),
    );
    let sessions = Arc::new(Sessions::new(SessionDeps {
        boards,
        store: store.clone(),
        auth,
        limits: Limits::default(),
        metrics: metrics.clone(),
        tracker,
        shutdown: shutdown.clone(),
    }));
    Server {
        sessions,
        store,
        metrics,
        shutdown,
    }
}

fn keys() -> Keys {
    Keys::new(&Secret::new(b"a test secret of at least thirty-two bytes").unwrap())
}

fn token(keys: &Keys, board: &str, role: Role) -> String {
    keys.mint(&TokenRequest {
        user: Some("tester".into()),
        scope: Scope::parse(board).unwrap(),
        role,
        ttl: Duration::from_secs(3600),
    })
    .unwrap()
    .token
}

/// The client's ends of a session's stream and sink.
struct Client {
    /// What the client sends; dropping it ends the session's stream.
    to_server: Option<mpsc::Sender<Result<Message, String>>>,
    from_server: mpsc::Receiver<Message>,
    session: JoinHandle<()>,
}

type ChannelStream = std::pin::Pin<Box<dyn Stream<Item = Result<Message, String>> + Send>>;
type ChannelSink = std::pin::Pin<Box<dyn Sink<Message, Error = &'static str> + Send>>;

/// A session's stream and sink over channels, with the client's ends: what it sends, and
/// what the session writes.
pub(super) fn channel_socket() -> (
    mpsc::Sender<Result<Message, String>>,
    ChannelStream,
    ChannelSink,
    mpsc::Receiver<Message>,
) {
    let (to_server, incoming) = mpsc::channel(64);
    let stream = Box::pin(futures_util::stream::unfold(
        incoming,
        |mut rx| async move { rx.recv().await.map(|message| (message, rx)) },
    ));
    let (outgoing, from_server) = mpsc::channel(1024);
    let sink = Box::pin(futures_util::sink::unfold(
        outgoing,
        |tx: mpsc::Sender<Message>, message: Message| async move {
            tx.send(message)
                .await
                .map(|()| tx)
                .map_err(|_| "client gone")
        },
    ));
    (to_server, stream, sink, from_server)
}

fn connect(server: &Server, board: &str, token: Option<&str>) -> Client {
    let (to_server, stream, sink, from_server) = channel_socket();
    let admission = server.sessions.admit(board, token, PEER);
    let session = tokio::spawn(
        server
            .sessions
            .clone()
            .serve(stream, sink, admission, false, board, "test"),
    );
    Client {
        to_server: Some(to_server),
        from_server,
        session,
    }
}

impl Client {
    async fn send(&self, message: Message) {
        let tx = self.to_server.as_ref().unwrap();
        tx.send(Ok(message)).await.unwrap();
    }

    async fn next(&mut self) -> Message {
        tokio::time::timeout(WAIT, self.from_server.recv())
            .await
            .expect("the server sent nothing in time")
            .expect("the session's sink was dropped")
    }

    /// The next binary frame for which `wanted` holds, skipping any other.
    async fn frame(&mut self, wanted: impl Fn(&[u8]) -> bool) -> Bytes {
        loop {
            match self.next().await {
                Message::Binary(frame) if wanted(&frame) => return frame,
                Message::Close(close) => panic!("closed instead: {close:?}"),
                _ => {}
            }
        }
    }

    /// The close frame's code and reason, skipping anything before it.
    async fn close_frame(&mut self) -> (u16, String) {
        loop {
            if let Message::Close(close) = self.next().await {
                let close = close.unwrap();
                return (close.code.into(), close.reason.as_str().to_owned());
            }
        }
    }

    /// Hangs up, and waits for the session to end.
    async fn hang_up(mut self) {
        self.to_server = None;
        tokio::time::timeout(WAIT, self.session)
            .await
            .expect("the session did not end")
            .unwrap();
    }
}

fn is_sync(sub: u8) -> impl Fn(&[u8]) -> bool {
    move |frame| frame.starts_with(&[0, sub])
}

fn errors(metrics: &Metrics, kind: &str) -> String {
    let text = metrics.render();
    let series = format!("sync_errors_total{{kind=\"{kind}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .unwrap_or("absent")
        .to_owned()
}

/// A Yjs update that adds one key to the board's `meta` map.
fn content() -> Vec<u8> {
    let doc = Doc::new();
    let meta = doc.get_or_insert_map("meta");
    meta.insert(&mut doc.transact_mut(), "title", "hello");
    doc.transact()
        .encode_state_as_update_v1(&StateVector::default())
}

#[tokio::test]
async fn a_sync_handshake_reaches_step_one_and_step_two() {
    let server = server(Auth::Open).await;
    let mut client = connect(&server, "handshake", None);
    // Joining, the board sends its sync step 1.
    client.frame(is_sync(0)).await;
    // The client's step 1 is answered with step 2.
    client
        .send(Message::Binary(protocol::sync_step1(
            &StateVector::default(),
        )))
        .await;
    client.frame(is_sync(1)).await;
    client.hang_up().await;
    assert_eq!(server.metrics.connections.get(), 0);
}

#[tokio::test]
async fn malformed_frames_close_with_their_codes() {
    let server = server(Auth::Open).await;
    let cases = [
        (
            Message::Binary(Bytes::from_static(&[0x7f, 1, 2])),
            Refusal::NotAMessage,
        ),
        (Message::Text("hello".into()), Refusal::TextFrame),
        (
            Message::Binary(protocol::update(&[0xff, 0xff, 0xff])),
            Refusal::UpdateUndecodable,
        ),
    ];
    for (frame, refusal) in cases {
        let mut client = connect(&server, "malformed", None);
        client.frame(is_sync(0)).await;
        client.send(frame).await;
        assert_eq!(
            client.close_frame().await,
            (refusal.close_code(), refusal.reason().to_owned())
        );
        client.hang_up().await;
    }
    assert_eq!(errors(&server.metrics, "bad_message"), "2");
    assert_eq!(errors(&server.metrics, "bad_update"), "1");
}

#[tokio::test]
async fn read_only_content_gets_the_permission_notice_and_the_connection_stays() {
    let keys = keys();
    let server = server(Auth::Tokens(Box::new(keys.clone()))).await;
    let board = BoardId::parse("read-only").unwrap();
    server.store.create_board(&board).await.unwrap();
    let read = token(&keys, "read-only", Role::Read);
    let mut client = connect(&server, "read-only", Some(&read));
    client.frame(is_sync(0)).await;
    client
        .send(Message::Binary(protocol::update(&content())))
        .await;
    let notice = protocol::permission_denied(READ_ONLY_REASON);
    client.frame(|f| f == notice.as_ref()).await;
    // Still connected: its step 1 is answered, and nothing of its update is there.
    client
        .send(Message::Binary(protocol::sync_step1(
            &StateVector::default(),
        )))
        .await;
    let step2 = client.frame(is_sync(1)).await;
    assert!(
        !step2.windows(5).any(|w| w == b"hello"),
        "the read-only update was applied"
    );
    client.hang_up().await;
    assert_eq!(errors(&server.metrics, "read_only_update"), "1");
}

#[tokio::test]
async fn refusals_before_joining_close_with_their_codes_and_are_counted() {
    let keys = keys();
    let server = server(Auth::Tokens(Box::new(keys.clone()))).await;
    let read_missing = token(&keys, "missing", Role::Read);
    let other = token(&keys, "elsewhere", Role::Admin);
    let cases = [
        ("no-token", None, Refusal::TokenRequired),
        ("bad id!", None, Refusal::InvalidBoardId),
        (
            "missing",
            Some(read_missing.as_str()),
            Refusal::BoardNotFound,
        ),
        ("mine", Some(other.as_str()), Refusal::OtherBoard),
    ];
    for (board, token, refusal) in cases {
        let mut client = connect(&server, board, token);
        assert_eq!(
            client.close_frame().await,
            (refusal.close_code(), refusal.reason().to_owned()),
            "{board}"
        );
        client.hang_up().await;
    }
    for kind in [
        "unauthorized",
        "bad_message",
        "board_not_found",
        "forbidden",
    ] {
        assert_eq!(errors(&server.metrics, kind), "1", "{kind}");
    }
    // A read-only token never creates the board.
    let missing = BoardId::parse("missing").unwrap();
    assert!(server.store.get_board(&missing).await.unwrap().is_none());
}

#[tokio::test]
async fn shutting_down_closes_sessions_with_1012() {
    let server = server(Auth::Open).await;
    let mut client = connect(&server, "restart", None);
    client.frame(is_sync(0)).await;
    server.shutdown.cancel();
    assert_eq!(
        client.close_frame().await,
        (1012, "server restarting".to_owned())
    );
    client.hang_up().await;
}

#[test]
fn a_read_only_notice_that_does_not_fit_closes_the_connection() {
    let metrics = Metrics::new();
    let link = PeerLink::new(1, usize::MAX);
    assert!(notify_read_only(&link, &metrics));
    // The queue is full now: the next notice closes the connection as too slow.
    assert!(!notify_read_only(&link, &metrics));
    assert_eq!(link.reason(), Some(Refusal::TooSlow.close_reason()));
    assert_eq!(errors(&metrics, "too_slow"), "1");
}

/// A session's future lives as long as its connection, so its size is paid by every idle
/// connection: each step that runs once (joining, refusing, leaving), each wait that is rare
/// (a full inbox, a throttled or over-budget connection) is a boxed future of its own, and
/// one timer serves both deadlines. It was 1,824 bytes here before (BENCHMARKS.md, idle).
#[tokio::test]
async fn a_session_future_stays_small() {
    let server = server(Auth::Open).await;
    let (_to_server, stream, sink, _from_server) = channel_socket();
    let admission = server.sessions.admit("small", None, PEER);
    let session = super::session::run(server.sessions.clone(), stream, sink, admission, 1, false);
    let size = std::mem::size_of_val(&session);
    assert!(size <= 1500, "a session's future is {size} bytes");
}
