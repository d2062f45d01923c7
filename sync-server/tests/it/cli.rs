//! The `export` and `import` commands, run as a user would, against SQLite and PostgreSQL.

use std::process::{Command, Output};

use harness::docs::doc_json;
use harness::fixture::Fixture;
use sync_server::ids::BoardId;
use yrs::updates::decoder::Decode;
use yrs::{Doc, ReadTxn, Transact, Update};

/// A board made by npm `yjs` 13.6.33 (see crdt-schema/tests/fixtures and tests/js/fixtures).
const YJS_BOARD: &[u8] = include_bytes!("../../../crdt-schema/tests/fixtures/yjs-board.bin");

fn cli(url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sync-server"))
        .args(args)
        .env("DATABASE_URL", url)
        .output()
        .unwrap()
}

fn doc_of(state: &[u8]) -> Doc {
    let doc = Doc::new();
    doc.transact_mut()
        .apply_update(Update::decode_v1(state).unwrap())
        .unwrap();
    doc
}

async fn round_trip(fx: Fixture) {
    let dir = tempfile::tempdir().unwrap();
    let (fixture, first, second) = (
        dir.path().join("yjs-board.bin"),
        dir.path().join("first.bin"),
        dir.path().join("second.bin"),
    );
    std::fs::write(&fixture, YJS_BOARD).unwrap();
    let path = |p: &std::path::Path| p.to_str().unwrap().to_owned();

    // A snapshot made by plain Yjs imports; the export holds the same content.
    let out = cli(
        fx.url(),
        &["import", &path(&fixture), "--board", "from-yjs"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), "from-yjs");
    let out = cli(fx.url(), &["export", "from-yjs", "-o", &path(&first)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let exported = std::fs::read(&first).unwrap();
    let (original, copy) = (doc_of(YJS_BOARD), doc_of(&exported));
    assert_eq!(doc_json(&copy), doc_json(&original));
    assert_eq!(
        copy.transact().state_vector(),
        original.transact().state_vector()
    );

    // Export, import under a new id (random, printed), export again: identical content.
    let out = cli(fx.url(), &["import", &path(&first)]);
    assert!(out.status.success());
    let new_id = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    BoardId::parse(&new_id).unwrap();
    let out = cli(fx.url(), &["export", &new_id]);
    assert!(out.status.success());
    std::fs::write(&second, &out.stdout).unwrap();
    assert_eq!(doc_json(&doc_of(&out.stdout)), doc_json(&original));

    // Refusals change nothing.
    let before = fx.store.list_boards(None, 100).await.unwrap();
    let out = cli(fx.url(), &["import", "/etc/hostname", "--board", "junk"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a Yjs update"));
    let out = cli(fx.url(), &["import", &path(&second), "--board", "from-yjs"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    let out = cli(fx.url(), &["export", "no-such-board"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
    assert_eq!(fx.store.list_boards(None, 100).await.unwrap(), before);
    let still = cli(fx.url(), &["export", "from-yjs"]);
    assert_eq!(doc_json(&doc_of(&still.stdout)), doc_json(&original));
    fx.finish().await;
}

#[tokio::test]
async fn export_import_sqlite() {
    round_trip(Fixture::sqlite().await).await;
}

#[tokio::test]
async fn export_import_postgres() {
    if let Some(fx) = Fixture::postgres().await {
        round_trip(fx).await;
    }
}
