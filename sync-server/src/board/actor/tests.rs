//! The actor with a committer the test plays: what waits on a commit, and eviction, without a
//! socket or a server.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use yrs::{GetString, Text, Transact};

use super::super::BoardConfig;
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
