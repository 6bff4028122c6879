//! The Postgres repository against the real database started by scripts/test.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::Utc;
use shared::domain::{Event, OrderId, OrderMessage, OrderStatus, TicketTypeId};
use shared::repo::{OrderRepository, RepoError, Seeded};
use shared::testing::TestEnv;

fn paid(ev: &Event, tt: &str, quantity: u32) -> OrderMessage {
    OrderMessage {
        order_id: OrderId::new(),
        event: ev.id.clone(),
        ticket_type: TicketTypeId::parse(tt).unwrap(),
        quantity,
        email: "fan@example.at".into(),
        amount_cents: 34_900 * i64::from(quantity),
        payment_ref: "sim_ch_test".into(),
        paid_at: Utc::now(),
    }
}

#[tokio::test]
async fn persists_an_order_with_its_tickets_once() {
    let env = TestEnv::get();
    let ev = env.seed(10, -1, 600).await;
    let repo = env.repo();
    let msg = paid(&ev, "vip-3-day", 3);
    let first = repo.persist(&msg).await.unwrap();
    assert_eq!(first.status, OrderStatus::Confirmed);
    assert_eq!(first.tickets.len(), 3);
    assert!(!first.duplicate);
    let again = repo.persist(&msg).await.unwrap();
    assert!(again.duplicate);
    assert_eq!(
        again.tickets, first.tickets,
        "a redelivery returns the same tickets"
    );
    let stored = repo.order(msg.order_id).await.unwrap().unwrap();
    assert_eq!(stored.status, OrderStatus::Confirmed);
    assert_eq!(stored.tickets, first.tickets);
    assert_eq!(stored.quantity, 3);
    let vip = env.books(&ev.id, "vip-3-day").await;
    assert_eq!(
        (
            vip.capacity,
            vip.tickets,
            vip.sold,
            vip.confirmed_quantity,
            vip.confirmed_orders
        ),
        (10, 10, 3, 3, 1)
    );
    assert!(repo.order(OrderId::new()).await.unwrap().is_none());
}

#[tokio::test]
async fn concurrent_duplicate_deliveries_make_one_order() {
    let env = TestEnv::get();
    let ev = env.seed(10, -1, 600).await;
    let repo = Arc::new(env.repo());
    let msg = paid(&ev, "vip-3-day", 2);
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (repo, msg) = (repo.clone(), msg.clone());
            tokio::spawn(async move { repo.persist(&msg).await.unwrap() })
        })
        .collect();
    let mut fresh = 0;
    for t in tasks {
        let p = t.await.unwrap();
        assert_eq!(p.status, OrderStatus::Confirmed);
        fresh += usize::from(!p.duplicate);
    }
    assert_eq!(fresh, 1);
    let vip = env.books(&ev.id, "vip-3-day").await;
    assert_eq!((vip.sold, vip.confirmed_orders), (2, 1));
}

#[tokio::test]
async fn the_database_refuses_to_sell_beyond_capacity_under_concurrency() {
    let env = TestEnv::get();
    let ev = env.seed(20, -1, 600).await;
    let repo = Arc::new(env.repo());
    // 60 paid orders for 20 tickets, as if the gate had been wrong: never oversell.
    let tasks: Vec<_> = (0..60)
        .map(|_| {
            let repo = repo.clone();
            let msg = paid(&ev, "vip-3-day", 1);
            tokio::spawn(async move {
                loop {
                    match repo.persist(&msg).await {
                        Err(RepoError::Contended(_)) => tokio::task::yield_now().await,
                        other => return other.unwrap(),
                    }
                }
            })
        })
        .collect();
    let mut confirmed = 0;
    let mut codes = HashSet::new();
    for t in tasks {
        let p = t.await.unwrap();
        if p.status == OrderStatus::Confirmed {
            confirmed += 1;
            for c in p.tickets {
                assert!(codes.insert(c), "a ticket code was handed out twice");
            }
        }
    }
    assert_eq!(confirmed, 20);
    let vip = env.books(&ev.id, "vip-3-day").await;
    assert_eq!(
        (vip.sold, vip.confirmed_orders, vip.rejected_orders),
        (20, 20, 40)
    );
}

#[tokio::test]
async fn an_order_for_an_unknown_ticket_type_is_a_permanent_failure() {
    let env = TestEnv::get();
    let ev = env.seed(5, -1, 600).await;
    let repo = env.repo();
    let err = repo
        .persist(&paid(&ev, "no-such-type", 1))
        .await
        .unwrap_err();
    assert!(matches!(err, RepoError::Permanent(_)), "{err:?}");
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn seeding_is_idempotent_and_an_unreachable_database_is_retryable() {
    let env = TestEnv::get();
    let ev = env.seed(5, -1, 600).await;
    let repo = env.repo();
    assert_eq!(repo.seed(&ev).await.unwrap(), Seeded::Unchanged);
    let dead = env.unreachable_repo();
    let err = dead.persist(&paid(&ev, "vip-3-day", 1)).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
}
