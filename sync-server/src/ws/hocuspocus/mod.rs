//! The Hocuspocus dialect at `/v1/hocuspocus`: `@hocuspocus/provider` clients (Tiptap's
//! collaborative editors, among others) on the same boards as y-websocket clients.
//!
//! One socket multiplexes many documents: every frame starts with the document's name (a board
//! id), and each document is authenticated with its own token (the provider's Auth message),
//! joined to its board and left independently. Boards know nothing of the dialect: each open
//! document is an ordinary connection of its board, on its own channel of the socket's link
//! ([`crate::board::link::mux`]), taking durable acknowledgements and stateless messages.
//!
//! - `frame`: the dialect byte by byte: decoding what providers send, encoding what the server
//!   sends (never panicking; lengths checked before anything is read past them).
//! - `docs`: a socket's documents (waiting for authentication with their frames held, open, or
//!   refused), bounded in names, frames and bytes.
//! - `session`: the socket's reader: authentication, joining and leaving boards, routing each
//!   document's messages to its board, token refreshes and expiry, and every limit `/v1/sync`
//!   applies per connection, here per socket.
//! - `writer`: frames what boards queue for the wire (the name in front; a durable
//!   acknowledgement becomes one SyncStatus per committed message), pings.
//!
//! `PROTOCOL.md` documents the dialect, its refusals and what differs from the Hocuspocus
//! server.

mod docs;
mod frame;
mod session;
mod writer;

#[cfg(test)]
mod tests;

use std::fmt::Display;
use std::net::IpAddr;
use std::sync::Arc;

use futures_util::{Sink, Stream};
use tokio_tungstenite::tungstenite::Message;
use tracing::{Instrument, info};

pub(crate) use self::session::SocketAdmission;
use super::Sessions;
use crate::refusal::Refusal;

impl Sessions {
    /// Checks a Hocuspocus socket from `peer` against the per-address limit (its documents are
    /// authenticated one by one, later); a refusal is counted here and sent as the session's
    /// close frame.
    pub(crate) fn admit_socket(&self, peer: IpAddr) -> SocketAdmission {
        self.addresses.acquire(peer).ok_or_else(|| {
            info!(addr = %peer, "refused: too many connections from this address");
            Refusal::AddressFull.count(&self.deps.metrics);
            Refusal::AddressFull
        })
    }

    /// Runs one Hocuspocus socket's session over `stream` and `sink`, as a task the server
    /// tracks, in a span naming the socket and the request that opened it.
    pub(crate) fn serve_hocuspocus<St, Si, E>(
        self: Arc<Self>,
        stream: St,
        sink: Si,
        admission: SocketAdmission,
        request_id: &str,
    ) -> impl Future<Output = ()> + Send + use<St, Si, E>
    where
        St: Stream<Item = Result<Message, E>> + Unpin + Send + 'static,
        E: Display + Send,
        Si: Sink<Message> + Unpin + Send + 'static,
    {
        let socket = self.next_conn();
        let span = tracing::info_span!("hocuspocus", socket, request_id = %request_id);
        let tracker = self.deps.tracker.clone();
        tracker.track_future(session::run(self, stream, sink, admission).instrument(span))
    }
}
