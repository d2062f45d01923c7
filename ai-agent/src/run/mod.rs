//! The run loop: one prompt, several model turns, each tool call one board transaction.
//!
//! Per step: describe the board (a read through [`BoardPeer::edit`]) → reserve tokens in the
//! budgets → stream the model's turn → apply each tool call in index order (each its own
//! validated transaction with origin `ai:<run id>`) → send the results back → until the model
//! stops (`finish_reason: stop`, no tool calls) or a cap is reached. The assistant shows in
//! awareness while it works and is cleared at the end, whatever the end.
//!
//! Caps ([`RunCaps`]): model steps, tool calls, objects created, objects deleted, wall time,
//! completion tokens per step. A call that would pass a cap is not applied, is recorded, and
//! ends the run with [`RunStatus::Capped`]. Cancellation and the wall time interrupt a model
//! call at once and stop before the next tool call; an edit already handed to the board's
//! owner is never abandoned half-way.

mod prompt;
mod steps;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::budget::BudgetLedger;
use crate::llm::LlmClient;
use crate::peer::BoardPeer;

pub use crate::llm::Usage;

/// What to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRequest {
    /// Run id; the run's transactions carry origin `ai:<run id>`.
    pub run_id: String,
    /// Who asked (the key of the per-user budgets).
    pub user: String,
    /// What they asked for.
    pub prompt: String,
    /// What they are looking at (board pixels): listed first, new content goes near it.
    pub viewport: Option<Viewport>,
}

/// A rectangle of the board, in board pixels.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Viewport {
    /// Left edge.
    pub x: f64,
    /// Top edge.
    pub y: f64,
    /// Width.
    pub w: f64,
    /// Height.
    pub h: f64,
}

impl From<Viewport> for crate::tools::Area {
    fn from(v: Viewport) -> Self {
        crate::tools::Area {
            x: v.x,
            y: v.y,
            w: v.w,
            h: v.h,
        }
    }
}

/// Limits on one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunCaps {
    /// Model calls.
    pub max_steps: u32,
    /// Tool calls, all kinds together.
    pub max_tool_calls: u32,
    /// Objects created.
    pub max_creates: u32,
    /// Objects deleted (checked before each delete; connectors removed with an object count).
    pub max_deletes: u32,
    /// Wall time of the whole run.
    pub wall_time: Duration,
    /// `max_completion_tokens` of each model call (reasoning included).
    pub max_completion_tokens: u32,
}

impl Default for RunCaps {
    fn default() -> Self {
        RunCaps {
            max_steps: 8,
            max_tool_calls: 100,
            max_creates: 60,
            max_deletes: 10,
            wall_time: Duration::from_secs(120),
            max_completion_tokens: 2048,
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// The model finished.
    Completed,
    /// The run was cancelled.
    Cancelled,
    /// An error stopped it (the model service, the budget, the board).
    Failed,
    /// A cap stopped it.
    Capped,
}

/// One tool call of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolCallRecord {
    /// The step (model call, from 1) it came from.
    pub step: u32,
    /// Tool name as the model wrote it.
    pub name: String,
    /// Arguments as the model wrote them (cut to 4,000 characters).
    pub arguments: String,
    /// The result the model got.
    pub result: Value,
    /// Whether the board changed.
    pub applied: bool,
}

/// How a run went. Also the payload of the final [`RunEvent::Done`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunOutcome {
    /// The run id.
    pub run_id: String,
    /// How it ended.
    pub status: RunStatus,
    /// Why it failed, was capped or cancelled.
    pub error: Option<String>,
    /// The model's last words, or a count of what was done.
    pub summary: String,
    /// Every tool call, in order.
    pub tool_calls: Vec<ToolCallRecord>,
    /// Tokens the service reported.
    pub usage: Usage,
    /// Objects created.
    pub objects_created: u32,
    /// Objects deleted.
    pub objects_deleted: u32,
    /// Model calls made.
    pub steps: u32,
}

/// Progress of a run, for the prompter.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RunEvent {
    /// A step (model call) starts.
    Step {
        /// Its number, from 1.
        step: u32,
    },
    /// A tool call was handled.
    Tool(ToolCallRecord),
    /// Text the model wrote in a step.
    Text {
        /// The text.
        text: String,
    },
    /// The run ended.
    Done(RunOutcome),
}

/// Runs the assistant for `request` on the board behind `peer`. Never panics on model or board
/// input; always clears the assistant's presence and sends [`RunEvent::Done`] before
/// returning.
pub async fn run(
    llm: &LlmClient,
    peer: &dyn BoardPeer,
    budgets: &dyn BudgetLedger,
    request: RunRequest,
    caps: &RunCaps,
    events: mpsc::Sender<RunEvent>,
    cancel: CancellationToken,
) -> RunOutcome {
    let span = tracing::info_span!("assistant_run", run_id = %request.run_id);
    steps::Runner::new(llm, peer, budgets, request, caps, events, cancel)
        .run()
        .instrument(span)
        .await
}
