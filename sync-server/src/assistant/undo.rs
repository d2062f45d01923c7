//! Undoing a whole run as one forward change, with yrs' `UndoManager` rules.
//!
//! The board's live doc collects deleted content (garbage collection), so what a run deleted
//! or overwrote is often gone from it, and always gone after a restart. Undo therefore works on
//! a scratch doc that keeps deleted content: the version saved just before the run (which holds
//! everything the run could delete or overwrite), then the live state on top. An `UndoManager`
//! on that doc, given the run's inserted and deleted ids as its one stack item, undoes it; the
//! update that produces is then applied to the live doc like any edit.
//!
//! The rules are yrs' (and Yjs'): what the run created is removed, even if someone edited it
//! since; what it deleted comes back with its content; a value it set that someone has since
//! set again keeps the newer value; anything the run did not touch is left alone.

use std::sync::{Arc, Mutex, PoisonError};

use yrs::undo::{Options as UndoOptions, StackItem};
use yrs::updates::decoder::Decode;
use yrs::{Doc, OffsetKind, Options, ReadTxn, StateVector, Transact, UndoManager, Update};

use super::changes::RunChanges;

/// Why an undo could not be computed. Nothing was changed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UndoError {
    /// The saved pre-run version does not load.
    #[error("the version saved before the run does not load: {0}")]
    BadVersion(String),
    /// The board's own state does not load into the scratch doc.
    #[error("the board state does not load: {0}")]
    BadState(String),
}

/// The update (v1, relative to `live`) that undoes `changes`, or `None` if undoing changes
/// nothing. Reads `live` only; the caller applies the update.
pub(crate) fn undo_update(
    live: &Doc,
    before: Option<&[u8]>,
    changes: &RunChanges,
) -> Result<Option<Vec<u8>>, UndoError> {
    if changes.is_empty() {
        return Ok(None);
    }
    let scratch = Doc::with_options(Options {
        // New items continue the live doc's own clock.
        client_id: live.client_id(),
        skip_gc: true,
        offset_kind: OffsetKind::Utf16,
        ..Options::default()
    });
    let roots = crdt_schema::declare_roots(&scratch);
    if let Some(before) = before {
        apply(&scratch, before).map_err(UndoError::BadVersion)?;
    }
    let state = live
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    apply(&scratch, &state).map_err(UndoError::BadState)?;

    let item = StackItem::new(
        scratch.guid(),
        changes.deletions.clone(),
        changes.insertions.clone(),
    );
    let mut manager = UndoManager::with_options(UndoOptions {
        init_undo_stack: vec![item],
        ..UndoOptions::default()
    });
    manager.expand_scope(&scratch, &roots.objects);
    manager.expand_scope(&scratch, &roots.meta);
    manager.expand_scope(&scratch, &roots.chat);

    let captured: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let sink = captured.clone();
    scratch
        .observe_update_v1("undo", move |_, event| {
            sink.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(event.update.clone());
        })
        .map_err(|e| UndoError::BadState(e.to_string()))?;
    manager.undo_blocking();
    drop(manager);

    let updates = std::mem::take(&mut *captured.lock().unwrap_or_else(PoisonError::into_inner));
    match updates.len() {
        0 => Ok(None),
        1 => Ok(updates.into_iter().next()),
        _ => yrs::merge_updates_v1(updates)
            .map(Some)
            .map_err(|e| UndoError::BadState(e.to_string())),
    }
}

fn apply(doc: &Doc, bytes: &[u8]) -> Result<(), String> {
    let update = std::panic::catch_unwind(|| Update::decode_v1(bytes))
        .map_err(|_| "decoder panicked".to_string())?
        .map_err(|e| e.to_string())?;
    doc.transact_mut()
        .apply_update(update)
        .map_err(|e| e.to_string())
}
