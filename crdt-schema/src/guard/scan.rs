//! A non-recursive reader of Yjs update v1 bytes: the structure yrs will see, and how deeply
//! values nest, found without decoding anything into memory.
//!
//! It mirrors `yrs` 0.28's v1 decoder (`Update::decode`, `Item` blocks, `ItemContent::decode`,
//! `Any::decode`, lib0 varints) closely enough that every item boundary and clock it finds is the
//! one yrs finds; where yrs would accept something only by wrapping arithmetic (a clock past
//! `u32::MAX`), the scan refuses it instead.
//!
//! Every count the bytes declare (clients, blocks, delete ranges, values, map entries) is held
//! against the bytes that remain: yrs reserves room for what is declared before reading it, and
//! a hash map's reservation writes to every slot's control byte, so 23 bytes declaring a map of
//! 2^27 entries made it touch 256 MB.

use super::GuardError;

/// One client's clock position: `(client, clock)`, as in a Yjs `ID`.
pub(super) type Id = (u64, u32);

/// What an item's parent is, as its block says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Parent {
    /// A root type, by name.
    Root,
    /// The shared type that item `Id` holds (its content is a type).
    Type(Id),
    /// Whatever parent item `Id` has: the block names an origin (left, else right), and yrs
    /// gives it its neighbour's parent.
    SameAs(Id),
}

/// An item (or a range yrs collected) found in an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Block {
    pub(super) id: Id,
    pub(super) len: u32,
    /// `None` for a garbage-collected range: it holds nothing and parents nothing.
    pub(super) parent: Option<Parent>,
}

/// An update read by [`super::scan_update_v1`]: well-formed, its values nested within the
/// limit; what its blocks are, for [`super::Nesting::check_scanned`] to place in a document.
#[derive(Debug, Default, Clone)]
pub struct Scanned {
    pub(super) blocks: Vec<Block>,
}

const GC: u8 = 0;
const SKIP: u8 = 10;
const HAS_ORIGIN: u8 = 0b1000_0000;
const HAS_RIGHT_ORIGIN: u8 = 0b0100_0000;
const HAS_PARENT_SUB: u8 = 0b0010_0000;

const CONTENT_DELETED: u8 = 1;
const CONTENT_JSON: u8 = 2;
const CONTENT_BINARY: u8 = 3;
const CONTENT_STRING: u8 = 4;
const CONTENT_EMBED: u8 = 5;
const CONTENT_FORMAT: u8 = 6;
const CONTENT_TYPE: u8 = 7;
const CONTENT_ANY: u8 = 8;
const CONTENT_DOC: u8 = 9;

const TYPE_XML_ELEMENT: u8 = 3;

/// Reads `bytes` as a Yjs update v1. Refuses values (`Any`, JSON) nested deeper than
/// `max_depth` and anything truncated or malformed.
pub(super) fn scan(bytes: &[u8], max_depth: u16) -> Result<Scanned, GuardError> {
    let mut r = Reader { bytes, at: 0 };
    let mut scanned = Scanned::default();
    let clients = r.count_u32(3)?;
    for _ in 0..clients {
        let blocks = r.count_u32(1)?;
        let client = r.var_u64()?;
        let mut clock = r.var_u32()?;
        for _ in 0..blocks {
            let id = (client, clock);
            let info = r.u8()?;
            let block = match info {
                SKIP => {
                    let len = nonzero(r.var_u32()?)?;
                    clock = advance(clock, len)?;
                    continue;
                }
                GC => Block {
                    id,
                    len: nonzero(r.var_u32()?)?,
                    parent: None,
                },
                _ => match item(&mut r, id, info, max_depth)? {
                    Some(block) => block,
                    // yrs drops an item with empty content without moving the clock.
                    None => continue,
                },
            };
            clock = advance(clock, block.len)?;
            scanned.blocks.push(block);
        }
    }
    // The delete set: clients, then ranges of each.
    let clients = r.count_u32(2)?;
    for _ in 0..clients {
        r.var_u64()?;
        let ranges = r.count_u32(2)?;
        for _ in 0..ranges {
            r.var_u32()?;
            r.var_u32()?;
        }
    }
    Ok(scanned)
}

fn nonzero(len: u32) -> Result<u32, GuardError> {
    if len == 0 {
        return Err(GuardError::Malformed("an empty block"));
    }
    Ok(len)
}

fn advance(clock: u32, len: u32) -> Result<u32, GuardError> {
    clock
        .checked_add(len)
        .ok_or(GuardError::Malformed("a clock past 2^32"))
}

/// Reads an item block after its info byte; `None` if its content is empty.
fn item(r: &mut Reader<'_>, id: Id, info: u8, max_depth: u16) -> Result<Option<Block>, GuardError> {
    let origin = if info & HAS_ORIGIN != 0 {
        Some(r.id()?)
    } else {
        None
    };
    let right_origin = if info & HAS_RIGHT_ORIGIN != 0 {
        Some(r.id()?)
    } else {
        None
    };
    let parent = match origin.or(right_origin) {
        Some(neighbour) => Parent::SameAs(neighbour),
        None => {
            let parent = if r.var_u32()? == 1 {
                r.string()?;
                Parent::Root
            } else {
                Parent::Type(r.id()?)
            };
            if info & HAS_PARENT_SUB != 0 {
                r.string()?;
            }
            parent
        }
    };
    let len = content(r, info & 0b1111, max_depth)?;
    Ok((len > 0).then_some(Block {
        id,
        len,
        parent: Some(parent),
    }))
}

/// Reads an item's content; returns its length in clock units.
fn content(r: &mut Reader<'_>, kind: u8, max_depth: u16) -> Result<u32, GuardError> {
    Ok(match kind {
        CONTENT_DELETED => r.var_u32()?,
        CONTENT_JSON => {
            // yrs reads one string more than the count says (`while remaining >= 0`).
            let count = r.var_u32()? as i32;
            if count < 0 {
                return Err(GuardError::Malformed("a negative JSON count"));
            }
            r.fits(count as u64, 1)?;
            for _ in 0..=count {
                json_depth(r.string()?, max_depth)?;
            }
            count as u32 + 1
        }
        CONTENT_BINARY => {
            r.buf()?;
            1
        }
        CONTENT_STRING => utf16_len(r.string()?)?,
        CONTENT_EMBED => {
            json_depth(r.string()?, max_depth)?;
            1
        }
        CONTENT_FORMAT => {
            r.string()?;
            json_depth(r.string()?, max_depth)?;
            1
        }
        CONTENT_TYPE => {
            if r.u8()? == TYPE_XML_ELEMENT {
                r.string()?;
            }
            1
        }
        CONTENT_ANY => {
            let count = r.count_u32(1)?;
            for _ in 0..count {
                any(r, max_depth)?;
            }
            count
        }
        CONTENT_DOC => {
            r.string()?;
            any(r, max_depth)?;
            1
        }
        _ => return Err(GuardError::Malformed("an unknown content type")),
    })
}

fn utf16_len(s: &str) -> Result<u32, GuardError> {
    u32::try_from(s.encode_utf16().count()).map_err(|_| GuardError::Malformed("a string too long"))
}

/// Skips one `Any` value, with an explicit stack instead of recursion. Arrays and maps count as
/// one level each; a value at depth `max_depth + 1` is refused.
fn any(r: &mut Reader<'_>, max_depth: u16) -> Result<(), GuardError> {
    // Per open array or map: how many values are still to read, and whether each is preceded
    // by a key (maps).
    let mut open: Vec<(u64, bool)> = Vec::new();
    let mut pending: u64 = 1;
    let mut keyed = false;
    loop {
        if pending == 0 {
            match open.pop() {
                Some((left, was_keyed)) => {
                    pending = left;
                    keyed = was_keyed;
                    continue;
                }
                None => return Ok(()),
            }
        }
        pending -= 1;
        if keyed {
            r.string()?;
        }
        match r.u8()? {
            127 | 126 | 121 | 120 => {}
            125 => r.var_i64()?,
            124 => {
                r.skip(4)?;
            }
            123 | 122 => {
                r.skip(8)?;
            }
            119 => {
                r.string()?;
            }
            116 => {
                r.buf()?;
            }
            tag @ (117 | 118) => {
                // A value takes a byte at least; a map entry a key's length too.
                let len = r.count_u64(if tag == 118 { 2 } else { 1 })?;
                if open.len() >= usize::from(max_depth) {
                    return Err(GuardError::ValueTooDeep { limit: max_depth });
                }
                open.push((pending, keyed));
                pending = len;
                keyed = tag == 118;
            }
            _ => return Err(GuardError::Malformed("an unknown value type")),
        }
    }
}

/// Refuses JSON whose arrays and objects nest deeper than `max_depth`. Only brackets outside
/// strings count; whether the JSON is otherwise valid is the parser's business.
fn json_depth(json: &str, max_depth: u16) -> Result<(), GuardError> {
    let (mut depth, mut in_string, mut escaped) = (0u32, false, false);
    for b in json.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > u32::from(max_depth) {
                    return Err(GuardError::ValueTooDeep { limit: max_depth });
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
pub(super) fn json_depth_for_tests(json: &str) -> Result<(), GuardError> {
    json_depth(json, super::MAX_NESTING)
}

/// lib0's encoding, read the way yrs reads it.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

const TRUNCATED: GuardError = GuardError::Malformed("the update ends too early");

impl<'a> Reader<'a> {
    /// Refuses `declared` items of at least `min_bytes` each if they cannot fit in the bytes
    /// left.
    fn fits(&self, declared: u64, min_bytes: u64) -> Result<(), GuardError> {
        let left = (self.bytes.len() - self.at) as u64;
        if declared.saturating_mul(min_bytes) > left {
            return Err(GuardError::Malformed("a count past the end of the update"));
        }
        Ok(())
    }

    /// A count (varint, as yrs reads a `u32`) of items of at least `min_bytes` each.
    fn count_u32(&mut self, min_bytes: u64) -> Result<u32, GuardError> {
        let n = self.var_u32()?;
        self.fits(u64::from(n), min_bytes)?;
        Ok(n)
    }

    /// A count (varint, as yrs reads a `usize`) of items of at least `min_bytes` each.
    fn count_u64(&mut self, min_bytes: u64) -> Result<u64, GuardError> {
        let n = self.var_u64()?;
        self.fits(n, min_bytes)?;
        Ok(n)
    }

    fn u8(&mut self) -> Result<u8, GuardError> {
        let b = *self.bytes.get(self.at).ok_or(TRUNCATED)?;
        self.at += 1;
        Ok(b)
    }

    fn skip(&mut self, len: usize) -> Result<&'a [u8], GuardError> {
        let end = self.at.checked_add(len).ok_or(TRUNCATED)?;
        let slice = self.bytes.get(self.at..end).ok_or(TRUNCATED)?;
        self.at = end;
        Ok(slice)
    }

    /// yrs' `read_var_u64`: 7 bits a byte, shifts wrapping, at most 11 bytes.
    fn var_u64(&mut self) -> Result<u64, GuardError> {
        let (mut num, mut shift) = (0u64, 0u32);
        loop {
            let b = self.u8()?;
            num |= u64::wrapping_shl(u64::from(b & 0x7f), shift);
            shift += 7;
            if b < 0x80 {
                return Ok(num);
            }
            if shift > 70 {
                return Err(GuardError::Malformed("a varint too long"));
            }
        }
    }

    /// yrs' `read_var_u32`, which wraps like its u64 reader does.
    fn var_u32(&mut self) -> Result<u32, GuardError> {
        let (mut num, mut shift) = (0u32, 0u32);
        loop {
            let b = self.u8()?;
            num |= u32::wrapping_shl(u32::from(b & 0x7f), shift);
            shift += 7;
            if b < 0x80 {
                return Ok(num);
            }
            if shift > 70 {
                return Err(GuardError::Malformed("a varint too long"));
            }
        }
    }

    /// yrs' `read_var_i64`, skipped: a sign-and-6-bits byte, then 7 bits a byte.
    fn var_i64(&mut self) -> Result<(), GuardError> {
        let mut b = self.u8()?;
        let mut shift = 6u32;
        while b >= 0x80 {
            b = self.u8()?;
            shift += 7;
            if b >= 0x80 && shift > 70 {
                return Err(GuardError::Malformed("a varint too long"));
            }
        }
        Ok(())
    }

    fn buf(&mut self) -> Result<&'a [u8], GuardError> {
        let len = self.var_u32()?;
        self.skip(len as usize)
    }

    fn string(&mut self) -> Result<&'a str, GuardError> {
        std::str::from_utf8(self.buf()?)
            .map_err(|_| GuardError::Malformed("a string that is not UTF-8"))
    }

    fn id(&mut self) -> Result<Id, GuardError> {
        let client = self.var_u64()?;
        let clock = self.var_u32()?;
        Ok((client, clock))
    }
}
