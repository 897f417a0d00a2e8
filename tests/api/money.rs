//! The money path: redemption, holds, pending points, expiry, returns, adjustments.
use std::time::Duration;

use loyalty::grpc::pb::loyalty::v1;
use rand::{Rng, SeedableRng, rngs::StdRng};
use tokio::task::JoinSet;
use tonic::Code;

use crate::helpers::{
    TestApp, accrual, assert_status, backdate, by_card, line, set_time, spawn_app,
    spawn_configured, violated_fields,
};

async fn fund(app: &TestApp, card: &str, points: i64) {
    app.enroll(card).await;
    app.points
        .clone()
        .accrue(accrual(
            &format!("fund-{card}"),
            card,
            &format!("fund-{card}"),
            vec![line("1", "SKU", 1, points * 100, 0)],
        ))
        .await
        .expect("fund");
}

fn redeem(request_id: &str, card: &str, points: i64) -> v1::RedeemRequest {
    v1::RedeemRequest {
        request_id: request_id.into(),
        member: Some(by_card(card)),
        points,
        order_id: String::new(),
        store_id: "store-1".into(),
    }
}

fn hold(request_id: &str, card: &str, points: i64, ttl_ms: Option<i64>) -> v1::CreateHoldRequest {
    v1::CreateHoldRequest {
        request_id: request_id.into(),
        member: Some(by_card(card)),
        points,
        order_id: format!("order-{request_id}"),
        store_id: "store-1".into(),
        ttl: ttl_ms.map(|ms| prost_types::Duration {
            seconds: ms / 1000,
            nanos: i32::try_from((ms % 1000) * 1_000_000).unwrap_or(0),
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_redeems_never_overdraw() {
    let app = spawn_app().await;
    let (balance, cost) = (1_000, 70);
    for n in [2_i64, 20, 50] {
        let card = format!("CARD-{n:04}");
        fund(&app, &card, balance).await;
        let mut tasks = JoinSet::new();
        for i in 0..n {
            let mut points = app.points.clone();
            let request = redeem(&format!("r-{n}-{i}"), &card, cost);
            tasks.spawn(async move { points.redeem(request).await });
        }
        let (mut ok, mut short) = (0, 0);
        while let Some(result) = tasks.join_next().await {
            match result.expect("task") {
                Ok(r) => {
                    ok += 1;
                    assert_eq!(
                        r.into_inner().value_minor,
                        cost,
                        "1 point = 1 minor unit by default"
                    );
                }
                Err(status) => {
                    assert_status(&status, Code::FailedPrecondition, "INSUFFICIENT_POINTS");
                    short += 1;
                }
            }
        }
        let k = n.min(balance / cost);
        assert_eq!((ok, short), (k, n - k), "N = {n}");
        assert_eq!(app.balance(&card).await.available, balance - k * cost);
    }
    app.assert_ledger_balanced().await;
}

#[tokio::test]
async fn holds_reserve_capture_part_and_release_the_rest() {
    let app = spawn_app().await;
    fund(&app, "CARD-0001", 500).await;
    let mut points = app.points.clone();
    let created = points
        .create_hold(hold("h-1", "CARD-0001", 300, None))
        .await
        .expect("hold")
        .into_inner();
    let h = created.hold.expect("hold");
    assert_eq!(h.status(), v1::HoldStatus::Active);
    assert_eq!(
        created.balance.map(|b| (b.available, b.held)),
        Some((200, 300))
    );
    // Held points are not available to anyone else.
    let err = points
        .redeem(redeem("r-1", "CARD-0001", 201))
        .await
        .expect_err("short");
    assert_status(&err, Code::FailedPrecondition, "INSUFFICIENT_POINTS");

    let err = points
        .capture_hold(v1::CaptureHoldRequest {
            request_id: "c-0".into(),
            hold_id: h.hold_id.clone(),
            points: 301,
        })
        .await
        .expect_err("more than held");
    assert_eq!(violated_fields(&err), vec!["points"]);
    let captured = points
        .capture_hold(v1::CaptureHoldRequest {
            request_id: "c-1".into(),
            hold_id: h.hold_id.clone(),
            points: 120,
        })
        .await
        .expect("capture")
        .into_inner();
    assert_eq!(captured.value_minor, 120);
    assert_eq!(
        captured
            .hold
            .as_ref()
            .map(|h| (h.status(), h.captured_points)),
        Some((v1::HoldStatus::Captured, 120))
    );
    assert_eq!(
        captured.balance.map(|b| (b.available, b.held)),
        Some((380, 0))
    );

    let err = points
        .void_hold(v1::VoidHoldRequest {
            request_id: "v-1".into(),
            hold_id: h.hold_id.clone(),
        })
        .await
        .expect_err("already captured");
    assert_status(&err, Code::FailedPrecondition, "HOLD_ALREADY_CAPTURED");
    let err = points
        .void_hold(v1::VoidHoldRequest {
            request_id: "v-2".into(),
            hold_id: uuid::Uuid::now_v7().to_string(),
        })
        .await
        .expect_err("unknown");
    assert_status(&err, Code::NotFound, "HOLD_NOT_FOUND");
    app.assert_ledger_balanced().await;
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Captured,
    Voided,
    Expired,
}

/// Capture, void and the expiry job race for one hold, 200 times: exactly one wins, and
/// the losers are told why.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn capture_void_and_expiry_of_one_hold_settle_it_exactly_once() {
    let app = spawn_app().await;
    fund(&app, "CARD-0001", 1_000_000).await;
    let seed: u64 = rand::random();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut seen = Vec::new();
    for i in 0..200 {
        let ttl = rng.random_range(20..60);
        let created = app
            .points
            .clone()
            .create_hold(hold(&format!("h-{i}"), "CARD-0001", 100, Some(ttl)))
            .await
            .expect("hold")
            .into_inner();
        let hold_id = created.hold.expect("hold").hold_id;
        let (d1, d2, d3) = (
            rng.random_range(0..70),
            rng.random_range(0..70),
            rng.random_range(0..70),
        );
        let mut p1 = app.points.clone();
        let mut p2 = app.points.clone();
        let (id1, id2) = (hold_id.clone(), hold_id.clone());
        let capture = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(d1)).await;
            p1.capture_hold(v1::CaptureHoldRequest {
                request_id: format!("c-{i}"),
                hold_id: id1,
                points: 0,
            })
            .await
        });
        let void = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(d2)).await;
            p2.void_hold(v1::VoidHoldRequest {
                request_id: format!("v-{i}"),
                hold_id: id2,
            })
            .await
        });
        let jobs = app.jobs.clone();
        let expiry = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(d3)).await;
            jobs.run_jobs(100).await.expect("jobs").expired_holds
        });
        let capture = capture.await.expect("task");
        let void = void.await.expect("task");
        let mut expired = expiry.await.expect("task");
        if capture.is_err() && void.is_err() && expired == 0 {
            // Both calls lost to the clock before the job got there: let it run now.
            tokio::time::sleep(Duration::from_millis(70)).await;
            expired = app.jobs.run_jobs(100).await.expect("jobs").expired_holds;
        }
        let mut winners = Vec::new();
        if capture.is_ok() {
            winners.push(Outcome::Captured);
        }
        if void.is_ok() {
            winners.push(Outcome::Voided);
        }
        if expired == 1 {
            winners.push(Outcome::Expired);
        }
        assert_eq!(
            winners.len(),
            1,
            "seed {seed}, round {i}: {winners:?}, capture {capture:?}, void {void:?}"
        );
        let reason = match winners[0] {
            Outcome::Captured => "HOLD_ALREADY_CAPTURED",
            Outcome::Voided => "HOLD_ALREADY_VOIDED",
            Outcome::Expired => "HOLD_EXPIRED",
        };
        for loser in [capture.err(), void.err()].into_iter().flatten() {
            let info = tonic_types::StatusExt::get_details_error_info(&loser).expect("error info");
            assert_eq!(info.reason, reason, "seed {seed}, round {i}: {loser:?}");
        }
        seen.push(winners.remove(0));
    }
    let balance = app.balance("CARD-0001").await;
    assert_eq!(balance.held, 0);
    let captured =
        i64::try_from(seen.iter().filter(|o| **o == Outcome::Captured).count()).unwrap_or(0);
    assert_eq!(balance.available, 1_000_000 - 100 * captured);
    app.assert_ledger_balanced().await;
}

#[tokio::test]
async fn pending_points_wait_for_the_return_window_or_the_order_confirmation() {
    let app = spawn_configured(|s| s.program.pending_days = 14).await;
    app.enroll("CARD-0001").await;
    let mut points = app.points.clone();
    for order in ["o-1", "o-2"] {
        let r = points
            .accrue(accrual(
                order,
                "CARD-0001",
                order,
                vec![line("1", "SKU", 1, 5_000, 0)],
            ))
            .await
            .expect("accrue")
            .into_inner();
        assert_eq!((r.points_earned, r.pending_points), (50, 50));
    }
    let b = app.balance("CARD-0001").await;
    assert_eq!((b.available, b.pending, b.lifetime_earned), (0, 100, 100));
    let err = points
        .redeem(redeem("r-1", "CARD-0001", 1))
        .await
        .expect_err("pending is not spendable");
    assert_status(&err, Code::FailedPrecondition, "INSUFFICIENT_POINTS");

    let confirmed = points
        .confirm_order(v1::ConfirmOrderRequest {
            request_id: "c-1".into(),
            order_id: "o-1".into(),
        })
        .await
        .expect("confirm")
        .into_inner();
    assert_eq!(confirmed.points_released, 50);
    assert_eq!(
        app.jobs.run_jobs(100).await.expect("jobs").released_lots,
        0,
        "o-2 is still in its window"
    );
    backdate(
        &app,
        "UPDATE point_lots SET available_at = earned_at WHERE order_id = 'o-2'",
    )
    .await;
    assert_eq!(
        app.jobs.run_jobs(100).await.expect("jobs").released_points,
        50
    );
    let b = app.balance("CARD-0001").await;
    assert_eq!((b.available, b.pending), (100, 0));
    let err = points
        .confirm_order(v1::ConfirmOrderRequest {
            request_id: "c-2".into(),
            order_id: "nope".into(),
        })
        .await
        .expect_err("unknown order");
    assert_status(&err, Code::NotFound, "ORDER_NOT_FOUND");
    app.assert_ledger_balanced().await;
}

/// A server whose points expire 12 months after earning, and CARD-0001 with `n`
/// purchases of 100 points (orders o-0, o-1, ...).
async fn with_expiring_purchases(n: usize) -> TestApp {
    let app = spawn_configured(|s| {
        s.program.expiry_policy = loyalty::config::ExpiryPolicyKind::MonthsAfterEarning;
        s.program.expiry_months = 12;
    })
    .await;
    app.enroll("CARD-0001").await;
    let mut points = app.points.clone();
    for i in 0..n {
        points
            .accrue(accrual(
                &format!("a-{i}"),
                "CARD-0001",
                &format!("o-{i}"),
                vec![line("1", "SKU", 1, 10_000, 0)],
            ))
            .await
            .expect("accrue");
    }
    app
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expiry_during_redemptions_never_expires_spent_points_or_the_same_points_twice() {
    let app = with_expiring_purchases(20).await;
    // Half of the lots are past their expiry.
    backdate(
        &app,
        "UPDATE point_lots SET expires_at = earned_at WHERE id % 2 = 0",
    )
    .await;
    let balance = app.balance("CARD-0001").await;
    assert_eq!(balance.available, 2_000);
    let mut tasks = JoinSet::new();
    for i in 0..30 {
        let mut points = app.points.clone();
        tasks.spawn(async move {
            points
                .redeem(redeem(&format!("r-{i}"), "CARD-0001", 45))
                .await
                .map(|_| 45)
                .unwrap_or(0)
        });
    }
    let mut jobs = JoinSet::new();
    for _ in 0..3 {
        let service = app.jobs.clone();
        jobs.spawn(async move { service.run_jobs(100).await.expect("jobs").expired_points });
    }
    let mut spent = 0;
    while let Some(r) = tasks.join_next().await {
        spent += r.expect("task");
    }
    let mut expired = 0;
    while let Some(r) = jobs.join_next().await {
        expired += r.expect("task");
    }
    expired += app.jobs.run_jobs(100).await.expect("jobs").expired_points;
    assert!(
        expired <= 1_000,
        "expired {expired} but only 1000 points were due"
    );
    let entries = app.statement("CARD-0001").await;
    let expiries: Vec<&v1::LedgerEntry> = entries
        .iter()
        .filter(|e| e.kind() == v1::LedgerEntryKind::Expiry)
        .collect();
    let mut lots: Vec<&str> = expiries.iter().map(|e| e.note.as_str()).collect();
    lots.sort_unstable();
    let before = lots.len();
    lots.dedup();
    assert_eq!(lots.len(), before, "one expiry entry per lot");
    assert_eq!(
        app.balance("CARD-0001").await.available,
        2_000 - spent - expired
    );
    app.assert_ledger_balanced().await;
}

/// GetBalance reports the available points that expire within 30 days and the first
/// expiry among them; spent lots and lots expiring later are not counted.
#[tokio::test]
async fn balance_reports_points_expiring_within_thirty_days() {
    let app = with_expiring_purchases(4).await;
    let now = chrono::Utc::now();
    let in_10_days = now + chrono::Duration::days(10);
    let expiries = [
        in_10_days,
        now + chrono::Duration::days(20),
        now + chrono::Duration::days(40),
    ];
    for (i, at) in expiries.into_iter().enumerate() {
        let filter = format!("order_id = 'o-{i}'");
        set_time(&app, "point_lots", "expires_at", &filter, at).await;
    }
    let read = |app: &TestApp| {
        let mut points = app.points.clone();
        async move {
            points
                .get_balance(v1::GetBalanceRequest {
                    member: Some(by_card("CARD-0001")),
                })
                .await
                .expect("balance")
                .into_inner()
                .expiring_soon
                .expect("expiring_soon")
        }
    };
    let soon = read(&app).await;
    assert_eq!(soon.points, 200);
    let first = soon.first_expire_time.expect("first expiry");
    assert_eq!(first.seconds, in_10_days.timestamp());
    // Spending takes the first-expiring lot (FEFO): 100 of the 200 are gone.
    app.points
        .clone()
        .redeem(redeem("r-1", "CARD-0001", 100))
        .await
        .expect("redeem");
    let soon = read(&app).await;
    assert_eq!(soon.points, 100);
    app.assert_ledger_balanced().await;
}

#[tokio::test]
async fn returns_reverse_earned_points_and_refund_spent_ones_in_any_number_of_steps() {
    let app = spawn_app().await;
    let seed: u64 = std::env::var("LOYALTY_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    let mut rng = StdRng::seed_from_u64(seed);
    for round in 0..8 {
        let card = format!("CARD-{round:04}");
        fund(&app, &card, 10_000).await;
        let order = format!("order-{round}");
        let lines: Vec<v1::BasketLine> = (0..rng.random_range(1..5))
            .map(|i| {
                line(
                    &format!("l{i}"),
                    "SKU",
                    rng.random_range(1..6),
                    rng.random_range(1..3_000),
                    0,
                )
            })
            .collect();
        let receipt = app
            .points
            .clone()
            .accrue(accrual(&order, &card, &order, lines.clone()))
            .await
            .expect("accrue")
            .into_inner();
        let spent = rng.random_range(0..500);
        if spent > 0 {
            app.points
                .clone()
                .redeem(v1::RedeemRequest {
                    order_id: order.clone(),
                    ..redeem(&format!("spend-{round}"), &card, spent)
                })
                .await
                .expect("spend");
        }
        // Return every unit in random steps.
        let mut left: Vec<(String, i64)> = lines
            .iter()
            .map(|l| (l.line_id.clone(), l.quantity))
            .collect();
        let (mut reversed, mut refunded, mut step) = (0, 0, 0);
        while left.iter().any(|(_, q)| *q > 0) {
            let mut returned = Vec::new();
            for (id, q) in left.iter_mut().filter(|(_, q)| *q > 0) {
                if rng.random_bool(0.6) {
                    let n = rng.random_range(1..=*q);
                    *q -= n;
                    returned.push(v1::ReturnLine {
                        line_id: id.clone(),
                        quantity: n,
                    });
                }
            }
            if returned.is_empty() {
                continue;
            }
            step += 1;
            let r = app
                .points
                .clone()
                .return_items(v1::ReturnItemsRequest {
                    request_id: format!("ret-{round}-{step}"),
                    order_id: order.clone(),
                    return_id: format!("ret-{step}"),
                    lines: returned,
                })
                .await
                .expect("return")
                .into_inner();
            reversed += r.points_reversed;
            refunded += r.points_refunded;
            assert!(
                reversed <= receipt.points_earned,
                "seed {seed}: reversed more than earned"
            );
            assert!(refunded <= spent, "seed {seed}: refunded more than spent");
            assert_eq!(r.shortfall_points, 0);
        }
        assert_eq!(
            reversed, receipt.points_earned,
            "seed {seed}, round {round}"
        );
        assert_eq!(refunded, spent, "seed {seed}, round {round}");
        let b = app.balance(&card).await;
        assert_eq!(
            b.available, 10_000,
            "seed {seed}: everything about the order is undone"
        );
        // Nothing more to return.
        let err = app
            .points
            .clone()
            .return_items(v1::ReturnItemsRequest {
                request_id: format!("ret-{round}-again"),
                order_id: order.clone(),
                return_id: "again".into(),
                lines: vec![v1::ReturnLine {
                    line_id: "l0".into(),
                    quantity: 1,
                }],
            })
            .await
            .expect_err("over-return");
        assert_status(&err, Code::FailedPrecondition, "RETURN_QUANTITY_EXCEEDED");
    }
    app.assert_ledger_balanced().await;
}

#[tokio::test]
async fn a_return_of_spent_points_clamps_at_zero_or_goes_negative_by_policy() {
    for (policy, expected_available, expected_shortfall) in [
        (loyalty::domain::ReturnPolicy::Clamp, 0, 60),
        (loyalty::domain::ReturnPolicy::AllowNegative, -60, 0),
    ] {
        let app = spawn_configured(|s| s.program.return_policy = policy).await;
        app.enroll("CARD-0001").await;
        let mut points = app.points.clone();
        points
            .accrue(accrual(
                "a-1",
                "CARD-0001",
                "o-1",
                vec![line("1", "SKU", 1, 10_000, 0)],
            ))
            .await
            .expect("accrue");
        points
            .redeem(redeem("r-1", "CARD-0001", 60))
            .await
            .expect("spend elsewhere");
        let r = points
            .return_items(v1::ReturnItemsRequest {
                request_id: "ret-1".into(),
                order_id: "o-1".into(),
                return_id: "ret-1".into(),
                lines: vec![v1::ReturnLine {
                    line_id: "1".into(),
                    quantity: 1,
                }],
            })
            .await
            .expect("return")
            .into_inner();
        assert_eq!(r.points_reversed, 100);
        assert_eq!(r.shortfall_points, expected_shortfall, "{policy:?}");
        assert_eq!(
            app.balance("CARD-0001").await.available,
            expected_available,
            "{policy:?}"
        );
        app.assert_ledger_balanced().await;
        // A later accrual pays a negative balance off first.
        points
            .accrue(accrual(
                "a-2",
                "CARD-0001",
                "o-2",
                vec![line("1", "SKU", 1, 10_000, 0)],
            ))
            .await
            .expect("accrue");
        assert_eq!(
            app.balance("CARD-0001").await.available,
            expected_available + 100
        );
        app.assert_ledger_balanced().await;
    }
}

/// Issue 10's case: an order of 20 + 30 points, 10 of them spent against it, returned
/// line by line. The second return's refund counts before its charge is clamped, so the
/// member ends where they started, under either policy.
#[tokio::test]
async fn a_full_return_of_a_points_paid_order_leaves_the_member_nothing() {
    for policy in [
        loyalty::domain::ReturnPolicy::Clamp,
        loyalty::domain::ReturnPolicy::AllowNegative,
    ] {
        let app = spawn_configured(|s| s.program.return_policy = policy).await;
        app.enroll("CARD-0001").await;
        let mut points = app.points.clone();
        let lines = vec![
            line("1", "SKU-A", 2, 1000, 0),
            line("2", "SKU-B", 1, 3000, 0),
        ];
        points
            .accrue(accrual("a-1", "CARD-0001", "o-1", lines))
            .await
            .expect("accrue");
        points
            .redeem(v1::RedeemRequest {
                order_id: "o-1".into(),
                ..redeem("r-1", "CARD-0001", 10)
            })
            .await
            .expect("spend against the order");
        assert_eq!(app.balance("CARD-0001").await.available, 40);
        let give_back = |line_id: &str, quantity: i64| {
            let mut points = points.clone();
            let request = v1::ReturnItemsRequest {
                request_id: format!("ret-{line_id}"),
                order_id: "o-1".into(),
                return_id: format!("ret-{line_id}"),
                lines: vec![v1::ReturnLine {
                    line_id: line_id.into(),
                    quantity,
                }],
            };
            async move {
                points
                    .return_items(request)
                    .await
                    .expect("return")
                    .into_inner()
            }
        };
        let second = give_back("2", 1).await;
        assert_eq!((second.points_reversed, second.points_refunded), (30, 6));
        assert_eq!(app.balance("CARD-0001").await.available, 16);
        let first = give_back("1", 2).await;
        assert_eq!(
            (first.points_reversed, first.points_refunded),
            (20, 4),
            "{policy:?}"
        );
        assert_eq!(
            (first.points_charged, first.shortfall_points),
            (10, 0),
            "{policy:?}"
        );
        assert_eq!(app.balance("CARD-0001").await.available, 0, "{policy:?}");
        app.assert_ledger_balanced().await;
    }
}

/// Ten tills return the same single unit at once: one return wins, the others are told
/// the unit is already back, and the member's earned total is reversed once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_returns_of_one_unit_reverse_it_once() {
    let app = spawn_app().await;
    app.enroll("CARD-0001").await;
    app.points
        .clone()
        .accrue(accrual(
            "a-1",
            "CARD-0001",
            "o-1",
            vec![line("1", "SKU", 1, 1000, 0)],
        ))
        .await
        .expect("accrue");
    let mut tasks = JoinSet::new();
    for i in 0..10 {
        let mut points = app.points.clone();
        tasks.spawn(async move {
            points
                .return_items(v1::ReturnItemsRequest {
                    request_id: format!("ret-{i}"),
                    order_id: "o-1".into(),
                    return_id: format!("ret-{i}"),
                    lines: vec![v1::ReturnLine {
                        line_id: "1".into(),
                        quantity: 1,
                    }],
                })
                .await
        });
    }
    let mut won = 0;
    while let Some(result) = tasks.join_next().await {
        match result.expect("task") {
            Ok(r) => {
                won += 1;
                assert_eq!(r.into_inner().points_reversed, 10);
            }
            Err(e) => assert_status(&e, Code::FailedPrecondition, "RETURN_QUANTITY_EXCEEDED"),
        }
    }
    assert_eq!(won, 1);
    let balance = app.balance("CARD-0001").await;
    assert_eq!((balance.available, balance.lifetime_earned), (0, 0));
    app.assert_ledger_balanced().await;
}

#[tokio::test]
async fn goodwill_is_capped_per_grant_and_per_day() {
    let app = spawn_configured(|s| {
        s.program.goodwill_max_per_grant = 300;
        s.program.goodwill_max_per_day = 500;
    })
    .await;
    app.enroll("CARD-0001").await;
    let mut points = app.points.clone();
    let adjust = |id: &str, points: i64, reason: v1::AdjustReason| v1::AdjustPointsRequest {
        request_id: id.into(),
        member: Some(by_card("CARD-0001")),
        points,
        reason_code: reason.into(),
        note: "sorry about the late delivery".into(),
    };
    let err = points
        .adjust_points(adjust("g-0", 301, v1::AdjustReason::Goodwill))
        .await
        .expect_err("over grant cap");
    assert_status(&err, Code::FailedPrecondition, "GOODWILL_CAP_EXCEEDED");
    points
        .adjust_points(adjust("g-1", 300, v1::AdjustReason::Goodwill))
        .await
        .expect("within caps");
    points
        .adjust_points(adjust("g-2", 200, v1::AdjustReason::Goodwill))
        .await
        .expect("up to the daily cap");
    let err = points
        .adjust_points(adjust("g-3", 1, v1::AdjustReason::Goodwill))
        .await
        .expect_err("over daily cap");
    assert_status(&err, Code::FailedPrecondition, "GOODWILL_CAP_EXCEEDED");
    let err = points
        .adjust_points(adjust("g-4", -5, v1::AdjustReason::Goodwill))
        .await
        .expect_err("negative goodwill");
    assert_eq!(violated_fields(&err), vec!["points"]);
    let err = points
        .adjust_points(adjust("c-1", -501, v1::AdjustReason::Correction))
        .await
        .expect_err("more than available");
    assert_status(&err, Code::FailedPrecondition, "INSUFFICIENT_POINTS");
    let r = points
        .adjust_points(adjust("c-2", -100, v1::AdjustReason::Correction))
        .await
        .expect("correction")
        .into_inner();
    assert_eq!(r.balance.map(|b| b.available), Some(400));
    let err = points
        .adjust_points(adjust("x-1", 5, v1::AdjustReason::Unspecified))
        .await
        .expect_err("no reason");
    assert_eq!(violated_fields(&err), vec!["reason_code"]);
    let entries = app.statement("CARD-0001").await;
    assert!(
        entries
            .iter()
            .any(|e| e.reason_code == "GOODWILL" && e.note == "sorry about the late delivery")
    );
    app.assert_ledger_balanced().await;
}

#[tokio::test]
async fn an_order_keeps_its_lines_through_the_migration_that_moved_them_into_the_order() {
    // Lines written by this version, moved back into a table of their own by the
    // migration's `down` and into the order again by its `up`: a return afterwards still
    // knows every line and what was returned before.
    use migrations::MigratorTrait;
    use sea_orm::ConnectionTrait;
    let app = spawn_app().await;
    app.enroll("CARD-0001").await;
    let receipt = app
        .points
        .clone()
        .accrue(accrual(
            "o-1",
            "CARD-0001",
            "o-1",
            vec![
                line("a", "SKU-A", 2, 1_000, 0),
                line("b", "SKU-B", 1, 550, 0),
            ],
        ))
        .await
        .expect("accrue")
        .into_inner();
    let give_back = |app: &TestApp, id: &str, lines: Vec<(&str, i64)>| {
        let mut points = app.points.clone();
        let request = v1::ReturnItemsRequest {
            request_id: format!("ret-{id}"),
            order_id: "o-1".into(),
            return_id: id.into(),
            lines: lines
                .into_iter()
                .map(|(line_id, quantity)| v1::ReturnLine {
                    line_id: line_id.into(),
                    quantity,
                })
                .collect(),
        };
        async move { points.return_items(request).await }
    };
    let first = give_back(&app, "1", vec![("a", 1)])
        .await
        .expect("first return")
        .into_inner();

    let db = sea_orm::Database::connect(&app.url).await.expect("connect");
    // Back to before the order-lines migration, however many have come after it.
    let steps = migrations::Migrator::migrations()
        .iter()
        .rev()
        .position(|m| m.name() == "m20261130_000009_order_lines_in_orders")
        .expect("the order-lines migration")
        + 1;
    migrations::Migrator::down(&db, Some(steps as u32))
        .await
        .expect("migrate down");
    let row = db
        .query_one_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            "SELECT count(*) AS n, CAST(sum(returned_quantity) AS BIGINT) AS returned, \
             CAST(sum(quantity) AS BIGINT) AS quantity FROM order_lines WHERE order_id = 'o-1'",
        ))
        .await
        .expect("read order_lines")
        .expect("a row");
    let got: (i64, i64, i64) = (
        row.try_get("", "n").expect("n"),
        row.try_get("", "returned").expect("returned"),
        row.try_get("", "quantity").expect("quantity"),
    );
    assert_eq!(got, (2, 1, 3), "both lines, one unit returned");
    migrations::Migrator::up(&db, None)
        .await
        .expect("migrate up");

    // A fresh replica: no statement prepared against the old shape.
    let replica = app.sibling().await;
    let rest = give_back(&replica, "2", vec![("a", 1), ("b", 1)])
        .await
        .expect("second return")
        .into_inner();
    assert_eq!(
        first.points_reversed + rest.points_reversed,
        receipt.points_earned,
        "every point the order earned is reversed once"
    );
    let err = give_back(&replica, "3", vec![("a", 1)])
        .await
        .expect_err("over-return");
    assert_status(&err, Code::FailedPrecondition, "RETURN_QUANTITY_EXCEEDED");
    replica.assert_ledger_balanced().await;
}
