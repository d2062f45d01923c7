//! wasm-bindgen bindings for web clients over `crdt-schema`.
//!
//! Empty until the client issue lands; see `README.md` beside this crate for what it will hold.
