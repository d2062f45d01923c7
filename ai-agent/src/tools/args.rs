//! Argument types of the board tools. Their doc comments become the schema descriptions the
//! model reads; every `Option` is a required, nullable field in strict mode.
//!
//! Ids are aliases from `getBoardState` or earlier results (`n1`, `f2`, ...). Coordinates are
//! board pixels, origin top-left, y down. Colours are a palette name (yellow, orange, pink,
//! purple, blue, green, grey, red, white) or a CSS colour such as `#2a9d8f`.

use schemars::JsonSchema;
use serde::Deserialize;

/// A rectangle on the board.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Area {
    /// Left edge.
    pub x: f64,
    /// Top edge.
    pub y: f64,
    /// Width.
    pub w: f64,
    /// Height.
    pub h: f64,
}

/// `getBoardState`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GetBoardState {
    /// Area to list object by object; null for the user's viewport (or the whole board when it
    /// is small). Objects elsewhere are summarised by region.
    pub region: Option<Area>,
}

/// `createStickyNote`: a 200×200 sticky note.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateStickyNote {
    /// The note's text.
    pub text: String,
    /// Left edge.
    pub x: f64,
    /// Top edge.
    pub y: f64,
    /// Palette name or CSS colour; null for yellow.
    pub color: Option<String>,
    /// Alias of the frame to put it in, or null.
    pub frame: Option<String>,
}

/// Shapes `createShape` can make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ShapeKind {
    /// Rectangle.
    Rect,
    /// Ellipse.
    Ellipse,
    /// Free text box.
    Text,
}

/// `createShape`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateShape {
    /// rect, ellipse or text.
    pub shape: ShapeKind,
    /// Left edge.
    pub x: f64,
    /// Top edge.
    pub y: f64,
    /// Width (> 0).
    pub width: f64,
    /// Height (> 0).
    pub height: f64,
    /// Text inside the shape, or null.
    pub text: Option<String>,
    /// Palette name or CSS colour, or null for the default.
    pub color: Option<String>,
    /// Alias of the frame to put it in, or null.
    pub frame: Option<String>,
}

/// `createFrame`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateFrame {
    /// The frame's title.
    pub title: String,
    /// Left edge.
    pub x: f64,
    /// Top edge.
    pub y: f64,
    /// Width (> 0).
    pub width: f64,
    /// Height (> 0).
    pub height: f64,
    /// Palette name or CSS colour, or null for the default.
    pub color: Option<String>,
}

/// `createConnector`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateConnector {
    /// Alias of the start object.
    pub from: String,
    /// Alias of the end object.
    pub to: String,
    /// Label on the line, or null.
    pub label: Option<String>,
    /// Palette name or CSS colour, or null for the default.
    pub color: Option<String>,
}

/// `moveObject`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MoveObject {
    /// Alias of the object.
    pub id: String,
    /// New left edge.
    pub x: f64,
    /// New top edge.
    pub y: f64,
}

/// `resizeObject`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResizeObject {
    /// Alias of the object.
    pub id: String,
    /// New width (> 0).
    pub width: f64,
    /// New height (> 0).
    pub height: f64,
}

/// `updateText`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateText {
    /// Alias of the object (for a connector, its label is replaced).
    pub id: String,
    /// The whole new text.
    pub text: String,
}

/// `changeColor`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeColor {
    /// Alias of the object.
    pub id: String,
    /// Palette name or CSS colour.
    pub color: String,
}

/// `deleteObject`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteObject {
    /// Alias of the object. Connectors attached to it are deleted too; a frame's contents
    /// are kept (taken out of the frame).
    pub id: String,
}

/// Layouts of `arrangeObjects`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// Rows of `columns` cells (each cell as large as the largest object).
    Grid,
    /// One row, left to right.
    Row,
    /// One column, top to bottom.
    Column,
}

/// `arrangeObjects`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ArrangeObjects {
    /// Aliases of the objects, in layout order (no connectors).
    pub ids: Vec<String>,
    /// grid, row or column.
    pub layout: Layout,
    /// Left edge of the arrangement; null to keep the objects' current left edge.
    pub x: Option<f64>,
    /// Top edge of the arrangement; null to keep the objects' current top edge.
    pub y: Option<f64>,
    /// Gap between objects (default 40).
    pub spacing: Option<f64>,
    /// Columns of a grid (default: about the square root of the count).
    pub columns: Option<u32>,
}
