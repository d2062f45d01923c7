//! WebSocket sessions at `/v1/sync/{board}`: admission, then a reader and a writer per
//! connection. The HTTP layer upgrades the request (`http/sync.rs`) and hands the socket here.
//! [`hocuspocus`] serves the Hocuspocus dialect (`/v1/hocuspocus`, many boards per socket) with
//! the same pieces.
//!
//! - `admit`: the board id, the token and the per-address limit, checked before the upgrade
//!   completes (a refusal is still sent as a close frame, which WebSocket clients can read).
//! - `session`: a connection's life: joining its board, the reader and writer, leaving.
//! - `reader`: decodes each frame (outside any lock, never panicking) and hands it to the
//!   board's actor, enforcing the token's expiry, read-only, the message rate and the budget of
//!   uncommitted bytes.
//! - `writer`: takes everything in the connection's bounded outbound queue
//!   ([`crate::board::link`]) at once, writes it in one flush, and sends pings and the close
//!   frame.
//!
//! A session runs over any [`Stream`] of messages and [`Sink`] for them: axum's `WebSocket` in
//! the server, channels in the tests. Either side ending ends the other. Every close code and
//! reason is a [`crate::refusal::Refusal`], documented in `PROTOCOL.md`; the session counts
//! the refusals it decides.

mod admit;
pub(crate) mod hocuspocus;
mod reader;
mod session;
mod writer;

#[cfg(test)]
mod tests;

use std::fmt::Display;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::{Sink, Stream};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

pub(crate) use self::admit::Admission;
use crate::auth::Auth;
use crate::board::registry::Boards;
use crate::limits::{ConnectionCounts, Limits};
use crate::metrics::Metrics;
use crate::storage::Storage;

/// tungstenite's read buffer, zero-filled and so resident on every connection: its 128 KiB
/// default would dominate an idle connection's memory. Most messages (drags, awareness) are
/// 30-300 bytes; larger ones take one read per 512 bytes (BENCHMARKS.md, idle memory).
pub(crate) const READ_BUFFER: usize = 512;
/// Bytes buffered before tungstenite writes to the socket (we flush after each batch anyway).
pub(crate) const WRITE_BUFFER: usize = 16 << 10;

/// What the sessions use: the boards and their store, how callers are authenticated, the
/// limits, the metrics, and the server's task tracker and shutdown token.
#[derive(Debug, Clone)]
pub(crate) struct SessionDeps {
    pub(crate) boards: Boards,
    pub(crate) store: Arc<dyn Storage>,
    pub(crate) auth: Auth,
    pub(crate) limits: Limits,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) tracker: TaskTracker,
    pub(crate) shutdown: CancellationToken,
}

/// The server's WebSocket sessions: admits connections and runs each one's session.
#[derive(Debug)]
pub(crate) struct Sessions {
    deps: SessionDeps,
    /// Open connections per client address.
    addresses: ConnectionCounts,
    next_conn: AtomicU64,
}

impl Sessions {
    pub(crate) fn new(deps: SessionDeps) -> Self {
        Self {
            addresses: ConnectionCounts::new(deps.limits.max_connections_per_address),
            deps,
            next_conn: AtomicU64::new(1),
        }
    }

    /// A new connection id (one per socket on `/v1/sync`, one per document on
    /// `/v1/hocuspocus`).
    pub(crate) fn next_conn(&self) -> crate::board::peer::ConnId {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// The server's task tracker: upgrades and sessions run on it.
    pub(crate) fn tracker(&self) -> &TaskTracker {
        &self.deps.tracker
    }

    /// The limits connections are held to.
    pub(crate) fn limits(&self) -> &Limits {
        &self.deps.limits
    }

    /// Checks a connection to `board` from `peer` with `token` (see `admit.rs`); a refusal is
    /// counted here, and sent as the session's close frame.
    pub(crate) fn admit(&self, board: &str, token: Option<&str>, peer: IpAddr) -> Admission {
        let admission = admit::admit(&self.deps.auth, &self.addresses, board, token, peer);
        if let Err(refusal) = &admission {
            refusal.count(&self.deps.metrics);
        }
        admission
    }

    /// Runs one connection's session over `stream` and `sink`, as a task the server tracks, in
    /// a span naming the connection, its board and the request that opened it.
    pub(crate) fn serve<St, Si, E>(
        self: Arc<Self>,
        stream: St,
        sink: Si,
        admission: Admission,
        wants_acks: bool,
        board: &str,
        request_id: &str,
    ) -> impl Future<Output = ()> + Send + use<St, Si, E>
    where
        St: Stream<Item = Result<Message, E>> + Unpin + Send + 'static,
        E: Display + Send,
        Si: Sink<Message> + Unpin + Send + 'static,
    {
        let conn = self.next_conn();
        let span = tracing::info_span!("conn", conn, board = %board, request_id = %request_id);
        let tracker = self.deps.tracker.clone();
        tracker.track_future(
            session::run(self, stream, sink, admission, conn, wants_acks).instrument(span),
        )
    }
}
