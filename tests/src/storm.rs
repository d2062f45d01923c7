//! The reconnect storm (issue 19): clients holding offline edits all come back within a
//! second of a server restart, as y-websocket's backoff brings them.
//!
//! 1. Every client connects to its board with `?ack=1`, syncs (its sync step 1; the server's
//!    step 1 answered with a step 2) and adds one note, acknowledged durable.
//! 2. The server stops gracefully (it closes the sockets with 1012).
//! 3. Offline, every client adds one note of its own (`offline-<board>-<n>`, a `Y.Map` in
//!    `objects` with a `Y.Text`, as the board layout says).
//! 4. The server starts again on the same database and port. Client `k` of `n` reconnects at
//!    `spread × k / n` after it listens (boards interleaved), and does y-websocket's exchange:
//!    its sync step 1, the server's step 1 answered with a step 2 that carries the offline edit.
//!    A refused connection is tried again 100 ms later (counted).
//! 5. Per client, from the restart (the server listening): when its offline edit was
//!    acknowledged durable (the first acknowledgement: the step 2 is its first document
//!    message on the connection), and when it held every other offline edit of its board
//!    (its doc's state vector covers each one's clock). Done is the later of the two.
//! 6. Independently of the clients: the server is killed (SIGKILL), started again, and every
//!    board is read over HTTP (`GET /v1/boards/{id}`): every offline note must be there.
//!
//! The server is anything [`Restartable`]: a child process in the load generator
//! ([`crate::process::ServerProcess`]), the server in process in the tests.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use yrs::updates::decoder::Decode;
use yrs::{Doc, Map, ReadTxn, Transact, Update};

use crate::wire::{self, Frame};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A server the storm can stop and start again on the same database and address.
#[allow(async_fn_in_trait)] // used with concrete types only
pub trait Restartable {
    /// Where it listens (the same across restarts).
    fn addr(&self) -> SocketAddr;
    /// Its process id, for its peak memory (`None` in process).
    fn pid(&self) -> Option<u32>;
    /// Starts it; returns how long until it accepted connections.
    async fn start(&mut self) -> anyhow::Result<Duration>;
    /// Stops it gracefully; returns how long that took.
    async fn stop(&mut self) -> anyhow::Result<Duration>;
    /// Stops it without any shutdown (SIGKILL).
    async fn crash(&mut self) -> anyhow::Result<()>;
}

impl Restartable for crate::process::ServerProcess {
    fn addr(&self) -> SocketAddr {
        Self::addr(self)
    }
    fn pid(&self) -> Option<u32> {
        Self::pid(self)
    }
    async fn start(&mut self) -> anyhow::Result<Duration> {
        Self::start(self).await
    }
    async fn stop(&mut self) -> anyhow::Result<Duration> {
        Self::stop(self).await
    }
    async fn crash(&mut self) -> anyhow::Result<()> {
        self.kill().await
    }
}

/// The storm's shape.
#[derive(Debug, Clone)]
pub struct StormConfig {
    pub boards: usize,
    pub clients_per_board: usize,
    /// Reconnects are spread uniformly over this long after the restart.
    pub spread: Duration,
    /// Board names are `<prefix>-<n>`.
    pub prefix: String,
    /// Clients doing their first connection and sync at once (before the restart).
    pub connect_concurrency: usize,
    /// How long after the restart a client may take before it counts as failed.
    pub timeout: Duration,
}

/// p50, p99 and maximum of per-client times (ms).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Spread {
    /// Nearest-rank percentiles of `samples` (all zero when empty).
    pub fn of(samples: &[Duration]) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
        ms.sort_by(f64::total_cmp);
        let rank = |q: f64| {
            let i = ((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len());
            ms[i - 1]
        };
        Self {
            p50_ms: rank(0.50),
            p99_ms: rank(0.99),
            max_ms: ms[ms.len() - 1],
        }
    }
}

/// What the storm measured. Times are from the restart (the server listening again).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StormResult {
    pub clients: u64,
    pub boards: u64,
    /// Reconnects spread over this long (ms).
    pub spread_ms: f64,
    /// SIGTERM to exit, with every client connected (ms).
    pub stop_ms: f64,
    /// Start to listening, on the board's database (ms).
    pub start_ms: f64,
    /// Connections the stop closed with 1012 (the server's restart hint).
    pub closed_1012: u64,
    /// Clients whose offline edit was durable and who held every other one of their board.
    pub done: u64,
    /// Clients that did not get there within the timeout, or failed.
    pub failures: u64,
    /// Connections lost after the restart before their client was done.
    pub disconnects: u64,
    /// Reconnect attempts refused and tried again.
    pub connect_retries: u64,
    /// When the last client was done (ms).
    pub all_done_ms: f64,
    /// Per client: offline edit acknowledged durable.
    pub durable: Spread,
    /// Per client: every other offline edit of its board received.
    pub delivered: Spread,
    /// Per client: both (the later of the two).
    pub done_at: Spread,
    /// Per client: both, from its own reconnect instead of the restart.
    pub done_after_connect: Spread,
    /// Per client: offline edit acknowledged durable, from its own reconnect.
    #[serde(default)]
    pub durable_after_connect: Spread,
    /// The restarted server's peak RSS (VmHWM) when every client was done (KiB).
    pub peak_rss_kb: u64,
    /// Its RSS then (KiB).
    pub rss_kb: u64,
    /// Offline notes found over HTTP after a SIGKILL and another start.
    pub verified_edits: u64,
    /// Offline notes made.
    pub expected_edits: u64,
    /// The first error a client met, if any.
    pub first_error: Option<String>,
}

impl StormResult {
    /// Whether every client was done and every edit survived the crash.
    pub fn ok(&self) -> bool {
        self.failures == 0
            && self.disconnects == 0
            && self.done == self.clients
            && self.verified_edits == self.expected_edits
    }
}

/// One simulated y-websocket client.
#[derive(Debug)]
struct Client {
    board: usize,
    index: usize,
    doc: Doc,
}

/// One offline edit: who made it and the clock after it.
#[derive(Debug, Clone, Copy)]
struct Edit {
    client: u64,
    end: u32,
}

/// What a client saw after the restart.
#[derive(Debug, Default)]
struct Outcome {
    connected: Option<Duration>,
    durable: Option<Duration>,
    delivered: Option<Duration>,
    retries: u64,
    disconnected: bool,
    error: Option<String>,
}

impl Outcome {
    fn done(&self) -> Option<Duration> {
        Some(self.durable?.max(self.delivered?))
    }
}

fn board_name(prefix: &str, b: usize) -> String {
    format!("{prefix}-{b}")
}

fn offline_id(board: usize, index: usize) -> String {
    format!("offline-{board}-{index}")
}

fn url(base: &str, prefix: &str, board: usize) -> String {
    format!("{base}/{}?ack=1", board_name(prefix, board))
}

/// Docs with distinct 32-bit client ids, as Yjs draws them.
fn docs(n: usize) -> Vec<Doc> {
    let mut ids = std::collections::HashSet::with_capacity(n);
    while ids.len() < n {
        ids.insert(uuid::Uuid::new_v4().as_u128() as u32);
    }
    ids.into_iter()
        .map(|id| {
            Doc::with_options(yrs::Options {
                client_id: yrs::block::ClientID::new(u64::from(id)),
                offset_kind: yrs::OffsetKind::Utf16,
                ..yrs::Options::default()
            })
        })
        .collect()
}

/// Adds a sticky note `id` as a board client would: a map in `objects` with its fields and a
/// `Y.Text`. Returns the transaction's update.
fn add_note(doc: &Doc, id: &str, n: usize) -> Vec<u8> {
    let objects = doc.get_or_insert_map("objects");
    let mut txn = doc.transact_mut();
    let note = objects.insert(&mut txn, id, yrs::MapPrelim::default());
    note.insert(&mut txn, "kind", "sticky");
    let (x, y) = ((n % 40) as f64 * 220.0, (n / 40) as f64 * 220.0);
    note.insert(&mut txn, "pos", vec![x, y]);
    note.insert(&mut txn, "size", vec![200.0, 200.0]);
    note.insert(&mut txn, "rotation", 0.0);
    note.insert(&mut txn, "z", format!("a{n:05}"));
    note.insert(&mut txn, "color", "#ffeb3b");
    note.insert(
        &mut txn,
        "text",
        yrs::TextPrelim::new(format!("{id}: written offline")),
    );
    txn.encode_update_v1()
}

fn apply(doc: &Doc, update: &[u8]) -> anyhow::Result<()> {
    let update = Update::decode_v1(update).context("undecodable update")?;
    doc.transact_mut()
        .apply_update(update)
        .context("update does not apply")?;
    Ok(())
}

async fn send(ws: &mut Ws, frame: bytes::Bytes) -> anyhow::Result<()> {
    ws.send(Message::Binary(frame)).await.context("send")
}

/// Step 1: connects, syncs and adds an acknowledged note; returns the open socket.
async fn online(client: &mut Client, url: &str) -> anyhow::Result<Ws> {
    let (mut ws, _) =
        tokio_tungstenite::connect_async_with_config(url, Some(wire::ws_config()), true)
            .await
            .with_context(|| format!("connect {url}"))?;
    let sv = client.doc.transact().state_vector();
    send(&mut ws, wire::step1_frame(&sv)).await?;
    let (mut sent, mut synced, mut noted) = (0u64, false, false);
    let deadline = tokio::time::sleep(Duration::from_secs(30));
    tokio::pin!(deadline);
    loop {
        let msg = tokio::select! {
            msg = ws.next() => msg,
            () = &mut deadline => bail!("not synced and acknowledged within 30 s"),
        };
        let data = match msg {
            Some(Ok(Message::Binary(data))) => data,
            Some(Ok(Message::Close(c))) => bail!("closed while syncing: {c:?}"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e).context("while syncing"),
            None => bail!("connection ended while syncing"),
        };
        if let Some(count) = wire::durable_ack(&data) {
            if noted && count >= sent {
                return Ok(ws);
            }
            continue;
        }
        match wire::parse(&data)? {
            Frame::Step1(sv) => {
                let sv = wire::decode_sv(sv)?;
                let diff = client.doc.transact().encode_state_as_update_v1(&sv);
                send(&mut ws, wire::step2_frame(diff)).await?;
                sent += 1;
            }
            Frame::Step2(u) => {
                apply(&client.doc, u)?;
                synced = true;
            }
            Frame::Update(u) => apply(&client.doc, u)?,
            _ => {}
        }
        if synced && sent >= 1 && !noted {
            let id = format!("online-{}-{}", client.board, client.index);
            let update = add_note(&client.doc, &id, client.index);
            send(&mut ws, wire::update_frame(&update)).await?;
            sent += 1;
            noted = true;
        }
    }
}

/// Holds the socket open, applying what arrives, until the server closes it; returns the
/// close code.
async fn hold(client: &Client, mut ws: Ws) -> Option<u16> {
    while let Some(msg) = ws.next().await {
        match msg {
            Ok(Message::Binary(data)) => {
                if let Ok(Frame::Update(u) | Frame::Step2(u)) = wire::parse(&data) {
                    let _ = apply(&client.doc, u);
                }
            }
            Ok(Message::Close(c)) => return c.map(|c| u16::from(c.code)),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    None
}

/// Whether `doc` holds every edit of `others`.
fn holds_all(doc: &Doc, others: &[Edit]) -> bool {
    let sv = doc.transact().state_vector();
    others
        .iter()
        .all(|e| sv.get(&yrs::block::ClientID::new(e.client)) >= e.end)
}

/// Step 4 for one client: reconnect at `at` and follow the exchange until done, then keep the
/// socket open until `close` says so.
#[allow(clippy::too_many_arguments)]
async fn reconnect(
    client: &Client,
    url: String,
    t0: Instant,
    at: Duration,
    others: Vec<Edit>,
    timeout: Duration,
    done_tx: mpsc::UnboundedSender<()>,
    mut close: watch::Receiver<bool>,
) -> Outcome {
    let mut out = Outcome::default();
    tokio::time::sleep_until((t0 + at).into()).await;
    let give_up = t0 + at + timeout;
    let result = async {
        let mut ws = loop {
            match tokio_tungstenite::connect_async_with_config(
                url.as_str(),
                Some(wire::ws_config()),
                true,
            )
            .await
            {
                Ok((ws, _)) => break ws,
                Err(e) if Instant::now() + Duration::from_millis(100) < give_up => {
                    let _ = e;
                    out.retries += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e).context("reconnect"),
            }
        };
        out.connected = Some(t0.elapsed());
        let sv = client.doc.transact().state_vector();
        send(&mut ws, wire::step1_frame(&sv)).await?;
        if holds_all(&client.doc, &others) {
            out.delivered = Some(t0.elapsed());
        }
        let mut reported = false;
        let deadline = tokio::time::sleep_until(give_up.into());
        tokio::pin!(deadline);
        loop {
            if !reported && out.done().is_some() {
                reported = true;
                let _ = done_tx.send(());
            }
            let msg = tokio::select! {
                msg = ws.next() => msg,
                () = &mut deadline, if !reported => bail!("not done within {timeout:?} of its reconnect"),
                _ = close.changed() => {
                    let _ = ws.close(None).await;
                    return Ok(());
                }
            };
            let data = match msg {
                Some(Ok(Message::Binary(data))) => data,
                Some(Ok(Message::Close(c))) => {
                    out.disconnected = true;
                    bail!("closed after the restart: {c:?}");
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => {
                    out.disconnected = true;
                    return Err(e).context("after the restart");
                }
                None => {
                    out.disconnected = true;
                    bail!("connection ended after the restart");
                }
            };
            if let Some(count) = wire::durable_ack(&data) {
                // Its step 2, the first document message on this connection, holds the edit.
                if count >= 1 && out.durable.is_none() {
                    out.durable = Some(t0.elapsed());
                }
                continue;
            }
            match wire::parse(&data)? {
                Frame::Step1(sv) => {
                    let sv = wire::decode_sv(sv)?;
                    let diff = client.doc.transact().encode_state_as_update_v1(&sv);
                    send(&mut ws, wire::step2_frame(diff)).await?;
                }
                Frame::Step2(u) | Frame::Update(u) => {
                    apply(&client.doc, u)?;
                    if out.delivered.is_none() && holds_all(&client.doc, &others) {
                        out.delivered = Some(t0.elapsed());
                    }
                }
                _ => {}
            }
        }
    }
    .await;
    if let Err(e) = result {
        out.error = Some(format!(
            "board {} client {}: {e:#}",
            client.board, client.index
        ));
    }
    if out.done().is_none() {
        let _ = done_tx.send(()); // counted as finished (failed) all the same
    }
    out
}

/// Runs the storm against `server`, which must be running; it is running again (freshly
/// started after a crash) when this returns.
pub async fn run<S: Restartable>(server: &mut S, cfg: &StormConfig) -> anyhow::Result<StormResult> {
    anyhow::ensure!(cfg.boards >= 1 && cfg.clients_per_board >= 2);
    let n = cfg.boards * cfg.clients_per_board;
    let base = format!("ws://{}/v1/sync", server.addr());
    let mut docs = docs(n).into_iter();
    let mut clients: Vec<Client> = (0..n)
        .map(|k| Client {
            board: k / cfg.clients_per_board,
            index: k % cfg.clients_per_board,
            doc: docs.next().unwrap_or_default(),
        })
        .collect();

    // 1. Online: connect, sync, one acknowledged note each.
    let permits = Arc::new(Semaphore::new(cfg.connect_concurrency.max(1)));
    let mut joins = Vec::with_capacity(n);
    for mut client in clients.drain(..) {
        let url = url(&base, &cfg.prefix, client.board);
        let permits = permits.clone();
        joins.push(tokio::spawn(async move {
            let permit = permits.acquire_owned().await;
            let ws = online(&mut client, &url).await;
            drop(permit);
            (client, ws)
        }));
    }
    let mut holders = Vec::with_capacity(n);
    for join in joins {
        let (client, ws) = join.await.context("a client task failed")?;
        let ws = ws.with_context(|| {
            format!("board {} client {}: first sync", client.board, client.index)
        })?;
        holders.push(tokio::spawn(async move {
            let code = hold(&client, ws).await;
            (client, code)
        }));
    }

    // 2. The server stops gracefully.
    let stop = server.stop().await.context("graceful stop")?;
    let mut closed_1012 = 0;
    for holder in holders {
        let (client, code) = tokio::time::timeout(Duration::from_secs(10), holder)
            .await
            .context("a socket stayed open after the server stopped")?
            .context("a client task failed")?;
        closed_1012 += u64::from(code == Some(1012));
        clients.push(client);
    }
    clients.sort_by_key(|c| (c.board, c.index));

    // 3. Offline edits.
    let mut edits: HashMap<usize, Vec<Edit>> = HashMap::new();
    for c in &clients {
        add_note(&c.doc, &offline_id(c.board, c.index), 100 + c.index);
        let client = c.doc.client_id().get();
        let end = c.doc.transact().state_vector().get(&c.doc.client_id());
        edits.entry(c.board).or_default().push(Edit { client, end });
    }

    // 4. Restart; reconnects spread over `spread`, boards interleaved.
    let start = server.start().await.context("restart")?;
    let t0 = Instant::now();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let (close_tx, close_rx) = watch::channel(false);
    let clients: Vec<Arc<Client>> = clients.into_iter().map(Arc::new).collect();
    let mut tasks = Vec::with_capacity(n);
    for c in &clients {
        let slot = c.index * cfg.boards + c.board;
        let at = cfg.spread.mul_f64(slot as f64 / n as f64);
        let others: Vec<Edit> = edits[&c.board]
            .iter()
            .filter(|e| e.client != c.doc.client_id().get())
            .copied()
            .collect();
        let c = c.clone();
        let url = url(&base, &cfg.prefix, c.board);
        let (done_tx, close_rx, timeout) = (done_tx.clone(), close_rx.clone(), cfg.timeout);
        tasks.push(tokio::spawn(async move {
            reconnect(&c, url, t0, at, others, timeout, done_tx, close_rx).await
        }));
    }
    drop(done_tx);
    let mut finished = 0;
    let all = tokio::time::timeout(cfg.spread + cfg.timeout + Duration::from_secs(5), async {
        while finished < n && done_rx.recv().await.is_some() {
            finished += 1;
        }
    })
    .await;
    let (peak_rss_kb, rss_kb) = match server.pid() {
        Some(pid) => (
            crate::procfs::hwm_kb(pid).unwrap_or(0),
            crate::procfs::rss_kb(pid).unwrap_or(0),
        ),
        None => (0, 0),
    };
    let _ = close_tx.send(true);
    let mut outcomes = Vec::with_capacity(n);
    for task in tasks {
        outcomes.push(task.await.context("a client task failed")?);
    }
    if all.is_err() {
        tracing_free_note(&format!("only {finished} of {n} clients finished"));
    }

    // 6. Independently: crash, start, read every board.
    server.crash().await.context("kill -9")?;
    server.start().await.context("start after kill -9")?;
    let mut verified = 0u64;
    for b in 0..cfg.boards {
        let path = format!("/v1/boards/{}", board_name(&cfg.prefix, b));
        let r = crate::try_http_request(
            server.addr(),
            None,
            "GET",
            &path,
            &[],
            b"",
            Duration::from_secs(30),
        )
        .await
        .map_err(|e| anyhow::anyhow!("GET {path}: {e}"))?;
        if r.status != 200 {
            bail!("GET {path}: HTTP {}", r.status);
        }
        let ids = object_ids(&r.body)?;
        verified += (0..cfg.clients_per_board)
            .filter(|&i| ids.contains(&offline_id(b, i)))
            .count() as u64;
    }

    Ok(summarize(
        cfg,
        &outcomes,
        StormResult {
            stop_ms: ms(stop),
            start_ms: ms(start),
            closed_1012,
            peak_rss_kb,
            rss_kb,
            verified_edits: verified,
            expected_edits: n as u64,
            ..StormResult::default()
        },
    ))
}

fn tracing_free_note(s: &str) {
    eprintln!("  storm: {s}");
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The ids of the objects in a board's JSON (`GET /v1/boards/{id}`).
fn object_ids(body: &[u8]) -> anyhow::Result<std::collections::HashSet<String>> {
    let json: serde_json::Value = serde_json::from_slice(body).context("board JSON")?;
    Ok(json
        .get("objects")
        .and_then(serde_json::Value::as_array)
        .context("no objects array")?
        .iter()
        .filter_map(|o| o.get("id")?.as_str().map(str::to_owned))
        .collect())
}

/// The per-client outcomes folded into the result.
fn summarize(cfg: &StormConfig, outcomes: &[Outcome], mut r: StormResult) -> StormResult {
    let n = outcomes.len();
    let durable: Vec<Duration> = outcomes.iter().filter_map(|o| o.durable).collect();
    let delivered: Vec<Duration> = outcomes.iter().filter_map(|o| o.delivered).collect();
    let done: Vec<Duration> = outcomes.iter().filter_map(Outcome::done).collect();
    let after_connect: Vec<Duration> = outcomes
        .iter()
        .filter_map(|o| Some(o.done()?.saturating_sub(o.connected?)))
        .collect();
    let durable_after_connect: Vec<Duration> = outcomes
        .iter()
        .filter_map(|o| Some(o.durable?.saturating_sub(o.connected?)))
        .collect();
    r.durable_after_connect = Spread::of(&durable_after_connect);
    r.clients = n as u64;
    r.boards = cfg.boards as u64;
    r.spread_ms = ms(cfg.spread);
    r.done = done.len() as u64;
    r.failures = (n - done.len()) as u64;
    r.disconnects = outcomes.iter().filter(|o| o.disconnected).count() as u64;
    r.connect_retries = outcomes.iter().map(|o| o.retries).sum();
    r.all_done_ms = done.iter().max().map_or(0.0, |d| ms(*d));
    r.durable = Spread::of(&durable);
    r.delivered = Spread::of(&delivered);
    r.done_at = Spread::of(&done);
    r.done_after_connect = Spread::of(&after_connect);
    r.first_error = outcomes.iter().find_map(|o| o.error.clone());
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_is_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let s = Spread::of(&samples);
        assert_eq!((s.p50_ms, s.p99_ms, s.max_ms), (50.0, 99.0, 100.0));
        assert_eq!(Spread::of(&[]), Spread::default());
        let one = Spread::of(&[Duration::from_millis(7)]);
        assert_eq!((one.p50_ms, one.p99_ms, one.max_ms), (7.0, 7.0, 7.0));
    }

    #[test]
    fn a_client_is_done_when_durable_and_delivered_and_failures_count() {
        let cfg = StormConfig {
            boards: 1,
            clients_per_board: 3,
            spread: Duration::from_secs(1),
            prefix: "p".into(),
            connect_concurrency: 1,
            timeout: Duration::from_secs(1),
        };
        let at = Duration::from_millis;
        let outcomes = [
            Outcome {
                connected: Some(at(10)),
                durable: Some(at(30)),
                delivered: Some(at(50)),
                ..Outcome::default()
            },
            Outcome {
                connected: Some(at(20)),
                durable: Some(at(80)),
                delivered: Some(at(40)),
                retries: 2,
                ..Outcome::default()
            },
            Outcome {
                connected: Some(at(30)),
                durable: Some(at(60)),
                delivered: None,
                disconnected: true,
                error: Some("gone".into()),
                ..Outcome::default()
            },
        ];
        let r = summarize(&cfg, &outcomes, StormResult::default());
        assert_eq!((r.clients, r.done, r.failures, r.disconnects), (3, 2, 1, 1));
        assert_eq!(r.connect_retries, 2);
        assert_eq!(r.all_done_ms, 80.0);
        assert_eq!(r.done_at.max_ms, 80.0);
        assert_eq!(r.done_after_connect.max_ms, 60.0);
        assert_eq!(r.durable_after_connect.max_ms, 60.0);
        assert_eq!(r.durable.max_ms, 80.0);
        assert_eq!(r.first_error.as_deref(), Some("gone"));
        assert!(!r.ok());
    }

    /// The server in process on a SQLite database, restarted on the same port.
    struct InProcess {
        db: crate::SqliteDb,
        addr: SocketAddr,
        server: Option<crate::TestServer>,
    }

    impl Restartable for InProcess {
        fn addr(&self) -> SocketAddr {
            self.addr
        }
        fn pid(&self) -> Option<u32> {
            None
        }
        async fn start(&mut self) -> anyhow::Result<Duration> {
            let t0 = Instant::now();
            let listener = tokio::net::TcpListener::bind(self.addr).await?;
            let store = self.db.open().await;
            self.server = Some(crate::TestServer::start_on(
                listener,
                crate::config(),
                store,
            ));
            Ok(t0.elapsed())
        }
        async fn stop(&mut self) -> anyhow::Result<Duration> {
            let t0 = Instant::now();
            if let Some(server) = self.server.take() {
                server.shutdown().await?;
            }
            Ok(t0.elapsed())
        }
        async fn crash(&mut self) -> anyhow::Result<()> {
            drop(self.server.take());
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_small_storm_ends_with_every_offline_edit_durable_and_delivered() {
        let db = crate::SqliteDb::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let store = db.open().await;
        let server = crate::TestServer::start_on(listener, crate::config(), store);
        let mut server = InProcess {
            db,
            addr,
            server: Some(server),
        };
        let cfg = StormConfig {
            boards: 3,
            clients_per_board: 3,
            spread: Duration::from_millis(200),
            prefix: "storm-test".into(),
            connect_concurrency: 4,
            timeout: Duration::from_secs(10),
        };
        let r = run(&mut server, &cfg).await.unwrap();
        assert!(r.ok(), "{r:#?}");
        assert_eq!((r.clients, r.done, r.verified_edits), (9, 9, 9));
        assert_eq!(r.closed_1012, 9, "the stop closes every socket with 1012");
        assert!(r.durable.max_ms > 0.0 && r.delivered.max_ms > 0.0);
        server.stop().await.unwrap();
    }

    #[test]
    fn offline_edits_are_seen_through_the_state_vector() {
        let d = docs(3);
        add_note(&d[1], "offline-0-1", 1);
        let e1 = Edit {
            client: d[1].client_id().get(),
            end: d[1].transact().state_vector().get(&d[1].client_id()),
        };
        add_note(&d[2], "offline-0-2", 2);
        let e2 = Edit {
            client: d[2].client_id().get(),
            end: d[2].transact().state_vector().get(&d[2].client_id()),
        };
        assert!(!holds_all(&d[0], &[e1, e2]));
        let u1 = d[1]
            .transact()
            .encode_state_as_update_v1(&yrs::StateVector::default());
        apply(&d[0], &u1).unwrap();
        assert!(holds_all(&d[0], &[e1]) && !holds_all(&d[0], &[e1, e2]));
        let u2 = d[2]
            .transact()
            .encode_state_as_update_v1(&yrs::StateVector::default());
        apply(&d[0], &u2).unwrap();
        assert!(holds_all(&d[0], &[e1, e2]));
    }
}
