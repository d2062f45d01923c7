//! The role-by-route matrix: every route, called through the router with `oneshot` (no
//! socket), by each kind of caller, in one table. It agrees with `tests/security.rs`: reads
//! need `read`, writes (updates, versions, restore, create, the assistant's runs) `write`,
//! deletions and minting tokens `admin`; listing boards needs a token for every board; another
//! board's token is refused whatever its role (403), no token is 401, and authorization comes
//! before existence.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{Request, header};
use serde_json::Value;
use tower::ServiceExt;
use yrs::{Doc, Map, ReadTxn, StateVector, Transact};

use super::{App, AppHandle, Config};
use crate::auth::token::TokenRequest;
use crate::auth::{Auth, Keys, Role, Scope, Secret};
use crate::ids::BoardId;
use crate::storage::{self, NewRun, Storage, StorageOptions};

/// Who calls: no token, then tokens for board `b` with each role, then an admin of another
/// board.
const CALLERS: [&str; 5] = [
    "no token",
    "read",
    "write",
    "admin",
    "another board's admin",
];

/// What the application holds before the call.
#[derive(Debug, Clone, Copy)]
enum Fixture {
    /// Nothing.
    Empty,
    /// Board `b`, with a note, a named version (`{v}` in paths and bodies) and a working
    /// assistant run `run1`.
    Board,
}

/// A request body.
#[derive(Debug, Clone, Copy)]
enum Payload {
    NoBody,
    /// JSON; `{v}` stands for the fixture's version id.
    Json(&'static str),
    /// A Yjs update adding a note.
    Update,
}

use Fixture::{Board, Empty};
use Payload::{Json, NoBody, Update};

/// Every route, with the status each caller gets, in [`CALLERS`] order.
const MATRIX: &[(&str, &str, Payload, Fixture, [u16; 5])] = &[
    // Probes and metrics need no token.
    ("GET", "/healthz", NoBody, Board, [200, 200, 200, 200, 200]),
    ("GET", "/readyz", NoBody, Board, [200, 200, 200, 200, 200]),
    ("GET", "/metrics", NoBody, Board, [200, 200, 200, 200, 200]),
    // The board app's files are public: its scripts use a token (from the page's fragment),
    // fetching the app needs none.
    ("GET", "/", NoBody, Empty, [200, 200, 200, 200, 200]),
    ("GET", "/b/b", NoBody, Empty, [200, 200, 200, 200, 200]),
    ("GET", "/sw.js", NoBody, Empty, [200, 200, 200, 200, 200]),
    (
        "GET",
        "/app/000000000000/app.css",
        NoBody,
        Empty,
        [404, 404, 404, 404, 404],
    ),
    // A plain GET is not an upgrade, whoever sends it; a WebSocket's token is checked after
    // the upgrade and refused with a close code (`ws/tests.rs`).
    (
        "GET",
        "/v1/sync/b",
        NoBody,
        Board,
        [400, 400, 400, 400, 400],
    ),
    (
        "GET",
        "/v1/hocuspocus",
        NoBody,
        Board,
        [400, 400, 400, 400, 400],
    ),
    (
        "POST",
        "/v1/tokens",
        Json(r#"{"board": "b", "role": "read"}"#),
        Board,
        [401, 403, 403, 201, 403],
    ),
    // Listing needs a token for every board.
    (
        "GET",
        "/v1/boards",
        NoBody,
        Board,
        [401, 403, 403, 403, 403],
    ),
    (
        "POST",
        "/v1/boards",
        Json(r#"{"id": "b"}"#),
        Empty,
        [401, 403, 201, 201, 403],
    ),
    (
        "GET",
        "/v1/boards/b",
        NoBody,
        Board,
        [401, 200, 200, 200, 403],
    ),
    // Authorization before existence: a missing board is 404 only to who may see it.
    (
        "GET",
        "/v1/boards/b",
        NoBody,
        Empty,
        [401, 404, 404, 404, 403],
    ),
    (
        "DELETE",
        "/v1/boards/b",
        NoBody,
        Board,
        [401, 403, 403, 204, 403],
    ),
    (
        "DELETE",
        "/v1/boards/b",
        NoBody,
        Empty,
        [401, 403, 403, 404, 403],
    ),
    (
        "GET",
        "/v1/boards/b/state",
        NoBody,
        Board,
        [401, 200, 200, 200, 403],
    ),
    (
        "POST",
        "/v1/boards/b/updates",
        Update,
        Board,
        [401, 403, 204, 204, 403],
    ),
    (
        "POST",
        "/v1/boards/b/stateless",
        Json(r#"{"type": "ping"}"#),
        Board,
        [401, 403, 200, 200, 403],
    ),
    (
        "POST",
        "/v1/boards/b/stateless",
        Json(r#"{"type": "ping"}"#),
        Empty,
        [401, 403, 404, 404, 403],
    ),
    (
        "POST",
        "/v1/boards/b/restore",
        Json(r#"{"version": {v}}"#),
        Board,
        [401, 403, 200, 200, 403],
    ),
    (
        "POST",
        "/v1/boards/b/versions",
        Json(r#"{"label": "again"}"#),
        Board,
        [401, 403, 201, 201, 403],
    ),
    (
        "GET",
        "/v1/boards/b/versions",
        NoBody,
        Board,
        [401, 200, 200, 200, 403],
    ),
    (
        "GET",
        "/v1/boards/b/versions/{v}",
        NoBody,
        Board,
        [401, 200, 200, 200, 403],
    ),
    (
        "DELETE",
        "/v1/boards/b/versions/{v}",
        NoBody,
        Board,
        [401, 403, 403, 204, 403],
    ),
    // No model service is configured: a writer gets past the role check to 503.
    (
        "POST",
        "/v1/boards/b/assistant",
        Json(r#"{"prompt": "tidy up"}"#),
        Board,
        [401, 403, 503, 503, 403],
    ),
    (
        "GET",
        "/v1/boards/b/assistant/runs",
        NoBody,
        Board,
        [401, 200, 200, 200, 403],
    ),
    (
        "GET",
        "/v1/boards/b/assistant/runs/run1",
        NoBody,
        Board,
        [401, 200, 200, 200, 403],
    ),
    // `run1` is recorded as working, but no run works in this process: another server may
    // run it, so a writer's cancel is asked through the database.
    (
        "POST",
        "/v1/boards/b/assistant/runs/run1/cancel",
        NoBody,
        Board,
        [401, 403, 200, 200, 403],
    ),
    (
        "POST",
        "/v1/boards/b/assistant/runs/run1/undo",
        NoBody,
        Board,
        [401, 403, 409, 409, 403],
    ),
];

fn keys() -> Keys {
    Keys::new(&Secret::new(b"the matrix's secret, at least 32 bytes long").unwrap())
}

fn token(keys: &Keys, scope: &str, role: Role) -> String {
    keys.mint(&TokenRequest {
        user: Some("tester".into()),
        scope: Scope::parse(scope).unwrap(),
        role,
        ttl: Duration::from_secs(3600),
    })
    .unwrap()
    .token
}

/// The callers' `Authorization` headers, in [`CALLERS`] order.
fn callers(keys: &Keys) -> [Option<String>; 5] {
    [
        None,
        Some(token(keys, "b", Role::Read)),
        Some(token(keys, "b", Role::Write)),
        Some(token(keys, "b", Role::Admin)),
        Some(token(keys, "elsewhere", Role::Admin)),
    ]
}

fn note() -> Vec<u8> {
    let doc = Doc::new();
    let objects = doc.get_or_insert_map("objects");
    objects.insert(&mut doc.transact_mut(), "note", "hello");
    doc.transact()
        .encode_state_as_update_v1(&StateVector::default())
}

/// Calls `router` once; returns the status and the JSON body (`Null` if it is not JSON).
async fn call(
    router: &Router,
    method: &str,
    path: &str,
    token: Option<&str>,
    payload: Payload,
    version: &str,
) -> (u16, Value) {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let body = match payload {
        Payload::NoBody => Body::empty(),
        Payload::Json(json) => {
            request = request.header(header::CONTENT_TYPE, "application/json");
            Body::from(json.replace("{v}", version))
        }
        Payload::Update => {
            request = request.header(header::CONTENT_TYPE, "application/octet-stream");
            Body::from(note())
        }
    };
    let response = router
        .clone()
        .oneshot(request.body(body).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// A fresh application with tokens required, and `fixture` in it; returns its router, its
/// handle and the fixture's version id.
async fn app(keys: &Keys, fixture: Fixture) -> (Router, AppHandle, String) {
    let store: Arc<dyn Storage> = storage::open("memory:", &StorageOptions::default())
        .await
        .unwrap();
    let config = Config {
        database_url: "memory:".into(),
        auth: Auth::Tokens(Box::new(keys.clone())),
        ..Config::default()
    };
    let App { router, handle } = App::builder(config)
        .store(store.clone())
        .build()
        .await
        .unwrap();
    let router = router.layer(MockConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40_000))));
    let mut version = String::new();
    if let Fixture::Board = fixture {
        let root = token(keys, "*", Role::Admin);
        let root = Some(root.as_str());
        let setup = [
            ("POST", "/v1/boards", Json(r#"{"id": "b"}"#), 201),
            ("POST", "/v1/boards/b/updates", Update, 204),
            (
                "POST",
                "/v1/boards/b/versions",
                Json(r#"{"label": "v1"}"#),
                201,
            ),
        ];
        for (method, path, payload, expected) in setup {
            let (status, body) = call(&router, method, path, root, payload, "").await;
            assert_eq!(status, expected, "{method} {path}: {body}");
            if path.ends_with("versions") {
                version = body["id"].as_i64().unwrap().to_string();
            }
        }
        let board = BoardId::parse("b").unwrap();
        let run = NewRun {
            id: "run1",
            user: Some("tester"),
            prompt: "tidy up",
            model: "none",
            before_version: None,
            expired_before: 0,
        };
        store.start_run(&board, run).await.unwrap();
    }
    (router, handle, version)
}

#[tokio::test]
async fn every_route_answers_each_role_as_the_matrix_says() {
    let keys = keys();
    let tokens = callers(&keys);
    let mut failures = Vec::new();
    for &(method, path, payload, fixture, expected) in MATRIX {
        for (who, (token, expected)) in CALLERS.iter().zip(tokens.iter().zip(expected)) {
            // Each call on a fresh application: what one caller changes cannot affect the next.
            let (router, handle, version) = app(&keys, fixture).await;
            let path = path.replace("{v}", &version);
            let (status, body) =
                call(&router, method, &path, token.as_deref(), payload, &version).await;
            drop(router);
            handle.shutdown().await;
            // Refusals say why, in the API's JSON.
            let code = body["error"]["code"].as_str().unwrap_or("");
            let code_ok = match status {
                401 => code == "unauthorized",
                403 => code == "forbidden",
                _ => true,
            };
            if status != expected || !code_ok {
                failures.push(format!(
                    "{method} {path} ({fixture:?}) by {who}: got {status} {body}, expected {expected}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
