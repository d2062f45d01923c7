//! An in-memory `BoardPeer`: a `yrs::Doc` behind a mutex, a replica fed only with the updates
//! the edit closures return (as the server would broadcast them), and records of origins and
//! presence.

use std::sync::{Arc, Mutex};

use ai_agent::{BoardPeer, Edit, PeerError, Presence};
use crdt_schema::{Board, Kind, NewObject, Op, declare_roots, ops, read_board};
use serde_json::Value;
use yrs::updates::decoder::Decode;
use yrs::{Doc, ReadTxn, Transact, Update};

pub struct MemoryPeer {
    pub doc: Mutex<Doc>,
    /// What other clients would have: only the returned updates applied.
    pub replica: Mutex<Doc>,
    /// Origin of every transaction that changed the doc (after seeding).
    pub origins: Arc<Mutex<Vec<String>>>,
    /// Updates returned by edit closures.
    pub updates: Mutex<Vec<Vec<u8>>>,
    pub presence: Mutex<Vec<Option<Presence>>>,
    pub edits: Mutex<usize>,
    /// Fail every edit with this error.
    pub fail_with: Mutex<Option<PeerError>>,
    /// Called with the edit's number (from 1) and the doc before each edit runs: a human
    /// editing between the assistant's edits.
    pub before_edit: Mutex<Option<Hook>>,
}

pub type Hook = Box<dyn FnMut(usize, &Doc) + Send>;

impl std::fmt::Debug for MemoryPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryPeer").finish_non_exhaustive()
    }
}

impl MemoryPeer {
    pub fn new(seed: &[NewObject]) -> MemoryPeer {
        let doc = Doc::new();
        declare_roots(&doc);
        {
            let mut txn = doc.transact_mut_with("seed");
            for o in seed {
                ops::apply(&mut txn, &Op::Create(o.clone())).unwrap();
            }
        }
        let replica = Doc::new();
        declare_roots(&replica);
        {
            let state = doc
                .transact()
                .encode_state_as_update_v1(&Default::default());
            replica
                .transact_mut()
                .apply_update(Update::decode_v1(&state).unwrap())
                .unwrap();
        }
        let origins = Arc::new(Mutex::new(Vec::new()));
        let seen = origins.clone();
        doc.observe_update_v1("test-origins", move |txn, _| {
            let origin = txn
                .origin()
                .map(|o| String::from_utf8_lossy(o.as_ref()).into_owned())
                .unwrap_or_else(|| "<none>".into());
            seen.lock().unwrap().push(origin);
        })
        .unwrap();
        MemoryPeer {
            doc: Mutex::new(doc),
            replica: Mutex::new(replica),
            origins,
            updates: Mutex::new(Vec::new()),
            presence: Mutex::new(Vec::new()),
            edits: Mutex::new(0),
            fail_with: Mutex::new(None),
            before_edit: Mutex::new(None),
        }
    }

    pub fn board(&self) -> Board {
        read_board(&self.doc.lock().unwrap().transact())
    }

    pub fn replica_board(&self) -> Board {
        read_board(&self.replica.lock().unwrap().transact())
    }

    /// The whole document state (to prove nothing changed).
    pub fn state(&self) -> Vec<u8> {
        self.doc
            .lock()
            .unwrap()
            .transact()
            .encode_state_as_update_v1(&Default::default())
    }

    pub fn origins(&self) -> Vec<String> {
        self.origins.lock().unwrap().clone()
    }

    pub fn update_count(&self) -> usize {
        self.updates.lock().unwrap().len()
    }

    pub fn presence_log(&self) -> Vec<Option<Presence>> {
        self.presence.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl BoardPeer for MemoryPeer {
    async fn edit(&self, edit: Edit) -> Result<Value, PeerError> {
        if let Some(e) = self.fail_with.lock().unwrap().clone() {
            return Err(e);
        }
        let n = {
            let mut edits = self.edits.lock().unwrap();
            *edits += 1;
            *edits
        };
        let edited = {
            let doc = self.doc.lock().unwrap();
            if let Some(hook) = self.before_edit.lock().unwrap().as_mut() {
                hook(n, &doc);
            }
            edit(&doc)
        };
        if let Some(update) = edited.update {
            // "Durable and broadcast": here, recorded and applied to the replica.
            self.replica
                .lock()
                .unwrap()
                .transact_mut()
                .apply_update(Update::decode_v1(&update).unwrap())
                .unwrap();
            self.updates.lock().unwrap().push(update);
        }
        Ok(edited.result)
    }

    async fn presence(&self, presence: Option<Presence>) -> Result<(), PeerError> {
        self.presence.lock().unwrap().push(presence);
        Ok(())
    }
}

/// A human edit with its own origin.
pub fn human(doc: &Doc, op: &Op) {
    let mut txn = doc.transact_mut_with("human");
    ops::apply(&mut txn, op).unwrap();
}

pub fn sticky(id: &str, x: f64, y: f64, text: &str) -> NewObject {
    NewObject::new(id, Kind::Sticky, "human", 1.0)
        .at([x, y], [200.0, 200.0])
        .with_text(text)
}
