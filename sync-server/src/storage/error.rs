//! Storage errors.

use crate::ids::{BoardId, Seq};

/// Why a storage operation failed. Messages name boards and rows but never credentials.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The board does not exist.
    #[error("board `{0}` does not exist")]
    BoardNotFound(BoardId),
    /// The board was deleted: only an explicit create brings the id back, not a connection.
    #[error("board `{0}` was deleted; create it again to reuse the id")]
    BoardDeleted(BoardId),
    /// A board with this id already exists.
    #[error("board `{0}` already exists")]
    BoardExists(BoardId),
    /// The compaction would not move the board forward: a snapshot already covers `upto`, or
    /// `upto` is past the end of the log.
    #[error(
        "compaction of board `{board}` up to seq {upto} is stale (snapshot covers {snapshot_seq}, log ends at {last_seq})"
    )]
    StaleCompaction {
        /// The board.
        board: BoardId,
        /// The sequence the compaction asked to cover.
        upto: Seq,
        /// The sequence the current snapshot covers (0 if none).
        snapshot_seq: Seq,
        /// The newest sequence in the log.
        last_seq: Seq,
    },
    /// Another assistant run of the board is working (on this server or another one sharing
    /// the database): a board has one run at a time.
    #[error("run {run} is working on board `{board}`")]
    RunActive {
        /// The board.
        board: BoardId,
        /// The run working on it.
        run: String,
    },
    /// A stored row could not be understood (an unknown format code or version kind).
    #[error("board `{board}`: {row} is unreadable: {reason}")]
    CorruptRow {
        /// The board.
        board: BoardId,
        /// Which row, e.g. `version 12`.
        row: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A board id in the database breaks the id rules (written by something other than us).
    #[error("stored board id {0:?} is not a valid board id")]
    InvalidStoredBoardId(String),
    /// The database URL is not one this server can use.
    #[error("invalid database URL: {0}")]
    InvalidUrl(String),
    /// The database directory could not be created.
    #[error("cannot create database directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Schema migrations failed.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database failed or could not be reached.
    #[error("database error during {op}: {source}")]
    Database {
        /// The operation that failed, e.g. `append`.
        op: &'static str,
        /// The driver's error.
        source: sqlx::Error,
    },
    /// SQLite failed (on the append connection, which does not go through sqlx).
    #[error("database error during {op}: {source}")]
    Sqlite {
        /// The operation that failed, e.g. `append`.
        op: &'static str,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// The store is closed (or its writer thread is gone): nothing was written.
    #[error("the store is closed")]
    Closed,
    /// A thread the store needs could not be started.
    #[error("cannot start the {name} thread: {source}")]
    Thread {
        /// The thread's name.
        name: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl StorageError {
    /// Wraps a driver error with the operation it interrupted.
    pub(crate) fn db(op: &'static str) -> impl FnOnce(sqlx::Error) -> Self {
        move |source| Self::Database { op, source }
    }

    /// Wraps a SQLite error from the append connection with the operation it interrupted.
    pub(crate) fn sqlite(op: &'static str) -> impl FnOnce(rusqlite::Error) -> Self {
        move |source| Self::Sqlite { op, source }
    }
}
