//! Choosing a backend from a database URL.

use std::sync::Arc;
use std::time::Duration;

use super::memory::MemoryStore;
use super::postgres::PostgresStore;
use super::sqlite::SqliteStore;
use super::{Storage, StorageError};

/// Tuning shared by the SQL backends.
#[derive(Clone, Debug)]
pub struct StorageOptions {
    /// Most connections one pool opens (PostgreSQL pool; SQLite read pool).
    pub max_connections: u32,
    /// How long SQLite waits for another process's lock before failing with `SQLITE_BUSY`.
    pub busy_timeout: Duration,
    /// How long to wait for a connection from the pool.
    pub acquire_timeout: Duration,
}

impl Default for StorageOptions {
    fn default() -> Self {
        Self {
            max_connections: 8,
            busy_timeout: Duration::from_secs(5),
            acquire_timeout: Duration::from_secs(10),
        }
    }
}

/// Opens the store a database URL names, running migrations:
///
/// - `sqlite://PATH` or `sqlite:PATH`: a SQLite file, created with its directory if missing;
/// - `postgres://...` or `postgresql://...`: a PostgreSQL database;
/// - `memory:`: process memory, gone on exit.
pub async fn open(url: &str, options: &StorageOptions) -> Result<Arc<dyn Storage>, StorageError> {
    let scheme = url.split_once(':').map_or("", |(s, _)| s);
    match scheme {
        "sqlite" => Ok(Arc::new(SqliteStore::open(url, options).await?)),
        "postgres" | "postgresql" => Ok(Arc::new(PostgresStore::connect(url, options).await?)),
        "memory" => Ok(Arc::new(MemoryStore::new())),
        _ => Err(StorageError::InvalidUrl(format!(
            "unsupported scheme {scheme:?}; expected sqlite://PATH, postgres://... or memory:"
        ))),
    }
}

/// The URL with any password replaced by `***`, for logs and messages.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            let hidden = if userinfo.contains(':') { ":***" } else { "" };
            format!("{scheme}://{user}{hidden}@{host}{tail}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redact_hides_passwords_only() {
        assert_eq!(
            redact("postgres://app:s3cr%40t@db:5432/boards?sslmode=require"),
            "postgres://app:***@db:5432/boards?sslmode=require"
        );
        assert_eq!(
            redact("postgres://postgres@127.0.0.1/test"),
            "postgres://postgres@127.0.0.1/test"
        );
        assert_eq!(
            redact("sqlite://./data/boards.db"),
            "sqlite://./data/boards.db"
        );
        assert_eq!(redact("memory:"), "memory:");
    }
}
