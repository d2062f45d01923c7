//! The board sync server: durable storage of Yjs boards today; the WebSocket sync server,
//! version history and assistant build on it.
//!
//! # Layout
//!
//! - [`ids`]: board ids (validated), version ids, log sequence numbers.
//! - [`storage`]: the [`storage::Storage`] trait and its SQLite, PostgreSQL and in-memory
//!   backends, replay of stored rows into a `yrs::Doc`, and compaction.

pub mod ids;
pub mod storage;
