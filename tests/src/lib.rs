//! Code shared by the fan-out load generator (`src/bin/loadgen.rs`) and the minimal relay
//! (`src/bin/relay.rs`): the wire format, `/proc` readings and result tables. The Node interop
//! tests are in `tests/js/`; see `tests/README.md`.

pub mod procfs;
pub mod report;
pub mod wire;
