//! The event stream: one event per change in the change's transaction, gap-free cursors,
//! per-member sequences, resumption, replicas, filters and retention.
use std::{collections::HashMap, time::Duration};

use loyalty::grpc::pb::loyalty::v1;
use rand::{Rng, SeedableRng, rngs::StdRng};
use tonic::{Code, transport::Channel};

use crate::helpers::{
    TestApp, accrual, assert_status, by_card, line, set_time, spawn_app, spawn_configured,
};

/// Reads up to `n` events (fewer if none come for a while).
async fn read(app: &TestApp, request: v1::WatchEventsRequest, n: usize) -> Vec<v1::Event> {
    read_at(app.channel().await, request, n).await
}

async fn read_at(channel: Channel, request: v1::WatchEventsRequest, n: usize) -> Vec<v1::Event> {
    let mut stream = v1::event_service_client::EventServiceClient::new(channel)
        .watch_events(request)
        .await
        .expect("watch")
        .into_inner();
    let mut events = Vec::new();
    while events.len() < n {
        match tokio::time::timeout(Duration::from_millis(1500), stream.message()).await {
            Ok(Ok(Some(item))) => events.push(item.event.expect("event")),
            Ok(Ok(None)) => panic!("stream ended"),
            Ok(Err(status)) => panic!("stream failed: {status:?}"),
            Err(_) => break,
        }
    }
    events
}

/// The `loyalty` binary serving on `port` over the test's database: a second server
/// process, as a replica on another pod would be.
struct Process(std::process::Child);

impl Process {
    async fn start(url: &str, port: u16) -> (Self, Channel) {
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_loyalty"))
            .env_remove("LOYALTY_CONFIG")
            .env("LOYALTY__DATABASE__URL", url)
            .env("LOYALTY__SERVER__LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env("LOYALTY__SECURITY__REQUIRE_AUTH", "false")
            .env("LOYALTY__JOBS__INTERVAL_SECS", "0")
            .env("LOYALTY__LOG__FILTER", "warn")
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start the loyalty binary");
        // Owned at once: dropped (killed and reaped) on any failure below.
        let process = Self(child);
        let started = tokio::time::Instant::now();
        loop {
            if let Ok(channel) = Channel::from_shared(format!("http://127.0.0.1:{port}"))
                .expect("uri")
                .connect()
                .await
            {
                return (process, channel);
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the binary did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then wait for the drain to finish, without blocking the runtime (the
    /// test's client connections must go on running to close their streams).
    async fn stop(mut self) {
        let killed = std::process::Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()
            .expect("kill");
        assert!(killed.success());
        let started = tokio::time::Instant::now();
        let status = loop {
            if let Some(status) = self.0.try_wait().expect("wait") {
                break status;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the drain took too long"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(status.success(), "{status:?}");
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn after(cursor: i64) -> v1::WatchEventsRequest {
    v1::WatchEventsRequest {
        after_cursor: cursor,
        ..Default::default()
    }
}

fn assert_gap_free(events: &[v1::Event], first: i64) {
    let cursors: Vec<i64> = events.iter().map(|e| e.cursor).collect();
    let expected: Vec<i64> = (first..first + events.len() as i64).collect();
    assert_eq!(cursors, expected, "cursors must be consecutive");
    let mut seq: HashMap<&str, i64> = HashMap::new();
    for e in events {
        let last = seq.entry(e.member_id.as_str()).or_insert(0);
        assert_eq!(e.member_sequence, *last + 1, "member sequence of {e:?}");
        *last = e.member_sequence;
    }
}

#[tokio::test]
async fn every_kind_of_change_becomes_one_event_with_its_reason() {
    let app = spawn_app().await;
    app.enroll("CARD-0001").await;
    let mut points = app.points.clone();
    points
        .accrue(accrual(
            "a",
            "CARD-0001",
            "o-1",
            vec![line("1", "SKU", 2, 10_000, 0)],
        ))
        .await
        .expect("accrue");
    let hold = points
        .create_hold(v1::CreateHoldRequest {
            request_id: "h".into(),
            member: Some(by_card("CARD-0001")),
            points: 50,
            store_id: "store-1".into(),
            ..Default::default()
        })
        .await
        .expect("hold")
        .into_inner()
        .hold
        .expect("hold");
    points
        .capture_hold(v1::CaptureHoldRequest {
            request_id: "c".into(),
            hold_id: hold.hold_id,
            points: 30,
        })
        .await
        .expect("capture");
    points
        .return_items(v1::ReturnItemsRequest {
            request_id: "r".into(),
            order_id: "o-1".into(),
            return_id: "r-1".into(),
            lines: vec![v1::ReturnLine {
                line_id: "1".into(),
                quantity: 1,
            }],
        })
        .await
        .expect("return");
    points
        .adjust_points(v1::AdjustPointsRequest {
            request_id: "adj".into(),
            member: Some(by_card("CARD-0001")),
            points: -5,
            reason_code: v1::AdjustReason::Correction.into(),
            note: String::new(),
        })
        .await
        .expect("adjust");
    app.feedback()
        .await
        .record_feedback(v1::RecordFeedbackRequest {
            request_id: "f".into(),
            member: Some(by_card("CARD-0001")),
            kind: v1::FeedbackKind::Nps.into(),
            score: 10,
            ..Default::default()
        })
        .await
        .expect("feedback");

    let events = read(&app, after(0), 100).await;
    assert_gap_free(&events, 1);
    use v1::EventType as T;
    let types: Vec<T> = events.iter().map(|e| e.r#type()).collect();
    assert_eq!(
        types,
        vec![
            T::MemberEnrolled,
            T::PointsAccrued,
            T::PointsHeld,
            T::PointsRedeemed,
            T::HoldReleased,
            T::PointsReturned,
            T::PointsAdjusted,
            T::FeedbackRecorded,
        ]
    );
    let change = |i: usize| match &events[i].detail {
        Some(v1::event::Detail::BalanceChange(c)) => c.clone(),
        other => panic!("no balance change in {other:?}"),
    };
    assert_eq!((change(1).points, change(1).balance_after), (200, 200));
    assert_eq!(change(2).held_delta, 50);
    assert_eq!(change(4).reason_code, "CAPTURED");
    assert_eq!(change(6).ledger_kind, "ADJUSTMENT");
    assert_eq!(change(6).reason_code, "CORRECTION");
    // The stream's last balance is the member's balance.
    let balance = app.balance("CARD-0001").await;
    assert_eq!(change(6).balance_after, balance.available);
    assert!(events[1].transaction_id.len() == 36);
    app.assert_ledger_balanced().await;
}

#[tokio::test]
async fn changes_that_roll_back_emit_nothing() {
    let app = spawn_configured(|s| {
        s.program.goodwill_max_per_grant = 300;
        s.program.goodwill_max_per_day = 300;
    })
    .await;
    app.enroll("CARD-0001").await;
    let mut points = app.points.clone();
    points
        .accrue(accrual(
            "a",
            "CARD-0001",
            "o-1",
            vec![line("1", "SKU", 1, 1_000, 0)],
        ))
        .await
        .expect("accrue");
    // Failures after writes began: a second accrual of the order, an overdraft, and a
    // complaint resolution whose goodwill breaks the daily cap after the case was closed.
    let err = points
        .accrue(accrual(
            "a2",
            "CARD-0001",
            "o-1",
            vec![line("1", "SKU", 1, 1_000, 0)],
        ))
        .await
        .expect_err("same order");
    assert_eq!(err.code(), Code::AlreadyExists);
    let err = points
        .redeem(v1::RedeemRequest {
            request_id: "x".into(),
            member: Some(by_card("CARD-0001")),
            points: 1_000,
            store_id: "store-1".into(),
            ..Default::default()
        })
        .await
        .expect_err("overdraft");
    assert_eq!(err.code(), Code::FailedPrecondition);
    let mut feedback = app.feedback().await;
    let case = feedback
        .record_complaint(v1::RecordComplaintRequest {
            request_id: "k".into(),
            member: Some(by_card("CARD-0001")),
            topic: v1::Topic::Product.into(),
            severity: v1::Severity::Low.into(),
            ..Default::default()
        })
        .await
        .expect("complaint")
        .into_inner()
        .complaint
        .expect("complaint");
    points
        .adjust_points(v1::AdjustPointsRequest {
            request_id: "gw".into(),
            member: Some(by_card("CARD-0001")),
            points: 200,
            reason_code: v1::AdjustReason::Goodwill.into(),
            note: String::new(),
        })
        .await
        .expect("goodwill");
    let err = feedback
        .resolve_complaint(v1::ResolveComplaintRequest {
            request_id: "res".into(),
            complaint_id: case.complaint_id.clone(),
            outcome: v1::ComplaintOutcome::Resolved.into(),
            goodwill_points: 200,
            note: String::new(),
        })
        .await
        .expect_err("over the daily cap");
    assert_status(&err, Code::FailedPrecondition, "GOODWILL_CAP_EXCEEDED");

    let events = read(&app, after(0), 100).await;
    assert_gap_free(&events, 1);
    use v1::EventType as T;
    let types: Vec<T> = events.iter().map(|e| e.r#type()).collect();
    assert_eq!(
        types,
        vec![
            T::MemberEnrolled,
            T::PointsAccrued,
            T::ComplaintOpened,
            T::PointsAdjusted
        ]
    );
    app.assert_ledger_balanced().await;
}

#[tokio::test]
async fn filters_by_type_and_member_and_a_pruned_cursor_is_refused() {
    let app = spawn_app().await;
    let first = app.enroll("CARD-0001").await;
    app.enroll("CARD-0002").await;
    for (i, card) in ["CARD-0001", "CARD-0002", "CARD-0001"].iter().enumerate() {
        app.points
            .clone()
            .accrue(accrual(
                &format!("a{i}"),
                card,
                &format!("o-{i}"),
                vec![line("1", "SKU", 1, 1_000, 0)],
            ))
            .await
            .expect("accrue");
    }
    let accruals = read(
        &app,
        v1::WatchEventsRequest {
            types: vec![v1::EventType::PointsAccrued.into()],
            ..Default::default()
        },
        10,
    )
    .await;
    assert_eq!(accruals.len(), 3);
    assert!(
        accruals
            .iter()
            .all(|e| e.r#type() == v1::EventType::PointsAccrued)
    );
    let mine = read(
        &app,
        v1::WatchEventsRequest {
            member_id: first.member_id.clone(),
            ..Default::default()
        },
        10,
    )
    .await;
    assert_eq!(mine.len(), 3, "enrolment and two accruals");
    assert_eq!(
        mine.iter().map(|e| e.member_sequence).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    let err = app
        .events()
        .await
        .watch_events(v1::WatchEventsRequest {
            after_cursor: -1,
            types: vec![0],
            member_id: "not-a-member".into(),
            all_programs: false,
        })
        .await
        .expect_err("invalid");
    assert_eq!(err.code(), Code::InvalidArgument);

    // Retention: events older than 30 days go; a consumer behind them is told so.
    set_time(
        &app,
        "events",
        "created_at",
        "cursor <= 3",
        chrono::Utc::now() - chrono::Duration::days(31),
    )
    .await;
    let report = app.jobs.run_jobs(100).await.expect("jobs");
    assert_eq!(report.events_pruned, 3);
    let err = app
        .events()
        .await
        .watch_events(after(1))
        .await
        .expect_err("pruned");
    assert_status(&err, Code::FailedPrecondition, "CURSOR_EXPIRED");
    let rest = read(&app, after(0), 10).await;
    assert_eq!(rest.first().map(|e| e.cursor), Some(4));
    assert_eq!(rest.len(), 2);
    assert!(!read(&app, after(3), 10).await.is_empty());
}

/// A consumer that disconnects at random points and resumes from its last cursor, on
/// either of two server processes (the second restarted half-way), while both take
/// accruals: it sees every event exactly once, in cursor order.
#[tokio::test]
async fn a_resuming_consumer_gets_every_event_once_in_order_across_processes_and_restarts() {
    let seed: u64 = std::env::var("LOYALTY_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("LOYALTY_TEST_SEED={seed}");
    let app = spawn_app().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let (process, channel) = Process::start(&app.url, port).await;
    let mut other = Some((process, channel.clone()));
    const MEMBERS: usize = 6;
    const PER_MEMBER: usize = 10;
    for m in 0..MEMBERS {
        app.enroll(&format!("CARD-{m:04}")).await;
    }
    let expected = MEMBERS * (PER_MEMBER + 1);
    let writers: Vec<_> = [
        app.points.clone(),
        v1::points_service_client::PointsServiceClient::new(channel),
    ]
    .into_iter()
    .enumerate()
    .map(|(w, points)| {
        tokio::spawn(async move {
            for m in 0..MEMBERS {
                for i in (w..PER_MEMBER).step_by(2) {
                    let id = format!("o-{m}-{i}");
                    points
                        .clone()
                        .accrue(accrual(
                            &id,
                            &format!("CARD-{m:04}"),
                            &id,
                            vec![line("1", "SKU", 1, 500, 0)],
                        ))
                        .await
                        .expect("accrue");
                }
            }
        })
    })
    .collect();

    let mut rng = StdRng::seed_from_u64(seed);
    let mut seen: Vec<v1::Event> = Vec::new();
    let mut restarted = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while seen.len() < expected {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {expected} events",
            seen.len()
        );
        if !restarted && seen.len() >= expected / 2 {
            // Restart the second process once its writer is done (a stopped server's
            // in-flight calls are the caller's to retry, not this test's subject).
            for w in &writers {
                while !w.is_finished() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            let (process, _) = other.take().expect("process");
            process.stop().await;
            other = Some(Process::start(&app.url, port).await);
            restarted = true;
        }
        let take = rng.random_range(1..=7);
        let cursor = seen.last().map_or(0, |e| e.cursor);
        let channel = if rng.random_bool(0.5) {
            app.channel().await
        } else {
            other.as_ref().expect("process").1.clone()
        };
        seen.extend(read_at(channel, after(cursor), take).await);
    }
    for w in writers {
        w.await.expect("writer");
    }
    assert_eq!(seen.len(), expected);
    assert_gap_free(&seen, 1);
    // Nothing more arrives.
    assert!(
        read(&app, after(seen.last().expect("events").cursor), 1)
            .await
            .is_empty()
    );
    app.assert_ledger_balanced().await;
}

#[tokio::test]
async fn a_stream_outlives_the_server_side_deadline_of_unary_calls() {
    let app = spawn_configured(|s| s.server.request_timeout_ms = 300).await;
    let mut stream = app
        .events()
        .await
        .watch_events(after(0))
        .await
        .expect("watch")
        .into_inner();
    tokio::time::sleep(Duration::from_millis(800)).await;
    app.enroll("CARD-0001").await;
    let item = tokio::time::timeout(Duration::from_secs(3), stream.message())
        .await
        .expect("an event in time")
        .expect("stream alive")
        .expect("an event");
    assert_eq!(
        item.event.expect("event").r#type(),
        v1::EventType::MemberEnrolled
    );
}

/// The jobs are safe on every replica: two servers running them at once over the same
/// due work settle each hold and each lot exactly once.
#[tokio::test]
async fn jobs_on_two_replicas_at_once_settle_each_item_once() {
    let app = spawn_configured(|s| {
        s.program.expiry_policy = loyalty::config::ExpiryPolicyKind::MonthsAfterEarning;
    })
    .await;
    let replica = app.sibling().await;
    for m in 0..5 {
        let card = format!("CARD-{m:04}");
        app.enroll(&card).await;
        for i in 0..3 {
            let id = format!("o-{m}-{i}");
            app.points
                .clone()
                .accrue(accrual(
                    &id,
                    &card,
                    &id,
                    vec![line("1", "SKU", 1, 1_000, 0)],
                ))
                .await
                .expect("accrue");
        }
        app.points
            .clone()
            .create_hold(v1::CreateHoldRequest {
                request_id: format!("h-{m}"),
                member: Some(by_card(&card)),
                points: 5,
                store_id: "store-1".into(),
                ..Default::default()
            })
            .await
            .expect("hold");
    }
    let past = chrono::Utc::now() - chrono::Duration::hours(1);
    set_time(&app, "holds", "expires_at", "1 = 1", past).await;
    set_time(&app, "point_lots", "expires_at", "1 = 1", past).await;
    let (a, b) = tokio::join!(app.jobs.run_jobs(100), replica.jobs.run_jobs(100));
    let (a, b) = (a.expect("jobs"), b.expect("jobs"));
    assert_eq!(a.expired_holds + b.expired_holds, 5, "{a:?} {b:?}");
    assert_eq!(a.expired_lots + b.expired_lots, 15, "{a:?} {b:?}");
    assert_eq!(a.expired_points + b.expired_points, 150);
    let again = app.jobs.run_jobs(100).await.expect("jobs");
    assert_eq!((again.expired_holds, again.expired_lots), (0, 0));
    let events = read(&app, after(0), 200).await;
    assert_gap_free(&events, 1);
    let count = |t: v1::EventType| events.iter().filter(|e| e.r#type() == t).count();
    assert_eq!(count(v1::EventType::HoldReleased), 5);
    assert_eq!(count(v1::EventType::PointsExpired), 15);
    app.assert_ledger_balanced().await;
}
