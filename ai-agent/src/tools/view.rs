//! The compact board view the model reads (`getBoardState`, and the board description at the
//! start of each step).
//!
//! Objects appear under aliases with rounded coordinates; text is cleaned ([`super::clean`])
//! and cut to [`MAX_TEXT`] characters with `"truncated": true`. On a board with more than
//! [`MAX_LISTED`] placed objects, only objects in the focus area (the requested region, else
//! the user's viewport, else the top-most ones) are listed, and the rest is summarised per
//! [`CELL`]-pixel region: bounding box, count and kinds.

use std::collections::{BTreeMap, HashSet};

use crdt_schema::{Kind, Object, read_board};
use serde_json::{Map, Value, json};
use yrs::ReadTxn;

use super::aliases::Aliases;
use super::args::Area;
use super::clean::{clean_text, clean_word};

/// Characters of an object's text shown to the model.
pub(crate) const MAX_TEXT: usize = 300;
/// Objects listed one by one at most.
pub(crate) const MAX_LISTED: usize = 150;
/// Side of the square regions objects outside the focus are summarised by.
pub(crate) const CELL: f64 = 2000.0;
/// Region summaries shown at most.
pub(crate) const MAX_REGIONS: usize = 24;

/// The board as JSON for the model, assigning aliases to every object it mentions.
pub(crate) fn board_view<T: ReadTxn>(txn: &T, aliases: &mut Aliases, focus: Option<Area>) -> Value {
    let board = read_board(txn);
    let kinds: BTreeMap<&str, &Kind> = board
        .objects
        .iter()
        .map(|o| (o.id.as_str(), &o.kind))
        .collect();
    let (connectors, placed): (Vec<&Object>, Vec<&Object>) = board
        .objects
        .iter()
        .partition(|o| o.kind == Kind::Connector);

    let large = placed.len() > MAX_LISTED;
    let focus = focus.filter(|a| a.w > 0.0 && a.h > 0.0 && a.x.is_finite() && a.y.is_finite());
    let listed: Vec<&Object> = if !large {
        placed.clone()
    } else {
        let in_focus: Vec<&Object> = match focus {
            Some(area) => placed
                .iter()
                .copied()
                .filter(|o| overlaps(o, area))
                .collect(),
            None => placed.clone(),
        };
        // Top-most first when cutting (paint order is bottom to top).
        let skip = in_focus.len().saturating_sub(MAX_LISTED);
        in_focus.into_iter().skip(skip).collect()
    };
    let listed_ids: HashSet<&str> = listed.iter().map(|o| o.id.as_str()).collect();

    let mut objects: Vec<Value> = Vec::with_capacity(listed.len());
    for o in &listed {
        objects.push(object_entry(o, aliases, &kinds));
    }
    let mut omitted_connectors = 0usize;
    for c in &connectors {
        let ends_listed = [&c.from, &c.to]
            .iter()
            .all(|end| end.as_deref().is_some_and(|id| listed_ids.contains(id)));
        if ends_listed || !large {
            objects.push(object_entry(c, aliases, &kinds));
        } else {
            omitted_connectors += 1;
        }
    }

    let mut view = Map::new();
    if let Some(title) = &board.meta.title {
        let (t, cut) = clean_text(title, MAX_TEXT);
        view.insert("title".into(), json!(t));
        if cut {
            view.insert("title_truncated".into(), json!(true));
        }
    }
    if let Some(a) = focus {
        view.insert("focus".into(), area_json(a));
    }
    view.insert("objects_total".into(), json!(board.objects.len()));
    view.insert("objects".into(), Value::Array(objects));
    if large {
        let rest: Vec<&Object> = placed
            .iter()
            .copied()
            .filter(|o| !listed_ids.contains(o.id.as_str()))
            .collect();
        let (regions, more) = summarise(&rest);
        view.insert("outside".into(), Value::Array(regions));
        if more > 0 {
            view.insert("more_regions".into(), json!(more));
        }
        if omitted_connectors > 0 {
            view.insert("connectors_not_listed".into(), json!(omitted_connectors));
        }
    }
    Value::Object(view)
}

fn round(v: f64) -> Value {
    let r = v.round();
    if r.abs() < 9e15 {
        json!(r as i64)
    } else {
        json!(r)
    }
}

fn area_json(a: Area) -> Value {
    json!({"x": round(a.x), "y": round(a.y), "w": round(a.w), "h": round(a.h)})
}

fn overlaps(o: &Object, a: Area) -> bool {
    let Some([x, y]) = o.pos else { return false };
    let [w, h] = o.size.unwrap_or([0.0, 0.0]);
    x <= a.x + a.w && x + w.max(0.0) >= a.x && y <= a.y + a.h && y + h.max(0.0) >= a.y
}

fn kind_name(kind: &Kind) -> String {
    match kind {
        Kind::Other(k) => format!("other:{}", clean_word(k, 24)),
        k => k.as_str().to_string(),
    }
}

fn reference(id: &str, aliases: &mut Aliases, kinds: &BTreeMap<&str, &Kind>) -> Value {
    match kinds.get(id) {
        Some(kind) => json!(aliases.alias_for(id, kind)),
        // A dangling reference (the object is gone): show it as missing, not its raw id.
        None => Value::Null,
    }
}

fn object_entry(o: &Object, aliases: &mut Aliases, kinds: &BTreeMap<&str, &Kind>) -> Value {
    let mut e = Map::new();
    e.insert("id".into(), json!(aliases.alias_for(&o.id, &o.kind)));
    e.insert("kind".into(), json!(kind_name(&o.kind)));
    if let Some([x, y]) = o.pos {
        e.insert("x".into(), round(x));
        e.insert("y".into(), round(y));
    }
    if let Some([w, h]) = o.size {
        e.insert("w".into(), round(w));
        e.insert("h".into(), round(h));
    }
    if let Some(r) = o.rotation.filter(|r| r.abs() >= 0.5) {
        e.insert("rotation".into(), round(r));
    }
    if let Some(c) = &o.color {
        e.insert("color".into(), json!(clean_word(c, 32)));
    }
    if let Some(f) = &o.frame {
        e.insert("frame".into(), reference(f, aliases, kinds));
    }
    if let Some(from) = &o.from {
        e.insert("from".into(), reference(from, aliases, kinds));
    }
    if let Some(to) = &o.to {
        e.insert("to".into(), reference(to, aliases, kinds));
    }
    let text = if o.kind == Kind::Connector {
        o.label.as_deref()
    } else {
        o.text.as_deref()
    };
    if let Some(t) = text.filter(|t| !t.is_empty()) {
        let (t, cut) = clean_text(t, MAX_TEXT);
        let key = if o.kind == Kind::Connector {
            "label"
        } else {
            "text"
        };
        e.insert(key.into(), json!(t));
        if cut {
            e.insert("truncated".into(), json!(true));
        }
    }
    Value::Object(e)
}

#[derive(Default)]
struct Region {
    min: [f64; 2],
    max: [f64; 2],
    count: usize,
    kinds: BTreeMap<String, usize>,
}

/// Region summaries of `objects` (largest first) and how many regions were left out.
fn summarise(objects: &[&Object]) -> (Vec<Value>, usize) {
    let mut cells: BTreeMap<(i64, i64), Region> = BTreeMap::new();
    for o in objects {
        let Some([x, y]) = o.pos else { continue };
        let [w, h] = o.size.unwrap_or([0.0, 0.0]);
        let key = ((x / CELL).floor() as i64, (y / CELL).floor() as i64);
        let r = cells.entry(key).or_insert_with(|| Region {
            min: [x, y],
            max: [x + w, y + h],
            ..Region::default()
        });
        r.min = [r.min[0].min(x), r.min[1].min(y)];
        r.max = [r.max[0].max(x + w), r.max[1].max(y + h)];
        r.count += 1;
        *r.kinds.entry(kind_name(&o.kind)).or_insert(0) += 1;
    }
    let mut regions: Vec<Region> = cells.into_values().collect();
    regions.sort_by_key(|r| std::cmp::Reverse(r.count));
    let more = regions.len().saturating_sub(MAX_REGIONS);
    let shown = regions
        .into_iter()
        .take(MAX_REGIONS)
        .map(|r| {
            json!({
                "bbox": area_json(Area {
                    x: r.min[0],
                    y: r.min[1],
                    w: r.max[0] - r.min[0],
                    h: r.max[1] - r.min[1],
                }),
                "count": r.count,
                "kinds": r.kinds,
            })
        })
        .collect();
    (shown, more)
}
