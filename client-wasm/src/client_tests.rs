//! The sans-IO client against a small in-process server that speaks the same frames.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use crdt_schema::{IssueCode, Kind, NewObject, Op};
use yrs::encoding::write::Write;
use yrs::updates::decoder::Decode;
use yrs::{Doc, ReadTxn, StateVector, Transact, Update};

use crate::client::{Client, Event, Output, StoreWrite};
use crate::replica::EditError;

fn clock() -> Arc<dyn yrs::sync::Clock> {
    Arc::new(|| 0u64)
}

fn sticky(id: &str) -> Op {
    Op::Create(NewObject::new(id, Kind::Sticky, "tester", 1.0).at([0.0, 0.0], [10.0, 10.0]))
}

/// A server replica: applies documents messages, counts them, acknowledges on demand.
struct Server {
    doc: Doc,
    received: u64,
}

impl Server {
    fn new() -> Self {
        Server {
            doc: Doc::new(),
            received: 0,
        }
    }

    fn step1(&self) -> Vec<u8> {
        crate::wire::sync_step1(&self.doc.transact().state_vector())
    }

    /// Handles one client frame; returns the frames it answers with.
    fn handle(&mut self, frame: &[u8]) -> Vec<Vec<u8>> {
        match frame {
            [0, 0, ..] => {
                let body = &frame[3..];
                let sv = StateVector::decode_v1(body).unwrap();
                vec![crate::wire::sync_step2(
                    &self.doc.transact().encode_state_as_update_v1(&sv),
                )]
            }
            [0, 1 | 2, ..] => {
                let mut cur = yrs::encoding::read::Cursor::new(&frame[2..]);
                let body = yrs::encoding::read::Read::read_buf(&mut cur).unwrap();
                self.doc
                    .transact_mut()
                    .apply_update(Update::decode_v1(body).unwrap())
                    .unwrap();
                self.received += 1;
                vec![]
            }
            _ => vec![],
        }
    }

    fn ack(&self) -> Vec<u8> {
        let mut f = vec![];
        f.write_var(100u64);
        f.write_var(self.received);
        f
    }

    fn objects(&self) -> usize {
        crdt_schema::read_board(&self.doc.transact()).objects.len()
    }
}

/// Runs the client's outputs: stores complete at once, sends reach `server`.
fn pump(client: &mut Client, server: &mut Server) -> Vec<Event> {
    let mut events = vec![];
    let mut answers = vec![];
    while let Some(out) = client.poll() {
        match out {
            Output::Send(f) => answers.extend(server.handle(&f)),
            Output::Store(StoreWrite::Append { seq, .. }) => client.stored(seq),
            Output::Store(_) => {}
            Output::Event(e) => events.push(e),
        }
        for a in answers.drain(..) {
            client.receive(&a).unwrap();
        }
    }
    events
}

fn connect(client: &mut Client, server: &mut Server) -> Vec<Event> {
    client.connected();
    let step1 = server.step1();
    client.receive(&step1).unwrap();
    pump(client, server)
}

#[test]
fn an_edit_is_stored_before_it_is_sent() {
    let mut server = Server::new();
    let mut c = Client::new(clock(), 0);
    connect(&mut c, &mut server);
    c.apply(&sticky("a")).unwrap();
    let outs: Vec<Output> = std::iter::from_fn(|| c.poll()).collect();
    assert!(
        outs.iter()
            .any(|o| matches!(o, Output::Store(StoreWrite::Append { .. })))
    );
    assert!(
        !outs.iter().any(|o| matches!(o, Output::Send(_))),
        "sent before the store finished: {outs:?}"
    );
    let seq = outs
        .iter()
        .find_map(|o| match o {
            Output::Store(StoreWrite::Append { seq, .. }) => Some(*seq),
            _ => None,
        })
        .unwrap();
    c.stored(seq);
    assert!(matches!(c.poll(), Some(Output::Send(f)) if f[0] == 0 && f[1] == 2));
}

#[test]
fn pending_edits_count_down_with_acknowledgements() {
    let mut server = Server::new();
    let mut c = Client::new(clock(), 0);
    connect(&mut c, &mut server);
    for id in ["a", "b", "c"] {
        c.apply(&sticky(id)).unwrap();
        pump(&mut c, &mut server);
    }
    assert_eq!(c.pending_edits(), 3);
    assert_eq!(server.objects(), 3);
    c.receive(&server.ack()).unwrap();
    let events = pump(&mut c, &mut server);
    assert_eq!(c.pending_edits(), 0);
    assert!(events.contains(&Event::Saved), "{events:?}");
    assert!(events.contains(&Event::Pending { count: 0 }));
}

#[test]
fn offline_edits_survive_a_reload_and_are_saved_by_the_next_connection() {
    // Offline: edits are stored, never sent.
    let mut c = Client::new(clock(), 0);
    let mut log = vec![];
    let mut meta = None;
    c.apply(&sticky("a")).unwrap();
    c.apply(&sticky("b")).unwrap();
    while let Some(out) = c.poll() {
        match out {
            Output::Send(_) => panic!("sent while offline"),
            Output::Store(StoreWrite::Append {
                seq,
                updates,
                meta: m,
            }) => {
                log.extend(updates);
                meta = m.or(meta);
                c.stored(seq);
            }
            _ => {}
        }
    }
    assert!(c.poll().is_none());
    // Reload: a new client (new client id) from the store.
    let mut c = Client::new(clock(), 0);
    assert_eq!(c.load(&log, meta), 0);
    assert_eq!(c.pending_edits(), 2);
    assert_eq!(c.replica().board().objects.len(), 2);
    let mut server = Server::new();
    connect(&mut c, &mut server);
    assert_eq!(server.objects(), 2, "the step 2 carried the offline edits");
    c.receive(&server.ack()).unwrap();
    let events = pump(&mut c, &mut server);
    assert_eq!(c.pending_edits(), 0);
    assert!(events.contains(&Event::Saved));
}

#[test]
fn two_clients_converge_through_the_server() {
    let mut server = Server::new();
    let mut a = Client::new(clock(), 0);
    let mut b = Client::new(clock(), 0);
    connect(&mut a, &mut server);
    a.apply(&sticky("from-a")).unwrap();
    pump(&mut a, &mut server);
    connect(&mut b, &mut server);
    assert!(b.replica().object("from-a").is_some());
    b.apply(&sticky("from-b")).unwrap();
    pump(&mut b, &mut server);
    // The server relays b's state to a as a live update.
    let update = server
        .doc
        .transact()
        .encode_state_as_update_v1(&a.replica().state_vector());
    a.receive(&crate::wire::update(&update)).unwrap();
    let events = pump(&mut a, &mut server);
    assert!(a.replica().object("from-b").is_some());
    let changed = events.iter().find_map(|e| match e {
        Event::Change { changes, local } => Some((changes.objects.clone(), *local)),
        _ => None,
    });
    assert_eq!(
        changed,
        Some((["from-b".to_string()].into_iter().collect(), false))
    );
}

#[test]
fn an_update_that_skips_clocks_waits_for_the_gap() {
    let source = Doc::new();
    crdt_schema::declare_roots(&source);
    let mut updates = vec![];
    for id in ["x", "y"] {
        let mut txn = source.transact_mut();
        crdt_schema::ops::apply(&mut txn, &sticky(id)).unwrap();
        updates.push(txn.encode_update_v1());
    }
    let mut c = Client::new(clock(), 0);
    c.receive(&crate::wire::update(&updates[1])).unwrap();
    assert!(c.replica().object("y").is_none(), "applied over a gap");
    // Held, not handed to yrs (which would keep it pending) nor stored.
    assert!(c.poll().is_none(), "a gapped update produced output");
    assert!(
        c.replica()
            .doc()
            .transact()
            .store()
            .pending_update()
            .is_none()
    );
    c.receive(&crate::wire::update(&updates[0])).unwrap();
    assert!(c.replica().object("x").is_some());
    assert!(
        c.replica().object("y").is_some(),
        "the held update was not released"
    );
}

#[test]
fn undo_takes_back_only_this_clients_edit() {
    let mut server = Server::new();
    let mut a = Client::new(clock(), 0);
    let mut b = Client::new(clock(), 0);
    connect(&mut a, &mut server);
    connect(&mut b, &mut server);
    a.apply(&sticky("mine")).unwrap();
    pump(&mut a, &mut server);
    b.apply(&sticky("theirs")).unwrap();
    pump(&mut b, &mut server);
    let update = server
        .doc
        .transact()
        .encode_state_as_update_v1(&a.replica().state_vector());
    a.receive(&crate::wire::update(&update)).unwrap();
    pump(&mut a, &mut server);
    assert!(a.undo());
    let events = pump(&mut a, &mut server);
    assert!(a.replica().object("mine").is_none());
    assert!(a.replica().object("theirs").is_some());
    assert!(
        server.doc.transact().state_vector() >= a.replica().state_vector(),
        "the undo was sent"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Change { local: true, .. }))
    );
    assert!(a.redo());
    pump(&mut a, &mut server);
    assert!(a.replica().object("mine").is_some());
    assert_eq!(server.objects(), 2);
}

#[test]
fn validation_reports_every_problem_and_writes_nothing() {
    let mut c = Client::new(clock(), 0);
    let bad = Op::Create(
        NewObject::new("bad id!", Kind::Sticky, "t", 1.0)
            .at([f64::NAN, 0.0], [-1.0, 1.0])
            .with_color("no-such-colour"),
    );
    let Err(EditError::Invalid(e)) = c.apply(&bad) else {
        panic!("accepted")
    };
    let codes: Vec<IssueCode> = e.issues.iter().map(|i| i.code).collect();
    assert!(codes.contains(&IssueCode::InvalidId), "{codes:?}");
    assert!(codes.contains(&IssueCode::NotFinite), "{codes:?}");
    assert!(codes.contains(&IssueCode::InvalidColor), "{codes:?}");
    assert!(c.poll().is_none(), "a refused edit produced output");
}

#[test]
fn a_denial_makes_the_client_read_only() {
    let mut c = Client::new(clock(), 0);
    let mut f = vec![2, 0];
    f.write_string("read-only token");
    c.receive(&f).unwrap();
    assert!(matches!(
        c.poll(),
        Some(Output::Event(Event::Denied { reason })) if reason == "read-only token"
    ));
    assert_eq!(c.apply(&sticky("a")), Err(EditError::ReadOnly));
}

#[test]
fn an_acknowledgement_of_unsent_messages_is_an_error() {
    let mut c = Client::new(clock(), 0);
    c.connected();
    assert!(c.receive(&[100, 5]).is_err());
}
