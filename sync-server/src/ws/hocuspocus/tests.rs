//! Hocuspocus sessions through channels (no listener, no handshake) on paused time: token
//! deadlines, asked for ahead of expiry and enforced at it. And PROTOCOL.md's table of the
//! reasons a document is refused, against the session's.

#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use yrs::encoding::write::Write;

use super::frame;
use crate::auth::token::TokenRequest;
use crate::auth::{Auth, Keys, Role, Scope, Secret};
use crate::board::registry::{Boards, RegistryConfig};
use crate::commit::{Committer, Pacing};
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::ws::{SessionDeps, Sessions};

const PEER: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const BOARD: &str = "hp-unit";

fn keys() -> Keys {
    Keys::new(&Secret::new(b"a test secret of at least thirty-two bytes").unwrap())
}

fn token(keys: &Keys, role: Role, ttl: Duration) -> String {
    keys.mint(&TokenRequest {
        user: Some("tester".into()),
        scope: Scope::parse(BOARD).unwrap(),
        role,
        ttl,
    })
    .unwrap()
    .token
}

async fn sessions(keys: &Keys) -> Arc<Sessions> {
    let store = crate::storage::open("memory:", &Default::default())
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
    Arc::new(Sessions::new(SessionDeps {
        boards,
        store,
        auth: Auth::Tokens(Box::new(keys.clone())),
        // Silence never closes these sockets: the tests skip hours of paused time.
        limits: Limits {
            read_timeout: Duration::from_secs(100_000),
            ..Limits::default()
        },
        metrics,
        tracker,
        shutdown,
    }))
}

/// The client's ends of a socket.
struct Client {
    to_server: mpsc::Sender<Result<Message, String>>,
    from_server: mpsc::Receiver<Message>,
}

fn connect(sessions: &Arc<Sessions>) -> Client {
    let (to_server, stream, sink, from_server) = crate::ws::tests::channel_socket();
    let admission = sessions.admit_socket(PEER);
    tokio::spawn(
        sessions
            .clone()
            .serve_hocuspocus(stream, sink, admission, "test"),
    );
    Client {
        to_server,
        from_server,
    }
}

impl Client {
    async fn send(&self, frame: Bytes) {
        self.to_server
            .send(Ok(Message::Binary(frame)))
            .await
            .unwrap();
    }

    async fn auth(&self, token: &str) {
        let mut body = vec![2, 0];
        body.write_string(token);
        self.send(frame::prefixed(&frame::prefix(BOARD), &body))
            .await;
    }

    /// The next message other than a ping.
    async fn next(&mut self) -> Message {
        loop {
            match self.from_server.recv().await.expect("the session ended") {
                Message::Binary(f) if f[..] == [9] => {}
                other => return other,
            }
        }
    }

    /// Skips messages until `frame` arrives; panics on a close first.
    async fn expect(&mut self, frame: Bytes) {
        loop {
            match self.next().await {
                Message::Binary(f) if f == frame => return,
                Message::Close(c) => panic!("closed while waiting for {frame:?}: {c:?}"),
                _ => {}
            }
        }
    }

    async fn expect_close(&mut self) -> u16 {
        loop {
            if let Message::Close(Some(c)) = self.next().await {
                return c.code.into();
            }
        }
    }
}

/// Ahead of its token's expiry (a minute ahead, or half its life) a document's provider is
/// asked for a fresh token; not renewed, the document is refused at the expiry, and a socket
/// with nothing else open closes with 4401.
#[tokio::test(start_paused = true)]
async fn a_document_not_renewed_is_refused_at_its_tokens_expiry() {
    let keys = keys();
    let sessions = sessions(&keys).await;
    let mut client = connect(&sessions);
    client
        .auth(&token(&keys, Role::Write, Duration::from_secs(600)))
        .await;
    client.expect(frame::authenticated(BOARD, false)).await;
    let asked = tokio::time::Instant::now();
    client.expect(frame::token_request(BOARD)).await;
    let ahead = Duration::from_secs(600) - asked.elapsed();
    assert!(
        ahead <= Duration::from_secs(61) && ahead >= Duration::from_secs(59),
        "asked {ahead:?} before the expiry"
    );
    client
        .expect(frame::permission_denied(BOARD, "token expired"))
        .await;
    assert_eq!(client.expect_close().await, 4401);
}

/// A fresh token answering the request keeps the document open past the first token's expiry,
/// with the new token's scope; a fresh token for another user is refused.
#[tokio::test(start_paused = true)]
async fn a_renewed_token_keeps_the_document_open() {
    let keys = keys();
    let sessions = sessions(&keys).await;
    let mut client = connect(&sessions);
    client
        .auth(&token(&keys, Role::Write, Duration::from_secs(30)))
        .await;
    client.expect(frame::authenticated(BOARD, false)).await;
    client.expect(frame::token_request(BOARD)).await;
    // Renewed read-only: the scope follows the token.
    client
        .auth(&token(&keys, Role::Read, Duration::from_secs(3600)))
        .await;
    client.expect(frame::authenticated(BOARD, true)).await;
    tokio::time::sleep(Duration::from_secs(120)).await;
    // Still open: a read-only document's edit is refused with SyncStatus 0, not a denial.
    let doc = yrs::Doc::new();
    let update = {
        use yrs::{Map, Transact};
        let map = doc.get_or_insert_map("objects");
        let mut txn = doc.transact_mut();
        map.insert(&mut txn, "k", 1);
        txn.encode_update_v1()
    };
    let body = crate::protocol::update(&update);
    client
        .send(frame::prefixed(&frame::prefix(BOARD), &body))
        .await;
    client.expect(frame::sync_status(BOARD, false)).await;
    // A token for another user is not a renewal.
    let other = keys
        .mint(&TokenRequest {
            user: Some("someone else".into()),
            scope: Scope::parse(BOARD).unwrap(),
            role: Role::Write,
            ttl: Duration::from_secs(3600),
        })
        .unwrap()
        .token;
    client.auth(&other).await;
    client
        .expect(frame::permission_denied(BOARD, "invalid token"))
        .await;
}

/// PROTOCOL.md's "Refusing a document" table gives every reason the session refuses a document
/// for, and no other.
#[test]
fn protocol_md_lists_every_denial_reason() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../PROTOCOL.md");
    let doc = std::fs::read_to_string(path).unwrap();
    let start = doc
        .find("\n### Refusing a document\n")
        .expect("PROTOCOL.md has a `### Refusing a document` section");
    let section = &doc[start + 1..];
    let section = &section[..section[4..].find("\n#").map_or(section.len(), |i| i + 4)];
    let documented: Vec<&str> = section
        .lines()
        .filter(|l| l.starts_with("| `"))
        .filter_map(|l| l.split('`').nth(1))
        .collect();
    let mut expected: Vec<&str> = super::session::DENIALS.iter().map(|r| r.reason()).collect();
    let mut got = documented.clone();
    expected.sort_unstable();
    got.sort_unstable();
    assert_eq!(got, expected, "PROTOCOL.md's denial table: {documented:?}");
}
