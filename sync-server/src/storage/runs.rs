//! Assistant runs as stored: who asked what, how it went, and what undo needs.
//!
//! A run row is written when a run starts (status `running`), completed once when it ends
//! ([`Runs::finish_run`](super::Runs::finish_run)), and marked when it is undone. Runs
//! belong to their board and go with it when it is deleted.

use serde::Serialize;

use super::UnixMillis;
use crate::ids::{BoardId, VersionId};

/// Where a run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Working now: its server refreshes its heartbeat (`alive_at`). A running run whose
    /// heartbeat expired belongs to a server that stopped; see
    /// [`Runs::interrupt_stale_runs`](super::Runs::interrupt_stale_runs).
    Running,
    /// The model finished.
    Completed,
    /// Cancelled by a caller or by shutdown.
    Cancelled,
    /// An error stopped it (the model service, the budget, the board).
    Failed,
    /// A cap (steps, tool calls, objects, wall time) stopped it.
    Capped,
    /// Its server stopped while it ran; what it applied before is on the board.
    Interrupted,
}

impl RunState {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Cancelled => "cancelled",
            Self::Failed => "failed",
            Self::Capped => "capped",
            Self::Interrupted => "interrupted",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "running" => Self::Running,
            "completed" => Self::Completed,
            "cancelled" => Self::Cancelled,
            "failed" => Self::Failed,
            "capped" => Self::Capped,
            "interrupted" => Self::Interrupted,
            _ => return None,
        })
    }
}

/// A run to record as started.
#[derive(Clone, Copy, Debug)]
pub struct NewRun<'a> {
    /// The run id (a UUID in simple form); unique across boards.
    pub id: &'a str,
    /// Who asked (the token's `sub`), if known.
    pub user: Option<&'a str>,
    /// What they asked.
    pub prompt: &'a str,
    /// The model the run uses.
    pub model: &'a str,
    /// The automatic version saved just before the run (undo restores deleted content from
    /// it). Usually set after the run claimed its board
    /// ([`Runs::set_run_version`](super::Runs::set_run_version)).
    pub before_version: Option<VersionId>,
    /// Running runs of the board whose heartbeat is older than this are marked interrupted
    /// before the run claims the board: their server stopped.
    pub expired_before: UnixMillis,
}

/// How a run ended, to record once.
#[derive(Clone, Copy, Debug)]
pub struct RunResult<'a> {
    /// How it ended; never [`RunState::Running`].
    pub state: RunState,
    /// Why it failed, was capped or cancelled.
    pub error: Option<&'a str>,
    /// The model's last words, or a count of what was done.
    pub summary: &'a str,
    /// Every tool call, as a JSON array (stored as text).
    pub tool_calls: &'a str,
    /// Prompt tokens the model service reported.
    pub prompt_tokens: u64,
    /// Completion tokens the model service reported.
    pub completion_tokens: u64,
    /// Objects the run created.
    pub objects_created: u32,
    /// Objects the run deleted.
    pub objects_deleted: u32,
    /// Model calls made.
    pub steps: u32,
    /// What the run changed, for undo: opaque bytes (empty if it changed nothing).
    pub changes: &'a [u8],
}

/// A stored run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RunRecord {
    /// The run id.
    pub id: String,
    /// The board it ran on.
    pub board: BoardId,
    /// Who asked.
    pub user: Option<String>,
    /// What they asked.
    pub prompt: String,
    /// The model it used.
    pub model: String,
    /// Where it is.
    pub state: RunState,
    /// Why it failed, was capped or cancelled.
    pub error: Option<String>,
    /// The model's last words (empty while running).
    pub summary: String,
    /// Every tool call, as a JSON array (`[]` while running).
    pub tool_calls: String,
    /// Prompt tokens reported.
    pub prompt_tokens: u64,
    /// Completion tokens reported.
    pub completion_tokens: u64,
    /// Objects created.
    pub objects_created: u32,
    /// Objects deleted.
    pub objects_deleted: u32,
    /// Model calls made.
    pub steps: u32,
    /// When it started.
    pub started_at: UnixMillis,
    /// When it ended, if it did.
    pub finished_at: Option<UnixMillis>,
    /// Its server's last heartbeat while it ran (its start, then refreshed while it works).
    pub alive_at: UnixMillis,
    /// The automatic version saved just before it.
    pub before_version: Option<VersionId>,
    /// What it changed, for undo (empty if nothing, or while running).
    #[serde(skip)]
    pub changes: Vec<u8>,
    /// When it was undone, if it was.
    pub undone_at: Option<UnixMillis>,
    /// Who undid it.
    pub undone_by: Option<String>,
}

/// One scope of the assistant's shared budgets, as stored (see `ai_agent::ScopeState`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BudgetRow {
    /// `""`: all users together; `user:<name>`: one user.
    pub scope: String,
    /// The UTC day `used` and `reserved` belong to (days since the Unix epoch).
    pub day: i64,
    /// Tokens settled (or charged) that day.
    pub used: i64,
    /// Tokens held by model calls in flight.
    pub reserved: i64,
    /// The request-rate cell: when the next request is expected, Unix milliseconds.
    pub tat_ms: i64,
}

/// Changes budget rows in place; returns whether to write them (`false`: refused, nothing
/// changes).
pub type BudgetUpdate<'a> = &'a mut (dyn FnMut(&mut [BudgetRow]) -> bool + Send);
