//! Shared helpers for the cross-crate integration and interop tests in `tests/tests/`, and for the
//! fan-out load generator (`src/bin/loadgen.rs`) and minimal relay (`src/bin/relay.rs`).

pub mod procfs;
pub mod report;
pub mod wire;
