//! Several nodes on one PostgreSQL database with Redis between them (`sync_server::cluster`):
//! clients on different nodes converge through Redis, a lost message is healed from the
//! database (at once when a later one reveals the gap, within the heal interval when it was
//! the last), presence crosses nodes and goes with its node, a deletion closes clients
//! everywhere, and a Redis that goes away and comes back costs nothing but a delay.
//!
//! They need `TEST_DATABASE_URL` and `TEST_REDIS_URL` (required under `CI=true`; skipped with a
//! message otherwise). Tests that stop Redis start a `redis-server` of their own.

use std::time::Duration;

use harness::fixture::Fixture;
use harness::http::http;
use harness::node::{RedisServer, TestNode, redis_url};
use harness::wire::awareness_frame;
use harness::{SqliteDb, TestClient};
use sync_server::app::{Config, ServerError};
use sync_server::cluster::{ClusterConfig, ClusterError};

/// Long enough that nothing in a test comes from the periodic check of the database.
const NO_CHECK: Duration = Duration::from_secs(600);

struct Nodes {
    fx: Fixture,
    nodes: Vec<TestNode>,
}

impl Nodes {
    /// `n` nodes on one fresh PostgreSQL schema and `redis`, each checking the database every
    /// `heal`. `None` (said) when PostgreSQL is not configured outside CI.
    async fn start(n: usize, redis: &str, heal: Duration) -> Option<Self> {
        let fx = Fixture::postgres().await?;
        let prefix = format!("t{}", uuid::Uuid::new_v4().simple());
        let mut nodes = Vec::new();
        for i in 0..n {
            let config = node_config(&fx, &format!("node{i}"), redis, &prefix, heal);
            nodes.push(TestNode::start(config, fx.reopen().await).await.unwrap());
        }
        Some(Self { fx, nodes })
    }

    async fn finish(self) {
        for node in self.nodes {
            node.shutdown().await;
        }
        self.fx.finish().await;
    }
}

fn node_config(fx: &Fixture, node: &str, redis: &str, prefix: &str, heal: Duration) -> Config {
    Config {
        database_url: fx.url().into(),
        node: node.into(),
        cluster: Some(ClusterConfig {
            prefix: prefix.into(),
            heal_interval: heal,
            node_timeout: Duration::from_millis(1500),
            ..ClusterConfig::new(redis)
        }),
        ..harness::server::config()
    }
}

fn skip_without_redis() -> Option<String> {
    let url = redis_url();
    if url.is_none() {
        eprintln!("SKIPPED: TEST_REDIS_URL is not set, the cluster tests not run");
    }
    url
}

/// The value of a metric in the node's `/metrics`, 0 if absent.
async fn metric(node: &TestNode, name: &str) -> f64 {
    let response = http(node.addr, "GET", "/metrics", None, b"").await;
    String::from_utf8_lossy(&response.body)
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn clients_on_different_nodes_converge_through_redis() {
    let Some(redis) = skip_without_redis() else {
        return;
    };
    let Some(c) = Nodes::start(3, &redis, NO_CHECK).await else {
        return;
    };
    let board = "across-nodes";
    let clients = [
        TestClient::connect(c.nodes[0].addr, board, true).await,
        TestClient::connect(c.nodes[1].addr, board, true).await,
        TestClient::connect(c.nodes[2].addr, board, true).await,
    ];
    for client in &clients {
        client.wait_synced().await;
    }
    for (i, client) in clients.iter().enumerate() {
        client.put_note(&format!("from-{i}"), &format!("written on node {i}"));
    }
    for client in &clients {
        for i in 0..3 {
            client.wait_note(&format!("from-{i}")).await;
        }
        client.wait_all_acked().await;
    }
    // A burst from one node reaches the others whole and in order.
    for n in 0..200 {
        clients[0].put_note("burst", &format!("{n}"));
    }
    for client in &clients[1..] {
        client
            .wait_for("the burst's last value", |s| {
                harness::notes(&s.doc).get("burst").map(String::as_str) == Some("199")
            })
            .await;
    }
    assert!(metric(&c.nodes[1], "sync_cluster_received_total").await > 0.0);
    // What every client shows is what the database holds.
    let id = sync_server::ids::BoardId::parse(board).unwrap();
    let stored = c.fx.store.load(&id).await.unwrap();
    let from_db = yrs::Doc::new();
    sync_server::storage::replay::replay_into(&from_db, &stored).unwrap();
    for client in &clients {
        assert_eq!(client.notes(), harness::notes(&from_db));
    }
    c.finish().await;
}

#[tokio::test]
async fn a_gap_revealed_by_a_later_message_is_read_from_the_database_at_once() {
    let Some(redis) = skip_without_redis() else {
        return;
    };
    let Some(c) = Nodes::start(2, &redis, NO_CHECK).await else {
        return;
    };
    let board = "gap";
    let a = TestClient::connect(c.nodes[0].addr, board, true).await;
    let b = TestClient::connect(c.nodes[1].addr, board, true).await;
    a.wait_synced().await;
    b.wait_synced().await;
    c.nodes[0].handle.drop_cluster_publishes(true);
    a.put_note("lost", "published to no one");
    a.wait_all_acked().await;
    c.nodes[0].handle.drop_cluster_publishes(false);
    a.put_note("later", "reveals the gap");
    b.wait_note("later").await;
    b.wait_note("lost").await;
    assert!(metric(&c.nodes[1], "sync_cluster_heals_total").await >= 1.0);
    c.finish().await;
}

#[tokio::test]
async fn an_update_too_large_to_carry_is_announced_and_read_from_the_database() {
    let Some(redis) = skip_without_redis() else {
        return;
    };
    let Some(c) = Nodes::start(2, &redis, NO_CHECK).await else {
        return;
    };
    let board = "too-large-to-carry";
    let a = TestClient::connect(c.nodes[0].addr, board, true).await;
    let b = TestClient::connect(c.nodes[1].addr, board, true).await;
    a.wait_synced().await;
    b.wait_synced().await;
    let big = "x".repeat(300 << 10);
    a.put_note("big", &big);
    b.wait_for("the large note on the other node", |s| {
        harness::notes(&s.doc)
            .get("big")
            .is_some_and(|t| t.len() == big.len())
    })
    .await;
    assert!(metric(&c.nodes[1], "sync_cluster_heals_total").await >= 1.0);
    c.finish().await;
}

#[tokio::test]
async fn a_lost_last_message_is_healed_within_the_interval() {
    let Some(redis) = skip_without_redis() else {
        return;
    };
    let heal = Duration::from_millis(300);
    let Some(c) = Nodes::start(2, &redis, heal).await else {
        return;
    };
    let board = "lost-last";
    let a = TestClient::connect(c.nodes[0].addr, board, true).await;
    let b = TestClient::connect(c.nodes[1].addr, board, true).await;
    a.wait_synced().await;
    b.wait_synced().await;
    c.nodes[0].handle.drop_cluster_publishes(true);
    for n in 0..20 {
        a.put_note("burst", &format!("{n}"));
    }
    a.wait_all_acked().await;
    let started = tokio::time::Instant::now();
    b.wait_for_within("the lost burst", Duration::from_secs(3), |s| {
        harness::notes(&s.doc).get("burst").map(String::as_str) == Some("19")
    })
    .await;
    let took = started.elapsed();
    assert!(
        took < heal * 4,
        "healed in {took:?}, the interval is {heal:?}"
    );
    // Commits group edits: at least one publish went nowhere.
    assert!(metric(&c.nodes[0], "sync_cluster_publish_dropped_total").await >= 1.0);
    c.finish().await;
}

#[tokio::test]
async fn presence_crosses_nodes_and_goes_with_its_node() {
    let Some(redis) = skip_without_redis() else {
        return;
    };
    let Some(mut c) = Nodes::start(2, &redis, NO_CHECK).await else {
        return;
    };
    let board = "presence";
    let a = TestClient::connect(c.nodes[0].addr, board, false).await;
    let b = TestClient::connect(c.nodes[1].addr, board, false).await;
    a.wait_synced().await;
    b.wait_synced().await;
    let id = a.client_id();
    a.send_raw(awareness_frame(&[(id, 1, r#"{"user":{"name":"Ada"}}"#)]));
    b.wait_for("Ada's presence on the other node", |s| {
        s.seen.awareness_of(id).is_some_and(|j| j.contains("Ada"))
    })
    .await;
    // A client joining node 1 later learns it too, from node 1's own state.
    let late = TestClient::connect(c.nodes[1].addr, board, false).await;
    late.wait_for("Ada's presence for a late joiner", |s| {
        s.seen.awareness_of(id).is_some_and(|j| j.contains("Ada"))
    })
    .await;
    // Node 0 goes (its connection with it): its presence is cleared on node 1.
    let gone = c.nodes.remove(0);
    gone.shutdown().await;
    b.wait_for("Ada's presence cleared", |s| {
        s.seen.awareness_of(id).is_some_and(|j| j == "null")
    })
    .await;
    c.finish().await;
}

#[tokio::test]
async fn deleting_a_board_on_one_node_closes_its_clients_on_every_node() {
    let Some(redis) = skip_without_redis() else {
        return;
    };
    let Some(c) = Nodes::start(2, &redis, NO_CHECK).await else {
        return;
    };
    let board = "deleted-everywhere";
    let a = TestClient::connect(c.nodes[0].addr, board, false).await;
    let b = TestClient::connect(c.nodes[1].addr, board, false).await;
    a.wait_synced().await;
    b.wait_synced().await;
    let deleted = http(
        c.nodes[0].addr,
        "DELETE",
        &format!("/v1/boards/{board}"),
        None,
        b"",
    )
    .await;
    assert_eq!(deleted.status, 204, "{}", deleted.text());
    assert_eq!(a.wait_closed().await, 4404);
    assert_eq!(b.wait_closed().await, 4404);
    c.finish().await;
}

#[tokio::test]
async fn nodes_keep_serving_while_redis_is_away_and_converge_when_it_returns() {
    let Some(mut redis) = RedisServer::start().await else {
        return;
    };
    let heal = Duration::from_millis(300);
    let Some(c) = Nodes::start(2, &redis.url(), heal).await else {
        return;
    };
    let board = "redis-away";
    let a = TestClient::connect(c.nodes[0].addr, board, true).await;
    let b = TestClient::connect(c.nodes[1].addr, board, true).await;
    a.wait_synced().await;
    b.wait_synced().await;
    a.put_note("before", "redis up");
    b.wait_note("before").await;

    redis.stop().await;
    // Each node commits its own clients' edits and the others find them in the database.
    a.put_note("during-a", "redis down");
    b.put_note("during-b", "redis down");
    a.wait_all_acked().await;
    b.wait_all_acked().await;
    a.wait_note("during-b").await;
    b.wait_note("during-a").await;
    let ready = wait_ready(&c.nodes[0], "degraded").await;
    assert_eq!(ready["redis"], "unavailable");

    redis.restart().await;
    wait_ready(&c.nodes[0], "ready").await;
    wait_ready(&c.nodes[1], "ready").await;
    a.put_note("after", "redis back");
    b.wait_note("after").await;
    assert_eq!(a.notes(), b.notes());
    c.finish().await;
}

#[tokio::test]
async fn a_restore_on_one_node_reaches_clients_on_every_node() {
    let Some(redis) = skip_without_redis() else {
        return;
    };
    let Some(c) = Nodes::start(2, &redis, NO_CHECK).await else {
        return;
    };
    let board = "restored-everywhere";
    let a = TestClient::connect(c.nodes[0].addr, board, true).await;
    let b = TestClient::connect(c.nodes[1].addr, board, true).await;
    a.wait_synced().await;
    b.wait_synced().await;
    a.put_note("kept", "before the version");
    b.wait_note("kept").await;
    // The version is saved on node B, the restore asked of node A.
    let saved = http(
        c.nodes[1].addr,
        "POST",
        &format!("/v1/boards/{board}/versions"),
        Some("application/json"),
        br#"{"label":"clean"}"#,
    )
    .await;
    assert_eq!(saved.status, 201, "{}", saved.text());
    let version = saved.json()["id"].as_i64().unwrap();
    b.put_note("undone", "after the version");
    a.wait_note("undone").await;
    let restored = http(
        c.nodes[0].addr,
        "POST",
        &format!("/v1/boards/{board}/restore"),
        Some("application/json"),
        format!(r#"{{"version":{version}}}"#).as_bytes(),
    )
    .await;
    assert_eq!(restored.status, 200, "{}", restored.text());
    for client in [&a, &b] {
        client
            .wait_for("the restored board, without reloading", |s| {
                let notes = harness::notes(&s.doc);
                notes.contains_key("kept") && !notes.contains_key("undone")
            })
            .await;
    }
    c.finish().await;
}

/// Seeds of the randomized test across nodes; `SEED=n` replays one.
const CLUSTER_SEEDS: &[u64] = &[1, 2, 3, 4];

/// Random edits from clients spread over three nodes, clients going offline (editing on) and
/// coming back on another node, and nodes whose publishes are lost for a while: every client
/// ends with what the database holds, and the database with every edit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn randomized_edits_across_nodes_with_lost_messages_converge() {
    let Some(redis) = skip_without_redis() else {
        return;
    };
    let seeds: Vec<u64> = match std::env::var("SEED") {
        Ok(seed) => vec![seed.parse().expect("SEED is a number")],
        Err(_) => CLUSTER_SEEDS.to_vec(),
    };
    for seed in seeds {
        let Some(c) = Nodes::start(3, &redis, Duration::from_millis(200)).await else {
            return;
        };
        eprintln!("cluster seed {seed}");
        converge_seed(&c, seed).await;
        c.finish().await;
    }
}

async fn converge_seed(c: &Nodes, seed: u64) {
    let mut rng = super::randomized::Rng::new(seed);
    let board = format!("random-{seed}");
    let mut clients: Vec<(Option<TestClient>, yrs::Doc)> = Vec::new();
    for _ in 0..5 {
        let node = &c.nodes[rng.below(3) as usize];
        let client = TestClient::connect(node.addr, &board, true).await;
        client.wait_synced().await;
        let doc = client.doc();
        clients.push((Some(client), doc));
    }
    let mut written = std::collections::BTreeMap::new();
    for op in 0..80 {
        let i = rng.below(clients.len() as u64) as usize;
        let roll = rng.below(100);
        let key = format!("k{}", rng.below(8));
        let value = format!("{seed}-{op}");
        match roll {
            0..60 => {
                match &clients[i].0 {
                    Some(client) => {
                        client.put_note(&key, &value);
                    }
                    // Offline: the edit waits in the client's doc.
                    None => {
                        harness::put_note(&clients[i].1, &key, &value);
                    }
                }
                written.insert(key, value);
            }
            60..70 => {
                let node = rng.below(3) as usize;
                let lose = rng.chance(50);
                c.nodes[node].handle.drop_cluster_publishes(lose);
            }
            70..80 => {
                if let Some(client) = clients[i].0.take() {
                    client.close().await;
                }
            }
            80..90 => {
                if clients[i].0.is_none() {
                    let node = &c.nodes[rng.below(3) as usize];
                    let doc = clients[i].1.clone();
                    let client = TestClient::connect_with_doc(node.addr, &board, true, doc).await;
                    clients[i].0 = Some(client);
                }
            }
            _ => tokio::time::sleep(Duration::from_millis(rng.below(30))).await,
        }
    }
    for node in &c.nodes {
        node.handle.drop_cluster_publishes(false);
    }
    for (client, doc) in &mut clients {
        if client.is_none() {
            let node = &c.nodes[0];
            *client =
                Some(TestClient::connect_with_doc(node.addr, &board, true, doc.clone()).await);
        }
    }
    for (client, _) in &clients {
        let client = client.as_ref().unwrap();
        client.wait_synced().await;
        client.wait_all_acked().await;
    }
    let id = sync_server::ids::BoardId::parse(&board).unwrap();
    let stored = c.fx.store.load(&id).await.unwrap();
    let from_db = yrs::Doc::new();
    sync_server::storage::replay::replay_into(&from_db, &stored).unwrap();
    let expected = harness::notes(&from_db);
    // Every key written is stored (values race: the CRDT picks one, the same everywhere).
    for key in written.keys() {
        assert!(expected.contains_key(key), "seed {seed}: {key} lost");
    }
    for (n, (client, _)) in clients.iter().enumerate() {
        client
            .as_ref()
            .unwrap()
            .wait_for_within(
                &format!("seed {seed}: client {n} shows what the database holds"),
                Duration::from_secs(10),
                |s| harness::notes(&s.doc) == expected,
            )
            .await;
    }
}

/// Waits until the node's `/readyz` says `status` (200 either way: a node without Redis
/// still serves); returns its body.
async fn wait_ready(node: &TestNode, status: &str) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = http(node.addr, "GET", "/readyz", None, b"").await;
        let body = r.json();
        if body["status"] == status {
            assert_eq!(r.status, 200);
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "readyz still says {body} after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn redis_with_sqlite_is_refused_with_a_clear_message() {
    let db = SqliteDb::new();
    let config = Config {
        database_url: db.url.as_str().into(),
        cluster: Some(ClusterConfig::new("redis://127.0.0.1:1")),
        ..harness::server::config()
    };
    let err = TestNode::start(config, db.open().await).await.unwrap_err();
    assert!(matches!(
        err,
        ServerError::Cluster(ClusterError::NeedsPostgres(_))
    ));
    let message = err.to_string();
    assert!(message.contains("PostgreSQL"), "{message}");
    assert!(message.contains("REDIS_URL"), "{message}");
}
