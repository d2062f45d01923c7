//! Liveness and readiness.
//!
//! `/readyz` is exempt from the HTTP rate limit (probes), so anyone can send many: each answer
//! comes from a cached database check at most [`READY_TTL`] old, and at most one check runs at
//! a time, however many probes arrive. Checks use the store's general pool, never the
//! connections commits use.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::cluster::Cluster;
use crate::metrics::Metrics;
use crate::storage::Storage;

/// How long a database check's outcome answers readiness probes.
pub(crate) const READY_TTL: Duration = Duration::from_secs(1);

/// How long a database check may take before the database counts as unavailable.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether the server is ready: not shutting down, and its database answers. Keeps the last
/// database check: when it ended and whether the database answered. Its lock is held while a
/// check runs, so probes arriving meanwhile wait for that check's outcome instead of starting
/// their own.
#[derive(Debug)]
pub(crate) struct Readiness {
    store: Arc<dyn Storage>,
    shutdown: CancellationToken,
    cluster: Cluster,
    last: Mutex<Option<(Instant, bool)>>,
}

impl Readiness {
    pub(super) fn new(
        store: Arc<dyn Storage>,
        shutdown: CancellationToken,
        cluster: Cluster,
    ) -> Self {
        Self {
            store,
            shutdown,
            cluster,
            last: Mutex::default(),
        }
    }

    /// Whether the database answers, checked at most once per [`READY_TTL`].
    async fn database_answers(&self) -> bool {
        let mut last = self.last.lock().await;
        if let Some((at, answered)) = *last
            && at.elapsed() < READY_TTL
        {
            return answered;
        }
        let answered = match tokio::time::timeout(CHECK_TIMEOUT, self.store.ping()).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "readiness check: database unavailable");
                false
            }
            Err(_) => {
                tracing::warn!(
                    timeout_ms = CHECK_TIMEOUT.as_millis() as u64,
                    "readiness check: the database did not answer in time"
                );
                false
            }
        };
        *last = Some((Instant::now(), answered));
        answered
    }
}

/// `GET /healthz`: the process is up and serving HTTP.
pub(crate) async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: the database answers (as of at most a second ago) and the server is not
/// shutting down.
pub(crate) async fn readyz(State(readiness): State<Arc<Readiness>>) -> (StatusCode, Json<Value>) {
    if readiness.shutdown.is_cancelled() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "shutting down" })),
        );
    }
    if readiness.database_answers().await {
        if readiness.cluster.redis_up() {
            (StatusCode::OK, Json(json!({ "status": "ready" })))
        } else {
            // Still ready: this node serves its clients durably and heals from the database;
            // only the fan-out to other nodes' clients waits for Redis.
            (
                StatusCode::OK,
                Json(json!({ "status": "degraded", "redis": "unavailable" })),
            )
        }
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "database unavailable" })),
        )
    }
}

/// `GET /metrics`: Prometheus metrics in the OpenMetrics text format (which Prometheus
/// scrapes). Carries no board ids, users or tokens, so it needs no token; restrict it at the
/// network if the numbers are private.
pub(crate) async fn metrics(
    State(metrics): State<Arc<Metrics>>,
) -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.render(),
    )
}
