//! One connection's session: joins its board, runs its reader and writer, and leaves.

use std::fmt::Display;
use std::sync::Arc;

use futures_util::{Sink, Stream, StreamExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tracing::{debug, info};

use super::Sessions;
use super::admit::{Admission, Admitted};
use super::reader::{Reader, read_loop};
use super::writer::{drain, ping_interval, send_close, write_loop};
use crate::auth::Role;
use crate::board::peer::{CloseReason, ConnId, PeerLink, Wants};
use crate::board::presence::Identity;
use crate::board::registry::BoardHandle;
use crate::board::{BoardCmd, BoardError};
use crate::refusal::Refusal;

/// Runs a connection's session over `stream` and `sink`: sends the refusal's close frame if
/// admission refused it, otherwise joins its board and reads and writes until either side ends.
pub(super) async fn run<St, Si, E>(
    sessions: Arc<Sessions>,
    stream: St,
    mut sink: Si,
    admission: Admission,
    conn: ConnId,
    wants_acks: bool,
) where
    St: Stream<Item = Result<Message, E>> + Unpin,
    E: Display,
    Si: Sink<Message> + Unpin + Send + 'static,
{
    let deps = &sessions.deps;
    // The reader and then `drain` may both see its end (axum's `WebSocket` ends once and for
    // all; a stream in general need not).
    let mut stream = stream.fuse();
    // Every step but the read loop runs once, boxed: a future is as large as its largest
    // step, and this one lives as long as the connection (10,000 idle connections each kept
    // about 1.1 KiB more before; BENCHMARKS.md, idle).
    //
    // Held to the end (with its address slot), whatever happens.
    let admitted = match admission {
        Ok(admitted) => admitted,
        Err(refusal) => {
            Box::pin(refuse(&mut sink, &mut stream, refusal.close_reason())).await;
            return;
        }
    };
    let joined = Box::pin(join(&sessions, &admitted, conn, wants_acks)).await;
    let (link, handle) = match joined {
        Ok(joined) => joined,
        Err(reason) => {
            Box::pin(refuse(&mut sink, &mut stream, reason)).await;
            return;
        }
    };
    let metrics = deps.metrics.clone();
    metrics.connections.inc();
    metrics.connections_opened.inc();
    let reader = Reader::new(
        conn,
        link.clone(),
        admitted.grant.role >= Role::Write,
        admitted.grant.remaining().map(|left| Instant::now() + left),
        &deps.limits,
        metrics.clone(),
        deps.shutdown.clone(),
    );
    debug!(wants_acks, role = %admitted.grant.role, "joined");
    // The writer is a task of its own: a fan-out wakes it alone, without polling the reader's
    // socket, timers and lock too (as one task joining both halves would, on every frame). It
    // logs nothing, so it runs outside the connection's span: entering and leaving a span on
    // every wake costs about 1.5% of the CPU of a large fan-out.
    let writer = {
        let (shutdown, link) = (deps.shutdown.clone(), link.clone());
        let ping_every = ping_interval(deps.limits.read_timeout);
        deps.tracker
            .spawn(async move { write_loop(&shutdown, &link, &mut sink, ping_every).await })
    };
    read_loop(&handle, &reader, &mut stream).await;
    Box::pin(async {
        let _ = writer.await;
        drain(&mut stream).await;
        let _ = handle.send(BoardCmd::Leave { conn }).await;
    })
    .await;
    metrics.connections.dec();
    debug!(reason = ?link.reason(), "closed");
}

/// Sends a refused connection's close frame, then drains what it still sends.
async fn refuse<Si, St, E>(sink: &mut Si, stream: &mut St, reason: CloseReason)
where
    Si: Sink<Message> + Unpin,
    St: Stream<Item = Result<Message, E>> + Unpin,
{
    send_close(sink, reason).await;
    drain(stream).await;
}

/// Joins an admitted connection to its board (asking again if the actor reached was just
/// evicted). Only a writer may create a board by connecting to it. A refusal is counted here,
/// unless the board's actor counted it.
async fn join(
    sessions: &Sessions,
    admitted: &Admitted,
    conn: ConnId,
    wants_acks: bool,
) -> Result<(PeerLink, BoardHandle), CloseReason> {
    let deps = &sessions.deps;
    if admitted.grant.role < Role::Write {
        match deps.store.get_board(&admitted.board).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                info!("refused: a read-only token for a board that does not exist");
                return Err(Refusal::BoardNotFound.count(&deps.metrics));
            }
            Err(e) => {
                info!(error = %e, "refused: cannot look the board up");
                return Err(Refusal::BoardUnavailable.count(&deps.metrics));
            }
        }
    }
    let link = PeerLink::new(deps.limits.outbound_queue, deps.limits.outbound_queue_bytes);
    let identity = if deps.auth.is_open() {
        Identity::Open
    } else {
        Identity::User(admitted.grant.user.as_deref().map(Arc::from))
    };
    let joined = deps
        .boards
        .call_with_handle(&admitted.board, |reply| BoardCmd::Join {
            conn,
            link: link.clone().into(),
            wants: Wants {
                acks: wants_acks,
                stateless: false,
                step1_on_join: true,
            },
            identity: identity.clone(),
            reply,
        })
        .await;
    match joined {
        Ok((Ok(()), handle)) => Ok((link, handle)),
        Ok((Err(e), _)) | Err(e) => {
            info!(error = %e, "join failed");
            let refusal = join_refusal(&e, deps.shutdown.is_cancelled());
            // The actor counted the full board when it refused the join.
            Err(if refusal == Refusal::BoardFull {
                refusal.close_reason()
            } else {
                refusal.count(&deps.metrics)
            })
        }
    }
}

/// Why a join the board refused closes the connection.
pub(super) fn join_refusal(e: &BoardError, shutting_down: bool) -> Refusal {
    if shutting_down {
        Refusal::ServerRestart
    } else {
        match e {
            BoardError::Full => Refusal::BoardFull,
            BoardError::Deleted => Refusal::BoardDeleted,
            _ => Refusal::BoardUnavailable,
        }
    }
}
