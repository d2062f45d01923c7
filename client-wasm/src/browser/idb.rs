//! IndexedDB, as futures: one database per board, with a `log` of updates and a `meta` record.

use js_sys::{Array, Promise, Uint8Array};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    IdbDatabase, IdbObjectStoreParameters, IdbOpenDbRequest, IdbRequest, IdbTransaction,
    IdbTransactionMode,
};

use crate::client::StoreWrite;
use crate::store::StoredMeta;

const LOG: &str = "log";
const META: &str = "meta";
const META_KEY: &str = "meta";
const VERSION: u32 = 1;

/// What the store held when it was opened.
pub(super) struct Loaded {
    pub(super) log: Vec<Vec<u8>>,
    pub(super) meta: Option<StoredMeta>,
}

/// Resolves when `req` succeeds, with its result; rejects with its error.
fn request(req: &IdbRequest) -> JsFuture {
    let req = req.clone();
    let promise = Promise::new(&mut |resolve, reject| {
        let r = req.clone();
        let ok = Closure::once_into_js(move || {
            let _ = resolve.call1(&JsValue::NULL, &r.result().unwrap_or(JsValue::UNDEFINED));
        });
        let r = req.clone();
        let fail = Closure::once_into_js(move || {
            let err = r.error().ok().flatten().map(JsValue::from);
            let _ = reject.call1(&JsValue::NULL, &err.unwrap_or(JsValue::UNDEFINED));
        });
        req.set_onsuccess(Some(ok.unchecked_ref()));
        req.set_onerror(Some(fail.unchecked_ref()));
    });
    JsFuture::from(promise)
}

/// Resolves when `tx` commits; rejects with its error when it fails or aborts.
fn committed(tx: &IdbTransaction) -> JsFuture {
    let tx = tx.clone();
    let promise = Promise::new(&mut |resolve, reject| {
        let ok = Closure::once_into_js(move || {
            let _ = resolve.call0(&JsValue::NULL);
        });
        let t = tx.clone();
        let reject2 = reject.clone();
        let fail = Closure::once_into_js(move || {
            let err = t.error().map(JsValue::from);
            let _ = reject.call1(&JsValue::NULL, &err.unwrap_or(JsValue::UNDEFINED));
        });
        let t = tx.clone();
        let abort = Closure::once_into_js(move || {
            let err = t.error().map(JsValue::from);
            let _ = reject2.call1(
                &JsValue::NULL,
                &err.unwrap_or_else(|| JsValue::from_str("transaction aborted")),
            );
        });
        tx.set_oncomplete(Some(ok.unchecked_ref()));
        tx.set_onerror(Some(fail.unchecked_ref()));
        tx.set_onabort(Some(abort.unchecked_ref()));
    });
    JsFuture::from(promise)
}

/// Opens (creating if needed) the database `name`.
pub(super) async fn open(name: &str) -> Result<IdbDatabase, JsValue> {
    let factory = js_sys::global()
        .dyn_into::<web_sys::Window>()
        .ok()
        .and_then(|w| w.indexed_db().ok().flatten())
        .ok_or_else(|| JsValue::from_str("IndexedDB is not available"))?;
    let req: IdbOpenDbRequest = factory.open_with_u32(name, VERSION)?;
    let upgrade = Closure::<dyn FnMut(web_sys::IdbVersionChangeEvent)>::new({
        let req = req.clone();
        move |_| {
            let Ok(db) = req
                .result()
                .and_then(|r| r.dyn_into::<IdbDatabase>().map_err(JsValue::from))
            else {
                return;
            };
            let names = db.object_store_names();
            if !names.contains(LOG) {
                let params = IdbObjectStoreParameters::new();
                params.set_auto_increment(true);
                let _ = db.create_object_store_with_optional_parameters(LOG, &params);
            }
            if !names.contains(META) {
                let _ = db.create_object_store(META);
            }
        }
    });
    req.set_onupgradeneeded(Some(upgrade.as_ref().unchecked_ref()));
    let db = request(&req).await?;
    drop(upgrade);
    db.dyn_into::<IdbDatabase>().map_err(JsValue::from)
}

/// Reads the log and the metadata.
pub(super) async fn load(db: &IdbDatabase) -> Result<Loaded, JsValue> {
    let tx = db.transaction_with_str_sequence(&Array::of2(&LOG.into(), &META.into()))?;
    let all = request(&tx.object_store(LOG)?.get_all()?).await?;
    let meta = request(&tx.object_store(META)?.get(&JsValue::from_str(META_KEY))?).await?;
    let log = Array::from(&all)
        .iter()
        .map(|v| Uint8Array::new(&v).to_vec())
        .collect();
    let meta = meta.as_string().and_then(|s| StoredMeta::from_json(&s));
    Ok(Loaded { log, meta })
}

/// Performs `writes` in one transaction.
pub(super) async fn write(db: &IdbDatabase, writes: &[StoreWrite]) -> Result<(), JsValue> {
    let tx = db.transaction_with_str_sequence_and_mode(
        &Array::of2(&LOG.into(), &META.into()),
        IdbTransactionMode::Readwrite,
    )?;
    let log = tx.object_store(LOG)?;
    let meta = tx.object_store(META)?;
    let key = JsValue::from_str(META_KEY);
    for w in writes {
        match w {
            StoreWrite::Append {
                updates, meta: m, ..
            } => {
                for u in updates {
                    log.add(&Uint8Array::from(u.as_slice()))?;
                }
                if let Some(m) = m {
                    meta.put_with_key(&JsValue::from_str(&m.to_json()), &key)?;
                }
            }
            StoreWrite::Meta(m) => {
                meta.put_with_key(&JsValue::from_str(&m.to_json()), &key)?;
            }
            StoreWrite::Compact(c) => {
                log.clear()?;
                log.add(&Uint8Array::from(c.snapshot.as_slice()))?;
                meta.put_with_key(&JsValue::from_str(&c.meta.to_json()), &key)?;
            }
        }
    }
    committed(&tx).await.map(|_| ())
}

/// Deletes the database `name` (the app's "forget this board on this device").
pub(super) async fn delete(name: &str) -> Result<(), JsValue> {
    let factory = js_sys::global()
        .dyn_into::<web_sys::Window>()
        .ok()
        .and_then(|w| w.indexed_db().ok().flatten())
        .ok_or_else(|| JsValue::from_str("IndexedDB is not available"))?;
    let req = factory.delete_database(name)?;
    request(&req).await.map(|_| ())
}
