//! How long other nodes take to show an edit when Redis loses it, and around a Redis restart.
//!
//! Two nodes in process on one PostgreSQL schema of their own (`TEST_DATABASE_URL`) and a
//! `redis-server` of their own on a free port; client `a` on node A, client `b` on node B, one
//! board. Prints, over `--trials` edits each (milliseconds, from `a`'s durable
//! acknowledgement to `b` showing the edit):
//!
//! - `redis`: delivered through Redis (nothing lost);
//! - `lost last message`: node A's publish dropped (the test hook), nothing after it: node B
//!   finds the rows at its next check of the database (`--heal-ms`);
//! - `redis down`: Redis killed, the edit made meanwhile;
//! - `redis back`: Redis restarted; how long until both nodes have reconnected (`/readyz`
//!   ready again), and an edit made right after that.
//!
//! `cargo run --release -p tests --bin healbench -- --trials 20 --heal-ms 2000`

use std::time::{Duration, Instant};

use clap::Parser;
use harness::TestClient;
use harness::fixture::Fixture;
use harness::http::http;
use harness::node::{RedisServer, TestNode};
use sync_server::app::Config;
use sync_server::cluster::ClusterConfig;

#[derive(Debug, Parser)]
#[command(about = "Heal times across nodes: lost messages and Redis restarts")]
struct Args {
    /// Edits measured per case.
    #[arg(long, default_value_t = 20)]
    trials: usize,
    /// The nodes' `--heal-interval-ms`.
    #[arg(long, default_value_t = 2000)]
    heal_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let fx = Fixture::postgres()
        .await
        .ok_or_else(|| anyhow::anyhow!("set TEST_DATABASE_URL to a PostgreSQL database"))?;
    let mut redis = RedisServer::start()
        .await
        .ok_or_else(|| anyhow::anyhow!("redis-server is needed"))?;
    let heal = Duration::from_millis(args.heal_ms);
    let node = |name: &str| Config {
        database_url: fx.url().into(),
        node: name.into(),
        cluster: Some(ClusterConfig {
            heal_interval: heal,
            ..ClusterConfig::new(redis.url())
        }),
        ..harness::server::config()
    };
    let a_node = TestNode::start(node("a"), fx.reopen().await).await?;
    let b_node = TestNode::start(node("b"), fx.reopen().await).await?;
    let board = "heal-bench";
    let a = TestClient::connect(a_node.addr, board, true).await;
    let b = TestClient::connect(b_node.addr, board, true).await;
    a.wait_synced().await;
    b.wait_synced().await;

    let mut edit = 0usize;
    let mut samples = Vec::new();
    for _ in 0..args.trials {
        edit += 1;
        samples.push(deliver(&a, &b, edit).await);
    }
    report("redis", samples);

    let mut samples = Vec::new();
    for _ in 0..args.trials {
        edit += 1;
        a_node.handle.drop_cluster_publishes(true);
        samples.push(deliver(&a, &b, edit).await);
        a_node.handle.drop_cluster_publishes(false);
    }
    report("lost last message", samples);

    let (mut down, mut back, mut after) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..args.trials.div_ceil(4) {
        redis.stop().await;
        edit += 1;
        down.push(deliver(&a, &b, edit).await);
        redis.restart().await;
        let restarted = Instant::now();
        wait_ready(&a_node).await;
        wait_ready(&b_node).await;
        back.push(restarted.elapsed().as_secs_f64() * 1e3);
        edit += 1;
        after.push(deliver(&a, &b, edit).await);
    }
    report("redis down", down);
    report("redis back: both nodes reconnected", back);
    report("redis back: the next edit", after);

    drop((a, b));
    a_node.shutdown().await;
    b_node.shutdown().await;
    fx.finish().await;
    Ok(())
}

/// Makes edit `n` on `a`; milliseconds from its durable acknowledgement to `b` showing it.
async fn deliver(a: &TestClient, b: &TestClient, n: usize) -> f64 {
    let value = n.to_string();
    a.put_note("bench", &value);
    a.wait_all_acked().await;
    let acked = Instant::now();
    b.wait_for_within("the edit on the other node", Duration::from_secs(30), |s| {
        harness::notes(&s.doc).get("bench") == Some(&value)
    })
    .await;
    acked.elapsed().as_secs_f64() * 1e3
}

async fn wait_ready(node: &TestNode) {
    loop {
        let r = http(node.addr, "GET", "/readyz", None, b"").await;
        if r.json()["status"] == "ready" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn report(label: &str, mut samples: Vec<f64>) {
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    println!(
        "{label:<38} n={:<3} min {:>8.1} ms  median {:>8.1} ms  max {:>8.1} ms",
        samples.len(),
        at(0.0),
        at(0.5),
        at(1.0)
    );
}
