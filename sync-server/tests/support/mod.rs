//! Backends under test and realistic Yjs updates to store in them.

#![allow(dead_code, clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

use sqlx::Connection;
use sync_server::storage::{Storage, StorageOptions, open};
use yrs::{Array, Doc, GetString, Map, ReadTxn, StateVector, Text, Transact};

/// A store under test, with what keeps its database alive and lets it be reopened.
pub(crate) struct Fixture {
    pub(crate) store: Arc<dyn Storage>,
    url: String,
    _dir: Option<tempfile::TempDir>,
    pg_schema: Option<(String, String)>,
}

impl Fixture {
    pub(crate) async fn memory() -> Self {
        Self {
            store: open("memory:", &StorageOptions::default()).await.unwrap(),
            url: "memory:".into(),
            _dir: None,
            pg_schema: None,
        }
    }

    pub(crate) async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        // A nested path also checks that missing directories are created.
        let url = format!("sqlite://{}/nested/boards.db", dir.path().display());
        Self {
            store: open(&url, &options()).await.unwrap(),
            url,
            _dir: Some(dir),
            pg_schema: None,
        }
    }

    /// A PostgreSQL store in a schema of its own, or `None` (after saying so) when no server
    /// is configured outside CI. Under `CI=true` a missing or unreachable server fails.
    pub(crate) async fn postgres() -> Option<Self> {
        let Some(base) = postgres_url() else {
            eprintln!("SKIPPED: TEST_DATABASE_URL is not set, PostgreSQL conformance not run");
            return None;
        };
        let schema = format!("conformance_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&base)
            .await
            .expect("TEST_DATABASE_URL must reach a PostgreSQL server");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
        Some(Self {
            store: open(&url, &options()).await.unwrap(),
            url,
            _dir: None,
            pg_schema: Some((base, schema)),
        })
    }

    /// A second, independent store on the same database (a restart, or another process).
    pub(crate) async fn reopen(&self) -> Arc<dyn Storage> {
        if self.url == "memory:" {
            return self.store.clone();
        }
        open(&self.url, &options()).await.unwrap()
    }

    /// The database URL the store was opened with.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    pub(crate) fn is_memory(&self) -> bool {
        self.url == "memory:"
    }

    /// Closes the store and drops the PostgreSQL schema (left behind if the test failed).
    pub(crate) async fn finish(self) {
        self.store.close().await;
        if let Some((base, schema)) = self.pg_schema {
            let mut conn = sqlx::PgConnection::connect(&base).await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
                .execute(&mut conn)
                .await
                .unwrap();
        }
    }
}

fn options() -> StorageOptions {
    // Small pools: many tests run at once against one PostgreSQL server.
    StorageOptions {
        max_connections: 4,
        ..StorageOptions::default()
    }
}

/// `TEST_DATABASE_URL`, required under `CI=true`.
pub(crate) fn postgres_url() -> Option<String> {
    let url = std::env::var("TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty());
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    assert!(
        url.is_some() || !ci,
        "CI=true: TEST_DATABASE_URL must name a PostgreSQL database"
    );
    url
}

/// Edits a board through yrs and records each transaction's update, as a client would send
/// them: notes created, moved, retitled, text typed and deleted, chat posted.
pub(crate) fn board_updates(edits: usize) -> (Doc, Vec<Vec<u8>>) {
    // Text offsets as Yjs counts them (UTF-16); byte offsets may split a character.
    let doc = Doc::with_options(yrs::Options {
        offset_kind: yrs::OffsetKind::Utf16,
        ..yrs::Options::default()
    });
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = log.clone();
    doc.observe_update_v1("record", move |_, e| {
        sink.lock().unwrap().push(e.update.clone())
    })
    .unwrap();
    let objects = doc.get_or_insert_map("objects");
    let meta = doc.get_or_insert_map("meta");
    let chat = doc.get_or_insert_array("chat");
    for i in 0..edits {
        let mut txn = doc.transact_mut();
        let id = format!("note-{}", i % 37);
        let edited = match i % 5 {
            0 => {
                let note = objects.insert(&mut txn, id, yrs::MapPrelim::default());
                note.insert(&mut txn, "kind", "sticky");
                note.insert(&mut txn, "pos", vec![i as f64, 2.0 * i as f64]);
                note.insert(
                    &mut txn,
                    "text",
                    yrs::TextPrelim::new(format!("hello {i} 👋")),
                );
                true
            }
            1 => {
                meta.insert(&mut txn, "title", format!("Retro #{i}"));
                true
            }
            2 => {
                chat.push_back(&mut txn, format!("message {i}"));
                true
            }
            3 => match objects.get(&txn, &id) {
                Some(yrs::Out::YMap(note)) => {
                    note.insert(&mut txn, "pos", vec![-(i as f64), 0.5]);
                    if let Some(yrs::Out::YText(text)) = note.get(&txn, "text") {
                        text.insert(&mut txn, 0, "é");
                    }
                    true
                }
                _ => false,
            },
            _ => match objects.get(&txn, &format!("note-{}", (i / 2) % 37)) {
                Some(yrs::Out::YMap(note)) => match note.get(&txn, "text") {
                    Some(yrs::Out::YText(text)) if !text.get_string(&txn).is_empty() => {
                        text.remove_range(&mut txn, 0, 1);
                        true
                    }
                    _ => false,
                },
                _ => false,
            },
        };
        if !edited {
            // Every transaction changes something, so `edits` updates come out.
            meta.insert(&mut txn, "tick", i as f64);
        }
    }
    doc.unobserve_update_v1("record").unwrap();
    let updates = std::mem::take(&mut *log.lock().unwrap());
    assert_eq!(updates.len(), edits);
    (doc, updates)
}

/// The document as canonical JSON (sorted keys), with its roots declared so they read as values, not `null`.
pub(crate) fn doc_json(doc: &Doc) -> String {
    doc.get_or_insert_map("objects");
    doc.get_or_insert_map("meta");
    doc.get_or_insert_array("chat");
    let txn = doc.transact();
    let mut out = String::new();
    yrs::types::ToJson::to_json(doc, &txn).to_json(&mut out);
    // Canonical form: yrs maps iterate in hash order, serde_json sorts keys.
    serde_json::from_str::<serde_json::Value>(&out)
        .unwrap()
        .to_string()
}

/// The document's full state, Yjs update v1.
pub(crate) fn doc_state(doc: &Doc) -> Vec<u8> {
    doc.transact()
        .encode_state_as_update_v1(&StateVector::default())
}

/// The document's state vector, encoded.
pub(crate) fn doc_state_vector(doc: &Doc) -> Vec<u8> {
    use yrs::updates::encoder::Encode;
    doc.transact().state_vector().encode_v1()
}
