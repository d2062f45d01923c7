//! The server in process: started on 127.0.0.1 with a random port, a configuration and a
//! store, shut down gracefully (or dropped); and the stores tests start it with.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sync_server::server::{Config, ServerError, run_with_store};
use sync_server::storage::Storage;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A server configuration for tests: defaults with a short shutdown timeout.
pub fn config() -> Config {
    Config {
        database_url: "memory:".into(),
        shutdown_timeout: Duration::from_secs(5),
        ..Config::default()
    }
}

/// A server running in-process on 127.0.0.1 with a random port.
#[derive(Debug)]
pub struct TestServer {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<Result<(), ServerError>>>,
}

impl TestServer {
    pub async fn start(config: Config, store: Arc<dyn Storage>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::start_on(listener, config, store)
    }

    /// Starts on `listener` (a restart on the same address binds it again).
    pub fn start_on(listener: TcpListener, config: Config, store: Arc<dyn Storage>) -> Self {
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
    pub fn trigger_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Shuts down and returns what `run_with_store` returned.
    pub async fn shutdown(mut self) -> Result<(), ServerError> {
        self.trigger_shutdown();
        let handle = self.handle.take().unwrap();
        tokio::time::timeout(Duration::from_secs(10), handle)
            .await
            .expect("run_with_store returns within 10 s of the shutdown signal")
            .expect("the server task does not panic")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(handle) = &self.handle {
            handle.abort();
        }
    }
}

pub async fn memory_store() -> Arc<dyn Storage> {
    sync_server::storage::open("memory:", &Default::default())
        .await
        .unwrap()
}

/// A SQLite database in a temporary directory.
#[derive(Debug)]
pub struct SqliteDb {
    pub dir: tempfile::TempDir,
    pub url: String,
}

impl SqliteDb {
    #[allow(clippy::new_without_default)] // Makes a directory: not a default value.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/boards.db", dir.path().display());
        Self { dir, url }
    }

    pub async fn open(&self) -> Arc<dyn Storage> {
        sync_server::storage::open(&self.url, &Default::default())
            .await
            .unwrap()
    }
}
