//! The board tools offered to the model.
//!
//! - [`definitions`]: the function tools with strict JSON schemas generated from [`args`].
//! - [`prepare`]: a model's call (name + JSON arguments) parsed and checked without the
//!   document; problems become an error result for the model.
//! - [`PreparedCall::into_edit`] / [`describe`]: the closures handed to
//!   [`crate::BoardPeer::edit`]. A write opens exactly one transaction with origin
//!   `ai:<run id>`, resolves aliases, validates every op with crdt-schema before writing
//!   anything, writes per field (a move writes only `pos`), and returns the transaction's v1
//!   update; a read returns no update.
//!
//! Results are short JSON: `{"ok":true,"created":["n4"]}`, `{"ok":true,"updated":["n1"]}`,
//! `{"ok":true,"deleted":["n2","c1"]}`, `{"ok":true,"board":{...}}` or
//! `{"ok":false,"errors":[{"field","code","message"}]}`; they never echo board text (the board
//! view is the only way text reaches the model, as JSON data).

mod action;
mod aliases;
pub mod args;
mod clean;
mod edit;
mod schema;
mod view;

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use async_openai::types::chat::{ChatCompletionTool, ChatCompletionTools, FunctionObject};
use serde_json::Value;

pub use action::{Effect, ToolIssue};
pub use args::Area;

pub(crate) use edit::CallReport;

use action::{Action, parse_action};
use aliases::Aliases;
use edit::{Fresh, execute};
use schema::strict_schema;

use crate::peer::{Edit, Edited};

/// The tools, by the names the model calls them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ToolName {
    /// `getBoardState`
    GetBoardState,
    /// `createStickyNote`
    CreateStickyNote,
    /// `createShape`
    CreateShape,
    /// `createFrame`
    CreateFrame,
    /// `createConnector`
    CreateConnector,
    /// `moveObject`
    MoveObject,
    /// `resizeObject`
    ResizeObject,
    /// `updateText`
    UpdateText,
    /// `changeColor`
    ChangeColor,
    /// `deleteObject`
    DeleteObject,
    /// `arrangeObjects`
    ArrangeObjects,
}

impl ToolName {
    /// Every tool, in the order they are offered.
    pub const ALL: [ToolName; 11] = [
        ToolName::GetBoardState,
        ToolName::CreateStickyNote,
        ToolName::CreateShape,
        ToolName::CreateFrame,
        ToolName::CreateConnector,
        ToolName::MoveObject,
        ToolName::ResizeObject,
        ToolName::UpdateText,
        ToolName::ChangeColor,
        ToolName::DeleteObject,
        ToolName::ArrangeObjects,
    ];

    /// The name the model uses.
    pub fn as_str(self) -> &'static str {
        match self {
            ToolName::GetBoardState => "getBoardState",
            ToolName::CreateStickyNote => "createStickyNote",
            ToolName::CreateShape => "createShape",
            ToolName::CreateFrame => "createFrame",
            ToolName::CreateConnector => "createConnector",
            ToolName::MoveObject => "moveObject",
            ToolName::ResizeObject => "resizeObject",
            ToolName::UpdateText => "updateText",
            ToolName::ChangeColor => "changeColor",
            ToolName::DeleteObject => "deleteObject",
            ToolName::ArrangeObjects => "arrangeObjects",
        }
    }

    fn description(self) -> &'static str {
        match self {
            ToolName::GetBoardState => {
                "Read the board: objects with ids, positions, sizes, colours and text (as data), \
                 and summaries of regions not listed."
            }
            ToolName::CreateStickyNote => "Create a 200x200 sticky note.",
            ToolName::CreateShape => "Create a rectangle, ellipse or free text box.",
            ToolName::CreateFrame => "Create a frame (a titled area that groups objects).",
            ToolName::CreateConnector => "Connect two objects with a line.",
            ToolName::MoveObject => "Move an object (sets its top-left corner).",
            ToolName::ResizeObject => "Resize an object.",
            ToolName::UpdateText => "Replace the text of an object (a connector's label).",
            ToolName::ChangeColor => "Change the colour of an object.",
            ToolName::DeleteObject => "Delete an object and the connectors attached to it.",
            ToolName::ArrangeObjects => {
                "Lay objects out in a grid, a row or a column with even spacing."
            }
        }
    }

    fn parameters(self) -> Value {
        match self {
            ToolName::GetBoardState => strict_schema::<args::GetBoardState>(),
            ToolName::CreateStickyNote => strict_schema::<args::CreateStickyNote>(),
            ToolName::CreateShape => strict_schema::<args::CreateShape>(),
            ToolName::CreateFrame => strict_schema::<args::CreateFrame>(),
            ToolName::CreateConnector => strict_schema::<args::CreateConnector>(),
            ToolName::MoveObject => strict_schema::<args::MoveObject>(),
            ToolName::ResizeObject => strict_schema::<args::ResizeObject>(),
            ToolName::UpdateText => strict_schema::<args::UpdateText>(),
            ToolName::ChangeColor => strict_schema::<args::ChangeColor>(),
            ToolName::DeleteObject => strict_schema::<args::DeleteObject>(),
            ToolName::ArrangeObjects => strict_schema::<args::ArrangeObjects>(),
        }
    }
}

impl fmt::Display for ToolName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The name is not one of the tools.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown tool")]
pub struct UnknownTool;

impl FromStr for ToolName {
    type Err = UnknownTool;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ToolName::ALL
            .into_iter()
            .find(|t| t.as_str() == s.trim())
            .ok_or(UnknownTool)
    }
}

/// The tool definitions sent with every request (byte-stable, for prefix caching).
pub fn definitions() -> Vec<ChatCompletionTools> {
    ToolName::ALL
        .into_iter()
        .map(|t| {
            ChatCompletionTools::Function(ChatCompletionTool {
                function: FunctionObject {
                    name: t.as_str().to_string(),
                    description: Some(t.description().to_string()),
                    parameters: Some(t.parameters()),
                    strict: Some(true),
                },
            })
        })
        .collect()
}

/// Per-run state shared with the edit closures: the origin and the alias table.
#[derive(Debug, Clone)]
pub struct ToolContext {
    origin: Arc<str>,
    aliases: Arc<Mutex<Aliases>>,
    viewport: Option<Area>,
}

impl ToolContext {
    /// The context of run `run_id`; `viewport` is the user's view, listed first.
    pub fn new(run_id: &str, viewport: Option<Area>) -> Self {
        ToolContext {
            origin: Arc::from(format!("ai:{run_id}")),
            aliases: Arc::new(Mutex::new(Aliases::default())),
            viewport,
        }
    }

    /// The transaction origin of the run's edits, `ai:<run id>` (also written as
    /// `created_by` of the objects it creates).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    fn lock_aliases(&self) -> MutexGuard<'_, Aliases> {
        self.aliases
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A tool call parsed and checked as far as possible without the document.
#[derive(Debug, Clone)]
pub struct PreparedCall {
    name: ToolName,
    action: Action,
}

/// Parses the model's call, or returns the error result to send back to it.
pub fn prepare(name: &str, arguments: &str) -> Result<PreparedCall, Value> {
    let Ok(tool) = name.parse::<ToolName>() else {
        let issue = ToolIssue::new(
            "name",
            "unknown_tool",
            "no such tool; use one of the tools offered",
        );
        return Err(CallReport::failed(&[issue]).result);
    };
    match parse_action(tool, arguments) {
        Ok(action) => Ok(PreparedCall { name: tool, action }),
        Err(issues) => Err(CallReport::failed(&issues).result),
    }
}

impl PreparedCall {
    /// The tool.
    pub fn name(&self) -> ToolName {
        self.name
    }

    /// What the call does, for caps.
    pub fn effect(&self) -> Effect {
        self.action.effect()
    }

    /// The closure that runs this call on the board's owner. Its result is the call's report
    /// (see [`crate::run()`]; the model sees only its `result` field).
    pub fn into_edit(self, ctx: &ToolContext) -> Edit {
        let ctx = ctx.clone();
        let fresh = Fresh {
            id: crdt_schema::ids::new_id(*uuid::Uuid::new_v4().as_bytes()),
            now_ms: now_ms(),
        };
        let action = self.action;
        Box::new(move |doc| {
            let (update, report) = execute(doc, &ctx, action, &fresh);
            Edited {
                update,
                result: serde_json::to_value(report).unwrap_or(Value::Null),
            }
        })
    }
}

/// The closure that reads the board view (focused on the viewport), as at the start of each
/// step.
pub fn describe(ctx: &ToolContext) -> Edit {
    PreparedCall {
        name: ToolName::GetBoardState,
        action: Action::Read { region: None },
    }
    .into_edit(ctx)
}

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as f64)
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests;
