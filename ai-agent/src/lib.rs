//! The board assistant: an OpenAI-compatible LLM client, board tools and the run loop.
//!
//! Empty until the assistant issue lands; see `README.md` beside this crate for what it will
//! hold and the boundaries it keeps (no sockets, no SQL: it edits boards through `crdt-schema`).
