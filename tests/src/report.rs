//! Results of one load-generator scenario (one JSON line each) and the markdown tables the
//! benchmark script prints from them.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// One scenario against one server.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ScenarioResult {
    /// Server label: `relay`, `reference`, `ours`.
    pub server: String,
    /// Scenario label, e.g. `a200`.
    pub scenario: String,
    /// Human description of the scenario.
    pub description: String,
    /// Boards.
    pub boards: usize,
    /// Clients per board.
    pub clients_per_board: usize,
    /// Dragging clients per board.
    pub draggers_per_board: usize,
    /// Drag rate per dragger (Hz).
    pub rate_hz: f64,
    /// Measured window (s).
    pub duration_s: f64,
    /// Updates sent in the measured window.
    pub updates_sent: u64,
    /// Deliveries of updates sent in the measured window.
    pub deliveries: u64,
    /// `deliveries / duration_s`.
    pub deliveries_per_s: f64,
    /// Deliveries expected over the whole run (setup + warm-up + measured).
    pub expected_total: u64,
    /// Deliveries received over the whole run.
    pub delivered_total: u64,
    /// `expected_total - delivered_total` after the drain timeout.
    pub missing: u64,
    /// Connections that closed or failed before the end.
    pub disconnects: u64,
    /// Fan-out latency percentiles (µs).
    pub p50_us: u64,
    /// p99 (µs).
    pub p99_us: u64,
    /// p99.9 (µs).
    pub p999_us: u64,
    /// Maximum (µs).
    pub max_us: u64,
    /// Server CPU time (user + system) over the measured window and the drain (ms).
    pub server_cpu_ms: f64,
    /// `server_cpu_ms` per 1,000 deliveries.
    pub cpu_ms_per_1k: f64,
    /// Server RSS before connecting (KiB).
    pub server_rss_before_kb: u64,
    /// Server RSS after the run, connections still open (KiB).
    pub server_rss_after_kb: u64,
    /// Load generator CPU over the same window (ms), to show it was not the bottleneck.
    pub loadgen_cpu_ms: f64,
    /// CPU used by other processes on the machine during the window (% of one core): noise.
    #[serde(default)]
    pub other_cpu_pct: f64,
    /// Connection attempts that failed and were retried.
    #[serde(default)]
    pub connect_retries: u64,
    /// Idle scenario: total connections.
    pub idle_connections: Option<u64>,
    /// Idle scenario: (RSS after all connections − RSS before) / connections (KiB).
    pub idle_kb_per_conn: Option<f64>,
    /// Idle scenario: RSS growth from the first connection per board to all connections,
    /// per added connection (KiB): the cost of a connection to an already loaded board.
    pub idle_marginal_kb_per_conn: Option<f64>,
    /// Idle scenario: RSS with one connection per board (KiB).
    pub idle_rss_one_per_board_kb: Option<u64>,
}

/// Server label of ours speaking the Hocuspocus dialect (`/v1/hocuspocus`).
const OURS_HOCUSPOCUS: &str = "ours-hocuspocus";
/// Server label of the Hocuspocus server itself (`@hocuspocus/server`).
const HOCUSPOCUS: &str = "hocuspocus";

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

fn ratio(a: f64, b: f64) -> String {
    if a > 0.0 && b > 0.0 {
        format!("{:.2}", a / b)
    } else {
        "-".to_string()
    }
}

fn opt_f(v: Option<f64>) -> Option<String> {
    v.map(|x| format!("{x:.2}"))
}

/// Markdown: a full table per result, a comparison table (ours ÷ reference, ours ÷ relay), the
/// Hocuspocus dialect's table (ours over it ÷ ours over y-websocket, and the Hocuspocus server)
/// when it ran, and the idle-memory table.
pub fn markdown(results: &[ScenarioResult]) -> String {
    let mut out = String::new();
    // Repeated runs of a (server, scenario): keep the run with the median p99, list all p99s.
    let mut groups: Vec<((String, String), Vec<&ScenarioResult>)> = Vec::new();
    for r in results.iter().filter(|r| r.idle_connections.is_none()) {
        let key = (r.server.clone(), r.scenario.clone());
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, runs)) => runs.push(r),
            None => groups.push((key, vec![r])),
        }
    }
    let mut all_p99: BTreeMap<(String, String), String> = BTreeMap::new();
    let mut fanout: Vec<&ScenarioResult> = Vec::new();
    for (key, mut runs) in groups {
        runs.sort_by_key(|r| r.p99_us);
        all_p99.insert(
            key,
            runs.iter()
                .map(|r| ms(r.p99_us))
                .collect::<Vec<_>>()
                .join(" / "),
        );
        fanout.push(runs[(runs.len() - 1) / 2]);
    }
    let idle: Vec<&ScenarioResult> = results
        .iter()
        .filter(|r| r.idle_connections.is_some())
        .collect();

    if !fanout.is_empty() {
        out.push_str(
            "| server | scenario | boards × clients | draggers × Hz | deliveries/s | p50 ms | p99 ms | max ms | CPU-ms/1k | server RSS MiB | loadgen CPU % | missing | disconnects | other CPU % | p99 of each run ms |\n\
             |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
        );
        for r in &fanout {
            let _ = writeln!(
                out,
                "| {} | {} | {} × {} | {} × {} | {:.0} | {} | {} | {} | {:.2} | {:.1} | {:.0} | {} | {} | {:.0} | {} |",
                r.server,
                r.scenario,
                r.boards,
                r.clients_per_board,
                r.draggers_per_board,
                r.rate_hz,
                r.deliveries_per_s,
                ms(r.p50_us),
                ms(r.p99_us),
                ms(r.max_us),
                r.cpu_ms_per_1k,
                r.server_rss_after_kb as f64 / 1024.0,
                // loadgen CPU over (window + drain) relative to the window; ~100 = saturated.
                r.loadgen_cpu_ms / (r.duration_s * 10.0),
                if r.missing > 0 {
                    format!("**{}**", r.missing)
                } else {
                    "0".to_string()
                },
                r.disconnects,
                r.other_cpu_pct,
                all_p99
                    .get(&(r.server.clone(), r.scenario.clone()))
                    .map_or("", String::as_str),
            );
        }
        out.push('\n');
    }

    // Comparison: one row per scenario.
    let mut by_scenario: BTreeMap<(usize, String), BTreeMap<String, &ScenarioResult>> =
        BTreeMap::new();
    for (i, r) in fanout.iter().enumerate() {
        let order = fanout
            .iter()
            .position(|x| x.scenario == r.scenario)
            .unwrap_or(i);
        by_scenario
            .entry((order, r.scenario.clone()))
            .or_default()
            .insert(r.server.clone(), r);
    }
    if !by_scenario.is_empty() {
        out.push_str(
            "| scenario | p99 relay | p99 reference | p99 ours | ours ÷ ref | ours ÷ relay | CPU/1k relay | CPU/1k reference | CPU/1k ours | ours ÷ ref | ours ÷ relay |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for ((_, scenario), servers) in &by_scenario {
            let p99 = |s: &str| servers.get(s).map(|r| r.p99_us as f64);
            let cpu = |s: &str| servers.get(s).map(|r| r.cpu_ms_per_1k);
            let cell_ms =
                |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{:.2}", x / 1000.0));
            let cell = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.2}"));
            let rat = |a: Option<f64>, b: Option<f64>| match (a, b) {
                (Some(a), Some(b)) => ratio(a, b),
                _ => "-".to_string(),
            };
            let _ = writeln!(
                out,
                "| {scenario} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                cell_ms(p99("relay")),
                cell_ms(p99("reference")),
                cell_ms(p99("ours")),
                rat(p99("ours"), p99("reference")),
                rat(p99("ours"), p99("relay")),
                cell(cpu("relay")),
                cell(cpu("reference")),
                cell(cpu("ours")),
                rat(cpu("ours"), cpu("reference")),
                rat(cpu("ours"), cpu("relay")),
            );
        }
        out.push('\n');
    }

    let dialects = by_scenario
        .values()
        .any(|servers| servers.contains_key(OURS_HOCUSPOCUS) || servers.contains_key(HOCUSPOCUS));
    if dialects {
        out.push_str(
            "| scenario | p99 ours y-websocket | p99 ours Hocuspocus | ÷ | p99 Hocuspocus server | CPU/1k ours y-websocket | CPU/1k ours Hocuspocus | ÷ | CPU/1k Hocuspocus server |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for ((_, scenario), servers) in &by_scenario {
            let p99 = |s: &str| servers.get(s).map(|r| r.p99_us as f64);
            let cpu = |s: &str| servers.get(s).map(|r| r.cpu_ms_per_1k);
            let cell_ms =
                |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{:.2}", x / 1000.0));
            let cell = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.2}"));
            let rat = |a: Option<f64>, b: Option<f64>| match (a, b) {
                (Some(a), Some(b)) => ratio(a, b),
                _ => "-".to_string(),
            };
            let _ = writeln!(
                out,
                "| {scenario} | {} | {} | {} | {} | {} | {} | {} | {} |",
                cell_ms(p99("ours")),
                cell_ms(p99(OURS_HOCUSPOCUS)),
                rat(p99(OURS_HOCUSPOCUS), p99("ours")),
                cell_ms(p99(HOCUSPOCUS)),
                cell(cpu("ours")),
                cell(cpu(OURS_HOCUSPOCUS)),
                rat(cpu(OURS_HOCUSPOCUS), cpu("ours")),
                cell(cpu(HOCUSPOCUS)),
            );
        }
        out.push('\n');
    }

    if !idle.is_empty() {
        out.push_str(
            "| server | connections | boards | RSS before MiB | RSS, 1 conn/board MiB | RSS after MiB | KiB/conn (total) | KiB/conn (marginal) |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for r in &idle {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.1} | {} | {:.1} | {} | {} |",
                r.server,
                r.idle_connections.unwrap_or(0),
                r.boards,
                r.server_rss_before_kb as f64 / 1024.0,
                r.idle_rss_one_per_board_kb
                    .map_or("-".to_string(), |kb| format!("{:.1}", kb as f64 / 1024.0)),
                r.server_rss_after_kb as f64 / 1024.0,
                opt_f(r.idle_kb_per_conn).unwrap_or_else(|| "-".to_string()),
                opt_f(r.idle_marginal_kb_per_conn).unwrap_or_else(|| "-".to_string()),
            );
        }
        out.push('\n');
    }
    out
}
