//! One Hocuspocus socket's life: its reader (this module), its writer (`writer.rs`), and the
//! documents it opens and leaves on their boards.
//!
//! The reader takes frames off the socket in order. A document's frames before its Auth
//! message are held (`docs.rs`); its Auth message authenticates it (the token, the board, the
//! role: as `/v1/sync` admits a connection) and joins its board, on a channel of the socket's
//! link, as an ordinary connection that takes durable acknowledgements and stateless messages;
//! then what it held is read. Everything per connection on `/v1/sync` is per socket here: the
//! message rate, the budget of uncommitted bytes, the outbound queue, the read timeout.

use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::FuturesUnordered;
use futures_util::{Sink, Stream, StreamExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tracing::{debug, info};

use super::docs::{Doc, Docs, HoldError, Limits as DocLimits, MAX_DOCUMENTS, Open};
use super::frame::{self, ClientFrame, DocMessage};
use super::writer::{Framing, ping_interval, write_loop};
use crate::auth::{AuthError, Denied, Grant, Role, TokenError};
use crate::board::link::Side;
use crate::board::link::mux::{ChannelId, MuxEvent, MuxLink, SESSION};
use crate::board::peer::{CloseReason, Delivery, Wants};
use crate::board::presence::Identity;
use crate::board::{BoardCmd, Read, Step1Answer};
use crate::ids::BoardId;
use crate::limits::{AddressSlot, MessageLimiter, Throttled};
use crate::metrics::kind;
use crate::protocol::{self, Incoming};
use crate::refusal::Refusal;
use crate::ws::Sessions;
use crate::ws::reader::{
    Flow, read_failed, refusal as decode_refusal, slow_down, uncommitted_budget,
};
use crate::ws::session::join_refusal;
use crate::ws::writer::{drain, send_close};

/// What admission decided about a socket: let in (holding its address's slot), or refused.
pub(crate) type SocketAdmission = Result<AddressSlot, Refusal>;

/// Every reason a document is refused for (PermissionDenied): PROTOCOL.md's table of them
/// lists exactly these (the tests read it).
pub(super) const DENIALS: &[Refusal] = &[
    Refusal::InvalidBoardId,
    Refusal::TokenRequired,
    Refusal::InvalidToken,
    Refusal::TokenExpired,
    Refusal::OtherBoard,
    Refusal::BoardNotFound,
    Refusal::BoardDeleted,
    Refusal::BoardFull,
    Refusal::TooManyDocuments,
];

/// How long before a token expires the provider is asked for a fresh one, at most (half the
/// token's remaining life if that is shorter).
const REFRESH_AHEAD: Duration = Duration::from_secs(60);

/// A read-only document's content being compared with its board (see [`Read::Holds`]).
type Check = Pin<Box<dyn Future<Output = (Arc<str>, ChannelId, bool)> + Send + Sync>>;

/// Runs one socket's session over `stream` and `sink`: sends the refusal's close frame if
/// admission refused it, otherwise reads and writes until either side ends, then leaves every
/// board it joined.
pub(super) async fn run<St, Si, E>(
    sessions: Arc<Sessions>,
    stream: St,
    mut sink: Si,
    admission: SocketAdmission,
) where
    St: Stream<Item = Result<Message, E>> + Unpin,
    E: Display,
    Si: Sink<Message> + Unpin + Send + 'static,
{
    let mut stream = stream.fuse();
    let _slot = match admission {
        Ok(slot) => slot,
        Err(refusal) => {
            send_close(&mut sink, refusal.close_reason()).await;
            drain(&mut stream).await;
            return;
        }
    };
    let deps = &sessions.deps;
    let metrics = deps.metrics.clone();
    metrics.connections.inc();
    metrics.connections_opened.inc();
    let limits = &deps.limits;
    let mux = MuxLink::new(limits.outbound_queue, limits.outbound_queue_bytes);
    let framing = Framing::default();
    let writer = {
        let (shutdown, mux, framing) = (deps.shutdown.clone(), mux.clone(), framing.clone());
        let ping_every = ping_interval(limits.read_timeout);
        deps.tracker.spawn(async move {
            write_loop(&shutdown, &mux, &framing, &mut sink, ping_every).await;
        })
    };
    let mut socket = Socket::new(&sessions, mux.clone(), framing);
    debug!("hocuspocus socket open");
    socket.read_loop(&mut stream).await;
    socket.leave_all().await;
    mux.end();
    let _ = writer.await;
    drain(&mut stream).await;
    metrics.connections.dec();
    debug!(reason = ?mux.reason(), "hocuspocus socket closed");
}

/// What the reader waits for.
enum Next<E> {
    /// The socket's link closed.
    Closed,
    /// A board closed a document's channel.
    ChannelClosed(ChannelId, CloseReason),
    /// A token deadline (a refresh to ask for, an expiry) came.
    Deadline,
    /// The read timeout fired (maybe early: it is pushed back lazily).
    Silence,
    /// A read-only document's content was compared with its board.
    Checked(Arc<str>, ChannelId, bool),
    /// A frame, the end of the stream, or a read error.
    Read(Option<Result<Message, E>>),
}

/// One socket's reader state.
struct Socket<'a> {
    sessions: &'a Sessions,
    mux: MuxLink,
    framing: Framing,
    docs: Docs,
    limiter: MessageLimiter,
    /// Bytes of document messages this socket sent and not yet seen committed (or compared).
    uncommitted: Arc<Semaphore>,
    max_uncommitted: u32,
    next_channel: ChannelId,
    checks: FuturesUnordered<Check>,
}

impl<'a> Socket<'a> {
    fn new(sessions: &'a Sessions, mux: MuxLink, framing: Framing) -> Self {
        let limits = &sessions.deps.limits;
        let budget = uncommitted_budget(limits);
        Self {
            sessions,
            mux,
            framing,
            docs: Docs::new(DocLimits {
                held_bytes: limits.max_message_bytes,
            }),
            limiter: MessageLimiter::new(limits.message_rate, limits.message_burst),
            uncommitted: Arc::new(Semaphore::new(budget as usize)),
            max_uncommitted: budget,
            next_channel: SESSION + 1,
            checks: FuturesUnordered::new(),
        }
    }

    fn metrics(&self) -> &crate::metrics::Metrics {
        &self.sessions.deps.metrics
    }

    /// Reads until the stream ends or the socket's link closes.
    async fn read_loop<St, E>(&mut self, stream: &mut St)
    where
        St: Stream<Item = Result<Message, E>> + Unpin,
        E: Display,
    {
        let limits = self.sessions.deps.limits.clone();
        let read_timeout = limits.read_timeout;
        let silence = tokio::time::sleep(read_timeout);
        tokio::pin!(silence);
        let mut last_read = Instant::now();
        // One timer for every document's token deadlines, reset only when the earliest moves.
        let deadline = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(deadline);
        let mut armed: Option<Instant> = None;
        let mut throttled = Throttled::new(limits.abuse_window, std::time::Instant::now());
        loop {
            let earliest = self.docs.next_deadline();
            if earliest != armed {
                if let Some(at) = earliest {
                    deadline.as_mut().reset(at);
                }
                armed = earliest;
            }
            let next = tokio::select! {
                biased;
                event = self.mux.event() => match event {
                    MuxEvent::Closed => Next::Closed,
                    MuxEvent::ChannelClosed(channel, reason) => Next::ChannelClosed(channel, reason),
                },
                () = &mut deadline, if armed.is_some() => Next::Deadline,
                () = &mut silence => Next::Silence,
                Some((name, channel, holds)) = self.checks.next(), if !self.checks.is_empty() => {
                    Next::Checked(name, channel, holds)
                }
                next = stream.next() => Next::Read(next),
            };
            let message = match next {
                Next::Closed => break,
                Next::ChannelClosed(channel, reason) => {
                    if self.board_closed(channel, reason) {
                        continue;
                    }
                    break;
                }
                Next::Deadline => {
                    armed = None;
                    if self.on_deadlines().await {
                        continue;
                    }
                    break;
                }
                Next::Silence => {
                    let deadline = last_read + read_timeout;
                    if Instant::now() < deadline {
                        silence.as_mut().reset(deadline);
                        continue;
                    }
                    info!("closing a socket silent for {}s", read_timeout.as_secs());
                    self.close(Refusal::Silent);
                    break;
                }
                Next::Checked(name, channel, holds) => {
                    if self.on_checked(&name, channel, holds) {
                        continue;
                    }
                    break;
                }
                Next::Read(None) => break,
                Next::Read(Some(Err(e))) => {
                    if let Some(refusal) = read_failed(&e) {
                        self.close(refusal);
                    }
                    break;
                }
                Next::Read(Some(Ok(message))) => message,
            };
            last_read = Instant::now();
            if let Err(wait) = self.limiter.check() {
                let closed = self.mux.closed(Side::Reader);
                let flow = slow_down(&self.limiter, self.metrics(), &mut throttled, closed, wait);
                match Box::pin(flow).await {
                    Flow::Go => {}
                    Flow::Closed => break,
                    Flow::Abusive => {
                        self.close(Refusal::MessageRate);
                        break;
                    }
                }
            }
            let frame = match message {
                Message::Binary(frame) => frame,
                Message::Text(_) => {
                    info!("refused: text frame");
                    self.close(Refusal::TextFrame);
                    break;
                }
                Message::Close(_) => break,
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            };
            if !self.on_frame(frame).await {
                break;
            }
        }
    }

    /// Closes the socket for `refusal`, counted here, where it is decided.
    fn close(&self, refusal: Refusal) {
        self.mux.close(refusal.count(self.metrics()));
    }

    /// Queues one of the session's own frames. A socket too slow to take it is closed (1013).
    fn offer(&self, frame: Bytes) -> bool {
        self.offer_on(SESSION, frame)
    }

    fn offer_on(&self, channel: ChannelId, frame: Bytes) -> bool {
        match self.mux.offer(channel, frame) {
            Delivery::Queued(_) => true,
            Delivery::Closed => false,
            Delivery::Full => {
                self.close(Refusal::TooSlow);
                false
            }
        }
    }

    /// Handles one frame; returns whether the socket goes on.
    async fn on_frame(&mut self, frame: Bytes) -> bool {
        let (name, message) = match frame::decode(&frame) {
            Ok(ClientFrame::Ping) => return self.offer(frame::pong()),
            Ok(ClientFrame::Pong) => return true,
            Ok(ClientFrame::Doc { name, message }) => (Arc::<str>::from(name), Msg::from(message)),
            Err(e) => {
                info!(error = %e, "refused: not a Hocuspocus message");
                self.close(Refusal::NotAMessage);
                return false;
            }
        };
        if let Err(e) = self.docs.admits_new_name(&name) {
            return self.refuse_hold(e);
        }
        match message {
            Msg::Auth(token) => self.authenticate(&name, &token).await,
            Msg::Close => {
                debug!(document = %name, "the provider closed a document");
                self.leave(&name).await;
                self.docs.remove(&name);
                true
            }
            message => {
                if matches!(self.docs.get(&name), Some(Doc::Open(_))) {
                    self.on_message(&name, message, frame).await
                } else {
                    match self.docs.hold(&name, frame) {
                        Ok(_) => true,
                        Err(e) => self.refuse_hold(e),
                    }
                }
            }
        }
    }

    fn refuse_hold(&self, e: HoldError) -> bool {
        let refusal = match e {
            HoldError::Backlog => Refusal::UnauthenticatedBacklog,
            HoldError::Names => Refusal::TooManyDocuments,
        };
        info!(reason = refusal.reason(), "closing a Hocuspocus socket");
        self.close(refusal);
        false
    }

    /// Checks a token for document `name`: its board id, the token, the role.
    fn check(&self, name: &str, token: &str) -> Result<(BoardId, Grant), Refusal> {
        let board = BoardId::parse(board_of(name)).map_err(|e| {
            info!(error = %e, "document refused: invalid board id");
            Refusal::InvalidBoardId
        })?;
        let grant = self
            .sessions
            .deps
            .auth
            .authenticate(Some(token))
            .map_err(|e| {
                info!(board = %board, error = %e, "document refused: not authenticated");
                match e {
                    AuthError::Missing => Refusal::TokenRequired,
                    AuthError::Invalid(TokenError::Expired) => Refusal::TokenExpired,
                    AuthError::Invalid(_) => Refusal::InvalidToken,
                }
            })?;
        grant.allows(&board, Role::Read).map_err(|e| {
            info!(board = %board, error = %e, "document refused: not allowed");
            match e {
                Denied::Expired => Refusal::TokenExpired,
                Denied::OtherBoard | Denied::Role { .. } => Refusal::OtherBoard,
            }
        })?;
        Ok((board, grant))
    }

    /// An Auth message: opens the document, or renews an open document's token.
    async fn authenticate(&mut self, name: &Arc<str>, token: &str) -> bool {
        let (board, grant) = match self.check(name, token) {
            Ok(checked) => checked,
            Err(refusal) => return self.deny(name, refusal, true).await,
        };
        let renewing = match self.docs.get(name) {
            Some(Doc::Open(open)) => Some(open.user.as_deref() == grant.user.as_deref()),
            _ => None,
        };
        match renewing {
            None => {}
            Some(false) => {
                info!(board = %board, "document refused: a fresh token for another user");
                return self.deny(name, Refusal::InvalidToken, true).await;
            }
            // A fresh token (the provider answers the server's request, or re-sends its own).
            Some(true) => {
                let can_write = grant.role >= Role::Write;
                if let Some(Doc::Open(open)) = self.docs.get_mut(name) {
                    open.can_write = can_write;
                    let (expires_at, refresh_at) = deadlines(&grant);
                    // Asked again ahead of the new expiry only if it is later (the provider
                    // may answer with the token it had).
                    if expires_at > open.expires_at || expires_at.is_none() {
                        open.refresh_at = refresh_at;
                    }
                    open.expires_at = expires_at;
                }
                debug!(board = %board, role = %grant.role, "token renewed");
                return self.offer(frame::authenticated(name, !can_write));
            }
        }
        self.join(name, board, grant).await
    }

    /// Refuses document `name` (PermissionDenied with the refusal's reason, counted); an open
    /// one leaves its board. Its frames are dropped until it authenticates again.
    async fn deny(&mut self, name: &Arc<str>, refusal: Refusal, count: bool) -> bool {
        debug_assert!(DENIALS.contains(&refusal), "{refusal:?} is not a denial");
        if count {
            refusal.count(self.metrics());
        }
        self.leave(name).await;
        self.docs.set_refused(name);
        self.offer(frame::permission_denied(name, refusal.reason()))
    }

    /// Joins document `name` to its board, then reads what it held.
    async fn join(&mut self, name: &Arc<str>, board: BoardId, grant: Grant) -> bool {
        if self.docs.open_count() >= MAX_DOCUMENTS {
            info!(board = %board, "document refused: too many on this socket");
            return self.deny(name, Refusal::TooManyDocuments, true).await;
        }
        let deps = &self.sessions.deps;
        let can_write = grant.role >= Role::Write;
        if !can_write {
            // Only a writer creates a board by opening it.
            match deps.store.get_board(&board).await {
                Ok(Some(_)) => {}
                Ok(None) => {
                    info!(board = %board, "document refused: a read-only token for a board that does not exist");
                    return self.deny(name, Refusal::BoardNotFound, true).await;
                }
                Err(e) => {
                    info!(board = %board, error = %e, "cannot look the board up");
                    self.close(Refusal::BoardUnavailable);
                    return false;
                }
            }
        }
        let conn = self.sessions.next_conn();
        let channel = self.next_channel;
        self.next_channel = self.next_channel.wrapping_add(1).max(SESSION + 1);
        let link = self.mux.open(channel, frame::prefix(name));
        self.framing.add(channel);
        // Ahead of the board's step 1 on the same channel.
        if !self.offer_on(channel, frame::authenticated_body(!can_write)) {
            return false;
        }
        let identity = if deps.auth.is_open() {
            Identity::Open
        } else {
            Identity::User(grant.user.as_deref().map(Arc::from))
        };
        let joined = deps
            .boards
            .call_with_handle(&board, |reply| BoardCmd::Join {
                conn,
                link: link.clone().into(),
                wants: Wants {
                    acks: true,
                    stateless: true,
                    step1_on_join: false,
                },
                identity: identity.clone(),
                reply,
            })
            .await;
        let handle = match joined {
            Ok((Ok(()), handle)) => handle,
            Ok((Err(e), _)) | Err(e) => {
                self.mux.drop_channel(channel);
                self.framing.remove(channel);
                info!(board = %board, error = %e, "join failed");
                let refusal = join_refusal(&e, deps.shutdown.is_cancelled());
                return match refusal {
                    // The actor counted the full board when it refused the join.
                    Refusal::BoardFull => self.deny(name, refusal, false).await,
                    Refusal::BoardDeleted => self.deny(name, refusal, true).await,
                    other => {
                        self.close(other);
                        false
                    }
                };
            }
        };
        debug!(board = %board, role = %grant.role, conn, "document open");
        let held = self.docs.take_held(name);
        let (expires_at, refresh_at) = deadlines(&grant);
        self.docs.set_open(
            name,
            Open {
                conn,
                channel,
                handle,
                can_write,
                user: grant.user.as_deref().map(Arc::from),
                expires_at,
                refresh_at,
            },
        );
        for frame in held {
            let message = match frame::decode(&frame) {
                Ok(ClientFrame::Doc { message, .. }) => Msg::from(message),
                _ => continue,
            };
            if !matches!(self.docs.get(name), Some(Doc::Open(_))) {
                break;
            }
            if !self.on_message(name, message, frame).await {
                return false;
            }
        }
        true
    }

    /// Leaves `name`'s board if it is open there (the board clears its presence for the
    /// others); what it was stays in the table until the caller changes it.
    async fn leave(&mut self, name: &str) {
        if let Some(Doc::Open(open)) = self.docs.get(name) {
            self.mux.drop_channel(open.channel);
            self.framing.remove(open.channel);
            let _ = open.handle.send(BoardCmd::Leave { conn: open.conn }).await;
        }
    }

    /// Leaves every board (the socket is ending).
    async fn leave_all(&mut self) {
        for (_, open) in self.docs.open_docs() {
            let _ = open.handle.send(BoardCmd::Leave { conn: open.conn }).await;
        }
    }

    /// A message of an open document.
    async fn on_message(&mut self, name: &Arc<str>, message: Msg, frame: Bytes) -> bool {
        let Some(Doc::Open(open)) = self.docs.get(name) else {
            return true;
        };
        let (conn, channel, can_write, handle) =
            (open.conn, open.channel, open.can_write, open.handle.clone());
        let cmd = match message {
            Msg::Stateless(payload) => {
                if !can_write {
                    debug!(document = %name, "a stateless message from a read-only document dropped");
                    self.metrics().error(kind::READ_ONLY);
                    return true;
                }
                BoardCmd::Stateless {
                    from: Some(conn),
                    frame: protocol::stateless(&payload),
                    reply: None,
                }
            }
            Msg::Yjs(at) => {
                let body = frame.slice(at..);
                match protocol::decode(&body) {
                    Err(e) => {
                        info!(document = %name, error = %e, "refused: bad message");
                        self.close(decode_refusal(&e));
                        return false;
                    }
                    Ok(Incoming::Update { update, raw, .. }) if !can_write => {
                        if update.is_empty() {
                            return self.offer(frame::sync_status(name, true));
                        }
                        let Some(held) = self.permits(raw.len()).await else {
                            return false;
                        };
                        let (reply, answer) = oneshot::channel();
                        let name = name.clone();
                        self.checks.push(Box::pin(async move {
                            (name, channel, answer.await.unwrap_or(false))
                        }));
                        BoardCmd::Read(Read::Holds {
                            update,
                            held,
                            reply,
                        })
                    }
                    Ok(Incoming::Update {
                        update,
                        raw,
                        scanned,
                    }) => {
                        let Some(held) = self.permits(raw.len()).await else {
                            return false;
                        };
                        BoardCmd::Update {
                            conn,
                            update,
                            raw,
                            scanned,
                            held,
                        }
                    }
                    Ok(Incoming::SyncStep1(sv)) => BoardCmd::Read(Read::SyncStep1 {
                        conn,
                        sv,
                        answer: Step1Answer::Step2AndStep1,
                    }),
                    Ok(Incoming::Awareness { update }) => BoardCmd::Awareness {
                        conn,
                        update,
                        frame: body,
                    },
                    Ok(Incoming::QueryAwareness) => BoardCmd::QueryAwareness { conn },
                    // Type 2 is the dialect's own (read by `frame.rs`), never here.
                    Ok(Incoming::Auth) => return true,
                }
            }
            Msg::Auth(_) | Msg::Close => return true,
        };
        if handle.send(cmd).await.is_err() {
            // The board's actor stopped: because the server is shutting down, or it failed.
            let refusal = if self.sessions.deps.shutdown.is_cancelled() {
                Refusal::ServerRestart
            } else {
                Refusal::BoardUnavailable
            };
            self.close(refusal);
            return false;
        }
        true
    }

    /// Takes `bytes` of the socket's budget of uncommitted bytes, waiting (reading nothing
    /// more) until its earlier updates are committed enough; `None` if the socket closes
    /// meanwhile.
    async fn permits(&self, bytes: usize) -> Option<OwnedSemaphorePermit> {
        let permits = u32::try_from(bytes)
            .unwrap_or(u32::MAX)
            .clamp(1, self.max_uncommitted);
        tokio::select! {
            biased;
            () = self.mux.closed(Side::Reader) => None,
            held = self.uncommitted.clone().acquire_many_owned(permits) => held.ok(),
        }
    }

    /// A read-only document's content was compared with its board: SyncStatus 1 if the board
    /// already holds all of it (nothing is lost by refusing it), 0 if not.
    fn on_checked(&self, name: &Arc<str>, channel: ChannelId, holds: bool) -> bool {
        match self.docs.get(name) {
            Some(Doc::Open(open)) if open.channel == channel => {}
            _ => return true,
        }
        if !holds {
            debug!(document = %name, "refused an update from a read-only document");
            self.metrics().error(kind::READ_ONLY);
        }
        self.offer(frame::sync_status(name, holds))
    }

    /// A board closed a document's channel with `reason`. The board's refusals of that one
    /// document (its size limit, its deletion) close only the document: SyncStatus 0 for the
    /// refused update, then the dialect's Close message; anything else closes the socket with
    /// the board's code and reason (the provider reconnects and resyncs every document).
    fn board_closed(&mut self, channel: ChannelId, reason: CloseReason) -> bool {
        let Some(name) = self.docs.name_of_channel(channel) else {
            return true;
        };
        self.framing.remove(channel);
        let is = |refusal: Refusal| refusal.close_reason() == reason;
        if is(Refusal::BoardTooLarge) || is(Refusal::Deleted) || is(Refusal::BoardDeleted) {
            info!(document = %name, reason = reason.reason, "the board closed a document");
            self.docs.set_refused(&name);
            if is(Refusal::BoardTooLarge) && !self.offer(frame::sync_status(&name, false)) {
                return false;
            }
            return self.offer(frame::close(&name, reason.reason));
        }
        debug!(document = %name, code = reason.code, reason = reason.reason, "the board closed a document: closing the socket");
        self.mux.close(reason);
        false
    }

    /// Token deadlines: asks for fresh tokens ahead of expiry; refuses documents whose token
    /// expired (PermissionDenied `token expired`). A socket left with no open document because
    /// their tokens expired is closed with 4401, as on `/v1/sync`: the provider reconnects and
    /// asks its `token` function again.
    async fn on_deadlines(&mut self) -> bool {
        let now = Instant::now();
        let mut expired = false;
        for name in self.docs.due(now) {
            let Some(Doc::Open(open)) = self.docs.get_mut(&name) else {
                continue;
            };
            if open.expires_at.is_some_and(|at| at <= now) {
                info!(document = %name, "the document's token expired");
                expired = true;
                if !self.deny(&name, Refusal::TokenExpired, true).await {
                    return false;
                }
            } else if open.refresh_at.is_some_and(|at| at <= now) {
                open.refresh_at = None;
                debug!(document = %name, "asking the provider for a fresh token");
                if !self.offer(frame::token_request(&name)) {
                    return false;
                }
            }
        }
        if expired && self.docs.open_count() == 0 {
            info!("closing: the tokens of every document expired");
            // After the denials, which the provider reads first.
            self.mux.finish(Refusal::TokenExpired.close_reason());
            return false;
        }
        true
    }
}

/// A document message, owned (the frame it came in stays with it).
enum Msg {
    Auth(String),
    Yjs(usize),
    Stateless(String),
    Close,
}

impl From<DocMessage<'_>> for Msg {
    fn from(message: DocMessage<'_>) -> Self {
        match message {
            DocMessage::Auth { token } => Msg::Auth(token.to_owned()),
            DocMessage::Yjs { at } => Msg::Yjs(at),
            DocMessage::Stateless(payload) => Msg::Stateless(payload.to_owned()),
            DocMessage::Close => Msg::Close,
        }
    }
}

/// The board id in a document name: the name itself, or (a provider with `sessionAwareness`)
/// what comes before its `\0`.
fn board_of(name: &str) -> &str {
    name.split_once('\0').map_or(name, |(board, _)| board)
}

/// When a grant's token expires, and when to ask for a fresh one before that.
fn deadlines(grant: &Grant) -> (Option<Instant>, Option<Instant>) {
    let Some(left) = grant.remaining() else {
        return (None, None);
    };
    let now = Instant::now();
    let ahead = REFRESH_AHEAD.min(left / 2);
    (Some(now + left), Some(now + (left - ahead)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_aware_names_name_their_board_first() {
        assert_eq!(board_of("board-1"), "board-1");
        assert_eq!(board_of("board-1\0abc"), "board-1");
        assert_eq!(board_of(""), "");
    }
}
