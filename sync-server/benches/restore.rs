//! Restore latency: a board of 1,000 and of 10,000 objects, restored to a version after 20% of
//! it changed (10% moved, 5% deleted, 5% added, 5% of texts edited).
//!
//! ```sh
//! cargo bench -p sync-server --bench restore
//! ```
//!
//! Measures what the server does for `POST /v1/boards/{id}/restore` once the version is read:
//! loading the version into a document, computing and applying the forward change (crdt-schema's
//! restore rules) in one transaction, encoding it, and committing it durably to SQLite. HTTP
//! and the broadcast to clients are not included.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use sync_server::ids::BoardId;
use sync_server::storage::{NewUpdate, StorageOptions, open};
use yrs::updates::decoder::Decode;
use yrs::{Doc, Map, MapPrelim, ReadTxn, StateVector, Text, TextPrelim, Transact, Update};

fn board(objects: usize) -> Doc {
    let doc = Doc::with_client_id(1);
    let map = doc.get_or_insert_map("objects");
    let mut txn = doc.transact_mut();
    for i in 0..objects {
        let note = map.insert(&mut txn, format!("obj-{i:05}"), MapPrelim::default());
        note.insert(&mut txn, "kind", "sticky");
        note.insert(
            &mut txn,
            "pos",
            vec![(i % 100) as f64 * 220.0, (i / 100) as f64 * 220.0],
        );
        note.insert(&mut txn, "size", vec![200.0, 200.0]);
        note.insert(&mut txn, "color", "#fde68a");
        note.insert(&mut txn, "z", format!("a{i:05}"));
        note.insert(
            &mut txn,
            "text",
            TextPrelim::new(format!("Note number {i}: an idea 💡")),
        );
    }
    drop(txn);
    doc
}

/// Changes 20% of the board, as a busy session would.
fn change(doc: &Doc, objects: usize) {
    let map = doc.get_or_insert_map("objects");
    let mut txn = doc.transact_mut();
    for i in (0..objects).step_by(10) {
        if let Some(yrs::Out::YMap(note)) = map.get(&txn, &format!("obj-{i:05}")) {
            note.insert(&mut txn, "pos", vec![-1.0, -1.0]);
        }
    }
    for i in (5..objects).step_by(20) {
        map.remove(&mut txn, &format!("obj-{i:05}"));
    }
    for i in 0..objects / 20 {
        let note = map.insert(&mut txn, format!("new-{i:05}"), MapPrelim::default());
        note.insert(&mut txn, "kind", "rect");
    }
    for i in (3..objects).step_by(20) {
        if let Some(yrs::Out::YMap(note)) = map.get(&txn, &format!("obj-{i:05}"))
            && let Some(yrs::Out::YText(text)) = note.get(&txn, "text")
        {
            text.insert(&mut txn, 12, " (edited)");
        }
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

async fn run() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(
        &format!("sqlite://{}/restore.db", dir.path().display()),
        &StorageOptions::default(),
    )
    .await
    .unwrap();
    println!(
        "| objects | version size | restore change | compute + apply | commit | total p50 | total max | runs |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (objects, runs) in [(1_000, 20), (10_000, 5)] {
        let original = board(objects);
        let version = original
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        change(&original, objects);
        let changed = original
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        let id = BoardId::parse(&format!("restore-{objects}")).unwrap();
        store.create_board(&id).await.unwrap();

        let (mut computes, mut commits, mut totals) = (Vec::new(), Vec::new(), Vec::new());
        let mut delta_len = 0;
        for _ in 0..runs {
            // A fresh copy of the changed board, as the server's actor holds it.
            let live = Doc::new();
            live.transact_mut()
                .apply_update(Update::decode_v1(&changed).unwrap())
                .unwrap();
            let started = Instant::now();
            let delta = {
                let mut txn = live.transact_mut_with("restore:bench");
                let report =
                    crdt_schema::restore::restore_from_update_v1(&mut txn, &version).unwrap();
                assert!(!report.is_noop());
                txn.encode_update_v1()
            };
            let computed = started.elapsed();
            store
                .append(&[NewUpdate {
                    board: &id,
                    data: &delta,
                }])
                .await
                .unwrap();
            let total = started.elapsed();
            delta_len = delta.len();
            computes.push(computed);
            commits.push(total - computed);
            totals.push(total);
        }
        let p50 = |v: &mut Vec<Duration>| {
            v.sort();
            v[v.len() / 2]
        };
        let max = *totals.iter().max().unwrap();
        println!(
            "| {objects} | {} KB | {} KB | {} | {} | {} | {} | {runs} |",
            version.len() / 1024,
            delta_len / 1024,
            ms(p50(&mut computes)),
            ms(p50(&mut commits)),
            ms(p50(&mut totals)),
            ms(max),
        );
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}
