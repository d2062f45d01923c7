//! CPU time and resident memory of a process, from `/proc` (Linux only).

use anyhow::Context;

/// `utime + stime` of process `pid` (all its threads), in clock ticks.
pub fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    // The command name (field 2) may contain spaces and parentheses: skip past the last ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("malformed stat")?;
    // Fields after ')': 3 state, 4 ppid, ... 14 utime, 15 stime => indices 11 and 12 here.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11).context("no utime")?.parse()?;
    let stime: u64 = fields.get(12).context("no stime")?.parse()?;
    Ok(utime + stime)
}

/// `VmRSS` of process `pid`, in KiB.
pub fn rss_kb(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS line")?;
    let kb = line
        .split_whitespace()
        .nth(1)
        .context("malformed VmRSS line")?;
    Ok(kb.parse()?)
}

/// Clock ticks per second (`getconf CLK_TCK`); 100 if `getconf` is unavailable.
pub fn clk_tck() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// Converts clock ticks to milliseconds.
pub fn ticks_to_ms(ticks: u64, clk_tck: u64) -> f64 {
    ticks as f64 * 1000.0 / clk_tck as f64
}

/// Busy time of the whole machine (all CPUs: user, nice, system, irq, softirq, steal), in clock
/// ticks, from the first line of `/proc/stat`.
pub fn machine_busy_ticks() -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string("/proc/stat").context("cannot read /proc/stat")?;
    let line = stat.lines().next().context("empty /proc/stat")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    // user nice system idle iowait irq softirq steal ...
    let get = |i: usize| v.get(i).copied().unwrap_or(0);
    Ok(get(0) + get(1) + get(2) + get(5) + get(6) + get(7))
}
