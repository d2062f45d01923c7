//! Storage fixtures: a store of each backend under test, with what keeps its database alive
//! and lets it be reopened.

use std::sync::Arc;

use sqlx::Connection;
use sync_server::storage::layered::Layered;
use sync_server::storage::{Storage, StorageOptions, open};

/// A store under test, with what keeps its database alive and lets it be reopened.
#[derive(Debug)]
pub struct Fixture {
    pub store: Arc<dyn Storage>,
    url: String,
    _dir: Option<tempfile::TempDir>,
    pg_schema: Option<(String, String)>,
}

impl Fixture {
    pub async fn memory() -> Self {
        Self {
            store: open("memory:", &StorageOptions::default()).await.unwrap(),
            url: "memory:".into(),
            _dir: None,
            pg_schema: None,
        }
    }

    pub async fn sqlite() -> Self {
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

    /// A SQLite store seen through [`Layered`], every part from the store itself: the same
    /// suite then checks that `Layered` passes every call on.
    pub async fn layered() -> Self {
        let mut fx = Self::sqlite().await;
        fx.store = Arc::new(Layered::over(fx.store.clone()));
        fx
    }

    /// A PostgreSQL store in a schema of its own, or `None` (after saying so) when no server
    /// is configured outside CI. Under `CI=true` a missing or unreachable server fails.
    pub async fn postgres() -> Option<Self> {
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
    pub async fn reopen(&self) -> Arc<dyn Storage> {
        if self.url == "memory:" {
            return self.store.clone();
        }
        open(&self.url, &options()).await.unwrap()
    }

    /// The database URL the store was opened with.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn is_memory(&self) -> bool {
        self.url == "memory:"
    }

    /// Closes the store and drops the PostgreSQL schema (left behind if the test failed).
    pub async fn finish(self) {
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
fn postgres_url() -> Option<String> {
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
