//! Structure-aware fuzzing of the Yjs update decoder path: Yjs update v1 byte strings built from
//! the format's own structure (headers with random struct counts, client ids and clocks, item
//! info bytes with origins and parents, content of every kind including binary `Any` values
//! nested to random depths up to tens of thousands, huge declared lengths, truncated varints and
//! buffers), fed to `protocol::decode_update` and, wrapped in a sync frame `[0, 2, len, ...]`,
//! to `protocol::decode`.
//!
//! Properties:
//!
//! - decoding never panics and never aborts the process (a stack overflow aborts; `catch_unwind`
//!   cannot catch it), on a thread whose stack is a tokio worker's (2 MiB), as in the server;
//! - an update whose `Any` values nest deeper than [`MAX_DEPTH`] containers is refused with an
//!   error (PROTOCOL.md, "Limits": nesting past the limit closes that socket): a 64-level
//!   limit checked before yrs decodes;
//! - a well-formed update nesting at most [`MUST_ACCEPT_DEPTH`] containers is accepted: the
//!   limit does not refuse ordinary data (the board schema nests three levels).
//!
//! Depth counts containers: `[]` is 1, `[[1]]` is 2, `{"a": [1]}` is 2. The item's content is
//! not a level.
//!
//! Without a depth check before yrs decodes, these tests fail: yrs' `Any` decoder recurses once
//! per level, so a few thousand levels overflow a 2 MiB stack and abort the whole test process
//! (`SIGABRT`, "thread ... has overflowed its stack"), exactly as a peer's frame would abort the
//! server; shallower nesting past the limit is accepted instead of refused.
//!
//! Cases: `PROPTEST_CASES` (256 by default; the test command sets 2000).

use harness::wire::{update_frame, write_var_u64};
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner};
use sync_server::protocol;

/// Deepest `Any` nesting the server accepts; deeper is refused.
const MAX_DEPTH: usize = 64;
/// Well-formed updates nesting this deep must be accepted.
const MUST_ACCEPT_DEPTH: usize = 32;
/// A tokio worker thread's stack: where the server decodes peer frames.
const WORKER_STACK: usize = 2 << 20;
/// Name prefix of the threads that run one case.
const CASE_THREAD: &str = "case-";
/// The stack proptest's runner gets (test code, not the server's).
const PROPTEST_STACK: usize = 64 << 20;

// ---------------------------------------------------------------------------------------------
// lib0 encoding

fn var_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    write_var_u64(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn var_string(out: &mut Vec<u8>, s: &str) {
    var_bytes(out, s.as_bytes());
}

/// A cheap deterministic mix, to vary levels beyond the 64 bits of a pattern.
fn mix(seed: u64, i: u64) -> u64 {
    let mut z = seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

// ---------------------------------------------------------------------------------------------
// Specs: flat descriptions of an update, encoded iteratively (a spec never nests, so building,
// shrinking and dropping one never recurses however deep the bytes it describes)

/// One binary `Any` value: a spine of `depth` containers (each an array or a map, chosen by
/// `kinds`), each with `siblings` scalar elements besides the nested one, ending in `leaf`.
#[derive(Debug, Clone)]
struct AnySpec {
    depth: usize,
    kinds: u64,
    siblings: u8,
    /// 0..=11: undefined, null, integer, float32, float64, bigint, false, true, string,
    /// buffer, empty array, empty map; 12: an unknown tag.
    leaf: u8,
    payload: u64,
    /// A level whose declared length is replaced by a huge one.
    huge_len: Option<(usize, u64)>,
}

impl AnySpec {
    /// Containers on the deepest path.
    fn nesting(&self) -> usize {
        self.depth + usize::from(matches!(self.leaf, 10 | 11))
    }

    /// Level `i` is a map if bit `i` of `kinds` is set; past 64 levels `0` stays all arrays,
    /// `u64::MAX` all maps, and any other pattern goes on pseudo-randomly.
    fn is_map(&self, level: usize) -> bool {
        match self.kinds {
            0 => false,
            u64::MAX => true,
            kinds if level < 64 => (kinds >> level) & 1 == 1,
            kinds => mix(kinds, level as u64) & 1 == 1,
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        let siblings = u64::from(self.siblings);
        for level in 0..self.depth {
            let len = match self.huge_len {
                Some((at, len)) if at == level => len,
                _ => 1 + siblings,
            };
            if self.is_map(level) {
                out.push(118);
                write_var_u64(out, len);
                var_string(out, &format!("k{level}"));
            } else {
                out.push(117);
                write_var_u64(out, len);
            }
        }
        encode_leaf(self.leaf, self.payload, out);
        for level in (0..self.depth).rev() {
            let map = self.is_map(level);
            for s in 0..siblings {
                if map {
                    var_string(out, &format!("s{s}"));
                }
                encode_leaf((self.payload.wrapping_add(s) % 10) as u8, s, out);
            }
        }
    }
}

fn encode_leaf(leaf: u8, payload: u64, out: &mut Vec<u8>) {
    match leaf {
        0 => out.push(127),
        1 => out.push(126),
        2 => {
            out.push(125);
            // lib0 varInt: 6 bits and a sign in the first byte.
            out.push((payload & 0x3f) as u8);
        }
        3 => {
            out.push(124);
            out.extend_from_slice(&(payload as f32).to_be_bytes());
        }
        4 => {
            out.push(123);
            out.extend_from_slice(&f64::from_bits(payload).to_be_bytes());
        }
        5 => {
            out.push(122);
            out.extend_from_slice(&payload.to_be_bytes());
        }
        6 => out.push(121),
        7 => out.push(120),
        8 => {
            out.push(119);
            var_string(out, &format!("v{payload}é👋"));
        }
        9 => {
            out.push(116);
            var_bytes(out, &payload.to_le_bytes()[..(payload % 9) as usize]);
        }
        10 => {
            out.push(117);
            write_var_u64(out, 0);
        }
        11 => {
            out.push(118);
            write_var_u64(out, 0);
        }
        _ => out.push((payload % 116) as u8),
    }
}

/// A JSON text (embeds and formats are JSON strings that yrs parses with serde_json).
#[derive(Debug, Clone)]
struct JsonSpec {
    depth: usize,
    object: bool,
}

impl JsonSpec {
    fn text(&self) -> String {
        let (open, close) = if self.object {
            ("{\"a\":", "}")
        } else {
            ("[", "]")
        };
        let mut s = String::with_capacity(self.depth * 6 + 1);
        for _ in 0..self.depth {
            s.push_str(open);
        }
        s.push('1');
        for _ in 0..self.depth {
            s.push_str(close);
        }
        s
    }
}

#[derive(Debug, Clone)]
enum ContentSpec {
    Deleted(u64),
    /// yrs reads `declared + 1` strings here (Yjs reads `declared`): what follows desyncs.
    Json {
        declared: u64,
        strings: Vec<String>,
    },
    Binary {
        declared: Option<u64>,
        bytes: Vec<u8>,
    },
    Str(String),
    Embed(JsonSpec),
    Format(String, JsonSpec),
    /// A type: 0 array, 1 map, 2 text, 3 XML element (named), 4 fragment, 5 hook, 6 XML text,
    /// 7 weak link, 9 subdocument, 15 undefined; anything else is unknown.
    Type {
        type_ref: u8,
        name: String,
    },
    Any {
        declared: Option<u64>,
        values: Vec<AnySpec>,
    },
    Doc {
        guid: String,
        opts: AnySpec,
    },
}

impl ContentSpec {
    fn reference(&self) -> u8 {
        match self {
            ContentSpec::Deleted(_) => 1,
            ContentSpec::Json { .. } => 2,
            ContentSpec::Binary { .. } => 3,
            ContentSpec::Str(_) => 4,
            ContentSpec::Embed(_) => 5,
            ContentSpec::Format(..) => 6,
            ContentSpec::Type { .. } => 7,
            ContentSpec::Any { .. } => 8,
            ContentSpec::Doc { .. } => 9,
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            ContentSpec::Deleted(len) => write_var_u64(out, *len),
            ContentSpec::Json { declared, strings } => {
                write_var_u64(out, *declared);
                for s in strings {
                    var_string(out, s);
                }
            }
            ContentSpec::Binary { declared, bytes } => {
                write_var_u64(out, declared.unwrap_or(bytes.len() as u64));
                out.extend_from_slice(bytes);
            }
            ContentSpec::Str(s) => var_string(out, s),
            ContentSpec::Embed(json) => var_string(out, &json.text()),
            ContentSpec::Format(key, json) => {
                var_string(out, key);
                var_string(out, &json.text());
            }
            ContentSpec::Type { type_ref, name } => {
                write_var_u64(out, u64::from(*type_ref));
                if matches!(type_ref, 3 | 5) {
                    var_string(out, name);
                }
            }
            ContentSpec::Any { declared, values } => {
                write_var_u64(out, declared.unwrap_or(values.len() as u64));
                for v in values {
                    v.encode(out);
                }
            }
            ContentSpec::Doc { guid, opts } => {
                var_string(out, guid);
                opts.encode(out);
            }
        }
    }

    /// Deepest `Any` nesting in the content.
    fn nesting(&self) -> usize {
        match self {
            ContentSpec::Any { values, .. } => {
                values.iter().map(AnySpec::nesting).max().unwrap_or(0)
            }
            ContentSpec::Doc { opts, .. } => opts.nesting(),
            _ => 0,
        }
    }

    /// Whether a decoder reading it stays aligned with the encoder: every declared count is
    /// the real one (yrs reads one string more than a JSON content declares).
    fn honest(&self) -> bool {
        match self {
            ContentSpec::Json { .. } => false,
            // yrs reads no name for a hook (Yjs does), and a weak link's source is not written.
            ContentSpec::Type { type_ref, .. } => !matches!(type_ref, 5 | 7),
            ContentSpec::Binary { declared, .. } | ContentSpec::Any { declared, .. } => {
                declared.is_none()
            }
            _ => true,
        }
    }
}

#[derive(Debug, Clone)]
enum ParentSpec {
    /// A root type by name.
    Named(String),
    /// A parent item's id, after a parent-info varUint that is not 1 (0 in Yjs).
    Id { info: u64, client: u64, clock: u64 },
}

#[derive(Debug, Clone)]
enum StructSpec {
    Gc(u64),
    Skip(u64),
    Item {
        origin: Option<(u64, u64)>,
        right: Option<(u64, u64)>,
        parent: ParentSpec,
        parent_sub: Option<String>,
        content: ContentSpec,
    },
    /// An info byte whose content reference is unknown (11..=31, with any flags).
    Unknown(u8),
}

impl StructSpec {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            StructSpec::Gc(len) => {
                out.push(0);
                write_var_u64(out, *len);
            }
            StructSpec::Skip(len) => {
                out.push(10);
                write_var_u64(out, *len);
            }
            StructSpec::Unknown(info) => out.push(*info),
            StructSpec::Item {
                origin,
                right,
                parent,
                parent_sub,
                content,
            } => {
                let mut info = content.reference();
                if origin.is_some() {
                    info |= 0x80;
                }
                if right.is_some() {
                    info |= 0x40;
                }
                let copies_parent = origin.is_some() || right.is_some();
                if parent_sub.is_some() && !copies_parent {
                    info |= 0x20;
                }
                out.push(info);
                for (client, clock) in origin.iter().chain(right.iter()) {
                    write_var_u64(out, *client);
                    write_var_u64(out, *clock);
                }
                if !copies_parent {
                    match parent {
                        ParentSpec::Named(name) => {
                            write_var_u64(out, 1);
                            var_string(out, name);
                        }
                        ParentSpec::Id {
                            info,
                            client,
                            clock,
                        } => {
                            write_var_u64(out, *info);
                            write_var_u64(out, *client);
                            write_var_u64(out, *clock);
                        }
                    }
                    if let Some(sub) = parent_sub {
                        var_string(out, sub);
                    }
                }
                content.encode(out);
            }
        }
    }

    fn nesting(&self) -> usize {
        match self {
            StructSpec::Item { content, .. } => content.nesting(),
            _ => 0,
        }
    }

    fn honest(&self) -> bool {
        match self {
            StructSpec::Item { content, .. } => content.honest(),
            // Its flags and content are not written: what follows is misread.
            StructSpec::Unknown(_) => false,
            StructSpec::Gc(_) | StructSpec::Skip(_) => true,
        }
    }
}

#[derive(Debug, Clone)]
struct ClientSpec {
    /// A struct count other than the real one.
    declared: Option<u64>,
    client: u64,
    clock: u64,
    structs: Vec<StructSpec>,
}

/// What happens to the encoded bytes.
#[derive(Debug, Clone)]
enum Tail {
    Keep,
    /// Cut at this fraction (of 65,536) of the length.
    Truncate(u16),
    /// Cut, then end in a varint that never ends (continuation bits set).
    OpenVarint(u16, u8),
    /// Append bytes after the delete set.
    Garbage(Vec<u8>),
    /// Overwrite one byte (the decoder may then skip the deep part; only "never panics" holds).
    Flip(u16, u8),
}

#[derive(Debug, Clone)]
struct UpdateSpec {
    declared_clients: Option<u64>,
    clients: Vec<ClientSpec>,
    deletes: Vec<(u64, Vec<(u64, u64)>)>,
    tail: Tail,
}

impl UpdateSpec {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        write_var_u64(
            &mut out,
            self.declared_clients.unwrap_or(self.clients.len() as u64),
        );
        for c in &self.clients {
            write_var_u64(&mut out, c.declared.unwrap_or(c.structs.len() as u64));
            write_var_u64(&mut out, c.client);
            write_var_u64(&mut out, c.clock);
            for s in &c.structs {
                s.encode(&mut out);
            }
        }
        write_var_u64(&mut out, self.deletes.len() as u64);
        for (client, ranges) in &self.deletes {
            write_var_u64(&mut out, *client);
            write_var_u64(&mut out, ranges.len() as u64);
            for (clock, len) in ranges {
                write_var_u64(&mut out, *clock);
                write_var_u64(&mut out, *len);
            }
        }
        let cut = |frac: u16, len: usize| (len as u64 * u64::from(frac) / 65_536) as usize;
        match &self.tail {
            Tail::Keep => {}
            Tail::Truncate(frac) => out.truncate(cut(*frac, out.len())),
            Tail::OpenVarint(frac, n) => {
                out.truncate(cut(*frac, out.len()));
                out.extend(std::iter::repeat_n(0x80, usize::from(*n) + 1));
            }
            Tail::Garbage(bytes) => out.extend_from_slice(bytes),
            Tail::Flip(at, byte) => {
                if !out.is_empty() {
                    let at = usize::from(*at) % out.len();
                    out[at] = *byte;
                }
            }
        }
        out
    }

    /// Deepest `Any` nesting the bytes describe.
    fn nesting(&self) -> usize {
        self.clients
            .iter()
            .flat_map(|c| c.structs.iter())
            .map(StructSpec::nesting)
            .max()
            .unwrap_or(0)
    }

    /// Whether a decoder reads the structs in the order they were written, reaching every
    /// `Any` value unless it fails first: every count is the real one and no byte was
    /// overwritten. (Counts larger than the truth only add reads after the last struct.)
    fn honest(&self) -> bool {
        let counts = self
            .declared_clients
            .is_none_or(|n| n >= self.clients.len() as u64)
            && self
                .clients
                .iter()
                .all(|c| c.declared.is_none_or(|n| n >= c.structs.len() as u64));
        counts
            && !matches!(self.tail, Tail::Flip(..))
            && self
                .clients
                .iter()
                .flat_map(|c| c.structs.iter())
                .all(StructSpec::honest)
    }
}

// ---------------------------------------------------------------------------------------------
// Strategies

/// Depths: mostly shallow, often around the limit, sometimes far past any stack.
fn depth() -> impl Strategy<Value = usize> {
    prop_oneof![
        4 => 0usize..4,
        3 => 0usize..=MUST_ACCEPT_DEPTH,
        4 => (MAX_DEPTH - 3)..=(MAX_DEPTH + 6),
        2 => 100usize..3_000,
        2 => 10_000usize..60_000,
    ]
}

/// Declared lengths far past the bytes that follow (and past what can be allocated).
fn huge() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(u64::from(u32::MAX)),
        Just(1u64 << 31),
        Just(1u64 << 40),
        Just(u64::MAX >> 1),
        Just(u64::MAX),
        (1u64 << 20)..(1u64 << 34),
    ]
}

fn any_spec(depth: impl Strategy<Value = usize>) -> impl Strategy<Value = AnySpec> {
    (
        depth,
        any::<u64>(),
        0u8..3,
        prop_oneof![12 => 0u8..12, 1 => Just(12u8)],
        any::<u64>(),
        proptest::option::weighted(0.1, (0usize..80, huge())),
    )
        .prop_map(|(depth, kinds, siblings, leaf, payload, huge_len)| {
            // Siblings on every level of a very deep spine would only slow the test down.
            let siblings = if depth > 1_000 { 0 } else { siblings };
            AnySpec {
                depth,
                kinds,
                siblings,
                leaf,
                payload,
                huge_len,
            }
        })
}

fn short_string() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("objects".to_owned()),
        Just("meta".to_owned()),
        Just("chat".to_owned()),
        "[a-z]{1,6}",
        "\\PC{0,8}",
    ]
}

fn id_pair() -> impl Strategy<Value = (u64, u64)> {
    (client_id(), clock())
}

fn client_id() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => 0u64..8,
        2 => any::<u32>().prop_map(u64::from),
        1 => Just((1u64 << 53) - 1),
        1 => (1u64 << 53)..=u64::MAX,
    ]
}

fn clock() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => 0u64..16,
        1 => any::<u32>().prop_map(u64::from),
        1 => Just(u64::from(u32::MAX)),
        1 => (1u64 << 32)..=u64::MAX,
    ]
}

fn content() -> impl Strategy<Value = ContentSpec> {
    let json = || (depth(), any::<bool>()).prop_map(|(depth, object)| JsonSpec { depth, object });
    prop_oneof![
        1 => (0u64..5).prop_map(ContentSpec::Deleted),
        1 => huge().prop_map(ContentSpec::Deleted),
        1 => (0u64..4, proptest::collection::vec("[a-z0-9\"]{0,5}", 0..4))
            .prop_map(|(declared, strings)| ContentSpec::Json { declared, strings }),
        1 => (
            proptest::option::weighted(0.3, huge()),
            proptest::collection::vec(any::<u8>(), 0..16)
        )
            .prop_map(|(declared, bytes)| ContentSpec::Binary { declared, bytes }),
        1 => short_string().prop_map(ContentSpec::Str),
        1 => json().prop_map(ContentSpec::Embed),
        1 => (short_string(), json()).prop_map(|(k, j)| ContentSpec::Format(k, j)),
        1 => (
            prop_oneof![0u8..=7, Just(9u8), Just(15u8), 8u8..=255],
            short_string()
        )
            .prop_map(|(type_ref, name)| ContentSpec::Type { type_ref, name }),
        4 => (
            proptest::option::weighted(0.15, prop_oneof![0u64..3, huge()]),
            proptest::collection::vec(any_spec(depth()), 1..4)
        )
            .prop_map(|(declared, values)| ContentSpec::Any { declared, values }),
        1 => (short_string(), any_spec(depth()))
            .prop_map(|(guid, opts)| ContentSpec::Doc { guid, opts }),
    ]
}

fn parent() -> impl Strategy<Value = ParentSpec> {
    prop_oneof![
        3 => short_string().prop_map(ParentSpec::Named),
        1 => (prop_oneof![Just(0u64), 2u64..300], client_id(), clock())
            .prop_map(|(info, client, clock)| ParentSpec::Id { info, client, clock }),
    ]
}

fn struct_spec() -> impl Strategy<Value = StructSpec> {
    prop_oneof![
        1 => prop_oneof![0u64..4, huge()].prop_map(StructSpec::Gc),
        1 => prop_oneof![0u64..4, huge()].prop_map(StructSpec::Skip),
        1 => (11u8..=31, 0u8..8).prop_map(|(r, flags)| StructSpec::Unknown(r | (flags << 5))),
        8 => (
            proptest::option::weighted(0.3, id_pair()),
            proptest::option::weighted(0.2, id_pair()),
            parent(),
            proptest::option::weighted(0.6, short_string()),
            content(),
        )
            .prop_map(|(origin, right, parent, parent_sub, content)| StructSpec::Item {
                origin,
                right,
                parent,
                parent_sub,
                content,
            }),
    ]
}

fn tail() -> impl Strategy<Value = Tail> {
    prop_oneof![
        6 => Just(Tail::Keep),
        2 => any::<u16>().prop_map(Tail::Truncate),
        1 => (any::<u16>(), 0u8..10).prop_map(|(f, n)| Tail::OpenVarint(f, n)),
        1 => proptest::collection::vec(any::<u8>(), 1..8).prop_map(Tail::Garbage),
        1 => (any::<u16>(), any::<u8>()).prop_map(|(at, b)| Tail::Flip(at, b)),
    ]
}

fn update_spec() -> impl Strategy<Value = UpdateSpec> {
    let client = (
        proptest::option::weighted(0.1, prop_oneof![0u64..4, huge()]),
        client_id(),
        clock(),
        proptest::collection::vec(struct_spec(), 0..4),
    )
        .prop_map(|(declared, client, clock, structs)| ClientSpec {
            declared,
            client,
            clock,
            structs,
        });
    (
        proptest::option::weighted(0.1, prop_oneof![0u64..4, huge()]),
        proptest::collection::vec(client, 0..4),
        proptest::collection::vec(
            (
                client_id(),
                proptest::collection::vec((clock(), prop_oneof![0u64..4, huge()]), 0..3),
            ),
            0..3,
        ),
        tail(),
    )
        .prop_map(|(declared_clients, clients, deletes, tail)| UpdateSpec {
            declared_clients,
            clients,
            deletes,
            tail,
        })
}

/// A well-formed update as a Yjs client writes one: `objects[key] = value` for one binary
/// `Any` value, no delete set.
fn map_set(client: u64, key: &str, value: &AnySpec) -> Vec<u8> {
    UpdateSpec {
        declared_clients: None,
        clients: vec![ClientSpec {
            declared: None,
            client,
            clock: 0,
            structs: vec![StructSpec::Item {
                origin: None,
                right: None,
                parent: ParentSpec::Named("objects".into()),
                parent_sub: Some(key.to_owned()),
                content: ContentSpec::Any {
                    declared: None,
                    values: vec![value.clone()],
                },
            }],
        }],
        deletes: Vec::new(),
        tail: Tail::Keep,
    }
    .encode()
}

// ---------------------------------------------------------------------------------------------
// The decoder path

/// Runs both entry points on `update`; returns whether each accepted it.
fn decode_both(update: &[u8]) -> (bool, bool) {
    let direct = protocol::decode_update(update).is_ok();
    let framed = protocol::decode(&update_frame(update)).is_ok();
    (direct, framed)
}

/// Checks the properties for one update; `nesting` is how deep its `Any` values nest and
/// `honest` whether a decoder reaches them (see [`UpdateSpec::honest`]).
fn check(update: &[u8], nesting: usize, honest: bool, well_formed: bool) -> Result<(), String> {
    let (direct, framed) = decode_both(update);
    if honest && nesting > MAX_DEPTH && (direct || framed) {
        return Err(format!(
            "an update nesting {nesting} levels (limit {MAX_DEPTH}) was accepted \
             (decode_update: {direct}, decode of a sync frame: {framed}); {} bytes",
            update.len()
        ));
    }
    if well_formed && nesting <= MUST_ACCEPT_DEPTH && !(direct && framed) {
        return Err(format!(
            "a well-formed update nesting {nesting} levels was refused \
             (decode_update: {direct}, decode of a sync frame: {framed})"
        ));
    }
    Ok(())
}

/// Runs `f` on a thread with a tokio worker's stack and returns its result; a panic that
/// escapes `f` fails the test with its message (a stack overflow aborts the process instead).
fn on_worker_stack<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .name(name.to_owned())
        .stack_size(WORKER_STACK)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        // Relative to the package, where `cargo test` runs.
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "tests/proptest-regressions/update_fuzz.txt",
        ))),
        ..Config::default()
    })
}

/// yrs' debug assertions panic on some inputs, and the decoder catches those panics; the
/// default hook would print a backtrace for each (slow, and thousands of lines). On the case
/// threads a panic prints one line; a panic that escapes the decoder still fails the case.
fn quiet_caught_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current()
                .name()
                .is_some_and(|n| n.starts_with(CASE_THREAD))
            {
                eprintln!("panic on a case thread: {info}");
            } else {
                default(info);
            }
        }));
    });
}

/// Runs a property over `strategy()`, each case on a thread of its own with a worker's
/// stack. proptest itself runs on a thread with a large stack: generating and shrinking these
/// composite values takes more than 2 MiB of stack in a debug build.
fn run_property<S>(
    name: &'static str,
    strategy: impl FnOnce() -> S + Send + 'static,
    test: fn(&S::Value) -> Result<(), String>,
) where
    S: Strategy,
    S::Value: Send + std::fmt::Debug + 'static,
{
    quiet_caught_panics();
    let result = std::thread::Builder::new()
        .name(format!("{name}-runner"))
        .stack_size(PROPTEST_STACK)
        .spawn(move || {
            runner()
                .run(&strategy(), |value| {
                    on_worker_stack(&format!("{CASE_THREAD}{name}"), move || test(&value))
                        .map_err(TestCaseError::fail)
                })
                .map_err(|e| e.to_string())
        })
        .unwrap()
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    if let Err(e) = result {
        panic!("{e}");
    }
}

// ---------------------------------------------------------------------------------------------
// Tests

/// Structured updates of every shape: never a panic or an abort; deep nesting is refused;
/// well-formed shallow updates (none here are guaranteed well-formed) are not checked.
#[test]
fn structured_updates_never_panic_and_deep_nesting_is_refused() {
    run_property("structured-updates", update_spec, |spec| {
        let update = spec.encode();
        check(&update, spec.nesting(), spec.honest(), false)
    });
}

/// Well-formed `objects[key] = value` updates, one `Any` value of random shape and depth:
/// accepted up to [`MUST_ACCEPT_DEPTH`] levels, refused past [`MAX_DEPTH`].
#[test]
fn nested_values_are_accepted_up_to_and_refused_past_the_limit() {
    let strategy = || {
        (any::<u32>(), "[a-z]{1,4}", any_spec(depth()))
            .prop_filter("no huge declared length", |(_, _, v)| v.huge_len.is_none())
    };
    run_property("nested-values", strategy, |(client, key, value)| {
        let update = map_set(u64::from(*client), key, value);
        // An unknown leaf tag makes it malformed.
        check(&update, value.nesting(), true, value.leaf < 12)
    });
}

/// The case that motivated the limit: 200,000 nested arrays (`117, 1, 117, 1, ...`) in one
/// map value. Without a depth check yrs' recursive `Any` decoder overflows a worker's 2 MiB
/// stack, which aborts the whole process (no `catch_unwind` can catch it).
#[test]
fn two_hundred_thousand_nested_arrays_are_refused_on_a_worker_stack() {
    let deep = AnySpec {
        depth: 200_000,
        kinds: 0,
        siblings: 0,
        leaf: 1,
        payload: 0,
        huge_len: None,
    };
    let update = map_set(7, "deep", &deep);
    assert!(update.windows(4).filter(|w| *w == [117, 1, 117, 1]).count() >= 199_999);
    let result = on_worker_stack("deep-arrays", move || check(&update, 200_000, true, false));
    result.unwrap();
}

/// The same with maps (`118, 1, key, 118, 1, key, ...`) and with a subdocument's options,
/// the other place yrs decodes a binary `Any`.
#[test]
fn deep_maps_and_deep_subdocument_options_are_refused_on_a_worker_stack() {
    let deep_maps = AnySpec {
        depth: 100_000,
        kinds: u64::MAX,
        siblings: 0,
        leaf: 1,
        payload: 0,
        huge_len: None,
    };
    let maps = map_set(7, "deep", &deep_maps);
    let doc = UpdateSpec {
        declared_clients: None,
        clients: vec![ClientSpec {
            declared: None,
            client: 9,
            clock: 0,
            structs: vec![StructSpec::Item {
                origin: None,
                right: None,
                parent: ParentSpec::Named("objects".into()),
                parent_sub: Some("sub".into()),
                content: ContentSpec::Doc {
                    guid: "guid".into(),
                    opts: AnySpec {
                        kinds: 0x5555_5555_5555_5555,
                        ..deep_maps.clone()
                    },
                },
            }],
        }],
        deletes: Vec::new(),
        tail: Tail::Keep,
    }
    .encode();
    on_worker_stack("deep-maps", move || {
        check(&maps, 100_000, true, false).unwrap();
        check(&doc, 100_000, true, false).unwrap();
    });
}

/// Just past the limit is refused, at the limit's shallow end accepted, and JSON embeds nested
/// far past serde_json's own limit are refused without a panic.
#[test]
fn the_limit_and_deep_json_embeds() {
    on_worker_stack("limit", || {
        for depth in [0, 1, 3, MUST_ACCEPT_DEPTH - 1] {
            for kinds in [0, u64::MAX] {
                let value = AnySpec {
                    depth,
                    kinds,
                    siblings: 1,
                    leaf: 8,
                    payload: 3,
                    huge_len: None,
                };
                let update = map_set(3, "v", &value);
                check(&update, value.nesting(), true, true).unwrap();
            }
        }
        for depth in [MAX_DEPTH + 1, MAX_DEPTH + 2, 1_000] {
            let value = AnySpec {
                depth,
                kinds: 0,
                siblings: 0,
                leaf: 1,
                payload: 0,
                huge_len: None,
            };
            check(&map_set(3, "v", &value), depth, true, false).unwrap();
        }
        let embed = UpdateSpec {
            declared_clients: None,
            clients: vec![ClientSpec {
                declared: None,
                client: 4,
                clock: 0,
                structs: vec![StructSpec::Item {
                    origin: None,
                    right: None,
                    parent: ParentSpec::Named("t".into()),
                    parent_sub: None,
                    content: ContentSpec::Embed(JsonSpec {
                        depth: 100_000,
                        object: false,
                    }),
                }],
            }],
            deletes: Vec::new(),
            tail: Tail::Keep,
        }
        .encode();
        let (direct, framed) = decode_both(&embed);
        assert!(
            !direct && !framed,
            "a JSON embed nested 100,000 deep was accepted"
        );
    });
}
