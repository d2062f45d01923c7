//! Parsing a tool call into an [`Action`]: JSON arguments to typed values, palette colours,
//! and the checks that need no document (lengths, counts, duplicates).

use crdt_schema::Kind;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::ToolName;
use super::args::{
    Area, ArrangeObjects, ChangeColor, CreateConnector, CreateFrame, CreateShape, CreateStickyNote,
    DeleteObject, GetBoardState, Layout, MoveObject, ResizeObject, ShapeKind, UpdateText,
};
use super::clean::clean_word;

/// Longest text a tool may write (UTF-16 units), well under crdt-schema's limit.
pub(crate) const MAX_TOOL_TEXT: usize = 4000;
/// Most objects one `arrangeObjects` call may move.
pub(crate) const MAX_ARRANGE: usize = 100;
/// Size of a sticky note.
pub(crate) const STICKY_SIZE: [f64; 2] = [200.0, 200.0];
const DEFAULT_SPACING: f64 = 40.0;
const MAX_SPACING: f64 = 10_000.0;
const MAX_COLUMNS: u32 = 100;

/// One problem with a tool call, as the model sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolIssue {
    /// Argument the problem concerns (`x`, `id`, `ids[2].y`, ...).
    pub field: String,
    /// Machine-readable code (`invalid_arguments`, `unknown_id`, `out_of_range`, ...).
    pub code: String,
    /// Short explanation; never contains board text.
    pub message: String,
}

impl ToolIssue {
    pub(crate) fn new(field: &str, code: &str, message: impl Into<String>) -> Self {
        ToolIssue {
            field: field.to_string(),
            code: code.to_string(),
            message: message.into(),
        }
    }
}

/// A parsed call whose ids are still aliases.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Action {
    Read {
        region: Option<Area>,
    },
    Create {
        kind: Kind,
        pos: [f64; 2],
        size: [f64; 2],
        text: Option<String>,
        color: Option<String>,
        frame: Option<String>,
    },
    Connect {
        from: String,
        to: String,
        label: Option<String>,
        color: Option<String>,
    },
    Move {
        id: String,
        pos: [f64; 2],
    },
    Resize {
        id: String,
        size: [f64; 2],
    },
    Text {
        id: String,
        text: String,
    },
    Color {
        id: String,
        color: String,
    },
    Delete {
        id: String,
    },
    Arrange {
        ids: Vec<String>,
        layout: Layout,
        x: Option<f64>,
        y: Option<f64>,
        spacing: f64,
        columns: Option<u32>,
    },
}

/// What a call does to the board, for caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// Reads only.
    Read,
    /// Creates one object.
    Create,
    /// Changes existing objects.
    Update,
    /// Deletes an object (and its connectors).
    Delete,
}

impl Action {
    pub(crate) fn effect(&self) -> Effect {
        match self {
            Action::Read { .. } => Effect::Read,
            Action::Create { .. } | Action::Connect { .. } => Effect::Create,
            Action::Delete { .. } => Effect::Delete,
            _ => Effect::Update,
        }
    }
}

/// A pleasant whiteboard shade for palette names; any other value is passed on as a CSS
/// colour (and validated by crdt-schema).
pub(crate) fn palette(color: &str) -> String {
    let hex = match color.trim().to_ascii_lowercase().as_str() {
        "yellow" => "#fff59d",
        "orange" => "#ffcc80",
        "pink" => "#f8bbd0",
        "purple" => "#d1c4e9",
        "blue" => "#bbdefb",
        "green" => "#c8e6c9",
        "grey" | "gray" => "#e0e0e0",
        "red" => "#ef9a9a",
        "white" => "#ffffff",
        _ => return color.to_string(),
    };
    hex.to_string()
}

fn parse<T: DeserializeOwned>(arguments: &str) -> Result<T, Vec<ToolIssue>> {
    let arguments = if arguments.trim().is_empty() {
        "{}"
    } else {
        arguments
    };
    serde_json::from_str(arguments).map_err(|e| {
        vec![ToolIssue::new(
            "arguments",
            "invalid_arguments",
            clean_word(&e.to_string(), 200),
        )]
    })
}

fn text_issue(issues: &mut Vec<ToolIssue>, field: &str, text: &str) {
    let len = text.encode_utf16().count();
    if len > MAX_TOOL_TEXT {
        issues.push(ToolIssue::new(
            field,
            "bad_length",
            format!("must be at most {MAX_TOOL_TEXT} characters, got {len}"),
        ));
    }
}

/// Parses `arguments` for the tool `name`.
pub(crate) fn parse_action(name: ToolName, arguments: &str) -> Result<Action, Vec<ToolIssue>> {
    let mut issues = Vec::new();
    let action = match name {
        ToolName::GetBoardState => {
            let a: GetBoardState = parse(arguments)?;
            Action::Read { region: a.region }
        }
        ToolName::CreateStickyNote => {
            let a: CreateStickyNote = parse(arguments)?;
            text_issue(&mut issues, "text", &a.text);
            Action::Create {
                kind: Kind::Sticky,
                pos: [a.x, a.y],
                size: STICKY_SIZE,
                text: Some(a.text),
                color: Some(palette(a.color.as_deref().unwrap_or("yellow"))),
                frame: a.frame,
            }
        }
        ToolName::CreateShape => {
            let a: CreateShape = parse(arguments)?;
            if let Some(t) = &a.text {
                text_issue(&mut issues, "text", t);
            }
            Action::Create {
                kind: match a.shape {
                    ShapeKind::Rect => Kind::Rect,
                    ShapeKind::Ellipse => Kind::Ellipse,
                    ShapeKind::Text => Kind::Text,
                },
                pos: [a.x, a.y],
                size: [a.width, a.height],
                text: a.text,
                color: a.color.as_deref().map(palette),
                frame: a.frame,
            }
        }
        ToolName::CreateFrame => {
            let a: CreateFrame = parse(arguments)?;
            text_issue(&mut issues, "title", &a.title);
            Action::Create {
                kind: Kind::Frame,
                pos: [a.x, a.y],
                size: [a.width, a.height],
                text: Some(a.title),
                color: a.color.as_deref().map(palette),
                frame: None,
            }
        }
        ToolName::CreateConnector => {
            let a: CreateConnector = parse(arguments)?;
            Action::Connect {
                from: a.from,
                to: a.to,
                label: a.label,
                color: a.color.as_deref().map(palette),
            }
        }
        ToolName::MoveObject => {
            let a: MoveObject = parse(arguments)?;
            Action::Move {
                id: a.id,
                pos: [a.x, a.y],
            }
        }
        ToolName::ResizeObject => {
            let a: ResizeObject = parse(arguments)?;
            Action::Resize {
                id: a.id,
                size: [a.width, a.height],
            }
        }
        ToolName::UpdateText => {
            let a: UpdateText = parse(arguments)?;
            text_issue(&mut issues, "text", &a.text);
            Action::Text {
                id: a.id,
                text: a.text,
            }
        }
        ToolName::ChangeColor => {
            let a: ChangeColor = parse(arguments)?;
            Action::Color {
                id: a.id,
                color: palette(&a.color),
            }
        }
        ToolName::DeleteObject => {
            let a: DeleteObject = parse(arguments)?;
            Action::Delete { id: a.id }
        }
        ToolName::ArrangeObjects => {
            let a: ArrangeObjects = parse(arguments)?;
            if a.ids.is_empty() || a.ids.len() > MAX_ARRANGE {
                issues.push(ToolIssue::new(
                    "ids",
                    "bad_length",
                    format!("give 1 to {MAX_ARRANGE} ids"),
                ));
            }
            for (i, id) in a.ids.iter().enumerate() {
                if a.ids[..i].iter().any(|other| other.trim() == id.trim()) {
                    issues.push(ToolIssue::new(
                        &format!("ids[{i}]"),
                        "duplicate",
                        "this id is already in the list",
                    ));
                }
            }
            let spacing = a.spacing.unwrap_or(DEFAULT_SPACING);
            if !(0.0..=MAX_SPACING).contains(&spacing) {
                issues.push(ToolIssue::new(
                    "spacing",
                    "out_of_range",
                    format!("must be between 0 and {MAX_SPACING}"),
                ));
            }
            if a.columns.is_some_and(|c| c == 0 || c > MAX_COLUMNS) {
                issues.push(ToolIssue::new(
                    "columns",
                    "out_of_range",
                    format!("must be between 1 and {MAX_COLUMNS}"),
                ));
            }
            Action::Arrange {
                ids: a.ids,
                layout: a.layout,
                x: a.x,
                y: a.y,
                spacing,
                columns: a.columns,
            }
        }
    };
    if issues.is_empty() {
        Ok(action)
    } else {
        Err(issues)
    }
}

/// Top-left positions for objects of `sizes` laid out from `origin`.
pub(crate) fn layout_positions(
    sizes: &[[f64; 2]],
    layout: Layout,
    origin: [f64; 2],
    spacing: f64,
    columns: Option<u32>,
) -> Vec<[f64; 2]> {
    let [x0, y0] = origin;
    match layout {
        Layout::Row => {
            let mut x = x0;
            sizes
                .iter()
                .map(|[w, _]| {
                    let p = [x, y0];
                    x += w + spacing;
                    p
                })
                .collect()
        }
        Layout::Column => {
            let mut y = y0;
            sizes
                .iter()
                .map(|[_, h]| {
                    let p = [x0, y];
                    y += h + spacing;
                    p
                })
                .collect()
        }
        Layout::Grid => {
            let n = sizes.len().max(1);
            let cols = columns
                .map(|c| c as usize)
                .unwrap_or_else(|| (n as f64).sqrt().ceil() as usize)
                .max(1);
            let cell_w = sizes.iter().map(|s| s[0]).fold(0.0, f64::max);
            let cell_h = sizes.iter().map(|s| s[1]).fold(0.0, f64::max);
            (0..sizes.len())
                .map(|i| {
                    let (col, row) = ((i % cols) as f64, (i / cols) as f64);
                    [x0 + col * (cell_w + spacing), y0 + row * (cell_h + spacing)]
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_and_reports_argument_problems() {
        let a = parse_action(
            ToolName::CreateStickyNote,
            r#"{"text":"hi","x":1,"y":2,"color":"blue","frame":null}"#,
        )
        .unwrap();
        assert!(
            matches!(a, Action::Create { ref color, .. } if color.as_deref() == Some("#bbdefb"))
        );
        let e = parse_action(ToolName::MoveObject, r#"{"id":"n1","x":NaN,"y":0}"#).unwrap_err();
        assert_eq!(e[0].code, "invalid_arguments");
        let e = parse_action(ToolName::MoveObject, r#"{"id":"n1","x":1e999,"y":0}"#).unwrap_err();
        assert_eq!(e[0].code, "invalid_arguments");
        let e = parse_action(
            ToolName::ArrangeObjects,
            r#"{"ids":["n1","n1"],"layout":"row","x":null,"y":null,"spacing":-1,"columns":0}"#,
        )
        .unwrap_err();
        let codes: Vec<_> = e.iter().map(|i| i.code.as_str()).collect();
        assert_eq!(codes, ["duplicate", "out_of_range", "out_of_range"]);
    }

    #[test]
    fn layouts() {
        let sizes = [[100.0, 50.0], [200.0, 80.0], [100.0, 50.0]];
        assert_eq!(
            layout_positions(&sizes, Layout::Row, [0.0, 10.0], 10.0, None),
            [[0.0, 10.0], [110.0, 10.0], [320.0, 10.0]]
        );
        assert_eq!(
            layout_positions(&sizes, Layout::Column, [5.0, 0.0], 0.0, None),
            [[5.0, 0.0], [5.0, 50.0], [5.0, 130.0]]
        );
        assert_eq!(
            layout_positions(&sizes, Layout::Grid, [0.0, 0.0], 20.0, Some(2)),
            [[0.0, 0.0], [220.0, 0.0], [0.0, 100.0]]
        );
    }
}
