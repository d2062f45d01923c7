//! The durability pipeline of one board, as a state machine without I/O.
//!
//! It decides *when* things may happen; the actor does them. Events come in as method calls
//! (an update was applied and must be stored: [`Pipeline::hold`]; commits were answered:
//! [`Pipeline::committed`]; a read or an update arrived: [`Pipeline::read`],
//! [`Pipeline::admit`]; rows another writer committed were read: [`Pipeline::healed`]); what
//! the actor must do comes out of [`Pipeline::poll`] as [`Effect`]s, one at a time, so that
//! the answer to one (a read that is an edit, say) is seen before the next is decided.
//!
//! The rules it keeps:
//!
//! - **Nothing is released before its commit**: a batch's broadcasts, acknowledgements and
//!   HTTP replies come out ([`Effect::Release`]) only once the commit holding it, and every
//!   commit before it, succeeded.
//! - **Order is kept**: batches are submitted and released in the order their updates were
//!   applied; the committer answers a board's batches in order.
//! - **Reads see durable state only**: a read is answered only when the doc holds exactly the
//!   stored rows (nothing in flight or unsent, no rows of another writer unread) and no
//!   version is being saved. Updates arriving meanwhile are held back behind it, so that
//!   moment comes within about two commits; both queues are bounded.
//! - **A failed commit fails everything after it**: its batch and every later one are failed,
//!   never shown; the actor stops once the batches still in flight are answered.
//!
//! An update from another node or from a second wire dialect is one more [`Pipeline::hold`]
//! (and, with its sequence numbers, [`Pipeline::note_rows`]): the pipeline does not know where
//! updates come from.

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::sync::Arc;

use super::batch::Batch;
use super::peer::ConnId;
use crate::ids::Seq;
use crate::storage::StorageError;

/// Why a commit failed.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum CommitError {
    /// The store refused or failed the transaction.
    #[error(transparent)]
    Storage(Arc<StorageError>),
    /// The committer stopped before it answered.
    #[error("the committer stopped")]
    Stopped,
}

/// A read waiting for durable state.
pub(super) trait WaitingRead {
    /// The connection whose sync step 1 this is: a newer one replaces one still waiting.
    fn step1_of(&self) -> Option<ConnId>;
}

/// An update held back while reads wait.
pub(super) trait HeldUpdate {
    /// The bytes it holds, counted against [`Limits::max_deferred_bytes`].
    fn bytes(&self) -> usize;
}

/// How much the pipeline holds at most.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// Batches sent to the committer and not yet answered. Each update goes out as soon as it
    /// is applied and joins the next group the committer starts; past the bound (commits
    /// stall), updates gather in the next batch.
    pub(super) max_in_flight: usize,
    /// Reads other than sync step 1 waiting for durable state (a connection's step 1 waits
    /// once, replaced by its newer one).
    pub(super) max_waiting_reads: usize,
    /// Bytes of updates held back while reads wait.
    pub(super) max_deferred_bytes: usize,
}

/// What the actor must do.
#[derive(Debug)]
pub(super) enum Effect<R, U> {
    /// Send these updates to the committer. Its answers come back, in order, through
    /// [`Pipeline::committed`] (or [`Pipeline::unsubmitted`] if it cannot take them).
    Submit(Vec<Vec<u8>>),
    /// Everything in the batch is durable: broadcast, acknowledge, answer.
    Release(Batch),
    /// The batch will never be durable (its commit, or an earlier one, failed): answer its
    /// writers with the error, show nothing.
    Fail(Batch),
    /// A batch answered after an earlier one failed: its writers learn whether it was stored
    /// (`true`); nothing is shown (the connections are being closed).
    Settle(Batch, bool),
    /// Rows another writer committed (`after < seq < before`) are missing from the doc: read
    /// them and call [`Pipeline::healed`].
    ReadRows { after: Seq, before: Seq },
    /// The doc holds exactly durable state: answer this read now.
    Answer(R),
    /// Too many reads wait: refuse this one (busy).
    RefuseRead(R),
    /// Apply these held-back updates now, in order.
    Apply(Vec<U>),
    /// Too many bytes wait: refuse this update (busy).
    RefuseUpdate(U),
    /// A commit failed: close every connection, refuse the held-back updates, and take no more
    /// commands. [`Effect::Stop`] follows once nothing is in flight.
    Failed { error: CommitError, held: Vec<U> },
    /// Stop the actor: a commit failed and every batch is answered.
    Stop,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Serving,
    /// Shutting down: no reads; held-back updates apply as soon as no version is being saved.
    Draining,
    /// A commit failed: answers are settled, nothing more is served.
    Failing,
}

/// The durability pipeline of one board. See the module docs.
#[derive(Debug)]
pub(super) struct Pipeline<R, U> {
    limits: Limits,
    mode: Mode,
    /// Applied and not yet sent to the committer.
    next: Batch,
    /// Sent to the committer and not yet answered, oldest first.
    in_flight: VecDeque<Batch>,
    /// Reads waiting for durable state, in arrival order.
    waiting: VecDeque<R>,
    /// Updates held back while reads wait or a version is saved, in arrival order.
    deferred: VecDeque<U>,
    deferred_bytes: usize,
    /// The last sequence number the doc holds every row up to (once no read of rows runs).
    last_seq: Seq,
    /// Rows other writers committed that no read covers yet (`after < seq < before`).
    gaps: Option<(Seq, Seq)>,
    /// Rows of another writer are being read.
    healing: bool,
    /// A version is being saved: every change waits.
    saving: bool,
    effects: VecDeque<Effect<R, U>>,
}

impl<R: WaitingRead, U: HeldUpdate> Pipeline<R, U> {
    /// A pipeline for a board whose doc holds every row up to `last_seq`.
    pub(super) fn new(limits: Limits, last_seq: Seq) -> Self {
        Self {
            limits,
            mode: Mode::Serving,
            next: Batch::default(),
            in_flight: VecDeque::new(),
            waiting: VecDeque::new(),
            deferred: VecDeque::new(),
            deferred_bytes: 0,
            last_seq,
            gaps: None,
            healing: false,
            saving: false,
            effects: VecDeque::new(),
        }
    }

    /// The next thing to do, if any. Call until `None` after every event.
    pub(super) fn poll(&mut self) -> Option<Effect<R, U>> {
        if let Some(effect) = self.effects.pop_front() {
            return Some(effect);
        }
        match self.mode {
            Mode::Failing => None,
            Mode::Draining => {
                (!self.saving && !self.deferred.is_empty()).then(|| self.take_deferred_effect())
            }
            Mode::Serving if !self.can_answer() => None,
            Mode::Serving => match self.waiting.pop_front() {
                Some(read) => Some(Effect::Answer(read)),
                None if !self.deferred.is_empty() => Some(self.take_deferred_effect()),
                None => None,
            },
        }
    }

    fn take_deferred_effect(&mut self) -> Effect<R, U> {
        self.deferred_bytes = 0;
        Effect::Apply(std::mem::take(&mut self.deferred).into())
    }

    // ----- updates -----

    /// An update arrived: `Some` if it may be applied now, `None` if it is held back behind
    /// waiting reads or a version being saved (or refused: [`Effect::RefuseUpdate`]).
    pub(super) fn admit(&mut self, update: U) -> Option<U> {
        let draining = self.mode == Mode::Draining;
        let wait =
            self.saving || !self.deferred.is_empty() || (!draining && !self.waiting.is_empty());
        if !wait {
            return Some(update);
        }
        let bytes = update.bytes();
        if !draining
            && !self.deferred.is_empty()
            && self.deferred_bytes + bytes > self.limits.max_deferred_bytes
        {
            self.effects.push_back(Effect::RefuseUpdate(update));
            return None;
        }
        self.deferred_bytes += bytes;
        self.deferred.push_back(update);
        None
    }

    /// Adds an update the doc learned to what the next commit stores.
    pub(super) fn hold(&mut self, update: Vec<u8>) {
        let batch = &mut self.next;
        batch.first_at.get_or_insert_with(std::time::Instant::now);
        batch.bytes += update.len() as u64;
        batch.updates.push(update);
    }

    /// What the next commit releases: broadcasts, acknowledgements, HTTP writers to add.
    pub(super) fn next_batch(&mut self) -> &mut Batch {
        &mut self.next
    }

    /// Sends the next batch to the committer, unless as many as allowed are in flight. A
    /// batch that stores nothing (no-ops, an acknowledgement) is durable as soon as what came
    /// before it is.
    pub(super) fn dispatch(&mut self) {
        if self.mode == Mode::Failing
            || self.in_flight.len() >= self.limits.max_in_flight
            || self.next.is_empty()
        {
            return;
        }
        if self.next.updates.is_empty() {
            if self.in_flight.is_empty() {
                let batch = std::mem::take(&mut self.next);
                self.effects.push_back(Effect::Release(batch));
            }
            return;
        }
        let mut batch = std::mem::take(&mut self.next);
        let updates = std::mem::take(&mut batch.updates);
        batch.stored = updates.len();
        self.in_flight.push_back(batch);
        self.effects.push_back(Effect::Submit(updates));
    }

    /// The committer would not take the last [`Effect::Submit`] (it stopped).
    pub(super) fn unsubmitted(&mut self) {
        if let Some(batch) = self.in_flight.pop_back() {
            self.fail(CommitError::Stopped, batch);
        }
    }

    // ----- commits -----

    /// The oldest commits in flight were answered, in order (the first, and any after it
    /// that were answered already: those are released together, so that each peer gets one
    /// update per group however many batches a burst made).
    pub(super) fn committed(
        &mut self,
        answers: impl IntoIterator<Item = Result<Seq, CommitError>>,
    ) {
        let mut answers = answers.into_iter();
        if self.mode == Mode::Failing {
            self.settle(answers);
            return;
        }
        let Some(first) = answers.next() else {
            return;
        };
        let Some(mut batch) = self.in_flight.pop_front() else {
            return;
        };
        let seq = match first {
            Ok(seq) => seq,
            Err(error) => {
                self.fail(error, batch);
                self.settle(answers);
                return;
            }
        };
        self.note_rows(seq, batch.stored);
        batch.rows.push((seq, batch.stored as u32));
        let mut failed = None;
        for answer in answers.by_ref() {
            let Some(later) = self.in_flight.pop_front() else {
                break;
            };
            match answer {
                Ok(seq) => {
                    self.note_rows(seq, later.stored);
                    let mut later = later;
                    later.rows.push((seq, later.stored as u32));
                    batch.absorb(later);
                }
                Err(error) => {
                    failed = Some((error, later));
                    break;
                }
            }
        }
        self.effects.push_back(Effect::Release(batch));
        match failed {
            Some((error, later)) => {
                self.fail(error, later);
                self.settle(answers);
            }
            None => self.dispatch(),
        }
    }

    /// Answers after a failure: each batch's writers learn what happened to it.
    fn settle(&mut self, answers: impl Iterator<Item = Result<Seq, CommitError>>) {
        for answer in answers {
            let Some(batch) = self.in_flight.pop_front() else {
                break;
            };
            self.effects
                .push_back(Effect::Settle(batch, answer.is_ok()));
        }
        self.stop_if_answered();
    }

    fn stop_if_answered(&mut self) {
        if self.mode == Mode::Failing && self.in_flight.is_empty() {
            self.effects.push_back(Effect::Stop);
        }
    }

    /// A commit failed: nothing it held is shown. What was never sent is failed now; batches
    /// in flight may yet commit, and are settled as they are answered. Waiting reads are
    /// dropped (their callers ask again and reach the reloaded board).
    fn fail(&mut self, error: CommitError, batch: Batch) {
        self.mode = Mode::Failing;
        self.effects.push_back(Effect::Fail(batch));
        let next = std::mem::take(&mut self.next);
        self.effects.push_back(Effect::Fail(next));
        self.waiting.clear();
        let held = self.take_deferred();
        self.effects.push_back(Effect::Failed { error, held });
        self.stop_if_answered();
    }

    /// Notes that rows `last - count + 1 ..= last` were committed by this board's actor (or
    /// came from elsewhere, already stored). Rows before them the doc lacks (another writer's:
    /// an actor of this board that was stopping, another node) are read:
    /// [`Effect::ReadRows`].
    pub(super) fn note_rows(&mut self, last: Seq, count: usize) {
        let first = last - count as Seq + 1;
        let expected = self.last_seq + 1;
        if first > expected {
            let (after, before) = (expected - 1, first);
            self.gaps = Some(match self.gaps {
                Some((a, b)) => (a.min(after), b.max(before)),
                None => (after, before),
            });
            self.read_gaps();
        }
        self.last_seq = self.last_seq.max(last);
    }

    fn read_gaps(&mut self) {
        if self.healing {
            return;
        }
        if let Some((after, before)) = self.gaps.take() {
            self.healing = true;
            self.effects.push_back(Effect::ReadRows { after, before });
        }
    }

    /// The rows asked for by the last [`Effect::ReadRows`] were applied.
    pub(super) fn healed(&mut self) {
        self.healing = false;
        self.read_gaps();
    }

    // ----- reads and versions -----

    /// A read arrived: answered ([`Effect::Answer`]) as soon as the doc holds exactly
    /// durable state, or refused if too many wait.
    pub(super) fn read(&mut self, read: R) {
        if let Some(conn) = read.step1_of() {
            let earlier = self.waiting.iter_mut().find(|r| r.step1_of() == Some(conn));
            if let Some(earlier) = earlier {
                *earlier = read;
                return;
            }
        } else if !self.can_answer() {
            let others = self
                .waiting
                .iter()
                .filter(|r| r.step1_of().is_none())
                .count();
            if others >= self.limits.max_waiting_reads {
                self.effects.push_back(Effect::RefuseRead(read));
                return;
            }
        }
        self.waiting.push_back(read);
    }

    /// A version is being saved (`true`) or was saved: every change waits while it is.
    pub(super) fn set_saving(&mut self, saving: bool) {
        self.saving = saving;
    }

    // ----- lifecycle -----

    /// Shutdown: no more reads (the waiting ones are returned, to refuse); updates still
    /// arriving are applied at once, after those held back, unless a version is being saved.
    pub(super) fn drain(&mut self) -> Vec<R> {
        if self.mode == Mode::Serving {
            self.mode = Mode::Draining;
        }
        self.waiting.drain(..).collect()
    }

    /// Takes the waiting reads (to refuse them).
    pub(super) fn take_waiting(&mut self) -> Vec<R> {
        self.waiting.drain(..).collect()
    }

    /// Takes the updates held back (to refuse them).
    pub(super) fn take_deferred(&mut self) -> Vec<U> {
        self.deferred_bytes = 0;
        self.deferred.drain(..).collect()
    }

    /// The actor stops at once: returns every batch not yet released (in flight or not sent)
    /// to fail, and forgets the reads waiting (dropped: their callers ask again) and every
    /// effect not yet taken but releases (durable already).
    pub(super) fn abort(&mut self) -> Vec<Batch> {
        self.waiting.clear();
        self.effects.retain(|e| matches!(e, Effect::Release(_)));
        let mut batches: Vec<Batch> = self.in_flight.drain(..).collect();
        batches.push(std::mem::take(&mut self.next));
        batches
    }

    // ----- state -----

    /// The doc holds nothing that is not durable.
    pub(super) fn is_quiescent(&self) -> bool {
        self.in_flight.is_empty() && self.next.updates.is_empty()
    }

    /// The doc holds every stored row up to [`Self::last_seq`].
    pub(super) fn is_complete(&self) -> bool {
        !self.healing && self.gaps.is_none()
    }

    /// Reads may be answered now.
    pub(super) fn can_answer(&self) -> bool {
        self.is_quiescent() && self.is_complete() && !self.saving
    }

    /// Nothing waits, nothing is in flight, nothing is being read or saved: the board may be
    /// evicted (if no one is connected).
    pub(super) fn is_settled(&self) -> bool {
        self.can_answer() && self.waiting.is_empty() && self.deferred.is_empty()
    }

    /// Nothing is in flight and no version is being saved: the actor may stop.
    pub(super) fn is_answered(&self) -> bool {
        self.in_flight.is_empty() && !self.saving
    }

    /// A commit failed: the actor takes no more commands.
    pub(super) fn is_failing(&self) -> bool {
        self.mode == Mode::Failing
    }

    pub(super) fn last_seq(&self) -> Seq {
        self.last_seq
    }
}
