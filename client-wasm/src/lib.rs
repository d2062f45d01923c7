//! An offline-first board client for the browser, over [`crdt_schema`].
//!
//! The client owns a replica of one board (yrs), keeps it in the browser's IndexedDB across
//! reloads and days offline, syncs with the server over the y-websocket protocol with durable
//! acknowledgements (`?ack=1`), knows which of its own edits the server has committed, and offers
//! the board as typed objects and validated operations. `README.md` beside this crate shows the
//! JavaScript API.
//!
//! # Layout
//!
//! Everything but `browser` is plain Rust without I/O, compiled and unit-tested on the host:
//!
//! - [`client`]: the client as a state machine: events in, [`client::Output`]s out (frames to
//!   send, store writes, app events), in an order that encodes "stored before sent".
//! - [`replica`]: the yrs document, presence, undo of this client's own edits, change tracking.
//! - [`durability`]: acknowledgements to a durable state vector and pending edits.
//! - [`wire`]: y-websocket frames, decoded with the server's bounds.
//! - [`store`]: the offline store's records and compaction rule.
//! - [`backoff`]: reconnect delays with jitter.
//! - [`close`]: what each close code means for the client.
//! - `browser` (wasm32 only): the `BoardClient` class exported to JavaScript, driving a
//!   WebSocket, IndexedDB and timers.

pub mod backoff;
pub mod client;
pub mod close;
pub mod durability;
pub mod replica;
pub mod store;
pub mod wire;

#[cfg(target_arch = "wasm32")]
mod browser;

#[cfg(test)]
mod client_tests;
