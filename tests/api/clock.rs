//! Time moves by the service's clock, not by rewriting stored rows: the pending window,
//! a hold's lifetime and lot expiry run end to end as a till and the jobs see them.

use loyalty::{config::ExpiryPolicyKind, grpc::pb::loyalty::v1};

use crate::helpers::{accrual, by_card, line, spawn_configured};

#[tokio::test]
async fn pending_points_holds_and_lots_follow_the_moved_clock() {
    let app = spawn_configured(|s| {
        s.program.pending_days = 14;
        s.program.expiry_policy = ExpiryPolicyKind::MonthsAfterEarning;
        s.program.expiry_months = 12;
        s.jobs.interval_secs = 0;
        // A year passes below: keep the events, whose count the books check compares.
        s.events.retention_days = 0;
    })
    .await;
    app.enroll("CLOCK-1").await;
    let mut points = app.points.clone();
    points
        .accrue(accrual(
            "a-1",
            "CLOCK-1",
            "o-1",
            vec![line("1", "SKU", 1, 10_000, 0)],
        ))
        .await
        .expect("accrue");
    let b = app.balance("CLOCK-1").await;
    assert_eq!(
        (b.available, b.pending),
        (0, 100),
        "pending for the return window"
    );

    // Two weeks later the job releases the pending points.
    app.store.clock().advance(chrono::Duration::days(15));
    app.jobs.run_jobs(1000).await.expect("jobs");
    let b = app.balance("CLOCK-1").await;
    assert_eq!(
        (b.available, b.pending),
        (100, 0),
        "released after the window"
    );

    // A hold lives for its TTL, then the job gives its points back.
    let hold = points
        .create_hold(v1::CreateHoldRequest {
            request_id: "h-1".into(),
            member: Some(by_card("CLOCK-1")),
            points: 30,
            order_id: "o-2".into(),
            store_id: "store-1".into(),
            ttl: Some(prost_types::Duration {
                seconds: 60,
                nanos: 0,
            }),
        })
        .await
        .expect("hold")
        .into_inner()
        .hold
        .expect("hold");
    assert_eq!(app.balance("CLOCK-1").await.held, 30);
    app.store.clock().advance(chrono::Duration::minutes(2));
    app.jobs.run_jobs(1000).await.expect("jobs");
    let b = app.balance("CLOCK-1").await;
    assert_eq!(
        (b.available, b.held),
        (100, 0),
        "the expired hold gave its points back"
    );
    let err = points
        .capture_hold(v1::CaptureHoldRequest {
            request_id: "c-1".into(),
            hold_id: hold.hold_id,
            points: 0,
        })
        .await
        .expect_err("an expired hold cannot be captured");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);

    // Twelve months after earning, the lot expires.
    app.store.clock().advance(chrono::Duration::days(366));
    app.jobs.run_jobs(1000).await.expect("jobs");
    assert_eq!(app.balance("CLOCK-1").await.available, 0, "expired");
    let statement = app.statement("CLOCK-1").await;
    assert_eq!(statement[0].kind(), v1::LedgerEntryKind::Expiry);
    assert_eq!(statement[0].points, -100);
    app.assert_ledger_balanced().await;
}
