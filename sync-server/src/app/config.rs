//! What the application is built from.

use std::time::Duration;

use crate::assistant::AssistantConfig;
use crate::auth::Auth;
use crate::board::BoardConfig;
use crate::cluster::ClusterConfig;
use crate::commit::Pacing;
use crate::limits::Limits;
use crate::storage::{DatabaseUrl, StorageOptions};

/// Everything the server needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Database URL (`sqlite://...`, `postgres://...`, `memory:`).
    pub database_url: DatabaseUrl,
    /// Connection pools and timeouts.
    pub storage: StorageOptions,
    /// Board actor limits and thresholds.
    pub board: BoardConfig,
    /// Connection and request limits.
    pub limits: Limits,
    /// How callers are authenticated.
    pub auth: Auth,
    /// How group commits are sized and paced.
    pub commit: Pacing,
    /// How long shutdown waits for connections and commits before giving up.
    pub shutdown_timeout: Duration,
    /// The assistant's model service and limits; `None` disables it (its routes answer 503).
    pub assistant: Option<AssistantConfig>,
    /// Open development mode only: answer requests whatever their `Host` (`--insecure` with a
    /// non-loopback `--bind`). Otherwise open mode answers only requests addressed to a
    /// loopback host, against DNS rebinding; `Origin` is checked either way.
    pub open_any_host: bool,
    /// This node's name in logs, metrics and between nodes (1 to 64 characters of
    /// `[A-Za-z0-9._-]`); by default the host's name and a random suffix, so that a restarted
    /// node is never taken for its previous run.
    pub node: String,
    /// Several nodes on one PostgreSQL database, with Redis between them; `None`: this node
    /// alone.
    pub cluster: Option<ClusterConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database_url: "sqlite://./data/boards.db".into(),
            storage: StorageOptions::default(),
            board: BoardConfig::default(),
            limits: Limits::default(),
            auth: Auth::Open,
            commit: Pacing::default(),
            shutdown_timeout: Duration::from_secs(30),
            assistant: None,
            open_any_host: false,
            node: crate::cluster::default_node_id(None),
            cluster: None,
        }
    }
}
