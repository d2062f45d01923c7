//! Secrets never reach the log: the real binary runs with `AUTH_SECRET` and `RUST_LOG=debug`
//! (text and JSON formats) while clients use valid, invalid, forged, tampered and expired tokens
//! over HTTP and WebSocket, mint tokens over `POST /v1/tokens`, and one connection is closed by
//! its token's expiry. Everything the process wrote, stdout and stderr, must then hold neither
//! the secret nor any token, nor the payload or signature part of one.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use harness::*;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_sync-server");
const SECRET: &str = "log-test secret 7d1f0c9a4b2e8f6d3a5c7e9b1d3f5a7c";
const OTHER_SECRET: &str = "somebody else's secret 0f9e8d7c6b5a49382716";
const LLM_KEY: &str = "sk-llm-key-must-not-be-logged-7f3a9c";

/// Runs `sync-server token ARGS` with the secret in `AUTH_SECRET` (or, with `file`, in
/// `AUTH_SECRET_FILE`); returns the token it printed. Its stderr must not show the token.
fn mint(secret: &str, file: Option<&std::path::Path>, args: &[&str]) -> String {
    let mut command = Command::new(BIN);
    command
        .arg("token")
        .args(args)
        .env_remove("AUTH_SECRET")
        .env_remove("AUTH_SECRET_FILE");
    match file {
        Some(path) => {
            std::fs::write(path, format!("{secret}\n")).unwrap();
            command.env("AUTH_SECRET_FILE", path);
        }
        None => {
            command.env("AUTH_SECRET", secret);
        }
    }
    let out = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "token {args:?}: {stderr}");
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(token.split('.').count(), 3, "a JWT: {token:?}");
    assert!(
        !stderr.contains(&token),
        "`token` echoes the token on stderr"
    );
    assert!(!stderr.contains(secret), "`token` prints the secret");
    assert!(stderr.contains("expires at"), "{stderr}");
    token
}

/// The server process, with everything it writes collected.
struct Server {
    child: Child,
    addr: SocketAddr,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(format: &str, database_url: &str) -> Self {
        let mut child = Command::new(BIN)
            .args(["serve", "--bind", "127.0.0.1", "--port", "0"])
            .env("AUTH_SECRET", SECRET)
            .env_remove("AUTH_SECRET_FILE")
            .env("DATABASE_URL", database_url)
            .env("RUST_LOG", "debug")
            .env("LOG_FORMAT", format)
            .env("BOARD_IDLE_SECS", "1")
            .env("NO_COLOR", "1")
            // The assistant on, pointed at a closed loopback port: its key must never show.
            .env("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
            .env("OPENAI_API_KEY", LLM_KEY)
            .env("LLM_MAX_RETRIES", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (stdout, stderr) = (
            Arc::<Mutex<String>>::default(),
            Arc::<Mutex<String>>::default(),
        );
        let (tx, rx) = mpsc::channel();
        let out = BufReader::new(child.stdout.take().unwrap());
        let collected = stdout.clone();
        let stdout_reader = std::thread::spawn(move || {
            for line in out.lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.strip_prefix("listening on http://") {
                    let _ = tx.send(addr.parse::<SocketAddr>().unwrap());
                }
                let mut all = collected.lock().unwrap();
                all.push_str(&line);
                all.push('\n');
            }
        });
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let collected = stderr.clone();
        let stderr_reader = std::thread::spawn(move || {
            let mut line = Vec::new();
            while err.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
                collected
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&line));
                line.clear();
            }
        });
        let Ok(addr) = rx.recv_timeout(Duration::from_secs(30)) else {
            let _ = child.kill();
            panic!(
                "the server did not print its address; stderr:\n{}",
                stderr.lock().unwrap()
            );
        };
        Self {
            child,
            addr,
            stdout,
            stderr,
            readers: vec![stdout_reader, stderr_reader],
        }
    }

    /// SIGTERM, wait for a clean exit, and return (stdout, stderr).
    async fn stop(mut self) -> (String, String) {
        let killed = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "the server did not stop within 20 s of SIGTERM; stderr:\n{}",
                    self.stderr.lock().unwrap()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        for reader in self.readers.drain(..) {
            reader.join().unwrap();
        }
        let stderr = self.stderr.lock().unwrap().clone();
        assert!(status.success(), "exit {status:?}; stderr:\n{stderr}");
        (self.stdout.lock().unwrap().clone(), stderr)
    }
}

async fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> HttpResponse {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| ("Authorization", a))
        .into_iter()
        .collect();
    http_request(addr, None, "GET", path, &headers, &[]).await
}

async fn post_json(addr: SocketAddr, path: &str, token: &str, body: &Value) -> HttpResponse {
    let auth = format!("Bearer {token}");
    http_request(
        addr,
        None,
        "POST",
        path,
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        &serde_json::to_vec(body).unwrap(),
    )
    .await
}

async fn refused_ws(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut socket = ws_connect(addr, path).await;
    expect_close_frame(&mut socket, WAIT).await
}

async fn secrets_never_logged(format: &str) {
    let dir = tempfile::tempdir().unwrap();
    let database_url = format!("sqlite://{}/boards.db", dir.path().display());
    let secret_file = dir.path().join("secret");

    // Tokens from the `token` command (one with the secret in a file), and a forged one.
    let root = mint(
        SECRET,
        None,
        &[
            "--board", "*", "--role", "admin", "--ttl", "10m", "--user", "root",
        ],
    );
    let writer = mint(
        SECRET,
        Some(&secret_file),
        &[
            "--board", "logs", "--role", "write", "--ttl", "10m", "--user", "alice",
        ],
    );
    let reader = mint(SECRET, None, &["--board", "logs", "--role", "read"]);
    let elsewhere = mint(
        SECRET,
        None,
        &["--board", "elsewhere", "--role", "admin", "--ttl", "10m"],
    );
    let forged = mint(
        OTHER_SECRET,
        None,
        &["--board", "*", "--role", "admin", "--ttl", "10m"],
    );
    let tampered = {
        let r: Vec<&str> = reader.split('.').collect();
        let f: Vec<&str> = forged.split('.').collect();
        format!("{}.{}.{}", r[0], f[1], r[2])
    };
    let garbage = "garbage-token-b5e1c0d2a9f84e67".to_owned();

    let server = Server::start(format, &database_url);
    let addr = server.addr;
    // Minted just before use: it expires while its connection is open.
    let short = mint(
        SECRET,
        None,
        &[
            "--board", "logs", "--role", "write", "--ttl", "2s", "--user", "brief",
        ],
    );

    // HTTP: valid, refused and forbidden calls.
    assert_eq!(
        post_json(addr, "/v1/boards", &root, &json!({"id": "logs"}))
            .await
            .status,
        201
    );
    assert_eq!(
        get(addr, "/v1/boards/logs", Some(&reader)).await.status,
        200
    );
    for bad in [&garbage, &forged, &tampered, &SECRET.to_owned()] {
        assert_eq!(get(addr, "/v1/boards/logs", Some(bad)).await.status, 401);
    }
    assert_eq!(
        get(addr, &format!("/v1/boards/logs?token={reader}"), None)
            .await
            .status,
        401,
        "a token in an HTTP query string is not accepted (and must not be logged either)"
    );
    assert_eq!(
        get(addr, "/v1/boards/logs", Some(&elsewhere)).await.status,
        403
    );
    let minted = post_json(
        addr,
        "/v1/tokens",
        &root,
        &json!({"board": "logs", "role": "read", "ttl": "5m", "user": "guest"}),
    )
    .await;
    assert_eq!(minted.status, 201);
    let guest = minted.json()["token"].as_str().unwrap().to_owned();
    assert_eq!(get(addr, "/v1/boards/logs", Some(&guest)).await.status, 200);
    // The assistant fails to reach its model service; the run is recorded as failed.
    let run = post_json(
        addr,
        "/v1/boards/logs/assistant",
        &writer,
        &json!({"prompt": "add a note"}),
    )
    .await;
    assert_eq!(run.status, 200);
    assert_eq!(run.json()["status"], "failed", "{:?}", run.json());

    // WebSocket: good tokens (query and header), refused ones, and one that expires.
    let alice =
        TestClient::connect_path(addr, "alice", &format!("/v1/sync/logs?token={writer}")).await;
    alice.wait_synced().await;
    alice.put_note("n1", "logged?");
    let viewer =
        TestClient::connect_path(addr, "guest", &format!("/v1/sync/logs?token={guest}")).await;
    viewer.wait_note("n1").await;
    viewer.put_note("refused", "read-only");
    viewer
        .wait_for("permission denied", |s| !s.seen.unknown.is_empty())
        .await;
    let bearer = format!("Bearer {reader}");
    let _header_socket =
        ws_connect_with(addr, None, "/v1/sync/logs", &[("Authorization", &bearer)])
            .await
            .unwrap();
    let brief =
        TestClient::connect_path(addr, "brief", &format!("/v1/sync/logs?token={short}")).await;
    brief.wait_synced().await;
    for (token, code) in [
        (&garbage, 4401),
        (&forged, 4401),
        (&tampered, 4401),
        (&elsewhere, 4403),
    ] {
        let (got, _) = refused_ws(addr, &format!("/v1/sync/logs?token={token}")).await;
        assert_eq!(got, code);
    }
    assert_eq!(refused_ws(addr, "/v1/sync/logs").await.0, 4401);
    assert_eq!(
        brief.wait_close_frame_within(Duration::from_secs(5)).await,
        (4401, "token expired".to_owned())
    );
    // The expired token, once more on both.
    assert_eq!(
        refused_ws(addr, &format!("/v1/sync/logs?token={short}")).await,
        (4401, "token expired".to_owned())
    );
    assert_eq!(get(addr, "/v1/boards/logs", Some(&short)).await.status, 401);
    drop(alice);
    drop(viewer);
    drop(_header_socket);

    let (stdout, stderr) = server.stop().await;
    let log = format!("{stdout}{stderr}");

    // The log says what happened (so this test cannot pass on an empty log)...
    for expected in [
        "listening on http://",
        "tokens required",
        "refused: not authenticated",
        "refused: not allowed",
        "request refused: not authenticated",
        "request refused: not allowed",
        "token minted",
        "closing: the token expired",
        // A debug line: RUST_LOG=debug was in effect.
        "joined",
        if format == "json" {
            "\"level\":\"DEBUG\""
        } else {
            " DEBUG "
        },
        "refused an update from a read-only connection",
        "stopped",
    ] {
        assert!(
            log.contains(expected),
            "[{format}] the log lacks {expected:?}:\n{log}"
        );
    }
    if format == "json" {
        for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
            let parsed: Result<Value, _> = serde_json::from_str(line);
            assert!(
                parsed.is_ok_and(|v| v.is_object()),
                "not a JSON log line: {line}"
            );
        }
    }
    // ...but never a secret or a token, whole or in part.
    let tokens = [
        &root, &writer, &reader, &elsewhere, &forged, &tampered, &short, &guest,
    ];
    let mut needles = vec![
        ("the secret".to_owned(), SECRET.to_owned()),
        ("the garbage token".to_owned(), garbage.clone()),
        ("the model service key".to_owned(), LLM_KEY.to_owned()),
    ];
    for (i, token) in tokens.iter().enumerate() {
        let parts: Vec<&str> = token.split('.').collect();
        needles.push((format!("token #{i}"), (*token).clone()));
        needles.push((format!("payload of token #{i}"), parts[1].to_owned()));
        needles.push((format!("signature of token #{i}"), parts[2].to_owned()));
    }
    let leaks: Vec<&str> = needles
        .iter()
        .filter(|(_, needle)| log.contains(needle.as_str()))
        .map(|(what, _)| what.as_str())
        .collect();
    assert!(
        leaks.is_empty(),
        "[{format}] the log holds {leaks:?} ({} bytes of log)",
        log.len()
    );
    eprintln!(
        "[{format}] {} bytes of log, no secret or token in it",
        log.len()
    );
    // SHOW_LOG=1 prints the whole log, to see what the server writes.
    if std::env::var_os("SHOW_LOG").is_some() {
        eprintln!("{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_and_tokens_never_reach_the_text_log() {
    secrets_never_logged("text").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_and_tokens_never_reach_the_json_log() {
    secrets_never_logged("json").await;
}

/// Runs `sync-server ARGS` to its end with `DATABASE_URL` set to `url` (no secret, debug logs);
/// returns whether it succeeded and everything it wrote.
fn run_with_database(args: &[&str], url: &str) -> (bool, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("DATABASE_URL", url)
        .env("RUST_LOG", "debug")
        .env("NO_COLOR", "1")
        .env_remove("AUTH_SECRET")
        .env_remove("AUTH_SECRET_FILE")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A password in a database URL, in its user info or its query string (`password=`,
/// `sslpassword=`), reaches neither the log nor an error message nor `--help`: whether the URL
/// does not parse, the database cannot be reached, or it works (PostgreSQL from
/// `TEST_DATABASE_URL`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_url_passwords_never_reach_the_log() {
    let serve = ["serve", "--bind", "127.0.0.1", "--port", "0"];
    for url in [
        // Parses, but nothing listens there.
        "postgres://app@127.0.0.1:9/boards?sslmode=disable&password=qs-secret-1&sslpassword=qs-secret-2",
        // Does not parse: a bad port, or a password with an unescaped `/`.
        "postgres://app:qs-secret-3@127.0.0.1:notaport/boards?password=qs-secret-4",
        "postgres://app:qs/secret-5@127.0.0.1/boards",
    ] {
        let (ok, log) = tokio::task::spawn_blocking(move || run_with_database(&serve, url))
            .await
            .unwrap();
        assert!(!ok, "{url}: {log}");
        assert!(log.contains("error:"), "{url}: says why it stopped: {log}");
        assert!(!log.contains("qs-secret"), "{url}: {log}");
        assert!(!log.contains("qs/secret"), "{url}: {log}");
    }
    let (_, help) = run_with_database(
        &["--help"],
        "postgres://app:qs-secret-6@127.0.0.1/boards?password=qs-secret-7",
    );
    assert!(help.contains("DATABASE_URL"), "{help}");
    assert!(!help.contains("qs-secret"), "--help shows the URL: {help}");

    let Some(base) = std::env::var("TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        assert!(
            !ci,
            "CI=true: TEST_DATABASE_URL must name a PostgreSQL database"
        );
        eprintln!("SKIPPED: TEST_DATABASE_URL is not set, the PostgreSQL part not run");
        return;
    };
    // Trust authentication ignores the password; the server starts and says where it stores.
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}password=qs-secret-8&sslpassword=qs-secret-9");
    let server = Server::start("text", &url);
    assert_eq!(get(server.addr, "/readyz", None).await.status, 200);
    let (stdout, stderr) = server.stop().await;
    let log = format!("{stdout}{stderr}");
    assert!(log.contains("storage ready"), "{log}");
    assert!(log.contains("password=***"), "{log}");
    assert!(!log.contains("qs-secret"), "{log}");
}
