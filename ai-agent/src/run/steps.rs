//! The loop behind [`super::run`].

use std::future::Future;
use std::time::Duration;

use async_openai::types::chat::{ChatCompletionRequestMessage, ChatCompletionTools};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{RunCaps, RunEvent, RunOutcome, RunRequest, RunStatus, ToolCallRecord, Usage, prompt};
use crate::budget::{BudgetLedger, estimate_tokens};
use crate::llm::{Finish, LlmClient, ToolCallRequest, Turn};
use crate::peer::{BoardPeer, Presence};
use crate::tools::{self, CallReport, Effect, ToolContext, ToolName};

/// Longest prompt accepted (characters).
const MAX_PROMPT: usize = 8_000;
/// Characters of a call's arguments kept in its record.
const MAX_RECORDED_ARGUMENTS: usize = 4_000;
/// The assistant's name and cursor colour in awareness.
const PRESENCE_NAME: &str = "Assistant";
const PRESENCE_COLOR: &str = "#7c3aed";
/// How long the final event may wait for a slow consumer.
const DONE_SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the loop stopped.
#[derive(Debug)]
enum Stop {
    Completed,
    Cancelled,
    Capped(String),
    Failed(String),
}

pub(super) struct Runner<'a> {
    llm: &'a LlmClient,
    peer: &'a dyn BoardPeer,
    budgets: &'a dyn BudgetLedger,
    request: RunRequest,
    caps: RunCaps,
    events: mpsc::Sender<RunEvent>,
    cancel: CancellationToken,
    deadline: Instant,
    ctx: ToolContext,
    tools: Vec<ChatCompletionTools>,
    outcome: RunOutcome,
    /// The last presence sent: status and cursor.
    presence: Option<(String, Option<[f64; 2]>)>,
    cursor: Option<[f64; 2]>,
}

impl<'a> Runner<'a> {
    pub(super) fn new(
        llm: &'a LlmClient,
        peer: &'a dyn BoardPeer,
        budgets: &'a dyn BudgetLedger,
        request: RunRequest,
        caps: &RunCaps,
        events: mpsc::Sender<RunEvent>,
        cancel: CancellationToken,
    ) -> Self {
        let ctx = ToolContext::new(&request.run_id, request.viewport.map(Into::into));
        let outcome = RunOutcome {
            run_id: request.run_id.clone(),
            status: RunStatus::Failed,
            error: None,
            summary: String::new(),
            tool_calls: Vec::new(),
            usage: Usage::default(),
            objects_created: 0,
            objects_deleted: 0,
            steps: 0,
        };
        Runner {
            llm,
            peer,
            budgets,
            request,
            caps: *caps,
            events,
            cancel,
            deadline: Instant::now() + caps.wall_time,
            ctx,
            tools: tools::definitions(),
            outcome,
            presence: None,
            cursor: None,
        }
    }

    pub(super) async fn run(mut self) -> RunOutcome {
        let stop = self.steps().await;
        if let Err(e) = self.peer.presence(None).await {
            tracing::warn!(run_id = %self.request.run_id, error = %e, "could not clear the assistant's presence");
        }
        let (status, error) = match stop {
            Stop::Completed => (RunStatus::Completed, None),
            Stop::Cancelled => (
                RunStatus::Cancelled,
                Some("the run was cancelled".to_string()),
            ),
            Stop::Capped(why) => (RunStatus::Capped, Some(why)),
            Stop::Failed(why) => (RunStatus::Failed, Some(why)),
        };
        self.outcome.status = status;
        self.outcome.error = error;
        if self.outcome.summary.is_empty() {
            self.outcome.summary = format!(
                "{}: {} created, {} deleted",
                counted(
                    self.outcome.tool_calls.len() as u64,
                    "tool call",
                    "tool calls"
                ),
                counted(self.outcome.objects_created.into(), "object", "objects"),
                self.outcome.objects_deleted
            );
        }
        tracing::info!(
            run_id = %self.request.run_id,
            status = ?self.outcome.status,
            steps = self.outcome.steps,
            tool_calls = self.outcome.tool_calls.len(),
            total_tokens = self.outcome.usage.total_tokens,
            "assistant run ended"
        );
        let outcome = self.outcome.clone();
        let _ = tokio::time::timeout(
            DONE_SEND_TIMEOUT,
            self.events.send(RunEvent::Done(outcome.clone())),
        )
        .await;
        outcome
    }

    /// `Some` if the run must stop now (cancelled or out of time).
    fn interrupted(&self) -> Option<Stop> {
        if self.cancel.is_cancelled() {
            Some(Stop::Cancelled)
        } else if Instant::now() >= self.deadline {
            Some(wall_time_stop(&self.caps))
        } else {
            None
        }
    }

    /// Awaits `fut` unless the run is cancelled or runs out of time first (then `fut` is
    /// dropped).
    async fn interruptible<F: Future>(&self, fut: F) -> Result<F::Output, Stop> {
        tokio::select! {
            biased;
            () = self.cancel.cancelled() => Err(Stop::Cancelled),
            () = tokio::time::sleep_until(self.deadline) => Err(wall_time_stop(&self.caps)),
            out = fut => Ok(out),
        }
    }

    async fn emit(&self, event: RunEvent) {
        // A consumer that went away does not stop the run; one that stalls is bounded by the
        // run's cancellation and wall time.
        let _ = self.interruptible(self.events.send(event)).await;
    }

    async fn set_presence(&mut self, status: &str) {
        let wanted = (status.to_string(), self.cursor);
        if self.presence.as_ref() == Some(&wanted) {
            return;
        }
        let presence = Presence {
            name: PRESENCE_NAME.to_string(),
            color: PRESENCE_COLOR.to_string(),
            status: status.to_string(),
            cursor: self.cursor,
        };
        match self.peer.presence(Some(presence)).await {
            Ok(()) => self.presence = Some(wanted),
            Err(e) => tracing::debug!(error = %e, "could not set the assistant's presence"),
        }
    }

    async fn steps(&mut self) -> Stop {
        let prompt = self.request.prompt.trim().to_string();
        if prompt.is_empty() {
            return Stop::Failed("the prompt is empty".into());
        }
        if prompt.chars().count() > MAX_PROMPT {
            return Stop::Failed(format!("the prompt is longer than {MAX_PROMPT} characters"));
        }
        let mut messages = vec![prompt::system(), prompt::user(&prompt)];
        for step in 1..=self.caps.max_steps {
            if let Some(stop) = self.interrupted() {
                return stop;
            }
            self.outcome.steps = step;
            self.emit(RunEvent::Step { step }).await;
            self.set_presence("thinking").await;
            let board = match self.describe().await {
                Ok(board) => board,
                Err(stop) => return stop,
            };
            // The board description sits right after the request and is refreshed each step.
            let board_message = prompt::board_state(&board);
            if step == 1 {
                messages.push(board_message);
            } else if let Some(slot) = messages.get_mut(2) {
                *slot = board_message;
            }
            let turn = match self.model_turn(&messages).await {
                Ok(turn) => turn,
                Err(stop) => return stop,
            };
            if !turn.text.is_empty() {
                self.outcome.summary = turn.text.clone();
                self.emit(RunEvent::Text {
                    text: turn.text.clone(),
                })
                .await;
            }
            if turn.tool_calls.is_empty() {
                return match turn.finish {
                    Finish::ContentFilter => {
                        Stop::Failed("the model's answer was withheld by its content filter".into())
                    }
                    _ => Stop::Completed,
                };
            }
            messages.push(prompt::assistant(&turn.text, turn.message_tool_calls()));
            for call in turn.tool_calls {
                if let Some(stop) = self.interrupted() {
                    return stop;
                }
                let result = match self.apply(step, &call).await {
                    Ok(result) => result,
                    Err(stop) => return stop,
                };
                messages.push(prompt::tool_result(&call.id, &result));
            }
        }
        Stop::Capped(format!(
            "the run reached its cap of {} model steps",
            self.caps.max_steps
        ))
    }

    /// The board view for this step.
    async fn describe(&mut self) -> Result<Value, Stop> {
        let edit = tools::describe(&self.ctx);
        let value = self
            .interruptible(self.peer.edit(edit))
            .await?
            .map_err(|e| Stop::Failed(e.to_string()))?;
        let report: CallReport = serde_json::from_value(value)
            .map_err(|_| Stop::Failed("the board returned an unexpected result".into()))?;
        Ok(report.result.get("board").cloned().unwrap_or(Value::Null))
    }

    /// Reserves the budget, streams one turn and settles.
    async fn model_turn(
        &mut self,
        messages: &[ChatCompletionRequestMessage],
    ) -> Result<Turn, Stop> {
        let request = self.llm.request(
            messages.to_vec(),
            self.tools.clone(),
            self.caps.max_completion_tokens,
        );
        let bytes = serde_json::to_vec(&request).map(|b| b.len()).unwrap_or(0);
        let amount = estimate_tokens(bytes, messages.len())
            .saturating_add(u64::from(self.caps.max_completion_tokens));
        let mut reservation = self
            .budgets
            .reserve(&self.request.user, amount)
            .await
            .map_err(|e| Stop::Failed(e.to_string()))?;
        reservation.mark_sent();
        // Interrupted: the reservation is dropped as sent and charged in full.
        match self.interruptible(self.llm.stream_turn(request)).await? {
            Ok(turn) => {
                match turn.usage {
                    Some(usage) => {
                        reservation.settle(usage.total_tokens);
                        self.outcome.usage.add(usage);
                    }
                    // No usage reported: charged the full amount on drop.
                    None => drop(reservation),
                }
                Ok(turn)
            }
            Err(e) => {
                if e.before_generation() {
                    reservation.settle(0);
                }
                Err(Stop::Failed(e.to_string()))
            }
        }
    }

    /// Handles one tool call: the result for the model, or why the run stops.
    async fn apply(&mut self, step: u32, call: &ToolCallRequest) -> Result<Value, Stop> {
        let caps = self.caps;
        let mut stop = None;
        let (result, applied) = if self.outcome.tool_calls.len() >= caps.max_tool_calls as usize {
            let why = format!(
                "the run reached its cap of {} tool calls",
                caps.max_tool_calls
            );
            stop = Some(Stop::Capped(why.clone()));
            (cap_result(&why), false)
        } else {
            match tools::prepare(&call.name, &call.arguments) {
                Err(result) => (result, false),
                Ok(prepared) => {
                    let capped = match prepared.effect() {
                        Effect::Create if self.outcome.objects_created >= caps.max_creates => {
                            Some(format!(
                                "the run reached its cap of {} objects created",
                                caps.max_creates
                            ))
                        }
                        Effect::Delete if self.outcome.objects_deleted >= caps.max_deletes => {
                            Some(format!(
                                "the run reached its cap of {} objects deleted",
                                caps.max_deletes
                            ))
                        }
                        _ => None,
                    };
                    if let Some(why) = capped {
                        stop = Some(Stop::Capped(why.clone()));
                        (cap_result(&why), false)
                    } else {
                        self.set_presence(status_of(prepared.name())).await;
                        let value = self
                            .peer
                            .edit(prepared.into_edit(&self.ctx))
                            .await
                            .map_err(|e| Stop::Failed(e.to_string()))?;
                        let report: CallReport = serde_json::from_value(value).map_err(|_| {
                            Stop::Failed("the board returned an unexpected result".into())
                        })?;
                        self.outcome.objects_created += report.created;
                        self.outcome.objects_deleted += report.deleted;
                        if report.touched.is_some() {
                            self.cursor = report.touched;
                        }
                        (report.result, report.applied)
                    }
                }
            }
        };
        let record = ToolCallRecord {
            step,
            name: call.name.chars().take(64).collect(),
            arguments: call
                .arguments
                .chars()
                .take(MAX_RECORDED_ARGUMENTS)
                .collect(),
            result: result.clone(),
            applied,
        };
        self.outcome.tool_calls.push(record.clone());
        self.emit(RunEvent::Tool(record)).await;
        match stop {
            Some(stop) => Err(stop),
            None => Ok(result),
        }
    }
}

fn wall_time_stop(caps: &RunCaps) -> Stop {
    Stop::Capped(format!(
        "the run reached its wall-time cap of {} s",
        caps.wall_time.as_secs_f64()
    ))
}

fn cap_result(why: &str) -> Value {
    json!({"ok": false, "errors": [{"field": "", "code": "cap_reached", "message": why}]})
}

/// What the assistant shows it is doing.
fn status_of(tool: ToolName) -> &'static str {
    match tool {
        ToolName::GetBoardState => "reading the board",
        ToolName::CreateStickyNote => "adding sticky notes",
        ToolName::CreateShape => "drawing shapes",
        ToolName::CreateFrame => "adding frames",
        ToolName::CreateConnector => "connecting objects",
        ToolName::MoveObject | ToolName::ArrangeObjects => "arranging objects",
        ToolName::ResizeObject => "resizing objects",
        ToolName::UpdateText => "editing text",
        ToolName::ChangeColor => "changing colours",
        ToolName::DeleteObject => "removing objects",
    }
}

/// `1 object`, `2 objects`: a count with the noun it counts.
fn counted(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}
