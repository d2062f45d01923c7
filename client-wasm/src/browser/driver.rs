//! Drives the sans-IO [`Client`] with the browser's WebSocket, IndexedDB and timers.
//!
//! Everything runs on the page's one thread. The client sits in a `RefCell` that is never
//! borrowed across a call into JavaScript: [`Driver::pump`] takes the client's outputs first and
//! only then sends, stores and calls the app's handlers, so a handler may call back into the
//! client.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use js_sys::{Function, Promise, Uint8Array};
use serde::Serialize;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{JsFuture, spawn_local};
use web_sys::{BinaryType, CloseEvent, IdbDatabase, MessageEvent, WebSocket};

use super::idb;
use crate::backoff::Backoff;
use crate::client::{Client, Event, Output, StoreWrite};
use crate::close::{AfterClose, Refused, after_close};

/// How often this client re-announces its presence (y-protocols times a state out after 30 s).
const PRESENCE_RENEW_MS: i32 = 15_000;
/// How long updates from the server may wait to be written to the offline store.
const REMOTE_STORE_DELAY_MS: i32 = 50;
/// Close code this client uses when the server broke the protocol.
const CLOSE_PROTOCOL: u16 = 4000;

/// The options `BoardClient.open` takes.
pub(super) struct Options {
    pub(super) url: String,
    pub(super) board: String,
    pub(super) token: JsValue,
    pub(super) database: Option<String>,
}

/// The connection state an app shows.
#[derive(Debug, Clone, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub(super) struct Status {
    /// `connecting`, `online` (synced), `offline` (will retry), `refused` (will not retry) or
    /// `closed`.
    pub(super) state: &'static str,
    /// The last close code, if any.
    pub(super) code: Option<u16>,
    /// The last close reason, if any.
    pub(super) reason: Option<String>,
    /// Why the server refused for good.
    pub(super) refused: Option<Refused>,
    /// The server refuses this client's edits.
    pub(super) read_only: bool,
    /// The last offline store failure (cleared by the next successful write).
    pub(super) storage_error: Option<String>,
    /// Edits not yet durable on the server.
    pub(super) pending: usize,
}

pub(super) struct Driver {
    pub(super) client: RefCell<Client>,
    options: Options,
    socket: RefCell<Option<WebSocket>>,
    socket_closures: RefCell<Vec<Closure<dyn FnMut(JsValue)>>>,
    generation: Cell<u64>,
    pub(super) db: RefCell<Option<IdbDatabase>>,
    store_queue: RefCell<Vec<StoreWrite>>,
    store_busy: Cell<bool>,
    store_timer: Cell<Option<i32>>,
    handlers: RefCell<Vec<(String, Function)>>,
    status: RefCell<Status>,
    backoff: RefCell<Backoff>,
    token_refusals: Cell<u32>,
    retry_timer: Cell<Option<i32>>,
    presence_timer: Cell<Option<i32>>,
    want_online: Cell<bool>,
    closed: Cell<bool>,
    window_closures: RefCell<Vec<Closure<dyn FnMut()>>>,
}

fn window() -> web_sys::Window {
    js_sys::global().unchecked_into()
}

/// A value as plain JS data. Through JSON: one string crosses into JS and `JSON.parse` builds
/// the objects, several times faster for a large board than building them one call at a time.
pub(super) fn to_js<T: Serialize + ?Sized>(v: &T) -> JsValue {
    serde_json::to_string(v)
        .ok()
        .and_then(|json| js_sys::JSON::parse(&json).ok())
        .unwrap_or(JsValue::NULL)
}

impl Driver {
    pub(super) fn new(client: Client, options: Options) -> Rc<Self> {
        Rc::new(Driver {
            client: RefCell::new(client),
            options,
            socket: RefCell::new(None),
            socket_closures: RefCell::new(Vec::new()),
            generation: Cell::new(0),
            db: RefCell::new(None),
            store_queue: RefCell::new(Vec::new()),
            store_busy: Cell::new(false),
            store_timer: Cell::new(None),
            handlers: RefCell::new(Vec::new()),
            status: RefCell::new(Status {
                state: "offline",
                ..Status::default()
            }),
            backoff: RefCell::new(Backoff::default()),
            token_refusals: Cell::new(0),
            retry_timer: Cell::new(None),
            presence_timer: Cell::new(None),
            want_online: Cell::new(false),
            closed: Cell::new(false),
            window_closures: RefCell::new(Vec::new()),
        })
    }

    pub(super) fn database_name(&self) -> String {
        self.options
            .database
            .clone()
            .unwrap_or_else(|| format!("board-sync:{}:{}", self.options.url, self.options.board))
    }

    /// Starts the timers and listeners that live as long as the client.
    pub(super) fn start(self: &Rc<Self>) {
        let me = Rc::downgrade(self);
        let renew = Closure::<dyn FnMut()>::new(move || {
            if let Some(d) = me.upgrade() {
                d.client.borrow_mut().send_local_presence();
                d.pump();
            }
        });
        if let Ok(id) = window().set_interval_with_callback_and_timeout_and_arguments_0(
            renew.as_ref().unchecked_ref(),
            PRESENCE_RENEW_MS,
        ) {
            self.presence_timer.set(Some(id));
        }
        let me = Rc::downgrade(self);
        let online = Closure::<dyn FnMut()>::new(move || {
            if let Some(d) = me.upgrade()
                && d.want_online.get()
                && d.socket.borrow().is_none()
            {
                d.backoff.borrow_mut().reset();
                d.connect();
            }
        });
        let _ =
            window().add_event_listener_with_callback("online", online.as_ref().unchecked_ref());
        // The browser knows before TCP does: drop the socket now rather than after a timeout.
        let me = Rc::downgrade(self);
        let offline = Closure::<dyn FnMut()>::new(move || {
            if let Some(d) = me.upgrade()
                && d.want_online.get()
            {
                d.go_offline();
            }
        });
        let _ =
            window().add_event_listener_with_callback("offline", offline.as_ref().unchecked_ref());
        let mut keep = self.window_closures.borrow_mut();
        keep.push(renew);
        keep.push(online);
        keep.push(offline);
    }

    // --- events to the app --------------------------------------------------------------------

    pub(super) fn on(&self, name: String, f: Function) {
        self.handlers.borrow_mut().push((name, f));
    }

    pub(super) fn off(&self, name: &str, f: &Function) {
        self.handlers
            .borrow_mut()
            .retain(|(n, g)| !(n == name && g == f));
    }

    fn listens(&self, name: &str) -> bool {
        self.handlers.borrow().iter().any(|(n, _)| n == name)
    }

    fn emit(&self, name: &str, payload: &JsValue) {
        let handlers: Vec<Function> = self
            .handlers
            .borrow()
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, f)| f.clone())
            .collect();
        for f in handlers {
            if let Err(e) = f.call1(&JsValue::NULL, payload) {
                web_sys::console::error_2(&JsValue::from_str("board client handler threw:"), &e);
            }
        }
    }

    pub(super) fn status(&self) -> Status {
        let mut s = self.status.borrow().clone();
        let c = self.client.borrow();
        s.pending = c.pending_edits();
        s.read_only = c.read_only();
        s
    }

    fn set_status(&self, f: impl FnOnce(&mut Status)) {
        f(&mut self.status.borrow_mut());
        let s = self.status();
        self.emit("status", &to_js(&s));
    }

    fn dispatch(&self, e: Event) {
        let name = match &e {
            Event::Change { .. } => "change",
            Event::Pending { .. } => "pending",
            Event::Saved => "saved",
            Event::Synced => {
                self.backoff.borrow_mut().reset();
                self.token_refusals.set(0);
                self.set_status(|s| {
                    s.state = "online";
                    s.code = None;
                    s.reason = None;
                });
                "synced"
            }
            Event::Presence { .. } => "presence",
            Event::Denied { .. } => {
                self.set_status(|_| {});
                "denied"
            }
        };
        if self.listens(name) {
            self.emit(name, &to_js(&e));
        }
    }

    /// Carries out everything the client has queued, then tells the app.
    pub(super) fn pump(self: &Rc<Self>) {
        let mut events = Vec::new();
        let mut stored = false;
        loop {
            let out = self.client.borrow_mut().poll();
            let Some(out) = out else { break };
            match out {
                Output::Send(frame) => {
                    if let Some(ws) = self.socket.borrow().as_ref()
                        && ws.ready_state() == WebSocket::OPEN
                    {
                        let _ = ws.send_with_u8_array(&frame);
                    }
                }
                Output::Store(w) => {
                    self.store_queue.borrow_mut().push(w);
                    stored = true;
                }
                Output::Event(e) => events.push(e),
            }
        }
        if stored {
            self.schedule_store();
        }
        for e in events {
            self.dispatch(e);
        }
    }

    // --- the offline store --------------------------------------------------------------------

    /// Local edits are written at once (they are sent only once stored). Updates from the
    /// server (already durable there, and asked for again at the next sync if lost) wait up
    /// to [`REMOTE_STORE_DELAY_MS`] so that a burst of them costs one store transaction.
    fn schedule_store(self: &Rc<Self>) {
        let urgent = self.store_queue.borrow().iter().any(|w| match w {
            StoreWrite::Append { seq, .. } => *seq > 0,
            StoreWrite::Meta(_) => false,
            StoreWrite::Compact(_) => true,
        });
        if urgent {
            self.flush_store();
            return;
        }
        if self.store_timer.get().is_some() {
            return;
        }
        let me = Rc::downgrade(self);
        let later = Closure::once_into_js(move || {
            if let Some(d) = me.upgrade() {
                d.store_timer.set(None);
                d.flush_store();
            }
        });
        if let Ok(id) = window().set_timeout_with_callback_and_timeout_and_arguments_0(
            later.unchecked_ref(),
            REMOTE_STORE_DELAY_MS,
        ) {
            self.store_timer.set(Some(id));
        }
    }

    /// Writes what is queued, one store transaction at a time; writes queued meanwhile go
    /// together in the next one.
    fn flush_store(self: &Rc<Self>) {
        if self.store_busy.get() {
            return;
        }
        if let Some(id) = self.store_timer.take() {
            window().clear_timeout_with_handle(id);
        }
        let writes = std::mem::take(&mut *self.store_queue.borrow_mut());
        if writes.is_empty() {
            return;
        }
        let last_seq = writes
            .iter()
            .filter_map(|w| match w {
                StoreWrite::Append { seq, .. } if *seq > 0 => Some(*seq),
                _ => None,
            })
            .max();
        let db = self.db.borrow().clone();
        let Some(db) = db else {
            // No offline store: edits go straight to the server.
            if let Some(seq) = last_seq {
                self.client.borrow_mut().stored(seq);
            }
            self.pump();
            return;
        };
        self.store_busy.set(true);
        let me = self.clone();
        spawn_local(async move {
            let result = idb::write(&db, &writes).await;
            me.store_busy.set(false);
            match result {
                Ok(()) => {
                    if me.status.borrow().storage_error.is_some() {
                        me.set_status(|s| s.storage_error = None);
                    }
                }
                Err(e) => {
                    let message = error_message(&e);
                    me.emit(
                        "error",
                        &to_js(&serde_json::json!({"kind": "storage", "message": message})),
                    );
                    me.set_status(|s| s.storage_error = Some(message));
                }
            }
            // Sent even when the write failed: the server is then the edit's only safe place.
            if let Some(seq) = last_seq {
                me.client.borrow_mut().stored(seq);
            }
            me.pump();
            me.flush_store();
        });
    }

    /// Resolves when every queued store write has finished.
    pub(super) async fn flushed(self: &Rc<Self>) {
        while self.store_busy.get() || !self.store_queue.borrow().is_empty() {
            self.flush_store();
            let p = Promise::new(&mut |resolve, _| {
                let _ = window().set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, 5);
            });
            let _ = JsFuture::from(p).await;
        }
    }

    // --- the connection -----------------------------------------------------------------------

    /// Connects now (cancelling a scheduled retry), unless the client was closed.
    pub(super) fn connect(self: &Rc<Self>) {
        if self.closed.get() {
            return;
        }
        self.want_online.set(true);
        if let Some(id) = self.retry_timer.take() {
            window().clear_timeout_with_handle(id);
        }
        self.drop_socket();
        let generation = self.generation.get() + 1;
        self.generation.set(generation);
        if !window().navigator().on_line() {
            // The "online" listener connects when the browser is back.
            self.set_status(|s| {
                s.state = "offline";
                s.refused = None;
            });
            return;
        }
        self.set_status(|s| {
            s.state = "connecting";
            s.refused = None;
        });
        let me = self.clone();
        spawn_local(async move {
            let token = match me.token().await {
                Ok(t) => t,
                Err(e) => {
                    me.emit(
                        "error",
                        &to_js(&serde_json::json!({"kind": "token", "message": error_message(&e)})),
                    );
                    me.schedule_retry();
                    return;
                }
            };
            if me.generation.get() != generation || !me.want_online.get() {
                return;
            }
            if let Some(t) = &token {
                let read_only = token_role(t).as_deref() == Some("read");
                me.client.borrow_mut().set_read_only(read_only);
            }
            me.open_socket(generation, token);
        });
    }

    async fn token(&self) -> Result<Option<String>, JsValue> {
        let t = &self.options.token;
        if t.is_undefined() || t.is_null() {
            return Ok(None);
        }
        let value = match t.dyn_ref::<Function>() {
            Some(f) => {
                let v = f.call0(&JsValue::NULL)?;
                match v.dyn_into::<Promise>() {
                    Ok(p) => JsFuture::from(p).await?,
                    Err(v) => v,
                }
            }
            None => t.clone(),
        };
        value
            .as_string()
            .map(Some)
            .ok_or_else(|| JsValue::from_str("the token callback did not return a string"))
    }

    fn open_socket(self: &Rc<Self>, generation: u64, token: Option<String>) {
        let mut url = format!(
            "{}/{}?ack=1",
            self.options.url.trim_end_matches('/'),
            self.options.board
        );
        if let Some(t) = token {
            url.push_str("&token=");
            url.push_str(&String::from(js_sys::encode_uri_component(&t)));
        }
        let ws = match WebSocket::new(&url) {
            Ok(ws) => ws,
            Err(e) => {
                // A malformed URL: retrying cannot help.
                self.want_online.set(false);
                let message = error_message(&e);
                self.set_status(|s| {
                    s.state = "refused";
                    s.reason = Some(message);
                });
                return;
            }
        };
        ws.set_binary_type(BinaryType::Arraybuffer);
        let me = Rc::downgrade(self);
        let on_open = Closure::<dyn FnMut(JsValue)>::new(move |_| {
            if let Some(d) = me.upgrade()
                && d.generation.get() == generation
            {
                d.client.borrow_mut().connected();
                d.pump();
            }
        });
        let me = Rc::downgrade(self);
        let on_message = Closure::<dyn FnMut(JsValue)>::new(move |e: JsValue| {
            let Some(d) = me.upgrade() else { return };
            if d.generation.get() != generation {
                return;
            }
            let Ok(e) = e.dyn_into::<MessageEvent>() else {
                return;
            };
            let bytes = Uint8Array::new(&e.data()).to_vec();
            let result = d.client.borrow_mut().receive(&bytes);
            if let Err(err) = result {
                d.emit(
                    "error",
                    &to_js(&serde_json::json!({"kind": "protocol", "message": err.to_string()})),
                );
                if let Some(ws) = d.socket.borrow().as_ref() {
                    let _ = ws.close_with_code_and_reason(CLOSE_PROTOCOL, "client: bad frame");
                }
            }
            d.pump();
        });
        let me = Rc::downgrade(self);
        let on_close = Closure::<dyn FnMut(JsValue)>::new(move |e: JsValue| {
            let Some(d) = me.upgrade() else { return };
            if d.generation.get() != generation {
                return;
            }
            let (code, reason) = e
                .dyn_into::<CloseEvent>()
                .map(|c| (c.code(), c.reason()))
                .unwrap_or((1006, String::new()));
            d.closed_by_server(code, reason);
        });
        ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
        *self.socket.borrow_mut() = Some(ws);
        *self.socket_closures.borrow_mut() = vec![on_open, on_message, on_close];
    }

    fn drop_socket(self: &Rc<Self>) {
        let ws = self.socket.borrow_mut().take();
        if let Some(ws) = ws {
            ws.set_onopen(None);
            ws.set_onmessage(None);
            ws.set_onclose(None);
            let _ = ws.close();
            self.client.borrow_mut().disconnected();
            self.pump();
        }
    }

    fn closed_by_server(self: &Rc<Self>, code: u16, reason: String) {
        self.socket.borrow_mut().take();
        self.client.borrow_mut().disconnected();
        self.pump();
        if !self.want_online.get() {
            return;
        }
        let reason = (!reason.is_empty()).then_some(reason);
        match after_close(code) {
            AfterClose::Reconnect => {
                self.set_status(|s| {
                    s.state = "offline";
                    s.code = Some(code);
                    s.reason = reason;
                });
                self.schedule_retry();
            }
            AfterClose::RefreshToken => {
                let refusals = self.token_refusals.get() + 1;
                self.token_refusals.set(refusals);
                if refusals >= 2 {
                    // A fresh token was refused too: the callback cannot help.
                    self.stop(code, reason, Refused::Unauthorized);
                } else {
                    self.set_status(|s| {
                        s.code = Some(code);
                        s.reason = reason;
                    });
                    self.connect();
                }
            }
            AfterClose::Stop(why) => self.stop(code, reason, why),
        }
    }

    fn stop(&self, code: u16, reason: Option<String>, why: Refused) {
        self.want_online.set(false);
        self.set_status(|s| {
            s.state = "refused";
            s.code = Some(code);
            s.reason = reason;
            s.refused = Some(why);
        });
    }

    fn schedule_retry(self: &Rc<Self>) {
        let delay = self
            .backoff
            .borrow_mut()
            .next_delay_ms(js_sys::Math::random());
        let me = Rc::downgrade(self);
        let retry = Closure::once_into_js(move || {
            if let Some(d) = me.upgrade() {
                d.retry_timer.set(None);
                if d.want_online.get() {
                    d.connect();
                }
            }
        });
        if let Ok(id) = window().set_timeout_with_callback_and_timeout_and_arguments_0(
            retry.unchecked_ref(),
            delay as i32,
        ) {
            self.retry_timer.set(Some(id));
        }
    }

    /// The browser went offline: drop the socket; the "online" listener reconnects.
    fn go_offline(self: &Rc<Self>) {
        if let Some(id) = self.retry_timer.take() {
            window().clear_timeout_with_handle(id);
        }
        self.generation.set(self.generation.get() + 1);
        self.drop_socket();
        self.set_status(|s| {
            s.state = "offline";
            s.code = None;
            s.reason = None;
        });
    }

    /// Goes offline on purpose: no reconnect until [`Driver::connect`].
    pub(super) fn disconnect(self: &Rc<Self>) {
        self.want_online.set(false);
        self.go_offline();
    }

    /// Closes the client for good.
    pub(super) fn close(self: &Rc<Self>) {
        self.disconnect();
        self.closed.set(true);
        if let Some(id) = self.presence_timer.take() {
            window().clear_interval_with_handle(id);
        }
        self.set_status(|s| s.state = "closed");
        // Finish the queued writes, then close the store.
        let me = self.clone();
        spawn_local(async move {
            me.flushed().await;
            if let Some(db) = me.db.borrow_mut().take() {
                db.close();
            }
        });
    }
}

/// The `role` a JWT claims, read without checking its signature (only the server can): used to
/// refuse edits locally that the server would refuse anyway.
fn token_role(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let mut b64: String = payload
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    while b64.len() % 4 != 0 {
        b64.push('=');
    }
    let json = window().atob(&b64).ok()?;
    let claims: serde_json::Value = serde_json::from_str(&json).ok()?;
    claims.get("role")?.as_str().map(str::to_owned)
}

pub(super) fn error_message(e: &JsValue) -> String {
    if let Some(d) = e.dyn_ref::<web_sys::DomException>() {
        return format!("{}: {}", d.name(), d.message());
    }
    if let Some(e) = e.dyn_ref::<js_sys::Error>() {
        return String::from(e.message());
    }
    e.as_string().unwrap_or_else(|| "unknown error".into())
}
