//! The assistant as this server hosts it (README.md, "The assistant"): runs on boards, one at a
//! time per board, recorded in storage and undoable as a whole.
//!
//! # Layout
//!
//! - this file: [`AssistantConfig`], the [`Assistant`] service (what it uses of the server, and
//!   the model service, budgets, caps and active run of each board when one is configured),
//!   starting, cancelling, listing and recording runs.
//! - `peer`: the board actor as the run's [`ai_agent::BoardPeer`].
//! - `changes`: what a run inserted and deleted, as CRDT ids, stored with the run.
//! - `undo`: the forward change that undoes a run.
//! - `revert`: undo of a stored run through the board actor.
//!
//! # A run
//!
//! 1. The board is claimed for the run; a second prompt while it works is refused (409,
//!    naming the active run): it neither queues nor cancels, so nobody's run is lost to
//!    someone else's click. `POST .../runs/{run}/cancel` stops a run.
//! 2. The board's state is saved as an automatic version (`before assistant run`): restore
//!    and undo fall back on it.
//! 3. The run is recorded (`running`), then `ai_agent::run` works on the board through the
//!    actor, in a task the server tracks (shutdown cancels it and waits for it).
//! 4. The outcome (state, tool calls, tokens, what changed) is recorded once, and the board is
//!    released. Only then does the caller get `done`: a prompt sent on `done` is accepted.

mod budgets;
mod changes;
mod peer;
mod revert;
mod undo;
#[cfg(test)]
mod undo_tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ai_agent::{
    BudgetLedger, BudgetLimits, Budgets, LlmClient, LlmConfig, LlmError, RunCaps, RunEvent,
    RunRequest, RunStatus, Viewport,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use self::peer::ActorPeer;
pub(crate) use self::revert::UndoReport;
use crate::board::registry::Boards;
use crate::board::{BoardCmd, BoardError, Read, VersionMeta};
use crate::ids::BoardId;
use crate::metrics::Metrics;
use crate::storage::{
    Backend, NewRun, RunRecord, RunResult, RunState, Storage, StorageError, VersionInfo,
    VersionKind, now_millis,
};

/// How long a finished run waits for its caller to take the `done` event.
const DONE_GRACE: Duration = Duration::from_secs(30);

/// [`AssistantConfig::run_expiry`] by default, and when no model service is configured.
pub const DEFAULT_RUN_EXPIRY: Duration = Duration::from_secs(30);

/// How the assistant is set up.
#[derive(Debug, Clone)]
pub struct AssistantConfig {
    /// The model service.
    pub llm: LlmConfig,
    /// Limits on each run.
    pub caps: RunCaps,
    /// Token budgets and request rates, kept in the database: shared by every server on it,
    /// and kept across restarts.
    pub budgets: BudgetLimits,
    /// Longest prompt accepted, in characters.
    pub max_prompt_chars: usize,
    /// A working run refreshes its heartbeat in the database every third of this; a running
    /// run whose heartbeat is older belongs to a server that stopped: it no longer holds its
    /// board, and is recorded `interrupted`. A run that cannot refresh its heartbeat for this
    /// long stops itself (cancelled), since another server may now take the board.
    pub run_expiry: Duration,
}

/// Why a run could not start, or a run could not be undone. Nothing was changed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AssistantError {
    /// No model service is configured, so no run can start.
    #[error("the assistant has no model service")]
    NotConfigured,
    /// The prompt is empty or too long.
    #[error("{0}")]
    BadPrompt(String),
    /// Another run is working on the board.
    #[error("the assistant is already working on this board (run {0})")]
    Busy(String),
    /// No such run on this board.
    #[error("no such run")]
    RunNotFound,
    /// The run is still working.
    #[error("run {0} is still working; cancel it or wait for it to end")]
    RunActive(String),
    /// The run was undone already.
    #[error("run {0} was already undone")]
    AlreadyUndone(String),
    /// The undo could not be computed or applied.
    #[error("the run cannot be undone: {0}")]
    Undo(String),
    /// The board refused or failed.
    #[error(transparent)]
    Board(#[from] BoardError),
    /// The database failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The undo's task failed.
    #[error("the undo task failed: {0}")]
    UndoTask(#[from] tokio::task::JoinError),
}

/// A run that started.
#[derive(Debug)]
pub(crate) struct Started {
    pub(crate) run_id: String,
    pub(crate) before_version: VersionInfo,
    /// The run's progress; ends with [`RunEvent::Done`]. The run goes on if this is dropped.
    pub(crate) events: mpsc::Receiver<RunEvent>,
}

/// What to run.
#[derive(Debug)]
pub(crate) struct StartRequest {
    pub(crate) board: BoardId,
    /// The caller (token `sub`), if known.
    pub(crate) user: Option<String>,
    pub(crate) prompt: String,
    pub(crate) viewport: Option<Viewport>,
}

#[derive(Debug, Clone)]
struct Active {
    run_id: String,
    cancel: CancellationToken,
}

/// What the assistant uses of the server: the boards (its edits go through their actors) and
/// their store (run records, versions), the metrics, and the task tracker and shutdown token
/// its runs and undos live under.
#[derive(Debug, Clone)]
pub(crate) struct AssistantDeps {
    pub(crate) store: Arc<dyn Storage>,
    pub(crate) boards: Boards,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) tracker: TaskTracker,
    pub(crate) shutdown: CancellationToken,
}

/// The model service and the limits runs keep to.
#[derive(Debug)]
pub(crate) struct Model {
    llm: LlmClient,
    limits: BudgetLimits,
    /// In this process until the service is built, then the store's
    /// ([`budgets::StoredBudgets`]).
    budgets: Arc<dyn BudgetLedger>,
    caps: RunCaps,
    max_prompt_chars: usize,
    run_expiry: Duration,
}

impl Model {
    /// Sets up the model service; fails if its configuration is unusable (for example an
    /// https base URL in a build without TLS).
    pub(crate) fn new(config: AssistantConfig) -> Result<Self, LlmError> {
        Ok(Self {
            llm: LlmClient::new(config.llm)?,
            limits: config.budgets,
            budgets: Arc::new(Budgets::new(config.budgets)),
            caps: config.caps,
            max_prompt_chars: config.max_prompt_chars,
            run_expiry: config.run_expiry.max(Duration::from_millis(30)),
        })
    }

    /// The model's name.
    pub(crate) fn name(&self) -> &str {
        self.llm.model()
    }
}

/// The assistant service: one per server. Without a model service no run starts, but the runs
/// recorded before can still be listed and undone.
#[derive(Debug)]
pub(crate) struct Assistant {
    deps: AssistantDeps,
    model: Option<Arc<Model>>,
    active: Mutex<HashMap<BoardId, Active>>,
}

impl Assistant {
    /// The service, running with `model` (none: runs are refused).
    pub(crate) fn new(model: Option<Model>, deps: AssistantDeps) -> Self {
        let model = model.map(|mut model| {
            model.budgets = Arc::new(budgets::StoredBudgets::spawn(
                model.limits,
                deps.store.clone(),
                &deps.tracker,
                deps.shutdown.clone(),
            ));
            Arc::new(model)
        });
        Self {
            deps,
            model,
            active: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a model service is configured (runs can start).
    pub(crate) fn is_configured(&self) -> bool {
        self.model.is_some()
    }

    fn active(&self) -> std::sync::MutexGuard<'_, HashMap<BoardId, Active>> {
        self.active.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The run working on `board`, if any.
    pub(crate) fn active_run(&self, board: &BoardId) -> Option<String> {
        self.active().get(board).map(|a| a.run_id.clone())
    }

    /// Cancels `run_id` if it is the run working on `board`: at once if it works on this
    /// server, otherwise by asking through the database (the server it works on stops it
    /// within a second). Returns whether it was working.
    pub(crate) async fn cancel(&self, board: &BoardId, run_id: &str) -> Result<bool, StorageError> {
        let local = match self.active().get(board) {
            Some(a) if a.run_id == run_id => {
                a.cancel.cancel();
                true
            }
            _ => false,
        };
        if local {
            return Ok(true);
        }
        self.deps.store.request_cancel(board, run_id).await
    }

    /// Starts a run; see the module docs for the steps.
    pub(crate) async fn start(
        self: &Arc<Self>,
        request: StartRequest,
    ) -> Result<Started, AssistantError> {
        let Some(model) = &self.model else {
            return Err(AssistantError::NotConfigured);
        };
        let prompt = request.prompt.trim().to_owned();
        if prompt.is_empty() {
            return Err(AssistantError::BadPrompt("the prompt is empty".into()));
        }
        let chars = prompt.chars().count();
        if chars > model.max_prompt_chars {
            return Err(AssistantError::BadPrompt(format!(
                "the prompt has {chars} characters; at most {} are accepted",
                model.max_prompt_chars
            )));
        }
        let run_id = uuid::Uuid::now_v7().simple().to_string();
        let claim = self.claim(&request.board, &run_id)?;

        let deps = &self.deps;
        // The claim across servers: the run's row, `running`, at most one per board.
        deps.store
            .start_run(
                &request.board,
                NewRun {
                    id: &run_id,
                    user: request.user.as_deref(),
                    prompt: &prompt,
                    model: model.llm.model(),
                    before_version: None,
                    expired_before: expired_before(model.run_expiry),
                },
            )
            .await
            .map_err(|e| match e {
                StorageError::RunActive { run, .. } => AssistantError::Busy(run),
                e => AssistantError::Storage(e),
            })?;
        // Saved by the board's actor, holding every change back until it is: the version is
        // exactly the board as the run finds it.
        let before = VersionMeta {
            kind: VersionKind::Auto,
            label: None,
            author: Some(format!("ai:{run_id}")),
            reason: Some("before assistant run".into()),
        };
        let saved = deps
            .boards
            .call(&request.board, |reply| {
                BoardCmd::Read(Read::SaveVersion {
                    meta: before.clone(),
                    reply,
                })
            })
            .await
            .map_err(AssistantError::from)
            .and_then(|r| r.map_err(AssistantError::from));
        let version = match saved {
            Ok(version) => version,
            Err(e) => {
                // The run never started: give the board back.
                self.abandon(&request.board, &run_id, &e.to_string()).await;
                return Err(e);
            }
        };
        if let Err(e) = deps
            .store
            .set_run_version(&request.board, &run_id, version.id)
            .await
        {
            self.abandon(&request.board, &run_id, &e.to_string()).await;
            return Err(e.into());
        }
        info!(board = %request.board, run_id, "assistant run started");

        let (events, rx) = mpsc::channel(64);
        let (model, deps) = (model.clone(), deps.clone());
        let run = RunRequest {
            run_id: run_id.clone(),
            user: request.user.unwrap_or_else(|| "anonymous".into()),
            prompt,
            viewport: request.viewport,
        };
        let board = request.board;
        let run_id_for_log = run_id.clone();
        self.deps.tracker.spawn(async move {
            let run_id_for_log = run_id_for_log.as_str();
            let peer = ActorPeer::new(
                deps.boards.clone(),
                deps.store.clone(),
                board.clone(),
                run.run_id.clone(),
            );
            // The caller's `done` waits until the run is recorded and the board released, so
            // a prompt sent on `done` is never refused as busy.
            let (agent_events, mut agent_rx) = mpsc::channel(64);
            // Progress goes to the caller without ever waiting for it: a caller that stops
            // reading its stream loses progress events, never stalls the run.
            let forward = async {
                let mut done = None;
                while let Some(event) = agent_rx.recv().await {
                    if matches!(event, RunEvent::Done(_)) {
                        done = Some(event);
                    } else if let Err(mpsc::error::TrySendError::Full(_)) = events.try_send(event) {
                        debug!(run_id = run_id_for_log, "a progress event dropped: its reader is not reading");
                    }
                }
                done
            };
            let ended = CancellationToken::new();
            let work = async {
                let outcome = ai_agent::run(
                    &model.llm,
                    &peer,
                    model.budgets.as_ref(),
                    run,
                    &model.caps,
                    agent_events,
                    claim.cancel.clone(),
                )
                .await;
                ended.cancel();
                outcome
            };
            let heartbeat = heartbeat(
                deps.store.as_ref(),
                &board,
                run_id_for_log,
                model.run_expiry,
                &ended,
                &claim.cancel,
            );
            let (outcome, done, ()) = tokio::join!(work, forward, heartbeat);
            let changes = peer.changes().encode();
            let tool_calls = serde_json::to_string(&outcome.tool_calls)
                .unwrap_or_else(|_| "[]".into());
            let status = status_name(outcome.status);
            deps.metrics.assistant_run(
                status,
                outcome.usage.prompt_tokens,
                outcome.usage.completion_tokens,
            );
            deps.metrics
                .assistant_tool_calls
                .inc_by(outcome.tool_calls.len() as u64);
            let result = RunResult {
                state: run_state(outcome.status),
                error: outcome.error.as_deref(),
                summary: &outcome.summary,
                tool_calls: &tool_calls,
                prompt_tokens: outcome.usage.prompt_tokens,
                completion_tokens: outcome.usage.completion_tokens,
                objects_created: outcome.objects_created,
                objects_deleted: outcome.objects_deleted,
                steps: outcome.steps,
                changes: &changes,
            };
            if let Err(e) = deps
                .store
                .finish_run(&board, &outcome.run_id, result)
                .await
            {
                warn!(board = %board, run_id = outcome.run_id, error = %e, "could not record the run's outcome");
            }
            info!(board = %board, run_id = outcome.run_id, status, tool_calls = outcome.tool_calls.len(), "assistant run ended");
            drop(claim);
            if let Some(done) = done {
                // Waits a while for a slow reader, never for ever: shutdown waits for this task.
                let _ = tokio::time::timeout(DONE_GRACE, events.send(done)).await;
            }
        });
        Ok(Started {
            run_id,
            before_version: version,
            events: rx,
        })
    }

    /// Records a run that claimed its board but could not start as failed, which gives the
    /// board back.
    async fn abandon(&self, board: &BoardId, run_id: &str, why: &str) {
        let result = RunResult {
            state: RunState::Failed,
            error: Some(why),
            summary: "",
            tool_calls: "[]",
            prompt_tokens: 0,
            completion_tokens: 0,
            objects_created: 0,
            objects_deleted: 0,
            steps: 0,
            changes: &[],
        };
        if let Err(e) = self.deps.store.finish_run(board, run_id, result).await {
            warn!(board = %board, run_id, error = %e, "could not record a run that failed to start");
        }
    }

    /// Claims `board` for `run_id` in this process; the claim is released when dropped.
    fn claim(self: &Arc<Self>, board: &BoardId, run_id: &str) -> Result<Claim, AssistantError> {
        let mut active = self.active();
        if let Some(a) = active.get(board) {
            return Err(AssistantError::Busy(a.run_id.clone()));
        }
        let cancel = self.deps.shutdown.child_token();
        active.insert(
            board.clone(),
            Active {
                run_id: run_id.to_owned(),
                cancel: cancel.clone(),
            },
        );
        Ok(Claim {
            assistant: self.clone(),
            board: board.clone(),
            run_id: run_id.to_owned(),
            cancel,
        })
    }

    /// How long a running run's heartbeat may be silent before its run counts as interrupted.
    fn run_expiry(&self) -> Duration {
        self.model
            .as_ref()
            .map_or(DEFAULT_RUN_EXPIRY, |m| m.run_expiry)
    }

    /// Marks runs still `running` whose heartbeat expired as `interrupted`: their server
    /// stopped. Runs other servers are working on refresh theirs, so they are left alone.
    pub(crate) async fn interrupt_stale_runs(&self) -> Result<u64, StorageError> {
        let cutoff = expired_before(self.run_expiry());
        self.deps.store.interrupt_stale_runs(cutoff).await
    }

    /// At start-up: marks interrupted the runs left `running` by a server that stopped. A
    /// SQLite (or in-memory) database has one server, this one, so every run still `running`
    /// was left by it; on PostgreSQL other servers may be working on runs right now, so only
    /// runs whose heartbeat expired are (a run this server left before a crash keeps its board
    /// until its heartbeat expires, [`AssistantConfig::run_expiry`]).
    pub(crate) async fn interrupt_runs_at_start(&self) -> Result<u64, StorageError> {
        match self.deps.store.backend() {
            Backend::Postgres => self.interrupt_stale_runs().await,
            Backend::Sqlite | Backend::Memory => {
                self.deps.store.interrupt_stale_runs(now_millis() + 1).await
            }
        }
    }

    /// The board's runs, newest first, at most `limit`, and the one working now, if any, on
    /// this server or another (stale runs are marked interrupted first).
    pub(crate) async fn runs(
        &self,
        board: &BoardId,
        limit: u32,
    ) -> Result<(Vec<RunRecord>, Option<String>), StorageError> {
        self.interrupt_stale_runs().await?;
        let runs = self.deps.store.list_runs(board, limit).await?;
        let active = self.active_run(board).or_else(|| {
            runs.iter()
                .find(|r| r.state == RunState::Running)
                .map(|r| r.id.clone())
        });
        Ok((runs, active))
    }

    /// One run of the board (stale runs are marked interrupted first).
    pub(crate) async fn run(
        &self,
        board: &BoardId,
        run_id: &str,
    ) -> Result<RunRecord, AssistantError> {
        self.interrupt_stale_runs().await?;
        self.deps
            .store
            .get_run(board, run_id)
            .await?
            .ok_or(AssistantError::RunNotFound)
    }

    /// Undoes run `run_id` of `board` on behalf of `by`, in a task of its own that the server
    /// tracks: the undo claims the run in storage first and gives the claim back if it fails,
    /// so it must finish even if the caller goes away meanwhile.
    pub(crate) async fn undo(
        self: &Arc<Self>,
        board: BoardId,
        run_id: String,
        by: Option<String>,
    ) -> Result<UndoReport, AssistantError> {
        let this = self.clone();
        self.deps
            .tracker
            .spawn(async move { this.undo_run(&board, &run_id, by.as_deref()).await })
            .await?
    }
}

/// A board claimed for a run.
struct Claim {
    assistant: Arc<Assistant>,
    board: BoardId,
    run_id: String,
    cancel: CancellationToken,
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut active = self.assistant.active();
        if active
            .get(&self.board)
            .is_some_and(|a| a.run_id == self.run_id)
        {
            active.remove(&self.board);
        }
    }
}

/// How often a working run checks whether another server asked to cancel it.
const CANCEL_CHECK: Duration = Duration::from_secs(1);

/// The heartbeat cutoff: a running run whose heartbeat is older than this has expired.
fn expired_before(expiry: Duration) -> i64 {
    now_millis() - i64::try_from(expiry.as_millis()).unwrap_or(i64::MAX)
}

/// Refreshes a working run's heartbeat every third of `expiry` until `ended`, and every second
/// checks whether another server asked to cancel it (then cancels it). If the run lost
/// its claim (marked interrupted by another server after its heartbeat expired), or the
/// heartbeat could not be refreshed for `expiry`, the run is cancelled: another server may be
/// working on the board now.
async fn heartbeat(
    store: &dyn Storage,
    board: &BoardId,
    run_id: &str,
    expiry: Duration,
    ended: &CancellationToken,
    cancel: &CancellationToken,
) {
    let mut last_ok = tokio::time::Instant::now();
    let beat = expiry / 3;
    let mut next_beat = tokio::time::Instant::now() + beat;
    loop {
        tokio::select! {
            () = ended.cancelled() => return,
            () = tokio::time::sleep(CANCEL_CHECK.min(beat)) => {}
        }
        // Asked to stop by another server (`request_cancel`)?
        if let Ok(true) = store.cancel_requested(board, run_id).await {
            info!(board = %board, run_id, "cancelled from another server");
            cancel.cancel();
            return;
        }
        if tokio::time::Instant::now() < next_beat {
            continue;
        }
        next_beat = tokio::time::Instant::now() + beat;
        match store.touch_run(board, run_id).await {
            Ok(true) => last_ok = tokio::time::Instant::now(),
            Ok(false) => {
                warn!(board = %board, run_id, "the run lost its claim on the board; stopping it");
                cancel.cancel();
                return;
            }
            Err(e) => {
                warn!(board = %board, run_id, error = %e, "could not refresh the run's heartbeat");
                if last_ok.elapsed() >= expiry {
                    cancel.cancel();
                    return;
                }
            }
        }
    }
}

fn status_name(status: RunStatus) -> &'static str {
    run_state(status).as_str()
}

fn run_state(status: RunStatus) -> RunState {
    match status {
        RunStatus::Completed => RunState::Completed,
        RunStatus::Cancelled => RunState::Cancelled,
        RunStatus::Failed => RunState::Failed,
        RunStatus::Capped => RunState::Capped,
    }
}
