//! A burst of 100,000 updates into one board: a second client receives every one of them, and
//! all of them are in the database afterwards.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use harness::wire::{self, Frame};
use harness::{SqliteDb, TestServer, config, ws_connect};
use sync_server::ids::BoardId;
use sync_server::server::{Config, Limits};
use sync_server::storage::replay::replay_into;
use tokio_tungstenite::tungstenite::Message;
use yrs::updates::decoder::Decode;
use yrs::{Doc, Map, ReadTxn, StateVector, Transact, Update};

const UPDATES: u32 = 100_000;

/// Applies a sync step 2 or update to `doc`; returns the count of a durable acknowledgement.
fn absorb(doc: &Doc, frame: &[u8]) -> Option<u64> {
    if let Some(count) = wire::durable_ack(frame) {
        return Some(count);
    }
    if let Ok(Frame::Step2(u) | Frame::Update(u)) = wire::parse(frame) {
        doc.transact_mut()
            .apply_update(Update::decode_v1(u).unwrap())
            .unwrap();
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_of_100k_updates_is_delivered_and_stored() {
    let db = SqliteDb::new();
    // A writer sending 100k messages back to back is a load test, not a client: lift the
    // per-connection message rate limit that would (rightly) close it.
    let config = Config {
        limits: Limits {
            message_rate: 0,
            ..Limits::default()
        },
        ..config()
    };
    let server = TestServer::start(config, db.open().await).await;
    let addr = server.addr;

    // The receiver joins first and reads everything.
    let mut receiver = ws_connect(addr, "/v1/sync/burst?ack=1").await;
    let received = Doc::new();
    let rx_task = tokio::spawn(async move {
        let counter = received.get_or_insert_map("counter");
        loop {
            let Some(Ok(Message::Binary(frame))) = receiver.next().await else {
                panic!("receiver lost its connection");
            };
            absorb(&received, &frame);
            let n = counter.len(&received.transact());
            if n == UPDATES {
                return received;
            }
        }
    });

    // The writer makes 100k separate transactions (one key each) and sends them as fast as
    // the socket takes them.
    let mut writer = ws_connect(addr, "/v1/sync/burst?ack=1").await;
    let source = Doc::new();
    let counter = source.get_or_insert_map("counter");
    let mut frames = Vec::with_capacity(UPDATES as usize);
    for i in 0..UPDATES {
        let mut txn = source.transact_mut();
        counter.insert(&mut txn, i.to_string(), i);
        frames.push(Message::Binary(wire::update_frame(&txn.encode_update_v1())));
    }
    let mut frames = futures_util::stream::iter(frames.into_iter().map(Ok));
    writer.send_all(&mut frames).await.unwrap();
    // Wait until the server says all 100k are durable.
    let scratch = Doc::new();
    tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            let Some(Ok(Message::Binary(frame))) = writer.next().await else {
                panic!("writer lost its connection");
            };
            if absorb(&scratch, &frame) == Some(u64::from(UPDATES)) {
                break;
            }
        }
    })
    .await
    .expect("every update acknowledged as durable");

    let received = tokio::time::timeout(Duration::from_secs(120), rx_task)
        .await
        .expect("the receiver got every update")
        .unwrap();
    assert_eq!(
        received.transact().state_vector(),
        source.transact().state_vector()
    );

    server.shutdown().await.unwrap();

    // Everything is in the database.
    let store = db.open().await;
    let stored = store.load(&BoardId::parse("burst").unwrap()).await.unwrap();
    let doc = Doc::new();
    replay_into(&doc, &stored).unwrap();
    let map = doc.get_or_insert_map("counter");
    assert_eq!(map.len(&doc.transact()), UPDATES);
    assert_eq!(
        doc.transact()
            .encode_state_as_update_v1(&StateVector::default())
            .len(),
        source
            .transact()
            .encode_state_as_update_v1(&StateVector::default())
            .len()
    );
}
