//! The boundary between the assistant and the board's owner (the server's board actor).
//!
//! Everything the assistant does to a board, reads included, goes through [`BoardPeer::edit`]
//! as a closure run against the live document on its owner. A closure that writes opens exactly
//! one transaction with the run's origin (`ai:<run id>`) and returns the v1 update that
//! transaction produced; the owner makes that update durable and broadcasts it before `edit`
//! returns, like any human edit. Reads return `update: None`.

use serde::Serialize;

/// What an edit closure returns: the v1 update its one transaction produced (None if it changed
/// nothing), and a JSON result for the model.
#[derive(Debug, Clone, PartialEq)]
pub struct Edited {
    /// The v1 update of the closure's one transaction, or `None` if nothing changed.
    pub update: Option<Vec<u8>>,
    /// The closure's result, handed back unchanged by [`BoardPeer::edit`].
    pub result: serde_json::Value,
}

/// A closure run against the board's live document on the board's owner.
///
/// It must not block on anything but the document, and must not be called with a transaction
/// already open on the document (it opens its own).
pub type Edit = Box<dyn FnOnce(&yrs::Doc) -> Edited + Send + 'static>;

/// The board's owner, as the assistant sees it.
#[async_trait::async_trait]
pub trait BoardPeer: Send + Sync {
    /// Runs `edit` against the board's live document on the board's owner. If it returns an
    /// update, the owner makes it durable and broadcasts it to every client before this returns.
    async fn edit(&self, edit: Edit) -> Result<serde_json::Value, PeerError>;

    /// Shows (Some) or clears (None) the assistant in the board's awareness.
    async fn presence(&self, presence: Option<Presence>) -> Result<(), PeerError>;
}

/// The assistant's awareness entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Presence {
    /// Display name, e.g. `Assistant`.
    pub name: String,
    /// CSS colour of its cursor.
    pub color: String,
    /// What it is doing, e.g. `adding sticky notes`.
    pub status: String,
    /// Board coordinates of the last object it touched.
    pub cursor: Option<[f64; 2]>,
}

/// Why the board's owner could not run an edit or set presence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    /// The board was closed, deleted or evicted; nothing was applied.
    #[error("the board is closed")]
    BoardClosed,
    /// The update could not be made durable; it was not broadcast and the board will recover
    /// from the database.
    #[error("the edit could not be made durable: {0}")]
    CommitFailed(String),
    /// The owner did not take the edit in time; nothing was applied.
    #[error("the board is busy")]
    Busy,
    /// The caller may not edit this board (for example its role changed during the run).
    #[error("not allowed to edit this board")]
    Forbidden,
    /// Anything else, described for logs.
    #[error("board peer error: {0}")]
    Other(String),
}
