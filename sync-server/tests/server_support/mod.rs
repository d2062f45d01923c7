//! Harness for the server integration tests: an in-process server, a y-websocket test client
//! holding its own `yrs::Doc`, raw WebSocket and HTTP helpers, and a store wrapper that can be
//! told to fail or slow down.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::{SinkExt, StreamExt};
use sync_server::ids::{BoardId, VersionId};
use sync_server::protocol;
use sync_server::server::{Config, ServerError, run_with_store};
use sync_server::storage::{
    Backend, BoardInfo, Boards, NewRun, NewSnapshot, NewUpdate, NewVersion, PendingCompaction,
    RunRecord, RunResult, Runs, Snapshots, Storage, StorageError, StoredBoard, UpdateLog, Version,
    VersionInfo, Versions,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use yrs::block::ClientID;
use yrs::encoding::read::Read as _;
use yrs::sync::awareness::AwarenessUpdateEntry;
use yrs::sync::{AwarenessUpdate, Message as YMessage, SyncMessage};
use yrs::updates::decoder::{Decode, DecoderV1};
use yrs::updates::encoder::Encode;
use yrs::{Doc, GetString, Map, Out, ReadTxn, StateVector, Transact, Update};

/// How long any single wait may take before the test fails.
pub(crate) const WAIT: Duration = Duration::from_secs(5);

pub(crate) type Socket = WebSocketStream<TcpStream>;

// ---------------------------------------------------------------------------------------------
// Server

/// A server configuration for tests: defaults with a short shutdown timeout.
pub(crate) fn config() -> Config {
    Config {
        database_url: "memory:".into(),
        shutdown_timeout: Duration::from_secs(5),
        ..Config::default()
    }
}

/// A server running in-process on 127.0.0.1 with a random port.
pub(crate) struct TestServer {
    pub(crate) addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<Result<(), ServerError>>>,
}

impl TestServer {
    pub(crate) async fn start(config: Config, store: Arc<dyn Storage>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(run_with_store(config, store, listener, async move {
            let _ = stopped.await;
        }));
        Self {
            addr,
            stop: Some(stop),
            handle: Some(handle),
        }
    }

    /// Triggers a graceful shutdown without waiting for it.
    pub(crate) fn trigger_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Shuts down and returns what `run_with_store` returned.
    pub(crate) async fn shutdown(mut self) -> Result<(), ServerError> {
        self.trigger_shutdown();
        let handle = self.handle.take().unwrap();
        tokio::time::timeout(Duration::from_secs(10), handle)
            .await
            .expect("run_with_store returns within 10 s of the shutdown signal")
            .expect("the server task does not panic")
    }

    pub(crate) fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(handle) = &self.handle {
            handle.abort();
        }
    }
}

pub(crate) async fn memory_store() -> Arc<dyn Storage> {
    sync_server::storage::open("memory:", &Default::default())
        .await
        .unwrap()
}

/// A SQLite database in a temporary directory.
pub(crate) struct SqliteDb {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) url: String,
}

impl SqliteDb {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/boards.db", dir.path().display());
        Self { dir, url }
    }

    pub(crate) async fn open(&self) -> Arc<dyn Storage> {
        sync_server::storage::open(&self.url, &Default::default())
            .await
            .unwrap()
    }
}

// ---------------------------------------------------------------------------------------------
// A store that can be told to fail appends, or to be slow

/// Wraps a store: appends can be made to fail or to take longer, loads to take longer, and
/// calls are counted. Some calls also pass a [`Gate`] (open unless a test closes it), so a test
/// can hold one exactly where it wants and act meanwhile.
#[derive(Debug)]
pub(crate) struct TestStore {
    inner: Arc<dyn Storage>,
    pub(crate) fail_appends: AtomicBool,
    pub(crate) append_delay_ms: AtomicU64,
    pub(crate) load_delay_ms: AtomicU64,
    pub(crate) loads: AtomicUsize,
    pub(crate) ensures: AtomicUsize,
    pub(crate) appends: AtomicUsize,
    /// Passed by `append` after its delay, before it fails or reaches the store.
    pub(crate) append_gate: Gate,
    /// Passed by `delete_board` before it reaches the store.
    pub(crate) delete_gate: Gate,
    /// Passed by `save_version` before it reaches the store.
    pub(crate) save_version_gate: Gate,
    /// Passed by `get_version` before it reaches the store.
    pub(crate) get_version_gate: Gate,
    /// Passed by `create_board` and `create_board_with` after the store created the board,
    /// before they answer.
    pub(crate) created_gate: Gate,
    /// Passed by `begin_compaction` before it reaches the store.
    pub(crate) compaction_gate: Gate,
    /// Passed by `load` after its delay, before it reaches the store.
    pub(crate) load_gate: Gate,
    /// `save_version` calls still to fail (each failure counts one down).
    pub(crate) fail_save_versions: AtomicUsize,
    /// `save_version` calls that failed because of `fail_save_versions`.
    pub(crate) save_version_failures: AtomicUsize,
}

impl TestStore {
    pub(crate) fn new(inner: Arc<dyn Storage>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            fail_appends: AtomicBool::new(false),
            append_delay_ms: AtomicU64::new(0),
            load_delay_ms: AtomicU64::new(0),
            loads: AtomicUsize::new(0),
            ensures: AtomicUsize::new(0),
            appends: AtomicUsize::new(0),
            append_gate: Gate::default(),
            delete_gate: Gate::default(),
            save_version_gate: Gate::default(),
            get_version_gate: Gate::default(),
            created_gate: Gate::default(),
            compaction_gate: Gate::default(),
            load_gate: Gate::default(),
            fail_save_versions: AtomicUsize::new(0),
            save_version_failures: AtomicUsize::new(0),
        })
    }

    pub(crate) fn set_fail_appends(&self, fail: bool) {
        self.fail_appends.store(fail, Ordering::SeqCst);
    }

    pub(crate) fn loads(&self) -> usize {
        self.loads.load(Ordering::SeqCst)
    }

    pub(crate) fn ensures(&self) -> usize {
        self.ensures.load(Ordering::SeqCst)
    }
}

/// Where calls of one kind wait while a test holds them. Open by default; while closed, a call
/// waits until the gate opens or a pass is granted ([`Gate::let_through`]). Counts the calls
/// waiting (a call whose future is dropped while it waits stops counting).
#[derive(Debug, Default)]
pub(crate) struct Gate {
    /// (closed, passes granted while closed)
    state: Mutex<(bool, usize)>,
    waiting: AtomicUsize,
    arrived: AtomicUsize,
    notify: tokio::sync::Notify,
}

impl Gate {
    /// Holds every call that comes from now on.
    pub(crate) fn close(&self) {
        *self.state.lock().unwrap() = (true, 0);
    }

    /// Lets every call through, those waiting included.
    pub(crate) fn open(&self) {
        *self.state.lock().unwrap() = (false, 0);
        self.notify.notify_waiters();
    }

    /// Lets `n` more calls through while the gate stays closed.
    pub(crate) fn let_through(&self, n: usize) {
        self.state.lock().unwrap().1 += n;
        self.notify.notify_waiters();
    }

    /// Calls waiting at the gate now.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Calls that reached the gate so far (open or closed).
    pub(crate) fn arrived(&self) -> usize {
        self.arrived.load(Ordering::SeqCst)
    }

    /// Waits until `n` calls wait at the gate, failing after [`WAIT`].
    pub(crate) async fn wait_for_waiting(&self, n: usize, what: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.waiting() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: {} of {n} calls reached the gate within {WAIT:?}",
                self.waiting()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn pass(&self) {
        self.arrived.fetch_add(1, Ordering::SeqCst);
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let mut counted = None;
        loop {
            // Created before the state is checked: `notify_waiters` wakes it from then on.
            let notified = self.notify.notified();
            {
                let mut state = self.state.lock().unwrap();
                match &mut *state {
                    (false, _) => return,
                    (true, passes) if *passes > 0 => {
                        *passes -= 1;
                        return;
                    }
                    _ => {}
                }
            }
            if counted.is_none() {
                self.waiting.fetch_add(1, Ordering::SeqCst);
                counted = Some(Waiting(&self.waiting));
            }
            notified.await;
        }
    }
}

async fn delay(ms: &AtomicU64) {
    let ms = ms.load(Ordering::SeqCst);
    if ms > 0 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

#[async_trait]
impl Boards for TestStore {
    fn backend(&self) -> Backend {
        self.inner.backend()
    }

    async fn create_board(&self, id: &BoardId) -> Result<BoardInfo, StorageError> {
        let created = self.inner.create_board(id).await;
        self.created_gate.pass().await;
        created
    }

    async fn create_board_with(
        &self,
        id: &BoardId,
        content: &[u8],
    ) -> Result<BoardInfo, StorageError> {
        let created = self.inner.create_board_with(id, content).await;
        self.created_gate.pass().await;
        created
    }

    async fn ensure_board(&self, id: &BoardId) -> Result<BoardInfo, StorageError> {
        self.ensures.fetch_add(1, Ordering::SeqCst);
        self.inner.ensure_board(id).await
    }

    async fn get_board(&self, id: &BoardId) -> Result<Option<BoardInfo>, StorageError> {
        self.inner.get_board(id).await
    }

    async fn list_boards(
        &self,
        after: Option<&BoardId>,
        limit: u32,
    ) -> Result<Vec<BoardInfo>, StorageError> {
        self.inner.list_boards(after, limit).await
    }

    async fn delete_board(&self, id: &BoardId) -> Result<bool, StorageError> {
        self.delete_gate.pass().await;
        self.inner.delete_board(id).await
    }

    async fn close(&self) {
        self.inner.close().await;
    }
}

#[async_trait]
impl UpdateLog for TestStore {
    async fn append(
        &self,
        updates: &[NewUpdate<'_>],
    ) -> Result<Vec<sync_server::ids::Seq>, StorageError> {
        self.appends.fetch_add(1, Ordering::SeqCst);
        delay(&self.append_delay_ms).await;
        self.append_gate.pass().await;
        if self.fail_appends.load(Ordering::SeqCst) {
            return Err(StorageError::Database {
                op: "append",
                source: sqlx::Error::Protocol("injected append failure".into()),
            });
        }
        self.inner.append(updates).await
    }

    async fn load(&self, id: &BoardId) -> Result<StoredBoard, StorageError> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        delay(&self.load_delay_ms).await;
        self.load_gate.pass().await;
        self.inner.load(id).await
    }
}

#[async_trait]
impl Snapshots for TestStore {
    async fn begin_compaction(
        &self,
        id: &BoardId,
        snapshot: NewSnapshot<'_>,
    ) -> Result<Box<dyn PendingCompaction + '_>, StorageError> {
        self.compaction_gate.pass().await;
        self.inner.begin_compaction(id, snapshot).await
    }
}

#[async_trait]
impl Versions for TestStore {
    async fn save_version(
        &self,
        id: &BoardId,
        version: NewVersion<'_>,
    ) -> Result<VersionInfo, StorageError> {
        self.save_version_gate.pass().await;
        let fail = self
            .fail_save_versions
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if fail {
            self.save_version_failures.fetch_add(1, Ordering::SeqCst);
            return Err(StorageError::Database {
                op: "save_version",
                source: sqlx::Error::Protocol("injected save_version failure".into()),
            });
        }
        self.inner.save_version(id, version).await
    }

    async fn list_versions(&self, id: &BoardId) -> Result<Vec<VersionInfo>, StorageError> {
        self.inner.list_versions(id).await
    }

    async fn get_version(
        &self,
        id: &BoardId,
        version: VersionId,
    ) -> Result<Option<Version>, StorageError> {
        self.get_version_gate.pass().await;
        self.inner.get_version(id, version).await
    }

    async fn delete_version(&self, id: &BoardId, version: VersionId) -> Result<bool, StorageError> {
        self.inner.delete_version(id, version).await
    }

    async fn prune_versions(&self, id: &BoardId, keep_auto: u32) -> Result<u64, StorageError> {
        self.inner.prune_versions(id, keep_auto).await
    }
}

#[async_trait]
impl Runs for TestStore {
    async fn start_run(&self, id: &BoardId, run: NewRun<'_>) -> Result<RunRecord, StorageError> {
        self.inner.start_run(id, run).await
    }

    async fn finish_run(
        &self,
        id: &BoardId,
        run: &str,
        result: RunResult<'_>,
    ) -> Result<bool, StorageError> {
        self.inner.finish_run(id, run, result).await
    }

    async fn list_runs(&self, id: &BoardId, limit: u32) -> Result<Vec<RunRecord>, StorageError> {
        self.inner.list_runs(id, limit).await
    }

    async fn get_run(&self, id: &BoardId, run: &str) -> Result<Option<RunRecord>, StorageError> {
        self.inner.get_run(id, run).await
    }

    async fn claim_undo(
        &self,
        id: &BoardId,
        run: &str,
        by: Option<&str>,
    ) -> Result<bool, StorageError> {
        self.inner.claim_undo(id, run, by).await
    }

    async fn save_run_changes(
        &self,
        id: &BoardId,
        run: &str,
        changes: &[u8],
    ) -> Result<bool, StorageError> {
        self.inner.save_run_changes(id, run, changes).await
    }

    async fn release_undo(&self, id: &BoardId, run: &str) -> Result<(), StorageError> {
        self.inner.release_undo(id, run).await
    }

    async fn interrupt_stale_runs(&self, started_before: i64) -> Result<u64, StorageError> {
        self.inner.interrupt_stale_runs(started_before).await
    }
}

// ---------------------------------------------------------------------------------------------
// Documents

/// A doc as a client would make it: text offsets as Yjs counts them.
pub(crate) fn new_doc() -> Doc {
    Doc::with_options(yrs::Options {
        offset_kind: yrs::OffsetKind::Utf16,
        ..yrs::Options::default()
    })
}

/// Adds a sticky note `{kind: "sticky", text: Y.Text(text)}` under `id` in `objects`; returns
/// the transaction's update.
pub(crate) fn put_note(doc: &Doc, id: &str, text: &str) -> Vec<u8> {
    let objects = doc.get_or_insert_map("objects");
    let mut txn = doc.transact_mut();
    let note = objects.insert(&mut txn, id, yrs::MapPrelim::default());
    note.insert(&mut txn, "kind", "sticky");
    note.insert(&mut txn, "text", yrs::TextPrelim::new(text));
    txn.encode_update_v1()
}

/// Every note in `objects`: id -> text (`""` for a value without text).
pub(crate) fn notes(doc: &Doc) -> BTreeMap<String, String> {
    let objects = doc.get_or_insert_map("objects");
    let txn = doc.transact();
    objects
        .iter(&txn)
        .map(|(k, v)| {
            let text = match v {
                Out::YMap(m) => match m.get(&txn, "text") {
                    Some(Out::YText(t)) => t.get_string(&txn),
                    _ => String::new(),
                },
                _ => String::new(),
            };
            (k.to_string(), text)
        })
        .collect()
}

/// The doc's whole state, Yjs update v1.
pub(crate) fn doc_state(doc: &Doc) -> Vec<u8> {
    doc.transact()
        .encode_state_as_update_v1(&StateVector::default())
}

/// A fresh doc holding `update` (Yjs v1).
pub(crate) fn doc_from(update: &[u8]) -> Doc {
    let doc = new_doc();
    doc.transact_mut()
        .apply_update(Update::decode_v1(update).unwrap())
        .unwrap();
    doc
}

/// An awareness frame announcing `json` for `client` at `clock`.
pub(crate) fn awareness_frame(client: ClientID, clock: u32, json: &str) -> Vec<u8> {
    let mut clients = std::collections::HashMap::new();
    clients.insert(
        client,
        AwarenessUpdateEntry {
            clock,
            json: Arc::from(json),
        },
    );
    YMessage::Awareness(AwarenessUpdate { clients }).encode_v1()
}

// ---------------------------------------------------------------------------------------------
// WebSocket client

/// Opens a WebSocket to `path` (e.g. `/v1/sync/board?ack=1`) on `addr`.
pub(crate) async fn ws_connect(addr: SocketAddr, path: &str) -> Socket {
    let tcp = TcpStream::connect(addr).await.unwrap();
    ws_handshake(tcp, addr, path).await
}

pub(crate) async fn ws_handshake(tcp: TcpStream, addr: SocketAddr, path: &str) -> Socket {
    let url = format!("ws://{addr}{path}");
    tokio::time::timeout(WAIT, tokio_tungstenite::client_async(url, tcp))
        .await
        .expect("WebSocket handshake in time")
        .unwrap()
        .0
}

/// Reads until a close frame arrives (skipping other frames) and returns its code. Fails if the
/// connection ends without one or nothing arrives in `within`.
pub(crate) async fn expect_close(socket: &mut Socket, within: Duration) -> u16 {
    expect_close_frame(socket, within).await.0
}

/// What a [`TestClient`] has seen.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    pub(crate) step1: usize,
    pub(crate) step2: usize,
    pub(crate) updates: usize,
    /// Every durable-ack count received, in order.
    pub(crate) acks: Vec<u64>,
    pub(crate) awareness: Vec<AwarenessUpdate>,
    /// Frames of any type other than the y-protocols ones and the durable ack.
    pub(crate) unknown: Vec<Vec<u8>>,
    /// Frames that did not decode.
    pub(crate) undecodable: Vec<String>,
    pub(crate) close: Option<(u16, String)>,
    pub(crate) ended: bool,
    pub(crate) error: Option<String>,
}

impl Seen {
    pub(crate) fn last_ack(&self) -> u64 {
        self.acks.last().copied().unwrap_or(0)
    }

    /// The newest awareness JSON seen for `client`.
    pub(crate) fn awareness_of(&self, client: ClientID) -> Option<String> {
        self.awareness
            .iter()
            .rev()
            .find_map(|u| u.clients.get(&client).map(|e| e.json.to_string()))
    }
}

#[derive(Debug)]
pub(crate) struct ClientState {
    pub(crate) doc: Doc,
    pub(crate) seen: Seen,
    /// Document messages (sync step 2 and updates) sent so far.
    pub(crate) doc_messages_sent: u64,
    /// Updates from the server that skip clocks this doc lacks (a broadcast overtaking the
    /// sync step 2 answer), held until it has them: yrs 0.28 would integrate them with a hole
    /// and panic on a later update spanning it. Yjs keeps such updates pending the same way.
    pub(crate) waiting: Vec<Update>,
}

/// A y-websocket client with its own doc. A reader task applies what the server sends and
/// answers its sync step 1; a writer task sends frames in order.
pub(crate) struct TestClient {
    pub(crate) name: String,
    state: Arc<Mutex<ClientState>>,
    changed: watch::Receiver<u64>,
    out: mpsc::UnboundedSender<Message>,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

impl std::fmt::Debug for TestClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestClient")
            .field("name", &self.name)
            .finish()
    }
}

impl TestClient {
    /// Connects to `board` with a fresh doc; `ack` asks for durable acknowledgements.
    pub(crate) async fn connect(addr: SocketAddr, board: &str, ack: bool) -> Self {
        Self::connect_with_doc(addr, board, ack, new_doc()).await
    }

    /// Connects to `board` with `doc` (e.g. a doc kept from an earlier connection).
    pub(crate) async fn connect_with_doc(
        addr: SocketAddr,
        board: &str,
        ack: bool,
        doc: Doc,
    ) -> Self {
        let path = if ack {
            format!("/v1/sync/{board}?ack=1")
        } else {
            format!("/v1/sync/{board}")
        };
        let socket = ws_connect(addr, &path).await;
        Self::start(board.to_string(), socket, doc)
    }

    fn start(name: String, socket: Socket, doc: Doc) -> Self {
        let (mut sink, mut stream) = socket.split();
        let (out, mut queue) = mpsc::unbounded_channel::<Message>();
        let (tx, changed) = watch::channel(0u64);
        let state = Arc::new(Mutex::new(ClientState {
            doc,
            seen: Seen::default(),
            doc_messages_sent: 0,
            waiting: Vec::new(),
        }));
        // y-websocket sends its step 1 first.
        let sv = state.lock().unwrap().doc.transact().state_vector();
        out.send(Message::Binary(
            YMessage::Sync(SyncMessage::SyncStep1(sv))
                .encode_v1()
                .into(),
        ))
        .unwrap();
        let writer = tokio::spawn(async move {
            while let Some(message) = queue.recv().await {
                if sink.send(message).await.is_err() {
                    break;
                }
            }
        });
        let reader_state = state.clone();
        let reader_out = out.clone();
        let reader = tokio::spawn(async move {
            loop {
                let next = stream.next().await;
                let ended = {
                    let mut s = reader_state.lock().unwrap();
                    match next {
                        Some(Ok(Message::Binary(frame))) => {
                            absorb(&mut s, &frame, &reader_out);
                            false
                        }
                        Some(Ok(Message::Close(frame))) => {
                            s.seen.close = Some(
                                frame
                                    .map(|f| (u16::from(f.code), f.reason.to_string()))
                                    .unwrap_or((1005, String::new())),
                            );
                            false
                        }
                        Some(Ok(Message::Text(t))) => {
                            s.seen.undecodable.push(format!("text frame {t:?}"));
                            false
                        }
                        Some(Ok(_)) => false,
                        Some(Err(e)) => {
                            s.seen.error = Some(e.to_string());
                            s.seen.ended = true;
                            true
                        }
                        None => {
                            s.seen.ended = true;
                            true
                        }
                    }
                };
                tx.send_modify(|n| *n += 1);
                if ended {
                    break;
                }
            }
        });
        Self {
            name,
            state,
            changed,
            out,
            reader,
            writer,
        }
    }

    /// Runs `f` on the client's state.
    pub(crate) fn with<T>(&self, f: impl FnOnce(&ClientState) -> T) -> T {
        f(&self.state.lock().unwrap())
    }

    pub(crate) fn doc(&self) -> Doc {
        self.with(|s| s.doc.clone())
    }

    pub(crate) fn notes(&self) -> BTreeMap<String, String> {
        self.with(|s| notes(&s.doc))
    }

    pub(crate) fn state_vector(&self) -> StateVector {
        self.with(|s| s.doc.transact().state_vector())
    }

    pub(crate) fn doc_messages_sent(&self) -> u64 {
        self.with(|s| s.doc_messages_sent)
    }

    pub(crate) fn client_id(&self) -> ClientID {
        self.with(|s| s.doc.client_id())
    }

    /// Sends a raw frame.
    pub(crate) fn send_raw(&self, frame: Vec<u8>) {
        let _ = self.out.send(Message::Binary(frame.into()));
    }

    /// Sends `update` as a live update `[0, 2, update]`.
    pub(crate) fn send_update(&self, update: &[u8]) {
        let mut s = self.state.lock().unwrap();
        s.doc_messages_sent += 1;
        let _ = self.out.send(Message::Binary(protocol::update(update)));
    }

    /// Edits the local doc with `f` and sends the transaction's update; returns it.
    pub(crate) fn edit(&self, f: impl FnOnce(&Doc) -> Vec<u8>) -> Vec<u8> {
        let mut s = self.state.lock().unwrap();
        let update = f(&s.doc);
        s.doc_messages_sent += 1;
        let _ = self.out.send(Message::Binary(protocol::update(&update)));
        update
    }

    /// Adds a note locally and sends it.
    pub(crate) fn put_note(&self, id: &str, text: &str) -> Vec<u8> {
        self.edit(|doc| put_note(doc, id, text))
    }

    /// Waits until `pred` holds for the client's state, failing after [`WAIT`].
    pub(crate) async fn wait_for(&self, what: &str, pred: impl Fn(&ClientState) -> bool) {
        self.wait_for_within(what, WAIT, pred).await;
    }

    pub(crate) async fn wait_for_within(
        &self,
        what: &str,
        within: Duration,
        pred: impl Fn(&ClientState) -> bool,
    ) {
        let mut changed = self.changed.clone();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            changed.borrow_and_update();
            {
                let s = self.state.lock().unwrap();
                if pred(&s) {
                    return;
                }
            }
            match tokio::time::timeout_at(deadline, changed.changed()).await {
                Ok(Ok(())) => {}
                // The reader ended: check one last time.
                Ok(Err(_)) | Err(_) => {
                    let s = self.state.lock().unwrap();
                    if pred(&s) {
                        return;
                    }
                    panic!(
                        "client {}: timed out waiting for {what}; seen: step1={} step2={} updates={} acks={:?} close={:?} ended={} error={:?} notes={:?}",
                        self.name,
                        s.seen.step1,
                        s.seen.step2,
                        s.seen.updates,
                        s.seen.acks,
                        s.seen.close,
                        s.seen.ended,
                        s.seen.error,
                        notes(&s.doc).keys().collect::<Vec<_>>(),
                    );
                }
            }
        }
    }

    /// Waits for the server's sync step 2 (the answer to the client's step 1).
    pub(crate) async fn wait_synced(&self) {
        self.wait_for("sync step 2", |s| s.seen.step2 >= 1).await;
    }

    /// Waits until the client holds the note `id`.
    pub(crate) async fn wait_note(&self, id: &str) {
        self.wait_for(&format!("note {id}"), |s| notes(&s.doc).contains_key(id))
            .await;
    }

    /// Waits until every document message sent so far is acknowledged as durable.
    pub(crate) async fn wait_all_acked(&self) {
        self.wait_for("all document messages acknowledged", |s| {
            s.seen.last_ack() >= s.doc_messages_sent
        })
        .await;
    }

    /// Sends a sync step 1 and waits for the answer: everything the server queued for this
    /// connection before it answered has arrived.
    pub(crate) async fn barrier(&self) {
        let (before, sv) = self.with(|s| (s.seen.step2, s.doc.transact().state_vector()));
        let _ = self.out.send(Message::Binary(
            YMessage::Sync(SyncMessage::SyncStep1(sv))
                .encode_v1()
                .into(),
        ));
        self.wait_for("barrier sync step 2", |s| s.seen.step2 > before)
            .await;
    }

    /// Waits for the connection to be closed by the server; returns the close code.
    pub(crate) async fn wait_closed(&self) -> u16 {
        self.wait_for("close frame", |s| s.seen.close.is_some() || s.seen.ended)
            .await;
        self.with(|s| match &s.seen.close {
            Some((code, _)) => *code,
            None => panic!(
                "client {}: connection ended without a close frame ({:?})",
                self.name, s.seen.error
            ),
        })
    }

    /// Closes the connection from the client side and waits for it to end.
    pub(crate) async fn close(&self) {
        let _ = self.out.send(Message::Close(None));
        self.wait_for("connection end", |s| s.seen.ended || s.seen.close.is_some())
            .await;
    }
}

impl Drop for TestClient {
    fn drop(&mut self) {
        self.reader.abort();
        self.writer.abort();
    }
}

/// Handles one binary frame from the server.
fn absorb(s: &mut ClientState, frame: &[u8], out: &mpsc::UnboundedSender<Message>) {
    if frame.first() == Some(&(protocol::MSG_DURABLE_ACK as u8)) {
        let mut decoder = DecoderV1::from(frame);
        let tag: u64 = decoder.read_var().unwrap();
        assert_eq!(tag, protocol::MSG_DURABLE_ACK);
        let count: u64 = decoder.read_var().unwrap();
        s.seen.acks.push(count);
        return;
    }
    match YMessage::decode_v1(frame) {
        Ok(YMessage::Sync(SyncMessage::SyncStep1(sv))) => {
            s.seen.step1 += 1;
            let update = s.doc.transact().encode_state_as_update_v1(&sv);
            s.doc_messages_sent += 1;
            let _ = out.send(Message::Binary(
                YMessage::Sync(SyncMessage::SyncStep2(update))
                    .encode_v1()
                    .into(),
            ));
        }
        Ok(YMessage::Sync(SyncMessage::SyncStep2(u))) => {
            s.seen.step2 += 1;
            apply(s, &u);
        }
        Ok(YMessage::Sync(SyncMessage::Update(u))) => {
            s.seen.updates += 1;
            apply(s, &u);
        }
        Ok(YMessage::Awareness(update)) => s.seen.awareness.push(update),
        Ok(_) => s.seen.unknown.push(frame.to_vec()),
        Err(e) => {
            if frame.first().is_some_and(|&t| t > 3) {
                s.seen.unknown.push(frame.to_vec());
            } else {
                s.seen.undecodable.push(e.to_string());
            }
        }
    }
}

/// Applies `update` to the client's doc, or holds it while it skips clocks the doc lacks; then
/// applies whatever held update no longer does.
fn apply(s: &mut ClientState, update: &[u8]) {
    let update = Update::decode_v1(update).expect("the server sends valid updates");
    s.waiting.push(update);
    while let Some(at) = s.waiting.iter().position(|u| !skips_clocks(&s.doc, u)) {
        let ready = s.waiting.remove(at);
        s.doc
            .transact_mut()
            .apply_update(ready)
            .expect("the server's updates apply");
    }
}

fn skips_clocks(doc: &Doc, update: &Update) -> bool {
    let sv = doc.transact().state_vector();
    update
        .state_vector_lower()
        .iter()
        .any(|(client, &clock)| clock > sv.get(client))
}

// ---------------------------------------------------------------------------------------------
// HTTP

#[derive(Debug)]
pub(crate) struct HttpResponse {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl HttpResponse {
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A minimal HTTP/1.1 client: one request per connection.
pub(crate) async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> HttpResponse {
    let headers: Vec<(&str, &str)> = content_type
        .map(|ct| ("Content-Type", ct))
        .into_iter()
        .collect();
    http_request(addr, None, method, path, &headers, body).await
}

fn parse_response(raw: &[u8]) -> HttpResponse {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete response head");
    let head = std::str::from_utf8(&raw[..split]).unwrap();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let line_end = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let size_str = std::str::from_utf8(&rest[..line_end]).unwrap();
            let size =
                usize::from_str_radix(size_str.split(';').next().unwrap().trim(), 16).unwrap();
            rest = &rest[line_end + 2..];
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[..size]);
            rest = &rest[size + 2..];
        }
        body = out;
    }
    HttpResponse {
        status,
        headers,
        body,
    }
}

// ---------------------------------------------------------------------------------------------
// Security tests: requests with headers, WebSockets with headers or from another address, close
// reasons

/// An HTTP/1.1 request with extra headers (`Authorization`, `Origin`, `x-request-id`,
/// `Content-Type`, ...), optionally from the local address `from` (e.g. `127.0.0.2`, to be
/// another client address for per-address limits).
pub(crate) async fn http_request(
    addr: SocketAddr,
    from: Option<std::net::IpAddr>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    tokio::time::timeout(WAIT, async {
        let mut tcp = tcp_from(addr, from).await;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        tcp.write_all(head.as_bytes()).await.unwrap();
        tcp.write_all(body).await.unwrap();
        let mut raw = Vec::new();
        tcp.read_to_end(&mut raw).await.unwrap();
        parse_response(&raw)
    })
    .await
    .unwrap_or_else(|_| panic!("{method} {path}: no response within {WAIT:?}"))
}

/// A TCP connection to `addr`, from the local address `from` if given.
pub(crate) async fn tcp_from(addr: SocketAddr, from: Option<std::net::IpAddr>) -> TcpStream {
    match from {
        None => TcpStream::connect(addr).await.unwrap(),
        Some(ip) => {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind(SocketAddr::new(ip, 0)).unwrap();
            socket.connect(addr).await.unwrap()
        }
    }
}

/// Opens a WebSocket to `path` with extra request headers (e.g. `Origin`, `Authorization`),
/// optionally from the local address `from`. Returns the handshake's error (an HTTP refusal
/// is `tungstenite::Error::Http(response)`) instead of failing.
pub(crate) async fn ws_connect_with(
    addr: SocketAddr,
    from: Option<std::net::IpAddr>,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Socket, tokio_tungstenite::tungstenite::Error> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    let tcp = tcp_from(addr, from).await;
    tokio::time::timeout(WAIT, tokio_tungstenite::client_async(request, tcp))
        .await
        .expect("WebSocket handshake in time")
        .map(|(socket, _)| socket)
}

/// Reads until a close frame arrives (skipping other frames); returns its code and reason.
pub(crate) async fn expect_close_frame(socket: &mut Socket, within: Duration) -> (u16, String) {
    let got = tokio::time::timeout(within, async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Close(Some(frame)))) => {
                    return Ok((u16::from(frame.code), frame.reason.to_string()));
                }
                Some(Ok(Message::Close(None))) => return Err("close frame without a code".into()),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(format!("read error before a close frame: {e}")),
                None => return Err("connection ended without a close frame".to_string()),
            }
        }
    })
    .await;
    match got {
        Ok(Ok(close)) => close,
        Ok(Err(e)) => panic!("{e}"),
        Err(_) => panic!("no close frame within {within:?}"),
    }
}

impl TestClient {
    /// Connects to any sync path (e.g. `/v1/sync/b?token=T&ack=1`) with a fresh doc; `name`
    /// labels the client in failure messages.
    pub(crate) async fn connect_path(addr: SocketAddr, name: &str, path: &str) -> Self {
        let socket = ws_connect(addr, path).await;
        Self::start(name.to_string(), socket, new_doc())
    }

    /// The close frame received, if any: code and reason.
    pub(crate) fn close_frame(&self) -> Option<(u16, String)> {
        self.with(|s| s.seen.close.clone())
    }

    /// Whether the server has neither closed nor dropped the connection.
    pub(crate) fn is_open(&self) -> bool {
        self.with(|s| s.seen.close.is_none() && !s.seen.ended)
    }

    /// Waits for the server to close the connection; returns the close code and reason.
    pub(crate) async fn wait_close_frame_within(&self, within: Duration) -> (u16, String) {
        self.wait_for_within("close frame", within, |s| {
            s.seen.close.is_some() || s.seen.ended
        })
        .await;
        self.close_frame().unwrap_or_else(|| {
            panic!(
                "client {}: connection ended without a close frame ({:?})",
                self.name,
                self.with(|s| s.seen.error.clone())
            )
        })
    }
}
