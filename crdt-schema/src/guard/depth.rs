//! How deeply a document's shared types nest, kept per item range so that an update can be
//! checked before it is applied.
//!
//! A Yjs item names its parent either directly (a root, or the item holding a shared type) or
//! through a neighbour (its origin), whose parent it takes. So the depth of an item in an update
//! may depend on items of earlier updates, of any kind: the index keeps, for every item range the
//! document has seen, the depth of the type it sits in. Roots are level 0, so items directly in
//! a root are at depth 1, and a shared type at depth `d` holds items at depth `d + 1`.
//!
//! An item whose parent or neighbour is not known yet (it waits for an update the document has
//! not received) is kept "floating": its depth is the missing item's plus an offset, settled
//! when that item arrives.

use std::collections::{BTreeMap, HashMap};

use super::GuardError;
use super::scan::{Block, Id, Parent, Scanned, scan};

/// Floating item ranges one document may hold at once.
pub const MAX_FLOATING: usize = 10_000;

/// The depth of an item range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Depth {
    Known(u32),
    /// Garbage collected: holds nothing, parents nothing.
    Dead,
    /// The depth of `anchor`, a missing item, plus `offset`.
    Floating {
        anchor: Id,
        offset: u32,
    },
}

impl Depth {
    fn plus(self, n: u32) -> Self {
        match self {
            Depth::Known(d) => Depth::Known(d.saturating_add(n)),
            Depth::Dead => Depth::Dead,
            Depth::Floating { anchor, offset } => Depth::Floating {
                anchor,
                offset: offset.saturating_add(n),
            },
        }
    }

    /// Refuses a depth past `max` (a floating one is at least `offset + 1` deep).
    fn check(self, max: u16) -> Result<Self, GuardError> {
        let least = match self {
            Depth::Known(d) => d,
            Depth::Dead => 0,
            Depth::Floating { offset, .. } => offset.saturating_add(1),
        };
        if least > u32::from(max) {
            return Err(GuardError::TypesTooDeep { limit: max });
        }
        Ok(self)
    }
}

/// One item range: `[start, end)` of a client's clock, at one depth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    end: u32,
    depth: Depth,
}

/// The nesting of one document's items. See the module docs.
#[derive(Debug, Clone)]
pub struct Nesting {
    max_depth: u16,
    /// Per client: start clock -> span.
    spans: HashMap<u64, BTreeMap<u32, Span>>,
    /// Missing items that floating spans wait for -> the starts of those spans.
    anchors: BTreeMap<Id, Vec<Id>>,
    floating: usize,
}

/// An update that passed [`Nesting::check`]: what [`Nesting::record`] adds to the index.
#[derive(Debug)]
pub struct Checked {
    /// New item ranges with their depths.
    spans: Vec<(Id, u32, Depth)>,
    /// Floating spans (by start) whose anchor the update brings, and their settled depth.
    settled: Vec<(Id, Depth)>,
    /// Anchors the update brings.
    anchors: Vec<Id>,
}

impl Nesting {
    /// An empty document's index, refusing nesting deeper than `max_depth`.
    pub fn new(max_depth: u16) -> Self {
        Self {
            max_depth,
            spans: HashMap::new(),
            anchors: BTreeMap::new(),
            floating: 0,
        }
    }

    /// Checks a Yjs update v1 against the document this index describes, without recording
    /// anything: values nested deeper than the limit, shared types that would nest deeper, and
    /// malformed bytes are refused.
    pub fn check(&self, update: &[u8]) -> Result<Checked, GuardError> {
        self.check_scanned(&scan(update, self.max_depth)?)
    }

    /// [`Nesting::check`] for an update [`super::scan_update_v1`] read already (its values are
    /// checked; this checks how its shared types nest in this document).
    pub fn check_scanned(&self, scanned: &Scanned) -> Result<Checked, GuardError> {
        let blocks = &scanned.blocks;
        let depths = self.resolve(blocks)?;
        let mut spans = Vec::with_capacity(blocks.len());
        let mut settled = Vec::new();
        let mut anchors = Vec::new();
        let mut floating = self.floating;
        for (block, depth) in blocks.iter().zip(depths) {
            let depth = depth.check(self.max_depth)?;
            let (client, start) = block.id;
            let end = start.saturating_add(block.len);
            for (anchor, waiting) in self.anchors.range((client, start)..(client, end)) {
                anchors.push(*anchor);
                for &span in waiting {
                    let Some(Depth::Floating { offset, .. }) = self.depth_at(span) else {
                        continue;
                    };
                    let now = depth.plus(offset).check(self.max_depth)?;
                    if !matches!(now, Depth::Floating { .. }) {
                        floating = floating.saturating_sub(1);
                    }
                    settled.push((span, now));
                }
            }
            if matches!(depth, Depth::Floating { .. }) {
                floating += 1;
            }
            spans.push((block.id, block.len, depth));
        }
        if floating > MAX_FLOATING {
            return Err(GuardError::TooManyWaiting {
                limit: MAX_FLOATING,
            });
        }
        Ok(Checked {
            spans,
            settled,
            anchors,
        })
    }

    /// Records an update that [`Nesting::check`] passed. Call it once the update was applied,
    /// even if yrs refused part of it: what yrs integrated is a subset of what was checked.
    pub fn record(&mut self, checked: Checked) {
        for anchor in &checked.anchors {
            self.anchors.remove(anchor);
        }
        for (span, depth) in checked.settled {
            self.set_depth(span, depth);
        }
        for (id, len, depth) in checked.spans {
            self.insert(id, len, depth);
        }
    }

    /// [`Nesting::check`] then [`Nesting::record`]: for updates applied without a chance to
    /// refuse them (stored rows being replayed, the server's own edits).
    pub fn admit(&mut self, update: &[u8]) -> Result<(), GuardError> {
        let checked = self.check(update)?;
        self.record(checked);
        Ok(())
    }

    /// Item ranges held (for tests and metrics).
    pub fn spans(&self) -> usize {
        self.spans.values().map(BTreeMap::len).sum()
    }

    fn span_at(&self, (client, clock): Id) -> Option<(u32, Span)> {
        let (&start, &span) = self.spans.get(&client)?.range(..=clock).next_back()?;
        (clock < span.end).then_some((start, span))
    }

    fn depth_at(&self, id: Id) -> Option<Depth> {
        self.span_at(id).map(|(_, span)| span.depth)
    }

    /// The depth of every block, resolving references inside the update without recursion.
    fn resolve(&self, blocks: &[Block]) -> Result<Vec<Depth>, GuardError> {
        // The update's own blocks by id, to find a neighbour or parent inside it.
        let mut local: Vec<(Id, u32, usize)> = blocks
            .iter()
            .enumerate()
            .map(|(i, b)| (b.id, b.len, i))
            .collect();
        local.sort_unstable();
        let find_local = |(client, clock): Id| -> Option<usize> {
            let at = local.partition_point(|&((c, k), _, _)| (c, k) <= (client, clock));
            let &((c, k), len, i) = local.get(at.checked_sub(1)?)?;
            (c == client && clock - k < len).then_some(i)
        };
        let mut depths: Vec<Option<Depth>> = vec![None; blocks.len()];
        let mut visiting = vec![false; blocks.len()];
        let mut stack = Vec::new();
        for first in 0..blocks.len() {
            stack.push(first);
            while let Some(&i) = stack.last() {
                if depths[i].is_some() {
                    stack.pop();
                    continue;
                }
                let (target, step) = match blocks[i].parent {
                    None => {
                        depths[i] = Some(Depth::Dead);
                        continue;
                    }
                    Some(Parent::Root) => {
                        depths[i] = Some(Depth::Known(1));
                        continue;
                    }
                    Some(Parent::Type(id)) => (id, 1),
                    Some(Parent::SameAs(id)) => (id, 0),
                };
                // What the document holds wins over a duplicate in the update, as in yrs.
                if let Some(depth) = self.depth_at(target) {
                    depths[i] = Some(depth.plus(step));
                    continue;
                }
                match find_local(target) {
                    Some(j) => match depths[j] {
                        Some(depth) => depths[i] = Some(depth.plus(step)),
                        None if visiting[j] => {
                            return Err(GuardError::Malformed("items that are their own parents"));
                        }
                        None => {
                            visiting[i] = true;
                            stack.push(j);
                        }
                    },
                    None => {
                        depths[i] = Some(Depth::Floating {
                            anchor: target,
                            offset: step,
                        });
                    }
                }
            }
        }
        Ok(depths
            .into_iter()
            .map(|d| d.unwrap_or(Depth::Dead))
            .collect())
    }

    fn set_depth(&mut self, (client, start): Id, depth: Depth) {
        let Some(span) = self.spans.get_mut(&client).and_then(|m| m.get_mut(&start)) else {
            return;
        };
        if matches!(span.depth, Depth::Floating { .. }) {
            self.floating = self.floating.saturating_sub(1);
        }
        span.depth = depth;
        if let Depth::Floating { anchor, .. } = depth {
            self.floating += 1;
            self.anchors
                .entry(anchor)
                .or_default()
                .push((client, start));
        }
    }

    /// Adds `[start, start + len)` at `depth`, except what is recorded already; merges with
    /// neighbours at the same known depth.
    fn insert(&mut self, (client, start): Id, len: u32, depth: Depth) {
        let end = start.saturating_add(len);
        let map = self.spans.entry(client).or_default();
        // The ranges already recorded that overlap, in order.
        let mut covered: Vec<(u32, u32)> = map
            .range(..end)
            .rev()
            .take_while(|(_, span)| span.end > start)
            .map(|(&s, span)| (s, span.end))
            .collect();
        covered.reverse();
        let mut gaps = Vec::new();
        let mut at = start;
        for (s, e) in covered {
            if s > at {
                gaps.push((at, s));
            }
            at = at.max(e);
        }
        if at < end {
            gaps.push((at, end));
        }
        for (s, e) in gaps {
            let mut s = s;
            let mut e = e;
            if let Depth::Known(_) = depth {
                if let Some((&left, span)) = map.range(..s).next_back()
                    && span.end == s
                    && span.depth == depth
                {
                    s = left;
                }
                if let Some(right) = map.get(&e).copied()
                    && right.depth == depth
                {
                    map.remove(&e);
                    e = right.end;
                }
            }
            map.insert(s, Span { end: e, depth });
            if let Depth::Floating { anchor, .. } = depth {
                self.floating += 1;
                self.anchors.entry(anchor).or_default().push((client, s));
            }
        }
    }
}
