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
    status_kb(pid, "VmRSS:")
}

/// `VmHWM` of process `pid` (its peak resident memory so far), in KiB.
pub fn hwm_kb(pid: u32) -> anyhow::Result<u64> {
    status_kb(pid, "VmHWM:")
}

/// A `kB` field of `/proc/<pid>/status`.
fn status_kb(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    parse_status_kb(&status, field)
}

fn parse_status_kb(status: &str, field: &str) -> anyhow::Result<u64> {
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .with_context(|| format!("no {field} line"))?;
    let kb = line
        .split_whitespace()
        .nth(1)
        .with_context(|| format!("malformed {field} line"))?;
    Ok(kb.parse()?)
}

/// This process's soft limit of open files (`Max open files` in `/proc/self/limits`), or
/// `None` when unlimited. Raise it with `ulimit -n` before opening thousands of sockets.
pub fn nofile_limit() -> anyhow::Result<Option<u64>> {
    let limits =
        std::fs::read_to_string("/proc/self/limits").context("cannot read /proc/self/limits")?;
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .context("no `Max open files` line")?;
    let soft = line
        .split_whitespace()
        .nth(3)
        .context("malformed `Max open files` line")?;
    if soft == "unlimited" {
        return Ok(None);
    }
    Ok(Some(soft.parse()?))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields_in_kib() {
        let status = "Name:\tx\nVmHWM:\t  123456 kB\nVmRSS:\t   65432 kB\n";
        assert_eq!(parse_status_kb(status, "VmHWM:").ok(), Some(123_456));
        assert_eq!(parse_status_kb(status, "VmRSS:").ok(), Some(65_432));
        assert!(parse_status_kb(status, "VmSwap:").is_err());
        let me = std::process::id();
        let (hwm, rss) = (hwm_kb(me).unwrap(), rss_kb(me).unwrap());
        assert!(hwm >= rss && rss > 0, "hwm {hwm} rss {rss}");
        assert!(nofile_limit().unwrap().is_none_or(|n| n > 0));
    }
}
