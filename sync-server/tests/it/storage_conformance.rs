//! One storage conformance suite, run against every backend: in-memory, SQLite and PostgreSQL
//! (`TEST_DATABASE_URL`; required under `CI=true`, skipped with a message otherwise), and
//! against SQLite seen through `storage::layered::Layered`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use harness::docs::{board_updates, doc_json, doc_state, doc_state_vector};
use harness::fixture::Fixture;
use sync_server::ids::{BoardId, VersionId};
use sync_server::storage::compaction::compact_board;
use sync_server::storage::replay::{ReplayError, RowRef, replay_into};
use sync_server::storage::{
    Backend, NewRun, NewSnapshot, NewUpdate, NewVersion, RunRecord, RunResult, RunState,
    StorageError, StoredBoard, VersionKind,
};
use yrs::Doc;

fn board(id: &str) -> BoardId {
    BoardId::parse(id).unwrap()
}

fn replay(stored: &StoredBoard) -> Doc {
    let doc = Doc::new();
    replay_into(&doc, stored).unwrap();
    doc
}

async fn append_each(fx: &Fixture, id: &BoardId, updates: &[Vec<u8>]) -> Vec<i64> {
    let batch: Vec<NewUpdate<'_>> = updates
        .iter()
        .map(|data| NewUpdate { board: id, data })
        .collect();
    fx.store.append(&batch).await.unwrap()
}

/// What is appended comes back, byte for byte, in order, and rebuilds the same document.
async fn round_trip(fx: Fixture) {
    let id = board("round-trip");
    let info = fx.store.create_board(&id).await.unwrap();
    assert_eq!(info.last_seq, 0);
    let (doc, updates) = board_updates(200);
    // In batches of varied size, as group commit would send them.
    let mut seqs = Vec::new();
    for chunk in updates.chunks(17) {
        seqs.extend(append_each(&fx, &id, chunk).await);
    }
    assert_eq!(seqs, (1..=updates.len() as i64).collect::<Vec<_>>());

    let stored = fx.reopen().await.load(&id).await.unwrap();
    assert_eq!(stored.info.last_seq, updates.len() as i64);
    assert!(stored.snapshot.is_none());
    let data: Vec<&Vec<u8>> = stored.updates.iter().map(|u| &u.data).collect();
    assert_eq!(data, updates.iter().collect::<Vec<_>>());
    let rebuilt = replay(&stored);
    assert_eq!(doc_json(&rebuilt), doc_json(&doc));
    assert_eq!(doc_state_vector(&rebuilt), doc_state_vector(&doc));
    fx.finish().await;
}

/// One batch may mix boards; each board numbers its updates consecutively, in input order.
async fn order(fx: Fixture) {
    let (a, b) = (board("order-a"), board("order-b"));
    fx.store.create_board(&a).await.unwrap();
    fx.store.create_board(&b).await.unwrap();
    let payloads: Vec<Vec<u8>> = (0..6u8).map(|i| vec![i; 3]).collect();
    let batch = [
        NewUpdate {
            board: &a,
            data: &payloads[0],
        },
        NewUpdate {
            board: &b,
            data: &payloads[1],
        },
        NewUpdate {
            board: &a,
            data: &payloads[2],
        },
        NewUpdate {
            board: &a,
            data: &payloads[3],
        },
        NewUpdate {
            board: &b,
            data: &payloads[4],
        },
    ];
    assert_eq!(fx.store.append(&batch).await.unwrap(), vec![1, 1, 2, 3, 2]);
    let more = [NewUpdate {
        board: &b,
        data: &payloads[5],
    }];
    assert_eq!(fx.store.append(&more).await.unwrap(), vec![3]);
    assert_eq!(fx.store.append(&[]).await.unwrap(), Vec::<i64>::new());

    let rows = |s: StoredBoard| -> Vec<(i64, u8)> {
        s.updates.iter().map(|u| (u.seq, u.data[0])).collect()
    };
    assert_eq!(
        rows(fx.store.load(&a).await.unwrap()),
        vec![(1, 0), (2, 2), (3, 3)]
    );
    assert_eq!(
        rows(fx.store.load(&b).await.unwrap()),
        vec![(1, 1), (2, 4), (3, 5)]
    );
    assert_eq!(fx.store.get_board(&b).await.unwrap().unwrap().last_seq, 3);
    fx.finish().await;
}

/// 50 writers appending to 10 boards at once lose nothing and duplicate nothing, and each
/// writer's updates to a board keep their order.
async fn concurrent_appenders(fx: Fixture) {
    const WRITERS: usize = 50;
    const BATCHES: usize = 8;
    let boards: Vec<BoardId> = (0..10).map(|i| board(&format!("busy-{i}"))).collect();
    for b in &boards {
        fx.store.create_board(b).await.unwrap();
    }
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = fx.store.clone();
        let boards = boards.clone();
        tasks.push(tokio::spawn(async move {
            for batch_no in 0..BATCHES {
                // Each batch touches 1 to 3 boards with 1 to 4 updates.
                let items: Vec<(BoardId, Vec<u8>)> = (0..1 + (w + batch_no) % 4)
                    .map(|k| {
                        let b = boards[(w + batch_no * 3 + k) % boards.len()].clone();
                        (b, format!("w{w}-b{batch_no}-k{k}").into_bytes())
                    })
                    .collect();
                let batch: Vec<NewUpdate<'_>> = items
                    .iter()
                    .map(|(board, data)| NewUpdate { board, data })
                    .collect();
                let seqs = store.append(&batch).await.unwrap();
                assert_eq!(seqs.len(), batch.len());
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }

    let mut expected: BTreeMap<&BoardId, BTreeSet<String>> = BTreeMap::new();
    for w in 0..WRITERS {
        for batch_no in 0..BATCHES {
            for k in 0..1 + (w + batch_no) % 4 {
                let b = &boards[(w + batch_no * 3 + k) % boards.len()];
                expected
                    .entry(b)
                    .or_default()
                    .insert(format!("w{w}-b{batch_no}-k{k}"));
            }
        }
    }
    for b in &boards {
        let stored = fx.store.load(b).await.unwrap();
        let n = stored.updates.len() as i64;
        let seqs: Vec<i64> = stored.updates.iter().map(|u| u.seq).collect();
        assert_eq!(seqs, (1..=n).collect::<Vec<_>>(), "{b}: gaps or duplicates");
        assert_eq!(stored.info.last_seq, n);
        let got: Vec<String> = stored
            .updates
            .iter()
            .map(|u| String::from_utf8(u.data.clone()).unwrap())
            .collect();
        let unique: BTreeSet<String> = got.iter().cloned().collect();
        assert_eq!(unique.len(), got.len(), "{b}: an update was stored twice");
        assert_eq!(&unique, &expected[b], "{b}: an update was lost");
        // Per writer, batch numbers never go backwards within a board.
        let mut last_batch: BTreeMap<&str, usize> = BTreeMap::new();
        for s in &got {
            let (writer, rest) = s.split_once("-b").unwrap();
            let batch_no: usize = rest.split_once("-k").unwrap().0.parse().unwrap();
            let prev = last_batch.insert(writer, batch_no).unwrap_or(0);
            assert!(prev <= batch_no, "{b}: {writer}'s updates out of order");
        }
    }
    fx.finish().await;
}

/// Loading before and after compaction gives the same document, byte for byte; appends after
/// a compaction land after the snapshot; a second compaction folds them in too.
async fn compaction_keeps_the_board(fx: Fixture) {
    let id = board("compact");
    fx.store.create_board(&id).await.unwrap();
    let (doc, updates) = board_updates(300);
    append_each(&fx, &id, &updates[..250]).await;
    let before = replay(&fx.store.load(&id).await.unwrap());

    let stats = compact_board(fx.store.as_ref(), &id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stats.snapshot_seq, 250);
    assert_eq!(stats.rows_deleted, 250);
    let stored = fx.reopen().await.load(&id).await.unwrap();
    assert_eq!(stored.snapshot.as_ref().unwrap().seq, 250);
    assert!(stored.updates.is_empty());
    let after = replay(&stored);
    assert_eq!(doc_state(&after), doc_state(&before));
    assert_eq!(doc_json(&after), doc_json(&before));

    assert_eq!(append_each(&fx, &id, &updates[250..]).await[0], 251);
    let stored = fx.store.load(&id).await.unwrap();
    assert_eq!(stored.updates.first().unwrap().seq, 251);
    let mid = replay(&stored);
    assert_eq!(doc_json(&mid), doc_json(&doc));
    assert_eq!(
        compact_board(fx.store.as_ref(), &id)
            .await
            .unwrap()
            .unwrap()
            .snapshot_seq,
        300
    );
    assert!(
        compact_board(fx.store.as_ref(), &id)
            .await
            .unwrap()
            .is_none()
    );
    let last = replay(&fx.store.load(&id).await.unwrap());
    assert_eq!(doc_state(&last), doc_state(&mid));
    assert_eq!(doc_state_vector(&last), doc_state_vector(&doc));
    fx.finish().await;
}

/// A compaction staged and then dropped before commit leaves the board exactly as it was, and
/// releases whatever it held so writing and compacting work afterwards.
async fn dropped_compaction_changes_nothing(fx: Fixture) {
    let id = board("dropped");
    fx.store.create_board(&id).await.unwrap();
    let (_, updates) = board_updates(60);
    append_each(&fx, &id, &updates[..40]).await;
    let before = fx.store.load(&id).await.unwrap();

    let pending = fx
        .store
        .begin_compaction(
            &id,
            NewSnapshot {
                upto: 40,
                data: b"not committed",
            },
        )
        .await
        .unwrap();
    if !fx.is_memory() {
        // Another connection does not see the staged writes.
        assert_eq!(fx.reopen().await.load(&id).await.unwrap(), before);
    }
    drop(pending);
    assert_eq!(fx.store.load(&id).await.unwrap(), before);

    assert_eq!(append_each(&fx, &id, &updates[40..]).await[0], 41);
    let stats = compact_board(fx.store.as_ref(), &id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((stats.snapshot_seq, stats.rows_deleted), (60, 60));
    fx.finish().await;
}

/// Compactions that would not move the board forward are refused and change nothing.
async fn stale_compaction_is_refused(fx: Fixture) {
    let id = board("stale");
    fx.store.create_board(&id).await.unwrap();
    let (_, updates) = board_updates(10);
    append_each(&fx, &id, &updates).await;
    let beyond = fx
        .store
        .begin_compaction(
            &id,
            NewSnapshot {
                upto: 11,
                data: b"x",
            },
        )
        .await
        .map(drop);
    assert!(matches!(
        beyond,
        Err(StorageError::StaleCompaction {
            upto: 11,
            last_seq: 10,
            ..
        })
    ));
    compact_board(fx.store.as_ref(), &id).await.unwrap();
    let snapshot = fx.store.load(&id).await.unwrap();
    for upto in [5, 10] {
        let r = fx
            .store
            .begin_compaction(&id, NewSnapshot { upto, data: b"x" })
            .await
            .map(drop);
        assert!(matches!(
            r,
            Err(StorageError::StaleCompaction {
                snapshot_seq: 10,
                ..
            })
        ));
    }
    assert_eq!(fx.store.load(&id).await.unwrap(), snapshot);
    let missing = fx
        .store
        .begin_compaction(
            &board("nope"),
            NewSnapshot {
                upto: 1,
                data: b"x",
            },
        )
        .await
        .map(drop);
    assert!(matches!(missing, Err(StorageError::BoardNotFound(_))));
    fx.finish().await;
}

/// Appends racing a compaction all survive it.
async fn compaction_races_appends(fx: Fixture) {
    let id = board("race");
    fx.store.create_board(&id).await.unwrap();
    let (doc, updates) = board_updates(400);
    append_each(&fx, &id, &updates[..200]).await;
    let store = fx.store.clone();
    let rest = updates[200..].to_vec();
    let writer = {
        let id = id.clone();
        tokio::spawn(async move {
            for u in &rest {
                store
                    .append(&[NewUpdate {
                        board: &id,
                        data: u,
                    }])
                    .await
                    .unwrap();
            }
        })
    };
    for _ in 0..3 {
        compact_board(fx.store.as_ref(), &id).await.unwrap();
        tokio::task::yield_now().await;
    }
    writer.await.unwrap();
    let stored = fx.store.load(&id).await.unwrap();
    assert_eq!(stored.info.last_seq, 400);
    assert_eq!(doc_json(&replay(&stored)), doc_json(&doc));
    fx.finish().await;
}

/// Boards: create, refuse duplicates, ensure, list in id order with paging, delete with
/// everything they hold; a batch naming a missing board writes nothing at all.
async fn boards_and_delete(fx: Fixture) {
    let ids: Vec<BoardId> = ["b-3", "b-1", "a.9", "b-2"]
        .iter()
        .map(|s| board(s))
        .collect();
    for id in &ids {
        fx.store.create_board(id).await.unwrap();
    }
    assert!(matches!(
        fx.store.create_board(&ids[0]).await,
        Err(StorageError::BoardExists(b)) if b == ids[0]
    ));
    let ensured = fx.store.ensure_board(&ids[0]).await.unwrap();
    assert_eq!(ensured.id, ids[0]);
    let fresh = fx.store.ensure_board(&board("c")).await.unwrap();
    assert_eq!(fresh.last_seq, 0);

    let page1 = fx.store.list_boards(None, 3).await.unwrap();
    let names = |v: &[sync_server::storage::BoardInfo]| -> Vec<String> {
        v.iter().map(|b| b.id.to_string()).collect()
    };
    assert_eq!(names(&page1), ["a.9", "b-1", "b-2"]);
    let page2 = fx.store.list_boards(Some(&page1[2].id), 3).await.unwrap();
    assert_eq!(names(&page2), ["b-3", "c"]);

    let victim = &ids[1];
    let (_, updates) = board_updates(20);
    append_each(&fx, victim, &updates).await;
    compact_board(fx.store.as_ref(), victim).await.unwrap();
    append_each(&fx, victim, &updates[..3]).await;
    fx.store
        .save_version(
            victim,
            NewVersion {
                kind: VersionKind::Auto,
                label: None,
                author: None,
                reason: Some("checkpoint"),
                covers_seq: 20,
                data: b"state",
            },
        )
        .await
        .unwrap();
    assert!(fx.store.delete_board(victim).await.unwrap());
    assert!(!fx.store.delete_board(victim).await.unwrap());
    assert_eq!(fx.store.get_board(victim).await.unwrap(), None);
    assert!(
        matches!(fx.store.load(victim).await, Err(StorageError::BoardNotFound(b)) if &b == victim)
    );
    assert!(matches!(
        fx.store.list_versions(victim).await,
        Err(StorageError::BoardNotFound(_))
    ));

    // A batch naming the deleted board fails whole: the live board's update is not written.
    let live = &ids[2];
    let before = fx.store.load(live).await.unwrap();
    let batch = [
        NewUpdate {
            board: live,
            data: b"live",
        },
        NewUpdate {
            board: victim,
            data: b"gone",
        },
    ];
    assert!(
        matches!(fx.store.append(&batch).await, Err(StorageError::BoardNotFound(b)) if &b == victim)
    );
    assert_eq!(fx.store.load(live).await.unwrap(), before);

    // The id can be used again, and starts from nothing.
    let again = fx.store.create_board(victim).await.unwrap();
    assert_eq!(again.last_seq, 0);
    let stored = fx.store.load(victim).await.unwrap();
    assert!(stored.snapshot.is_none() && stored.updates.is_empty());
    assert!(fx.store.list_versions(victim).await.unwrap().is_empty());
    fx.finish().await;
}

/// Versions: saved with who, when and why; listed newest first; read back whole; deleted one
/// at a time; scoped to their board.
async fn versions(fx: Fixture) {
    let (id, other) = (board("history"), board("elsewhere"));
    fx.store.create_board(&id).await.unwrap();
    fx.store.create_board(&other).await.unwrap();
    let (doc, updates) = board_updates(30);
    append_each(&fx, &id, &updates).await;
    let state = doc_state(&doc);

    let named = fx
        .store
        .save_version(
            &id,
            NewVersion {
                kind: VersionKind::Named,
                label: Some("Before the workshop"),
                author: Some("ana"),
                reason: None,
                covers_seq: 30,
                data: &state,
            },
        )
        .await
        .unwrap();
    let auto = fx
        .store
        .save_version(
            &id,
            NewVersion {
                kind: VersionKind::Auto,
                label: None,
                author: Some("server"),
                reason: Some("before restore"),
                covers_seq: 30,
                data: b"\x00\x00",
            },
        )
        .await
        .unwrap();
    assert!(auto.id > named.id);
    assert_eq!(named.size, state.len() as u64);
    assert!(
        named.created_at > 1_700_000_000_000,
        "created_at is Unix milliseconds"
    );

    let listed = fx.reopen().await.list_versions(&id).await.unwrap();
    assert_eq!(listed, vec![auto.clone(), named.clone()]);
    let got = fx.store.get_version(&id, named.id).await.unwrap().unwrap();
    assert_eq!(got.info, named);
    assert_eq!(got.data, state);
    let restored = Doc::new();
    {
        use yrs::Transact;
        use yrs::updates::decoder::Decode;
        restored
            .transact_mut()
            .apply_update(yrs::Update::decode_v1(&got.data).unwrap())
            .unwrap();
    }
    assert_eq!(doc_json(&restored), doc_json(&doc));

    // Scoped to the board: another board's id finds nothing and deletes nothing.
    assert_eq!(fx.store.get_version(&other, named.id).await.unwrap(), None);
    assert!(!fx.store.delete_version(&other, named.id).await.unwrap());
    assert_eq!(
        fx.store
            .get_version(&id, VersionId(i64::MAX))
            .await
            .unwrap(),
        None
    );

    assert!(fx.store.delete_version(&id, named.id).await.unwrap());
    assert!(!fx.store.delete_version(&id, named.id).await.unwrap());
    assert_eq!(fx.store.list_versions(&id).await.unwrap(), vec![auto]);
    assert!(matches!(
        fx.store
            .save_version(
                &board("no-such-board"),
                NewVersion {
                    kind: VersionKind::Named,
                    label: Some("x"),
                    author: None,
                    reason: None,
                    covers_seq: 0,
                    data: b"",
                }
            )
            .await,
        Err(StorageError::BoardNotFound(_))
    ));
    fx.finish().await;
}

/// A corrupt blob fails that board's load with an error naming the board and the row; other
/// boards load normally.
async fn corrupt_rows_are_named(fx: Fixture) {
    let (bad, good, bad_snap) = (board("bad"), board("good"), board("bad-snapshot"));
    for b in [&bad, &good, &bad_snap] {
        fx.store.create_board(b).await.unwrap();
    }
    let (doc, updates) = board_updates(12);
    append_each(&fx, &bad, &updates[..5]).await;
    append_each(&fx, &bad, &[vec![0xff, 0xff, 0xff, 0x01, 0x42]]).await;
    append_each(&fx, &bad, &updates[5..]).await;
    append_each(&fx, &good, &updates).await;
    append_each(&fx, &bad_snap, &updates).await;
    fx.store
        .begin_compaction(
            &bad_snap,
            NewSnapshot {
                upto: 12,
                data: &[0x07, 0x80],
            },
        )
        .await
        .unwrap()
        .commit()
        .await
        .unwrap();

    let err = replay_into(&Doc::new(), &fx.store.load(&bad).await.unwrap()).unwrap_err();
    let ReplayError::CorruptRow { board: b, row, .. } = &err;
    assert_eq!((b, *row), (&bad, RowRef::Update { seq: 6 }));
    let message = err.to_string();
    assert!(
        message.contains("`bad`") && message.contains("seq 6"),
        "{message}"
    );

    let err = replay_into(&Doc::new(), &fx.store.load(&bad_snap).await.unwrap()).unwrap_err();
    let ReplayError::CorruptRow { board: b, row, .. } = &err;
    assert_eq!((b, *row), (&bad_snap, RowRef::Snapshot { seq: 12 }));
    assert!(compact_board(fx.store.as_ref(), &bad).await.is_err());

    let fine = replay(&fx.store.load(&good).await.unwrap());
    assert_eq!(doc_json(&fine), doc_json(&doc));
    fx.finish().await;
}

/// Retention keeps the newest automatic versions and every named one.
async fn version_retention(fx: Fixture) {
    let id = board("retention");
    fx.store.create_board(&id).await.unwrap();
    let mut saved = Vec::new();
    for i in 0..7 {
        let kind = if i % 3 == 0 {
            VersionKind::Named
        } else {
            VersionKind::Auto
        };
        let v = fx
            .store
            .save_version(
                &id,
                NewVersion {
                    kind,
                    label: Some("v"),
                    author: None,
                    reason: None,
                    covers_seq: i,
                    data: b"\x00\x00",
                },
            )
            .await
            .unwrap();
        saved.push(v);
    }
    // Autos are 1, 2, 4, 5 (in save order); keeping 2 deletes 1 and 2.
    assert_eq!(fx.store.prune_versions(&id, 2).await.unwrap(), 2);
    let left: Vec<i64> = fx
        .store
        .list_versions(&id)
        .await
        .unwrap()
        .iter()
        .map(|v| v.covers_seq)
        .collect();
    assert_eq!(left, vec![6, 5, 4, 3, 0]);
    assert_eq!(fx.store.prune_versions(&id, 2).await.unwrap(), 0);
    assert_eq!(fx.store.prune_versions(&id, 0).await.unwrap(), 2);
    let kinds: Vec<VersionKind> = fx
        .store
        .list_versions(&id)
        .await
        .unwrap()
        .iter()
        .map(|v| v.kind)
        .collect();
    assert_eq!(kinds, vec![VersionKind::Named; 3]);
    fx.finish().await;
}

/// A run as the assistant starts it: by `ana`, with a unicode prompt, no version before it.
fn new_run(id: &str) -> NewRun<'_> {
    NewRun {
        id,
        user: Some("ana"),
        prompt: "Räume die Notizen auf 🧹, 整理してください",
        model: "test-model",
        before_version: None,
        // Nothing has expired: a running run of the board refuses the new one.
        expired_before: 0,
    }
}

/// A plain ending with nothing changed.
fn ended(state: RunState) -> RunResult<'static> {
    RunResult {
        state,
        error: None,
        summary: "done",
        tool_calls: "[]",
        prompt_tokens: 10,
        completion_tokens: 5,
        objects_created: 0,
        objects_deleted: 0,
        steps: 1,
        changes: b"",
    }
}

async fn run_of(fx: &Fixture, id: &BoardId, run: &str) -> RunRecord {
    fx.store.get_run(id, run).await.unwrap().unwrap()
}

async fn sleep_ms(ms: u64) {
    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
}

/// A run is recorded as started, read back whole, and finished with every field of its
/// result; run ids are unique across boards; finishing an unknown run finds nothing.
async fn runs_round_trip(fx: Fixture) {
    let (id, other) = (board("runs"), board("runs-other"));
    fx.store.create_board(&id).await.unwrap();
    fx.store.create_board(&other).await.unwrap();
    let before = fx
        .store
        .save_version(
            &id,
            NewVersion {
                kind: VersionKind::Auto,
                label: None,
                author: Some("server"),
                reason: Some("before assistant run"),
                covers_seq: 0,
                data: b"\x00\x00",
            },
        )
        .await
        .unwrap();

    let started = fx
        .store
        .start_run(
            &id,
            NewRun {
                before_version: Some(before.id),
                ..new_run("0f5e6c2a9b8d4e7f8a1b2c3d4e5f6a7b")
            },
        )
        .await
        .unwrap();
    assert_eq!(started.id, "0f5e6c2a9b8d4e7f8a1b2c3d4e5f6a7b");
    assert_eq!(started.board, id);
    assert_eq!(started.user.as_deref(), Some("ana"));
    assert_eq!(started.prompt, "Räume die Notizen auf 🧹, 整理してください");
    assert_eq!(started.model, "test-model");
    assert_eq!(started.state, RunState::Running);
    assert_eq!(started.error, None);
    assert_eq!(started.summary, "");
    assert_eq!(started.tool_calls, "[]");
    assert_eq!(
        (
            started.prompt_tokens,
            started.completion_tokens,
            started.objects_created,
            started.objects_deleted,
            started.steps
        ),
        (0, 0, 0, 0, 0)
    );
    assert!(
        started.started_at > 1_700_000_000_000,
        "started_at is Unix milliseconds"
    );
    assert_eq!(started.finished_at, None);
    assert_eq!(started.before_version, Some(before.id));
    assert!(started.changes.is_empty());
    assert_eq!(
        (started.undone_at, started.undone_by.as_deref()),
        (None, None)
    );
    let reopened = fx.reopen().await;
    assert_eq!(
        reopened.get_run(&id, &started.id).await.unwrap().as_ref(),
        Some(&started)
    );
    // Scoped to the board.
    assert_eq!(fx.store.get_run(&other, &started.id).await.unwrap(), None);
    assert_eq!(fx.store.get_run(&id, "no-such-run").await.unwrap(), None);

    // Run ids are unique across boards (on its own board, the running run refuses any other
    // first); the first run is untouched.
    let dup = fx.store.start_run(&other, new_run(&started.id)).await;
    assert!(
        matches!(dup, Err(StorageError::Database { .. })),
        "duplicate run id on {other}: {dup:?}"
    );
    assert!(fx.store.start_run(&id, new_run(&started.id)).await.is_err());
    assert_eq!(run_of(&fx, &id, &started.id).await, started);

    let changes: Vec<u8> = (0..=255u8).chain([0, 0, 0xff]).collect();
    let tool_calls = r#"[{"name":"create_sticky","args":{"text":"Ünïcödé \"quoted\" 🎯\n"}},{"name":"delete","args":{"ids":["a","b"]}}]"#;
    let result = RunResult {
        state: RunState::Capped,
        error: Some("step cap reached (8) ✋"),
        summary: "Created 7 notes — 整理完了",
        tool_calls,
        prompt_tokens: 1_234_567_890_123,
        completion_tokens: 42,
        objects_created: 7,
        objects_deleted: 3,
        steps: 8,
        changes: &changes,
    };
    assert!(fx.store.finish_run(&id, &started.id, result).await.unwrap());
    let got = reopened.get_run(&id, &started.id).await.unwrap().unwrap();
    let finished_at = got.finished_at.expect("finished_at is set");
    assert!(finished_at >= started.started_at);
    let expected = RunRecord {
        state: RunState::Capped,
        error: Some("step cap reached (8) ✋".into()),
        summary: "Created 7 notes — 整理完了".into(),
        tool_calls: tool_calls.into(),
        prompt_tokens: 1_234_567_890_123,
        completion_tokens: 42,
        objects_created: 7,
        objects_deleted: 3,
        steps: 8,
        finished_at: Some(finished_at),
        changes: changes.clone(),
        ..started.clone()
    };
    assert_eq!(got, expected);

    // A run without a user or a version before it keeps both empty.
    let anon = fx
        .store
        .start_run(
            &other,
            NewRun {
                user: None,
                ..new_run("anonymous-run")
            },
        )
        .await
        .unwrap();
    assert_eq!((anon.user.as_deref(), anon.before_version), (None, None));
    assert_eq!(
        reopened
            .get_run(&other, "anonymous-run")
            .await
            .unwrap()
            .unwrap(),
        anon
    );

    // Finishing an unknown run, or a run through another board, finds nothing.
    assert!(
        !fx.store
            .finish_run(&id, "no-such-run", ended(RunState::Completed))
            .await
            .unwrap()
    );
    assert!(
        !fx.store
            .finish_run(&other, &started.id, ended(RunState::Failed))
            .await
            .unwrap()
    );
    assert!(
        !fx.store
            .finish_run(
                &board("no-such-board"),
                &started.id,
                ended(RunState::Failed)
            )
            .await
            .unwrap()
    );
    assert_eq!(
        reopened.get_run(&id, &started.id).await.unwrap().unwrap(),
        expected
    );
    // Ended, it no longer holds its board, and its id is still taken there.
    let dup = fx.store.start_run(&id, new_run(&started.id)).await;
    assert!(
        matches!(dup, Err(StorageError::Database { .. })),
        "duplicate run id on {id}: {dup:?}"
    );
    reopened.close().await;
    fx.finish().await;
}

/// Runs are listed newest first (start time, then id), at most `limit`, per board; a missing
/// board can neither list nor start runs.
async fn runs_listed_newest_first(fx: Fixture) {
    let (id, other) = (board("listed"), board("listed-other"));
    fx.store.create_board(&id).await.unwrap();
    fx.store.create_board(&other).await.unwrap();
    assert!(fx.store.list_runs(&id, 10).await.unwrap().is_empty());

    // One run of a board at a time: each ends before the next starts (the last is running).
    let start = |run: &'static str, then: Option<RunState>| {
        let (store, id) = (fx.store.clone(), id.clone());
        async move {
            store.start_run(&id, new_run(run)).await.unwrap();
            if let Some(state) = then {
                store.finish_run(&id, run, ended(state)).await.unwrap();
            }
        }
    };
    // Start time comes before id: "b-first" is older than "a-second".
    start("b-first", Some(RunState::Completed)).await;
    sleep_ms(5).await;
    start("a-second", Some(RunState::Failed)).await;
    sleep_ms(5).await;
    // Started within the same millisecond or not, these order by id among themselves.
    start("t-1", Some(RunState::Cancelled)).await;
    start("t-2", Some(RunState::Capped)).await;
    start("t-3", None).await;
    fx.store
        .start_run(&other, new_run("elsewhere"))
        .await
        .unwrap();

    let ids = |runs: Vec<RunRecord>| -> Vec<String> { runs.into_iter().map(|r| r.id).collect() };
    let all = fx.reopen().await.list_runs(&id, 10).await.unwrap();
    assert!(all.iter().all(|r| r.board == id));
    assert!(
        all.windows(2).all(|w| w[0].started_at >= w[1].started_at),
        "newest first"
    );
    assert_eq!(all.last().unwrap().state, RunState::Completed);
    assert_eq!(all[0], run_of(&fx, &id, "t-3").await);
    assert_eq!(ids(all), ["t-3", "t-2", "t-1", "a-second", "b-first"]);
    assert_eq!(
        ids(fx.store.list_runs(&id, 2).await.unwrap()),
        ["t-3", "t-2"]
    );
    assert!(fx.store.list_runs(&id, 0).await.unwrap().is_empty());
    assert_eq!(
        ids(fx.store.list_runs(&other, 10).await.unwrap()),
        ["elsewhere"]
    );

    let missing = board("no-such-board");
    assert!(matches!(
        fx.store.list_runs(&missing, 10).await,
        Err(StorageError::BoardNotFound(b)) if b == missing
    ));
    assert!(matches!(
        fx.store.start_run(&missing, new_run("orphan")).await,
        Err(StorageError::BoardNotFound(b)) if b == missing
    ));
    assert_eq!(fx.store.get_run(&missing, "orphan").await.unwrap(), None);
    fx.finish().await;
}

/// Undo is claimed once: never while the run is running, once after it ended, and again only
/// after the claim is released.
/// A working run's changes are saved as it goes; once it ended, they are not overwritten.
async fn run_changes_saved_while_running(fx: Fixture) {
    let id = board("changes");
    fx.store.create_board(&id).await.unwrap();
    fx.store.start_run(&id, new_run("run")).await.unwrap();
    assert!(
        fx.store
            .save_run_changes(&id, "run", &[1, 2, 3])
            .await
            .unwrap()
    );
    assert_eq!(run_of(&fx, &id, "run").await.changes, [1, 2, 3]);
    assert!(
        fx.store
            .save_run_changes(&id, "run", &[1, 2, 3, 4])
            .await
            .unwrap()
    );
    assert_eq!(run_of(&fx, &id, "run").await.changes, [1, 2, 3, 4]);
    // Interrupted (its server stopped): what was saved is what undo gets.
    assert_eq!(fx.store.interrupt_stale_runs(i64::MAX).await.unwrap(), 1);
    assert!(!fx.store.save_run_changes(&id, "run", &[9]).await.unwrap());
    let run = run_of(&fx, &id, "run").await;
    assert_eq!(run.state, RunState::Interrupted);
    assert_eq!(run.changes, [1, 2, 3, 4]);
    assert!(!fx.store.save_run_changes(&id, "nope", &[9]).await.unwrap());
    assert!(fx.store.claim_undo(&id, "run", None).await.unwrap());
}

/// A deleted board's id is remembered: `ensure_board` (what connecting does) refuses it, so a
/// client that missed the deletion cannot bring the board back; an explicit create can, once,
/// and then the id behaves like any other again.
async fn deleted_ids_stay_deleted(fx: Fixture) {
    let (gone, never) = (board("gone"), board("never-existed"));
    fx.store.create_board(&gone).await.unwrap();
    fx.store
        .append(&[NewUpdate {
            board: &gone,
            data: b"old",
        }])
        .await
        .unwrap();
    assert!(fx.store.delete_board(&gone).await.unwrap());

    for _ in 0..2 {
        assert!(matches!(
            fx.store.ensure_board(&gone).await,
            Err(StorageError::BoardDeleted(b)) if b == gone
        ));
    }
    assert!(fx.store.get_board(&gone).await.unwrap().is_none());
    assert!(matches!(
        fx.store.load(&gone).await,
        Err(StorageError::BoardNotFound(_))
    ));
    // Deleting a board that does not exist remembers nothing.
    assert!(!fx.store.delete_board(&never).await.unwrap());
    assert_eq!(fx.store.ensure_board(&never).await.unwrap().last_seq, 0);

    // An explicit create takes the id back, empty.
    assert_eq!(fx.store.create_board(&gone).await.unwrap().last_seq, 0);
    let again = fx.store.ensure_board(&gone).await.unwrap();
    assert_eq!(again.last_seq, 0);
    assert!(fx.store.load(&gone).await.unwrap().updates.is_empty());

    // Deleted again, refused again.
    assert!(fx.store.delete_board(&gone).await.unwrap());
    assert!(matches!(
        fx.store.ensure_board(&gone).await,
        Err(StorageError::BoardDeleted(_))
    ));
    fx.finish().await;
}

async fn claim_undo_once(fx: Fixture) {
    let (id, other) = (board("undo"), board("undo-other"));
    fx.store.create_board(&id).await.unwrap();
    fx.store.create_board(&other).await.unwrap();
    fx.store.start_run(&id, new_run("run")).await.unwrap();

    assert!(!fx.store.claim_undo(&id, "run", Some("ben")).await.unwrap());
    let running = run_of(&fx, &id, "run").await;
    assert_eq!(
        (running.undone_at, running.undone_by.as_deref()),
        (None, None)
    );

    assert!(
        fx.store
            .finish_run(&id, "run", ended(RunState::Completed))
            .await
            .unwrap()
    );
    // Unknown runs, or the run through another board, can't be claimed.
    assert!(!fx.store.claim_undo(&id, "no-such-run", None).await.unwrap());
    assert!(!fx.store.claim_undo(&other, "run", None).await.unwrap());
    assert!(
        !fx.store
            .claim_undo(&board("no-such-board"), "run", None)
            .await
            .unwrap()
    );

    assert!(fx.store.claim_undo(&id, "run", Some("ben")).await.unwrap());
    let claimed = run_of(&fx, &id, "run").await;
    assert!(claimed.undone_at.unwrap() >= claimed.finished_at.unwrap());
    assert_eq!(claimed.undone_by.as_deref(), Some("ben"));
    assert_eq!(claimed.state, RunState::Completed);
    assert!(!fx.store.claim_undo(&id, "run", Some("cleo")).await.unwrap());
    assert_eq!(run_of(&fx, &id, "run").await, claimed);

    // Releasing through another board, or an unknown run, changes nothing and is no error.
    fx.store.release_undo(&other, "run").await.unwrap();
    fx.store.release_undo(&id, "no-such-run").await.unwrap();
    assert_eq!(run_of(&fx, &id, "run").await, claimed);

    fx.store.release_undo(&id, "run").await.unwrap();
    let released = run_of(&fx, &id, "run").await;
    assert_eq!(
        (released.undone_at, released.undone_by.as_deref()),
        (None, None)
    );
    assert_eq!(
        RunRecord {
            undone_at: None,
            undone_by: None,
            ..claimed
        },
        released
    );
    assert!(fx.store.claim_undo(&id, "run", None).await.unwrap());
    let again = run_of(&fx, &id, "run").await;
    assert!(again.undone_at.is_some());
    assert_eq!(again.undone_by, None);
    assert!(!fx.store.claim_undo(&id, "run", None).await.unwrap());
    fx.finish().await;
}

/// Of 20 concurrent claims on one run, exactly one wins, and the run records the winner.
async fn concurrent_undo_claims(fx: Fixture) {
    const CLAIMERS: usize = 20;
    let id = board("undo-race");
    fx.store.create_board(&id).await.unwrap();
    fx.store.start_run(&id, new_run("contested")).await.unwrap();
    fx.store
        .finish_run(&id, "contested", ended(RunState::Completed))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..CLAIMERS {
        let store = fx.store.clone();
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            let by = format!("user-{i}");
            let won = store.claim_undo(&id, "contested", Some(&by)).await.unwrap();
            won.then_some(by)
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        winners.extend(t.await.unwrap());
    }
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    let run = run_of(&fx, &id, "contested").await;
    assert_eq!(run.undone_by.as_ref(), Some(&winners[0]));
    assert!(run.undone_at.is_some());
    fx.finish().await;
}

/// Running runs of every board whose heartbeat is older than the cutoff are marked
/// interrupted; runs that ended, runs started after the cutoff and runs whose heartbeat was
/// refreshed since are left alone; a run that finishes after all overwrites it.
async fn stale_runs_are_interrupted(fx: Fixture) {
    let (a, b, c, d) = (
        board("stale-a"),
        board("stale-b"),
        board("stale-c"),
        board("stale-d"),
    );
    for id in [&a, &b, &c, &d] {
        fx.store.create_board(id).await.unwrap();
    }
    fx.store.start_run(&a, new_run("old-ended")).await.unwrap();
    fx.store
        .finish_run(&a, "old-ended", ended(RunState::Failed))
        .await
        .unwrap();
    fx.store
        .start_run(&a, new_run("old-running"))
        .await
        .unwrap();
    let old_b = fx.store.start_run(&b, new_run("old-b")).await.unwrap();
    let touched = fx.store.start_run(&d, new_run("touched")).await.unwrap();
    let old_ended = run_of(&fx, &a, "old-ended").await;
    sleep_ms(5).await;
    let fresh = fx.store.start_run(&c, new_run("fresh")).await.unwrap();
    assert!(fresh.started_at > old_b.started_at);
    assert_eq!(fresh.alive_at, fresh.started_at);
    // A heartbeat: started with the stale ones, alive since.
    assert!(fx.store.touch_run(&d, "touched").await.unwrap());
    let touched = RunRecord {
        alive_at: run_of(&fx, &d, "touched").await.alive_at,
        ..touched
    };
    assert!(touched.alive_at >= fresh.started_at);
    // Every heartbeat older than `fresh`'s start is stale.
    let cutoff = fresh.started_at;

    assert_eq!(fx.store.interrupt_stale_runs(cutoff).await.unwrap(), 2);
    for (board_id, run) in [(&a, "old-running"), (&b, "old-b")] {
        let r = run_of(&fx, board_id, run).await;
        assert_eq!(r.state, RunState::Interrupted, "{run}");
        assert!(r.finished_at.unwrap() >= r.started_at, "{run}");
        assert_eq!((r.summary.as_str(), r.tool_calls.as_str()), ("", "[]"));
        // Its claim is gone: no heartbeat is taken, and its board takes a new run.
        assert!(!fx.store.touch_run(board_id, run).await.unwrap(), "{run}");
    }
    assert_eq!(run_of(&fx, &a, "old-ended").await, old_ended);
    assert_eq!(run_of(&fx, &c, "fresh").await, fresh);
    assert_eq!(run_of(&fx, &d, "touched").await, touched);
    assert_eq!(fx.store.interrupt_stale_runs(cutoff).await.unwrap(), 0);

    // The run did finish after all: its result replaces `interrupted`.
    let late = RunResult {
        summary: "finished late",
        changes: b"late changes",
        ..ended(RunState::Completed)
    };
    assert!(fx.store.finish_run(&a, "old-running", late).await.unwrap());
    let r = run_of(&fx, &a, "old-running").await;
    assert_eq!(r.state, RunState::Completed);
    assert_eq!(r.summary, "finished late");
    assert_eq!(r.changes, b"late changes");

    // A cutoff past everything catches the fresh and the touched run too, and only them.
    assert_eq!(fx.store.interrupt_stale_runs(i64::MAX).await.unwrap(), 2);
    assert_eq!(run_of(&fx, &c, "fresh").await.state, RunState::Interrupted);
    assert_eq!(
        run_of(&fx, &d, "touched").await.state,
        RunState::Interrupted
    );
    fx.finish().await;
}

/// A run's row is its claim on the board: while it runs, no other run of the board starts
/// (refused naming it), on any store of the database; other boards are free; once it ended,
/// or once its heartbeat is older than the new run's `expired_before`, the board takes a new
/// run (the expired one is marked interrupted). The version saved before a run is recorded
/// after it claimed the board.
async fn one_running_run_per_board(fx: Fixture) {
    let (a, b) = (board("claim-a"), board("claim-b"));
    fx.store.create_board(&a).await.unwrap();
    fx.store.create_board(&b).await.unwrap();
    let other_node = fx.reopen().await;
    fx.store.start_run(&a, new_run("first")).await.unwrap();
    for store in [&fx.store, &other_node] {
        match store.start_run(&a, new_run("second")).await {
            Err(StorageError::RunActive { board, run }) => {
                assert_eq!((board, run.as_str()), (a.clone(), "first"));
            }
            other => panic!("expected RunActive, got {other:?}"),
        }
    }
    assert_eq!(fx.store.get_run(&a, "second").await.unwrap(), None);
    other_node
        .start_run(&b, new_run("elsewhere"))
        .await
        .unwrap();

    // Heartbeats: only a running run takes one.
    let first = run_of(&fx, &a, "first").await;
    sleep_ms(3).await;
    assert!(other_node.touch_run(&a, "first").await.unwrap());
    assert!(run_of(&fx, &a, "first").await.alive_at > first.alive_at);
    assert!(!fx.store.touch_run(&a, "no-such-run").await.unwrap());
    assert!(!fx.store.touch_run(&b, "first").await.unwrap());

    // The version before a run.
    let version = fx
        .store
        .save_version(
            &a,
            NewVersion {
                kind: VersionKind::Auto,
                label: None,
                author: Some("ai:first"),
                reason: Some("before assistant run"),
                covers_seq: 0,
                data: b"\x00\x00",
            },
        )
        .await
        .unwrap();
    assert!(
        fx.store
            .set_run_version(&a, "first", version.id)
            .await
            .unwrap()
    );
    assert_eq!(
        run_of(&fx, &a, "first").await.before_version,
        Some(version.id)
    );
    assert!(
        !fx.store
            .set_run_version(&b, "first", version.id)
            .await
            .unwrap()
    );

    // Ended: the board is free.
    fx.store
        .finish_run(&a, "first", ended(RunState::Completed))
        .await
        .unwrap();
    let second = other_node.start_run(&a, new_run("second")).await.unwrap();

    // Expired: a new run past its heartbeat takes the board and marks it interrupted.
    let expired_before = second.alive_at + 1;
    let third = fx
        .store
        .start_run(
            &a,
            NewRun {
                expired_before,
                ..new_run("third")
            },
        )
        .await
        .unwrap();
    assert_eq!(third.state, RunState::Running);
    let second = run_of(&fx, &a, "second").await;
    assert_eq!(second.state, RunState::Interrupted);
    assert!(second.finished_at.is_some());
    // Its server, back, finds its claim gone.
    assert!(!other_node.touch_run(&a, "second").await.unwrap());
    other_node.close().await;
    fx.finish().await;
}

/// Of concurrent starts on one board, from two stores of the database, exactly one claims it;
/// every other is refused naming the winner.
async fn concurrent_run_claims(fx: Fixture) {
    const STARTERS: usize = 12;
    let id = board("claim-race");
    fx.store.create_board(&id).await.unwrap();
    let other_node = fx.reopen().await;
    let mut tasks = Vec::new();
    for i in 0..STARTERS {
        let store = if i % 2 == 0 {
            fx.store.clone()
        } else {
            other_node.clone()
        };
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            let run = format!("run-{i}");
            match store.start_run(&id, new_run(&run)).await {
                Ok(r) => Ok(r.id),
                Err(StorageError::RunActive { run, .. }) => Err(run),
                Err(e) => panic!("{e}"),
            }
        }));
    }
    let mut winners = Vec::new();
    let mut named = BTreeSet::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(run) => winners.push(run),
            Err(active) => {
                named.insert(active);
            }
        }
    }
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    assert!(named.iter().all(|r| *r == winners[0]), "named: {named:?}");
    let running: Vec<RunRecord> = fx
        .store
        .list_runs(&id, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.state == RunState::Running)
        .collect();
    assert_eq!(running.len(), 1);
    assert_eq!(running[0].id, winners[0]);
    if !fx.is_memory() {
        other_node.close().await;
    }
    fx.finish().await;
}

/// Deleting a board deletes its runs: a new board of the same id starts without them, and
/// their ids are free again.
async fn runs_go_with_their_board(fx: Fixture) {
    let (id, kept) = (board("doomed"), board("kept"));
    fx.store.create_board(&id).await.unwrap();
    fx.store.create_board(&kept).await.unwrap();
    fx.store
        .start_run(&id, new_run("doomed-run"))
        .await
        .unwrap();
    fx.store
        .finish_run(&id, "doomed-run", ended(RunState::Completed))
        .await
        .unwrap();
    fx.store
        .start_run(&id, new_run("doomed-running"))
        .await
        .unwrap();
    let survivor = fx
        .store
        .start_run(&kept, new_run("kept-run"))
        .await
        .unwrap();

    assert!(fx.store.delete_board(&id).await.unwrap());
    assert_eq!(fx.store.get_run(&id, "doomed-run").await.unwrap(), None);
    assert!(matches!(
        fx.store.list_runs(&id, 10).await,
        Err(StorageError::BoardNotFound(_))
    ));
    assert!(!fx.store.claim_undo(&id, "doomed-run", None).await.unwrap());

    fx.store.create_board(&id).await.unwrap();
    assert_eq!(fx.store.get_run(&id, "doomed-run").await.unwrap(), None);
    assert_eq!(fx.store.get_run(&id, "doomed-running").await.unwrap(), None);
    assert!(fx.store.list_runs(&id, 10).await.unwrap().is_empty());
    // The deleted running run is not there to be interrupted.
    assert_eq!(fx.store.interrupt_stale_runs(i64::MAX).await.unwrap(), 1);
    let reused = fx
        .store
        .start_run(&id, new_run("doomed-run"))
        .await
        .unwrap();
    assert_eq!(reused.state, RunState::Running);
    assert_eq!(fx.store.list_runs(&id, 10).await.unwrap(), vec![reused]);
    assert_eq!(
        run_of(&fx, &kept, "kept-run").await,
        RunRecord {
            state: RunState::Interrupted,
            finished_at: run_of(&fx, &kept, "kept-run").await.finished_at,
            ..survivor
        }
    );
    fx.finish().await;
}

/// What a node lacking rows reads: a range of the log, and after a compaction folded some of
/// it, the snapshot first; and the last sequence numbers of the boards it holds.
async fn ranges_and_last_seqs(fx: Fixture) {
    let id = board("ranges");
    let other = board("ranges-other");
    fx.store.create_board(&id).await.unwrap();
    fx.store.create_board(&other).await.unwrap();
    let (_, updates) = board_updates(6);
    append_each(&fx, &id, &updates).await;
    append_each(&fx, &other, &updates[..2]).await;
    let range = fx.store.read_range(&id, 2, 5).await.unwrap();
    assert_eq!(range, updates[2..4].to_vec(), "rows 3 and 4, in order");
    assert!(fx.store.read_range(&id, 6, 7).await.unwrap().is_empty());
    // Fold rows up to 4 into a snapshot: a range reaching into them starts with it.
    let folded = yrs::merge_updates_v1(updates[..4].iter().map(Vec::as_slice)).unwrap();
    let snapshot = NewSnapshot {
        upto: 4,
        data: &folded,
    };
    fx.store
        .begin_compaction(&id, snapshot)
        .await
        .unwrap()
        .commit()
        .await
        .unwrap();
    let range = fx.store.read_range(&id, 2, 6).await.unwrap();
    assert_eq!(range[0], folded, "the snapshot comes first");
    assert_eq!(&range[1..], &updates[4..5], "then row 5");
    let gone = board("ranges-never");
    let seqs = fx
        .store
        .last_seqs(&[id.clone(), other.clone(), gone.clone()])
        .await
        .unwrap();
    assert_eq!(seqs.get(&id), Some(&6));
    assert_eq!(seqs.get(&other), Some(&2));
    assert!(!seqs.contains_key(&gone), "a missing board is left out");
    fx.finish().await;
}

/// A board's maintenance lock is held by one taker at a time, across every store of the
/// database; other boards' locks are apart; dropping it releases it (on PostgreSQL a moment
/// later, once its connection sent the rollback).
async fn maintenance_lock_is_exclusive(fx: Fixture) {
    let (a, b) = (board("maint-a"), board("maint-b"));
    let other_node = fx.reopen().await;
    let held = fx.store.try_lock_maintenance(&a).await.unwrap();
    assert!(held.is_some());
    assert!(fx.store.try_lock_maintenance(&a).await.unwrap().is_none());
    // Servers share a PostgreSQL database; a SQLite database has one (its lock is its store's).
    let shared = fx.store.backend() == Backend::Postgres;
    if shared {
        assert!(other_node.try_lock_maintenance(&a).await.unwrap().is_none());
    }
    let b_held = other_node.try_lock_maintenance(&b).await.unwrap();
    assert!(b_held.is_some(), "another board's lock is free");
    drop(held);
    let again = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some(lock) = other_node.try_lock_maintenance(&a).await.unwrap() {
                return lock;
            }
            sleep_ms(10).await;
        }
    })
    .await
    .expect("a dropped lock is released");
    if shared {
        assert!(fx.store.try_lock_maintenance(&a).await.unwrap().is_none());
    }
    drop((again, b_held));
    if !fx.is_memory() {
        other_node.close().await;
    }
    fx.finish().await;
}

/// Budget rows are read, changed and written as one: 40 concurrent increments from two stores
/// of the database lose none; a refused update writes nothing; rows start at zero.
async fn budget_updates_are_atomic(fx: Fixture) {
    let other_node = fx.reopen().await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let store = if i % 2 == 0 {
            fx.store.clone()
        } else {
            other_node.clone()
        };
        tasks.push(tokio::spawn(async move {
            let mut add = |rows: &mut [sync_server::storage::BudgetRow]| {
                rows[0].used += 1;
                rows[1].reserved += 2;
                true
            };
            store
                .update_budgets(&["", "user:u"], &mut add)
                .await
                .unwrap()
        }));
    }
    for t in tasks {
        assert!(t.await.unwrap());
    }
    let mut refuse = |rows: &mut [sync_server::storage::BudgetRow]| {
        rows[0].used = 1_000;
        false
    };
    assert!(!fx.store.update_budgets(&[""], &mut refuse).await.unwrap());
    let mut seen = Vec::new();
    let mut read = |rows: &mut [sync_server::storage::BudgetRow]| {
        seen = rows.to_vec();
        false
    };
    fx.store
        .update_budgets(&["user:u", "", "user:new"], &mut read)
        .await
        .unwrap();
    let got: Vec<(&str, i64, i64)> = seen
        .iter()
        .map(|r| (r.scope.as_str(), r.used, r.reserved))
        .collect();
    assert_eq!(got, [("user:u", 0, 80), ("", 40, 0), ("user:new", 0, 0)]);
    if !fx.is_memory() {
        other_node.close().await;
    }
    fx.finish().await;
}

/// Any server may ask for a working run to be cancelled; only a working run can be, and the
/// run's server sees the request (another store of the database, as another server would).
async fn cancel_requests(fx: Fixture) {
    let id = board("cancel-requests");
    fx.store.create_board(&id).await.unwrap();
    fx.store.start_run(&id, new_run("working")).await.unwrap();
    let other_node = fx.reopen().await;
    assert!(!fx.store.cancel_requested(&id, "working").await.unwrap());
    assert!(other_node.request_cancel(&id, "working").await.unwrap());
    assert!(fx.store.cancel_requested(&id, "working").await.unwrap());
    assert!(!other_node.request_cancel(&id, "no-such-run").await.unwrap());
    assert!(!fx.store.cancel_requested(&id, "no-such-run").await.unwrap());
    fx.store
        .finish_run(&id, "working", ended(RunState::Cancelled))
        .await
        .unwrap();
    fx.store.start_run(&id, new_run("next")).await.unwrap();
    assert!(!fx.store.cancel_requested(&id, "next").await.unwrap());
    fx.store
        .finish_run(&id, "next", ended(RunState::Completed))
        .await
        .unwrap();
    assert!(
        !other_node.request_cancel(&id, "next").await.unwrap(),
        "a finished run is not asked"
    );
    assert!(!fx.store.cancel_requested(&id, "next").await.unwrap());
    fx.finish().await;
}

macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                super::$test(super::Fixture::memory().await).await;
            })*
        }
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                super::$test(super::Fixture::sqlite().await).await;
            })*
        }
        mod layered {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                super::$test(super::Fixture::layered().await).await;
            })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                if let Some(fx) = super::Fixture::postgres().await {
                    super::$test(fx).await;
                }
            })*
        }
    };
}

conformance!(
    round_trip,
    order,
    concurrent_appenders,
    compaction_keeps_the_board,
    dropped_compaction_changes_nothing,
    stale_compaction_is_refused,
    compaction_races_appends,
    boards_and_delete,
    deleted_ids_stay_deleted,
    versions,
    version_retention,
    corrupt_rows_are_named,
    runs_round_trip,
    runs_listed_newest_first,
    claim_undo_once,
    run_changes_saved_while_running,
    concurrent_undo_claims,
    stale_runs_are_interrupted,
    one_running_run_per_board,
    concurrent_run_claims,
    runs_go_with_their_board,
    ranges_and_last_seqs,
    cancel_requests,
    maintenance_lock_is_exclusive,
    budget_updates_are_atomic,
);

/// PostgreSQL: appends (commits) have connections of their own, so they complete while every
/// connection of the general pool is taken (by open compactions here; by a flood of reads or
/// readiness checks in production).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_appends_do_not_wait_for_the_general_pool() {
    let Some(fx) = Fixture::postgres().await else {
        return;
    };
    // The fixture's pools have 4 connections.
    let boards: Vec<BoardId> = (0..5).map(|i| board(&format!("pool-{i}"))).collect();
    for b in &boards {
        fx.store.create_board(b).await.unwrap();
        append_each(&fx, b, &[b"first".to_vec()]).await;
    }
    let mut held = Vec::new();
    for b in &boards[..4] {
        let snapshot = NewSnapshot {
            upto: 1,
            data: b"snapshot",
        };
        held.push(fx.store.begin_compaction(b, snapshot).await.unwrap());
    }
    let read = tokio::time::timeout(Duration::from_millis(500), fx.store.get_board(&boards[4]));
    assert!(
        read.await.is_err(),
        "every connection of the general pool is taken"
    );
    let more = [NewUpdate {
        board: &boards[4],
        data: b"second",
    }];
    let appended = tokio::time::timeout(Duration::from_secs(3), fx.store.append(&more))
        .await
        .expect("the append waited for a connection of the general pool")
        .unwrap();
    assert_eq!(appended, vec![2]);
    drop(held);
    assert_eq!(
        fx.store
            .get_board(&boards[4])
            .await
            .unwrap()
            .unwrap()
            .last_seq,
        2
    );
    fx.finish().await;
}

/// SQLite: once appends stop for a while, the WAL is checkpointed and truncated, so a burst
/// does not leave a large `-wal` file behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_wal_is_truncated_when_idle() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("boards.db");
    let url = format!("sqlite://{}", path.display());
    let options = sync_server::storage::StorageOptions {
        checkpoint_idle: Duration::from_millis(100),
        ..sync_server::storage::StorageOptions::default()
    };
    let store = sync_server::storage::open(&url, &options).await.unwrap();
    let id = board("wal");
    store.create_board(&id).await.unwrap();
    let payload = vec![7u8; 4096];
    for _ in 0..200 {
        store
            .append(&[NewUpdate {
                board: &id,
                data: &payload,
            }])
            .await
            .unwrap();
    }
    let wal = dir.path().join("boards.db-wal");
    let size = || std::fs::metadata(&wal).map_or(0, |m| m.len());
    assert!(size() > 0, "the burst is in the WAL");
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while size() > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(size(), 0, "the WAL is truncated once the store is idle");
    // Appends go on as before.
    let more = [NewUpdate {
        board: &id,
        data: b"after",
    }];
    assert_eq!(store.append(&more).await.unwrap(), vec![201]);
    store.close().await;
}
