//! The board replica: a yrs document with the board's roots, this client's presence, local undo
//! and a record of what each transaction changed.
//!
//! Local edits run in transactions with this client's origin ([`LOCAL`]), and only they (and the
//! undo manager's own undos and redos of them) are undoable; updates from the server run with
//! [`REMOTE`]. Edits, undos and redos yield their updates, to be stored and sent.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};

use crdt_schema::{Applied, Board, Object, Op, Roots, ValidationError, declare_roots};
use serde::Serialize;
use yrs::sync::{Awareness, Clock};
use yrs::types::{Event, PathSegment};
use yrs::undo::Options as UndoOptions;
use yrs::{
    ClientID, DeepObservable, Doc, OffsetKind, Options, ReadTxn, StateVector, Transact,
    UndoManager, Update,
};

/// Origin of this client's own edits.
pub const LOCAL: &str = "client-wasm:local";
/// Origin of updates applied from the server or the offline store.
pub const REMOTE: &str = "client-wasm:remote";

/// What transactions changed since it was last taken.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Changes {
    /// Everything may have changed (the replica was loaded): re-read the whole board.
    pub all: bool,
    /// Objects created, changed or deleted (by id, sorted).
    pub objects: BTreeSet<String>,
    /// Whether `meta` changed.
    pub meta: bool,
    /// Whether `chat` changed.
    pub chat: bool,
}

impl Changes {
    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        !self.all && self.objects.is_empty() && !self.meta && !self.chat
    }
}

/// Why a local edit was not made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    /// The operation is invalid against the current board; nothing was written.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The server refused this client's edits (a `read` token): nothing was written.
    #[error("read-only: the server refuses edits from this token")]
    ReadOnly,
}

type Shared<T> = Arc<Mutex<T>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The replica.
pub struct Replica {
    doc: Doc,
    roots: Roots,
    awareness: Awareness,
    undo: UndoManager,
    changes: Shared<Changes>,
    local_updates: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("client_id", &self.doc.client_id())
            .finish_non_exhaustive()
    }
}

impl Replica {
    /// A new replica with a random client id (a new one per session, as Yjs does: two tabs
    /// must never share one). `clock` stamps presence and groups undo steps;
    /// `capture_timeout_ms` is how close in time edits must be to undo as one step.
    pub fn new(clock: Arc<dyn Clock>, capture_timeout_ms: u64) -> Self {
        let doc = Doc::with_options(Options {
            offset_kind: OffsetKind::Utf16,
            ..Options::default()
        });
        let roots = declare_roots(&doc);
        let changes: Shared<Changes> = Arc::default();
        {
            let c = changes.clone();
            roots.objects.observe_deep("changes", move |txn, events| {
                let mut c = lock(&c);
                if c.all {
                    return;
                }
                for event in events.iter() {
                    match event.path().front() {
                        Some(PathSegment::Key(id)) => {
                            c.objects.insert(id.to_string());
                        }
                        _ => {
                            if let Event::Map(e) = event {
                                c.objects.extend(e.keys(txn).keys().map(|k| k.to_string()));
                            }
                        }
                    }
                }
            });
            let c = changes.clone();
            roots
                .meta
                .observe_deep("changes", move |_, _| lock(&c).meta = true);
            let c = changes.clone();
            roots
                .chat
                .observe_deep("changes", move |_, _| lock(&c).chat = true);
        }
        let mut undo = UndoManager::with_options(UndoOptions {
            capture_timeout_millis: capture_timeout_ms,
            tracked_origins: Default::default(),
            capture_transaction: None,
            timestamp: clock.clone(),
            init_undo_stack: Vec::new(),
            init_redo_stack: Vec::new(),
        });
        undo.expand_scope(&doc, &roots.objects);
        undo.expand_scope(&doc, &roots.meta);
        undo.include_origin(LOCAL);
        let awareness = Awareness::with_clock(doc.clone(), ClockRef(clock));
        Replica {
            doc,
            roots,
            awareness,
            undo,
            changes,
            local_updates: Vec::new(),
        }
    }

    /// The document's client id.
    pub fn client_id(&self) -> ClientID {
        self.doc.client_id()
    }

    /// The document.
    pub fn doc(&self) -> &Doc {
        &self.doc
    }

    /// Presence.
    pub fn awareness(&self) -> &Awareness {
        &self.awareness
    }

    /// Presence, to change.
    pub fn awareness_mut(&mut self) -> &mut Awareness {
        &mut self.awareness
    }

    /// The state vector.
    pub fn state_vector(&self) -> StateVector {
        self.doc.transact().state_vector()
    }

    /// What the server lacks, given its state vector.
    pub fn diff(&self, sv: &StateVector) -> Vec<u8> {
        self.doc.transact().encode_state_as_update_v1(sv)
    }

    /// The whole document as one update.
    pub fn snapshot(&self) -> Vec<u8> {
        self.diff(&StateVector::default())
    }

    /// Whether applying `update` now would leave a gap: it continues a client's clocks past
    /// what this replica has. (yrs 0.28 keeps such an update pending and can lose it when a
    /// later update fills the gap, so gapped updates are held until the gap is filled.)
    pub fn skips_clocks(&self, update: &Update) -> bool {
        let sv = self.state_vector();
        update
            .state_vector_lower()
            .iter()
            .any(|(client, &clock)| clock > sv.get(client))
    }

    /// Applies an update from the server or the store (already checked by the wire guard).
    pub fn apply_remote(&mut self, update: Update) -> Result<(), yrs::error::UpdateError> {
        self.doc.transact_mut_with(REMOTE).apply_update(update)
    }

    /// Applies a validated operation as one transaction of this client.
    pub fn apply(&mut self, op: &Op) -> Result<Applied, EditError> {
        let mut txn = self.doc.transact_mut_with(LOCAL);
        let applied = crdt_schema::ops::apply(&mut txn, op)?;
        let update = txn.encode_update_v1();
        drop(txn);
        self.local_updates.push(update);
        Ok(applied)
    }

    /// Undoes this client's last edit (others' edits stay). Returns whether there was one.
    pub fn undo(&mut self) -> bool {
        let before = self.state_vector();
        let done = self.undo.undo_blocking();
        self.record_since(done, &before);
        done
    }

    /// Records what an undo or redo (a transaction of the undo manager's) wrote: the inserts
    /// since `before` and the document's delete set, as a Yjs diff does. (Observing every
    /// transaction's update instead would re-encode each update from the server too.)
    fn record_since(&mut self, done: bool, before: &StateVector) {
        if done {
            let update = self.diff(before);
            self.local_updates.push(update);
        }
    }

    /// Redoes the last undone edit. Returns whether there was one.
    pub fn redo(&mut self) -> bool {
        let before = self.state_vector();
        let done = self.undo.redo_blocking();
        self.record_since(done, &before);
        done
    }

    /// Whether there is an edit to undo.
    pub fn can_undo(&self) -> bool {
        self.undo.can_undo()
    }

    /// Whether there is an edit to redo.
    pub fn can_redo(&self) -> bool {
        self.undo.can_redo()
    }

    /// Ends the current undo step: the next edit starts a new one even within the capture
    /// timeout.
    pub fn stop_capturing(&mut self) {
        self.undo.reset();
    }

    /// Updates made by this client (edits, undos, redos) since last taken, in order.
    pub fn take_local_updates(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.local_updates)
    }

    /// Applies a whole stored replica: the change is reported as [`Changes::all`], without
    /// recording each object (a 10,000-object board would name them all).
    pub fn load(&mut self, update: Update) -> Result<(), yrs::error::UpdateError> {
        lock(&self.changes).all = true;
        self.apply_remote(update)
    }

    /// What changed since last taken.
    pub fn take_changes(&mut self) -> Changes {
        std::mem::take(&mut *lock(&self.changes))
    }

    /// The whole board, typed.
    pub fn board(&self) -> Board {
        crdt_schema::read_board(&self.doc.transact())
    }

    /// One object, typed, if it exists and has a known shape.
    pub fn object(&self, id: &str) -> Option<Object> {
        crdt_schema::read_object(&self.doc.transact(), id).map(|(o, _)| o)
    }

    /// The roots.
    pub fn roots(&self) -> &Roots {
        &self.roots
    }
}

/// Lets one clock serve the undo manager and presence.
struct ClockRef(Arc<dyn Clock>);

impl Clock for ClockRef {
    fn now(&self) -> yrs::sync::time::Timestamp {
        self.0.now()
    }
}
