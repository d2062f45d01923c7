//! Security, limits and metrics, end to end: tokens on HTTP and WebSocket, roles and board
//! scopes, read-only connections, awareness ownership, connection/message/size/request limits,
//! the origin allow-list, isolation of abusive clients, `/metrics` and request ids.
//!
//! Each test runs its own in-process server on a `memory:` store.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use harness::*;
use serde_json::{Value, json};
use sync_server::auth::token::TokenRequest;
use sync_server::auth::{Auth, Keys, Role, Scope, Secret};
use sync_server::server::Config;
use tokio_tungstenite::tungstenite::Message;
use yrs::block::ClientID;
use yrs::sync::Message as YMessage;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Map, Transact};

// ---------------------------------------------------------------------------------------------
// Tokens

const SECRET: &[u8] = b"security tests: 0123456789abcdef0123456789abcdef";
const OTHER_SECRET: &[u8] = b"an attacker's own secret, also 32+ bytes long";
const HOUR: Duration = Duration::from_secs(3600);

fn keys() -> Keys {
    Keys::new(&Secret::new(SECRET).unwrap())
}

fn secured(keys: &Keys) -> Config {
    Config {
        auth: Auth::Tokens(Box::new(keys.clone())),
        ..config()
    }
}

/// A token for `scope` (`*` or a board id) and `role`, valid for an hour.
fn token(keys: &Keys, user: Option<&str>, scope: &str, role: Role) -> String {
    token_for(keys, user, scope, role, HOUR)
}

fn token_for(keys: &Keys, user: Option<&str>, scope: &str, role: Role, ttl: Duration) -> String {
    keys.mint(&TokenRequest {
        user: user.map(str::to_owned),
        scope: Scope::parse(scope).unwrap(),
        role,
        ttl,
    })
    .unwrap()
    .token
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn jwt(secret: &[u8], claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .unwrap()
}

/// Signed with the server's secret, but its `exp` has passed.
fn expired_token(board: &str, role: &str) -> String {
    let now = unix_now();
    jwt(
        SECRET,
        &json!({ "board": board, "role": role, "exp": now - 60, "iat": now - 120 }),
    )
}

/// Well-formed, unexpired, but signed with another secret.
fn forged_token(board: &str, role: &str) -> String {
    jwt(
        OTHER_SECRET,
        &json!({ "board": board, "role": role, "exp": unix_now() + 3600 }),
    )
}

/// A genuine token whose payload was swapped for "admin of every board", signature kept.
fn tampered_token(genuine: &str) -> String {
    let forged = forged_token("*", "admin");
    let payload = forged.split('.').nth(1).unwrap();
    let parts: Vec<&str> = genuine.split('.').collect();
    format!("{}.{payload}.{}", parts[0], parts[2])
}

/// `alg: none`, claiming admin of every board.
fn unsigned_token() -> String {
    let forged = forged_token("*", "admin");
    let payload = forged.split('.').nth(1).unwrap();
    // base64url of {"alg":"none","typ":"JWT"}
    format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.")
}

// ---------------------------------------------------------------------------------------------
// HTTP

async fn call(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    content_type: Option<&str>,
    body: &[u8],
) -> HttpResponse {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = Vec::new();
    if let Some(auth) = &auth {
        headers.push(("Authorization", auth.as_str()));
    }
    if let Some(ct) = content_type {
        headers.push(("Content-Type", ct));
    }
    http_request(addr, None, method, path, &headers, body).await
}

async fn get(addr: std::net::SocketAddr, path: &str, token: Option<&str>) -> HttpResponse {
    call(addr, "GET", path, token, None, &[]).await
}

async fn post_json(
    addr: std::net::SocketAddr,
    path: &str,
    token: Option<&str>,
    body: &Value,
) -> HttpResponse {
    let body = serde_json::to_vec(body).unwrap();
    call(addr, "POST", path, token, Some("application/json"), &body).await
}

async fn post_update(
    addr: std::net::SocketAddr,
    board: &str,
    token: Option<&str>,
    update: &[u8],
) -> HttpResponse {
    call(
        addr,
        "POST",
        &format!("/v1/boards/{board}/updates"),
        token,
        Some("application/octet-stream"),
        update,
    )
    .await
}

fn body_text(r: &HttpResponse) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

fn error_code(r: &HttpResponse) -> String {
    r.json()["error"]["code"].as_str().unwrap_or("").to_owned()
}

#[track_caller]
fn assert_unauthorized(r: &HttpResponse, what: &str) {
    assert_eq!(r.status, 401, "{what}: {}", body_text(r));
    assert_eq!(error_code(r), "unauthorized", "{what}: {}", body_text(r));
    assert!(
        r.json()["error"]["message"].is_string(),
        "{what}: {}",
        body_text(r)
    );
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer"),
        "{what}: a 401 says how to authenticate"
    );
}

#[track_caller]
fn assert_forbidden(r: &HttpResponse, what: &str) {
    assert_eq!(r.status, 403, "{what}: {}", body_text(r));
    assert_eq!(error_code(r), "forbidden", "{what}: {}", body_text(r));
    assert_eq!(r.header("www-authenticate"), None, "{what}");
}

/// A Yjs update adding one note, from a fresh client.
fn note_update(id: &str, text: &str) -> Vec<u8> {
    put_note(&new_doc(), id, text)
}

/// The notes of a board as `GET /v1/boards/{id}/state` serves them.
async fn served_notes(
    addr: std::net::SocketAddr,
    board: &str,
    token: Option<&str>,
) -> std::collections::BTreeMap<String, String> {
    let state = get(addr, &format!("/v1/boards/{board}/state"), token).await;
    assert_eq!(state.status, 200, "{}", body_text(&state));
    notes(&doc_from(&state.body))
}

fn sync_path(board: &str, token: &str) -> String {
    format!("/v1/sync/{board}?token={token}")
}

// ---------------------------------------------------------------------------------------------
// Metrics

async fn scrape(addr: std::net::SocketAddr) -> String {
    let r = http(addr, "GET", "/metrics", None, &[]).await;
    assert_eq!(r.status, 200);
    String::from_utf8(r.body).unwrap()
}

/// The value of the sample `series` (the name with its labels exactly as rendered, e.g.
/// `sync_errors_total{kind="unauthorized"}`), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse::<f64>().unwrap())
    })
}

/// A sample's value; absent counts as zero (a labelled counter not yet incremented).
fn value(text: &str, series: &str) -> f64 {
    sample(text, series).unwrap_or(0.0)
}

fn errors(text: &str, kind: &str) -> f64 {
    value(text, &format!("sync_errors_total{{kind=\"{kind}\"}}"))
}

/// Waits until the metric `series` satisfies `pred`; returns the last scrape.
async fn wait_metric(
    addr: std::net::SocketAddr,
    series: &str,
    pred: impl Fn(f64) -> bool,
) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = scrape(addr).await;
        if pred(value(&text, series)) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{series} stayed at {} in:\n{text}",
            value(&text, series)
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Awareness

/// Every awareness JSON a client has received for `client`, in order.
fn awareness_history(c: &TestClient, client: ClientID) -> Vec<String> {
    c.with(|s| {
        s.seen
            .awareness
            .iter()
            .filter_map(|u| u.clients.get(&client).map(|e| e.json.to_string()))
            .collect()
    })
}

/// The reasons of the y-protocols auth "permission denied" messages a client received.
fn permission_denials(c: &TestClient) -> Vec<String> {
    c.with(|s| {
        s.seen
            .unknown
            .iter()
            .filter_map(|frame| match YMessage::decode_v1(frame) {
                Ok(YMessage::Auth(reason)) => Some(reason.unwrap_or_default()),
                _ => None,
            })
            .collect()
    })
}

// =============================================================================================
// Tokens on HTTP

/// No token, a malformed, forged, tampered, unsigned (`alg: none`) or expired one: 401 with
/// `WWW-Authenticate: Bearer` and code `unauthorized`, and the body never echoes the token.
/// A valid one gets through; the token only counts in `Authorization: Bearer`, not in `?token=`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_refuses_missing_and_invalid_tokens() {
    let keys = keys();
    let server = TestServer::start(secured(&keys), memory_store().await).await;
    let addr = server.addr;
    let admin = token(&keys, Some("root"), "*", Role::Admin);
    assert_eq!(
        post_json(addr, "/v1/boards", Some(&admin), &json!({"id": "guarded"}))
            .await
            .status,
        201
    );
    let reader = token(&keys, Some("reader"), "guarded", Role::Read);
    let path = "/v1/boards/guarded";

    assert_unauthorized(&get(addr, path, None).await, "no token");
    let no_token = get(addr, path, None).await;
    assert!(
        no_token.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("token"),
        "the message says a token is needed: {}",
        body_text(&no_token)
    );
    let bad_tokens = [
        ("malformed", "not-a-jwt".to_owned()),
        ("empty bearer", String::new()),
        ("forged", forged_token("guarded", "read")),
        ("tampered payload", tampered_token(&reader)),
        ("alg none", unsigned_token()),
        ("expired", expired_token("guarded", "admin")),
        (
            "the secret itself",
            String::from_utf8(SECRET.to_vec()).unwrap(),
        ),
    ];
    for (what, bad) in &bad_tokens {
        let r = get(addr, path, Some(bad)).await;
        assert_unauthorized(&r, what);
        if !bad.is_empty() {
            assert!(
                !body_text(&r).contains(bad.as_str()),
                "{what}: the error body echoes the token"
            );
        }
    }
    let expired = get(addr, path, Some(&expired_token("guarded", "admin"))).await;
    assert!(
        expired.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{}",
        body_text(&expired)
    );
    // Tokens are read from the Authorization header only, not from the query string.
    assert_unauthorized(
        &get(addr, &format!("{path}?token={reader}"), None).await,
        "token in the query string of an HTTP route",
    );
    // A scheme other than Bearer is not a token.
    let basic = http_request(
        addr,
        None,
        "GET",
        path,
        &[("Authorization", &format!("Basic {reader}"))],
        &[],
    )
    .await;
    assert_unauthorized(&basic, "Basic scheme");

    let ok = get(addr, path, Some(&reader)).await;
    assert_eq!(ok.status, 200, "{}", body_text(&ok));
    // The scheme is case-insensitive.
    let lower = http_request(
        addr,
        None,
        "GET",
        path,
        &[("Authorization", &format!("bearer {reader}"))],
        &[],
    )
    .await;
    assert_eq!(lower.status, 200, "{}", body_text(&lower));

    server.shutdown().await.unwrap();
}

/// Roles and scopes on every board route: GET board/state/versions need `read`; POST updates,
/// versions, restore and create need `write`; DELETE board or version needs `admin`; listing
/// boards needs a `*` token. A token for another board is refused whatever its role. Versions
/// record the token's user as author, not what the body claims.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_roles_and_board_scope() {
    let keys = keys();
    let server = TestServer::start(secured(&keys), memory_store().await).await;
    let addr = server.addr;
    let board = "roles";
    let read = token(&keys, Some("rita"), board, Role::Read);
    let write = token(&keys, Some("wendy"), board, Role::Write);
    let admin = token(&keys, Some("ada"), board, Role::Admin);
    let elsewhere_admin = token(&keys, Some("eve"), "elsewhere", Role::Admin);
    let all_read = token(&keys, Some("auditor"), "*", Role::Read);
    let all_write = token(&keys, Some("service"), "*", Role::Write);

    let created = post_json(addr, "/v1/boards", Some(&write), &json!({"id": board})).await;
    assert_eq!(created.status, 201, "{}", body_text(&created));
    assert_eq!(
        post_update(addr, board, Some(&write), &note_update("n0", "first"))
            .await
            .status,
        204
    );
    let version = post_json(
        addr,
        &format!("/v1/boards/{board}/versions"),
        Some(&write),
        &json!({"label": "v1", "author": "mallory"}),
    )
    .await;
    assert_eq!(version.status, 201, "{}", body_text(&version));
    assert_eq!(
        version.json()["author"],
        "wendy",
        "the author is the token's user, not the one the body claims"
    );
    let v = version.json()["id"].as_i64().unwrap();

    // Non-destructive routes: (method, path, content type, body, role needed, success status).
    type Route = (
        &'static str,
        String,
        Option<&'static str>,
        Vec<u8>,
        Role,
        u16,
    );
    let routes = |i: usize| -> Vec<Route> {
        vec![
            (
                "GET",
                format!("/v1/boards/{board}"),
                None,
                vec![],
                Role::Read,
                200,
            ),
            (
                "GET",
                format!("/v1/boards/{board}/state"),
                None,
                vec![],
                Role::Read,
                200,
            ),
            (
                "GET",
                format!("/v1/boards/{board}/versions"),
                None,
                vec![],
                Role::Read,
                200,
            ),
            (
                "GET",
                format!("/v1/boards/{board}/versions/{v}"),
                None,
                vec![],
                Role::Read,
                200,
            ),
            (
                "POST",
                format!("/v1/boards/{board}/updates"),
                Some("application/octet-stream"),
                note_update(&format!("n-{i}"), "x"),
                Role::Write,
                204,
            ),
            (
                "POST",
                format!("/v1/boards/{board}/versions"),
                Some("application/json"),
                br#"{"label":"again"}"#.to_vec(),
                Role::Write,
                201,
            ),
        ]
    };
    let callers: [(&str, &str, Option<Role>); 6] = [
        ("read", &read, Some(Role::Read)),
        ("write", &write, Some(Role::Write)),
        ("admin", &admin, Some(Role::Admin)),
        ("admin of another board", &elsewhere_admin, None),
        ("read of every board", &all_read, Some(Role::Read)),
        ("write of every board", &all_write, Some(Role::Write)),
    ];
    let mut failures = Vec::new();
    for (i, (who, tok, role)) in callers.iter().enumerate() {
        for (method, path, ct, body, needed, success) in routes(i) {
            let r = call(addr, method, &path, Some(tok), ct, &body).await;
            let allowed = role.is_some_and(|r| r >= needed);
            let ok = if allowed {
                r.status == success
            } else {
                r.status == 403 && error_code(&r) == "forbidden"
            };
            if !ok {
                failures.push(format!(
                    "{who}: {method} {path}: got {} {}, expected {}",
                    r.status,
                    body_text(&r),
                    if allowed { success } else { 403 }
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    // Refused writes changed nothing: only the allowed callers' notes are there.
    let served = served_notes(addr, board, Some(&read)).await;
    let expected: Vec<&str> = vec!["n-1", "n-2", "n-5", "n0"];
    assert_eq!(
        served.keys().map(String::as_str).collect::<Vec<_>>(),
        expected
    );
    // Restoring is writing.
    for (who, tok, role) in &callers {
        let r = post_json(
            addr,
            &format!("/v1/boards/{board}/restore"),
            Some(tok),
            &json!({ "version": v }),
        )
        .await;
        if role.is_some_and(|r| r >= Role::Write) {
            assert_eq!(r.status, 200, "{who}: {}", body_text(&r));
        } else {
            assert_forbidden(&r, &format!("{who}: restore"));
        }
    }
    let restored = served_notes(addr, board, Some(&read)).await;
    assert_eq!(restored.keys().collect::<Vec<_>>(), ["n0"]);

    // Creating a board needs write on that board id; a random id needs a `*` token.
    let new_board = token(&keys, None, "roles-new", Role::Write);
    for (who, tok, body) in [
        (
            "read of the new board",
            token(&keys, None, "roles-new", Role::Read),
            json!({"id": "roles-new"}),
        ),
        (
            "write of another board",
            write.clone(),
            json!({"id": "roles-new"}),
        ),
        (
            "a board-scoped token without an id",
            new_board.clone(),
            json!({}),
        ),
        (
            "read of every board",
            all_read.clone(),
            json!({"id": "roles-new"}),
        ),
    ] {
        assert_forbidden(&post_json(addr, "/v1/boards", Some(&tok), &body).await, who);
    }
    assert_eq!(
        post_json(
            addr,
            "/v1/boards",
            Some(&new_board),
            &json!({"id": "roles-new"})
        )
        .await
        .status,
        201
    );
    let random = post_json(addr, "/v1/boards", Some(&all_write), &json!({})).await;
    assert_eq!(random.status, 201, "{}", body_text(&random));

    // Listing needs a token for every board.
    for (who, tok) in [("board admin", &admin), ("board read", &read)] {
        assert_forbidden(&get(addr, "/v1/boards", Some(tok)).await, who);
    }
    let list = get(addr, "/v1/boards", Some(&all_read)).await;
    assert_eq!(list.status, 200);
    assert_eq!(list.json()["boards"].as_array().unwrap().len(), 3);

    // Deleting a version, then the board, needs admin.
    let version_path = format!("/v1/boards/{board}/versions/{v}");
    for (who, tok) in [
        ("read", &read),
        ("write", &write),
        ("write of every board", &all_write),
        ("admin of another board", &elsewhere_admin),
    ] {
        assert_forbidden(
            &call(addr, "DELETE", &version_path, Some(tok), None, &[]).await,
            who,
        );
        assert_forbidden(
            &call(
                addr,
                "DELETE",
                &format!("/v1/boards/{board}"),
                Some(tok),
                None,
                &[],
            )
            .await,
            who,
        );
    }
    assert_eq!(get(addr, &version_path, Some(&read)).await.status, 200);
    assert_eq!(
        call(addr, "DELETE", &version_path, Some(&admin), None, &[])
            .await
            .status,
        204
    );
    assert_eq!(get(addr, &version_path, Some(&read)).await.status, 404);
    assert_eq!(
        call(
            addr,
            "DELETE",
            &format!("/v1/boards/{board}"),
            Some(&admin),
            None,
            &[]
        )
        .await
        .status,
        204
    );
    assert_eq!(
        get(addr, &format!("/v1/boards/{board}"), Some(&admin))
            .await
            .status,
        404
    );

    server.shutdown().await.unwrap();
}

/// A caller without access learns nothing about which boards exist: 401 without a token and
/// 403 with another board's token, for existing and missing boards alike; 404 only for a
/// caller whose token covers the board.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_is_checked_before_existence() {
    let keys = keys();
    let server = TestServer::start(secured(&keys), memory_store().await).await;
    let addr = server.addr;
    let admin = token(&keys, None, "*", Role::Admin);
    assert_eq!(
        post_json(addr, "/v1/boards", Some(&admin), &json!({"id": "exists"}))
            .await
            .status,
        201
    );
    let outsider = token(&keys, Some("outsider"), "mine", Role::Admin);
    for board in ["exists", "missing"] {
        for (method, path) in [
            ("GET", format!("/v1/boards/{board}")),
            ("GET", format!("/v1/boards/{board}/state")),
            ("GET", format!("/v1/boards/{board}/versions")),
            ("GET", format!("/v1/boards/{board}/versions/1")),
            ("POST", format!("/v1/boards/{board}/updates")),
            ("DELETE", format!("/v1/boards/{board}")),
            ("DELETE", format!("/v1/boards/{board}/versions/1")),
        ] {
            let what = format!("{method} {path}");
            assert_unauthorized(&call(addr, method, &path, None, None, &[]).await, &what);
            assert_forbidden(
                &call(addr, method, &path, Some(&outsider), None, &[]).await,
                &what,
            );
        }
    }
    let own = token(&keys, None, "missing", Role::Read);
    let r = get(addr, "/v1/boards/missing", Some(&own)).await;
    assert_eq!(r.status, 404, "{}", body_text(&r));
    assert_eq!(error_code(&r), "board_not_found");

    server.shutdown().await.unwrap();
}

/// `POST /v1/tokens` mints tokens for admins of the scope asked for (ttl in seconds or as a
/// duration); the minted token works with exactly its role and board.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_endpoint_mints_for_admins_of_the_scope() {
    let keys = keys();
    let server = TestServer::start(secured(&keys), memory_store().await).await;
    let addr = server.addr;
    let board_admin = token(&keys, Some("ada"), "minty", Role::Admin);
    let root = token(&keys, Some("root"), "*", Role::Admin);
    assert_eq!(
        post_json(
            addr,
            "/v1/boards",
            Some(&board_admin),
            &json!({"id": "minty"})
        )
        .await
        .status,
        201
    );

    let minted = post_json(
        addr,
        "/v1/tokens",
        Some(&board_admin),
        &json!({"board": "minty", "role": "read", "ttl": "10m", "user": "guest"}),
    )
    .await;
    assert_eq!(minted.status, 201, "{}", body_text(&minted));
    let body = minted.json();
    assert_eq!(body["board"], "minty");
    assert_eq!(body["role"], "read");
    assert_eq!(body["user"], "guest");
    let expires = body["expires_at"].as_u64().unwrap();
    let now = unix_now();
    assert!(
        (now + 590..=now + 601).contains(&expires),
        "10 minutes from now: {expires} vs {now}"
    );
    let guest = body["token"].as_str().unwrap().to_owned();
    let grant = keys.verify(&guest).unwrap();
    assert_eq!(grant.role, Role::Read);
    assert_eq!(grant.user.as_deref(), Some("guest"));
    assert_eq!(
        get(addr, "/v1/boards/minty", Some(&guest)).await.status,
        200
    );
    assert_forbidden(
        &post_update(addr, "minty", Some(&guest), &note_update("g", "guest")).await,
        "the minted read token cannot write",
    );
    assert_forbidden(
        &get(addr, "/v1/boards/other", Some(&guest)).await,
        "the minted token is for its board only",
    );

    // ttl in seconds.
    let seconds = post_json(
        addr,
        "/v1/tokens",
        Some(&board_admin),
        &json!({"board": "minty", "role": "write", "ttl": 60}),
    )
    .await;
    assert_eq!(seconds.status, 201, "{}", body_text(&seconds));
    let expires = seconds.json()["expires_at"].as_u64().unwrap();
    assert!(
        (now + 55..=now + 62).contains(&expires),
        "{expires} vs {now}"
    );

    // Who may mint what.
    let refusals = [
        (
            "a write token",
            token(&keys, None, "minty", Role::Write),
            json!({"board": "minty", "role": "read"}),
        ),
        (
            "an admin of another board",
            board_admin.clone(),
            json!({"board": "other", "role": "read"}),
        ),
        (
            "a board admin minting for every board",
            board_admin.clone(),
            json!({"board": "*", "role": "read"}),
        ),
        (
            "a read token for every board",
            token(&keys, None, "*", Role::Read),
            json!({"board": "minty", "role": "read"}),
        ),
    ];
    for (who, tok, request) in &refusals {
        assert_forbidden(
            &post_json(addr, "/v1/tokens", Some(tok), request).await,
            who,
        );
    }
    assert_unauthorized(
        &post_json(
            addr,
            "/v1/tokens",
            None,
            &json!({"board": "minty", "role": "admin"}),
        )
        .await,
        "no token",
    );
    assert_unauthorized(
        &post_json(
            addr,
            "/v1/tokens",
            Some(&forged_token("*", "admin")),
            &json!({"board": "minty", "role": "admin"}),
        )
        .await,
        "a forged admin token",
    );
    let all = post_json(
        addr,
        "/v1/tokens",
        Some(&root),
        &json!({"board": "*", "role": "read"}),
    )
    .await;
    assert_eq!(all.status, 201, "{}", body_text(&all));
    let auditor = all.json()["token"].as_str().unwrap().to_owned();
    assert_eq!(get(addr, "/v1/boards", Some(&auditor)).await.status, 200);

    // Bad lifetimes are refused.
    for ttl in [json!(0), json!("forever"), json!(400 * 24 * 3600)] {
        let r = post_json(
            addr,
            "/v1/tokens",
            Some(&root),
            &json!({"board": "minty", "role": "read", "ttl": ttl}),
        )
        .await;
        assert_eq!(r.status, 400, "ttl {ttl}: {}", body_text(&r));
    }

    server.shutdown().await.unwrap();

    // In open development mode the server has no secret and mints nothing.
    let open = TestServer::start(config(), memory_store().await).await;
    let r = post_json(
        open.addr,
        "/v1/tokens",
        None,
        &json!({"board": "minty", "role": "read"}),
    )
    .await;
    assert_eq!(r.status, 409, "{}", body_text(&r));
    assert_eq!(error_code(&r), "auth_disabled");
    open.shutdown().await.unwrap();
}

// =============================================================================================
// Tokens on WebSocket

/// Refused connections upgrade, then close with 4401 (missing, malformed, forged, tampered,
/// expired) or 4403 (another board), with the documented reasons; a valid token connects via
/// `?token=` or `Authorization: Bearer`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_refusals_close_with_4401_and_4403() {
    let keys = keys();
    let server = TestServer::start(secured(&keys), memory_store().await).await;
    let addr = server.addr;
    let board = "ws-auth";
    let good = token(&keys, Some("alice"), board, Role::Write);
    let cases = [
        (
            "no token",
            format!("/v1/sync/{board}"),
            4401,
            "token required",
        ),
        (
            "empty token",
            format!("/v1/sync/{board}?token="),
            4401,
            "token required",
        ),
        (
            "malformed",
            sync_path(board, "garbage"),
            4401,
            "invalid token",
        ),
        (
            "forged",
            sync_path(board, &forged_token(board, "write")),
            4401,
            "invalid token",
        ),
        (
            "tampered",
            sync_path(board, &tampered_token(&good)),
            4401,
            "invalid token",
        ),
        (
            "alg none",
            sync_path(board, &unsigned_token()),
            4401,
            "invalid token",
        ),
        (
            "expired",
            sync_path(board, &expired_token(board, "write")),
            4401,
            "token expired",
        ),
        (
            "another board's admin token",
            sync_path(board, &token(&keys, None, "other-board", Role::Admin)),
            4403,
            "the token does not cover this board",
        ),
    ];
    let mut failures = Vec::new();
    for (what, path, code, reason) in &cases {
        let mut socket = ws_connect(addr, path).await;
        let got = expect_close_frame(&mut socket, WAIT).await;
        if got != (*code, (*reason).to_owned()) {
            failures.push(format!(
                "{what}: got {got:?}, expected ({code}, {reason:?})"
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");

    // Refused connections never joined: the board was not even loaded or created.
    let metrics = scrape(addr).await;
    assert_eq!(value(&metrics, "sync_connections_opened_total"), 0.0);
    assert_eq!(errors(&metrics, "unauthorized"), 7.0, "{metrics}");
    assert_eq!(errors(&metrics, "forbidden"), 1.0, "{metrics}");
    let root = token(&keys, None, "*", Role::Admin);
    assert_eq!(
        get(addr, &format!("/v1/boards/{board}"), Some(&root))
            .await
            .status,
        404
    );

    // A valid token in the query string, or in the Authorization header.
    let a = TestClient::connect_path(addr, "query", &sync_path(board, &good)).await;
    a.wait_synced().await;
    let bearer = format!("Bearer {good}");
    let socket = ws_connect_with(
        addr,
        None,
        &format!("/v1/sync/{board}"),
        &[("Authorization", &bearer)],
    )
    .await
    .unwrap();
    let (mut sink, mut stream) = socket.split();
    let first = tokio::time::timeout(WAIT, stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        matches!(&first, Message::Binary(b) if b.first() == Some(&0)),
        "the server's sync step 1, not a close: {first:?}"
    );
    // The header connection can write: its update reaches the query-string client.
    let update = note_update("via-header", "bearer");
    sink.send(Message::Binary(sync_server::protocol::update(&update)))
        .await
        .unwrap();
    a.wait_note("via-header").await;
    assert!(a.is_open());

    server.shutdown().await.unwrap();
}

/// A token that expires while connected closes that connection with 4401 "token expired" at its
/// `exp` (not before); a connection with a longer token on the same board carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_expiring_while_connected_closes_with_4401() {
    let keys = keys();
    let server = TestServer::start(secured(&keys), memory_store().await).await;
    let addr = server.addr;
    let board = "expiry";
    let short = keys
        .mint(&TokenRequest {
            user: Some("brief".into()),
            scope: Scope::parse(board).unwrap(),
            role: Role::Write,
            ttl: Duration::from_secs(2),
        })
        .unwrap();
    let long = token(&keys, Some("lasting"), board, Role::Write);
    let brief = TestClient::connect_path(addr, "brief", &sync_path(board, &short.token)).await;
    let lasting = TestClient::connect_path(addr, "lasting", &sync_path(board, &long)).await;
    brief.wait_synced().await;
    lasting.wait_synced().await;
    brief.put_note("before-expiry", "ok");
    lasting.wait_note("before-expiry").await;

    let (code, reason) = brief.wait_close_frame_within(Duration::from_secs(5)).await;
    let closed_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert_eq!((code, reason.as_str()), (4401, "token expired"));
    assert!(
        closed_at >= short.expires_at as f64 - 0.05,
        "closed at {closed_at}, before the token's exp {}",
        short.expires_at
    );
    assert!(
        closed_at < short.expires_at as f64 + 1.5,
        "closed at {closed_at}, long after the token's exp {}",
        short.expires_at
    );
    lasting.put_note("after-expiry", "still here");
    lasting.barrier().await;
    assert!(lasting.is_open());
    let reconnect =
        TestClient::connect_path(addr, "expired", &sync_path(board, &short.token)).await;
    assert_eq!(
        reconnect.wait_close_frame_within(WAIT).await,
        (4401, "token expired".to_owned()),
        "the expired token cannot reconnect"
    );
    assert!(
        served_notes(addr, board, Some(&long))
            .await
            .contains_key("after-expiry")
    );

    server.shutdown().await.unwrap();
}

/// A `read` connection receives the board and live updates and may show its own presence, but
/// the document content it sends is never applied nor broadcast: it gets a y-protocols
/// permission-denied message instead, and stays connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_connection_receives_but_cannot_write() {
    let keys = keys();
    let server = TestServer::start(secured(&keys), memory_store().await).await;
    let addr = server.addr;
    let board = "read-only";
    let write = token(&keys, Some("alice"), board, Role::Write);
    let read = token(&keys, Some("bob"), board, Role::Read);

    let writer = TestClient::connect_path(
        addr,
        "writer",
        &format!("{}&ack=1", sync_path(board, &write)),
    )
    .await;
    writer.wait_synced().await;
    writer.put_note("before", "written before the reader came");
    writer.wait_all_acked().await;

    let reader = TestClient::connect_path(addr, "reader", &sync_path(board, &read)).await;
    reader.wait_synced().await;
    assert!(reader.notes().contains_key("before"), "receives the board");
    writer.put_note("live", "live update");
    reader.wait_note("live").await;
    reader.barrier().await;
    assert!(
        permission_denials(&reader).is_empty(),
        "an empty sync step 2 from a reader is not refused"
    );

    // The reader edits: refused with a permission-denied message, not applied, not broadcast.
    reader.put_note("sneaky", "should not land");
    reader
        .wait_for("a permission-denied message", |s| {
            !s.seen.unknown.is_empty()
        })
        .await;
    let denials = permission_denials(&reader);
    assert_eq!(denials.len(), 1, "{denials:?}");
    assert!(denials[0].contains("read-only"), "{denials:?}");
    reader.with(|s| {
        let frame = &s.seen.unknown[0];
        assert_eq!(&frame[..2], &[2, 0], "y-protocols auth, permission denied");
    });
    // Also as a sync step 2 (what a client sends answering the server's step 1).
    reader.send_raw(
        YMessage::Sync(yrs::sync::SyncMessage::SyncStep2(note_update(
            "sneaky-2", "step 2",
        )))
        .encode_v1(),
    );
    reader
        .wait_for("a second permission-denied message", |s| {
            s.seen.unknown.len() >= 2
        })
        .await;
    reader.barrier().await;
    writer.barrier().await;
    assert!(reader.is_open(), "a refused edit does not close the reader");
    let writer_notes = writer.notes();
    assert!(
        !writer_notes.contains_key("sneaky") && !writer_notes.contains_key("sneaky-2"),
        "the writer received the reader's edit: {writer_notes:?}"
    );
    let served = served_notes(addr, board, Some(&read)).await;
    assert_eq!(
        served.keys().collect::<Vec<_>>(),
        ["before", "live"],
        "the server applied the reader's edit"
    );

    // The reader still receives live updates, and its own awareness works.
    writer.put_note("after", "after the refusal");
    reader.wait_note("after").await;
    let id = reader.client_id();
    let presence = r#"{"user":{"name":"bob"}}"#;
    reader.send_raw(awareness_frame(&[(id, 1, presence)]));
    writer
        .wait_for("the reader's presence", |s| {
            s.seen.awareness_of(id).as_deref() == Some(presence)
        })
        .await;
    reader
        .wait_for("the echo of the reader's presence", |s| {
            s.seen.awareness_of(id).as_deref() == Some(presence)
        })
        .await;

    let metrics = scrape(addr).await;
    assert_eq!(errors(&metrics, "read_only_update"), 2.0, "{metrics}");
    assert!(reader.is_open() && writer.is_open());
    server.shutdown().await.unwrap();
}

/// PROTOCOL.md: "A board is created on its first connection (by a token with the `write`
/// role)". A read-only token naming a board that does not exist must not create it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_connection_does_not_create_boards() {
    let keys = keys();
    let server = TestServer::start(secured(&keys), memory_store().await).await;
    let addr = server.addr;
    let root = token(&keys, None, "*", Role::Admin);
    let read = token(&keys, Some("bob"), "ghost", Role::Read);
    let reader = TestClient::connect_path(addr, "reader", &sync_path("ghost", &read)).await;
    // Whatever the server does with the connection (refuse it, or serve an empty board), it
    // answers or closes within a moment.
    reader
        .wait_for("a step 2 or a close", |s| {
            s.seen.step2 > 0 || s.seen.close.is_some() || s.seen.ended
        })
        .await;
    let boards = get(addr, "/v1/boards", Some(&root)).await;
    let ids: Vec<String> = boards.json()["boards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        ids.is_empty(),
        "a read-only connection created a board: {ids:?}"
    );
    server.shutdown().await.unwrap();
}

/// A connection may not change or erase the awareness state of a client owned by another
/// user's connection: the entries are dropped (counted as `awareness_spoof`), the rest of the
/// update goes through, and nobody, the owner included, sees the change. Tokens without a user
/// are not the same user either. Another connection of the same user may take its state over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awareness_of_another_user_cannot_be_spoofed() {
    let keys = keys();
    let server = TestServer::start(secured(&keys), memory_store().await).await;
    let addr = server.addr;
    let board = "presence";
    let path = |user: Option<&str>, role| sync_path(board, &token(&keys, user, board, role));
    let alice = TestClient::connect_path(addr, "alice", &path(Some("alice"), Role::Write)).await;
    let carol = TestClient::connect_path(addr, "carol", &path(Some("carol"), Role::Read)).await;
    let mallory =
        TestClient::connect_path(addr, "mallory", &path(Some("mallory"), Role::Admin)).await;
    for c in [&alice, &carol, &mallory] {
        c.wait_synced().await;
    }
    let a = alice.client_id();
    let original = r#"{"user":{"name":"alice"}}"#;
    alice.send_raw(awareness_frame(&[(a, 1, original)]));
    for c in [&carol, &mallory] {
        c.wait_for("alice's presence", |s| {
            s.seen.awareness_of(a).as_deref() == Some(original)
        })
        .await;
    }

    // Mallory erases alice's state, then sends her own together with a fake one for alice.
    let m = mallory.client_id();
    let own = r#"{"user":{"name":"mallory"}}"#;
    mallory.send_raw(awareness_frame(&[(a, 2, "null")]));
    mallory.send_raw(awareness_frame(&[
        (m, 1, own),
        (a, 3, r#"{"user":{"name":"alice (really mallory)"}}"#),
    ]));
    // Mallory's own entry arrives: anything before it from her connection has been handled.
    for c in [&alice, &carol, &mallory] {
        c.wait_for("mallory's own presence", |s| {
            s.seen.awareness_of(m).as_deref() == Some(own)
        })
        .await;
    }
    for c in [&alice, &carol, &mallory] {
        let history = awareness_history(c, a);
        assert!(
            history.iter().all(|json| json == original),
            "{} saw alice's presence changed by mallory: {history:?}",
            c.name
        );
    }
    let metrics = scrape(addr).await;
    assert_eq!(errors(&metrics, "awareness_spoof"), 2.0, "{metrics}");

    // The server kept alice's state at clock 1: her own next update (clock 2) is accepted.
    let moved = r#"{"user":{"name":"alice"},"cursor":{"x":1}}"#;
    alice.send_raw(awareness_frame(&[(a, 2, moved)]));
    carol
        .wait_for("alice's own update", |s| {
            s.seen.awareness_of(a).as_deref() == Some(moved)
        })
        .await;

    // A second connection of the same user (a reconnecting tab) may take the state over.
    let alice2 = TestClient::connect_path(addr, "alice-2", &path(Some("alice"), Role::Read)).await;
    alice2.wait_synced().await;
    let taken = r#"{"user":{"name":"alice","tab":2}}"#;
    alice2.send_raw(awareness_frame(&[(a, 5, taken)]));
    carol
        .wait_for("alice's second tab taking over", |s| {
            s.seen.awareness_of(a).as_deref() == Some(taken)
        })
        .await;

    // Two tokens naming no user are not the same user.
    let anon1 = TestClient::connect_path(addr, "anon-1", &path(None, Role::Write)).await;
    let anon2 = TestClient::connect_path(addr, "anon-2", &path(None, Role::Write)).await;
    anon1.wait_synced().await;
    anon2.wait_synced().await;
    let n = anon1.client_id();
    let anon_state = r#"{"user":{"name":"anonymous 1"}}"#;
    anon1.send_raw(awareness_frame(&[(n, 1, anon_state)]));
    carol
        .wait_for("anon-1's presence", |s| {
            s.seen.awareness_of(n).as_deref() == Some(anon_state)
        })
        .await;
    let n2 = anon2.client_id();
    anon2.send_raw(awareness_frame(&[(n, 2, "null")]));
    anon2.send_raw(awareness_frame(&[(
        n2,
        1,
        r#"{"user":{"name":"anonymous 2"}}"#,
    )]));
    carol
        .wait_for("anon-2's own presence", |s| {
            s.seen.awareness_of(n2).is_some()
        })
        .await;
    assert_eq!(
        awareness_history(&carol, n),
        [anon_state],
        "an anonymous token erased another anonymous token's presence"
    );
    let metrics = scrape(addr).await;
    assert_eq!(errors(&metrics, "awareness_spoof"), 3.0, "{metrics}");

    server.shutdown().await.unwrap();
}

// =============================================================================================
// Limits

/// A WebSocket message over `max_message_bytes` closes with 4413 "message too large"; an HTTP
/// body over it is answered 413. Others on the board are unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_messages_are_refused() {
    let mut cfg = config();
    cfg.limits.max_message_bytes = 32 << 10;
    let server = TestServer::start(cfg, memory_store().await).await;
    let addr = server.addr;
    let other = TestClient::connect(addr, "big", false).await;
    let big = TestClient::connect(addr, "big", false).await;
    other.wait_synced().await;
    big.wait_synced().await;
    // Just under the limit is fine.
    big.put_note("fits", &"x".repeat(24 << 10));
    other.wait_note("fits").await;
    big.put_note("too-big", &"y".repeat(40 << 10));
    assert_eq!(
        big.wait_close_frame_within(WAIT).await,
        (4413, "message too large".to_owned())
    );
    other.put_note("after", "still here");
    other.barrier().await;
    assert!(!other.notes().contains_key("too-big"));
    assert!(other.is_open());
    let r = http(
        addr,
        "POST",
        "/v1/boards/big/updates",
        Some("application/octet-stream"),
        &note_update("http-big", &"z".repeat(40 << 10)),
    )
    .await;
    assert_eq!(r.status, 413, "{}", body_text(&r));
    assert!(
        !served_notes(addr, "big", None)
            .await
            .contains_key("http-big")
    );
    let metrics = scrape(addr).await;
    assert_eq!(errors(&metrics, "too_large"), 1.0, "{metrics}");
    server.shutdown().await.unwrap();
}

/// A connection sending faster than `message_rate` (beyond `message_burst`) is slowed down,
/// not closed: the server stops reading it until its budget refills, and every message it
/// sent is applied. (A client closed with a 44xx code would never reconnect: y-websocket
/// gives up on those, stranding the edits of a burst.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_client_is_slowed_down_not_closed() {
    let mut cfg = config();
    cfg.limits.message_rate = 100;
    cfg.limits.message_burst = 100;
    let server = TestServer::start(cfg, memory_store().await).await;
    let addr = server.addr;
    let calm = TestClient::connect(addr, "rate", false).await;
    calm.wait_synced().await;
    let burst = TestClient::connect(addr, "rate", true).await;
    burst.wait_synced().await;
    let started = Instant::now();
    for i in 0..300 {
        burst.put_note(&format!("burst-{i}"), "a paste");
    }
    // Every one of them arrives, acknowledged; none is lost.
    tokio::time::timeout(Duration::from_secs(20), burst.wait_all_acked())
        .await
        .expect("the burst is committed in time");
    let took = started.elapsed();
    calm.wait_note("burst-299").await;
    assert_eq!(calm.notes().len(), 300);
    assert!(burst.is_open(), "{:?}", burst.close_frame());
    // 200 messages past the burst at 100 a second: about 2 s.
    assert!(
        took >= Duration::from_millis(1500),
        "not slowed down: {took:?}"
    );
    let metrics = scrape(addr).await;
    assert!(errors(&metrics, "throttled") >= 1.0, "{metrics}");
    assert_eq!(errors(&metrics, "message_rate"), 0.0, "{metrics}");
    server.shutdown().await.unwrap();
}

/// A connection over its rate for most of its abuse window (a script that never slows down)
/// is closed with 1008, a code clients reconnect from; others on the board are not affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sustained_flooding_is_closed_with_1008() {
    let mut cfg = config();
    cfg.limits.message_rate = 20;
    cfg.limits.message_burst = 20;
    cfg.limits.abuse_window = Duration::from_secs(2);
    let server = TestServer::start(cfg, memory_store().await).await;
    let addr = server.addr;
    let calm = TestClient::connect(addr, "rate", false).await;
    calm.wait_synced().await;
    let flood = TestClient::connect(addr, "rate", false).await;
    flood.wait_synced().await;
    for _ in 0..400 {
        flood.send_raw(vec![3]); // query awareness: cheap for the client, a message all the same
    }
    assert_eq!(
        flood.wait_close_frame_within(Duration::from_secs(10)).await,
        (
            1008,
            "message rate exceeded for too long; slow down".to_owned()
        )
    );
    calm.put_note("after", "x");
    calm.barrier().await;
    assert!(calm.is_open(), "{:?}", calm.close_frame());
    let metrics = scrape(addr).await;
    assert_eq!(errors(&metrics, "message_rate"), 1.0, "{metrics}");
    server.shutdown().await.unwrap();
}

/// More than `max_connections_per_address` WebSockets from one address: the extra one is closed
/// with 4503; another address is not affected, and a slot frees up when a connection closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_address_are_limited() {
    let mut cfg = config();
    cfg.limits.max_connections_per_address = 2;
    let server = TestServer::start(cfg, memory_store().await).await;
    let addr = server.addr;
    let a = TestClient::connect(addr, "addr-a", false).await;
    let b = TestClient::connect(addr, "addr-b", false).await;
    a.wait_synced().await;
    b.wait_synced().await;
    let mut third = ws_connect(addr, "/v1/sync/addr-c").await;
    assert_eq!(
        expect_close_frame(&mut third, WAIT).await,
        (4503, "too many connections from this address".to_owned())
    );
    // Another client address (127.0.0.2 is loopback too) has its own count.
    let elsewhere: IpAddr = "127.0.0.2".parse().unwrap();
    let mut other = ws_connect_with(addr, Some(elsewhere), "/v1/sync/addr-c", &[])
        .await
        .unwrap();
    let first = tokio::time::timeout(WAIT, other.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        matches!(first, Message::Binary(_)),
        "another address is admitted: {first:?}"
    );

    a.close().await;
    let deadline = Instant::now() + WAIT;
    loop {
        let c = TestClient::connect(addr, "addr-c", false).await;
        c.wait_for("step 2 or close", |s| {
            s.seen.step2 > 0 || s.seen.close.is_some() || s.seen.ended
        })
        .await;
        if c.is_open() {
            break;
        }
        assert_eq!(c.close_frame().map(|c| c.0), Some(4503));
        assert!(
            Instant::now() < deadline,
            "the closed connection's slot was never released"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(b.is_open());
    let metrics = scrape(addr).await;
    assert!(errors(&metrics, "connection_limit") >= 1.0, "{metrics}");
    server.shutdown().await.unwrap();
}

/// A board with `max_connections` connections closes the next one with 4503; other boards are
/// unaffected and the board takes connections again once one leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_board_are_limited() {
    let mut cfg = config();
    cfg.board.max_connections = 2;
    let server = TestServer::start(cfg, memory_store().await).await;
    let addr = server.addr;
    let a = TestClient::connect(addr, "full", false).await;
    let b = TestClient::connect(addr, "full", false).await;
    a.wait_synced().await;
    b.wait_synced().await;
    let c = TestClient::connect(addr, "full", false).await;
    assert_eq!(
        c.wait_close_frame_within(WAIT).await,
        (4503, "the board has too many connections".to_owned())
    );
    let elsewhere = TestClient::connect(addr, "not-full", false).await;
    elsewhere.wait_synced().await;
    a.put_note("still", "works");
    b.wait_note("still").await;

    b.close().await;
    let deadline = Instant::now() + WAIT;
    let d = loop {
        let d = TestClient::connect(addr, "full", false).await;
        d.wait_for("step 2 or close", |s| {
            s.seen.step2 > 0 || s.seen.close.is_some() || s.seen.ended
        })
        .await;
        if d.is_open() {
            break d;
        }
        assert!(
            Instant::now() < deadline,
            "the board never took a connection again"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(d.notes().contains_key("still"));
    let metrics = scrape(addr).await;
    assert!(errors(&metrics, "connection_limit") >= 1.0, "{metrics}");
    server.shutdown().await.unwrap();
}

/// An update that would take a board past `max_board_bytes` is refused: the WebSocket sender is
/// closed with 4413 "board size limit reached", HTTP answers 413 `board_too_large`, nobody
/// receives it and the board's content is unchanged. Smaller updates still go in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn board_size_limit_refuses_updates() {
    let mut cfg = config();
    cfg.board.max_board_bytes = 4096;
    let server = TestServer::start(cfg, memory_store().await).await;
    let addr = server.addr;
    let writer = TestClient::connect(addr, "capped", true).await;
    let watcher = TestClient::connect(addr, "capped", false).await;
    writer.wait_synced().await;
    watcher.wait_synced().await;
    writer.put_note("small", "fits");
    writer.wait_all_acked().await;
    watcher.wait_note("small").await;
    let before = served_notes(addr, "capped", None).await;

    writer.put_note("huge", &"h".repeat(6000));
    assert_eq!(
        writer.wait_close_frame_within(WAIT).await,
        (4413, "board size limit reached".to_owned())
    );
    let r = http(
        addr,
        "POST",
        "/v1/boards/capped/updates",
        Some("application/octet-stream"),
        &note_update("huge-http", &"H".repeat(6000)),
    )
    .await;
    assert_eq!(r.status, 413, "{}", body_text(&r));
    assert_eq!(error_code(&r), "board_too_large");
    watcher.barrier().await;
    assert_eq!(watcher.notes(), before, "a refused update was broadcast");
    assert_eq!(served_notes(addr, "capped", None).await, before);
    assert!(watcher.is_open());

    // The board is not frozen: a small update still fits.
    let r = http(
        addr,
        "POST",
        "/v1/boards/capped/updates",
        Some("application/octet-stream"),
        &note_update("tiny", "t"),
    )
    .await;
    assert_eq!(r.status, 204, "{}", body_text(&r));
    watcher.wait_note("tiny").await;
    let metrics = scrape(addr).await;
    assert_eq!(errors(&metrics, "board_too_large"), 2.0, "{metrics}");
    server.shutdown().await.unwrap();
}

/// Past `http_burst`, an address gets 429 `rate_limited` with `Retry-After`, until it has
/// waited; `/healthz`, `/readyz` and `/metrics` are never limited; other addresses are not
/// affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_rate_limit_answers_429_with_retry_after() {
    let mut cfg = config();
    cfg.limits.http_rate = 1;
    cfg.limits.http_burst = 4;
    let server = TestServer::start(cfg, memory_store().await).await;
    let addr = server.addr;
    let mut statuses = Vec::new();
    let mut limited = None;
    for _ in 0..12 {
        let r = http(addr, "GET", "/v1/boards", None, &[]).await;
        statuses.push(r.status);
        if r.status == 429 {
            limited = Some(r);
        }
    }
    let refused = statuses.iter().filter(|&&s| s == 429).count();
    assert!(
        statuses.iter().all(|&s| s == 200 || s == 429),
        "{statuses:?}"
    );
    assert!(
        (6..=8).contains(&refused),
        "a burst of 4 (+1 per second) from 12 quick requests: {statuses:?}"
    );
    let limited = limited.unwrap();
    assert_eq!(error_code(&limited), "rate_limited");
    let retry: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "Retry-After: {retry}");

    for path in ["/healthz", "/readyz", "/metrics"] {
        for _ in 0..10 {
            let r = http(addr, "GET", path, None, &[]).await;
            assert_eq!(r.status, 200, "{path} is exempt from the rate limit");
        }
    }
    let elsewhere: IpAddr = "127.0.0.2".parse().unwrap();
    let r = http_request(addr, Some(elsewhere), "GET", "/v1/boards", &[], &[]).await;
    assert_eq!(r.status, 200, "another address has its own budget");

    tokio::time::sleep(Duration::from_secs(retry)).await;
    let r = http(addr, "GET", "/v1/boards", None, &[]).await;
    assert_eq!(r.status, 200, "allowed again after Retry-After");
    let metrics = scrape(addr).await;
    assert_eq!(errors(&metrics, "http_rate"), refused as f64, "{metrics}");
    server.shutdown().await.unwrap();
}

/// With `allowed_origins` set, an upgrade with another `Origin` is refused with HTTP 403 before
/// becoming a WebSocket; an allowed origin (case-insensitively) or none connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_origins_are_checked() {
    let mut cfg = config();
    cfg.limits.allowed_origins = vec!["https://app.example.com".into()];
    let server = TestServer::start(cfg, memory_store().await).await;
    let addr = server.addr;
    for origin in [
        "https://evil.example.com",
        "http://app.example.com",
        "https://app.example.com.evil.net",
        "null",
    ] {
        match ws_connect_with(addr, None, "/v1/sync/origins", &[("Origin", origin)]).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 403, "{origin}");
                let body = response.body().clone().unwrap_or_default();
                let json: Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(json["error"]["code"], "origin_not_allowed", "{origin}");
            }
            Err(e) => panic!("{origin}: expected an HTTP 403, got {e}"),
            Ok(_) => panic!("{origin}: a disallowed origin was upgraded"),
        }
    }
    for origin in [
        Some("https://app.example.com"),
        Some("HTTPS://App.Example.com"),
        None,
    ] {
        let headers: Vec<(&str, &str)> = origin.map(|o| ("Origin", o)).into_iter().collect();
        let mut socket = ws_connect_with(addr, None, "/v1/sync/origins", &headers)
            .await
            .unwrap_or_else(|e| panic!("{origin:?}: {e}"));
        let first = tokio::time::timeout(WAIT, socket.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(matches!(first, Message::Binary(_)), "{origin:?}: {first:?}");
    }
    let metrics = scrape(addr).await;
    assert_eq!(errors(&metrics, "origin_refused"), 4.0, "{metrics}");
    server.shutdown().await.unwrap();
}

/// While one client floods (slowed down, then closed with 1008, over and over) and another
/// keeps sending oversized frames (closed with 4413), two clients on the same board and two on
/// another keep exchanging updates: every update arrives, each round trip well under a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abusive_clients_do_not_slow_down_others() {
    let mut cfg = config();
    cfg.limits.message_rate = 50;
    cfg.limits.message_burst = 100;
    cfg.limits.abuse_window = Duration::from_millis(800);
    cfg.limits.max_message_bytes = 64 << 10;
    cfg.limits.http_rate = 0; // the abusers reconnect in a loop
    let server = TestServer::start(cfg, memory_store().await).await;
    let addr = server.addr;
    let s1 = TestClient::connect(addr, "storm", false).await;
    let s2 = TestClient::connect(addr, "storm", false).await;
    let c1 = TestClient::connect(addr, "calm", false).await;
    let c2 = TestClient::connect(addr, "calm", false).await;
    for c in [&s1, &s2, &c1, &c2] {
        c.wait_synced().await;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let floods = Arc::new(AtomicUsize::new(0));
    let flooder = tokio::spawn({
        let (stop, floods) = (stop.clone(), floods.clone());
        async move {
            let mut codes = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let socket = ws_connect(addr, "/v1/sync/storm").await;
                let (mut sink, mut stream) = socket.split();
                // Real document updates, from a fresh client each time, as fast as possible.
                let writer = tokio::spawn(async move {
                    let doc = new_doc();
                    let map = doc.get_or_insert_map("flood");
                    for i in 0..2000 {
                        let update = {
                            let mut txn = doc.transact_mut();
                            map.insert(&mut txn, format!("k{i}"), i);
                            txn.encode_update_v1()
                        };
                        let frame = sync_server::protocol::update(&update);
                        if sink.send(Message::Binary(frame)).await.is_err() {
                            break;
                        }
                    }
                });
                let code = tokio::time::timeout(WAIT, async {
                    while let Some(Ok(message)) = stream.next().await {
                        if let Message::Close(frame) = message {
                            return frame.map(|f| u16::from(f.code));
                        }
                    }
                    None
                })
                .await
                .unwrap_or(None);
                writer.abort();
                codes.push(code);
                floods.fetch_add(1, Ordering::SeqCst);
            }
            codes
        }
    });
    let oversized = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut codes = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let mut socket = ws_connect(addr, "/v1/sync/storm").await;
                let update = note_update("oversized", &"o".repeat(100 << 10));
                let _ = socket
                    .send(Message::Binary(sync_server::protocol::update(&update)))
                    .await;
                codes.push(expect_close_frame(&mut socket, WAIT).await);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            codes
        }
    });
    // Start measuring once the flood is under way.
    let deadline = Instant::now() + WAIT;
    while floods.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the flooder never got closed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let mut slowest = Duration::ZERO;
    for i in 0..25 {
        for (from, to, name) in [(&s1, &s2, "storm"), (&c2, &c1, "calm")] {
            let id = format!("{name}-{i}");
            let started = Instant::now();
            from.put_note(&id, "round trip");
            to.wait_note(&id).await;
            let took = started.elapsed();
            slowest = slowest.max(took);
            assert!(
                took < Duration::from_secs(1),
                "{id}: a round trip took {took:?} during the flood"
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let flood_codes = flooder.await.unwrap();
    let oversized_codes = oversized.await.unwrap();
    eprintln!(
        "flood isolation: slowest round trip {slowest:?}; {} flood and {} oversized connections",
        flood_codes.len(),
        oversized_codes.len()
    );
    assert!(flood_codes.len() >= 2, "{flood_codes:?}");
    assert!(
        flood_codes.iter().all(|c| *c == Some(1008)),
        "every flooding connection is closed with 1008: {flood_codes:?}"
    );
    assert!(!oversized_codes.is_empty());
    assert!(
        oversized_codes
            .iter()
            .all(|c| *c == (4413, "message too large".to_owned())),
        "{oversized_codes:?}"
    );
    for (a, b) in [(&s1, &s2), (&c1, &c2)] {
        a.barrier().await;
        b.barrier().await;
        assert!(a.is_open() && b.is_open());
        assert_eq!(a.notes(), b.notes());
        assert_eq!(a.notes().len(), 25);
    }
    assert_eq!(
        c1.with(|s| s.doc.get_or_insert_map("flood").len(&s.doc.transact())),
        0,
        "the other board received the flood"
    );
    assert!(
        s1.with(|s| s.doc.get_or_insert_map("flood").len(&s.doc.transact())) > 0,
        "the flood reached its board (it was real load)"
    );
    server.shutdown().await.unwrap();
}

// =============================================================================================
// Metrics and request ids

/// Every documented series is exposed, and the numbers move with what clients do: connections
/// 0 -> 2 -> 0, updates and their bytes counted exactly, commits, fanout, frames, versions,
/// compactions, evictions, errors by kind and HTTP requests by route. No board id, user or token
/// appears in the metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_exposed_and_move() {
    let keys = keys();
    let mut cfg = secured(&keys);
    cfg.board.compact_rows = 3;
    cfg.board.idle_timeout = Duration::from_millis(300);
    let server = TestServer::start(cfg, memory_store().await).await;
    let addr = server.addr;
    let board = "metrics-board-7f3a";
    let write = token(&keys, Some("metrics-user-alice"), board, Role::Write);

    let response = http(addr, "GET", "/metrics", None, &[]).await;
    assert_eq!(response.status, 200);
    assert!(
        response
            .header("content-type")
            .is_some_and(|ct| ct.starts_with("text/plain") || ct.contains("openmetrics")),
        "{:?}",
        response.header("content-type")
    );
    let start = String::from_utf8(response.body).unwrap();
    for (family, kind) in [
        ("sync_connections", "gauge"),
        ("sync_connections_opened", "counter"),
        ("sync_boards_loaded", "gauge"),
        ("sync_updates_received", "counter"),
        ("sync_update_bytes_received", "counter"),
        ("sync_frames_sent", "counter"),
        ("sync_pending_bytes", "gauge"),
        ("sync_commit_duration_seconds", "histogram"),
        ("sync_commit_updates", "histogram"),
        ("sync_fanout_delay_seconds", "histogram"),
        ("sync_outbound_queue_depth", "histogram"),
        ("sync_evictions", "counter"),
        ("sync_compactions", "counter"),
        ("sync_versions_saved", "counter"),
        ("sync_compactions_skipped", "counter"),
        ("sync_versions_skipped", "counter"),
        ("http_request_duration_seconds", "histogram"),
    ] {
        assert!(
            start.contains(&format!("# TYPE {family} {kind}\n")),
            "no {kind} {family} in:\n{start}"
        );
    }
    for series in [
        "sync_connections",
        "sync_connections_opened_total",
        "sync_boards_loaded",
        "sync_updates_received_total",
        "sync_update_bytes_received_total",
        "sync_frames_sent_total",
        "sync_pending_bytes",
        "sync_commit_duration_seconds_count",
        "sync_commit_duration_seconds_sum",
        "sync_commit_updates_count",
        "sync_fanout_delay_seconds_count",
        "sync_outbound_queue_depth_count",
        "sync_evictions_total",
        "sync_compactions_total",
        "sync_versions_saved_total",
        "sync_compactions_skipped_total",
        "sync_versions_skipped_total",
        "http_request_duration_seconds_count",
    ] {
        assert_eq!(
            sample(&start, series),
            Some(0.0),
            "{series} starts at 0:\n{start}"
        );
    }
    assert!(start.contains("sync_commit_duration_seconds_bucket{le=\"+Inf\"} 0"));

    // Two clients: connections 0 -> 2.
    let a =
        TestClient::connect_path(addr, "a", &format!("{}&ack=1", sync_path(board, &write))).await;
    let b = TestClient::connect_path(addr, "b", &sync_path(board, &write)).await;
    a.wait_synced().await;
    b.wait_synced().await;
    a.barrier().await;
    b.barrier().await;
    let joined = scrape(addr).await;
    assert_eq!(value(&joined, "sync_connections"), 2.0, "{joined}");
    assert_eq!(value(&joined, "sync_connections_opened_total"), 2.0);
    assert_eq!(value(&joined, "sync_boards_loaded"), 1.0);

    // Three updates: counted exactly, with their bytes; committed; fanned out to b.
    let mut bytes = 0;
    for i in 0..3 {
        bytes += a.put_note(&format!("m{i}"), "metered").len();
    }
    a.wait_all_acked().await;
    b.wait_note("m2").await;
    let edited = wait_metric(addr, "sync_compactions_total", |v| v >= 1.0).await;
    let delta = |series: &str| value(&edited, series) - value(&joined, series);
    assert_eq!(delta("sync_updates_received_total"), 3.0, "{edited}");
    assert_eq!(delta("sync_update_bytes_received_total"), bytes as f64);
    assert!(
        delta("sync_commit_duration_seconds_count") >= 1.0,
        "{edited}"
    );
    assert!(delta("sync_commit_updates_count") >= 1.0);
    assert!(delta("sync_commit_updates_sum") >= 3.0, "{edited}");
    assert!(delta("sync_fanout_delay_seconds_count") >= 1.0);
    assert!(delta("sync_outbound_queue_depth_count") >= 1.0);
    // The updates to b (one frame per commit at least), and acks to a.
    assert!(delta("sync_frames_sent_total") >= 2.0, "{edited}");
    assert_eq!(value(&edited, "sync_pending_bytes"), 0.0, "all durable");

    // A named version.
    let v = post_json(
        addr,
        &format!("/v1/boards/{board}/versions"),
        Some(&write),
        &json!({"label": "metered"}),
    )
    .await;
    assert_eq!(v.status, 201);
    // Refusals, counted by kind.
    let mut refused = ws_connect(addr, &format!("/v1/sync/{board}")).await;
    assert_eq!(expect_close_frame(&mut refused, WAIT).await.0, 4401);
    assert_unauthorized(
        &get(addr, &format!("/v1/boards/{board}"), None).await,
        "no token",
    );
    let other = token(&keys, None, "other", Role::Read);
    assert_forbidden(
        &get(addr, &format!("/v1/boards/{board}"), Some(&other)).await,
        "another board",
    );
    assert_eq!(
        get(addr, &format!("/v1/boards/{board}"), Some(&write))
            .await
            .status,
        200
    );

    // Both leave: connections back to 0; the idle board is evicted.
    a.close().await;
    b.close().await;
    let left = wait_metric(addr, "sync_evictions_total", |v| v >= 1.0).await;
    assert_eq!(value(&left, "sync_connections"), 0.0, "{left}");
    assert_eq!(value(&left, "sync_boards_loaded"), 0.0, "{left}");
    assert_eq!(value(&left, "sync_connections_opened_total"), 2.0);
    // The named version, and the automatic one the eviction saves (in the background).
    let versions = wait_metric(addr, "sync_versions_saved_total", |v| v >= 2.0).await;
    assert_eq!(
        value(&versions, "sync_versions_saved_total"),
        2.0,
        "{versions}"
    );
    let last = scrape(addr).await;
    assert_eq!(errors(&last, "unauthorized"), 2.0, "{last}");
    assert_eq!(errors(&last, "forbidden"), 1.0, "{last}");
    // The labelled families appear with their first sample.
    for family in ["sync_errors", "http_requests"] {
        assert!(
            last.contains(&format!("# TYPE {family} counter\n")),
            "no counter {family} in:\n{last}"
        );
    }
    let route = |method: &str, route: &str, status: u16| {
        value(
            &last,
            &format!(
                "http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}}"
            ),
        )
    };
    assert_eq!(route("GET", "/v1/boards/{id}", 200), 1.0, "{last}");
    assert_eq!(route("GET", "/v1/boards/{id}", 401), 1.0, "{last}");
    assert_eq!(route("GET", "/v1/boards/{id}", 403), 1.0, "{last}");
    assert_eq!(
        route("POST", "/v1/boards/{id}/versions", 201),
        1.0,
        "{last}"
    );
    assert!(route("GET", "/metrics", 200) >= 3.0, "{last}");
    assert!(value(&last, "http_request_duration_seconds_count") >= 7.0);

    for secret in [board, "metrics-user-alice", write.as_str()] {
        assert!(!last.contains(secret), "the metrics carry {secret:?}");
    }
    server.shutdown().await.unwrap();
}

/// Every HTTP response, routed or not, success or refusal, carries `x-request-id`; one sent by
/// the client is echoed back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_carries_a_request_id() {
    let keys = keys();
    let mut cfg = secured(&keys);
    cfg.limits.http_rate = 1;
    cfg.limits.http_burst = 3;
    let server = TestServer::start(cfg, memory_store().await).await;
    let addr = server.addr;
    let mut seen = std::collections::HashSet::new();
    for (method, path) in [
        ("GET", "/healthz"),
        ("GET", "/metrics"),
        ("GET", "/no/such/route"),
        ("GET", "/v1/boards/x"),
        ("POST", "/v1/tokens"),
    ] {
        let r = http(addr, method, path, None, &[]).await;
        let id = r
            .header("x-request-id")
            .unwrap_or_else(|| panic!("{method} {path} ({}) has no x-request-id", r.status));
        assert!(!id.is_empty());
        assert!(seen.insert(id.to_owned()), "request ids repeat: {id}");
    }
    for (path, expected) in [("/healthz", 200), ("/v1/boards/x", 401)] {
        let r = http_request(
            addr,
            None,
            "GET",
            path,
            &[("x-request-id", "client-chosen-42")],
            &[],
        )
        .await;
        assert_eq!(r.status, expected);
        assert_eq!(r.header("x-request-id"), Some("client-chosen-42"), "{path}");
    }
    // Even the rate limiter's refusals.
    let mut limited = None;
    for _ in 0..10 {
        let r = http(addr, "GET", "/v1/boards/x", None, &[]).await;
        if r.status == 429 {
            limited = Some(r);
            break;
        }
    }
    let limited = limited.expect("the rate limit applies");
    assert!(limited.header("x-request-id").is_some());
    server.shutdown().await.unwrap();
}

// =============================================================================================
// Hostile input and races

/// Made-up HTTP methods and paths do not create metric series: a method is counted as one of
/// GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS or `other`, a route as its template or
/// `unmatched`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_methods_and_paths_do_not_grow_the_metrics() {
    let server = TestServer::start(config(), memory_store().await).await;
    let addr = server.addr;
    let series = |text: &str| {
        text.lines()
            .filter(|l| l.starts_with("http_requests_total{"))
            .count()
    };
    let before = series(&scrape(addr).await);
    for i in 1..=50 {
        let r = http(addr, &format!("FOO{i}"), "/v1/boards", None, &[]).await;
        assert_eq!(r.status, 405, "FOO{i}: {}", body_text(&r));
        let r = http(addr, "GET", &format!("/no/such/route/{i}"), None, &[]).await;
        assert_eq!(r.status, 404);
    }
    let text = scrape(addr).await;
    let after = series(&text);
    // At most: GET /metrics (the first scrape) and `other` on /v1/boards. (Paths that match no
    // route are not counted at all.)
    assert!(
        after <= before + 2,
        "50 made-up methods and paths added {} series:\n{text}",
        after - before
    );
    assert!(!text.contains("FOO"), "{text}");
    assert!(!text.contains("/no/such/route"), "{text}");
    assert_eq!(
        value(
            &text,
            "http_requests_total{method=\"other\",route=\"/v1/boards\",status=\"405\"}"
        ),
        50.0,
        "{text}"
    );
    server.shutdown().await.unwrap();
}

/// Tokens signed with the server's secret whose `exp` is out of any clock's range are refused
/// with 401 (not a panic); an `exp` in the year 9999 is still a valid token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_with_huge_expiry_are_refused_not_panicking() {
    let keys = keys();
    let server = TestServer::start(secured(&keys), memory_store().await).await;
    let addr = server.addr;
    for exp in [
        u64::MAX,
        i64::MAX as u64 + 1,
        i64::MAX as u64,
        253_402_300_800,
    ] {
        let huge = jwt(SECRET, &json!({"board": "*", "role": "admin", "exp": exp}));
        assert_unauthorized(&get(addr, "/v1/boards", Some(&huge)).await, "huge exp");
        let r = get(addr, "/v1/boards", Some(&huge)).await;
        let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
        assert!(message.contains("exp"), "{exp}: {message}");
        let mut socket = ws_connect(addr, &sync_path("huge", &huge)).await;
        assert_eq!(
            expect_close_frame(&mut socket, WAIT).await,
            (4401, "invalid token".to_owned()),
            "exp {exp}"
        );
    }
    let far = jwt(
        SECRET,
        &json!({"board": "*", "role": "admin", "exp": 253_402_300_799_u64}),
    );
    assert_eq!(get(addr, "/v1/boards", Some(&far)).await.status, 200);
    let far_client = TestClient::connect_path(addr, "far", &sync_path("far", &far)).await;
    far_client.wait_synced().await;
    assert!(far_client.is_open());
    server.shutdown().await.unwrap();
}

/// A token minted over `POST /v1/tokens` never outlives the token that minted it: its expiry is
/// clamped to the caller's (and the answer says so), and role and scope cannot grow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minted_tokens_never_outlive_or_exceed_the_minting_token() {
    let keys = keys();
    let server = TestServer::start(secured(&keys), memory_store().await).await;
    let addr = server.addr;
    let short_root = token_for(
        &keys,
        Some("root"),
        "*",
        Role::Admin,
        Duration::from_secs(60),
    );
    let root_expiry = keys.verify(&short_root).unwrap().expires_at.unwrap();
    let root_exp = root_expiry.duration_since(UNIX_EPOCH).unwrap().as_secs();
    for (board, role) in [("*", "admin"), ("b1", "read")] {
        let r = post_json(
            addr,
            "/v1/tokens",
            Some(&short_root),
            &json!({"board": board, "role": role, "ttl": "30d"}),
        )
        .await;
        assert_eq!(r.status, 201, "{}", body_text(&r));
        let body = r.json();
        assert_eq!(body["expires_at"].as_u64(), Some(root_exp), "{body}");
        assert_eq!(body["clamped"], true, "{body}");
        let minted = keys.verify(body["token"].as_str().unwrap()).unwrap();
        assert!(minted.expires_at.unwrap() <= root_expiry);
    }
    // Shorter than the caller's: untouched.
    let r = post_json(
        addr,
        "/v1/tokens",
        Some(&short_root),
        &json!({"board": "b1", "role": "read", "ttl": 10}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", body_text(&r));
    assert_eq!(r.json()["clamped"], false);
    assert!(r.json()["expires_at"].as_u64().unwrap() <= unix_now() + 11);

    // A board admin cannot mint for every board or for another board.
    let board_admin = token(&keys, None, "b1", Role::Admin);
    for board in ["*", "b2"] {
        assert_forbidden(
            &post_json(
                addr,
                "/v1/tokens",
                Some(&board_admin),
                &json!({"board": board, "role": "read"}),
            )
            .await,
            board,
        );
    }
    server.shutdown().await.unwrap();
}

/// Boards that count the calls a readiness check could make (each made slow), and pass
/// everything to the store they wrap. The other parts of the store come from it directly
/// ([`Layered`]).
mod counting {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use sync_server::ids::BoardId;
    use sync_server::storage::{Backend, BoardInfo, Boards, StorageError};

    #[derive(Debug)]
    pub(crate) struct CountingStore {
        pub(crate) inner: Arc<dyn Boards>,
        pub(crate) checks: AtomicUsize,
        pub(crate) check_delay: Duration,
    }

    #[async_trait::async_trait]
    impl Boards for CountingStore {
        fn backend(&self) -> Backend {
            self.inner.backend()
        }

        async fn list_boards(
            &self,
            after: Option<&BoardId>,
            limit: u32,
        ) -> Result<Vec<BoardInfo>, StorageError> {
            self.checks.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(self.check_delay).await;
            self.inner.list_boards(after, limit).await
        }

        async fn ping(&self) -> Result<(), StorageError> {
            self.checks.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(self.check_delay).await;
            self.inner.ping().await
        }

        async fn close(&self) {
            self.inner.close().await;
        }

        async fn create_board(&self, id: &BoardId) -> Result<BoardInfo, StorageError> {
            self.inner.create_board(id).await
        }

        async fn create_board_with(
            &self,
            id: &BoardId,
            content: &[u8],
        ) -> Result<BoardInfo, StorageError> {
            self.inner.create_board_with(id, content).await
        }

        async fn ensure_board(&self, id: &BoardId) -> Result<BoardInfo, StorageError> {
            self.inner.ensure_board(id).await
        }

        async fn get_board(&self, id: &BoardId) -> Result<Option<BoardInfo>, StorageError> {
            self.inner.get_board(id).await
        }

        async fn delete_board(&self, id: &BoardId) -> Result<bool, StorageError> {
            self.inner.delete_board(id).await
        }
    }
}

use counting::CountingStore;
use sync_server::storage::layered::Layered;

/// A flood of `/readyz` (exempt from the rate limit) makes at most one database check at a
/// time, and no more than one per second: the answer is cached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_checks_are_shared_and_cached() {
    let base = memory_store().await;
    let store = Arc::new(CountingStore {
        inner: base.clone(),
        checks: AtomicUsize::new(0),
        check_delay: Duration::from_millis(200),
    });
    let layered = Layered::over(base).with_boards(store.clone());
    let server = TestServer::start(config(), Arc::new(layered)).await;
    let addr = server.addr;
    let started = Instant::now();
    let requests: Vec<_> = (0..100)
        .map(|_| tokio::spawn(async move { http(addr, "GET", "/readyz", None, &[]).await }))
        .collect();
    for request in requests {
        let r = request.await.unwrap();
        assert_eq!(r.status, 200, "{}", body_text(&r));
        assert_eq!(r.json()["status"], "ready");
    }
    let elapsed = started.elapsed();
    let checks = store.checks.load(Ordering::SeqCst);
    // One check per second of cache, plus the one in flight when a second ends.
    let bound = elapsed.as_secs() as usize + 2;
    assert!(
        checks <= bound,
        "100 concurrent /readyz made {checks} database checks in {elapsed:?}"
    );
    server.shutdown().await.unwrap();
}

/// Listing an assistant's runs and reading one are reads: they answer while another write
/// holds SQLite's write gate. A run left `running` by a server that stopped still shows as
/// `interrupted`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_reads_do_not_wait_for_writes() {
    let db = SqliteDb::new();
    let store = db.open().await;
    let server = TestServer::start(config(), store.clone()).await;
    let addr = server.addr;
    let id = sync_server::ids::BoardId::parse("gated").unwrap();
    store.create_board(&id).await.unwrap();
    store
        .start_run(
            &id,
            sync_server::storage::NewRun {
                id: "r-fresh",
                user: None,
                prompt: "p",
                model: "m",
                before_version: None,
                expired_before: 0,
            },
        )
        .await
        .unwrap();
    store
        .append(&[sync_server::storage::NewUpdate {
            board: &id,
            data: b"row",
        }])
        .await
        .unwrap();
    // Holds the write gate until dropped.
    let pending = store
        .begin_compaction(
            &id,
            sync_server::storage::NewSnapshot {
                upto: 1,
                data: b"snapshot",
            },
        )
        .await
        .unwrap();
    for path in [
        "/v1/boards/gated/assistant/runs",
        "/v1/boards/gated/assistant/runs/r-fresh",
    ] {
        let r = tokio::time::timeout(Duration::from_secs(2), http(addr, "GET", path, None, &[]))
            .await
            .unwrap_or_else(|_| panic!("GET {path} waited for the write gate"));
        assert_eq!(r.status, 200, "{path}: {}", body_text(&r));
    }
    drop(pending);

    // A run whose server stopped two hours ago (on a board of its own: `gated` has its
    // running run).
    let stopped = sync_server::ids::BoardId::parse("stopped").unwrap();
    store.create_board(&stopped).await.unwrap();
    store
        .start_run(
            &stopped,
            sync_server::storage::NewRun {
                id: "r-dead",
                user: None,
                prompt: "p",
                model: "m",
                before_version: None,
                expired_before: 0,
            },
        )
        .await
        .unwrap();
    let conn = rusqlite::Connection::open(db.dir.path().join("boards.db")).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn.execute(
        "UPDATE assistant_runs SET started_at = started_at - 7200000, \
         alive_at = alive_at - 7200000 WHERE id = 'r-dead'",
        [],
    )
    .unwrap();
    drop(conn);
    let mut states: HashMap<String, String> = HashMap::new();
    for board in ["gated", "stopped"] {
        let path = format!("/v1/boards/{board}/assistant/runs");
        let runs = http(addr, "GET", &path, None, &[]).await;
        assert_eq!(runs.status, 200, "{}", body_text(&runs));
        states.extend(runs.json()["runs"].as_array().unwrap().iter().map(|r| {
            (
                r["id"].as_str().unwrap().to_owned(),
                r["state"].as_str().unwrap().to_owned(),
            )
        }));
    }
    assert_eq!(states["r-dead"], "interrupted", "{states:?}");
    assert_eq!(states["r-fresh"], "running", "{states:?}");
    let one = http(
        addr,
        "GET",
        "/v1/boards/stopped/assistant/runs/r-dead",
        None,
        &[],
    )
    .await;
    assert_eq!(one.json()["state"], "interrupted");
    server.shutdown().await.unwrap();
}

/// A request with a raw `Host` and optional `Origin`; returns the status and the JSON body
/// (`Null` if the body is not JSON).
async fn with_host(
    addr: std::net::SocketAddr,
    path: &str,
    host: &str,
    origin: Option<&str>,
) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let origin = origin
        .map(|o| format!("Origin: {o}\r\n"))
        .unwrap_or_default();
    let head = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{origin}Connection: close\r\n\r\n");
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut raw))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text}"));
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[track_caller]
fn assert_refused(got: &(u16, Value), code: &str, what: &str) {
    assert_eq!(got.0, 403, "{what}: {}", got.1);
    assert_eq!(got.1["error"]["code"], code, "{what}: {}", got.1);
    assert!(got.1["error"]["message"].is_string(), "{what}: {}", got.1);
}

/// The WebSocket upgrade of `/v1/sync/{board}` with extra headers: `Ok` once upgraded and the
/// server's first frame arrived, or the HTTP refusal's status and error code.
async fn upgrade_with(
    addr: std::net::SocketAddr,
    board: &str,
    headers: &[(&str, &str)],
) -> Result<(), (u16, String)> {
    match ws_connect_with(addr, None, &format!("/v1/sync/{board}"), headers).await {
        Ok(mut socket) => {
            let first = tokio::time::timeout(WAIT, socket.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            assert!(matches!(first, Message::Binary(_)), "{first:?}");
            Ok(())
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let body = response.body().clone().unwrap_or_default();
            let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            Err((
                response.status().as_u16(),
                json["error"]["code"].as_str().unwrap_or("").to_owned(),
            ))
        }
        Err(e) => panic!("{headers:?}: {e}"),
    }
}

/// Open development mode (no secret) answers only requests addressed to a loopback host, and
/// from browsers only pages of a loopback origin: a page on another site, through a
/// DNS-rebinding name or a cross-origin request, is refused with 403, WebSocket upgrades
/// included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_mode_answers_only_loopback_hosts_and_origins() {
    let server = TestServer::start(config(), memory_store().await).await;
    let addr = server.addr;
    let port = addr.port();
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "LOCALHOST".to_owned(),
        "localhost.".to_owned(),
        format!("app.localhost:{port}"),
        "127.3.2.1".to_owned(),
        format!("[::1]:{port}"),
    ] {
        for path in ["/v1/boards", "/healthz", "/no/such/route"] {
            let (status, body) = with_host(addr, path, &host, None).await;
            assert!(
                status == 200 || status == 404,
                "Host {host}, {path}: {status} {body}"
            );
        }
    }
    for host in [
        format!("evil.example:{port}"),
        "evil.example".to_owned(),
        format!("127.0.0.1.nip.io:{port}"),
        format!("localhost.evil.example:{port}"),
        "10.0.0.1".to_owned(),
        format!("[::2]:{port}"),
        "local host".to_owned(),
    ] {
        for path in ["/v1/boards", "/healthz", "/no/such/route"] {
            assert_refused(
                &with_host(addr, path, &host, None).await,
                "host_not_allowed",
                &format!("Host {host}, {path}"),
            );
        }
    }
    let host = format!("127.0.0.1:{port}");
    for origin in [
        format!("http://127.0.0.1:{port}"),
        "http://localhost:5173".to_owned(),
        "https://app.localhost".to_owned(),
        "http://[::1]:3000".to_owned(),
    ] {
        let (status, body) = with_host(addr, "/v1/boards", &host, Some(&origin)).await;
        assert_eq!(status, 200, "Origin {origin}: {body}");
    }
    for origin in [
        "http://evil.example",
        "https://localhost.evil.example",
        "http://127.0.0.1.nip.io:8080",
        "null",
        "file://",
    ] {
        assert_refused(
            &with_host(addr, "/v1/boards", &host, Some(origin)).await,
            "origin_not_allowed",
            &format!("Origin {origin}"),
        );
    }

    // The WebSocket upgrade: the same rules, before anything is upgraded.
    let evil_host = format!("evil.example:{port}");
    for (headers, refusal) in [
        (
            vec![("Origin", "http://evil.example")],
            "origin_not_allowed",
        ),
        (vec![("Host", evil_host.as_str())], "host_not_allowed"),
    ] {
        assert_eq!(
            upgrade_with(addr, "rebind", &headers).await,
            Err((403, refusal.to_owned())),
            "{headers:?}"
        );
    }
    upgrade_with(addr, "rebind", &[("Origin", "http://localhost:5173")])
        .await
        .unwrap();
    upgrade_with(addr, "rebind", &[]).await.unwrap();
    let metrics = scrape(addr).await;
    assert_eq!(errors(&metrics, "origin_refused"), 6.0, "{metrics}");
    assert_eq!(errors(&metrics, "host_refused"), 22.0, "{metrics}");
    server.shutdown().await.unwrap();

    // `--allowed-origins` adds origins; `--insecure` (open mode beyond loopback) accepts any
    // Host, but still no page of a foreign origin.
    let mut cfg = config();
    cfg.limits.allowed_origins = vec!["https://app.example.com".into()];
    cfg.open_any_host = true;
    let server = TestServer::start(cfg, memory_store().await).await;
    let addr = server.addr;
    let (status, body) = with_host(addr, "/v1/boards", "boards.internal:8080", None).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = with_host(
        addr,
        "/v1/boards",
        "boards.internal:8080",
        Some("https://app.example.com"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_refused(
        &with_host(
            addr,
            "/v1/boards",
            "boards.internal:8080",
            Some("http://boards.internal:8080"),
        )
        .await,
        "origin_not_allowed",
        "an unlisted origin with --insecure",
    );
    assert_eq!(
        upgrade_with(addr, "wide", &[("Origin", "https://evil.example")]).await,
        Err((403, "origin_not_allowed".to_owned()))
    );
    upgrade_with(addr, "wide", &[("Origin", "https://app.example.com")])
        .await
        .unwrap();
    server.shutdown().await.unwrap();

    // With tokens, Host and Origin are not checked here (only the WebSocket allow-list).
    let keys = keys();
    let server = TestServer::start(secured(&keys), memory_store().await).await;
    let root = token(&keys, None, "*", Role::Admin);
    let r = http_request(
        server.addr,
        None,
        "GET",
        "/v1/boards",
        &[
            ("Authorization", &format!("Bearer {root}")),
            ("Origin", "https://elsewhere.example"),
        ],
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{}", body_text(&r));
    let (status, _) = with_host(server.addr, "/healthz", "boards.example.com", None).await;
    assert_eq!(status, 200);
    server.shutdown().await.unwrap();
}
