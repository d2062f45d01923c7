//! Names of the root types and fields of a board document: the public contract that plain Yjs
//! clients read and write (described in PROTOCOL.md, "The board document").

/// Names of the root shared types. Declare them with [`crate::declare_roots`].
pub mod roots {
    /// Root `Y.Map`: object id -> `Y.Map` of fields.
    pub const OBJECTS: &str = "objects";
    /// Root `Y.Map`: board-level settings (`title`, ...).
    pub const META: &str = "meta";
    /// Root `Y.Array`: chat messages as plain maps `{id, author, text, at}`.
    pub const CHAT: &str = "chat";
}

/// Field names inside one object's `Y.Map`.
pub mod fields {
    /// `"sticky" | "rect" | "ellipse" | "text" | "frame" | "connector"` or any other string.
    pub const KIND: &str = "kind";
    /// `[x, y]`: one value (an array of two numbers), never separate keys.
    pub const POS: &str = "pos";
    /// `[width, height]`: one value (an array of two numbers).
    pub const SIZE: &str = "size";
    /// Rotation in degrees (number).
    pub const ROTATION: &str = "rotation";
    /// Fractional index (string); objects paint in lexicographic order of `z`.
    pub const Z: &str = "z";
    /// `Y.Text`: the collaboratively edited label or body.
    pub const TEXT: &str = "text";
    /// CSS colour string.
    pub const COLOR: &str = "color";
    /// Id of the containing frame (optional).
    pub const FRAME: &str = "frame";
    /// Connector start object id.
    pub const FROM: &str = "from";
    /// Connector end object id.
    pub const TO: &str = "to";
    /// Connector label (plain string, optional).
    pub const LABEL: &str = "label";
    /// Who created the object (string).
    pub const CREATED_BY: &str = "created_by";
    /// When the object was created (number, ms since the Unix epoch).
    pub const CREATED_AT: &str = "created_at";

    /// Every field this crate knows; others are kept as extras.
    pub const ALL: [&str; 13] = [
        KIND, POS, SIZE, ROTATION, Z, TEXT, COLOR, FRAME, FROM, TO, LABEL, CREATED_BY, CREATED_AT,
    ];
}

/// Keys of the `meta` root map.
pub mod meta_fields {
    /// Board title (string).
    pub const TITLE: &str = "title";
}

/// Keys of one chat message (a plain map in the `chat` array).
pub mod chat_fields {
    /// Message id (string).
    pub const ID: &str = "id";
    /// Author (string).
    pub const AUTHOR: &str = "author";
    /// Message text (string).
    pub const TEXT: &str = "text";
    /// When it was posted (number, ms since the Unix epoch).
    pub const AT: &str = "at";
}
