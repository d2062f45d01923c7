//! Storage benchmark: durable append throughput and cold load, on SQLite and PostgreSQL.
//!
//! ```sh
//! cargo bench -p sync-server --bench storage                  # SQLite, plus PostgreSQL if
//! BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \ # BENCH_DATABASE_URL (or
//!   cargo bench -p sync-server --bench storage                # TEST_DATABASE_URL) is set
//! ```
//!
//! Append: one writer commits batches of 1, 16 and 256 small real Yjs updates (a note dragged
//! across a board, about 49 bytes each; the run prints the average) to one board, as the
//! server's group commit would; every commit is durable (SQLite WAL with `synchronous=FULL`;
//! PostgreSQL `synchronous_commit=on`).
//! Spread: the same appends, but each commit carries one update for each of 1, 10 or 100
//! boards that already hold 300 rows each (many small boards, as a busy server's group commit
//! sees them): what a commit costs per board it touches. Wall time, the process's CPU time
//! (all threads, from /proc/self/stat) and the bytes it wrote (`wchar` in /proc/self/io: WAL
//! frames and checkpoints, a page and a frame header per dirty page) per commit.
//! Cold load: a board with 100,000 logged updates is read by a freshly opened store and
//! replayed into a `yrs::Doc`, before and after compaction.

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::Connection;
use sync_server::ids::BoardId;
use sync_server::storage::compaction::compact_board;
use sync_server::storage::replay::replay_into;
use sync_server::storage::{NewUpdate, Storage, StorageOptions, open};
use yrs::{Doc, Map, Transact};

const BATCH_SIZES: [usize; 3] = [1, 16, 256];
/// Each append run stops at whichever comes first.
const RUN_TIME: Duration = Duration::from_secs(4);
const RUN_UPDATES: usize = 400_000;
const LOAD_UPDATES: usize = 100_000;
/// Boards per commit in the spread runs, each with this many rows before the run.
const SPREAD_BOARDS: [usize; 3] = [1, 10, 100];
const SPREAD_PREFILL: usize = 300;
const SPREAD_COMMITS: usize = 2_000;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

async fn run() {
    let updates = drag_updates(RUN_UPDATES.max(LOAD_UPDATES));
    let avg = updates.iter().map(Vec::len).sum::<usize>() as f64 / updates.len() as f64;
    println!("updates: real yrs drag updates, {avg:.1} bytes on average");
    println!();
    println!("| backend | batch | updates | updates/s | commit p50 | commit p99 |");
    println!("|---|---:|---:|---:|---:|---:|");

    let dir = tempfile::tempdir().unwrap();
    let sqlite_url = format!("sqlite://{}/bench.db", dir.path().display());
    let mut targets = vec![("sqlite", sqlite_url, None)];
    if let Some(base) = std::env::var("BENCH_DATABASE_URL")
        .or_else(|_| std::env::var("TEST_DATABASE_URL"))
        .ok()
        .filter(|u| !u.is_empty())
    {
        let schema = format!("bench_{}", std::process::id());
        exec(&base, &format!("CREATE SCHEMA {schema}")).await;
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
        targets.push(("postgres", url, Some((base, schema))));
    } else {
        eprintln!("PostgreSQL skipped: set BENCH_DATABASE_URL or TEST_DATABASE_URL");
    }

    let mut load_rows = Vec::new();
    let mut spread_rows = Vec::new();
    for (name, url, _) in &targets {
        let store = open(url, &StorageOptions::default()).await.unwrap();
        for batch in BATCH_SIZES {
            append_run(name, store.as_ref(), batch, &updates).await;
        }
        for boards in SPREAD_BOARDS {
            spread_rows.push(spread_run(name, store.as_ref(), boards, &updates).await);
        }
        load_rows.push(cold_load(name, url, store.as_ref(), &updates[..LOAD_UPDATES]).await);
        store.close().await;
    }
    println!();
    println!(
        "| backend | boards per commit | commits | commit p50 | commit p99 | CPU per commit | KiB written per commit |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for row in spread_rows {
        println!("{row}");
    }
    println!();
    println!(
        "| backend | cold load, 100k log rows (read + replay) | compaction | cold load after compaction (read + replay) | snapshot |"
    );
    println!("|---|---:|---:|---:|---:|");
    for row in load_rows {
        println!("{row}");
    }
    for (_, _, pg) in targets {
        if let Some((base, schema)) = pg {
            exec(&base, &format!("DROP SCHEMA {schema} CASCADE")).await;
        }
    }
}

async fn append_run(name: &str, store: &dyn Storage, batch: usize, updates: &[Vec<u8>]) {
    let id = BoardId::parse(&format!("append-{batch}")).unwrap();
    store.create_board(&id).await.unwrap();
    let mut latencies = Vec::new();
    let started = Instant::now();
    let mut sent = 0;
    for chunk in updates.chunks(batch) {
        if started.elapsed() > RUN_TIME {
            break;
        }
        let items: Vec<NewUpdate<'_>> = chunk
            .iter()
            .map(|data| NewUpdate { board: &id, data })
            .collect();
        let t = Instant::now();
        store.append(&items).await.unwrap();
        latencies.push(t.elapsed());
        sent += chunk.len();
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
    println!(
        "| {name} | {batch} | {sent} | {:.0} | {} | {} |",
        sent as f64 / elapsed.as_secs_f64(),
        ms(pct(0.50)),
        ms(pct(0.99)),
    );
}

/// Commits of one update to each of `boards` boards (each holding `SPREAD_PREFILL` rows).
async fn spread_run(name: &str, store: &dyn Storage, boards: usize, updates: &[Vec<u8>]) -> String {
    let ids: Vec<BoardId> = (0..boards)
        .map(|i| BoardId::parse(&format!("spread-{boards}-{i:03}-board")).unwrap())
        .collect();
    for id in &ids {
        store.create_board(id).await.unwrap();
    }
    // One commit: the next update for each board, in turn.
    let mut rows = updates.iter().cycle();
    let mut commit = async || {
        let items: Vec<NewUpdate<'_>> = ids
            .iter()
            .map(|id| NewUpdate {
                board: id,
                data: rows.next().unwrap(),
            })
            .collect();
        let t = Instant::now();
        store.append(&items).await.unwrap();
        t.elapsed()
    };
    for _ in 0..SPREAD_PREFILL {
        commit().await;
    }
    let mut latencies = Vec::with_capacity(SPREAD_COMMITS);
    let cpu0 = process_cpu();
    let written0 = process_written();
    for _ in 0..SPREAD_COMMITS {
        latencies.push(commit().await);
    }
    let cpu = process_cpu() - cpu0;
    let written = process_written() - written0;
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
    format!(
        "| {name} | {boards} | {SPREAD_COMMITS} | {} | {} | {} | {:.1} |",
        ms(pct(0.50)),
        ms(pct(0.99)),
        ms(cpu / SPREAD_COMMITS as u32),
        written as f64 / 1024.0 / SPREAD_COMMITS as f64,
    )
}

/// CPU time of this process (user + system, all threads), from /proc/self/stat.
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

/// Bytes this process passed to write calls so far (`wchar` in /proc/self/io).
fn process_written() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").unwrap();
    io.lines()
        .find_map(|line| line.strip_prefix("wchar: "))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

async fn cold_load(name: &str, url: &str, store: &dyn Storage, updates: &[Vec<u8>]) -> String {
    let id = BoardId::parse("cold-load").unwrap();
    store.create_board(&id).await.unwrap();
    for chunk in updates.chunks(1024) {
        let items: Vec<NewUpdate<'_>> = chunk
            .iter()
            .map(|data| NewUpdate { board: &id, data })
            .collect();
        store.append(&items).await.unwrap();
    }
    let (read, replay) = load_once(url, &id).await;
    let t = Instant::now();
    let stats = compact_board(store, &id).await.unwrap().unwrap();
    let compaction = t.elapsed();
    let (read_after, replay_after) = load_once(url, &id).await;
    format!(
        "| {name} | {} ({} + {}) | {} | {} ({} + {}) | {} bytes |",
        ms(read + replay),
        ms(read),
        ms(replay),
        ms(compaction),
        ms(read_after + replay_after),
        ms(read_after),
        ms(replay_after),
        stats.snapshot_bytes,
    )
}

/// Opens a new store (cold pool, nothing cached in process) and times reading and replaying.
async fn load_once(url: &str, id: &BoardId) -> (Duration, Duration) {
    let store = open(url, &StorageOptions::default()).await.unwrap();
    let t = Instant::now();
    let stored = store.load(id).await.unwrap();
    let read = t.elapsed();
    let t = Instant::now();
    replay_into(&Doc::new(), &stored).unwrap();
    let replay = t.elapsed();
    store.close().await;
    (read, replay)
}

/// A note dragged around a board: each update sets its `pos`, as a client does on drop or up
/// to ~10 times a second while dragging.
fn drag_updates(n: usize) -> Vec<Vec<u8>> {
    let doc = Doc::new();
    let out = Arc::new(Mutex::new(Vec::with_capacity(n)));
    let sink = out.clone();
    doc.observe_update_v1("bench", move |_, e| {
        sink.lock().unwrap().push(e.update.clone())
    })
    .unwrap();
    let objects = doc.get_or_insert_map("objects");
    {
        let mut txn = doc.transact_mut();
        let note = objects.insert(&mut txn, "note-1", yrs::MapPrelim::default());
        note.insert(&mut txn, "kind", "sticky");
    }
    let Some(yrs::Out::YMap(note)) = objects.get(&doc.transact(), "note-1") else {
        unreachable!("just inserted")
    };
    for i in 1..n {
        let mut txn = doc.transact_mut();
        note.insert(
            &mut txn,
            "pos",
            vec![(i % 1000) as f64, (i / 1000) as f64 + 0.5],
        );
    }
    doc.unobserve_update_v1("bench").unwrap();
    Arc::try_unwrap(out).unwrap().into_inner().unwrap()
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

async fn exec(url: &str, sql: &str) {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut conn)
        .await
        .unwrap();
}
