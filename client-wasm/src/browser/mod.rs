//! The JavaScript API: `BoardClient`.

mod driver;
mod idb;

use std::rc::Rc;
use std::sync::Arc;

use crdt_schema::Op;
use js_sys::{Function, Reflect};
use wasm_bindgen::prelude::*;

use crate::client::Client;
use crate::replica::EditError;
use driver::{Driver, Options, error_message, to_js};

fn clock() -> Arc<dyn yrs::sync::Clock> {
    Arc::new(|| js_sys::Date::now() as u64)
}

fn get(obj: &JsValue, key: &str) -> JsValue {
    Reflect::get(obj, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
}

fn type_error(message: &str) -> JsValue {
    js_sys::TypeError::new(message).into()
}

/// A JS `Error` with a `name` and extra fields.
fn error(name: &str, message: &str, fields: &[(&str, JsValue)]) -> JsValue {
    let e = js_sys::Error::new(message);
    e.set_name(name);
    for (k, v) in fields {
        let _ = Reflect::set(&e, &JsValue::from_str(k), v);
    }
    e.into()
}

/// One board, synced with the server and kept in this browser. See the crate's README.
#[wasm_bindgen]
pub struct BoardClient {
    driver: Rc<Driver>,
}

impl std::fmt::Debug for BoardClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoardClient").finish_non_exhaustive()
    }
}

#[wasm_bindgen]
impl BoardClient {
    /// Opens a board: loads it from IndexedDB (unless `persist: false`) and starts syncing
    /// (unless `connect: false`). Options: `url` (`ws://host/v1/sync`), `board`, `token` (a
    /// string, or a function returning a string or a promise of one, called before every
    /// connection), `persist`, `database`, `captureTimeout` (ms; undo groups edits this close),
    /// `presence` (initial presence object), `connect`.
    pub async fn open(options: JsValue) -> Result<BoardClient, JsValue> {
        let url = get(&options, "url")
            .as_string()
            .ok_or_else(|| type_error("options.url must be a string (ws://host/v1/sync)"))?;
        let board = get(&options, "board")
            .as_string()
            .ok_or_else(|| type_error("options.board must be a string"))?;
        if !crdt_schema::ids::is_valid_id(&board) {
            return Err(type_error(
                "options.board must be 1-128 characters of A-Z a-z 0-9 . _ -",
            ));
        }
        let persist = get(&options, "persist").as_bool().unwrap_or(true);
        let capture = get(&options, "captureTimeout").as_f64().unwrap_or(500.0);
        let client = Client::new(clock(), capture.max(0.0) as u64);
        let driver = Driver::new(
            client,
            Options {
                url,
                board,
                token: get(&options, "token"),
                database: get(&options, "database").as_string(),
            },
        );
        if persist {
            let db = idb::open(&driver.database_name())
                .await
                .map_err(|e| error("StorageError", &error_message(&e), &[]))?;
            let loaded = idb::load(&db)
                .await
                .map_err(|e| error("StorageError", &error_message(&e), &[]))?;
            driver.client.borrow_mut().load(&loaded.log, loaded.meta);
            *driver.db.borrow_mut() = Some(db);
        }
        let presence = get(&options, "presence");
        if presence.is_object() {
            let json = js_sys::JSON::stringify(&presence)?;
            driver.client.borrow_mut().set_presence(&String::from(json));
        }
        driver.start();
        driver.pump();
        if get(&options, "connect").as_bool().unwrap_or(true) {
            driver.connect();
        }
        Ok(BoardClient { driver })
    }

    /// Deletes a board's offline store (after `close()`): "forget this board on this device".
    #[wasm_bindgen(js_name = deleteStore)]
    pub async fn delete_store(database: String) -> Result<(), JsValue> {
        idb::delete(&database).await
    }

    /// This replica's client id (a new one per page load).
    #[wasm_bindgen(getter, js_name = clientId)]
    pub fn client_id(&self) -> f64 {
        self.driver.client.borrow().replica().client_id().get() as f64
    }

    /// The whole board: `{objects, meta, chat, issues}` (see crdt-schema's model).
    pub fn board(&self) -> JsValue {
        to_js(&self.driver.client.borrow().replica().board())
    }

    /// One object, or `undefined`.
    pub fn object(&self, id: &str) -> JsValue {
        match self.driver.client.borrow().replica().object(id) {
            Some(o) => to_js(&o),
            None => JsValue::UNDEFINED,
        }
    }

    /// Applies one operation (`{op: "create" | "move" | ..., ...}`) as one transaction.
    /// Returns what it did; throws `ValidationError` (with `issues`, every problem at once),
    /// `ReadOnlyError`, or `TypeError` for a value that is not an operation.
    pub fn apply(&self, op: JsValue) -> Result<JsValue, JsValue> {
        let op: Op = serde_wasm_bindgen::from_value(op)
            .map_err(|e| type_error(&format!("not an operation: {e}")))?;
        let result = self.driver.client.borrow_mut().apply(&op);
        self.driver.pump();
        match result {
            Ok(applied) => Ok(to_js(&applied)),
            Err(EditError::Invalid(v)) => Err(error(
                "ValidationError",
                &v.to_string(),
                &[("issues", to_js(&v.issues))],
            )),
            Err(EditError::ReadOnly) => Err(error(
                "ReadOnlyError",
                &EditError::ReadOnly.to_string(),
                &[],
            )),
        }
    }

    /// A new object id, from the browser's cryptographic randomness.
    #[wasm_bindgen(js_name = newId)]
    pub fn new_id() -> Result<String, JsValue> {
        let mut bytes = [0u8; 16];
        let crypto = get(&js_sys::global(), "crypto");
        let array = js_sys::Uint8Array::new_with_length(16);
        let f: Function = get(&crypto, "getRandomValues").dyn_into()?;
        f.call1(&crypto, &array)?;
        array.copy_to(&mut bytes);
        Ok(crdt_schema::ids::new_id(bytes))
    }

    /// A `z` above every object (for "bring to front").
    #[wasm_bindgen(js_name = topZ)]
    pub fn top_z(&self) -> Result<String, JsValue> {
        let c = self.driver.client.borrow();
        let txn = yrs::Transact::transact(c.replica().doc());
        let top = crdt_schema::ops::top_z(&txn);
        let z = match top {
            Some(t) => crdt_schema::zindex::after(&t),
            None => Ok(crdt_schema::zindex::first()),
        };
        z.map_err(|e| type_error(&e.to_string()))
    }

    /// A `z` below every object (for "send to back").
    #[wasm_bindgen(js_name = bottomZ)]
    pub fn bottom_z(&self) -> Result<String, JsValue> {
        let c = self.driver.client.borrow();
        let txn = yrs::Transact::transact(c.replica().doc());
        let bottom = crdt_schema::ops::bottom_z(&txn);
        let z = match bottom {
            Some(b) => crdt_schema::zindex::before(&b),
            None => Ok(crdt_schema::zindex::first()),
        };
        z.map_err(|e| type_error(&e.to_string()))
    }

    /// Undoes this client's last edit (others' edits stay). Returns whether there was one.
    pub fn undo(&self) -> bool {
        let done = self.driver.client.borrow_mut().undo();
        self.driver.pump();
        done
    }

    /// Redoes the last undone edit.
    pub fn redo(&self) -> bool {
        let done = self.driver.client.borrow_mut().redo();
        self.driver.pump();
        done
    }

    /// Whether there is an edit to undo.
    #[wasm_bindgen(js_name = canUndo)]
    pub fn can_undo(&self) -> bool {
        self.driver.client.borrow().replica().can_undo()
    }

    /// Whether there is an edit to redo.
    #[wasm_bindgen(js_name = canRedo)]
    pub fn can_redo(&self) -> bool {
        self.driver.client.borrow().replica().can_redo()
    }

    /// Ends the current undo step (the next edit is undone separately).
    #[wasm_bindgen(js_name = stopCapturing)]
    pub fn stop_capturing(&self) {
        self.driver
            .client
            .borrow_mut()
            .replica_mut()
            .stop_capturing();
    }

    /// Edits of this client not yet durable on the server (kept across reloads).
    #[wasm_bindgen(js_name = pendingEdits)]
    pub fn pending_edits(&self) -> usize {
        self.driver.client.borrow().pending_edits()
    }

    /// `{state, code, reason, refused, readOnly, storageError, pending}`.
    pub fn status(&self) -> JsValue {
        to_js(&self.driver.status())
    }

    /// Replaces this client's presence (any JSON object; by convention `user: {name, color}`,
    /// `cursor`, `selection`, `drag`).
    #[wasm_bindgen(js_name = setPresence)]
    pub fn set_presence(&self, state: JsValue) -> Result<(), JsValue> {
        let json = js_sys::JSON::stringify(&state)?;
        self.driver
            .client
            .borrow_mut()
            .set_presence(&String::from(json));
        self.driver.pump();
        Ok(())
    }

    /// Sets some fields of this client's presence, keeping the others.
    #[wasm_bindgen(js_name = updatePresence)]
    pub fn update_presence(&self, fields: JsValue) -> Result<(), JsValue> {
        let current = self.presence();
        let merged = js_sys::Object::new();
        if current.is_object() {
            js_sys::Object::assign(&merged, current.unchecked_ref());
        }
        if fields.is_object() {
            js_sys::Object::assign(&merged, fields.unchecked_ref());
        }
        self.set_presence(merged.into())
    }

    /// This client's presence.
    pub fn presence(&self) -> JsValue {
        let raw = self
            .driver
            .client
            .borrow()
            .replica()
            .awareness()
            .local_state_raw();
        raw.and_then(|s| js_sys::JSON::parse(&s).ok())
            .unwrap_or(JsValue::NULL)
    }

    /// The other peers: `[{clientId, state, assistant}]`; `assistant` is true for the server's
    /// assistant while a run works on the board.
    pub fn peers(&self) -> JsValue {
        let c = self.driver.client.borrow();
        let own = c.replica().client_id();
        let out = js_sys::Array::new();
        for (id, entry) in c.replica().awareness().iter() {
            let Some(data) = entry.data.as_deref() else {
                continue;
            };
            if id == own {
                continue;
            }
            let Ok(state) = js_sys::JSON::parse(data) else {
                continue;
            };
            let assistant = get(&get(&state, "user"), "assistant")
                .as_bool()
                .unwrap_or(false);
            let peer = js_sys::Object::new();
            let _ = Reflect::set(
                &peer,
                &"clientId".into(),
                &JsValue::from_f64(id.get() as f64),
            );
            let _ = Reflect::set(&peer, &"state".into(), &state);
            let _ = Reflect::set(&peer, &"assistant".into(), &JsValue::from_bool(assistant));
            out.push(&peer);
        }
        out.into()
    }

    /// Listens to `change`, `pending`, `saved`, `synced`, `presence`, `denied`, `status` or
    /// `error`.
    pub fn on(&self, event: String, handler: Function) {
        self.driver.on(event, handler);
    }

    /// Stops listening.
    pub fn off(&self, event: String, handler: Function) {
        self.driver.off(&event, &handler);
    }

    /// Connects (again) after `disconnect()` or a refusal.
    pub fn connect(&self) {
        self.driver.connect();
    }

    /// Goes offline on purpose: edits go on and are kept; nothing is sent until `connect()`.
    pub fn disconnect(&self) {
        self.driver.disconnect();
    }

    /// Resolves when every offline store write queued so far has finished.
    pub async fn flushed(&self) {
        self.driver.flushed().await;
    }

    /// Disconnects, stops timers and closes the offline store.
    pub fn close(&self) {
        self.driver.close();
    }
}
