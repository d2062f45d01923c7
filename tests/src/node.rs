//! Several nodes in one test: servers in process that keep their [`AppHandle`] (for the fault
//! hooks), Redis as the tests find it (`TEST_REDIS_URL`), and a Redis of a test's own, on a
//! free port, that it can stop and start again without disturbing the machine's.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use sync_server::app::{App, AppHandle, Config, ServerError};
use sync_server::storage::Storage;
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A server in process, with its handle.
#[derive(Debug)]
pub struct TestNode {
    pub addr: SocketAddr,
    pub handle: AppHandle,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestNode {
    /// Builds the app on `store` and serves it on a free loopback port.
    pub async fn start(config: Config, store: Arc<dyn Storage>) -> Result<Self, ServerError> {
        let App { router, handle } = App::builder(config).store(store).build().await?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let stopping = handle.clone();
        let task = tokio::spawn(async move {
            let _ = axum::serve(
                listener,
                router.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
                stopping.cancel();
            })
            .await;
        });
        Ok(Self {
            addr,
            handle,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// Shuts down gracefully (connections close with 1012, actors commit, the node says it
    /// leaves).
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("the node stops serving within 10 s")
                .unwrap();
        }
        tokio::time::timeout(Duration::from_secs(10), self.handle.shutdown())
            .await
            .expect("the node shuts down within 10 s");
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// `TEST_REDIS_URL`: required under `CI=true`; otherwise `None` (the caller says it skips).
pub fn redis_url() -> Option<String> {
    let url = std::env::var("TEST_REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty());
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    assert!(
        url.is_some() || !ci,
        "CI=true: TEST_REDIS_URL must name a Redis server (redis://127.0.0.1:6379)"
    );
    url
}

/// A `redis-server` of the test's own, on a free port, keeping nothing on disk.
#[derive(Debug)]
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one (fails the test if `redis-server` is missing under `CI=true`; `None`, said,
    /// otherwise).
    pub async fn start() -> Option<Self> {
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let mut server = Self { port, child: None };
        if !server.spawn().await {
            let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
            assert!(!ci, "CI=true: redis-server must be installed");
            eprintln!("SKIPPED: redis-server is not installed");
            return None;
        }
        Some(server)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn spawn(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn();
        let Ok(child) = child else {
            return false;
        };
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis-server did not listen within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// Kills it (SIGKILL): everything it held is gone.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts it again on the same port.
    pub async fn restart(&mut self) {
        self.stop().await;
        assert!(self.spawn().await, "redis-server starts again");
    }
}
