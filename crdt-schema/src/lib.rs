//! The board document contract over yrs: typed reads and validated typed mutations.
//!
//! A board is one Yjs document with three roots (PROTOCOL.md, "The board document"; names in
//! [`names`]):
//! `objects` (`Y.Map`: id -> `Y.Map` of fields), `meta` (`Y.Map`) and `chat` (`Y.Array` of
//! plain maps). Plain Yjs clients read and write the same layout.
//!
//! This crate does no I/O, spawns nothing, has no clock and no randomness (ids and timestamps
//! come from the caller), and builds for `wasm32-unknown-unknown`. Every function works inside a
//! transaction the caller owns, so the caller chooses the origin and when to commit.
//!
//! ```
//! use crdt_schema::{declare_roots, ops, read_board, Kind, NewObject, Op};
//! use yrs::{Doc, Transact};
//!
//! let doc = Doc::new();
//! declare_roots(&doc); // once, before any transaction is open
//! let mut txn = doc.transact_mut_with("user-42");
//! let new = NewObject::new("note-1", Kind::Sticky, "user-42", 1_700_000_000_000.0)
//!     .at([10.0, 20.0], [200.0, 200.0])
//!     .with_text("Hello 👋");
//! ops::apply(&mut txn, &Op::Create(new)).expect("valid");
//! let board = read_board(&txn);
//! assert_eq!(board.objects[0].text.as_deref(), Some("Hello 👋"));
//! ```
//!
//! # Layout
//!
//! - [`names`]: root and field names (the public contract).
//! - [`model`]: plain structs of a board as read ([`Board`], [`Object`], [`Kind`], ...).
//! - [`read`]: lenient typed read; wrong-typed values are skipped and reported, never a panic.
//! - [`ops`]: validated mutations ([`Op`], [`NewObject`]); all problems reported at once, nothing
//!   written on failure.
//! - [`restore`]: restore a board to a version as a forward change ([`restore::restore_to`]);
//!   objects and meta follow the version, chat and other roots are untouched.
//! - [`validate`]: [`ValidationError`], [`Issue`], [`IssueCode`].
//! - [`limits`]: lengths and ranges enforced on writes.
//! - [`color`]: the accepted CSS colour syntax.
//! - [`zindex`]: fractional indexes for `z`.
//! - [`text`]: UTF-16 offsets, as JS counts them.
//! - [`ids`]: id syntax and generation from caller-supplied randomness.
//! - [`value`]: [`Value`], a serializable copy of unknown fields.
//! - [`guard`]: refusing updates that nest too deeply, before yrs decodes them.

pub mod color;
pub mod guard;
pub mod ids;
pub mod limits;
pub mod model;
pub mod names;
pub mod ops;
mod plan;
pub mod read;
pub mod restore;
pub mod text;
pub mod validate;
pub mod value;
pub mod zindex;

pub use model::{Board, ChatMessage, Kind, Meta, Object};
pub use ops::{Applied, NewObject, Op};
pub use read::{ReadIssue, ReadProblem, read_board, read_object};
pub use validate::{Issue, IssueCode, ValidationError};
pub use value::Value;
pub use zindex::ZError;

use yrs::{ArrayRef, Doc, MapRef};

/// The root shared types of a board.
#[derive(Debug, Clone)]
pub struct Roots {
    /// `objects`.
    pub objects: MapRef,
    /// `meta`.
    pub meta: MapRef,
    /// `chat`.
    pub chat: ArrayRef,
}

/// Declares the board's roots on `doc`; call once when the doc is created, before applying
/// remote updates or reading (until declared, roots read as `null` in `Doc::to_json`).
///
/// Takes the document's write lock: calling it while a transaction on `doc` is open deadlocks.
/// The mutations in [`ops`] also create missing roots inside their own transaction.
///
/// Text offsets in this crate's API are UTF-16 whatever `OffsetKind` the doc was opened with
/// (see [`text`]); opening the doc with `OffsetKind::Utf16` is still recommended so that other
/// code indexing `Y.Text` directly agrees with JS clients.
pub fn declare_roots(doc: &Doc) -> Roots {
    Roots {
        objects: doc.get_or_insert_map(names::roots::OBJECTS),
        meta: doc.get_or_insert_map(names::roots::META),
        chat: doc.get_or_insert_array(names::roots::CHAT),
    }
}
