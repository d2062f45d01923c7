//! Prometheus metrics, served at `GET /metrics` in the text exposition format.
//!
//! One [`Metrics`] per server (not a global), so several servers in one process, as in the
//! tests, keep their numbers apart. Labels never carry board ids, users or tokens: their
//! number would be unbounded and they are not for a metrics system to keep.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Kinds of errors counted in `sync_errors_total{kind}`.
pub mod kind {
    /// A frame that is not a y-protocols message, or a connection to an invalid board id
    /// (closed 4400).
    pub const BAD_MESSAGE: &str = "bad_message";
    /// An update that does not decode or apply (closed 4422).
    pub const BAD_UPDATE: &str = "bad_update";
    /// A message over the size limit (closed 4413).
    pub const TOO_LARGE: &str = "too_large";
    /// An update refused because the board would exceed its size limit.
    pub const BOARD_TOO_LARGE: &str = "board_too_large";
    /// A connection closed because it could not keep up (1013).
    pub const TOO_SLOW: &str = "too_slow";
    /// A failed group commit.
    pub const COMMIT_FAILED: &str = "commit_failed";
    /// A board that could not be loaded.
    pub const LOAD_FAILED: &str = "load_failed";
    /// A failed compaction.
    pub const COMPACTION_FAILED: &str = "compaction_failed";
    /// A request or connection without a valid token.
    pub const UNAUTHORIZED: &str = "unauthorized";
    /// A valid token that does not allow what was asked.
    pub const FORBIDDEN: &str = "forbidden";
    /// A document update from a read-only connection, refused.
    pub const READ_ONLY: &str = "read_only_update";
    /// Awareness entries of another user's client, dropped.
    pub const AWARENESS_SPOOF: &str = "awareness_spoof";
    /// A connection closed for sending over its message rate for most of a minute (1008).
    pub const MESSAGE_RATE: &str = "message_rate";
    /// A connection slowed down: it sent over its message rate, so reading it paused.
    pub const THROTTLED: &str = "throttled";
    /// An update or value nested deeper than the limit (closed 4422, or HTTP 400).
    pub const TOO_DEEP: &str = "too_deep";
    /// A connection over the awareness limits (client ids or state size; closed 4413).
    pub const AWARENESS_LIMIT: &str = "awareness_limit";
    /// A request refused because its board had too much waiting (HTTP 503, or 1013).
    pub const BOARD_BUSY: &str = "board_busy";
    /// An HTTP request refused by the per-address rate limit.
    pub const HTTP_RATE: &str = "http_rate";
    /// A connection refused by a connection limit.
    pub const CONNECTION_LIMIT: &str = "connection_limit";
    /// A WebSocket from an origin that is not allowed, or (open development mode) any
    /// request from a page of a non-loopback origin.
    pub const ORIGIN: &str = "origin_refused";
    /// A request refused in open development mode for naming a non-loopback `Host`.
    pub const HOST: &str = "host_refused";
    /// A connection closed for sending nothing, not even a pong, for the read timeout (1011).
    pub const READ_TIMEOUT: &str = "read_timeout";
    /// A connection to a board that was deleted, or that does not exist and its read-only
    /// token cannot create (closed 4404).
    pub const BOARD_NOT_FOUND: &str = "board_not_found";

    /// Every kind, so each series exists (at zero) from the start.
    pub const ALL: &[&str] = &[
        BAD_MESSAGE,
        BAD_UPDATE,
        TOO_LARGE,
        BOARD_TOO_LARGE,
        TOO_SLOW,
        COMMIT_FAILED,
        LOAD_FAILED,
        COMPACTION_FAILED,
        UNAUTHORIZED,
        FORBIDDEN,
        READ_ONLY,
        AWARENESS_SPOOF,
        MESSAGE_RATE,
        THROTTLED,
        TOO_DEEP,
        AWARENESS_LIMIT,
        BOARD_BUSY,
        HTTP_RATE,
        CONNECTION_LIMIT,
        ORIGIN,
        HOST,
        READ_TIMEOUT,
        BOARD_NOT_FOUND,
    ];
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    kind: &'static str,
}

/// How assistant runs end, in `assistant_runs_total{status}`.
pub const RUN_STATUSES: &[&str] = &["completed", "cancelled", "failed", "capped"];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    /// One of [`HTTP_METHODS`] or `other`.
    method: &'static str,
    /// A route template (`/v1/boards/{id}`), never a raw path.
    route: String,
    status: u16,
}

/// The methods `http_requests_total{method}` names; any other is counted as `other`, so that
/// made-up methods (any token is a valid HTTP method) cannot add series.
pub const HTTP_METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

/// The `method` label of a request method: itself if it is one of [`HTTP_METHODS`] (methods
/// are case-sensitive), else `other`.
fn method_label(method: &str) -> &'static str {
    HTTP_METHODS
        .iter()
        .find(|&&m| m == method)
        .copied()
        .unwrap_or("other")
}

/// Every metric the server keeps.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Open WebSocket connections.
    pub connections: Gauge,
    /// WebSocket connections accepted since start.
    pub connections_opened: Counter,
    /// Boards loaded in memory.
    pub boards_loaded: Gauge,
    /// Document updates received (WebSocket and HTTP).
    pub updates_received: Counter,
    /// Bytes of document updates received.
    pub update_bytes_received: Counter,
    /// Frames queued to connections (updates, awareness, sync answers).
    pub frames_sent: Counter,
    /// Bytes received in document updates that are not durable yet.
    pub pending_bytes: Gauge,
    /// Seconds one group commit takes.
    pub commit_seconds: Histogram,
    /// Updates per group commit.
    pub commit_updates: Histogram,
    /// Seconds from an update's arrival at its board to its broadcast (after its commit).
    pub fanout_seconds: Histogram,
    /// The deepest outbound queue among a board's connections, at each broadcast.
    pub queue_depth: Histogram,
    /// Idle boards evicted from memory.
    pub evictions: Counter,
    /// Compactions completed.
    pub compactions: Counter,
    /// Versions saved (automatic and named).
    pub versions_saved: Counter,
    /// Compactions skipped: another server held the board's maintenance lock.
    pub compactions_skipped: Counter,
    /// Automatic versions skipped: another server held the board's maintenance lock.
    pub versions_skipped: Counter,
    /// Assistant tool calls handled (applied or not).
    pub assistant_tool_calls: Counter,
    /// Assistant undos applied.
    pub assistant_undos: Counter,
    /// Fan-out between nodes (zero on a node alone).
    pub cluster: ClusterMetrics,
    errors: Family<ErrorLabels, Counter>,
    http_requests: Family<HttpLabels, Counter>,
    http_seconds: Histogram,
    assistant_runs: Family<StatusLabels, Counter>,
    assistant_tokens: Family<TokenLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let connections = Gauge::default();
        let connections_opened = Counter::default();
        let boards_loaded = Gauge::default();
        let updates_received = Counter::default();
        let update_bytes_received = Counter::default();
        let frames_sent = Counter::default();
        let pending_bytes = Gauge::default();
        // 50 µs .. ~1.6 s
        let commit_seconds = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        let commit_updates = Histogram::new(exponential_buckets(1.0, 2.0, 14));
        let fanout_seconds = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        let queue_depth = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        let evictions = Counter::default();
        let compactions = Counter::default();
        let versions_saved = Counter::default();
        let compactions_skipped = Counter::default();
        let versions_skipped = Counter::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        for &kind in kind::ALL {
            let _ = errors.get_or_create(&ErrorLabels { kind });
        }
        let http_requests = Family::<HttpLabels, Counter>::default();
        let http_seconds = Histogram::new(exponential_buckets(0.000_1, 2.0, 16));
        let assistant_tool_calls = Counter::default();
        let assistant_undos = Counter::default();
        let assistant_runs = Family::<StatusLabels, Counter>::default();
        for &status in RUN_STATUSES {
            let _ = assistant_runs.get_or_create(&StatusLabels { status });
        }
        let assistant_tokens = Family::<TokenLabels, Counter>::default();
        for kind in ["prompt", "completion"] {
            let _ = assistant_tokens.get_or_create(&TokenLabels { kind });
        }

        let cluster = ClusterMetrics::new();
        cluster.register(registry.sub_registry_with_prefix("sync_cluster"));
        let r = &mut registry;
        r.register(
            "sync_connections",
            "Open WebSocket connections",
            connections.clone(),
        );
        r.register(
            "sync_connections_opened",
            "WebSocket connections accepted",
            connections_opened.clone(),
        );
        r.register(
            "sync_boards_loaded",
            "Boards loaded in memory",
            boards_loaded.clone(),
        );
        r.register(
            "sync_updates_received",
            "Document updates received (WebSocket and HTTP)",
            updates_received.clone(),
        );
        r.register(
            "sync_update_bytes_received",
            "Bytes of document updates received",
            update_bytes_received.clone(),
        );
        r.register(
            "sync_frames_sent",
            "Frames queued to connections",
            frames_sent.clone(),
        );
        r.register(
            "sync_pending_bytes",
            "Bytes of received updates not yet durable",
            pending_bytes.clone(),
        );
        r.register(
            "sync_commit_duration_seconds",
            "Duration of one group commit",
            commit_seconds.clone(),
        );
        r.register(
            "sync_commit_updates",
            "Updates per group commit",
            commit_updates.clone(),
        );
        r.register(
            "sync_fanout_delay_seconds",
            "From an update's arrival at its board to its broadcast, commit included",
            fanout_seconds.clone(),
        );
        r.register(
            "sync_outbound_queue_depth",
            "Deepest outbound queue among a board's connections at each broadcast",
            queue_depth.clone(),
        );
        r.register("sync_evictions", "Idle boards evicted", evictions.clone());
        r.register(
            "sync_compactions",
            "Compactions completed",
            compactions.clone(),
        );
        r.register(
            "sync_versions_saved",
            "Versions saved",
            versions_saved.clone(),
        );
        r.register(
            "sync_compactions_skipped",
            "Compactions skipped: another server held the board's maintenance lock",
            compactions_skipped.clone(),
        );
        r.register(
            "sync_versions_skipped",
            "Automatic versions skipped: another server held the board's maintenance lock",
            versions_skipped.clone(),
        );
        r.register("sync_errors", "Errors by kind", errors.clone());
        r.register(
            "http_requests",
            "HTTP requests by method, route and status",
            http_requests.clone(),
        );
        r.register(
            "http_request_duration_seconds",
            "Duration of HTTP requests",
            http_seconds.clone(),
        );
        r.register(
            "assistant_runs",
            "Assistant runs by how they ended",
            assistant_runs.clone(),
        );
        r.register(
            "assistant_tokens",
            "Model tokens the assistant used, as the model service reported them",
            assistant_tokens.clone(),
        );
        r.register(
            "assistant_tool_calls",
            "Assistant tool calls handled",
            assistant_tool_calls.clone(),
        );
        r.register(
            "assistant_undos",
            "Assistant runs undone",
            assistant_undos.clone(),
        );
        Self {
            registry,
            connections,
            connections_opened,
            boards_loaded,
            updates_received,
            update_bytes_received,
            frames_sent,
            pending_bytes,
            commit_seconds,
            commit_updates,
            fanout_seconds,
            queue_depth,
            evictions,
            compactions,
            versions_saved,
            compactions_skipped,
            versions_skipped,
            assistant_tool_calls,
            assistant_undos,
            cluster,
            errors,
            http_requests,
            http_seconds,
            assistant_runs,
            assistant_tokens,
        }
    }

    /// [`Metrics::new`], with `sync_node_info{node}` (always 1) naming this node, so every
    /// series of a scrape can be told apart by node (`node` is checked: at most 64
    /// characters of `[A-Za-z0-9._-]`).
    pub fn for_node(node: &str) -> Self {
        let mut metrics = Self::new();
        let info = Family::<NodeLabels, Gauge>::default();
        info.get_or_create(&NodeLabels {
            node: node.to_owned(),
        })
        .set(1);
        metrics
            .registry
            .register("sync_node_info", "This node's id (always 1)", info);
        metrics
    }

    /// Counts an assistant run that ended with `status` (one of [`RUN_STATUSES`]) and the
    /// tokens it used.
    pub fn assistant_run(&self, status: &'static str, prompt_tokens: u64, completion_tokens: u64) {
        self.assistant_runs
            .get_or_create(&StatusLabels { status })
            .inc();
        self.assistant_tokens
            .get_or_create(&TokenLabels { kind: "prompt" })
            .inc_by(prompt_tokens);
        self.assistant_tokens
            .get_or_create(&TokenLabels { kind: "completion" })
            .inc_by(completion_tokens);
    }

    /// Counts an error of `kind` (one of [`kind`]).
    pub fn error(&self, kind: &'static str) {
        self.errors.get_or_create(&ErrorLabels { kind }).inc();
    }

    /// Counts an HTTP request. `route` must be a route template (or `unmatched`), never the
    /// request's path; `method` is counted as one of [`HTTP_METHODS`] or `other`.
    pub fn http_request(&self, method: &str, route: &str, status: u16, seconds: f64) {
        self.http_requests
            .get_or_create(&HttpLabels {
                method: method_label(method),
                route: route.to_owned(),
                status,
            })
            .inc();
        self.http_seconds.observe(seconds);
    }

    /// The metrics in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    node: String,
}

/// Publishes to Redis.
#[derive(Debug, Default)]
pub struct Published {
    /// Messages sent to Redis.
    pub sent: Counter,
    /// Messages dropped: Redis away or too slow, or the test hook (the others heal from the
    /// database).
    pub dropped: Counter,
}

/// Fan-out between nodes (`sync_cluster_*`).
#[derive(Debug)]
pub struct ClusterMetrics {
    /// 1 while both Redis connections (publish and subscribe) are up.
    pub redis_up: Gauge,
    /// Messages published.
    pub published: Published,
    /// Messages received from other nodes about boards this node holds.
    pub received: Counter,
    /// Messages from Redis that did not decode (or came on the wrong channel): dropped.
    pub bad_messages: Counter,
    /// Messages for a board actor whose inbox was full: dropped (it heals from the database).
    pub dropped: Counter,
    /// Seconds from a message's publication to its arrival (the nodes' clocks).
    pub lag_seconds: Histogram,
    /// Reads of rows a board lacked (another node's), from the database.
    pub heals: Counter,
    /// Rows read by those heals.
    pub heal_rows: Counter,
    /// Checks of the last sequence numbers of the boards this node holds.
    pub db_checks: Counter,
    /// Other nodes found gone (silent or leaving): their presence was cleared.
    pub nodes_gone: Counter,
}

impl ClusterMetrics {
    fn new() -> Self {
        Self {
            redis_up: Gauge::default(),
            published: Published::default(),
            received: Counter::default(),
            bad_messages: Counter::default(),
            dropped: Counter::default(),
            // 20 µs .. ~5 s
            lag_seconds: Histogram::new(exponential_buckets(0.000_02, 2.0, 18)),
            heals: Counter::default(),
            heal_rows: Counter::default(),
            db_checks: Counter::default(),
            nodes_gone: Counter::default(),
        }
    }

    fn register(&self, r: &mut Registry) {
        r.register(
            "redis_up",
            "1 while Redis is reachable for publishing and subscribing",
            self.redis_up.clone(),
        );
        r.register(
            "published",
            "Messages published to Redis",
            self.published.sent.clone(),
        );
        r.register(
            "publish_dropped",
            "Messages not published (Redis away or too slow): healed from the database",
            self.published.dropped.clone(),
        );
        r.register(
            "received",
            "Messages received from other nodes",
            self.received.clone(),
        );
        r.register(
            "bad_messages",
            "Messages from Redis that did not decode",
            self.bad_messages.clone(),
        );
        r.register(
            "inbox_dropped",
            "Messages dropped at a board's full inbox",
            self.dropped.clone(),
        );
        r.register(
            "lag_seconds",
            "From a message's publication to its arrival",
            self.lag_seconds.clone(),
        );
        r.register(
            "heals",
            "Reads from the database of rows a board lacked",
            self.heals.clone(),
        );
        r.register(
            "heal_rows",
            "Rows read from the database by heals",
            self.heal_rows.clone(),
        );
        r.register(
            "db_checks",
            "Checks of the held boards' last sequence numbers",
            self.db_checks.clone(),
        );
        r.register(
            "nodes_gone",
            "Nodes found gone, their presence cleared",
            self.nodes_gone.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_are_labelled_from_a_fixed_set() {
        for method in HTTP_METHODS {
            assert_eq!(method_label(method), *method);
        }
        for method in ["FOO1", "get", "CONNECT", "TRACE", "PROPFIND", ""] {
            assert_eq!(method_label(method), "other", "{method}");
        }
    }

    #[test]
    fn made_up_methods_share_one_series() {
        let metrics = Metrics::new();
        for i in 0..50 {
            metrics.http_request(&format!("FOO{i}"), "/v1/boards", 405, 0.001);
        }
        metrics.http_request("GET", "/v1/boards", 200, 0.001);
        let text = metrics.render();
        // A family renders its series in hash order.
        let mut series: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("http_requests_total{"))
            .collect();
        series.sort_unstable();
        assert_eq!(
            series,
            [
                "http_requests_total{method=\"GET\",route=\"/v1/boards\",status=\"200\"} 1",
                "http_requests_total{method=\"other\",route=\"/v1/boards\",status=\"405\"} 50",
            ]
        );
    }
}
