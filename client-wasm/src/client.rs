//! The client without I/O: what to send, what to store and what to tell the app, given what
//! the app did and what the server sent.
//!
//! The browser driver (`browser`) owns the WebSocket, IndexedDB and timers; it feeds events in
//! (`connected`, `receive`, `stored`, `disconnected`, the app's operations) and carries out the
//! [`Output`]s in order. The order encodes the rules:
//!
//! - **Stored before sent.** A local edit first yields [`Output::Store`] with the update and the
//!   pending edits; its [`Output::Send`] comes only after the driver reports the write done
//!   ([`Client::stored`]), so an edit the server may have seen is always in the offline store.
//! - **Durable means acknowledged.** [`crate::durability`] turns the server's acknowledgements into
//!   a durable state vector, stored with the pending edits so that `pending_edits` survives a
//!   reload.
//! - **No gaps.** An update from the server that continues clocks this replica lacks is held
//!   (bounded) until the gap is filled, then applied.

use std::collections::VecDeque;
use std::sync::Arc;

use crdt_schema::{Applied, Op};
use serde::Serialize;
use yrs::sync::{AwarenessUpdate, Clock};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{ClientID, StateVector};

use crate::durability::{AckError, Durability, Edit};
use crate::replica::{Changes, EditError, Replica};
use crate::store::{Compaction, StoredMeta};
use crate::wire::{self, ServerFrame, WireError};

/// Bytes of gapped updates held at once; past it, they are dropped and the client asks the
/// server again (a new sync step 1), which resends everything this replica lacks.
pub const MAX_HELD_BYTES: usize = 64 << 20;

/// Something for the driver to do.
#[derive(Debug)]
pub enum Output {
    /// Send this frame on the socket (only produced while connected).
    Send(Vec<u8>),
    /// Write to the offline store; report completion with [`Client::stored`] (`seq`).
    Store(StoreWrite),
    /// Tell the app.
    Event(Event),
}

/// One write to the offline store.
#[derive(Debug)]
pub enum StoreWrite {
    /// Append updates to the log and replace the metadata, in one store transaction.
    Append {
        /// Sequence number to pass back to [`Client::stored`].
        seq: u64,
        /// Yjs v1 updates to append.
        updates: Vec<Vec<u8>>,
        /// The metadata after them, when they changed it (a local edit adds a pending one).
        meta: Option<StoredMeta>,
    },
    /// Replace the metadata only (an acknowledgement).
    Meta(StoredMeta),
    /// Replace the whole log with one snapshot, in one store transaction.
    Compact(Compaction),
}

/// What the app is told.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// The board changed.
    Change {
        /// What changed.
        #[serde(flatten)]
        changes: Changes,
        /// Whether this client made the change (an edit, undo or redo).
        local: bool,
    },
    /// The count of edits not yet durable changed.
    Pending {
        /// Edits not yet durable.
        count: usize,
    },
    /// Every edit of this client is durable on the server.
    Saved,
    /// The first sync of this connection finished: the replica has everything the server had.
    Synced,
    /// Presence changed.
    Presence {
        /// Client ids that appeared.
        added: Vec<u64>,
        /// Client ids whose state changed.
        updated: Vec<u64>,
        /// Client ids that left.
        removed: Vec<u64>,
    },
    /// The server refused this client's document content (a `read` token).
    Denied {
        /// The server's reason.
        reason: String,
    },
}

/// The sans-IO client.
#[derive(Debug)]
pub struct Client {
    replica: Replica,
    durability: Durability,
    out: VecDeque<Output>,
    /// Local updates written to the store, waiting for the write to finish: (seq, update,
    /// state vector when made).
    unsent: VecDeque<(u64, Vec<u8>, StateVector)>,
    next_seq: u64,
    held: Vec<yrs::Update>,
    held_bytes: usize,
    connected: bool,
    synced: bool,
    read_only: bool,
    log_entries: usize,
    log_bytes: usize,
}

impl Client {
    /// A client with an empty replica.
    pub fn new(clock: Arc<dyn Clock>, capture_timeout_ms: u64) -> Self {
        Client {
            replica: Replica::new(clock, capture_timeout_ms),
            durability: Durability::default(),
            out: VecDeque::new(),
            unsent: VecDeque::new(),
            next_seq: 1,
            held: Vec::new(),
            held_bytes: 0,
            connected: false,
            synced: false,
            read_only: false,
            log_entries: 0,
            log_bytes: 0,
        }
    }

    /// Loads what the offline store holds: the log of updates, and the metadata. Entries that
    /// do not decode are skipped and counted in the result.
    pub fn load(&mut self, log: &[Vec<u8>], meta: Option<StoredMeta>) -> usize {
        let mut skipped = 0;
        let mut updates = Vec::with_capacity(log.len());
        // The store's own records: decoded without the nesting guard's extra pass (they were
        // checked when they arrived, and only this origin's scripts can write them).
        for bytes in log {
            match yrs::Update::decode_v1(bytes).ok() {
                Some(u) => updates.push(u),
                None => skipped += 1,
            }
            self.log_bytes += bytes.len();
        }
        self.log_entries = log.len();
        let merged = match updates.len() {
            0 => None,
            1 => updates.pop(),
            _ => Some(yrs::Update::merge_updates(updates)),
        };
        if let Some(update) = merged
            && self.replica.load(update).is_err()
        {
            skipped += log.len();
        }
        if let Some(meta) = meta {
            let durable = StateVector::decode_v1(&meta.durable).unwrap_or_default();
            self.durability = Durability::resume(durable, meta.pending);
        }
        // Loading merged the log; store it merged, so that the next load decodes one snapshot
        // (a sync step 2 often repeats what live updates already brought).
        if log.len() > 1 {
            self.compact();
        }
        // Loading is not a change the app made: a remote change of everything.
        let changes = self.replica.take_changes();
        self.replica.take_local_updates();
        if !changes.is_empty() {
            self.emit(Event::Change {
                changes,
                local: false,
            });
        }
        skipped
    }

    /// The replica.
    pub fn replica(&self) -> &Replica {
        &self.replica
    }

    /// The replica, to change presence.
    pub fn replica_mut(&mut self) -> &mut Replica {
        &mut self.replica
    }

    /// Edits not yet durable on the server.
    pub fn pending_edits(&self) -> usize {
        self.durability.pending_count()
    }

    /// Whether the first sync of the current connection finished.
    pub fn synced(&self) -> bool {
        self.synced
    }

    /// Whether the server refused this client's edits.
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// Says whether the server will refuse this client's edits (from the role its token
    /// claims; the server's own denial sets it too). Edits are refused locally while it holds.
    pub fn set_read_only(&mut self, read_only: bool) {
        self.read_only = read_only;
    }

    /// The next thing to do, if any.
    pub fn poll(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    fn emit(&mut self, e: Event) {
        self.out.push_back(Output::Event(e));
    }

    fn send(&mut self, frame: Vec<u8>) {
        if self.connected {
            self.out.push_back(Output::Send(frame));
        }
    }

    fn meta(&self) -> StoredMeta {
        StoredMeta {
            durable: self.durability.durable().encode_v1(),
            pending: self.durability.pending().copied().collect(),
        }
    }

    // --- the app ----------------------------------------------------------------------------

    /// Applies a validated operation as one transaction.
    pub fn apply(&mut self, op: &Op) -> Result<Applied, EditError> {
        if self.read_only {
            return Err(EditError::ReadOnly);
        }
        let applied = self.replica.apply(op);
        self.after_local();
        applied
    }

    /// Undoes this client's last edit; others' edits stay.
    pub fn undo(&mut self) -> bool {
        let done = !self.read_only && self.replica.undo();
        self.after_local();
        done
    }

    /// Redoes the last undone edit.
    pub fn redo(&mut self) -> bool {
        let done = !self.read_only && self.replica.redo();
        self.after_local();
        done
    }

    /// Sets this client's presence (a JSON object) and announces it.
    pub fn set_presence(&mut self, json: &str) {
        self.replica.awareness_mut().set_local_state_raw(json);
        self.send_local_presence();
    }

    /// Re-announces this client's presence (the driver calls it every 15 s, before other peers
    /// would time the state out).
    pub fn send_local_presence(&mut self) {
        let id = self.replica.client_id();
        if let Ok(update) = self.replica.awareness().update_with_clients([id]) {
            self.send(wire::awareness(&update));
        }
    }

    fn after_local(&mut self) {
        let changes = self.replica.take_changes();
        if !changes.is_empty() {
            self.emit(Event::Change {
                changes,
                local: true,
            });
        }
        let updates = self.replica.take_local_updates();
        if updates.is_empty() {
            return;
        }
        let sv = self.replica.state_vector();
        let client = self.replica.client_id();
        let before = self.durability.pending_count();
        self.durability.edited(Edit {
            client: client.get(),
            end: sv.get(&client),
        });
        let seq = self.next_seq;
        self.next_seq += 1;
        let merged = if updates.len() == 1 {
            updates.into_iter().next().unwrap_or_default()
        } else {
            yrs::merge_updates_v1(updates).unwrap_or_default()
        };
        self.log_entries += 1;
        self.log_bytes += merged.len();
        self.unsent.push_back((seq, merged.clone(), sv));
        let meta = Some(self.meta());
        self.out.push_back(Output::Store(StoreWrite::Append {
            seq,
            updates: vec![merged],
            meta,
        }));
        if self.durability.pending_count() != before {
            let count = self.durability.pending_count();
            self.emit(Event::Pending { count });
        }
        self.maybe_compact();
    }

    // --- the store --------------------------------------------------------------------------

    /// The store finished writing [`StoreWrite::Append`] `seq` (and everything before it); the
    /// local updates it held may now be sent. The driver calls it when the write failed too
    /// (over quota, say), after telling the app: the server is then their only safe place.
    pub fn stored(&mut self, seq: u64) {
        while self.unsent.front().is_some_and(|(s, _, _)| *s <= seq) {
            let Some((_, update, sv)) = self.unsent.pop_front() else {
                break;
            };
            if self.connected {
                self.out.push_back(Output::Send(wire::update(&update)));
                self.durability.sent(sv);
            }
        }
    }

    fn maybe_compact(&mut self) {
        if crate::store::should_compact(self.log_entries, self.log_bytes) {
            self.compact();
        }
    }

    fn compact(&mut self) {
        let snapshot = self.replica.snapshot();
        self.log_entries = 1;
        self.log_bytes = snapshot.len();
        let meta = self.meta();
        self.out
            .push_back(Output::Store(StoreWrite::Compact(Compaction {
                snapshot,
                meta,
            })));
    }

    // --- the connection ---------------------------------------------------------------------

    /// The socket opened: send sync step 1 and this client's presence.
    pub fn connected(&mut self) {
        self.connected = true;
        self.synced = false;
        self.durability.connected();
        let sv = self.replica.state_vector();
        self.send(wire::sync_step1(&sv));
        self.send_local_presence();
    }

    /// The socket closed: local edits wait in the store for the next connection's step 2; the
    /// other peers' presence is gone.
    pub fn disconnected(&mut self) {
        self.connected = false;
        self.synced = false;
        // Updates written but not yet sent travel in the next step 2.
        let own = self.replica.client_id();
        let others: Vec<ClientID> = self
            .replica
            .awareness()
            .iter()
            .map(|(id, _)| id)
            .filter(|id| *id != own)
            .collect();
        for id in &others {
            self.replica.awareness_mut().remove_state(*id);
        }
        if !others.is_empty() {
            self.emit(Event::Presence {
                added: vec![],
                updated: vec![],
                removed: ids(others),
            });
        }
    }

    /// A frame from the server. An error means the server broke the protocol: the driver
    /// closes the socket and reconnects.
    pub fn receive(&mut self, frame: &[u8]) -> Result<(), ReceiveError> {
        match wire::decode(frame)? {
            ServerFrame::SyncStep1(sv) => {
                let diff = self.replica.diff(&sv);
                let now = self.replica.state_vector();
                self.send(wire::sync_step2(&diff));
                if self.connected {
                    self.durability.sent(now);
                }
            }
            ServerFrame::SyncStep2(update) => {
                self.receive_update(&update)?;
                if !self.synced {
                    self.synced = true;
                    self.emit(Event::Synced);
                }
            }
            ServerFrame::Update(update) => self.receive_update(&update)?,
            ServerFrame::Awareness(update) => self.receive_presence(update)?,
            ServerFrame::QueryAwareness => {
                if let Ok(update) = self.replica.awareness().update() {
                    self.send(wire::awareness(&update));
                }
            }
            ServerFrame::Denied(reason) => {
                self.read_only = true;
                self.emit(Event::Denied { reason });
            }
            ServerFrame::Ack(count) => {
                let progress = self.durability.acknowledged(count)?;
                if progress.saved > 0 {
                    let meta = self.meta();
                    self.out.push_back(Output::Store(StoreWrite::Meta(meta)));
                    self.emit(Event::Pending {
                        count: progress.pending,
                    });
                    if progress.pending == 0 {
                        self.emit(Event::Saved);
                    }
                }
            }
        }
        Ok(())
    }

    fn receive_update(&mut self, bytes: &[u8]) -> Result<(), ReceiveError> {
        let update = yrs::Update::decode_v1(bytes).map_err(|_| ReceiveError::BadUpdate)?;
        if self.replica.skips_clocks(&update) {
            self.held_bytes += bytes.len();
            self.held.push(update);
            if self.held_bytes > MAX_HELD_BYTES {
                // Too much waits on a gap: drop it and ask again for everything we lack.
                self.held.clear();
                self.held_bytes = 0;
                let sv = self.replica.state_vector();
                self.send(wire::sync_step1(&sv));
            }
            return Ok(());
        }
        self.replica
            .apply_remote(update)
            .map_err(|_| ReceiveError::BadUpdate)?;
        let mut stored = vec![bytes.to_vec()];
        // Apply what waited for this one, as long as something fits.
        while let Some(at) = self.held.iter().position(|u| !self.replica.skips_clocks(u)) {
            let u = self.held.remove(at);
            stored.push(u.encode_v1());
            self.replica
                .apply_remote(u)
                .map_err(|_| ReceiveError::BadUpdate)?;
        }
        if self.held.is_empty() {
            self.held_bytes = 0;
        }
        let changes = self.replica.take_changes();
        if !changes.is_empty() {
            self.emit(Event::Change {
                changes,
                local: false,
            });
        }
        for u in &stored {
            self.log_entries += 1;
            self.log_bytes += u.len();
        }
        self.out.push_back(Output::Store(StoreWrite::Append {
            seq: 0,
            updates: stored,
            meta: None,
        }));
        self.maybe_compact();
        Ok(())
    }

    fn receive_presence(&mut self, update: AwarenessUpdate) -> Result<(), ReceiveError> {
        let summary = self
            .replica
            .awareness_mut()
            .apply_update_summary(update)
            .map_err(|_| ReceiveError::BadPresence)?;
        if let Some(s) = summary {
            self.emit(Event::Presence {
                added: ids(s.added),
                updated: ids(s.updated),
                removed: ids(s.removed),
            });
        }
        Ok(())
    }
}

/// The server sent something this client cannot accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiveError {
    /// Not a frame of the protocol.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// An update that does not apply.
    #[error("an update from the server does not apply")]
    BadUpdate,
    /// An awareness update that does not apply.
    #[error("a presence update from the server does not apply")]
    BadPresence,
    /// An acknowledgement of messages never sent.
    #[error(transparent)]
    Ack(#[from] AckError),
}

fn ids(v: Vec<ClientID>) -> Vec<u64> {
    v.into_iter().map(|c| c.get()).collect()
}
