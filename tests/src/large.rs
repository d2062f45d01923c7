//! The large board (issue 19): a whiteboard of tens of megabytes, as a Yjs update v1, and
//! y-websocket clients joining it with nothing (an empty state vector), timed until the whole
//! state has arrived (and, for one of them, been applied).
//!
//! The board follows the layout of the board document (DESIGN.md §3): objects of every kind
//! in `objects`, each a `Y.Map` with `kind`, `pos`, `size`, `rotation`, `z`, `color`,
//! `created_by`, `created_at`, a `Y.Text` body of a few hundred to a few thousand characters
//! (pasted notes, as boards that grow that large hold), frames and connectors between objects;
//! a title in `meta` and chat messages in `chat`.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use yrs::updates::decoder::Decode;
use yrs::{Array, Doc, Map, ReadTxn, StateVector, Transact, Update};

use crate::wire::{self, Frame};

/// An open client socket.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A generated board.
#[derive(Debug)]
pub struct Board {
    /// The whole state, Yjs update v1.
    pub update: Vec<u8>,
    pub objects: usize,
    /// Characters of text in all bodies.
    pub text_chars: usize,
}

/// A small deterministic generator (xorshift64*), so a board is the same for a seed.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

const WORDS: &[&str] = &[
    "the",
    "board",
    "sprint",
    "review",
    "customer",
    "launch",
    "draft",
    "idea",
    "risk",
    "owner",
    "deadline",
    "migrate",
    "database",
    "latency",
    "design",
    "sketch",
    "user",
    "research",
    "interview",
    "feedback",
    "roadmap",
    "quarter",
    "goal",
    "metric",
    "budget",
    "team",
    "meeting",
    "notes",
    "action",
    "item",
    "follow",
    "up",
    "with",
    "and",
    "for",
    "to",
    "of",
    "in",
    "on",
    "we",
    "should",
    "could",
    "must",
    "maybe",
    "later",
    "now",
    "blocked",
    "done",
    "question",
    "answer",
    "über",
    "naïve",
    "café",
    "→",
    "✓",
    "📌",
];

fn words(rng: &mut Rng, chars: usize) -> String {
    let mut s = String::with_capacity(chars + 16);
    while s.len() < chars {
        if !s.is_empty() {
            s.push(if rng.below(12) == 0 { '\n' } else { ' ' });
        }
        s.push_str(WORDS[rng.below(WORDS.len() as u64) as usize]);
    }
    s
}

const KINDS: &[&str] = &["sticky", "sticky", "sticky", "rect", "ellipse", "text"];
const COLORS: &[&str] = &[
    "#ffeb3b", "#ff8a80", "#80d8ff", "#ccff90", "#e1bee7", "#ffffff",
];

/// A board of at least `target_bytes` (encoded), built by `authors` clients (an object's
/// author writes it, as on a shared board). Bodies are `200..=4000` characters.
pub fn whiteboard(target_bytes: usize, seed: u64) -> Board {
    let authors: Vec<Doc> = (1..=8)
        .map(|id| {
            Doc::with_options(yrs::Options {
                client_id: yrs::block::ClientID::new(1000 + id),
                offset_kind: yrs::OffsetKind::Utf16,
                ..yrs::Options::default()
            })
        })
        .collect();
    let doc = &authors[0];
    let mut rng = Rng(seed | 1);
    let (mut objects, mut text_chars, mut written) = (0usize, 0usize, 0usize);
    {
        let meta = doc.get_or_insert_map("meta");
        let mut txn = doc.transact_mut();
        meta.insert(&mut txn, "title", "Company offsite: everything");
    }
    let mut frames: Vec<String> = Vec::new();
    let mut batch = 0u64;
    while written < target_bytes {
        // One author writes a batch of objects; the others learn it (a live board).
        let author = &authors[(batch % authors.len() as u64) as usize];
        batch += 1;
        let update = {
            let objects_map = author.get_or_insert_map("objects");
            let chat = author.get_or_insert_array("chat");
            let mut txn = author.transact_mut();
            for _ in 0..200 {
                let id = format!("obj-{objects:07}");
                let n = objects as f64;
                let kind = if objects % 50 == 0 {
                    "frame"
                } else if objects % 17 == 0 && objects > 2 {
                    "connector"
                } else {
                    KINDS[rng.below(KINDS.len() as u64) as usize]
                };
                let o = objects_map.insert(&mut txn, id.as_str(), yrs::MapPrelim::default());
                o.insert(&mut txn, "kind", kind);
                o.insert(
                    &mut txn,
                    "pos",
                    vec![(n % 300.0) * 240.0, (n / 300.0).floor() * 240.0],
                );
                o.insert(
                    &mut txn,
                    "size",
                    vec![200.0 + rng.below(200) as f64, 200.0 + rng.below(100) as f64],
                );
                o.insert(&mut txn, "rotation", 0.0);
                o.insert(&mut txn, "z", format!("a{objects:07}"));
                o.insert(
                    &mut txn,
                    "color",
                    COLORS[rng.below(COLORS.len() as u64) as usize],
                );
                o.insert(&mut txn, "created_by", format!("user-{}", rng.below(40)));
                o.insert(&mut txn, "created_at", 1.7e12 + n * 1000.0);
                if kind == "connector" {
                    o.insert(&mut txn, "from", format!("obj-{:07}", objects - 1));
                    o.insert(&mut txn, "to", format!("obj-{:07}", objects - 2));
                    o.insert(&mut txn, "label", words(&mut rng, 12));
                } else {
                    if let Some(f) = frames.last() {
                        o.insert(&mut txn, "frame", f.as_str());
                    }
                    let chars = 200 + rng.below(3800) as usize;
                    let body = words(&mut rng, chars);
                    text_chars += body.chars().count();
                    o.insert(&mut txn, "text", yrs::TextPrelim::new(body));
                }
                if kind == "frame" {
                    frames.push(id);
                }
                objects += 1;
            }
            let message = yrs::MapPrelim::from([
                ("id", yrs::Any::from(format!("msg-{batch}"))),
                ("author", yrs::Any::from(format!("user-{}", rng.below(40)))),
                ("text", yrs::Any::from(words(&mut rng, 80))),
                ("at", yrs::Any::from(1.7e12 + batch as f64)),
            ]);
            chat.push_back(&mut txn, message);
            txn.encode_update_v1()
        };
        written += update.len();
        for other in &authors {
            if other.client_id() != author.client_id() {
                let u = Update::decode_v1(&update).unwrap_or_default();
                let _ = other.transact_mut().apply_update(u);
            }
        }
    }
    let update = doc
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    Board {
        update,
        objects,
        text_chars,
    }
}

/// WebSocket settings of a client joining a large board: messages of any size up to 1 GiB.
pub fn ws_config() -> WebSocketConfig {
    wire::ws_config()
        .max_message_size(Some(1 << 30))
        .max_frame_size(Some(1 << 30))
}

/// What the large-board scenario measured. RSS in KiB, of the server process.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LargeResult {
    /// The board's encoded size (update v1 bytes).
    pub encoded_bytes: u64,
    pub objects: u64,
    pub text_chars: u64,
    /// `sync-server import` of the file (ms).
    pub import_ms: f64,
    /// RSS growth of a fresh process applying the update to a yrs doc: what yrs holds in
    /// memory for it.
    pub yrs_doc_kb: u64,
    /// Peak RSS growth of that process reading the file and applying it: the least a server
    /// keeping the board in a yrs doc needs while it loads it.
    #[serde(default)]
    pub yrs_load_peak_kb: u64,
    /// The server started, the board not loaded yet.
    pub rss_idle_kb: u64,
    /// The first client: connect to whole state received, and applied.
    pub first: Join,
    /// The server with the board loaded and one client, settled.
    pub rss_one_client_kb: u64,
    /// Clients joining at once after the first.
    pub joiners: u64,
    /// Of them, those whose whole state arrived within the timeout.
    pub joined: u64,
    pub timeouts: u64,
    /// Their times, connect to whole state received.
    pub join: crate::storm::Spread,
    /// The largest RSS sampled (every 20 ms) while they joined.
    pub rss_max_sampled_kb: u64,
    /// VmHWM at the end: the process's peak (board load included).
    pub peak_rss_kb: u64,
    /// Everyone connected, settled.
    pub rss_steady_kb: u64,
    /// Every client gone, settled.
    pub rss_after_close_kb: u64,
    pub first_error: Option<String>,
}

/// One client's join.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Join {
    /// Connect to the whole sync step 2 received (ms).
    pub received_ms: f64,
    /// Then applied to a fresh doc (ms), when asked for.
    pub applied_ms: Option<f64>,
    /// Bytes of the update in the step 2.
    pub bytes: usize,
}

/// Joins `url` as y-websocket does with an empty doc: its sync step 1, the server's step 1
/// answered with an (empty) step 2; waits for the server's step 2 (at most `timeout`) and, if
/// `apply`, applies it. Returns the timing and the open socket.
pub async fn join(url: &str, apply: bool, timeout: Duration) -> anyhow::Result<(Join, Ws)> {
    let t0 = Instant::now();
    let work = async {
        let (mut ws, _) =
            tokio_tungstenite::connect_async_with_config(url, Some(ws_config()), true)
                .await
                .with_context(|| format!("connect {url}"))?;
        let doc = crate::new_doc();
        let sv = doc.transact().state_vector();
        ws.send(Message::Binary(wire::step1_frame(&sv))).await?;
        loop {
            let data = match ws.next().await {
                Some(Ok(Message::Binary(data))) => data,
                Some(Ok(Message::Close(c))) => bail!("closed before its sync step 2: {c:?}"),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e).context("before its sync step 2"),
                None => bail!("connection ended before its sync step 2"),
            };
            match wire::parse(&data)? {
                Frame::Step1(sv) => {
                    let sv = wire::decode_sv(sv)?;
                    let diff = doc.transact().encode_state_as_update_v1(&sv);
                    ws.send(Message::Binary(wire::step2_frame(diff))).await?;
                }
                Frame::Step2(update) => {
                    let received = t0.elapsed();
                    let bytes = update.len();
                    let applied = if apply {
                        let u = Update::decode_v1(update).context("undecodable step 2")?;
                        doc.transact_mut()
                            .apply_update(u)
                            .context("step 2 does not apply")?;
                        Some(t0.elapsed())
                    } else {
                        None
                    };
                    let join = Join {
                        received_ms: received.as_secs_f64() * 1000.0,
                        applied_ms: applied.map(|d| d.as_secs_f64() * 1000.0),
                        bytes,
                    };
                    return Ok((join, ws));
                }
                _ => {}
            }
        }
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(result) => result,
        Err(_) => bail!("no whole sync step 2 within {timeout:?}"),
    }
}

/// Objects in `objects` of the board an update holds (to check a join got all of it).
pub fn object_count(update: &[u8]) -> anyhow::Result<u32> {
    let doc = crate::new_doc();
    doc.transact_mut()
        .apply_update(Update::decode_v1(update).context("undecodable")?)
        .context("does not apply")?;
    let objects = doc.get_or_insert_map("objects");
    Ok(objects.len(&doc.transact()))
}

/// The chat of a board (to check it is there).
pub fn chat_len(doc: &Doc) -> u32 {
    doc.get_or_insert_array("chat").len(&doc.transact())
}

/// VmRSS of `pid` (0 if unknown).
fn rss(pid: Option<u32>) -> u64 {
    pid.and_then(|p| crate::procfs::rss_kb(p).ok()).unwrap_or(0)
}

/// Reads and drops what arrives on `ws` until `close` says so, then closes it.
async fn keep_open(mut ws: Ws, mut close: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(_)) => {}
                _ => return,
            },
            _ = close.changed() => {
                let _ = ws.close(None).await;
                return;
            }
        }
    }
}

/// The joins of the large-board scenario against a server already holding the board at
/// `url` (not loaded yet), whose process is `pid`: one client (applying what it gets), then
/// `joiners` at once; RSS before, between, sampled during, and after. Fills the join and
/// memory fields of the result.
pub async fn joins(
    url: &str,
    pid: Option<u32>,
    joiners: usize,
    timeout: Duration,
    settle: Duration,
    r: &mut LargeResult,
) -> anyhow::Result<()> {
    let (close_tx, close_rx) = tokio::sync::watch::channel(false);
    r.rss_idle_kb = rss(pid);
    let (first, ws) = join(url, true, timeout).await.context("the first client")?;
    if first.bytes as u64 != r.encoded_bytes {
        // The server's encoding may differ in bytes from the file's; note it, do not fail.
        eprintln!(
            "  large: the first client's step 2 holds {} bytes (the file {})",
            first.bytes, r.encoded_bytes
        );
    }
    r.first = first;
    let mut open = vec![tokio::spawn(keep_open(ws, close_rx.clone()))];
    tokio::time::sleep(settle).await;
    r.rss_one_client_kb = rss(pid);

    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        tokio::spawn(async move {
            let mut max = 0;
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                max = max.max(rss(pid));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            max
        })
    };
    let tasks: Vec<_> = (0..joiners)
        .map(|_| {
            let url = url.to_owned();
            tokio::spawn(async move { join(&url, false, timeout).await })
        })
        .collect();
    let mut times = Vec::with_capacity(joiners);
    for task in tasks {
        match task.await.context("a joiner's task failed")? {
            Ok((j, ws)) => {
                if j.bytes != r.first.bytes {
                    r.first_error.get_or_insert_with(|| {
                        format!(
                            "a joiner got {} bytes, the first {}",
                            j.bytes, r.first.bytes
                        )
                    });
                }
                times.push(Duration::from_secs_f64(j.received_ms / 1000.0));
                open.push(tokio::spawn(keep_open(ws, close_rx.clone())));
            }
            Err(e) => {
                r.timeouts += 1;
                r.first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    r.rss_max_sampled_kb = sampler.await.unwrap_or(0);
    r.joiners = joiners as u64;
    r.joined = times.len() as u64;
    r.join = crate::storm::Spread::of(&times);
    tokio::time::sleep(settle).await;
    r.rss_steady_kb = rss(pid);
    r.peak_rss_kb = pid.and_then(|p| crate::procfs::hwm_kb(p).ok()).unwrap_or(0);
    let _ = close_tx.send(true);
    for task in open {
        let _ = task.await;
    }
    tokio::time::sleep(settle).await;
    r.rss_after_close_kb = rss(pid);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_board_has_the_size_asked_and_the_board_layout() {
        let board = whiteboard(1 << 20, 7);
        assert!(board.update.len() >= 1 << 20, "{}", board.update.len());
        assert!(board.update.len() < 2 << 20, "{}", board.update.len());
        let doc = crate::doc_from(&board.update);
        assert_eq!(object_count(&board.update).unwrap() as usize, board.objects);
        assert!(chat_len(&doc) > 0);
        let view = crdt_free_read(&doc);
        assert!(view.contains("\"kind\":\"frame\"") && view.contains("\"kind\":\"connector\""));
        // Same seed, same board.
        assert_eq!(whiteboard(1 << 20, 7).objects, board.objects);
    }

    #[tokio::test]
    async fn clients_joining_a_large_board_at_once_each_get_all_of_it() {
        let board = whiteboard(2 << 20, 3);
        let store = crate::memory_store().await;
        let id = sync_server::ids::BoardId::parse("large-test").unwrap();
        sync_server::transfer::import_board(store.as_ref(), &id, &board.update)
            .await
            .unwrap();
        let server = crate::TestServer::start(crate::config(), store).await;
        let url = format!("ws://{}/v1/sync/large-test", server.addr);
        let mut r = LargeResult {
            encoded_bytes: board.update.len() as u64,
            ..LargeResult::default()
        };
        joins(
            &url,
            None,
            10,
            Duration::from_secs(20),
            Duration::ZERO,
            &mut r,
        )
        .await
        .unwrap();
        assert_eq!((r.joined, r.timeouts), (10, 0), "{r:?}");
        assert!(r.first_error.is_none(), "{r:?}");
        assert!(r.first.applied_ms.is_some() && r.first.bytes > 2 << 20);
        server.shutdown().await.unwrap();
    }

    fn crdt_free_read(doc: &Doc) -> String {
        crate::docs::doc_json(doc)
    }
}
