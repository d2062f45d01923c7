//! Fan-out load generator for y-websocket servers (see `scripts/bench-fanout.sh`).
//!
//! Every client is a Rust y-protocols peer over tokio-tungstenite with its own `yrs::Doc`. It
//! connects to `<url-base>/<board>`, sends SyncStep1, answers the server's SyncStep1 with
//! SyncStep2 and counts as synced when a SyncStep2 arrives. With `--dialect hocuspocus` it
//! speaks `@hocuspocus/provider`'s framing instead: one socket per client to `<url-base>`
//! itself, an Auth message (empty token) for its board, then the same messages with the board's
//! name in front; it answers pings and ignores the dialect's SyncStatus and Auth answers. Then, per board, the draggers each
//! create one note in the root map `objects` (a `Y.Map` of fields) and set its `pos` (`[x, y]`)
//! at a fixed rate, sending each transaction as a `[0, 2, update]` frame.
//!
//! Fan-out latency: each dragger logs, per update, the end of its clock range (its state vector
//! entry after the transaction) and the send `Instant`. A receiver decodes every incoming update
//! with yrs, takes the end of the inserted clock range per client id, and attributes every
//! logged update of that sender up to that clock as delivered now (this also copes with servers
//! that merge updates). Receivers decode but do not apply updates (less load-generator CPU).
//!
//! Deliveries are counted per receiver: expected = updates sent by the other clients of the board
//! × receivers. After the measured window the senders stop and the load generator drains: it
//! waits for the outstanding deliveries as long as they keep coming (giving up after
//! `--drain-timeout` without any, or `--drain-max` in all), so a slow pipeline is not reported
//! as a lost one. Missing deliveries, a receiver incomplete after the drain (each is named, with
//! what it lacked) or disconnects make the run fail (exit code 1), loudly.
//!
//! Besides latency, each receiver measures its longest stall (`harness::stall`): the longest
//! time it went without receiving anything while owed an update; the run reports the longest
//! over receivers, so one stalled receiver cannot hide behind a good p99.
//!
//! With `--doc-api y-sweet`, boards are y-sweet documents: created and authorized through
//! y-sweet's HTTP API, then joined at the WebSocket URL it returns (see [`ysweet`]).
//!
//! Subcommands: `run` (a fan-out scenario), `idle` (memory per idle connection), `storm` (the
//! reconnect storm: clients with offline edits reconnecting within a second of a restart of our
//! server; `harness::storm`), `large` (a large board joined by one client, then many at once;
//! `harness::large`), `fsync` (the disk's bare fsync cost in a directory), `table` (markdown
//! tables from the JSON lines written with `--json-out`). `storm` and `large` start our server
//! themselves (`--server-bin`), since they stop, kill and restart it.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use harness::report::{self, IncompleteReceiver, ScenarioResult};
use harness::stall::Receiver;
use harness::wire::{self, Frame, hocuspocus};
use harness::{fsync, procfs};
use hdrhistogram::Histogram;
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, watch};
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use yrs::{Any, Doc, Map, MapPrelim, MapRef, ReadTxn, Transact};

#[derive(Debug, Parser)]
#[command(about = "Fan-out load generator for y-websocket servers")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Fan-out scenario: boards × clients, some dragging at a rate.
    Run(RunArgs),
    /// Idle memory: many synced, silent connections spread over boards.
    Idle(IdleArgs),
    /// Reconnect storm: clients with offline edits reconnect within a second of a restart.
    Storm(StormArgs),
    /// Large board: one client joins, then many at once.
    Large(LargeArgs),
    /// (For `large`.) RSS growth of this process applying a Yjs update file to a yrs doc.
    #[command(hide = true)]
    DocMemory {
        /// A Yjs update v1.
        file: PathBuf,
    },
    /// The disk's bare fsync cost: 4 KiB writes made durable, in a directory.
    Fsync(FsyncArgs),
    /// Print markdown tables from JSON-lines result files.
    Table(TableArgs),
}

#[derive(Debug, clap::Args)]
struct Common {
    /// WebSocket URL prefix; the board name is appended as a path segment. With
    /// `--doc-api y-sweet`: the server's HTTP address (`http://host:port`).
    #[arg(long, env = "LOADGEN_URL_BASE")]
    url_base: String,
    /// How a board's WebSocket URL is found.
    #[arg(long, value_enum, default_value_t = DocApi::Path)]
    doc_api: DocApi,
    /// Label of the server under test (`relay`, `reference`, `ours`).
    #[arg(long, default_value = "server")]
    server: String,
    /// PID of the server process, for CPU time and RSS from /proc; several, comma-separated
    /// (the nodes of a cluster), are added up.
    #[arg(long, value_delimiter = ',')]
    server_pid: Vec<u32>,
    /// WebSocket URL prefix for the dragging clients only (another node of a cluster, say);
    /// default: `--url-base`.
    #[arg(long)]
    sender_url_base: Option<String>,
    /// Scenario label.
    #[arg(long, default_value = "custom")]
    scenario: String,
    /// Board name prefix (default: `bench-<scenario>-<pid>`).
    #[arg(long)]
    board_prefix: Option<String>,
    /// Connections doing their handshake + initial sync at the same time.
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
    /// Append the result as one JSON line to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
    /// The wire dialect the clients speak.
    #[arg(long, value_enum, default_value_t = Dialect::YWebsocket)]
    dialect: Dialect,
}

/// How clients frame their messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Dialect {
    /// y-websocket: one board per socket, addressed by the URL path.
    YWebsocket,
    /// `@hocuspocus/provider`: the board's name in front of every frame, after an Auth message.
    Hocuspocus,
}

/// How a board's WebSocket URL is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum DocApi {
    /// `<url-base>/<board>` (y-websocket servers); the Hocuspocus dialect connects to
    /// `<url-base>` itself.
    Path,
    /// y-sweet's document API, as `@y-sweet/client` uses it (see [`ysweet`]).
    YSweet,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    #[command(flatten)]
    common: Common,
    /// Boards.
    #[arg(long, default_value_t = 1)]
    boards: usize,
    /// Clients per board.
    #[arg(long, default_value_t = 10)]
    clients: usize,
    /// Dragging clients per board.
    #[arg(long, default_value_t = 1)]
    draggers: usize,
    /// Updates per second per dragger.
    #[arg(long, default_value_t = 60.0)]
    rate: f64,
    /// Measured window (seconds).
    #[arg(long, default_value_t = 8.0)]
    duration: f64,
    /// Dragging before the measured window (seconds).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// After the window, give up waiting for outstanding deliveries when none arrived for this
    /// long (seconds).
    #[arg(long, default_value_t = 5.0)]
    drain_timeout: f64,
    /// After the window, wait at most this long in all for outstanding deliveries, even while
    /// they keep arriving (seconds).
    #[arg(long, default_value_t = 10.0)]
    drain_max: f64,
}

#[derive(Debug, clap::Args)]
struct IdleArgs {
    #[command(flatten)]
    common: Common,
    /// Boards.
    #[arg(long, default_value_t = 100)]
    boards: usize,
    /// Connections in total (spread round-robin over the boards).
    #[arg(long, default_value_t = 5000)]
    connections: usize,
    /// Pause before each RSS reading (seconds).
    #[arg(long, default_value_t = 2.0)]
    settle: f64,
}

/// Our server, started by the load generator itself on a fresh SQLite database.
#[derive(Debug, clap::Args)]
struct OursArgs {
    /// Our server's binary (`target/release/sync-server`).
    #[arg(long)]
    server_bin: PathBuf,
    /// Where the database goes (a fresh directory inside it, removed afterwards).
    #[arg(long, default_value = "/tmp")]
    db_dir: PathBuf,
    /// Pin the server to this CPU (`taskset -c`).
    #[arg(long)]
    server_core: Option<usize>,
    /// Extra flags for `sync-server serve`, space-separated.
    #[arg(long, allow_hyphen_values = true, default_value = "")]
    server_args: String,
    /// The server's standard error goes here.
    #[arg(long)]
    server_log: Option<PathBuf>,
    /// Label of the server under test.
    #[arg(long, default_value = "ours")]
    server: String,
    /// Scenario label.
    #[arg(long)]
    scenario: Option<String>,
    /// Append the result as one JSON line to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
}

impl OursArgs {
    /// The command line of `sync-server <sub> ...`, pinned if asked.
    fn command(&self, sub: &[&str]) -> Vec<String> {
        let mut cmd = Vec::new();
        if let Some(core) = self.server_core {
            cmd.extend(["taskset".to_string(), "-c".to_string(), core.to_string()]);
        }
        cmd.push(self.server_bin.display().to_string());
        cmd.extend(sub.iter().map(|s| (*s).to_string()));
        cmd
    }

    /// `serve` on 127.0.0.1 at the port placeholder, on `db`, with the per-address and
    /// per-connection limits lifted (every client of the load generator comes from one
    /// address), and the extra flags.
    fn serve(&self, db: &str) -> Vec<String> {
        let mut cmd = self.command(&[
            "serve",
            "--bind",
            "127.0.0.1",
            "--port",
            harness::process::PORT,
            "--database-url",
            db,
            "--max-connections-per-address",
            "0",
            "--message-rate",
            "0",
            "--http-rate",
            "0",
        ]);
        cmd.extend(self.server_args.split_whitespace().map(str::to_owned));
        cmd
    }
}

#[derive(Debug, clap::Args)]
struct StormArgs {
    #[command(flatten)]
    ours: OursArgs,
    /// Boards.
    #[arg(long, default_value_t = 200)]
    boards: usize,
    /// Clients per board.
    #[arg(long, default_value_t = 10)]
    clients: usize,
    /// Reconnects spread uniformly over this long after the restart (seconds).
    #[arg(long, default_value_t = 1.0)]
    spread: f64,
    /// A client not done this long after its reconnect fails (seconds).
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    /// Connections doing their first sync at the same time (before the restart).
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
}

#[derive(Debug, clap::Args)]
struct LargeArgs {
    #[command(flatten)]
    ours: OursArgs,
    /// The board's encoded size (MB, 10^6 bytes).
    #[arg(long, default_value_t = 50.0)]
    size_mb: f64,
    /// Seed of the generated board.
    #[arg(long, default_value_t = 19)]
    seed: u64,
    /// Clients joining at once after the first.
    #[arg(long, default_value_t = 50)]
    joiners: usize,
    /// A join whose whole state has not arrived after this long failed (seconds;
    /// y-websocket drops a socket silent for 30 s).
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    /// Pause before each steady RSS reading (seconds).
    #[arg(long, default_value_t = 2.0)]
    settle: f64,
}

#[derive(Debug, clap::Args)]
struct FsyncArgs {
    /// Directory of the probe files: where the benchmark's databases live.
    #[arg(long)]
    dir: PathBuf,
    /// Writes per method.
    #[arg(long, default_value_t = 500)]
    iterations: usize,
    /// Append the result as one JSON line (`"kind": "fsync"`) to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct TableArgs {
    /// JSON-lines files written with `--json-out`.
    files: Vec<PathBuf>,
}

/// Phases every client follows, driven by the orchestrator through a watch channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Sync,
    Setup,
    Warmup,
    Measure,
    Stop,
    Close,
}

/// One update a dragger sent.
#[derive(Debug, Clone, Copy)]
struct Sent {
    /// The dragger's clock after the transaction (exclusive end of the update's range).
    end: u32,
    at: Instant,
    measured: bool,
}

/// What all clients of one board share.
#[derive(Debug)]
struct BoardShared {
    url: String,
    /// Where the dragging clients connect.
    sender_url: String,
    /// The board's name (Hocuspocus frames carry it).
    name: String,
    dialect: Dialect,
    clients: usize,
    /// yrs client id → sender slot.
    senders: HashMap<u64, usize>,
    /// Per sender slot, the updates sent so far, in clock order.
    logs: Vec<Mutex<Vec<Sent>>>,
}

impl BoardShared {
    /// Deliveries expected so far: every update to every other client of the board.
    fn expected(&self) -> u64 {
        let sent: usize = self.logs.iter().map(|l| lock(l).len()).sum();
        (sent * (self.clients - 1)) as u64
    }

    /// When update `i` of sender `slot` was sent, if it was.
    fn sent_at(&self, slot: usize, i: usize) -> Option<std::time::Instant> {
        let log = lock(self.logs.get(slot)?);
        log.get(i).map(|s| s.at.into_std())
    }

    /// Updates sender `slot` has sent.
    fn sent(&self, slot: usize) -> usize {
        self.logs.get(slot).map_or(0, |l| lock(l).len())
    }
}

#[derive(Debug, Default)]
struct Counters {
    synced: AtomicU64,
    notes: AtomicU64,
    failed: AtomicU64,
    delivered: AtomicU64,
    disconnects: AtomicU64,
    retries: AtomicU64,
    first_error: Mutex<Option<String>>,
    /// Start of the measured window: stalls count from here.
    measure_start: OnceLock<std::time::Instant>,
    /// End of the final drain: what arrives later is not counted (a receiver still lacking
    /// something then is incomplete).
    cutoff: OnceLock<std::time::Instant>,
}

impl Counters {
    fn note_error(&self, e: &str) {
        let mut first = lock(&self.first_error);
        if first.is_none() {
            *first = Some(e.to_string());
        }
    }
}

#[derive(Debug)]
struct Outcome {
    hist: Histogram<u64>,
    measured: u64,
    error: Option<String>,
    /// `<board>/client-<n>`.
    name: String,
    board: Arc<BoardShared>,
    /// What it received, and its longest stall.
    rx: Receiver,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn new_hist() -> Histogram<u64> {
    #[allow(clippy::expect_used)] // constant, valid bounds
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds")
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// One simulated client.
#[derive(Debug)]
struct Client {
    board: Arc<BoardShared>,
    doc: Doc,
    /// Sender slot if this client drags.
    slot: Option<usize>,
    /// Phase offset of this dragger's ticks, as a fraction of the period.
    stagger: f64,
    rate: f64,
    phase: watch::Receiver<Phase>,
    counters: Arc<Counters>,
    permits: Arc<Semaphore>,
    /// Index of this client on its board (draggers first).
    index: usize,
    /// Per sender slot, the end of the clock range received so far.
    last_seen: Vec<u32>,
    rx: Receiver,
    hist: Histogram<u64>,
    measured: u64,
    note: Option<MapRef>,
    drags: u64,
}

impl Client {
    async fn run(mut self) -> Outcome {
        let error = match self.session().await {
            Ok(()) => None,
            Err(e) => Some(format!("{e:#}")),
        };
        Outcome {
            name: format!("{}/client-{}", self.board.name, self.index),
            hist: self.hist,
            measured: self.measured,
            error,
            board: self.board,
            rx: self.rx,
        }
    }

    async fn connect_and_sync(&mut self) -> anyhow::Result<Ws> {
        let permits = self.permits.clone();
        let _permit = permits.acquire().await?;
        let url = if self.slot.is_some() {
            &self.board.sender_url
        } else {
            &self.board.url
        };
        let (mut ws, _) = tokio_tungstenite::connect_async_with_config(
            url.as_str(),
            Some(wire::ws_config()),
            true,
        )
        .await
        .with_context(|| format!("connect {url}"))?;
        if self.board.dialect == Dialect::Hocuspocus {
            let auth = hocuspocus::auth_frame(&self.board.name, "");
            ws.send(Message::Binary(auth)).await?;
        }
        let sv = self.doc.transact().state_vector();
        ws.send(Message::Binary(self.wrap(wire::step1_frame(&sv))))
            .await?;
        let deadline = tokio::time::sleep(Duration::from_secs(60));
        tokio::pin!(deadline);
        loop {
            let msg = tokio::select! {
                msg = ws.next() => msg,
                () = &mut deadline => bail!("no SyncStep2 within 60 s"),
            };
            match msg {
                Some(Ok(Message::Binary(data))) => {
                    let Some(body) = self.unwrap(&mut ws, &data).await? else {
                        continue;
                    };
                    if let Frame::Step2(_) = wire::parse(body)? {
                        return Ok(ws);
                    }
                    self.on_frame(&mut ws, body, Instant::now()).await?;
                }
                Some(Ok(Message::Close(c))) => bail!("closed during sync: {c:?}"),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e).context("during sync"),
                None => bail!("connection ended during sync"),
            }
        }
    }

    async fn session(&mut self) -> anyhow::Result<()> {
        let mut ws = match self.connect_and_sync().await {
            Ok(ws) => ws,
            Err(e) => {
                self.counters.note_error(&format!("{e:#}"));
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
        };
        self.counters.synced.fetch_add(1, Ordering::Relaxed);
        let mut ticker: Option<Interval> = None;
        loop {
            tokio::select! {
                msg = ws.next() => {
                    let now = Instant::now();
                    match msg {
                        Some(Ok(Message::Binary(data))) => {
                            if let Some(body) = self.unwrap(&mut ws, &data).await? {
                                self.on_frame(&mut ws, body, now).await?;
                            }
                        }
                        Some(Ok(Message::Close(c))) => return self.lost(format!("server closed: {c:?}")),
                        Some(Ok(_)) => {}
                        Some(Err(e)) => return self.lost(format!("read error: {e}")),
                        None => return self.lost("connection ended".to_string()),
                    }
                }
                () = tick(&mut ticker) => {
                    if *self.phase.borrow() < Phase::Stop {
                        self.drag(&mut ws).await?;
                    }
                }
                changed = self.phase.changed() => {
                    let phase = if changed.is_ok() { *self.phase.borrow_and_update() } else { Phase::Close };
                    if phase == Phase::Close {
                        let _ = ws.close(None).await;
                        let _ = tokio::time::timeout(Duration::from_secs(2), async {
                            while let Some(Ok(_)) = ws.next().await {}
                        })
                        .await;
                        return Ok(());
                    }
                    if self.slot.is_some() && phase >= Phase::Setup && self.note.is_none() {
                        self.create_note(&mut ws).await?;
                        self.counters.notes.fetch_add(1, Ordering::Relaxed);
                    }
                    if self.slot.is_some() && (phase == Phase::Warmup || phase == Phase::Measure) && ticker.is_none() {
                        let period = Duration::from_secs_f64(1.0 / self.rate);
                        let start = Instant::now() + period.mul_f64(self.stagger);
                        let mut t = tokio::time::interval_at(start, period);
                        t.set_missed_tick_behavior(MissedTickBehavior::Burst);
                        ticker = Some(t);
                    }
                    if phase >= Phase::Stop {
                        ticker = None;
                    }
                }
            }
        }
    }

    fn lost(&self, why: String) -> anyhow::Result<()> {
        if *self.phase.borrow() < Phase::Close {
            self.counters.disconnects.fetch_add(1, Ordering::Relaxed);
            bail!(why);
        }
        Ok(())
    }

    /// A y-websocket frame as this client's dialect sends it.
    fn wrap(&self, frame: bytes::Bytes) -> bytes::Bytes {
        match self.board.dialect {
            Dialect::YWebsocket => frame,
            Dialect::Hocuspocus => hocuspocus::doc_frame(&self.board.name, &frame),
        }
    }

    /// The y-websocket frame inside a received frame, or `None` for the dialect's own messages
    /// (a Hocuspocus ping is answered here; a refusal of the board fails the client).
    async fn unwrap<'d>(&self, ws: &mut Ws, data: &'d [u8]) -> anyhow::Result<Option<&'d [u8]>> {
        if self.board.dialect == Dialect::YWebsocket {
            return Ok(Some(data));
        }
        match hocuspocus::parse(data)? {
            hocuspocus::ServerFrame::Yjs { body, .. } => Ok(Some(body)),
            hocuspocus::ServerFrame::Ping => {
                let pong = bytes::Bytes::from_static(&[hocuspocus::PONG]);
                ws.send(Message::Binary(pong)).await?;
                Ok(None)
            }
            hocuspocus::ServerFrame::Auth { sub: 1, text, .. } => {
                bail!("the server refused the board: {text:?}")
            }
            _ => Ok(None),
        }
    }

    async fn on_frame(&mut self, ws: &mut Ws, data: &[u8], now: Instant) -> anyhow::Result<()> {
        match wire::parse(data)? {
            Frame::Step1(sv) => {
                let sv = wire::decode_sv(sv)?;
                let update = self.doc.transact().encode_state_as_update_v1(&sv);
                let frame = self.wrap(wire::step2_frame(update));
                ws.send(Message::Binary(frame)).await?;
            }
            Frame::Step2(u) | Frame::Update(u) => self.track(u, now)?,
            Frame::Awareness | Frame::QueryAwareness | Frame::Other(_) => {}
        }
        Ok(())
    }

    /// Attributes the updates an incoming update covers to their senders' logs.
    fn track(&mut self, update: &[u8], now: Instant) -> anyhow::Result<()> {
        if update.len() <= 2 {
            return Ok(()); // [0, 0]: empty update
        }
        let now_std = now.into_std();
        if self.counters.cutoff.get().is_some_and(|&c| now_std >= c) {
            return Ok(()); // after the drain: too late to count
        }
        let mut first = true;
        for (client, end) in wire::insertion_ends(update)? {
            let Some(&slot) = self.board.senders.get(&client) else {
                continue;
            };
            if Some(slot) == self.slot {
                continue; // our own update echoed back
            }
            if end <= self.last_seen[slot] {
                continue;
            }
            if first {
                // The stall ending now is measured before anything of this message counts.
                first = false;
                let board = &self.board;
                let since = self.counters.measure_start.get().copied();
                self.rx
                    .delivery(now_std, since, |slot, i| board.sent_at(slot, i));
            }
            let log = lock(&self.board.logs[slot]);
            let from = self.rx.next(slot).min(log.len());
            let to = from + log[from..].partition_point(|s| s.end <= end);
            for s in &log[from..to] {
                if s.measured {
                    let us = now.saturating_duration_since(s.at).as_micros();
                    self.hist
                        .saturating_record(u64::try_from(us).unwrap_or(u64::MAX));
                    self.measured += 1;
                }
            }
            drop(log);
            self.counters
                .delivered
                .fetch_add((to - from) as u64, Ordering::Relaxed);
            self.last_seen[slot] = end;
            self.rx.advance(slot, to);
        }
        Ok(())
    }

    /// Sends one transaction's update and logs it.
    async fn send_logged(&mut self, ws: &mut Ws, update: Vec<u8>) -> anyhow::Result<()> {
        let Some(slot) = self.slot else {
            return Ok(());
        };
        let end = self
            .doc
            .transact()
            .state_vector()
            .get(&self.doc.client_id());
        let frame = Message::Binary(self.wrap(wire::update_frame(&update)));
        let measured = *self.phase.borrow() == Phase::Measure;
        lock(&self.board.logs[slot]).push(Sent {
            end,
            at: Instant::now(),
            measured,
        });
        ws.send(frame).await.context("send update")?;
        Ok(())
    }

    async fn create_note(&mut self, ws: &mut Ws) -> anyhow::Result<()> {
        let objects = self.doc.get_or_insert_map("objects");
        let id = format!(
            "note-{}-{}",
            self.slot.unwrap_or(0),
            self.doc.client_id().get()
        );
        let update = {
            let mut txn = self.doc.transact_mut();
            let note = objects.insert(
                &mut txn,
                id,
                MapPrelim::from([
                    ("kind", Any::from("sticky")),
                    ("pos", Any::from(vec![100.0, 100.0])),
                    ("size", Any::from(vec![200.0, 200.0])),
                    ("z", Any::from("a0")),
                    ("text", Any::from("bench")),
                    ("color", Any::from("#ffeb3b")),
                ]),
            );
            self.note = Some(note);
            txn.encode_update_v1()
        };
        self.send_logged(ws, update).await
    }

    async fn drag(&mut self, ws: &mut Ws) -> anyhow::Result<()> {
        let Some(note) = self.note.clone() else {
            return Ok(());
        };
        self.drags += 1;
        let n = self.drags as f64;
        let pos = vec![100.0 + (n * 0.37) % 800.0, 100.0 + (n * 0.23) % 600.0];
        let update = {
            let mut txn = self.doc.transact_mut();
            note.insert(&mut txn, "pos", Any::from(pos));
            txn.encode_update_v1()
        };
        self.send_logged(ws, update).await
    }
}

async fn tick(ticker: &mut Option<Interval>) {
    match ticker {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

fn board_prefix(c: &Common) -> String {
    c.board_prefix
        .clone()
        .unwrap_or_else(|| format!("bench-{}-{}", c.scenario, std::process::id()))
}

/// `n` docs with distinct random 32-bit client ids, as Yjs draws them (`random.uint32()`):
/// yrs would draw 53-bit ids, which servers built on older yrs (y-sweet 0.9.1: yrs 0.19 reads a
/// client id as a `u32`) truncate, so their updates would come back under another id. Also,
/// updates are then as large as a browser's.
fn yjs_docs(n: usize) -> Vec<Doc> {
    let mut ids = std::collections::HashSet::with_capacity(n);
    while ids.len() < n {
        // The low 32 bits of a v4 UUID are random.
        ids.insert(uuid::Uuid::new_v4().as_u128() as u32);
    }
    ids.into_iter()
        .map(|id| Doc::with_client_id(u64::from(id)))
        .collect()
}

#[derive(Debug)]
struct Fleet {
    boards: Vec<Arc<BoardShared>>,
    counters: Arc<Counters>,
    phase: watch::Sender<Phase>,
    tasks: Vec<tokio::task::JoinHandle<Outcome>>,
    permits: Arc<Semaphore>,
    /// Clients spawned so far per board (the next one's index).
    spawned: Vec<usize>,
}

/// How the drain after the measured window ended.
#[derive(Debug, Clone, Copy)]
struct Drained {
    /// Expected deliveries that had not arrived.
    missing: u64,
    took: Duration,
}

/// What the clients measured, once they are all closed.
#[derive(Debug)]
struct Closed {
    hist: Histogram<u64>,
    measured: u64,
    errors: Vec<String>,
    /// Every client as a receiver: its name, board, and what it received.
    receivers: Vec<(String, Arc<BoardShared>, Receiver)>,
}

/// The WebSocket URL of board `name` on the server at `base`.
async fn board_url(common: &Common, base: &str, name: &str) -> anyhow::Result<String> {
    match (common.doc_api, common.dialect) {
        (DocApi::Path, Dialect::YWebsocket) => Ok(format!("{base}/{name}")),
        (DocApi::Path, Dialect::Hocuspocus) => Ok(base.to_owned()),
        (DocApi::YSweet, Dialect::YWebsocket) => ysweet::board_url(base, name).await,
        (DocApi::YSweet, Dialect::Hocuspocus) => {
            bail!("y-sweet speaks y-websocket's framing, not the Hocuspocus dialect")
        }
    }
}

impl Fleet {
    async fn new(
        common: &Common,
        boards: usize,
        clients: usize,
        draggers: usize,
    ) -> anyhow::Result<(Self, Vec<Vec<Doc>>)> {
        let prefix = board_prefix(common);
        let base = common.url_base.trim_end_matches('/');
        let sender_base = common
            .sender_url_base
            .as_deref()
            .unwrap_or(base)
            .trim_end_matches('/');
        let mut shared = Vec::with_capacity(boards);
        let mut docs = Vec::with_capacity(boards);
        for b in 0..boards {
            let board_docs = yjs_docs(clients);
            let senders = board_docs
                .iter()
                .take(draggers)
                .enumerate()
                .map(|(slot, d)| (d.client_id().get(), slot))
                .collect();
            let name = format!("{prefix}-{b}");
            let url = board_url(common, base, &name).await?;
            let sender_url = if sender_base == base {
                url.clone()
            } else {
                board_url(common, sender_base, &name).await?
            };
            shared.push(Arc::new(BoardShared {
                url,
                sender_url,
                name,
                dialect: common.dialect,
                clients,
                senders,
                logs: (0..draggers).map(|_| Mutex::new(Vec::new())).collect(),
            }));
            docs.push(board_docs);
        }
        let (phase, _) = watch::channel(Phase::Sync);
        let fleet = Fleet {
            spawned: vec![0; shared.len()],
            boards: shared,
            counters: Arc::default(),
            phase,
            tasks: Vec::new(),
            permits: Arc::new(Semaphore::new(common.connect_concurrency.max(1))),
        };
        Ok((fleet, docs))
    }

    fn spawn(&mut self, board: usize, doc: Doc, slot: Option<usize>, stagger: f64, rate: f64) {
        let b = &self.boards[board];
        let index = self.spawned[board];
        self.spawned[board] += 1;
        let client = Client {
            board: b.clone(),
            doc,
            slot,
            stagger,
            rate,
            phase: self.phase.subscribe(),
            counters: self.counters.clone(),
            permits: self.permits.clone(),
            index,
            last_seen: vec![0; b.logs.len()],
            rx: Receiver::new(b.logs.len(), slot),
            hist: new_hist(),
            measured: 0,
            note: None,
            drags: 0,
        };
        self.tasks.push(tokio::spawn(client.run()));
    }

    async fn wait_synced(&self, n: u64) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            let synced = self.counters.synced.load(Ordering::Relaxed);
            let failed = self.counters.failed.load(Ordering::Relaxed);
            if failed > 0 {
                let first = lock(&self.counters.first_error).clone().unwrap_or_default();
                bail!(
                    "{failed} connection(s) failed to connect or sync ({synced} synced); first error: {first}"
                );
            }
            if synced >= n {
                eprintln!(
                    "  {n} clients synced in {:.2} s",
                    start.elapsed().as_secs_f64()
                );
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(180) {
                bail!("only {synced} of {n} clients synced after 180 s");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn expected(&self) -> u64 {
        self.boards.iter().map(|b| b.expected()).sum()
    }

    /// Waits until every expected delivery arrived, for as long as deliveries keep arriving:
    /// gives up when none arrived for `idle`, or after `max` in all (a pipeline that is slow but
    /// alive is not reported as having lost deliveries, and a stuck one ends the run).
    async fn drain(&self, idle: Duration, max: Duration) -> Drained {
        let start = Instant::now();
        let mut progress_at = start;
        let mut seen = self.counters.delivered.load(Ordering::Relaxed);
        loop {
            let expected = self.expected();
            let delivered = self.counters.delivered.load(Ordering::Relaxed);
            if delivered != seen {
                seen = delivered;
                progress_at = Instant::now();
            }
            if delivered >= expected || progress_at.elapsed() > idle || start.elapsed() > max {
                return Drained {
                    missing: expected.saturating_sub(delivered),
                    took: start.elapsed(),
                };
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Ends counting: what arrives from now on is too late. Returns the deliveries missing now.
    fn cut_off(&self) -> u64 {
        let _ = self.counters.cutoff.set(std::time::Instant::now());
        let delivered = self.counters.delivered.load(Ordering::Relaxed);
        self.expected().saturating_sub(delivered)
    }

    fn set_phase(&self, p: Phase) {
        self.phase.send_replace(p);
    }

    async fn close(mut self) -> Closed {
        self.set_phase(Phase::Close);
        let mut closed = Closed {
            hist: new_hist(),
            measured: 0,
            errors: Vec::new(),
            receivers: Vec::new(),
        };
        for t in self.tasks.drain(..) {
            match t.await {
                Ok(o) => {
                    let _ = closed.hist.add(&o.hist);
                    closed.measured += o.measured;
                    if let Some(e) = o.error {
                        closed.errors.push(e);
                    }
                    closed.receivers.push((o.name, o.board, o.rx));
                }
                Err(e) => closed.errors.push(format!("client task failed: {e}")),
            }
        }
        closed
    }
}

/// The longest stall over every receiver of a window that started at `since`, the open ones
/// running to `end` (the end of the drain), and the receivers still lacking updates at `end`.
fn stalls(
    receivers: &[(String, Arc<BoardShared>, Receiver)],
    since: std::time::Instant,
    end: std::time::Instant,
) -> (Duration, Vec<IncompleteReceiver>) {
    let mut longest = Duration::ZERO;
    let mut incomplete = Vec::new();
    for (name, board, rx) in receivers {
        let stall = rx.longest_at(end, since, |slot, i| board.sent_at(slot, i));
        longest = longest.max(stall);
        let lacked = rx.lacking(|slot| board.sent(slot));
        if lacked > 0 {
            incomplete.push(IncompleteReceiver {
                receiver: name.clone(),
                lacked,
                longest_stall_us: micros(stall),
            });
        }
    }
    (longest, incomplete)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// CPU ticks of every server process together (`None` if none is given or one is gone).
fn server_ticks(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter()
        .map(|&p| procfs::cpu_ticks(p).ok())
        .sum::<Option<u64>>()
}

fn server_rss(pids: &[u32]) -> u64 {
    pids.iter().filter_map(|&p| procfs::rss_kb(p).ok()).sum()
}

fn self_ticks() -> u64 {
    procfs::cpu_ticks(std::process::id()).unwrap_or(0)
}

async fn run(args: &RunArgs) -> anyhow::Result<ScenarioResult> {
    let c = &args.common;
    anyhow::ensure!(args.clients >= 2, "need at least 2 clients per board");
    anyhow::ensure!(args.draggers <= args.clients, "more draggers than clients");
    anyhow::ensure!(args.rate > 0.0, "rate must be positive");
    let clk = procfs::clk_tck();
    let rss_before = server_rss(&c.server_pid);
    let (mut fleet, docs) = Fleet::new(c, args.boards, args.clients, args.draggers).await?;
    let total_draggers = (args.boards * args.draggers).max(1);
    for (b, board_docs) in docs.into_iter().enumerate() {
        for (i, doc) in board_docs.into_iter().enumerate() {
            let slot = (i < args.draggers).then_some(i);
            let stagger = (b * args.draggers + i) as f64 / total_draggers as f64;
            fleet.spawn(b, doc, slot, stagger, args.rate);
        }
    }
    let total = (args.boards * args.clients) as u64;
    fleet.wait_synced(total).await?;

    fleet.set_phase(Phase::Setup);
    let draggers_total = (args.boards * args.draggers) as u64;
    let setup_start = Instant::now();
    while fleet.counters.notes.load(Ordering::Relaxed) < draggers_total {
        if setup_start.elapsed() > Duration::from_secs(30) {
            bail!("draggers did not create their notes within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let drain_idle = Duration::from_secs_f64(args.drain_timeout);
    let drain_max = Duration::from_secs_f64(args.drain_max.max(args.drain_timeout));
    let setup = fleet.drain(drain_idle, drain_max).await;
    if setup.missing > 0 {
        eprintln!(
            "  !!! {} setup deliveries (note creation) still missing",
            setup.missing
        );
    }
    fleet.set_phase(Phase::Warmup);
    tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;

    let cpu0 = server_ticks(&c.server_pid);
    let self0 = self_ticks();
    let machine0 = procfs::machine_busy_ticks().unwrap_or(0);
    let t0 = Instant::now();
    let _ = fleet.counters.measure_start.set(t0.into_std());
    fleet.set_phase(Phase::Measure);
    tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
    fleet.set_phase(Phase::Stop);
    let window = t0.elapsed().as_secs_f64();
    let drained = fleet.drain(drain_idle, drain_max).await;
    let missing = fleet.cut_off();
    let drain_end = std::time::Instant::now();
    let cpu1 = server_ticks(&c.server_pid);
    let self1 = self_ticks();
    let machine1 = procfs::machine_busy_ticks().unwrap_or(0);
    let elapsed = t0.elapsed().as_secs_f64();
    let rss_after = server_rss(&c.server_pid);
    let expected = fleet.expected();
    let delivered = fleet.counters.delivered.load(Ordering::Relaxed);
    let disconnects = fleet.counters.disconnects.load(Ordering::Relaxed);
    let updates_sent: u64 = fleet
        .boards
        .iter()
        .flat_map(|b| b.logs.iter())
        .map(|l| lock(l).iter().filter(|s| s.measured).count() as u64)
        .sum();
    let fleet_retries = fleet.counters.retries.load(Ordering::Relaxed);
    let Closed {
        hist,
        measured,
        errors,
        receivers,
    } = fleet.close().await;
    for e in errors.iter().take(5) {
        eprintln!("  client error: {e}");
    }
    let (longest_stall, incomplete) = stalls(&receivers, t0.into_std(), drain_end);
    let server_cpu_ms = match (cpu0, cpu1) {
        (Some(a), Some(b)) => procfs::ticks_to_ms(b.saturating_sub(a), clk),
        _ => 0.0,
    };
    let loadgen_cpu_ms = procfs::ticks_to_ms(self1.saturating_sub(self0), clk);
    let machine_ms = procfs::ticks_to_ms(machine1.saturating_sub(machine0), clk);
    let other_cpu_pct = ((machine_ms - server_cpu_ms - loadgen_cpu_ms) / (elapsed * 10.0)).max(0.0);
    let description = format!(
        "{} board(s) × {} clients, {} dragging per board at {} Hz",
        args.boards, args.clients, args.draggers, args.rate
    );
    Ok(ScenarioResult {
        server: c.server.clone(),
        scenario: c.scenario.clone(),
        description,
        boards: args.boards,
        clients_per_board: args.clients,
        draggers_per_board: args.draggers,
        rate_hz: args.rate,
        duration_s: window,
        updates_sent,
        deliveries: measured,
        deliveries_per_s: measured as f64 / window,
        expected_total: expected,
        delivered_total: delivered,
        missing,
        disconnects,
        p50_us: hist.value_at_quantile(0.50),
        p99_us: hist.value_at_quantile(0.99),
        p999_us: hist.value_at_quantile(0.999),
        max_us: hist.max(),
        server_cpu_ms,
        cpu_ms_per_1k: if measured > 0 {
            server_cpu_ms * 1000.0 / measured as f64
        } else {
            0.0
        },
        server_rss_before_kb: rss_before,
        server_rss_after_kb: rss_after,
        loadgen_cpu_ms,
        other_cpu_pct,
        connect_retries: fleet_retries,
        longest_stall_us: micros(longest_stall),
        drain_ms: drained.took.as_secs_f64() * 1000.0,
        incomplete,
        ..ScenarioResult::default()
    })
}

async fn idle(args: &IdleArgs) -> anyhow::Result<ScenarioResult> {
    let c = &args.common;
    anyhow::ensure!(args.boards >= 1 && args.connections >= args.boards);
    if let Ok(Some(limit)) = procfs::nofile_limit()
        && limit < args.connections as u64 + 64
    {
        bail!(
            "open files limit {limit} < {} connections + 64: raise it (ulimit -n) first",
            args.connections
        );
    }
    let settle = Duration::from_secs_f64(args.settle);
    let per_board = args.connections.div_ceil(args.boards);
    let (mut fleet, docs) = Fleet::new(c, args.boards, per_board, 0).await?;
    let rss0 = server_rss(&c.server_pid);
    // Connection i goes to board i % boards: first one per board, then the rest.
    let mut docs: Vec<std::vec::IntoIter<Doc>> = docs.into_iter().map(Vec::into_iter).collect();
    let mut spawned = 0usize;
    for (b, it) in docs.iter_mut().enumerate() {
        if let Some(doc) = it.next() {
            fleet.spawn(b, doc, None, 0.0, 1.0);
            spawned += 1;
        }
    }
    fleet.wait_synced(spawned as u64).await?;
    tokio::time::sleep(settle).await;
    let rss1 = server_rss(&c.server_pid);
    'outer: loop {
        let mut any = false;
        for (b, it) in docs.iter_mut().enumerate() {
            if spawned >= args.connections {
                break 'outer;
            }
            if let Some(doc) = it.next() {
                fleet.spawn(b, doc, None, 0.0, 1.0);
                spawned += 1;
                any = true;
            }
        }
        if !any {
            break;
        }
    }
    fleet.wait_synced(spawned as u64).await?;
    tokio::time::sleep(settle).await;
    let rss2 = server_rss(&c.server_pid);
    let disconnects = fleet.counters.disconnects.load(Ordering::Relaxed);
    let connect_retries = fleet.counters.retries.load(Ordering::Relaxed);
    let Closed { errors, .. } = fleet.close().await;
    for e in errors.iter().take(5) {
        eprintln!("  client error: {e}");
    }
    let n = spawned as f64;
    Ok(ScenarioResult {
        server: c.server.clone(),
        scenario: c.scenario.clone(),
        description: format!(
            "{spawned} idle connections over {} boards (after initial sync)",
            args.boards
        ),
        boards: args.boards,
        clients_per_board: per_board,
        disconnects,
        server_rss_before_kb: rss0,
        server_rss_after_kb: rss2,
        connect_retries,
        idle_connections: Some(spawned as u64),
        idle_kb_per_conn: (!c.server_pid.is_empty()).then(|| (rss2 as f64 - rss0 as f64) / n),
        idle_marginal_kb_per_conn: (!c.server_pid.is_empty() && spawned > args.boards)
            .then(|| (rss2 as f64 - rss1 as f64) / (n - args.boards as f64)),
        idle_rss_one_per_board_kb: (!c.server_pid.is_empty()).then_some(rss1),
        ..ScenarioResult::default()
    })
}

fn emit(common: &Common, r: &ScenarioResult) -> anyhow::Result<bool> {
    if r.idle_connections.is_some() {
        eprintln!(
            "[{} {}] {}: RSS {:.1} -> {:.1} MiB, {:.2} KiB/conn (marginal {:.2}), disconnects {}",
            r.server,
            r.scenario,
            r.description,
            r.server_rss_before_kb as f64 / 1024.0,
            r.server_rss_after_kb as f64 / 1024.0,
            r.idle_kb_per_conn.unwrap_or(0.0),
            r.idle_marginal_kb_per_conn.unwrap_or(0.0),
            r.disconnects
        );
    } else {
        eprintln!(
            "[{} {}] {}: {} updates, {:.0} deliveries/s, p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms, \
             longest stall {:.2} ms, server CPU {:.0} ms = {:.2} ms/1k deliveries, RSS {:.1} MiB, loadgen CPU {:.0} ms, \
             other processes {:.0}% of a core, missing {}, disconnects {}, connect retries {}, drain {:.0} ms",
            r.server,
            r.scenario,
            r.description,
            r.updates_sent,
            r.deliveries_per_s,
            r.p50_us as f64 / 1000.0,
            r.p99_us as f64 / 1000.0,
            r.p999_us as f64 / 1000.0,
            r.max_us as f64 / 1000.0,
            r.longest_stall_us as f64 / 1000.0,
            r.server_cpu_ms,
            r.cpu_ms_per_1k,
            r.server_rss_after_kb as f64 / 1024.0,
            r.loadgen_cpu_ms,
            r.other_cpu_pct,
            r.missing,
            r.disconnects,
            r.connect_retries,
            r.drain_ms
        );
    }
    let line = serde_json::to_string(r)?;
    println!("{line}");
    if let Some(path) = &common.json_out {
        append_line(path, &line)?;
    }
    let ok = r.missing == 0 && r.disconnects == 0 && r.incomplete.is_empty();
    if !ok {
        eprintln!(
            "!!!!!! [{} {}] FAILED: {} of {} expected deliveries MISSING, {} receivers incomplete after a {:.0} ms drain, {} disconnects !!!!!!",
            r.server,
            r.scenario,
            r.missing,
            r.expected_total,
            r.incomplete.len(),
            r.drain_ms,
            r.disconnects
        );
        for i in &r.incomplete {
            eprintln!(
                "!!!   {} lacked {} updates, longest stall {:.2} ms",
                i.receiver,
                i.lacked,
                i.longest_stall_us as f64 / 1000.0
            );
        }
    }
    Ok(ok)
}

/// A fresh directory for a database inside `dir`, and its SQLite URL.
fn fresh_db(dir: &std::path::Path, prefix: &str) -> anyhow::Result<(tempfile::TempDir, String)> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(dir)
        .with_context(|| format!("cannot make a directory in {}", dir.display()))?;
    let url = format!("sqlite://{}/boards.db", tmp.path().display());
    Ok((tmp, url))
}

async fn storm(args: &StormArgs) -> anyhow::Result<ScenarioResult> {
    let o = &args.ours;
    let needed = (args.boards * args.clients) as u64 + 64;
    if let Ok(Some(limit)) = procfs::nofile_limit()
        && limit < needed
    {
        bail!("open files limit {limit} < {needed}: raise it (ulimit -n) first");
    }
    let (_dir, db) = fresh_db(&o.db_dir, "storm-")?;
    let port = harness::process::free_port()?;
    let mut server =
        harness::process::ServerProcess::new(o.serve(&db), port, o.server_log.clone())?;
    server.start().await.context("first start")?;
    let cfg = harness::storm::StormConfig {
        boards: args.boards,
        clients_per_board: args.clients,
        spread: Duration::from_secs_f64(args.spread),
        prefix: format!("storm-{}", std::process::id()),
        connect_concurrency: args.connect_concurrency,
        timeout: Duration::from_secs_f64(args.timeout),
    };
    let result = harness::storm::run(&mut server, &cfg).await;
    let _ = server.stop().await;
    let s = result?;
    Ok(ScenarioResult {
        server: o.server.clone(),
        scenario: o.scenario.clone().unwrap_or_else(|| "storm".into()),
        description: format!(
            "reconnect storm: {} clients on {} boards, offline edit each, reconnecting over {} s after a restart",
            s.clients, s.boards, args.spread
        ),
        boards: args.boards,
        clients_per_board: args.clients,
        disconnects: s.disconnects,
        connect_retries: s.connect_retries,
        server_rss_after_kb: s.rss_kb,
        storm: Some(s),
        ..ScenarioResult::default()
    })
}

/// `loadgen doc-memory FILE` in a process of its own: what a yrs doc holding the update costs,
/// at rest and at its peak while loading ([`doc_memory`]), in KiB.
async fn yrs_doc_kb(file: &std::path::Path) -> anyhow::Result<(u64, u64)> {
    let exe = std::env::current_exe()?;
    let out = tokio::process::Command::new(exe)
        .arg("doc-memory")
        .arg(file)
        .output()
        .await?;
    if !out.status.success() {
        bail!(
            "doc-memory failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = String::from_utf8(out.stdout)?;
    let mut numbers = out.split_whitespace().map(str::parse::<u64>);
    match (numbers.next(), numbers.next()) {
        (Some(doc), Some(peak)) => Ok((doc?, peak?)),
        _ => bail!("doc-memory printed {out:?}"),
    }
}

/// Prints two numbers (KiB): the RSS the doc holds once the update is applied, and the peak
/// RSS growth of reading the file, decoding it and applying it: what any server that keeps the
/// board in a yrs doc needs at least while it loads the board.
fn doc_memory(file: &std::path::Path) -> anyhow::Result<()> {
    use yrs::updates::decoder::Decode;
    let pid = std::process::id();
    let start = procfs::rss_kb(pid)?;
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let before = procfs::rss_kb(pid)?;
    let doc = harness::new_doc();
    {
        let update = yrs::Update::decode_v1(&bytes)?;
        doc.transact_mut().apply_update(update)?;
    }
    let after = procfs::rss_kb(pid)?;
    let peak = procfs::hwm_kb(pid)?;
    drop(bytes);
    println!(
        "{} {}",
        after.saturating_sub(before),
        peak.saturating_sub(start)
    );
    drop(doc);
    Ok(())
}

async fn large(args: &LargeArgs) -> anyhow::Result<ScenarioResult> {
    let o = &args.ours;
    let (dir, db) = fresh_db(&o.db_dir, "large-")?;
    let t = std::time::Instant::now();
    let board = harness::large::whiteboard((args.size_mb * 1e6) as usize, args.seed);
    eprintln!(
        "  large: generated {} bytes, {} objects, {} characters of text in {:.1} s",
        board.update.len(),
        board.objects,
        board.text_chars,
        t.elapsed().as_secs_f64()
    );
    let file = dir.path().join("board.ydoc");
    std::fs::write(&file, &board.update)?;
    let mut r = harness::large::LargeResult {
        encoded_bytes: board.update.len() as u64,
        objects: board.objects as u64,
        text_chars: board.text_chars as u64,
        ..Default::default()
    };
    drop(board);
    (r.yrs_doc_kb, r.yrs_load_peak_kb) = yrs_doc_kb(&file).await.unwrap_or_else(|e| {
        eprintln!("  large: doc memory not measured: {e:#}");
        (0, 0)
    });
    // Imported as a user would a file this size: `sync-server import` (HTTP refuses bodies
    // over --max-message-bytes, 16 MiB by default).
    let name = "large-board";
    let import = o.command(&["import", "--board", name, "--database-url", &db]);
    let t = std::time::Instant::now();
    let status = tokio::process::Command::new(&import[0])
        .args(&import[1..])
        .arg(&file)
        .status()
        .await?;
    if !status.success() {
        bail!("sync-server import failed");
    }
    r.import_ms = t.elapsed().as_secs_f64() * 1000.0;
    let port = harness::process::free_port()?;
    let mut server =
        harness::process::ServerProcess::new(o.serve(&db), port, o.server_log.clone())?;
    server.start().await?;
    tokio::time::sleep(Duration::from_secs_f64(args.settle)).await;
    let url = format!("ws://127.0.0.1:{port}/v1/sync/{name}");
    let result = harness::large::joins(
        &url,
        server.pid(),
        args.joiners,
        Duration::from_secs_f64(args.timeout),
        Duration::from_secs_f64(args.settle),
        &mut r,
    )
    .await;
    let _ = server.stop().await;
    result?;
    Ok(ScenarioResult {
        server: o.server.clone(),
        scenario: o.scenario.clone().unwrap_or_else(|| "large".into()),
        description: format!(
            "large board: {:.1} MB encoded, 1 client then {} at once",
            r.encoded_bytes as f64 / 1e6,
            args.joiners
        ),
        boards: 1,
        clients_per_board: args.joiners + 1,
        server_rss_before_kb: r.rss_idle_kb,
        server_rss_after_kb: r.rss_steady_kb,
        large: Some(r),
        ..ScenarioResult::default()
    })
}

/// Prints a storm or large result and appends its JSON line; whether it met its bar (every
/// client done and every edit found; every joiner in time).
fn emit_scenario(json_out: Option<&std::path::Path>, r: &ScenarioResult) -> anyhow::Result<bool> {
    let line = serde_json::to_string(r)?;
    let ok = if let Some(s) = &r.storm {
        eprintln!(
            "[{} {}] {}: all done {:.0} ms; durable p50/p99/max {:.0}/{:.0}/{:.0} ms; delivered {:.0}/{:.0}/{:.0} ms; done {}/{} (failures {}, disconnects {}, retries {}); stop {:.0} ms, start {:.0} ms; peak RSS {:.1} MiB; edits found after kill -9: {}/{}{}",
            r.server,
            r.scenario,
            r.description,
            s.all_done_ms,
            s.durable.p50_ms,
            s.durable.p99_ms,
            s.durable.max_ms,
            s.delivered.p50_ms,
            s.delivered.p99_ms,
            s.delivered.max_ms,
            s.done,
            s.clients,
            s.failures,
            s.disconnects,
            s.connect_retries,
            s.stop_ms,
            s.start_ms,
            s.peak_rss_kb as f64 / 1024.0,
            s.verified_edits,
            s.expected_edits,
            s.first_error
                .as_ref()
                .map_or(String::new(), |e| format!("; first error: {e}")),
        );
        s.ok()
    } else if let Some(l) = &r.large {
        eprintln!(
            "[{} {}] {}: first client received {:.0} ms, applied {:.0} ms; {} of {} joiners in time (p50/p99/max {:.0}/{:.0}/{:.0} ms); RSS idle {:.1}, one client {:.1}, max sampled {:.1}, peak {:.1}, steady {:.1}, after close {:.1} MiB; yrs doc {:.1} MiB, its load peak {:.1} MiB{}",
            r.server,
            r.scenario,
            r.description,
            l.first.received_ms,
            l.first.applied_ms.unwrap_or(0.0),
            l.joined,
            l.joiners,
            l.join.p50_ms,
            l.join.p99_ms,
            l.join.max_ms,
            l.rss_idle_kb as f64 / 1024.0,
            l.rss_one_client_kb as f64 / 1024.0,
            l.rss_max_sampled_kb as f64 / 1024.0,
            l.peak_rss_kb as f64 / 1024.0,
            l.rss_steady_kb as f64 / 1024.0,
            l.rss_after_close_kb as f64 / 1024.0,
            l.yrs_doc_kb as f64 / 1024.0,
            l.yrs_load_peak_kb as f64 / 1024.0,
            l.first_error
                .as_ref()
                .map_or(String::new(), |e| format!("; first error: {e}")),
        );
        l.timeouts == 0 && l.joined == l.joiners && l.first_error.is_none()
    } else {
        true
    };
    println!("{line}");
    if let Some(path) = json_out {
        append_line(path, &line)?;
    }
    Ok(ok)
}

fn append_line(path: &std::path::Path, line: &str) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    writeln!(f, "{line}").with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

fn fsync_probe(args: &FsyncArgs) -> anyhow::Result<()> {
    let r = fsync::measure(&args.dir, args.iterations)
        .with_context(|| format!("fsync probe in {}", args.dir.display()))?;
    for m in &r.methods {
        eprintln!(
            "[fsync {}] {}: median {:.3} ms, p99 {:.3} ms, max {:.3} ms ({} × {} bytes)",
            r.dir, m.method, m.p50_ms, m.p99_ms, m.max_ms, r.iterations, r.block_bytes
        );
    }
    let line = serde_json::to_string(&r)?;
    println!("{line}");
    if let Some(path) = &args.json_out {
        append_line(path, &line)?;
    }
    Ok(())
}

fn table(args: &TableArgs) -> anyhow::Result<()> {
    let mut results = Vec::new();
    let mut fsyncs = Vec::new();
    for path in &args.files {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let parsed = report::parse_line(line)
                .with_context(|| format!("{}:{}: not a result line", path.display(), n + 1))?;
            match parsed {
                report::Line::Scenario(r) => results.push(*r),
                report::Line::Fsync(f) => fsyncs.push(f),
            }
        }
    }
    print!("{}", report::markdown(&results, &fsyncs));
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let ok = match cli.cmd {
        Cmd::Table(args) => {
            table(&args)?;
            true
        }
        Cmd::Fsync(args) => {
            fsync_probe(&args)?;
            true
        }
        Cmd::Run(args) => {
            let r = rt.block_on(run(&args))?;
            emit(&args.common, &r)?
        }
        Cmd::Idle(args) => {
            let r = rt.block_on(idle(&args))?;
            emit(&args.common, &r)?
        }
        Cmd::Storm(args) => {
            let r = rt.block_on(storm(&args))?;
            emit_scenario(args.ours.json_out.as_deref(), &r)?
        }
        Cmd::Large(args) => {
            let r = rt.block_on(large(&args))?;
            emit_scenario(args.ours.json_out.as_deref(), &r)?
        }
        Cmd::DocMemory { file } => {
            doc_memory(&file)?;
            true
        }
    };
    if !ok {
        std::process::exit(1);
    }
    Ok(())
}

/// y-sweet's document API (0.9.1), used as `@y-sweet/client` uses it: `POST /doc/new` with
/// `{"docId": board}` creates the document (or finds it), `POST /doc/<board>/auth` answers a
/// client token `{url, docId, token?}`, and the client's y-websocket provider connects to
/// `<url>/<docId>` (so the document's name is twice in the path: `/d/<doc>/ws/<doc>`), with
/// `?token=` when the server has an auth key. Run without one (as in the benchmark), it gives
/// no token and every client has full access. The frames are y-websocket's.
mod ysweet {
    use std::net::SocketAddr;
    use std::time::Duration;

    use anyhow::{Context, bail};
    use serde::Deserialize;

    /// y-sweet's answer to `POST /doc/<id>/auth`.
    #[derive(Debug, Deserialize)]
    struct ClientToken {
        url: String,
        #[serde(rename = "docId")]
        doc_id: String,
        token: Option<String>,
    }

    /// How long one HTTP exchange may take.
    const WITHIN: Duration = Duration::from_secs(10);

    /// Creates board `board` on the y-sweet server at `base` (`http://host:port`) and returns
    /// the WebSocket URL its clients connect to.
    pub(super) async fn board_url(base: &str, board: &str) -> anyhow::Result<String> {
        // y-sweet's alphabet for document names; it also keeps the request line well-formed.
        if board.is_empty()
            || !board
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            bail!("y-sweet document names are [A-Za-z0-9_-]+, not {board:?}");
        }
        let addr = resolve(base).await?;
        let create = serde_json::json!({ "docId": board }).to_string();
        post_json(addr, "/doc/new", &create).await?;
        let auth = serde_json::json!({ "authorization": "full" }).to_string();
        let body = post_json(addr, &format!("/doc/{board}/auth"), &auth).await?;
        let token: ClientToken =
            serde_json::from_slice(&body).context("y-sweet's client token is not as expected")?;
        let mut url = format!("{}/{}", token.url.trim_end_matches('/'), token.doc_id);
        if let Some(t) = token.token {
            url.push_str("?token=");
            url.push_str(&query_escape(&t));
        }
        Ok(url)
    }

    async fn resolve(base: &str) -> anyhow::Result<SocketAddr> {
        let rest = ["http://", "ws://"]
            .iter()
            .find_map(|scheme| base.strip_prefix(scheme))
            .with_context(|| format!("y-sweet's address must be http://host:port, not {base}"))?;
        let authority = rest.split('/').next().unwrap_or(rest);
        tokio::net::lookup_host(authority)
            .await
            .with_context(|| format!("cannot resolve {authority}"))?
            .next()
            .with_context(|| format!("{authority} resolves to no address"))
    }

    async fn post_json(addr: SocketAddr, path: &str, body: &str) -> anyhow::Result<Vec<u8>> {
        let headers = [("Content-Type", "application/json")];
        let r =
            harness::try_http_request(addr, None, "POST", path, &headers, body.as_bytes(), WITHIN)
                .await
                .map_err(|e| anyhow::anyhow!("POST {path}: {e}"))?;
        if r.status != 200 {
            bail!("POST {path}: HTTP {}: {}", r.status, r.text());
        }
        Ok(r.body)
    }

    /// Percent-encodes all but the URL's unreserved characters.
    fn query_escape(s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        for b in s.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                out.push(char::from(b));
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    }
}
