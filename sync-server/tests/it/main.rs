//! The server's integration tests: one binary, a module per topic, on the shared harness
//! (the `tests` package's library, `harness`).
//!
//! Run one topic with `cargo test -p sync-server --test it <module>::`, e.g.
//! `cargo test -p sync-server --test it randomized::`.

#![allow(clippy::unwrap_used)]

mod app_shell;
mod assistant;
mod burst;
mod cli;
mod cluster;
mod hocuspocus;
mod hostile;
mod multinode;
mod protocol_fuzz;
mod races;
mod randomized;
mod security;
mod security_logs;
mod server;
mod storage_conformance;
mod token_fuzz;
mod update_fuzz;
