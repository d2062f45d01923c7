//! The pipeline's rules, event by event, with no socket, store or doc: updates are numbered
//! byte strings, reads and held-back updates are plain values.

#![allow(clippy::unwrap_used)]

use proptest::prelude::*;

use super::*;

#[derive(Debug, Clone, PartialEq, Eq)]
enum TestRead {
    Step1(ConnId, u32),
    Other(u32),
}

impl WaitingRead for TestRead {
    fn step1_of(&self) -> Option<ConnId> {
        match self {
            TestRead::Step1(conn, _) => Some(*conn),
            TestRead::Other(_) => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct TestUpdate {
    id: u32,
    bytes: usize,
}

impl HeldUpdate for TestUpdate {
    fn bytes(&self) -> usize {
        self.bytes
    }
}

type P = Pipeline<TestRead, TestUpdate>;
type E = Effect<TestRead, TestUpdate>;

const LIMITS: Limits = Limits {
    max_in_flight: 4,
    max_waiting_reads: 3,
    max_deferred_bytes: 100,
};

fn pipeline() -> P {
    Pipeline::new(LIMITS, 0)
}

/// Applies update `id` as the actor does: stored, broadcast once durable, then dispatched.
fn apply(p: &mut P, id: u32) {
    let bytes = id.to_le_bytes().to_vec();
    p.hold(bytes.clone());
    p.next_batch().broadcasts.push((None, bytes));
    p.dispatch();
}

fn effects(p: &mut P) -> Vec<E> {
    std::iter::from_fn(|| p.poll()).collect()
}

fn ids(updates: &[Vec<u8>]) -> Vec<u32> {
    updates
        .iter()
        .map(|u| u32::from_le_bytes(u.as_slice().try_into().unwrap()))
        .collect()
}

fn released(batch: &Batch) -> Vec<u32> {
    let updates: Vec<Vec<u8>> = batch.broadcasts.iter().map(|(_, u)| u.clone()).collect();
    ids(&updates)
}

/// What a list of effects says, in short, for readable assertions.
fn summary(effects: &[E]) -> Vec<String> {
    effects
        .iter()
        .map(|e| match e {
            Effect::Submit(updates) => format!("submit {:?}", ids(updates)),
            Effect::Release(b) => format!("release {:?}", released(b)),
            Effect::Fail(b) => format!("fail {:?}", released(b)),
            Effect::Settle(b, stored) => format!("settle {:?} {stored}", released(b)),
            Effect::ReadRows { after, before } => format!("read rows {after}..{before}"),
            Effect::Answer(r) => format!("answer {r:?}"),
            Effect::RefuseRead(r) => format!("refuse {r:?}"),
            Effect::Apply(us) => format!("apply {:?}", us.iter().map(|u| u.id).collect::<Vec<_>>()),
            Effect::RefuseUpdate(u) => format!("refuse update {}", u.id),
            Effect::Failed { held, .. } => {
                format!(
                    "failed, held {:?}",
                    held.iter().map(|u| u.id).collect::<Vec<_>>()
                )
            }
            Effect::Stop => "stop".into(),
        })
        .collect()
}

fn run(p: &mut P) -> Vec<String> {
    summary(&effects(p))
}

#[test]
fn batches_are_released_in_order_and_only_after_their_commits() {
    let mut p = pipeline();
    apply(&mut p, 1);
    apply(&mut p, 2);
    apply(&mut p, 3);
    assert_eq!(run(&mut p), ["submit [1]", "submit [2]", "submit [3]"]);
    assert!(!p.is_quiescent());

    p.committed([Ok(1)]);
    assert_eq!(run(&mut p), ["release [1]"]);
    // Two answers at once (one group): released together, in order.
    p.committed([Ok(2), Ok(3)]);
    assert_eq!(run(&mut p), ["release [2, 3]"]);
    assert!(p.is_quiescent());
    assert_eq!(p.last_seq(), 3);
}

#[test]
fn past_the_in_flight_bound_updates_gather_and_go_out_with_the_next_answer() {
    let mut p = pipeline();
    for id in 1..=6 {
        apply(&mut p, id);
    }
    assert_eq!(
        run(&mut p),
        ["submit [1]", "submit [2]", "submit [3]", "submit [4]"]
    );
    p.committed([Ok(1)]);
    assert_eq!(run(&mut p), ["release [1]", "submit [5, 6]"]);
}

#[test]
fn a_batch_that_stores_nothing_is_released_once_what_came_before_is() {
    let mut p = pipeline();
    apply(&mut p, 1);
    run(&mut p);
    // A no-op (an acknowledgement, say) behind a commit in flight waits for it.
    p.next_batch().acks.insert(7, 1);
    p.dispatch();
    assert_eq!(run(&mut p), Vec::<String>::new());
    p.committed([Ok(1)]);
    let out = effects(&mut p);
    assert_eq!(summary(&out), ["release [1]", "release []"]);
    let Effect::Release(batch) = &out[1] else {
        unreachable!()
    };
    assert_eq!(batch.acks.get(&7), Some(&1));
    // With nothing in flight, it is released at once.
    p.next_batch().acks.insert(7, 2);
    p.dispatch();
    assert_eq!(run(&mut p), ["release []"]);
}

#[test]
fn a_failed_commit_fails_its_batch_and_everything_after_it() {
    let mut p = pipeline();
    for id in 1..=3 {
        apply(&mut p, id);
    }
    run(&mut p);
    // Not yet sent: failed at once with the rest.
    p.hold(vec![9, 0, 0, 0]);
    p.next_batch().broadcasts.push((None, vec![9, 0, 0, 0]));
    // A read and an update wait.
    p.read(TestRead::Other(1));
    assert!(p.admit(TestUpdate { id: 50, bytes: 1 }).is_none());

    p.committed([Err(CommitError::Stopped)]);
    assert_eq!(run(&mut p), ["fail [1]", "fail [9]", "failed, held [50]"]);
    assert!(p.is_failing());
    // Later batches are never shown; their writers learn whether they were stored.
    p.committed([Ok(2)]);
    assert_eq!(run(&mut p), ["settle [2] true"]);
    p.committed([Err(CommitError::Stopped)]);
    assert_eq!(run(&mut p), ["settle [3] false", "stop"]);
    // Nothing more is dispatched or answered.
    apply(&mut p, 4);
    p.read(TestRead::Other(2));
    assert_eq!(run(&mut p), Vec::<String>::new());
}

#[test]
fn a_failure_among_answers_taken_together_releases_only_what_came_before_it() {
    let mut p = pipeline();
    for id in 1..=3 {
        apply(&mut p, id);
    }
    run(&mut p);
    p.committed([Ok(1), Err(CommitError::Stopped)]);
    assert_eq!(
        run(&mut p),
        ["release [1]", "fail [2]", "fail []", "failed, held []"]
    );
    p.committed([Ok(3)]);
    assert_eq!(run(&mut p), ["settle [3] true", "stop"]);
}

#[test]
fn a_commit_the_committer_would_not_take_fails_at_once() {
    let mut p = pipeline();
    apply(&mut p, 1);
    assert_eq!(run(&mut p), ["submit [1]"]);
    p.unsubmitted();
    assert_eq!(
        run(&mut p),
        ["fail [1]", "fail []", "failed, held []", "stop"]
    );
}

#[test]
fn reads_wait_for_durable_state_and_updates_wait_behind_them() {
    let mut p = pipeline();
    p.read(TestRead::Other(1));
    assert_eq!(run(&mut p), ["answer Other(1)"]);

    apply(&mut p, 1);
    run(&mut p);
    p.read(TestRead::Other(2));
    // An update behind a waiting read waits too: the read must not see it.
    assert!(p.admit(TestUpdate { id: 10, bytes: 4 }).is_none());
    assert_eq!(run(&mut p), Vec::<String>::new());
    p.committed([Ok(1)]);
    assert_eq!(
        run(&mut p),
        ["release [1]", "answer Other(2)", "apply [10]"]
    );
    // With nothing waiting, updates apply at once.
    assert!(p.admit(TestUpdate { id: 11, bytes: 4 }).is_some());
}

#[test]
fn a_read_that_edits_makes_the_reads_after_it_wait_again() {
    let mut p = pipeline();
    apply(&mut p, 1);
    run(&mut p);
    p.read(TestRead::Other(1));
    p.read(TestRead::Other(2));
    p.committed([Ok(1)]);
    assert_eq!(
        p.poll().map(|e| summary(&[e])),
        Some(vec!["release [1]".into()])
    );
    let Some(Effect::Answer(TestRead::Other(1))) = p.poll() else {
        panic!("the first read is answered")
    };
    // Answering it edited the doc (the assistant's edit): the next read waits for that.
    apply(&mut p, 2);
    assert_eq!(run(&mut p), ["submit [2]"]);
    p.committed([Ok(2)]);
    assert_eq!(run(&mut p), ["release [2]", "answer Other(2)"]);
}

#[test]
fn a_newer_sync_step_1_replaces_the_waiting_one_and_other_reads_are_bounded() {
    let mut p = pipeline();
    apply(&mut p, 1);
    run(&mut p);
    p.read(TestRead::Step1(7, 1));
    p.read(TestRead::Step1(7, 2));
    p.read(TestRead::Step1(8, 1));
    for n in 0..LIMITS.max_waiting_reads as u32 {
        p.read(TestRead::Other(n));
    }
    p.read(TestRead::Other(99));
    assert_eq!(run(&mut p), ["refuse Other(99)"]);
    p.committed([Ok(1)]);
    assert_eq!(
        run(&mut p),
        [
            "release [1]",
            "answer Step1(7, 2)",
            "answer Step1(8, 1)",
            "answer Other(0)",
            "answer Other(1)",
            "answer Other(2)"
        ]
    );
}

#[test]
fn held_back_updates_are_bounded_in_bytes() {
    let mut p = pipeline();
    apply(&mut p, 1);
    run(&mut p);
    p.read(TestRead::Other(1));
    // The first always waits, whatever its size; then up to the bound.
    assert!(p.admit(TestUpdate { id: 1, bytes: 150 }).is_none());
    assert_eq!(run(&mut p), Vec::<String>::new());
    assert!(p.admit(TestUpdate { id: 2, bytes: 1 }).is_none());
    assert_eq!(run(&mut p), ["refuse update 2"]);
    p.committed([Ok(1)]);
    assert_eq!(run(&mut p), ["release [1]", "answer Other(1)", "apply [1]"]);
    p.read(TestRead::Other(2));
    assert!(p.admit(TestUpdate { id: 3, bytes: 60 }).is_none());
    assert!(p.admit(TestUpdate { id: 4, bytes: 40 }).is_none());
    assert_eq!(run(&mut p), ["answer Other(2)", "apply [3, 4]"]);
}

#[test]
fn a_version_being_saved_holds_every_change_and_read_back() {
    let mut p = pipeline();
    p.set_saving(true);
    assert!(!p.can_answer());
    assert!(p.admit(TestUpdate { id: 1, bytes: 1 }).is_none());
    p.read(TestRead::Other(1));
    assert_eq!(run(&mut p), Vec::<String>::new());
    p.set_saving(false);
    assert_eq!(run(&mut p), ["answer Other(1)", "apply [1]"]);
}

#[test]
fn rows_of_another_writer_are_read_before_any_read_is_answered() {
    let mut p = Pipeline::new(LIMITS, 10);
    apply(&mut p, 1);
    run(&mut p);
    p.read(TestRead::Other(1));
    // Our row came back as 14: 11..=13 are another writer's.
    p.committed([Ok(14)]);
    assert_eq!(run(&mut p), ["read rows 10..14", "release [1]"]);
    assert!(!p.is_complete());
    apply(&mut p, 2);
    run(&mut p);
    // Another gap while the first is being read: read after it, merged.
    p.committed([Ok(17)]);
    assert_eq!(run(&mut p), ["release [2]"]);
    p.healed();
    assert_eq!(run(&mut p), ["read rows 14..17"]);
    assert!(!p.can_answer());
    p.healed();
    assert_eq!(run(&mut p), ["answer Other(1)"]);
    assert_eq!(p.last_seq(), 17);
}

#[test]
fn the_board_is_settled_only_when_nothing_waits_or_flies() {
    let mut p = pipeline();
    assert!(p.is_settled());
    apply(&mut p, 1);
    assert!(!p.is_settled(), "an update not yet sent");
    run(&mut p);
    assert!(!p.is_settled(), "a commit in flight");
    p.committed([Ok(1)]);
    run(&mut p);
    assert!(p.is_settled());
    p.set_saving(true);
    assert!(!p.is_settled(), "a version being saved");
    p.set_saving(false);
    p.note_rows(5, 1);
    assert!(!p.is_settled(), "rows of another writer unread");
    run(&mut p);
    p.healed();
    assert!(p.is_settled());
}

#[test]
fn draining_refuses_reads_and_applies_updates_unless_a_version_is_saved() {
    let mut p = pipeline();
    apply(&mut p, 1);
    run(&mut p);
    p.read(TestRead::Other(1));
    assert!(p.admit(TestUpdate { id: 1, bytes: 1 }).is_none());
    assert_eq!(p.drain(), [TestRead::Other(1)]);
    // What was held back applies now, even with a commit in flight.
    assert_eq!(run(&mut p), ["apply [1]"]);
    assert!(p.admit(TestUpdate { id: 2, bytes: 1 }).is_some());
    p.set_saving(true);
    assert!(p.admit(TestUpdate { id: 3, bytes: 1000 }).is_none());
    assert_eq!(run(&mut p), Vec::<String>::new());
    p.set_saving(false);
    assert_eq!(run(&mut p), ["apply [3]"]);
}

#[test]
fn aborting_fails_what_is_not_released_and_keeps_releases() {
    let mut p = pipeline();
    apply(&mut p, 1);
    apply(&mut p, 2);
    run(&mut p);
    p.committed([Ok(1)]);
    apply(&mut p, 3);
    p.read(TestRead::Other(1));
    let failed: Vec<Vec<u32>> = p.abort().iter().map(released).collect();
    assert_eq!(failed, [vec![2], vec![3], vec![]]);
    assert_eq!(run(&mut p), ["release [1]"]);
}

// ----- properties -----

#[derive(Debug, Clone)]
enum Op {
    Apply,
    /// Answer this many commits in flight (at least one), the last one failing if `fails`.
    Commit {
        count: usize,
        fails: bool,
    },
    Read,
    Update,
    Saving(bool),
    /// Another writer's rows land before our next answer.
    Foreign,
    Healed,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Apply),
        4 => (1usize..4, prop::bool::weighted(0.05)).prop_map(|(count, fails)| Op::Commit { count, fails }),
        2 => Just(Op::Read),
        2 => Just(Op::Update),
        1 => any::<bool>().prop_map(Op::Saving),
        1 => Just(Op::Foreign),
        1 => Just(Op::Healed),
    ]
}

/// What the test knows: updates submitted per commit, which are committed, what is shown.
#[derive(Debug, Default)]
struct Model {
    next_id: u32,
    /// Submitted batches not yet answered, oldest first (their update ids).
    in_flight: VecDeque<Vec<u32>>,
    committed: Vec<u32>,
    released: Vec<u32>,
    applied_order: Vec<u32>,
    seq: Seq,
    failed: bool,
    saving: bool,
    healing: usize,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Nothing is released before its commit; releases keep the order updates were applied
    /// in; nothing is released after a failure; reads are answered only when every applied
    /// update is released and nothing is being saved or read.
    #[test]
    fn nothing_is_released_before_its_commit_and_order_is_kept(ops in prop::collection::vec(op(), 1..120)) {
        let mut p = pipeline();
        let mut m = Model::default();
        let mut reads = 0u32;
        for op in ops {
            match op {
                Op::Apply => {
                    m.next_id += 1;
                    m.applied_order.push(m.next_id);
                    apply(&mut p, m.next_id);
                }
                Op::Commit { count, fails } => {
                    let count = count.min(m.in_flight.len());
                    if count == 0 {
                        continue;
                    }
                    let answers: Vec<Result<Seq, CommitError>> = (0..count)
                        .map(|i| {
                            let batch = m.in_flight[i].clone();
                            if fails && i == count - 1 {
                                Err(CommitError::Stopped)
                            } else {
                                m.seq += batch.len() as Seq;
                                Ok(m.seq)
                            }
                        })
                        .collect();
                    for (answer, batch) in answers.iter().zip(m.in_flight.drain(..count).collect::<Vec<_>>()) {
                        if answer.is_ok() && !m.failed {
                            m.committed.extend(batch);
                        }
                    }
                    p.committed(answers);
                }
                Op::Read => {
                    reads += 1;
                    p.read(TestRead::Other(reads));
                }
                Op::Update => {
                    if let Some(u) = p.admit(TestUpdate { id: 0, bytes: 1 }) {
                        prop_assert!(!m.saving, "an update applied while a version is saved");
                        let _ = u;
                    }
                }
                Op::Saving(on) => {
                    m.saving = on;
                    p.set_saving(on);
                }
                Op::Foreign => m.seq += 3,
                Op::Healed => {
                    if m.healing > 0 {
                        m.healing -= 1;
                        p.healed();
                    }
                }
            }
            while let Some(effect) = p.poll() {
                match effect {
                    Effect::Submit(updates) => {
                        prop_assert!(!m.failed, "submitted after a failure");
                        m.in_flight.push_back(ids(&updates));
                    }
                    Effect::Release(batch) => {
                        prop_assert!(!m.failed, "released after a failure");
                        let ids = released(&batch);
                        for id in &ids {
                            prop_assert!(m.committed.contains(id), "{id} released before its commit");
                        }
                        m.released.extend(ids);
                        prop_assert_eq!(&m.released[..], &m.applied_order[..m.released.len()], "released out of order");
                    }
                    Effect::Fail(..) | Effect::Failed { .. } => m.failed = true,
                    Effect::Answer(_) => {
                        prop_assert!(!m.saving && m.healing == 0, "answered while saving or reading rows");
                        prop_assert_eq!(m.released.len(), m.applied_order.len(), "answered with updates not durable");
                    }
                    Effect::ReadRows { .. } => m.healing += 1,
                    Effect::Apply(_) => prop_assert!(!m.saving),
                    Effect::Settle(..) | Effect::Stop | Effect::RefuseRead(_) | Effect::RefuseUpdate(_) => {}
                }
            }
        }
    }
}
