//! Budgets under concurrency.

use std::sync::Arc;

use ai_agent::{BudgetLimits, Budgets};
use tokio::sync::Barrier;

async fn contend(
    budgets: &Budgets,
    users: impl Fn(usize) -> String,
    tasks: usize,
    amount: u64,
) -> usize {
    let barrier = Arc::new(Barrier::new(tasks));
    let mut handles = Vec::new();
    for i in 0..tasks {
        let (b, barrier, user) = (budgets.clone(), barrier.clone(), users(i));
        handles.push(tokio::spawn(async move {
            barrier.wait().await;
            b.reserve(&user, amount).ok()
        }));
    }
    let mut held = Vec::new();
    for h in handles {
        if let Some(r) = h.await.unwrap() {
            held.push(r);
        }
    }
    let admitted = held.len();
    assert_eq!(budgets.snapshot().global.reserved, admitted as u64 * amount);
    drop(held);
    admitted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_reservations_admit_exactly_floor_limit_over_amount() {
    let budgets = Budgets::new(BudgetLimits {
        global_tokens_per_day: Some(10_000),
        ..BudgetLimits::default()
    });
    let admitted = contend(&budgets, |i| format!("user-{i}"), 50, 1_500).await;
    assert_eq!(admitted, 6);
    let snap = budgets.snapshot();
    assert_eq!(
        (snap.global.used, snap.global.reserved),
        (0, 0),
        "left reserved"
    );
    assert!(snap.users.values().all(|u| u.reserved == 0));

    // The per-user scope, one user hammering.
    let budgets = Budgets::new(BudgetLimits {
        user_tokens_per_day: Some(4_000),
        ..BudgetLimits::default()
    });
    assert_eq!(contend(&budgets, |_| "bob".into(), 50, 1_500).await, 2);
    assert_eq!(budgets.snapshot().users["bob"].reserved, 0);

    // Request rate: 5 per minute per user, 50 at once.
    let budgets = Budgets::new(BudgetLimits {
        user_requests_per_minute: Some(5),
        ..BudgetLimits::default()
    });
    assert_eq!(contend(&budgets, |_| "carol".into(), 50, 1).await, 5);
}

#[tokio::test]
async fn sent_reservations_are_charged_and_settled_ones_count_actual_usage() {
    let budgets = Budgets::new(BudgetLimits {
        global_tokens_per_day: Some(10_000),
        ..BudgetLimits::default()
    });
    let mut r = budgets.reserve("u", 3_000).unwrap();
    r.mark_sent();
    r.settle(3_500); // above the estimate: still charged as reported
    let mut r = budgets.reserve("u", 2_000).unwrap();
    r.mark_sent();
    drop(r); // cancelled mid-stream: the whole amount
    let snap = budgets.snapshot();
    assert_eq!((snap.global.used, snap.global.reserved), (5_500, 0));
    assert_eq!(snap.users["u"].used, 5_500);
    assert!(budgets.reserve("u", 4_501).is_err());
    assert!(budgets.reserve("u", 4_500).is_ok());
}
