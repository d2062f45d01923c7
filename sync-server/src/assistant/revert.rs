//! Undo of a stored run: claimed in storage (so two callers can't undo twice), computed and
//! applied on the board actor as one forward change with origin `ai-undo:<run id>`, stored and
//! broadcast like any edit.

use ai_agent::Edited;
use serde::Serialize;
use serde_json::{Value, json};
use tracing::{info, warn};
use yrs::updates::decoder::Decode;
use yrs::{Transact, Update};

use super::changes::RunChanges;
use super::undo::undo_update;
use super::{Assistant, AssistantError};
use crate::board::{BoardCmd, Read};
use crate::ids::BoardId;
use crate::storage::RunState;

/// What an undo did.
#[derive(Debug, Serialize)]
pub(crate) struct UndoReport {
    pub(crate) run_id: String,
    /// Whether the board changed (false if the run changed nothing, or everything it did was
    /// already gone).
    pub(crate) changed: bool,
    /// Whether the version saved before the run was there to bring back what the run deleted
    /// or overwrote. Without it (pruned by retention) only what the run created is removed.
    pub(crate) restored_from_version: bool,
}

impl Assistant {
    /// Undoes run `run_id` of `board` on behalf of `by` (see [`Assistant::undo`], which runs it
    /// as a task of its own).
    pub(super) async fn undo_run(
        &self,
        board: &BoardId,
        run_id: &str,
        by: Option<&str>,
    ) -> Result<UndoReport, AssistantError> {
        let store = &self.deps.store;
        self.interrupt_stale_runs().await?;
        let run = store
            .get_run(board, run_id)
            .await?
            .ok_or(AssistantError::RunNotFound)?;
        if run.state == RunState::Running {
            return Err(AssistantError::RunActive(run.id));
        }
        if run.undone_at.is_some() {
            return Err(AssistantError::AlreadyUndone(run.id));
        }
        let changes =
            RunChanges::decode(&run.changes).map_err(|e| AssistantError::Undo(e.to_string()))?;
        if !store.claim_undo(board, run_id, by).await? {
            return Err(AssistantError::AlreadyUndone(run.id));
        }
        let applied = self
            .apply_undo(board, run_id, &changes, run.before_version)
            .await;
        match applied {
            Ok(report) => {
                self.deps.metrics.assistant_undos.inc();
                info!(board = %board, run_id, changed = report.changed, "assistant run undone");
                Ok(report)
            }
            Err(e) => {
                if let Err(release) = store.release_undo(board, run_id).await {
                    warn!(board = %board, run_id, error = %release, "could not release a failed undo");
                }
                Err(e)
            }
        }
    }

    async fn apply_undo(
        &self,
        board: &BoardId,
        run_id: &str,
        changes: &RunChanges,
        before_version: Option<crate::ids::VersionId>,
    ) -> Result<UndoReport, AssistantError> {
        let before = match before_version {
            Some(version) => self
                .deps
                .store
                .get_version(board, version)
                .await?
                .map(|v| v.data),
            None => None,
        };
        let restored_from_version = before.is_some();
        let origin = format!("ai-undo:{run_id}");
        let result = self
            .deps
            .boards
            .call(board, |reply| {
                let (changes, before, origin) = (changes.clone(), before.clone(), origin.clone());
                BoardCmd::Read(Read::Edit {
                    edit: Box::new(move |doc| undo_edit(doc, before.as_deref(), &changes, &origin)),
                    reply,
                })
            })
            .await??;
        if let Some(error) = result.get("error").and_then(Value::as_str) {
            return Err(AssistantError::Undo(error.to_owned()));
        }
        Ok(UndoReport {
            run_id: run_id.to_owned(),
            changed: result.get("changed").and_then(Value::as_bool) == Some(true),
            restored_from_version,
        })
    }
}

/// Runs on the board actor: computes the undo against the live doc and applies it in one
/// transaction.
fn undo_edit(doc: &yrs::Doc, before: Option<&[u8]>, changes: &RunChanges, origin: &str) -> Edited {
    let failed = |error: String| Edited {
        update: None,
        result: json!({ "error": error }),
    };
    let update = match undo_update(doc, before, changes) {
        Ok(Some(update)) => update,
        Ok(None) => {
            return Edited {
                update: None,
                result: json!({ "changed": false }),
            };
        }
        Err(e) => return failed(e.to_string()),
    };
    let update = match Update::decode_v1(&update) {
        Ok(update) => update,
        Err(e) => return failed(e.to_string()),
    };
    let mut txn = doc.transact_mut_with(origin);
    if let Err(e) = txn.apply_update(update) {
        return failed(e.to_string());
    }
    let delta = txn.encode_update_v1();
    let changed = delta.as_slice() != Update::EMPTY_V1;
    Edited {
        update: changed.then_some(delta),
        result: json!({ "changed": changed }),
    }
}
