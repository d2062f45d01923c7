//! The actor with a committer the test plays: what waits on a commit, and eviction, without a
//! socket or a server.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use yrs::{GetString, Text, Transact};

use super::super::BoardConfig;
use super::super::link::PeerLink;
use super::super::registry::{Boards, RegistryConfig};
use super::*;
use crate::commit::Committer;
use crate::metrics::Metrics;
use crate::storage::{StorageOptions, open};

const WAIT: Duration = Duration::from_secs(5);
const IDLE: Duration = Duration::from_millis(20);

struct Harness {
    boards: Boards,
    commits: UnboundedReceiver<CommitRequest>,
    metrics: Arc<Metrics>,
    id: BoardId,
}

async fn harness() -> Harness {
    let store = open("memory:", &StorageOptions::default()).await.unwrap();
    let (committer, commits) = Committer::manual();
    let metrics = Arc::new(Metrics::new());
    let config = RegistryConfig {
        board: BoardConfig {
            idle_timeout: IDLE,
            ..BoardConfig::default()
        },
    };
    let boards = Boards::new(
        store,
        committer,
        config,
        TaskTracker::new(),
        CancellationToken::new(),
        metrics.clone(),
        crate::cluster::Cluster::single(),
    );
    Harness {
        boards,
        commits,
        metrics,
        id: BoardId::parse("actor-test").unwrap(),
    }
}

fn text_update(s: &str) -> Vec<u8> {
    let doc = yrs::Doc::new();
    let text = doc.get_or_insert_text("t");
    let mut txn = doc.transact_mut();
    text.insert(&mut txn, 0, s);
    txn.encode_update_v1()
}

impl Harness {
    /// Sends an HTTP update; returns its reply.
    async fn update(&self, s: &str) -> oneshot::Receiver<Result<(), BoardError>> {
        let (reply, rx) = oneshot::channel();
        let cmd = BoardCmd::HttpUpdate {
            raw: text_update(s),
            reply,
        };
        self.boards
            .handle(&self.id)
            .unwrap()
            .send(cmd)
            .await
            .unwrap();
        rx
    }

    async fn next_commit(&mut self) -> CommitRequest {
        tokio::time::timeout(WAIT, self.commits.recv())
            .await
            .expect("a commit is submitted")
            .unwrap()
    }

    fn evictions(&self) -> u64 {
        self.metrics.evictions.get()
    }
}

async fn answered<T>(rx: oneshot::Receiver<T>) -> T {
    tokio::time::timeout(WAIT, rx).await.unwrap().unwrap()
}

async fn still_waiting<T: std::fmt::Debug>(rx: &mut oneshot::Receiver<T>) {
    tokio::time::sleep(IDLE * 5).await;
    assert!(
        matches!(rx.try_recv(), Err(oneshot::error::TryRecvError::Empty)),
        "answered before its commit"
    );
}

#[tokio::test]
async fn a_board_with_a_commit_in_flight_is_not_evicted_until_it_is_answered() {
    let mut h = harness().await;
    let mut reply = h.update("a").await;
    let commit = h.next_commit().await;
    still_waiting(&mut reply).await;
    assert_eq!(h.evictions(), 0, "evicted with a commit in flight");

    commit.reply.send(Ok(1)).unwrap();
    answered(reply).await.unwrap();
    tokio::time::timeout(WAIT, async {
        while h.evictions() == 0 {
            tokio::time::sleep(IDLE).await;
        }
    })
    .await
    .expect("evicted once idle and quiescent");
}

#[tokio::test]
async fn a_read_waits_for_the_commit_and_later_updates_wait_for_the_read() {
    let mut h = harness().await;
    let first = h.update("a").await;
    let commit = h.next_commit().await;

    let (reply, mut state) = oneshot::channel();
    let handle = h.boards.handle(&h.id).unwrap();
    handle
        .send(BoardCmd::Read(Read::State { reply }))
        .await
        .unwrap();
    let mut second = h.update("b").await;
    still_waiting(&mut state).await;
    assert!(
        h.commits.try_recv().is_err(),
        "an update behind a waiting read was applied"
    );

    commit.reply.send(Ok(1)).unwrap();
    answered(first).await.unwrap();
    let state = answered(state).await.unwrap();
    let doc = yrs::Doc::new();
    doc.transact_mut()
        .apply_update(Update::decode_v1(&state).unwrap())
        .unwrap();
    let text = doc.get_or_insert_text("t");
    assert_eq!(
        text.get_string(&doc.transact()),
        "a",
        "the read saw only durable state"
    );

    // Then the held-back update goes out.
    let commit = h.next_commit().await;
    still_waiting(&mut second).await;
    commit.reply.send(Ok(2)).unwrap();
    answered(second).await.unwrap();
}

#[tokio::test]
async fn a_failed_commit_fails_it_and_everything_after_it_then_the_board_reloads() {
    let mut h = harness().await;
    let first = h.update("a").await;
    let second = h.update("b").await;
    let c1 = h.next_commit().await;
    let c2 = h.next_commit().await;
    c1.reply
        .send(Err(Arc::new(StorageError::BoardNotFound(h.id.clone()))))
        .unwrap();
    assert!(matches!(
        answered(first).await,
        Err(BoardError::CommitFailed)
    ));
    // The batch in flight after it is settled by its own answer: stored here.
    c2.reply.send(Ok(2)).unwrap();
    answered(second).await.unwrap();
    // The next command reaches a new actor, which loads the board again.
    let third = h.update("c").await;
    let c3 = h.next_commit().await;
    c3.reply.send(Ok(3)).unwrap();
    answered(third).await.unwrap();
}

impl Harness {
    /// Joins connection `conn` (no step 1 of the board's, no acknowledgements); returns its
    /// link.
    async fn join(&self, conn: ConnId) -> PeerLink {
        let link = PeerLink::new(16, 1 << 20);
        let (reply, rx) = oneshot::channel();
        let cmd = BoardCmd::Join {
            conn,
            link: link.clone().into(),
            wants: super::super::peer::Wants {
                acks: false,
                stateless: false,
                step1_on_join: false,
            },
            identity: super::super::presence::Identity::Open,
            reply,
        };
        self.boards
            .handle(&self.id)
            .unwrap()
            .send(cmd)
            .await
            .unwrap();
        answered(rx).await.unwrap();
        link
    }

    /// Sends connection `conn`'s sync step 1 with state vector `sv`.
    async fn step1(&self, conn: ConnId, sv: StateVector) {
        let read = Read::SyncStep1 {
            conn,
            sv,
            answer: Step1Answer::Step2,
        };
        self.boards
            .handle(&self.id)
            .unwrap()
            .send(BoardCmd::Read(read))
            .await
            .unwrap();
    }
}

/// The one frame queued on `link` next.
async fn next_frame(link: &PeerLink) -> Bytes {
    let mut frames = tokio::time::timeout(WAIT, link.next_batch())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(frames.len(), 1, "one frame queued");
    frames.pop_front().unwrap()
}

/// The text `t` of the doc a sync step 2 frame brings.
fn step2_text(frame: &[u8]) -> String {
    let yrs::sync::Message::Sync(yrs::sync::SyncMessage::SyncStep2(update)) =
        yrs::sync::Message::decode_v1(frame).unwrap()
    else {
        panic!("not a sync step 2");
    };
    let doc = yrs::Doc::new();
    doc.transact_mut()
        .apply_update(Update::decode_v1(&update).unwrap())
        .unwrap();
    let text = doc.get_or_insert_text("t");
    text.get_string(&doc.transact())
}

#[tokio::test]
async fn joiners_with_nothing_share_one_full_state_frame_until_the_doc_changes() {
    let mut h = harness().await;
    let first = h.update("a").await;
    h.next_commit().await.reply.send(Ok(1)).unwrap();
    answered(first).await.unwrap();

    // Three connections join with empty state vectors: one encoding, shared.
    let mut links = Vec::new();
    for conn in 1..=3 {
        links.push(h.join(conn).await);
        h.step1(conn, StateVector::default()).await;
    }
    let mut frames = Vec::new();
    for link in &links {
        frames.push(next_frame(link).await);
    }
    assert_eq!(step2_text(&frames[0]), "a");
    for f in &frames[1..] {
        assert_eq!(f, &frames[0]);
        assert_eq!(f.as_ptr(), frames[0].as_ptr(), "a copy per joiner");
    }
    // A joiner that holds something gets its own diff.
    let partial = h.join(4).await;
    let mut sv = StateVector::default();
    sv.set_max(yrs::block::ClientID::new(7), 1);
    h.step1(4, sv).await;
    assert_ne!(next_frame(&partial).await.as_ptr(), frames[0].as_ptr());

    // The doc changes: the next empty joiner sees the change, in a frame of its own.
    let second = h.update("b").await;
    h.next_commit().await.reply.send(Ok(2)).unwrap();
    answered(second).await.unwrap();
    let late = h.join(5).await;
    h.step1(5, StateVector::default()).await;
    // Updates queued to the others meanwhile are not its concern; its link holds the step 2.
    let frame = next_frame(&late).await;
    assert_ne!(
        frame.as_ptr(),
        frames[0].as_ptr(),
        "a stale frame was reused"
    );
    let text = step2_text(&frame);
    assert!(text.contains('a') && text.contains('b'), "{text}");
}
