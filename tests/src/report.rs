//! Results of one load-generator scenario (one JSON line each) and the markdown tables the
//! benchmark script prints from them.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::fsync::{self, FsyncResult};

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
    /// The longest stall of any receiver over the measured window and the drain (µs): the
    /// longest time it went without receiving anything while owed an update (see
    /// [`crate::stall`]); an incomplete receiver's stall runs to the end of the drain.
    #[serde(default)]
    pub longest_stall_us: u64,
    /// How long the drain after the measured window took (ms).
    #[serde(default)]
    pub drain_ms: f64,
    /// Receivers still lacking updates after the drain (the run failed).
    #[serde(default)]
    pub incomplete: Vec<IncompleteReceiver>,
    /// Idle scenario: total connections.
    pub idle_connections: Option<u64>,
    /// Idle scenario: (RSS after all connections − RSS before) / connections (KiB).
    pub idle_kb_per_conn: Option<f64>,
    /// Idle scenario: RSS growth from the first connection per board to all connections,
    /// per added connection (KiB): the cost of a connection to an already loaded board.
    pub idle_marginal_kb_per_conn: Option<f64>,
    /// Idle scenario: RSS with one connection per board (KiB).
    pub idle_rss_one_per_board_kb: Option<u64>,
    /// Reconnect-storm scenario (`loadgen storm`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storm: Option<crate::storm::StormResult>,
    /// Large-board scenario (`loadgen large`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub large: Option<crate::large::LargeResult>,
}

impl ScenarioResult {
    /// A fan-out run (not idle, storm or large).
    fn is_fanout(&self) -> bool {
        self.idle_connections.is_none() && self.storm.is_none() && self.large.is_none()
    }
}

/// A receiver still lacking updates when the drain ended.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IncompleteReceiver {
    /// `<board>/client-<n>` (clients `0..draggers` of a board are its draggers).
    pub receiver: String,
    /// Updates it was owed and never received.
    pub lacked: u64,
    /// Its longest stall (µs), the open one up to the end of the drain included.
    pub longest_stall_us: u64,
}

/// One line of a results file: a scenario's result or a bare-fsync measurement.
#[derive(Debug, Clone)]
pub enum Line {
    /// A fan-out or idle scenario against one server.
    Scenario(Box<ScenarioResult>),
    /// The disk's bare fsync cost.
    Fsync(FsyncResult),
}

/// Parses one JSON line: a line whose `kind` is `fsync` is a measurement of the disk, any
/// other (the scenarios' lines carry no `kind`) a scenario's result.
pub fn parse_line(line: &str) -> serde_json::Result<Line> {
    let value: serde_json::Value = serde_json::from_str(line)?;
    if value.get("kind").and_then(serde_json::Value::as_str) == Some(fsync::KIND) {
        Ok(Line::Fsync(serde_json::from_value(value)?))
    } else {
        Ok(Line::Scenario(Box::new(serde_json::from_value(value)?)))
    }
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

/// Server label of ours over y-websocket: the one compared with every other server.
const OURS: &str = "ours";

/// Markdown: the disk's bare fsync cost (when measured), a full table per (server, scenario)
/// (the run with the median p99), the receivers incomplete after a drain, ours against each
/// other server per scenario (p99 and CPU per 1,000 deliveries, ours ÷ peer), the Hocuspocus
/// dialect's table (ours over it ÷ ours over y-websocket, and the Hocuspocus server) when it
/// ran, and the idle-memory table.
pub fn markdown(results: &[ScenarioResult], fsync: &[FsyncResult]) -> String {
    let mut out = String::new();
    fsync_table(&mut out, fsync);
    let (fanout, all_p99) = median_runs(results);
    runs_table(&mut out, &fanout, &all_p99);
    incomplete_list(&mut out, results);
    let scenarios = by_scenario(&fanout);
    peers_table(&mut out, &scenarios);
    dialect_table(&mut out, &scenarios);
    idle_table(&mut out, results);
    storm_table(&mut out, results);
    large_table(&mut out, results);
    out
}

fn mib(kb: u64) -> String {
    format!("{:.1}", kb as f64 / 1024.0)
}

fn storm_table(out: &mut String, results: &[ScenarioResult]) {
    let storms: Vec<(&ScenarioResult, &crate::storm::StormResult)> = results
        .iter()
        .filter_map(|r| Some((r, r.storm.as_ref()?)))
        .collect();
    if storms.is_empty() {
        return;
    }
    out.push_str(
        "Reconnect storm (ms from the restart; done = offline edit durable and every other offline edit of the board received):\n\n\
         | server | clients × boards | spread ms | stop ms | start ms | durable p50 / p99 / max | delivered p50 / p99 / max | done p50 / p99 / max | all done ms | durable after own connect p50 / p99 / max | failures | disconnects | retries | closed 1012 | peak RSS MiB | RSS MiB | edits found after kill -9 |\n\
         |---|---:|---:|---:|---:|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let three =
        |s: &crate::storm::Spread| format!("{:.0} / {:.0} / {:.0}", s.p50_ms, s.p99_ms, s.max_ms);
    for (r, s) in storms {
        let _ = writeln!(
            out,
            "| {} | {} × {} | {:.0} | {:.0} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} of {} |",
            r.server,
            s.clients,
            s.boards,
            s.spread_ms,
            s.stop_ms,
            s.start_ms,
            three(&s.durable),
            three(&s.delivered),
            three(&s.done_at),
            if s.done == s.clients {
                format!("{:.0}", s.all_done_ms)
            } else {
                format!("**{} of {} done**", s.done, s.clients)
            },
            three(&s.durable_after_connect),
            s.failures,
            s.disconnects,
            s.connect_retries,
            s.closed_1012,
            mib(s.peak_rss_kb),
            mib(s.rss_kb),
            s.verified_edits,
            s.expected_edits,
        );
    }
    out.push('\n');
}

fn large_table(out: &mut String, results: &[ScenarioResult]) {
    let large: Vec<(&ScenarioResult, &crate::large::LargeResult)> = results
        .iter()
        .filter_map(|r| Some((r, r.large.as_ref()?)))
        .collect();
    if large.is_empty() {
        return;
    }
    out.push_str(
        "Large board (RSS of the server; × = ÷ the encoded size):\n\n\
         | server | encoded MB | objects | yrs doc MiB | yrs load peak MiB | first: received ms | first: applied ms | joiners | joined | timeouts | join p50 / p99 / max ms | RSS idle MiB | RSS 1 client MiB | RSS max sampled MiB | peak (VmHWM) MiB | peak × | steady MiB | steady × | after close MiB |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (r, l) in large {
        let times = |kb: u64| {
            if l.encoded_bytes == 0 {
                "-".to_string()
            } else {
                format!("{:.1}", kb as f64 * 1024.0 / l.encoded_bytes as f64)
            }
        };
        let _ = writeln!(
            out,
            "| {} | {:.1} | {} | {} | {} | {:.0} | {} | {} | {} | {} | {:.0} / {:.0} / {:.0} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.server,
            l.encoded_bytes as f64 / 1e6,
            l.objects,
            mib(l.yrs_doc_kb),
            mib(l.yrs_load_peak_kb),
            l.first.received_ms,
            l.first
                .applied_ms
                .map_or("-".to_string(), |ms| format!("{ms:.0}")),
            l.joiners,
            l.joined,
            if l.timeouts > 0 {
                format!("**{}**", l.timeouts)
            } else {
                "0".to_string()
            },
            l.join.p50_ms,
            l.join.p99_ms,
            l.join.max_ms,
            mib(l.rss_idle_kb),
            mib(l.rss_one_client_kb),
            mib(l.rss_max_sampled_kb),
            mib(l.peak_rss_kb),
            times(l.peak_rss_kb),
            mib(l.rss_steady_kb),
            times(l.rss_steady_kb),
            mib(l.rss_after_close_kb),
        );
    }
    out.push('\n');
}

fn fsync_table(out: &mut String, fsync: &[FsyncResult]) {
    for f in fsync {
        let _ = writeln!(
            out,
            "Bare fsync in `{}` ({} × {} bytes per method):\n\n\
             | method | median ms | p99 ms | max ms | mean ms |\n|---|---:|---:|---:|---:|",
            f.dir, f.iterations, f.block_bytes
        );
        for m in &f.methods {
            let _ = writeln!(
                out,
                "| {} | {:.3} | {:.3} | {:.3} | {:.3} |",
                m.method, m.p50_ms, m.p99_ms, m.max_ms, m.mean_ms
            );
        }
        out.push('\n');
    }
}

/// The fan-out results, one per (server, scenario) in order of first appearance: of repeated
/// runs, the one with the median p99; and every run's p99 per (server, scenario).
fn median_runs(
    results: &[ScenarioResult],
) -> (Vec<&ScenarioResult>, BTreeMap<(String, String), String>) {
    let mut groups: Vec<((String, String), Vec<&ScenarioResult>)> = Vec::new();
    for r in results.iter().filter(|r| r.is_fanout()) {
        let key = (r.server.clone(), r.scenario.clone());
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, runs)) => runs.push(r),
            None => groups.push((key, vec![r])),
        }
    }
    let mut all_p99 = BTreeMap::new();
    let mut fanout = Vec::new();
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
    (fanout, all_p99)
}

fn runs_table(
    out: &mut String,
    fanout: &[&ScenarioResult],
    all_p99: &BTreeMap<(String, String), String>,
) {
    if fanout.is_empty() {
        return;
    }
    out.push_str(
        "| server | scenario | boards × clients | draggers × Hz | deliveries/s | p50 ms | p99 ms | longest stall ms | max ms | CPU-ms/1k | server RSS MiB | loadgen CPU % | missing | disconnects | drain ms | other CPU % | p99 of each run ms |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for r in fanout {
        let _ = writeln!(
            out,
            "| {} | {} | {} × {} | {} × {} | {:.0} | {} | {} | {} | {} | {:.2} | {:.1} | {:.0} | {} | {} | {:.0} | {:.0} | {} |",
            r.server,
            r.scenario,
            r.boards,
            r.clients_per_board,
            r.draggers_per_board,
            r.rate_hz,
            r.deliveries_per_s,
            ms(r.p50_us),
            ms(r.p99_us),
            ms(r.longest_stall_us),
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
            r.drain_ms,
            r.other_cpu_pct,
            all_p99
                .get(&(r.server.clone(), r.scenario.clone()))
                .map_or("", String::as_str),
        );
    }
    out.push('\n');
}

/// Every run's incomplete receivers, not only the median runs': a lost delivery anywhere
/// must show.
fn incomplete_list(out: &mut String, results: &[ScenarioResult]) {
    /// Receivers listed per run; the rest are counted.
    const SHOWN: usize = 10;
    let failed: Vec<&ScenarioResult> = results
        .iter()
        .filter(|r| !r.incomplete.is_empty())
        .collect();
    if failed.is_empty() {
        return;
    }
    out.push_str("**Receivers incomplete after the drain:**\n\n");
    for r in failed {
        let listed: Vec<String> = r
            .incomplete
            .iter()
            .take(SHOWN)
            .map(|i| {
                format!(
                    "{} lacked {} (longest stall {} ms)",
                    i.receiver,
                    i.lacked,
                    ms(i.longest_stall_us)
                )
            })
            .collect();
        let more = r.incomplete.len().saturating_sub(SHOWN);
        let _ = writeln!(
            out,
            "- {} {} (drain {:.0} ms): {}{}",
            r.server,
            r.scenario,
            r.drain_ms,
            listed.join("; "),
            if more > 0 {
                format!("; and {more} more")
            } else {
                String::new()
            }
        );
    }
    out.push('\n');
}

/// Per scenario (in order of first appearance), its results per server (likewise ordered).
type ByScenario<'a> = Vec<(String, Vec<(String, &'a ScenarioResult)>)>;

fn by_scenario<'a>(fanout: &[&'a ScenarioResult]) -> ByScenario<'a> {
    let mut scenarios: ByScenario<'a> = Vec::new();
    for r in fanout {
        let entry = (r.server.clone(), *r);
        match scenarios.iter_mut().find(|(s, _)| *s == r.scenario) {
            Some((_, servers)) => servers.push(entry),
            None => scenarios.push((r.scenario.clone(), vec![entry])),
        }
    }
    scenarios
}

fn find<'a>(servers: &[(String, &'a ScenarioResult)], name: &str) -> Option<&'a ScenarioResult> {
    servers.iter().find(|(s, _)| s == name).map(|(_, r)| *r)
}

fn cell_ms(v: Option<f64>) -> String {
    v.map_or("-".to_string(), |x| format!("{:.2}", x / 1000.0))
}

fn cell(v: Option<f64>) -> String {
    v.map_or("-".to_string(), |x| format!("{x:.2}"))
}

fn rat(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) => ratio(a, b),
        _ => "-".to_string(),
    }
}

/// Ours against every other server of the same scenario: below 1 means ours is lower (better).
fn peers_table(out: &mut String, scenarios: &ByScenario<'_>) {
    let mut rows = String::new();
    for (scenario, servers) in scenarios {
        let Some(ours) = find(servers, OURS) else {
            continue;
        };
        for (peer, r) in servers.iter().filter(|(s, _)| s != OURS) {
            let _ = writeln!(
                rows,
                "| {scenario} | {peer} | {} | {} | {} | {:.2} | {:.2} | {} | {} | {} |",
                ms(ours.p99_us),
                ms(r.p99_us),
                ratio(ours.p99_us as f64, r.p99_us as f64),
                ours.cpu_ms_per_1k,
                r.cpu_ms_per_1k,
                ratio(ours.cpu_ms_per_1k, r.cpu_ms_per_1k),
                ms(ours.longest_stall_us),
                ms(r.longest_stall_us),
            );
        }
    }
    if rows.is_empty() {
        return;
    }
    out.push_str(
        "Ours against each peer (÷: ours ÷ peer, below 1 is better for ours):\n\n\
         | scenario | peer | p99 ours ms | p99 peer ms | p99 ÷ | CPU/1k ours | CPU/1k peer | CPU/1k ÷ | longest stall ours ms | longest stall peer ms |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    out.push_str(&rows);
    out.push('\n');
}

fn dialect_table(out: &mut String, scenarios: &ByScenario<'_>) {
    let ran = scenarios.iter().any(|(_, servers)| {
        find(servers, OURS_HOCUSPOCUS).is_some() || find(servers, HOCUSPOCUS).is_some()
    });
    if !ran {
        return;
    }
    out.push_str(
        "| scenario | p99 ours y-websocket | p99 ours Hocuspocus | ÷ | p99 Hocuspocus server | CPU/1k ours y-websocket | CPU/1k ours Hocuspocus | ÷ | CPU/1k Hocuspocus server |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (scenario, servers) in scenarios {
        let p99 = |s: &str| find(servers, s).map(|r| r.p99_us as f64);
        let cpu = |s: &str| find(servers, s).map(|r| r.cpu_ms_per_1k);
        let _ = writeln!(
            out,
            "| {scenario} | {} | {} | {} | {} | {} | {} | {} | {} |",
            cell_ms(p99(OURS)),
            cell_ms(p99(OURS_HOCUSPOCUS)),
            rat(p99(OURS_HOCUSPOCUS), p99(OURS)),
            cell_ms(p99(HOCUSPOCUS)),
            cell(cpu(OURS)),
            cell(cpu(OURS_HOCUSPOCUS)),
            rat(cpu(OURS_HOCUSPOCUS), cpu(OURS)),
            cell(cpu(HOCUSPOCUS)),
        );
    }
    out.push('\n');
}

fn idle_table(out: &mut String, results: &[ScenarioResult]) {
    let idle: Vec<&ScenarioResult> = results
        .iter()
        .filter(|r| r.idle_connections.is_some())
        .collect();
    if idle.is_empty() {
        return;
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn run(server: &str, scenario: &str, p99_us: u64, cpu: f64) -> ScenarioResult {
        ScenarioResult {
            server: server.to_string(),
            scenario: scenario.to_string(),
            p99_us,
            cpu_ms_per_1k: cpu,
            duration_s: 1.0,
            ..ScenarioResult::default()
        }
    }

    #[test]
    fn storm_and_large_results_get_tables_of_their_own() {
        let storm = ScenarioResult {
            server: "ours".into(),
            scenario: "storm".into(),
            storm: Some(crate::storm::StormResult {
                clients: 2000,
                boards: 200,
                done: 1999,
                failures: 1,
                verified_edits: 2000,
                expected_edits: 2000,
                ..Default::default()
            }),
            ..ScenarioResult::default()
        };
        let large = ScenarioResult {
            server: "ours".into(),
            scenario: "large".into(),
            large: Some(crate::large::LargeResult {
                encoded_bytes: 50_000_000,
                peak_rss_kb: 146_484, // 150 MB: 3 ×
                timeouts: 2,
                ..Default::default()
            }),
            ..ScenarioResult::default()
        };
        let line = serde_json::to_string(&storm).unwrap();
        assert!(matches!(parse_line(&line), Ok(Line::Scenario(r)) if r.storm.is_some()));
        let md = markdown(&[storm, large, run("ours", "a2", 1000, 1.0)], &[]);
        assert!(md.contains("**1999 of 2000 done**"), "{md}");
        assert!(md.contains("| 2000 of 2000 |"), "{md}");
        assert!(md.contains("| 3.0 |") && md.contains("| **2** |"), "{md}");
        // Neither is counted as a fan-out run.
        assert_eq!(md.matches("| ours | storm |").count(), 0, "{md}");
    }

    #[test]
    fn fsync_lines_and_old_scenario_lines_parse() {
        let f = r#"{"kind":"fsync","dir":"/tmp","block_bytes":4096,"iterations":2,"methods":[{"method":"append + fsync","p50_ms":0.3,"p99_ms":0.5,"max_ms":0.6,"mean_ms":0.35}]}"#;
        assert!(matches!(parse_line(f), Ok(Line::Fsync(r)) if r.methods.len() == 1));
        // A line written before stalls were measured: the new fields default.
        let mut old = serde_json::to_value(run("ours", "a2", 1000, 1.0)).unwrap();
        let obj = old.as_object_mut().unwrap();
        for field in ["longest_stall_us", "drain_ms", "incomplete"] {
            obj.remove(field);
        }
        let line = serde_json::to_string(&old).unwrap();
        assert!(matches!(parse_line(&line), Ok(Line::Scenario(r)) if r.incomplete.is_empty()));
    }

    #[test]
    fn ours_is_compared_with_each_peer_and_incomplete_receivers_are_named() {
        let mut ysweet = run("ysweet", "a200", 4000, 10.0);
        ysweet.incomplete.push(IncompleteReceiver {
            receiver: "bench-a200-1-0/client-7".to_string(),
            lacked: 12,
            longest_stall_us: 1_500_000,
        });
        let results = [
            run("relay", "a200", 2000, 8.0),
            run("ours", "a200", 5000, 12.0),
            ysweet,
        ];
        let md = markdown(&results, &[]);
        assert!(
            md.contains("| a200 | relay | 5.00 | 2.00 | 2.50 | 12.00 | 8.00 | 1.50 |"),
            "{md}"
        );
        assert!(
            md.contains("| a200 | ysweet | 5.00 | 4.00 | 1.25 | 12.00 | 10.00 | 1.20 |"),
            "{md}"
        );
        assert!(
            md.contains("bench-a200-1-0/client-7 lacked 12 (longest stall 1500.00 ms)"),
            "{md}"
        );
    }
}
