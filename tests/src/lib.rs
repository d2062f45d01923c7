//! The test harness: everything the integration tests (`sync-server/tests/it/`), the fan-out
//! load generator (`src/bin/loadgen.rs`) and the minimal relay (`src/bin/relay.rs`) share.
//!
//! - [`server`]: the server in process (a configuration and a store in, an address out, a
//!   graceful shutdown), and the stores tests give it.
//! - [`node`]: several nodes: servers in process with their handles, Redis as the tests find
//!   it, and a Redis of a test's own that it can stop and start.
//! - [`client`]: WebSocket clients, among them [`TestClient`], a y-websocket client with its
//!   own doc.
//! - [`http`]: a real HTTP/1.1 client over TCP.
//! - [`wire`]: the one y-protocols codec every client here uses.
//! - [`llm`]: the fake model service (an OpenAI-compatible HTTP server).
//! - [`fixture`]: a store of each backend (memory, SQLite, PostgreSQL) for the storage tests.
//! - [`faults`]: stores that fail, slow down or hold calls, each wrapping one part of the
//!   `Storage` trait.
//! - [`docs`]: documents as tests build and read them.
//! - [`procfs`], [`report`], [`stall`], [`fsync`]: the load generator's measurements (CPU and
//!   memory, the longest stall of a receiver, the disk's bare fsync) and reports.
//! - [`storm`], [`large`]: the load generator's reconnect storm and large-board scenarios;
//!   [`process`]: the server binary as a child process they stop and start.
//!
//! A test helper library: it fails the test (panics) on anything unexpected, by design.
//!
//! The Node interop tests are in `js/`; see `README.md`.

#![allow(clippy::unwrap_used)]

pub mod client;
pub mod docs;
pub mod faults;
pub mod fixture;
pub mod fsync;
pub mod http;
pub mod large;
pub mod llm;
pub mod node;
pub mod process;
pub mod procfs;
pub mod report;
pub mod server;
pub mod stall;
pub mod storm;
pub mod wire;

use std::time::Duration;

pub use self::client::{
    ClientState, Seen, Socket, TestClient, expect_close, expect_close_frame, ws_connect,
    ws_connect_with, ws_handshake,
};
pub use self::docs::{doc_from, doc_state, new_doc, notes, put_note};
pub use self::faults::{Gate, TestStore};
pub use self::fixture::Fixture;
pub use self::http::{HttpResponse, http, http_request, try_http_request};
pub use self::server::{SqliteDb, TestServer, config, memory_store};
pub use self::wire::awareness_frame;

/// How long any single wait may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(5);
