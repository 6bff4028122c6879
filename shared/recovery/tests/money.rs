//! The money audit on the real engines: the simulated provider's own ledger (PostgreSQL, an
//! account of this test's own) reconciled with the books (ADR 53).

use std::time::Duration;

use chrono::Utc;
use domain::{OrderCharge, OrderId, OrderMessage, PaymentAttempt};
use payments::ledger::LedgeredPayments;
use payments::{Charge, ChargeList, PaymentProvider};
use recovery::money::reconcile;
use store::OrderRepository;
use testkit::TestEnv;

async fn provider(env: &TestEnv) -> LedgeredPayments {
    let account = format!("test-{}", uuid::Uuid::new_v4().simple());
    LedgeredPayments::connect(&env.database_url, &account)
        .await
        .expect("the provider's ledger")
}

/// A charge approved by the provider for `order`: its reference.
async fn charge(p: &LedgeredPayments, order: OrderId, amount_cents: i64) -> String {
    match p
        .charge(order, &PaymentAttempt::new(), amount_cents, "tok_approve")
        .await
        .unwrap()
    {
        Charge::Approved { payment_ref } => payment_ref,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn the_provider_keeps_each_charge_once_and_refunds_it_once() {
    let env = TestEnv::get();
    let p = provider(&env).await;
    let (order, attempt) = (OrderId::new(), PaymentAttempt::new());
    let first = p.charge(order, &attempt, 500, "tok_approve").await.unwrap();
    assert_eq!(
        p.charge(order, &attempt, 500, "tok_approve").await.unwrap(),
        first,
        "asked again about one attempt: the same charge"
    );
    let other = PaymentAttempt::new();
    let declined = p.charge(order, &other, 500, "tok_decline").await.unwrap();
    assert!(matches!(declined, Charge::Declined { .. }));
    let Charge::Approved { payment_ref } = first else {
        panic!("approved")
    };
    let listed = p.charges_created(Utc::now() - chrono::Duration::minutes(1), Utc::now());
    let listed = listed.await.unwrap();
    assert_eq!(listed.len(), 1, "one charge, nothing for a decline");
    assert_eq!((listed[0].order_id, listed[0].amount_cents), (order, 500));
    assert!(listed[0].refunded_at.is_none());
    p.refund(order, &payment_ref, 500).await.unwrap();
    p.refund(order, &payment_ref, 500).await.unwrap();
    let listed = p.charges_created(Utc::now() - chrono::Duration::minutes(1), Utc::now());
    assert!(listed.await.unwrap()[0].refunded_at.is_some());
    assert!(
        p.refund(order, "no-such-charge", 500).await.is_err(),
        "a refund of a charge never made is refused"
    );
}

#[tokio::test]
async fn a_lost_answer_leaves_a_charge_that_asking_again_returns() {
    let env = TestEnv::get();
    let p = provider(&env).await;
    let (order, attempt) = (OrderId::new(), PaymentAttempt::new());
    assert!(
        p.charge(order, &attempt, 700, "tok_approve_lost")
            .await
            .is_err(),
        "the shop hears nothing the first time"
    );
    let listed = p.charges_created(Utc::now() - chrono::Duration::minutes(1), Utc::now());
    let listed = listed.await.unwrap();
    assert_eq!(listed.len(), 1, "but the money is taken");
    let again = p.charge(order, &attempt, 700, "tok_approve_lost").await;
    assert_eq!(
        again.unwrap(),
        Charge::Approved {
            payment_ref: listed[0].payment_ref.clone()
        },
        "asked again about the attempt, the provider answers with the charge it made"
    );
}

#[tokio::test]
async fn every_charge_is_kept_once_or_refunded_and_the_sums_agree() {
    let env = TestEnv::get();
    let repo = env.repo();
    let ev = env.seed(10, -1, 600).await;
    let p = provider(&env).await;
    let price = ev.ticket_types[0].price_cents;
    let lease = Duration::from_secs(60);
    let hour = Duration::from_secs(3600);

    // A paid order, confirmed on its charge.
    let order = OrderId::new();
    let kept = charge(&p, order, 2 * price).await;
    let msg = OrderMessage {
        order_id: order,
        event: ev.id.clone(),
        ticket_type: ev.ticket_types[0].id.clone(),
        quantity: domain::Quantity::parse(2).unwrap(),
        email: domain::Email::parse("fan@example.at").unwrap(),
        amount_cents: 2 * price,
        payment_ref: kept.clone(),
        paid_at: Utc::now(),
        trace: None,
    };
    repo.persist(&msg).await.unwrap();
    // A second charge of it (a stale approval), owed back and refunded.
    let stale = charge(&p, order, 2 * price).await;
    let owed = |payment_ref: &str, order_id| OrderCharge {
        order_id,
        payment_ref: payment_ref.to_owned(),
        amount_cents: 2 * price,
    };
    repo.settle_charges(&[owed(&kept, order), owed(&stale, order)], lease)
        .await
        .unwrap();
    p.refund(order, &stale, 2 * price).await.unwrap();
    repo.refund_done(&stale).await.unwrap();
    // A charge for an order that never reached the books, owed and not refunded yet.
    let lost = OrderId::new();
    let unpaid_back = charge(&p, lost, price).await;
    repo.settle_charges(&[owed(&unpaid_back, lost)], lease)
        .await
        .unwrap();
    // A charge the books never heard of.
    let orphan = charge(&p, OrderId::new(), price).await;

    let m = reconcile(&p, &repo, &ev.id, Utc::now(), hour)
        .await
        .unwrap();
    assert!(m.violations.is_empty(), "{}", m.render());
    assert_eq!((m.charges, m.kept, m.refunded, m.in_flight), (4, 1, 1, 1));
    assert_eq!((m.confirmed_orders, m.kept_cents), (1, 2 * price));
    assert_eq!(m.kept_cents, m.confirmed_cents);
    assert_eq!(m.owed.len(), 1);
    assert_eq!(m.owed[0].payment_ref, unpaid_back);

    // Past the grace, the charge the books never heard of is reported.
    let m = reconcile(&p, &repo, &ev.id, Utc::now(), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(m.violations.len(), 1, "{}", m.render());
    assert!(m.violations[0].contains(&orphan), "{}", m.render());
    // `ops audit --settle-unknown` hands it to the books, which owe it back.
    let unknown: Vec<&str> = m.unknown.iter().map(|c| c.payment_ref.as_str()).collect();
    assert_eq!(unknown, [orphan.as_str()]);
    repo.settle_charges(&m.unknown, Duration::ZERO)
        .await
        .unwrap();
    let m = reconcile(&p, &repo, &ev.id, Utc::now(), Duration::ZERO)
        .await
        .unwrap();
    assert!(m.violations.is_empty(), "{}", m.render());
    assert_eq!(m.owed.len(), 2, "{}", m.render());

    // The kept charge refunded at the provider: the tickets are unpaid, and the audit says so.
    p.refund(order, &kept, 2 * price).await.unwrap();
    let m = reconcile(&p, &repo, &ev.id, Utc::now(), hour)
        .await
        .unwrap();
    let text = m.render();
    assert!(text.contains("tickets unpaid"), "{text}");
    assert!(text.contains("no kept charge"), "{text}");
}

/// Each way the provider and the books can disagree is reported, with the charge it concerns.
#[tokio::test]
async fn each_disagreement_between_the_provider_and_the_books_is_a_violation() {
    let env = TestEnv::get();
    let repo = env.repo();
    let ev = env.seed(10, -1, 600).await;
    let p = provider(&env).await;
    let lease = Duration::from_secs(60);
    let owed = |payment_ref: &str, order_id| OrderCharge {
        order_id,
        payment_ref: payment_ref.to_owned(),
        amount_cents: 100,
    };
    // Refunded at the provider, unknown to the books.
    let stray = OrderId::new();
    let refunded_alone = charge(&p, stray, 100).await;
    p.refund(stray, &refunded_alone, 100).await.unwrap();
    // The books record a refund the provider never made.
    let claimed = OrderId::new();
    let never_refunded = charge(&p, claimed, 100).await;
    repo.settle_charges(&[owed(&never_refunded, claimed)], lease)
        .await
        .unwrap();
    repo.refund_done(&never_refunded).await.unwrap();

    let m = reconcile(&p, &repo, &ev.id, Utc::now(), Duration::from_secs(3600))
        .await
        .unwrap();
    let text = m.render();
    assert_eq!(m.violations.len(), 2, "{text}");
    let refunded_alone_line = m.violations.iter().find(|v| v.contains(&refunded_alone));
    assert!(
        refunded_alone_line.is_some_and(|v| v.contains("without the books owing it")),
        "{text}"
    );
    let never_line = m.violations.iter().find(|v| v.contains(&never_refunded));
    assert!(
        never_line.is_some_and(|v| v.contains("never made")),
        "{text}"
    );
}

/// The charges a payment left behind when Redis lost its record: past the grace, and only
/// they, are found for the books to owe back.
#[tokio::test]
async fn a_charge_the_books_never_heard_of_is_found_once_past_the_grace() {
    let env = TestEnv::get();
    let repo = env.repo();
    let p = provider(&env).await;
    let lease = Duration::from_secs(60);
    let (minute, second) = (Duration::from_secs(60), Duration::from_secs(1));
    // Known to the books (owed here; kept would do as well), refunded at the provider alone,
    // and unknown.
    let known_order = OrderId::new();
    let known = charge(&p, known_order, 100).await;
    repo.settle_charges(
        &[OrderCharge {
            order_id: known_order,
            payment_ref: known.clone(),
            amount_cents: 100,
        }],
        lease,
    )
    .await
    .unwrap();
    let stray = OrderId::new();
    let refunded = charge(&p, stray, 100).await;
    p.refund(stray, &refunded, 100).await.unwrap();
    let lost = OrderId::new();
    let orphan = charge(&p, lost, 300).await;

    let later = Utc::now() + chrono::Duration::seconds(5);
    let found = recovery::money::unknown_charges(&p, &repo, later, second, minute)
        .await
        .unwrap();
    assert_eq!(
        found,
        [OrderCharge {
            order_id: lost,
            payment_ref: orphan,
            amount_cents: 300
        }]
    );
    // Younger than the grace: it may still reach the books on its own.
    let young = recovery::money::unknown_charges(&p, &repo, later, minute, minute)
        .await
        .unwrap();
    assert!(young.is_empty(), "{young:?}");
}
