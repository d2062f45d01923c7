//! The board sync server: Yjs sync over WebSocket, durable storage in SQL, board actors.
//!
//! # Layout
//!
//! - [`config`]: command line and environment.
//! - [`server`]: serving the app on a listener, and graceful shutdown.
//! - [`app`]: builds every service from a [`app::Config`] and a store; returns the router and
//!   the handle that shuts it down. Its docs give the layering of the modules.
//! - `http`: the HTTP API routes, their handlers and JSON errors, and the WebSocket upgrade.
//! - `ws`: WebSocket sessions (admission, reader, writer), over any stream and sink.
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
//! - `restore`: restoring a board to a version or a snapshot.
//! - `limits`: connection and rate limits.
//! - [`metrics`]: Prometheus metrics.
//! - [`telemetry`], [`shutdown`]: logging and signals.

pub mod app;
pub mod assistant;
pub mod auth;
pub mod board;
pub mod cluster;
mod commit;
pub mod config;
mod http;
pub mod ids;
mod limits;
pub mod metrics;
pub mod protocol;
pub mod refusal;
mod restore;
pub mod server;
pub mod shutdown;
pub mod storage;
pub mod telemetry;
pub mod transfer;
mod ws;
