//! WebSocket clients: raw sockets with helpers, and [`TestClient`], a y-websocket client
//! holding its own `yrs::Doc` that answers the server's sync step 1, applies what arrives and
//! records everything it sees.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use yrs::block::ClientID;
use yrs::sync::{AwarenessUpdate, Message as YMessage, SyncMessage};
use yrs::updates::decoder::Decode;
use yrs::{Doc, ReadTxn, StateVector, Transact, Update};

use crate::WAIT;
use crate::docs::{new_doc, notes, put_note};
use crate::http::tcp_from;
use crate::wire;

/// A client WebSocket over plain TCP.
pub type Socket = WebSocketStream<TcpStream>;

/// Opens a WebSocket to `path` (e.g. `/v1/sync/board?ack=1`) on `addr`.
pub async fn ws_connect(addr: SocketAddr, path: &str) -> Socket {
    let tcp = TcpStream::connect(addr).await.unwrap();
    ws_handshake(tcp, addr, path).await
}

pub async fn ws_handshake(tcp: TcpStream, addr: SocketAddr, path: &str) -> Socket {
    let url = format!("ws://{addr}{path}");
    tokio::time::timeout(WAIT, tokio_tungstenite::client_async(url, tcp))
        .await
        .expect("WebSocket handshake in time")
        .unwrap()
        .0
}

/// Reads until a close frame arrives (skipping other frames) and returns its code. Fails if the
/// connection ends without one or nothing arrives in `within`.
pub async fn expect_close(socket: &mut Socket, within: Duration) -> u16 {
    expect_close_frame(socket, within).await.0
}

/// What a [`TestClient`] has seen.
#[derive(Debug, Default)]
pub struct Seen {
    pub step1: usize,
    pub step2: usize,
    pub updates: usize,
    /// Every durable-ack count received, in order.
    pub acks: Vec<u64>,
    pub awareness: Vec<AwarenessUpdate>,
    /// Frames of any type other than the y-protocols ones and the durable ack.
    pub unknown: Vec<Vec<u8>>,
    /// Frames that did not decode.
    pub undecodable: Vec<String>,
    pub close: Option<(u16, String)>,
    pub ended: bool,
    pub error: Option<String>,
}

impl Seen {
    pub fn last_ack(&self) -> u64 {
        self.acks.last().copied().unwrap_or(0)
    }

    /// The newest awareness JSON seen for `client`.
    pub fn awareness_of(&self, client: ClientID) -> Option<String> {
        self.awareness
            .iter()
            .rev()
            .find_map(|u| u.clients.get(&client).map(|e| e.json.to_string()))
    }
}

/// What a [`TestClient`] holds: its doc and what it has seen and sent.
#[derive(Debug)]
pub struct ClientState {
    pub doc: Doc,
    pub seen: Seen,
    /// Document messages (sync step 2 and updates) sent so far.
    pub doc_messages_sent: u64,
    /// Updates from the server that skip clocks this doc lacks (a broadcast overtaking the
    /// sync step 2 answer), held until it has them: yrs 0.28 would integrate them with a hole
    /// and panic on a later update spanning it. Yjs keeps such updates pending the same way.
    pub waiting: Vec<Update>,
}

/// A y-websocket client with its own doc. A reader task applies what the server sends and
/// answers its sync step 1; a writer task sends frames in order.
pub struct TestClient {
    pub name: String,
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
    pub async fn connect(addr: SocketAddr, board: &str, ack: bool) -> Self {
        Self::connect_with_doc(addr, board, ack, new_doc()).await
    }

    /// Connects to `board` with `doc` (e.g. a doc kept from an earlier connection).
    pub async fn connect_with_doc(addr: SocketAddr, board: &str, ack: bool, doc: Doc) -> Self {
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
        out.send(Message::Binary(wire::step1_frame(&sv))).unwrap();
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
    pub fn with<T>(&self, f: impl FnOnce(&ClientState) -> T) -> T {
        f(&self.state.lock().unwrap())
    }

    pub fn doc(&self) -> Doc {
        self.with(|s| s.doc.clone())
    }

    pub fn notes(&self) -> BTreeMap<String, String> {
        self.with(|s| notes(&s.doc))
    }

    pub fn state_vector(&self) -> StateVector {
        self.with(|s| s.doc.transact().state_vector())
    }

    pub fn doc_messages_sent(&self) -> u64 {
        self.with(|s| s.doc_messages_sent)
    }

    pub fn client_id(&self) -> ClientID {
        self.with(|s| s.doc.client_id())
    }

    /// Sends a raw frame.
    pub fn send_raw(&self, frame: Vec<u8>) {
        let _ = self.out.send(Message::Binary(frame.into()));
    }

    /// Sends `update` as a live update `[0, 2, update]`.
    pub fn send_update(&self, update: &[u8]) {
        let mut s = self.state.lock().unwrap();
        s.doc_messages_sent += 1;
        let _ = self.out.send(Message::Binary(wire::update_frame(update)));
    }

    /// Edits the local doc with `f` and sends the transaction's update; returns it.
    pub fn edit(&self, f: impl FnOnce(&Doc) -> Vec<u8>) -> Vec<u8> {
        let mut s = self.state.lock().unwrap();
        let update = f(&s.doc);
        s.doc_messages_sent += 1;
        let _ = self.out.send(Message::Binary(wire::update_frame(&update)));
        update
    }

    /// Adds a note locally and sends it.
    pub fn put_note(&self, id: &str, text: &str) -> Vec<u8> {
        self.edit(|doc| put_note(doc, id, text))
    }

    /// Waits until `pred` holds for the client's state, failing after [`WAIT`].
    pub async fn wait_for(&self, what: &str, pred: impl Fn(&ClientState) -> bool) {
        self.wait_for_within(what, WAIT, pred).await;
    }

    pub async fn wait_for_within(
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
    pub async fn wait_synced(&self) {
        self.wait_for("sync step 2", |s| s.seen.step2 >= 1).await;
    }

    /// Waits until the client holds the note `id`.
    pub async fn wait_note(&self, id: &str) {
        self.wait_for(&format!("note {id}"), |s| notes(&s.doc).contains_key(id))
            .await;
    }

    /// Waits until every document message sent so far is acknowledged as durable.
    pub async fn wait_all_acked(&self) {
        self.wait_for("all document messages acknowledged", |s| {
            s.seen.last_ack() >= s.doc_messages_sent
        })
        .await;
    }

    /// Sends a sync step 1 and waits for the answer: everything the server queued for this
    /// connection before it answered has arrived.
    pub async fn barrier(&self) {
        let (before, sv) = self.with(|s| (s.seen.step2, s.doc.transact().state_vector()));
        let _ = self.out.send(Message::Binary(wire::step1_frame(&sv)));
        self.wait_for("barrier sync step 2", |s| s.seen.step2 > before)
            .await;
    }

    /// Waits for the connection to be closed by the server; returns the close code.
    pub async fn wait_closed(&self) -> u16 {
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
    pub async fn close(&self) {
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
    if let Some(count) = wire::durable_ack(frame) {
        s.seen.acks.push(count);
        return;
    }
    match YMessage::decode_v1(frame) {
        Ok(YMessage::Sync(SyncMessage::SyncStep1(sv))) => {
            s.seen.step1 += 1;
            let update = s.doc.transact().encode_state_as_update_v1(&sv);
            s.doc_messages_sent += 1;
            let _ = out.send(Message::Binary(wire::step2_frame(update)));
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

/// Opens a WebSocket to `path` with extra request headers (e.g. `Origin`, `Authorization`),
/// optionally from the local address `from`. Returns the handshake's error (an HTTP refusal
/// is `tungstenite::Error::Http(response)`) instead of failing.
pub async fn ws_connect_with(
    addr: SocketAddr,
    from: Option<IpAddr>,
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
pub async fn expect_close_frame(socket: &mut Socket, within: Duration) -> (u16, String) {
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
    pub async fn connect_path(addr: SocketAddr, name: &str, path: &str) -> Self {
        let socket = ws_connect(addr, path).await;
        Self::start(name.to_string(), socket, new_doc())
    }

    /// The close frame received, if any: code and reason.
    pub fn close_frame(&self) -> Option<(u16, String)> {
        self.with(|s| s.seen.close.clone())
    }

    /// Whether the server has neither closed nor dropped the connection.
    pub fn is_open(&self) -> bool {
        self.with(|s| s.seen.close.is_none() && !s.seen.ended)
    }

    /// Waits for the server to close the connection; returns the close code and reason.
    pub async fn wait_close_frame_within(&self, within: Duration) -> (u16, String) {
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
