//! The board sync server: Yjs sync over WebSocket, durable storage in SQL, board actors.
//!
//! # Layout
//!
//! - [`config`]: command line and environment.
//! - [`server`]: start-up, shared state, graceful shutdown.
//! - `http`: the HTTP API routes and their JSON errors.
//! - `ws`: WebSocket connections (reader, writer, close codes).
//! - [`protocol`]: the y-websocket wire format; pure functions.
//! - [`refusal`]: every reason a connection is refused or closed: its close code, reason and
//!   metric kind.
//! - [`board`]: board actors (one per loaded board) and their registry.
//! - `commit`: group commit of updates across boards.
//! - [`storage`]: the [`storage::Storage`] trait and its SQLite, PostgreSQL and in-memory
//!   backends, replay of stored rows into a `yrs::Doc`, and compaction.
//! - [`transfer`]: export and import of whole boards (HTTP and command line).
//! - [`ids`]: board ids (validated), version ids, log sequence numbers.
//! - [`auth`]: tokens, roles and what they allow.
//! - [`assistant`]: assistant runs on boards (one per board), their records and undo.
//! - `limits`: connection and rate limits.
//! - [`metrics`]: Prometheus metrics.
//! - [`telemetry`], [`shutdown`]: logging and signals.

pub mod assistant;
pub mod auth;
pub mod board;
mod commit;
pub mod config;
mod http;
pub mod ids;
mod limits;
pub mod metrics;
pub mod protocol;
pub mod refusal;
pub mod server;
pub mod shutdown;
pub mod storage;
pub mod telemetry;
pub mod transfer;
mod ws;
