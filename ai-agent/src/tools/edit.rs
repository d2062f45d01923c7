//! Running an [`Action`] against the live document: one transaction with the run's origin,
//! every op validated by crdt-schema before the first write, a short JSON result.

use crdt_schema::{Applied, IssueCode, Kind, NewObject, Op, ValidationError, ops, read_object};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use yrs::{Doc, Transact, TransactionMut};

use super::ToolContext;
use super::action::{Action, ToolIssue, layout_positions};
use super::aliases::Aliases;
use super::clean::clean_word;
use super::view::board_view;

/// What a call did, as carried back through [`crate::BoardPeer::edit`]. Only `result` goes to
/// the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct CallReport {
    /// The JSON result for the model.
    pub(crate) result: Value,
    /// Whether the board changed.
    pub(crate) applied: bool,
    /// Objects created.
    pub(crate) created: u32,
    /// Objects deleted (connectors attached to a deleted object included).
    pub(crate) deleted: u32,
    /// Centre of the last object touched, for the assistant's cursor.
    pub(crate) touched: Option<[f64; 2]>,
}

impl CallReport {
    pub(crate) fn failed(issues: &[ToolIssue]) -> Self {
        CallReport {
            result: json!({"ok": false, "errors": issues}),
            applied: false,
            created: 0,
            deleted: 0,
            touched: None,
        }
    }

    fn read(board: Value) -> Self {
        CallReport {
            result: Value::Object(
                [
                    ("ok".to_string(), Value::Bool(true)),
                    ("board".to_string(), board),
                ]
                .into_iter()
                .collect(),
            ),
            applied: false,
            created: 0,
            deleted: 0,
            touched: None,
        }
    }
}

/// Inputs a write needs that come from outside the document.
#[derive(Debug, Clone)]
pub(crate) struct Fresh {
    /// Id for an object the call creates.
    pub(crate) id: String,
    /// Now, ms since the Unix epoch.
    pub(crate) now_ms: f64,
}

/// Runs `action` on `doc`: the v1 update of its one transaction (if it changed anything) and
/// the report.
pub(crate) fn execute(
    doc: &Doc,
    ctx: &ToolContext,
    action: Action,
    fresh: &Fresh,
) -> (Option<Vec<u8>>, CallReport) {
    let mut aliases = ctx.lock_aliases();
    if let Action::Read { region } = action {
        let txn = doc.transact();
        let view = board_view(&txn, &mut aliases, region.or(ctx.viewport));
        return (None, CallReport::read(view));
    }
    let mut txn = doc.transact_mut_with(ctx.origin());
    let report = write(&mut txn, &mut aliases, ctx, action, fresh);
    let changed = !txn.insert_set().is_empty() || !txn.delete_set().is_empty();
    let update = changed.then(|| txn.encode_update_v1());
    drop(txn);
    (update, report)
}

/// An op to run and how to name its fields for the model.
struct Planned {
    op: Op,
    /// Alias of the target (or `None` for a create).
    alias: Option<String>,
    /// Prefix for field names (`ids[2].`) in multi-object calls.
    prefix: String,
    /// Names of the size fields (`width`/`height`) and of the text field.
    text_field: &'static str,
}

fn resolve(
    aliases: &Aliases,
    issues: &mut Vec<ToolIssue>,
    field: &str,
    alias: &str,
) -> Option<String> {
    match aliases.resolve(alias) {
        Some(id) => Some(id.to_string()),
        None => {
            let shown = if !alias.is_empty()
                && alias.len() <= 12
                && alias.chars().all(|c| c.is_ascii_alphanumeric())
            {
                format!("unknown id {alias:?}; use ids from getBoardState or earlier results")
            } else {
                "unknown id; use ids from getBoardState or earlier results".to_string()
            };
            issues.push(ToolIssue::new(field, "unknown_id", shown));
            None
        }
    }
}

fn write(
    txn: &mut TransactionMut,
    aliases: &mut Aliases,
    ctx: &ToolContext,
    action: Action,
    fresh: &Fresh,
) -> CallReport {
    let mut issues = Vec::new();
    let plans = plan(txn, aliases, ctx, action, fresh, &mut issues);
    if !issues.is_empty() {
        return CallReport::failed(&issues);
    }
    // Validate every op against the document before writing anything.
    for p in &plans {
        if let Err(e) = ops::validate(&*txn, &p.op) {
            issues.extend(translate(&e, p));
        }
    }
    if !issues.is_empty() {
        return CallReport::failed(&issues);
    }
    // Ops of one call touch distinct objects, so validation above still holds for each.
    let touched_before = match plans.first().map(|p| &p.op) {
        Some(Op::Delete { id }) => centre(txn, id),
        _ => None,
    };
    let mut created = Vec::new();
    let mut updated = Vec::new();
    let mut deleted = Vec::new();
    let mut released = Vec::new();
    let mut touched = touched_before;
    for p in &plans {
        match ops::apply(txn, &p.op) {
            Ok(Applied::Created { id, .. }) => {
                let kind = match &p.op {
                    Op::Create(n) => n.kind.clone(),
                    _ => Kind::Other(String::new()),
                };
                touched = centre(txn, &id).or(touched);
                created.push(aliases.alias_for(&id, &kind));
            }
            Ok(Applied::Deleted {
                deleted: gone,
                released: freed,
            }) => {
                for id in gone {
                    let alias = aliases
                        .alias_of(&id)
                        .map(str::to_string)
                        .unwrap_or_else(|| aliases.alias_for(&id, &Kind::Connector));
                    deleted.push(alias);
                }
                for id in freed {
                    if let Some(a) = aliases.alias_of(&id) {
                        released.push(a.to_string());
                    }
                }
            }
            Ok(_) => {
                if let Some(id) = op_target(&p.op) {
                    touched = centre(txn, id).or(touched);
                }
                if let Some(a) = &p.alias {
                    updated.push(a.clone());
                }
            }
            // Unreachable after validation; report rather than panic.
            Err(e) => issues.extend(translate(&e, p)),
        }
    }
    let mut result = json!({"ok": issues.is_empty()});
    for (key, list) in [
        ("created", &created),
        ("updated", &updated),
        ("deleted", &deleted),
        ("released", &released),
    ] {
        if !list.is_empty() {
            result[key] = json!(list);
        }
    }
    if !issues.is_empty() {
        result["errors"] = json!(issues);
    }
    CallReport {
        result,
        applied: true,
        created: u32::try_from(created.len()).unwrap_or(u32::MAX),
        deleted: u32::try_from(deleted.len()).unwrap_or(u32::MAX),
        touched,
    }
}

fn op_target(op: &Op) -> Option<&str> {
    match op {
        Op::Move { id, .. }
        | Op::Resize { id, .. }
        | Op::SetText { id, .. }
        | Op::SetColor { id, .. }
        | Op::SetLabel { id, .. } => Some(id),
        _ => None,
    }
}

fn centre(txn: &TransactionMut, id: &str) -> Option<[f64; 2]> {
    let (o, _) = read_object(txn, id)?;
    let [x, y] = o.pos?;
    let [w, h] = o.size.unwrap_or([0.0, 0.0]);
    Some([x + w / 2.0, y + h / 2.0])
}

fn single(op: Op, alias: Option<String>, text_field: &'static str) -> Vec<Planned> {
    vec![Planned {
        op,
        alias,
        prefix: String::new(),
        text_field,
    }]
}

/// The ops of a call, with aliases resolved. Problems go to `issues`.
fn plan(
    txn: &TransactionMut,
    aliases: &Aliases,
    ctx: &ToolContext,
    action: Action,
    fresh: &Fresh,
    issues: &mut Vec<ToolIssue>,
) -> Vec<Planned> {
    let new = |kind: Kind| NewObject::new(fresh.id.clone(), kind, ctx.origin(), fresh.now_ms);
    match action {
        Action::Read { .. } => Vec::new(),
        Action::Create {
            kind,
            pos,
            size,
            text,
            color,
            frame,
        } => {
            let frame = frame.and_then(|f| resolve(aliases, issues, "frame", &f));
            let text_field = if kind == Kind::Frame { "title" } else { "text" };
            let mut obj = new(kind).at(pos, size);
            obj.text = text;
            obj.color = color;
            obj.frame = frame;
            single(Op::Create(obj), None, text_field)
        }
        Action::Connect {
            from,
            to,
            label,
            color,
        } => {
            let from = resolve(aliases, issues, "from", &from);
            let to = resolve(aliases, issues, "to", &to);
            let (Some(from), Some(to)) = (from, to) else {
                return Vec::new();
            };
            let mut obj = new(Kind::Connector).connecting(from, to);
            obj.label = label;
            obj.color = color;
            single(Op::Create(obj), None, "label")
        }
        Action::Move { id, pos } => target(aliases, issues, &id, |id| Op::Move { id, pos }),
        Action::Resize { id, size } => target(aliases, issues, &id, |id| Op::Resize { id, size }),
        Action::Color { id, color } => {
            target(aliases, issues, &id, |id| Op::SetColor { id, color })
        }
        Action::Delete { id } => target(aliases, issues, &id, |id| Op::Delete { id }),
        Action::Text { id, text } => {
            let Some(real) = resolve(aliases, issues, "id", &id) else {
                return Vec::new();
            };
            let is_connector =
                read_object(txn, &real).is_some_and(|(o, _)| o.kind == Kind::Connector);
            let op = if is_connector {
                Op::SetLabel {
                    id: real,
                    label: Some(text),
                }
            } else {
                Op::SetText { id: real, text }
            };
            single(op, Some(id.trim().to_string()), "text")
        }
        Action::Arrange {
            ids,
            layout,
            x,
            y,
            spacing,
            columns,
        } => plan_arrange(txn, aliases, issues, &ids, layout, [x, y], spacing, columns),
    }
}

fn target(
    aliases: &Aliases,
    issues: &mut Vec<ToolIssue>,
    alias: &str,
    op: impl FnOnce(String) -> Op,
) -> Vec<Planned> {
    match resolve(aliases, issues, "id", alias) {
        Some(id) => single(op(id), Some(alias.trim().to_string()), "text"),
        None => Vec::new(),
    }
}

#[allow(clippy::too_many_arguments)]
fn plan_arrange(
    txn: &TransactionMut,
    aliases: &Aliases,
    issues: &mut Vec<ToolIssue>,
    ids: &[String],
    layout: crate::tools::args::Layout,
    origin: [Option<f64>; 2],
    spacing: f64,
    columns: Option<u32>,
) -> Vec<Planned> {
    let mut found = Vec::new();
    for (i, alias) in ids.iter().enumerate() {
        let field = format!("ids[{i}]");
        let Some(id) = resolve(aliases, issues, &field, alias) else {
            continue;
        };
        match read_object(txn, &id) {
            None => issues.push(ToolIssue::new(
                &field,
                "not_found",
                "no such object (deleted?)",
            )),
            Some((o, _)) if o.kind == Kind::Connector => issues.push(ToolIssue::new(
                &field,
                "wrong_kind",
                "connectors follow their ends and cannot be arranged",
            )),
            Some((o, _)) => match (o.pos, o.size) {
                (Some(pos), Some(size)) => found.push((i, alias.trim().to_string(), id, pos, size)),
                _ => issues.push(ToolIssue::new(
                    &field,
                    "not_allowed",
                    "this object has no position or size",
                )),
            },
        }
    }
    if !issues.is_empty() {
        return Vec::new();
    }
    let left = found.iter().map(|f| f.3[0]).fold(f64::INFINITY, f64::min);
    let top = found.iter().map(|f| f.3[1]).fold(f64::INFINITY, f64::min);
    let start = [origin[0].unwrap_or(left), origin[1].unwrap_or(top)];
    let sizes: Vec<[f64; 2]> = found.iter().map(|f| f.4).collect();
    let positions = layout_positions(&sizes, layout, start, spacing, columns);
    found
        .into_iter()
        .zip(positions)
        .map(|((i, alias, id, _, _), pos)| Planned {
            op: Op::Move { id, pos },
            alias: Some(alias),
            prefix: format!("ids[{i}]."),
            text_field: "text",
        })
        .collect()
}

/// crdt-schema's issues in the model's terms: tool argument names, aliases instead of ids,
/// and our own wording where crdt-schema's message could quote ids or board data.
fn translate(e: &ValidationError, p: &Planned) -> Vec<ToolIssue> {
    let resize_or_create = matches!(p.op, Op::Resize { .. } | Op::Create(_));
    e.issues
        .iter()
        .map(|issue| {
            let field = match issue.field.as_str() {
                "pos[0]" => "x",
                "pos[1]" => "y",
                "size[0]" if resize_or_create => "width",
                "size[1]" if resize_or_create => "height",
                "text" | "label" => p.text_field,
                other => other,
            };
            let code = serde_json::to_value(issue.code)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_else(|| "invalid".into());
            let message = match issue.code {
                IssueCode::NotFound => "no such object (deleted?)".to_string(),
                IssueCode::WrongKind => match issue.field.as_str() {
                    "frame" => "not a frame".to_string(),
                    "from" | "to" => "a connector cannot connect to a connector".to_string(),
                    _ => "not possible for this kind of object".to_string(),
                },
                IssueCode::Cycle => "a frame cannot end up inside itself".to_string(),
                IssueCode::AlreadyExists => "already exists".to_string(),
                _ => clean_word(&issue.message, 160),
            };
            ToolIssue::new(&format!("{}{field}", p.prefix), &code, message)
        })
        .collect()
}
