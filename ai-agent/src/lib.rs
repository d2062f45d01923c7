//! The board assistant: an OpenAI-compatible LLM client, board tools, the run loop and token
//! budgets. How the server hosts it: README.md, "The assistant".
//!
//! The assistant is one more CRDT peer. A run reads a compact view of the board, asks the model
//! (streamed chat completions with function tools), and applies each tool call as **one**
//! validated `yrs` transaction whose origin is `ai:<run id>`, through a [`peer::BoardPeer`]
//! the server implements (it owns the document, persists and broadcasts). This crate knows
//! nothing of sockets (except the LLM's HTTP client) or SQL.
//!
//! # Layout
//!
//! - [`llm`]: [`LlmClient`] over `async-openai` (chat completions only), its configuration
//!   ([`LlmConfig`], the key is a secret), bounded retries with a capped `Retry-After`, the
//!   streamed turn ([`llm::Turn`]) and [`LlmError`].
//! - [`tools`]: the board tools offered to the model: argument types with strict JSON schemas,
//!   the compact board view (`getBoardState`), per-run aliases, and the edits (one transaction
//!   per call, validated by `crdt-schema`).
//! - [`peer`]: the boundary to the board's owner ([`BoardPeer`], [`Edit`], [`Edited`],
//!   [`Presence`], [`PeerError`]).
//! - [`mod@run`]: the run loop ([`run()`](run::run)), its request, caps, events and outcome.
//! - [`budget`]: token budgets and request rates, reserved atomically across scopes
//!   ([`Budgets`] in process, [`Reservation`]; [`BudgetLedger`] for a ledger kept elsewhere,
//!   with the rules over stored counters, [`reserve_in`] and [`release_in`]).
//!
//! # Rules the crate keeps
//!
//! - Model-supplied ids never reach the document: the model sees short aliases (`n1`, `f2`, ...)
//!   from a per-run table; an unknown alias is an error reported back to the model.
//! - An invalid tool call changes nothing and reports every problem; results are short JSON
//!   and never echo board text.
//! - Board text reaches the model only as JSON data (tool results or a user message), cleaned of
//!   control, zero-width, bidi and tag characters and truncated; the system prompt is static.
//! - The API key never appears in `Debug`, `Display`, errors or logs.

pub mod budget;
pub mod llm;
pub mod peer;
pub mod run;
pub mod tools;

pub use budget::{
    BudgetError, BudgetLedger, BudgetLimits, BudgetSnapshot, Budgets, Hold, Release, Reservation,
    ScopeState, release_in, reserve_in,
};
pub use llm::{LlmClient, LlmConfig, LlmError};
pub use peer::{BoardPeer, Edit, Edited, PeerError, Presence};
pub use run::{
    RunCaps, RunEvent, RunOutcome, RunRequest, RunStatus, ToolCallRecord, Usage, Viewport, run,
};
