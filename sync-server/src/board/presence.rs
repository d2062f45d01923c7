//! A board's awareness (presence) states and which connection owns each client's state.
//!
//! What one connection may hold is bounded: at most [`MAX_CLIENTS_PER_CONNECTION`] client
//! ids, each state at most [`MAX_STATE_BYTES`] of JSON. An update past either is refused whole
//! (the actor closes the connection with 4413).
//!
//! A connection owns the awareness client ids it announces. Its states are cleared for the
//! others when it leaves. When tokens are in use, a connection may not write the state of a
//! client owned by another connection unless both belong to the same user (a client
//! reconnecting before its old connection timed out): those entries are dropped, so a
//! read-only or any other caller cannot spoof or erase someone else's presence. The server's own
//! state (the assistant's, while a run works) belongs to no connection and cannot be written by
//! any.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use yrs::Doc;
use yrs::block::ClientID;
use yrs::sync::{Awareness, AwarenessUpdate};

use super::peer::ConnId;
use crate::cluster::NodeId;
use crate::protocol;

/// Who a connection is, for ownership of awareness states.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Identity {
    /// Open development mode: anyone may take over any state.
    Open,
    /// A token holder; `None` if the token names no user.
    User(Option<std::sync::Arc<str>>),
}

impl Identity {
    /// Whether a connection of this identity may take over a state owned by `owner`'s.
    fn may_take_from(&self, owner: &Identity) -> bool {
        match (self, owner) {
            (Identity::Open, _) => true,
            (Identity::User(Some(a)), Identity::User(Some(b))) => a == b,
            _ => false,
        }
    }
}

/// Awareness client ids one connection may own at once. A y-websocket client announces one
/// (its doc's client id; two if Yjs changed it after a conflict).
pub(crate) const MAX_CLIENTS_PER_CONNECTION: usize = 16;

/// Largest awareness state accepted, in bytes of JSON. Names, colours, cursors and selections
/// take a few hundred.
pub(crate) const MAX_STATE_BYTES: usize = 64 << 10;

/// Why an awareness update was refused. Nothing of it was applied.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AwarenessError {
    /// It does not apply.
    #[error(transparent)]
    Invalid(#[from] yrs::sync::awareness::Error),
    /// The connection would own more client ids than it may.
    #[error("a connection may own at most {MAX_CLIENTS_PER_CONNECTION} awareness client ids")]
    TooManyClients,
    /// A state is larger than the limit.
    #[error("an awareness state is larger than {MAX_STATE_BYTES} bytes")]
    StateTooLarge,
}

impl AwarenessError {
    /// Whether the update broke a limit (rather than being malformed).
    pub(crate) fn is_limit(&self) -> bool {
        !matches!(self, Self::Invalid(_))
    }
}

/// What applying an awareness update did.
#[derive(Debug)]
pub(super) struct Applied {
    /// The frame to echo to every connection (the original, or a re-encoded one without the
    /// dropped entries), if anything changed.
    pub(super) frame: Option<Bytes>,
    /// Entries dropped because they belonged to another user's connection.
    pub(super) dropped: usize,
    /// For the sender only: the board's removal of client states it announces at a clock the
    /// removal has passed (see [`Presence::apply`]).
    pub(super) correction: Option<Bytes>,
}

#[derive(Debug)]
pub(super) struct Presence {
    awareness: Awareness,
    owners: HashMap<ClientID, ConnId>,
    owned: HashMap<ConnId, HashSet<ClientID>>,
    /// States other nodes brought (their connections', their assistant's), by node: cleared
    /// when the node is gone. A state a connection of this node owns is never taken by one.
    remote_owners: HashMap<ClientID, NodeId>,
    remote: HashMap<NodeId, HashSet<ClientID>>,
}

impl Presence {
    pub(super) fn new(doc: Doc) -> Self {
        Self {
            awareness: Awareness::new(doc),
            owners: HashMap::new(),
            owned: HashMap::new(),
            remote_owners: HashMap::new(),
            remote: HashMap::new(),
        }
    }

    /// Every state, as one frame, or `None` if there are none.
    pub(super) fn all(&self) -> Option<Bytes> {
        protocol::awareness_all(&self.awareness)
    }

    /// Applies `update` from `conn`. `identity_of` tells the identity of a connection.
    pub(super) fn apply<'a>(
        &mut self,
        conn: ConnId,
        mut update: AwarenessUpdate,
        frame: &Bytes,
        identity_of: impl Fn(ConnId) -> Option<&'a Identity>,
    ) -> Result<Applied, AwarenessError> {
        if update
            .clients
            .values()
            .any(|e| e.json.len() > MAX_STATE_BYTES)
        {
            return Err(AwarenessError::StateTooLarge);
        }
        let owned = self.owned.get(&conn);
        let new_ids = update
            .clients
            .keys()
            .filter(|id| owned.is_none_or(|set| !set.contains(id)))
            .count();
        if owned.map_or(0, HashSet::len) + new_ids > MAX_CLIENTS_PER_CONNECTION {
            return Err(AwarenessError::TooManyClients);
        }
        let sender = identity_of(conn);
        let before = update.clients.len();
        let own = self.awareness.client_id();
        update.clients.retain(|client, _| {
            *client != own
                && match self.owners.get(client) {
                    Some(owner) if *owner != conn => match (sender, identity_of(*owner)) {
                        (Some(sender), Some(owner)) => sender.may_take_from(owner),
                        // The owner is gone: the state is up for grabs.
                        (Some(_), None) => true,
                        (None, _) => false,
                    },
                    _ => true,
                }
        });
        let dropped = before - update.clients.len();
        // A client coming back after its state was removed (its connection closed, here or on
        // another node) announces the clock it had, which the removal passed: its states would
        // be ignored until its clock overtook the board's. Told of the removal, a y-protocols
        // client announces itself again with a newer clock.
        let stale: Vec<ClientID> = update
            .clients
            .iter()
            .filter(|(id, entry)| {
                entry.json.as_ref() != "null"
                    && self
                        .awareness
                        .meta(**id)
                        .is_some_and(|(clock, _)| clock >= entry.clock)
                    && self
                        .awareness
                        .state::<serde::de::IgnoredAny>(**id)
                        .is_none()
            })
            .map(|(id, _)| *id)
            .collect();
        let correction = (!stale.is_empty())
            .then(|| self.awareness.update_with_clients(stale).ok())
            .flatten()
            .map(protocol::awareness);
        if update.clients.is_empty() {
            return Ok(Applied {
                frame: None,
                dropped,
                correction,
            });
        }
        let clients: Vec<ClientID> = update.clients.keys().copied().collect();
        let reencode = (dropped > 0).then(|| protocol::awareness(update.clone()));
        let Some(summary) = self.awareness.apply_update_summary(update)? else {
            return Ok(Applied {
                frame: None,
                dropped,
                correction,
            });
        };
        for client in clients {
            if summary.removed.contains(&client) {
                self.release(client);
            } else if summary.added.contains(&client) || summary.updated.contains(&client) {
                self.take(conn, client);
            }
        }
        Ok(Applied {
            frame: Some(reencode.unwrap_or_else(|| frame.clone())),
            dropped,
            correction,
        })
    }

    /// Sets (Some: a JSON object) or clears (None) the server's own state (client id = the
    /// doc's). No connection can write it. Returns the frame announcing the change.
    pub(super) fn set_own(&mut self, state: Option<String>) -> Option<Bytes> {
        match state {
            Some(json) => self.awareness.set_local_state_raw(json),
            None => {
                self.awareness.local_state_raw()?;
                self.awareness.clean_local_state();
            }
        }
        self.awareness
            .update_with_clients([self.awareness.client_id()])
            .ok()
            .map(protocol::awareness)
    }

    /// Clears the states `conn` owns; returns the frame announcing it, if it owned any.
    pub(super) fn remove_conn(&mut self, conn: ConnId) -> Option<Bytes> {
        let gone: Vec<ClientID> = self.owned.remove(&conn)?.into_iter().collect();
        for id in &gone {
            self.owners.remove(id);
        }
        self.clear(gone)
    }

    /// Removes the states of `gone`; returns the frame announcing it, if there were any.
    fn clear(&mut self, gone: Vec<ClientID>) -> Option<Bytes> {
        for id in &gone {
            self.awareness.remove_state(*id);
        }
        if gone.is_empty() {
            return None;
        }
        self.awareness
            .update_with_clients(gone)
            .ok()
            .map(protocol::awareness)
    }

    /// Applies an awareness update another node published (its connections' states, checked
    /// there). Entries for the doc's own client or for a client a connection of this node owns
    /// are dropped. Returns the frame to show this node's connections, if anything changed.
    pub(super) fn apply_remote(
        &mut self,
        node: &NodeId,
        mut update: AwarenessUpdate,
    ) -> Result<Option<Bytes>, AwarenessError> {
        if update
            .clients
            .values()
            .any(|e| e.json.len() > MAX_STATE_BYTES)
        {
            return Err(AwarenessError::StateTooLarge);
        }
        let own = self.awareness.client_id();
        update
            .clients
            .retain(|client, _| *client != own && !self.owners.contains_key(client));
        if update.clients.is_empty() {
            return Ok(None);
        }
        let clients: Vec<ClientID> = update.clients.keys().copied().collect();
        let frame = protocol::awareness(update.clone());
        let Some(summary) = self.awareness.apply_update_summary(update)? else {
            return Ok(None);
        };
        for client in clients {
            if summary.removed.contains(&client) {
                self.release_remote(client);
            } else if summary.added.contains(&client) || summary.updated.contains(&client) {
                if let Some(previous) = self.remote_owners.insert(client, node.clone())
                    && previous != *node
                    && let Some(set) = self.remote.get_mut(&previous)
                {
                    set.remove(&client);
                }
                self.remote.entry(node.clone()).or_default().insert(client);
            }
        }
        Ok(Some(frame))
    }

    /// Clears every state `node` brought (it is gone); returns the frame announcing it.
    pub(super) fn remove_node(&mut self, node: &NodeId) -> Option<Bytes> {
        let gone: Vec<ClientID> = self.remote.remove(node)?.into_iter().collect();
        for id in &gone {
            self.remote_owners.remove(id);
        }
        self.clear(gone)
    }

    /// The states of this node's connections and its own entry (not those of other nodes), as
    /// one frame: the answer to another node that starts holding the board.
    pub(super) fn local(&self) -> Option<Bytes> {
        let mut ids: Vec<ClientID> = self.owners.keys().copied().collect();
        if self.awareness.local_state_raw().is_some() {
            ids.push(self.awareness.client_id());
        }
        if ids.is_empty() {
            return None;
        }
        self.awareness
            .update_with_clients(ids)
            .ok()
            .map(protocol::awareness)
    }

    fn release_remote(&mut self, client: ClientID) {
        if let Some(node) = self.remote_owners.remove(&client)
            && let Some(set) = self.remote.get_mut(&node)
        {
            set.remove(&client);
        }
    }

    fn take(&mut self, conn: ConnId, client: ClientID) {
        self.release_remote(client);
        if let Some(previous) = self.owners.insert(client, conn)
            && previous != conn
            && let Some(set) = self.owned.get_mut(&previous)
        {
            set.remove(&client);
        }
        self.owned.entry(conn).or_default().insert(client);
    }

    fn release(&mut self, client: ClientID) {
        if let Some(owner) = self.owners.remove(&client)
            && let Some(set) = self.owned.get_mut(&owner)
        {
            set.remove(&client);
        }
    }
}
