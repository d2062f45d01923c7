//! The disk's bare fsync cost: the floor a durable commit adds to a fan-out, measured where the
//! benchmark's databases live (the same directory, hence the same filesystem and device).
//!
//! Three ways a database makes a write durable, each 4 KiB (one page) at a time:
//! - `overwrite + fdatasync`: the same block rewritten in place, then `fdatasync` (data only:
//!   the file's size does not change);
//! - `O_DSYNC write`: the same, through a file opened `O_DSYNC` (every write is synchronous);
//! - `append + fsync`: appended, then `fsync`, as a write-ahead log that grows (SQLite's WAL
//!   with `synchronous=FULL`): the size changes, so the metadata is flushed too.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{FileExt as _, OpenOptionsExt as _};
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Bytes per write: one SQLite page.
pub const BLOCK: usize = 4096;

/// The `kind` of the JSON line of a measurement.
pub const KIND: &str = "fsync";

/// One measurement: every method, in the directory `dir`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FsyncResult {
    /// Always [`KIND`]: tells this line from the scenarios' in a results file.
    pub kind: String,
    /// Directory of the probe files.
    pub dir: String,
    /// Bytes per write.
    pub block_bytes: usize,
    /// Writes per method.
    pub iterations: usize,
    /// One entry per method.
    pub methods: Vec<MethodResult>,
}

/// The durations of one method's writes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MethodResult {
    /// `overwrite + fdatasync`, `O_DSYNC write` or `append + fsync`.
    pub method: String,
    /// Median (ms).
    pub p50_ms: f64,
    /// p99 (ms).
    pub p99_ms: f64,
    /// Maximum (ms).
    pub max_ms: f64,
    /// Mean (ms).
    pub mean_ms: f64,
}

/// Measures every method `iterations` times with probe files in `dir` (removed afterwards).
pub fn measure(dir: &Path, iterations: usize) -> std::io::Result<FsyncResult> {
    let iterations = iterations.max(1);
    let methods = vec![
        summarize(
            "overwrite + fdatasync",
            overwrite_fdatasync(dir, iterations)?,
        ),
        summarize("O_DSYNC write", o_dsync(dir, iterations)?),
        summarize("append + fsync", append_fsync(dir, iterations)?),
    ];
    Ok(FsyncResult {
        kind: KIND.to_string(),
        dir: dir.display().to_string(),
        block_bytes: BLOCK,
        iterations,
        methods,
    })
}

/// A probe file in `dir`, deleted when dropped, its first block written and synced so that
/// in-place rewrites do not allocate.
fn probe(dir: &Path) -> std::io::Result<tempfile::NamedTempFile> {
    let mut file = tempfile::Builder::new()
        .prefix(".fsync-probe-")
        .tempfile_in(dir)?;
    file.write_all(&[0u8; BLOCK])?;
    file.as_file().sync_all()?;
    Ok(file)
}

/// A block that differs from the previous one (no write is a no-op anywhere in the stack).
fn block(i: usize) -> [u8; BLOCK] {
    let mut b = [0u8; BLOCK];
    for (j, byte) in b.iter_mut().enumerate() {
        *byte = (i.wrapping_add(j) % 251) as u8;
    }
    b
}

fn timed(
    iterations: usize,
    mut op: impl FnMut(usize) -> std::io::Result<()>,
) -> std::io::Result<Vec<Duration>> {
    let mut times = Vec::with_capacity(iterations);
    for i in 0..iterations {
        let start = Instant::now();
        op(i)?;
        times.push(start.elapsed());
    }
    Ok(times)
}

fn overwrite_fdatasync(dir: &Path, iterations: usize) -> std::io::Result<Vec<Duration>> {
    let probe = probe(dir)?;
    let file = probe.as_file();
    timed(iterations, |i| {
        file.write_all_at(&block(i), 0)?;
        file.sync_data()
    })
}

fn o_dsync(dir: &Path, iterations: usize) -> std::io::Result<Vec<Duration>> {
    let probe = probe(dir)?;
    let file: File = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DSYNC)
        .open(probe.path())?;
    timed(iterations, |i| file.write_all_at(&block(i), 0))
}

fn append_fsync(dir: &Path, iterations: usize) -> std::io::Result<Vec<Duration>> {
    let probe = probe(dir)?;
    let mut file = OpenOptions::new().append(true).open(probe.path())?;
    timed(iterations, |i| {
        file.write_all(&block(i))?;
        file.sync_all()
    })
}

fn summarize(method: &str, mut times: Vec<Duration>) -> MethodResult {
    times.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let at = |q: f64| {
        // Nearest rank: the smallest value with at least q of the values at or below it.
        let rank = ((q * times.len() as f64).ceil() as usize).clamp(1, times.len().max(1));
        times.get(rank - 1).copied().map_or(0.0, ms)
    };
    let total: Duration = times.iter().sum();
    MethodResult {
        method: method.to_string(),
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        max_ms: times.last().copied().map_or(0.0, ms),
        mean_ms: if times.is_empty() {
            0.0
        } else {
            ms(total) / times.len() as f64
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_uses_nearest_rank() {
        let times: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let m = summarize("x", times);
        assert_eq!(m.p50_ms, 50.0);
        assert_eq!(m.p99_ms, 99.0);
        assert_eq!(m.max_ms, 100.0);
        assert!((m.mean_ms - 50.5).abs() < 1e-9);
    }

    #[test]
    fn measures_every_method_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let r = measure(dir.path(), 3).unwrap();
        assert_eq!(r.kind, KIND);
        assert_eq!(r.methods.len(), 3);
        assert!(r.methods.iter().all(|m| m.max_ms >= m.p50_ms));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
