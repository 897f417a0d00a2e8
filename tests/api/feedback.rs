//! Feedback, complaints with goodwill, satisfaction figures and the churn-risk ranking.
use loyalty::grpc::pb::loyalty::v1;
use tonic::Code;

use crate::helpers::{
    TestApp, accrual, assert_status, backdate, by_card, line, set_time, spawn_app,
    spawn_configured, violated_fields,
};

fn feedback(
    request_id: &str,
    card: &str,
    kind: v1::FeedbackKind,
    score: i32,
    order: &str,
    store: &str,
) -> v1::RecordFeedbackRequest {
    v1::RecordFeedbackRequest {
        request_id: request_id.into(),
        member: Some(by_card(card)),
        kind: kind.into(),
        score,
        topics: vec![v1::Topic::Service.into()],
        comment: "Friendly staff".into(),
        order_id: order.into(),
        store_id: store.into(),
    }
}

fn complaint(request_id: &str, card: &str) -> v1::RecordComplaintRequest {
    v1::RecordComplaintRequest {
        request_id: request_id.into(),
        member: Some(by_card(card)),
        topic: v1::Topic::Delivery.into(),
        severity: v1::Severity::High.into(),
        store_id: "store-1".into(),
        note: "Parcel arrived broken".into(),
        ..Default::default()
    }
}

fn resolve(request_id: &str, complaint_id: &str, goodwill: i64) -> v1::ResolveComplaintRequest {
    v1::ResolveComplaintRequest {
        request_id: request_id.into(),
        complaint_id: complaint_id.into(),
        outcome: v1::ComplaintOutcome::Resolved.into(),
        goodwill_points: goodwill,
        note: "Replacement sent".into(),
    }
}

async fn buy(app: &TestApp, card: &str, order: &str, minor: i64) {
    app.points
        .clone()
        .accrue(accrual(
            order,
            card,
            order,
            vec![line("1", "SKU", 1, minor, 0)],
        ))
        .await
        .expect("accrue");
}

#[tokio::test]
async fn feedback_is_validated_idempotent_and_earns_its_bonus_once_per_order() {
    let app = spawn_configured(|s| s.program.feedback_bonus_points = 50).await;
    app.enroll("CARD-0001").await;
    app.enroll("CARD-0002").await;
    buy(&app, "CARD-0001", "o-1", 10_000).await;
    buy(&app, "CARD-0002", "o-2", 10_000).await;
    let mut client = app.feedback().await;

    let request = feedback("f-1", "CARD-0001", v1::FeedbackKind::Nps, 9, "o-1", "");
    let first = client
        .record_feedback(request.clone())
        .await
        .expect("feedback")
        .into_inner();
    let recorded = first.feedback.clone().expect("feedback");
    assert_eq!(recorded.bonus_points, 50);
    assert_eq!(
        recorded.store_id, "store-1",
        "defaults to the order's store"
    );
    assert_eq!(first.balance.as_ref().expect("balance").available, 150);
    // A retry returns the stored response and pays nothing twice.
    let again = client
        .record_feedback(request)
        .await
        .expect("retry")
        .into_inner();
    assert_eq!(again, first);
    // More feedback on the same order is recorded, without a second bonus.
    let second = client
        .record_feedback(feedback(
            "f-2",
            "CARD-0001",
            v1::FeedbackKind::Csat,
            4,
            "o-1",
            "",
        ))
        .await
        .expect("second")
        .into_inner();
    assert_eq!(second.feedback.expect("feedback").bonus_points, 0);
    assert_eq!(app.balance("CARD-0001").await.available, 150);
    // Feedback without an order earns nothing.
    let no_order = client
        .record_feedback(feedback(
            "f-3",
            "CARD-0001",
            v1::FeedbackKind::Csat,
            5,
            "",
            "S9",
        ))
        .await
        .expect("no order")
        .into_inner();
    assert_eq!(no_order.feedback.expect("feedback").bonus_points, 0);

    for (req, field) in [
        (
            feedback("bad-1", "CARD-0001", v1::FeedbackKind::Nps, 11, "", ""),
            "score",
        ),
        (
            feedback("bad-2", "CARD-0001", v1::FeedbackKind::Csat, 0, "", ""),
            "score",
        ),
        (
            feedback("bad-3", "CARD-0001", v1::FeedbackKind::Csat, 6, "", ""),
            "score",
        ),
        (
            feedback(
                "bad-4",
                "CARD-0001",
                v1::FeedbackKind::Unspecified,
                3,
                "",
                "",
            ),
            "kind",
        ),
        (
            v1::RecordFeedbackRequest {
                topics: vec![v1::Topic::Price.into(), v1::Topic::Price.into()],
                ..feedback("bad-5", "CARD-0001", v1::FeedbackKind::Csat, 3, "", "")
            },
            "topics[1]",
        ),
        (
            v1::RecordFeedbackRequest {
                comment: "x".repeat(2001),
                ..feedback("bad-6", "CARD-0001", v1::FeedbackKind::Csat, 3, "", "")
            },
            "comment",
        ),
    ] {
        let err = client.record_feedback(req).await.expect_err(field);
        assert_status(&err, Code::InvalidArgument, "INVALID_ARGUMENT");
        assert_eq!(violated_fields(&err), vec![field.to_owned()]);
    }
    // Another member's order does not exist for this member.
    let err = client
        .record_feedback(feedback(
            "f-4",
            "CARD-0001",
            v1::FeedbackKind::Nps,
            3,
            "o-2",
            "",
        ))
        .await
        .expect_err("someone else's order");
    assert_status(&err, Code::NotFound, "ORDER_NOT_FOUND");
    app.assert_ledger_balanced().await;
}

#[tokio::test]
async fn a_complaint_resolved_with_goodwill_inside_the_caps_and_beyond_them_rejected() {
    let app = spawn_configured(|s| {
        s.program.goodwill_max_per_grant = 300;
        s.program.goodwill_max_per_day = 500;
    })
    .await;
    app.enroll("CARD-0001").await;
    let mut client = app.feedback().await;
    let opened = client
        .record_complaint(complaint("c-1", "CARD-0001"))
        .await
        .expect("complaint")
        .into_inner()
        .complaint
        .expect("complaint");
    assert_eq!(opened.status(), v1::ComplaintStatus::Open);
    assert_eq!(opened.severity(), v1::Severity::High);
    let id = opened.complaint_id.clone();

    // Beyond the per-grant cap: rejected before anything is written.
    let err = client
        .resolve_complaint(resolve("r-1", &id, 301))
        .await
        .expect_err("over the grant cap");
    assert_status(&err, Code::FailedPrecondition, "GOODWILL_CAP_EXCEEDED");
    // Beyond the daily cap (250 granted earlier today): the whole resolution rolls back.
    app.points
        .clone()
        .adjust_points(v1::AdjustPointsRequest {
            request_id: "gw".into(),
            member: Some(by_card("CARD-0001")),
            points: 250,
            reason_code: v1::AdjustReason::Goodwill.into(),
            note: String::new(),
        })
        .await
        .expect("earlier goodwill");
    let err = client
        .resolve_complaint(resolve("r-2", &id, 300))
        .await
        .expect_err("over the daily cap");
    assert_status(&err, Code::FailedPrecondition, "GOODWILL_CAP_EXCEEDED");
    assert_eq!(app.balance("CARD-0001").await.available, 250);

    // Inside the caps: closed and granted in one transaction.
    set_time(
        &app,
        "complaints",
        "opened_at",
        &format!("id = '{id}'"),
        chrono::Utc::now() - chrono::Duration::hours(2),
    )
    .await;
    let resolved = client
        .resolve_complaint(resolve("r-3", &id, 250))
        .await
        .expect("resolve")
        .into_inner();
    let case = resolved.complaint.clone().expect("complaint");
    assert_eq!(case.status(), v1::ComplaintStatus::Resolved);
    assert_eq!(case.outcome(), v1::ComplaintOutcome::Resolved);
    assert_eq!(case.goodwill_points, 250);
    assert!(
        (7200..7300).contains(&case.resolution_seconds),
        "{}",
        case.resolution_seconds
    );
    assert!(!resolved.transaction_id.is_empty());
    assert_eq!(resolved.balance.expect("balance").available, 500);
    let statement = app.statement("CARD-0001").await;
    assert_eq!(statement[0].reason_code, "GOODWILL");
    assert_eq!(statement[0].points, 250);
    // A retry replays; a second resolution is refused.
    let replay = client
        .resolve_complaint(resolve("r-3", &id, 250))
        .await
        .expect("replay")
        .into_inner();
    assert_eq!(replay, resolved);
    let err = client
        .resolve_complaint(resolve("r-4", &id, 0))
        .await
        .expect_err("resolved twice");
    assert_status(&err, Code::FailedPrecondition, "COMPLAINT_ALREADY_RESOLVED");
    let err = client
        .resolve_complaint(resolve("r-5", &uuid::Uuid::now_v7().to_string(), 0))
        .await
        .expect_err("unknown");
    assert_status(&err, Code::NotFound, "COMPLAINT_NOT_FOUND");
    let err = client
        .resolve_complaint(v1::ResolveComplaintRequest {
            outcome: 0,
            ..resolve("r-6", "nope", -1)
        })
        .await
        .expect_err("invalid");
    assert_eq!(
        violated_fields(&err),
        vec!["complaint_id".to_owned(), "outcome".to_owned()]
    );
    app.assert_ledger_balanced().await;
}

#[tokio::test]
async fn the_satisfaction_summary_counts_nps_csat_and_complaints_by_store() {
    let app = spawn_app().await;
    app.enroll("CARD-0001").await;
    let mut client = app.feedback().await;
    let nps = [(10, "S1"), (9, "S1"), (8, "S1"), (3, "S1"), (6, "S2")];
    for (i, (score, store)) in nps.iter().enumerate() {
        client
            .record_feedback(feedback(
                &format!("n-{i}"),
                "CARD-0001",
                v1::FeedbackKind::Nps,
                *score,
                "",
                store,
            ))
            .await
            .expect("nps");
    }
    for (i, score) in [5, 4].iter().enumerate() {
        client
            .record_feedback(feedback(
                &format!("c-{i}"),
                "CARD-0001",
                v1::FeedbackKind::Csat,
                *score,
                "",
                "S2",
            ))
            .await
            .expect("csat");
    }
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            client
                .record_complaint(complaint(&format!("k-{i}"), "CARD-0001"))
                .await
                .expect("complaint")
                .into_inner()
                .complaint
                .expect("complaint")
                .complaint_id,
        );
    }
    for (i, id) in ids.iter().take(2).enumerate() {
        client
            .resolve_complaint(resolve(&format!("r-{i}"), id, 0))
            .await
            .expect("resolve");
    }
    // Times to resolution: 100 s and 300 s (set directly: a test cannot wait for them).
    for (id, secs) in ids.iter().zip([100, 300]) {
        backdate(
            &app,
            &format!("UPDATE complaints SET resolution_seconds = {secs} WHERE id = '{id}'"),
        )
        .await;
    }

    let summary = client
        .get_satisfaction_summary(v1::GetSatisfactionSummaryRequest {
            group_by: v1::SummaryGrouping::Store.into(),
            ..Default::default()
        })
        .await
        .expect("summary")
        .into_inner();
    let overall = summary.overall.expect("overall");
    assert_eq!(
        (
            overall.nps_responses,
            overall.promoters,
            overall.passives,
            overall.detractors
        ),
        (5, 2, 1, 2)
    );
    assert_eq!(overall.nps, Some(0));
    assert_eq!(overall.csat_responses, 2);
    assert_eq!(overall.csat_average_x100, Some(450));
    assert_eq!(
        (overall.complaints_opened, overall.complaints_resolved),
        (3, 2)
    );
    assert_eq!(overall.median_resolution_seconds, Some(200));
    let by_key = |key: &str| {
        summary
            .groups
            .iter()
            .find(|g| g.key == key)
            .unwrap_or_else(|| panic!("group {key} in {:?}", summary.groups))
            .clone()
    };
    // S1: 2 promoters, 1 passive, 1 detractor of 4 → 25.
    assert_eq!(by_key("S1").nps, Some(25));
    assert_eq!(by_key("S1").csat_average_x100, None);
    // S2: 1 detractor of 1 → -100; CSAT 4.5.
    assert_eq!(by_key("S2").nps, Some(-100));
    assert_eq!(by_key("S2").csat_average_x100, Some(450));
    // The complaints were about store-1.
    assert_eq!(by_key("store-1").complaints_opened, 3);

    // A period before any of it is empty.
    let empty = client
        .get_satisfaction_summary(v1::GetSatisfactionSummaryRequest {
            start_time: Some(prost_types::Timestamp {
                seconds: 1_000_000,
                nanos: 0,
            }),
            end_time: Some(prost_types::Timestamp {
                seconds: 2_000_000,
                nanos: 0,
            }),
            group_by: v1::SummaryGrouping::Tier.into(),
        })
        .await
        .expect("empty period")
        .into_inner();
    let nothing = empty.overall.expect("overall");
    assert_eq!(
        (
            nothing.nps,
            nothing.csat_average_x100,
            nothing.median_resolution_seconds
        ),
        (None, None, None)
    );
    assert!(empty.groups.is_empty());
    let err = client
        .get_satisfaction_summary(v1::GetSatisfactionSummaryRequest {
            start_time: Some(prost_types::Timestamp {
                seconds: 2_000_000,
                nanos: 0,
            }),
            end_time: Some(prost_types::Timestamp {
                seconds: 1_000_000,
                nanos: 0,
            }),
            ..Default::default()
        })
        .await
        .expect_err("backwards");
    assert_eq!(violated_fields(&err), vec!["start_time".to_owned()]);
}

#[tokio::test]
async fn at_risk_members_are_ranked_with_their_reasons_in_keyset_pages() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for card in ["CARD-0001", "CARD-0002", "CARD-0003", "CARD-0004"] {
        ids.push(app.enroll(card).await.member_id);
    }
    // 1: buys often and much, recently. 2: enrolled long ago, never bought, unhappy.
    // 3: bought long ago and has an open complaint. 4: new member, nothing yet.
    for i in 0..12 {
        buy(&app, "CARD-0001", &format!("a-{i}"), 10_000).await;
    }
    buy(&app, "CARD-0003", "c-1", 5_000).await;
    let now = chrono::Utc::now();
    set_time(
        &app,
        "members",
        "enrolled_at",
        "card_number IN ('CARD-0002', 'CARD-0003')",
        now - chrono::Duration::days(400),
    )
    .await;
    set_time(
        &app,
        "orders",
        "occurred_at",
        "order_id = 'c-1'",
        now - chrono::Duration::days(200),
    )
    .await;
    let mut client = app.feedback().await;
    client
        .record_feedback(feedback("f", "CARD-0002", v1::FeedbackKind::Nps, 2, "", ""))
        .await
        .expect("feedback");
    client
        .record_complaint(complaint("k", "CARD-0003"))
        .await
        .expect("complaint");
    // The jobs re-score what is a day old.
    set_time(
        &app,
        "member_risk",
        "scored_at",
        "1 = 1",
        now - chrono::Duration::days(2),
    )
    .await;
    let report = app.jobs.run_jobs(100).await.expect("jobs");
    assert_eq!(report.risk_scores, 4);

    let first = client
        .list_at_risk_members(v1::ListAtRiskMembersRequest {
            page_size: 2,
            ..Default::default()
        })
        .await
        .expect("page 1")
        .into_inner();
    assert_eq!(first.members.len(), 2);
    assert!(!first.next_page_token.is_empty());
    let second = client
        .list_at_risk_members(v1::ListAtRiskMembersRequest {
            page_size: 2,
            page_token: first.next_page_token.clone(),
            ..Default::default()
        })
        .await
        .expect("page 2")
        .into_inner();
    assert_eq!(second.members.len(), 2);
    assert!(second.next_page_token.is_empty());
    let ranked: Vec<_> = first.members.iter().chain(&second.members).collect();
    let scores: Vec<i32> = ranked.iter().map(|m| m.risk_score).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    let order: Vec<&str> = ranked.iter().map(|m| m.member_id.as_str()).collect();
    let (m1, m2, m3, m4) = (&ids[0], &ids[1], &ids[2], &ids[3]);
    // 2: R1 F1 M1 + dissatisfied = 95. 3: R2 F1 M2 + complaint = 36+20+9+10 = 75.
    // 4: R5 F1 M1 = 32. 1: R5 F5 M5 = 0.
    assert_eq!(
        order,
        vec![m2.as_str(), m3.as_str(), m4.as_str(), m1.as_str()]
    );
    assert_eq!(scores, vec![95, 75, 32, 0]);
    let unhappy = ranked[0];
    assert_eq!(unhappy.satisfaction, "DISSATISFIED");
    assert_eq!(unhappy.days_since_purchase, None);
    assert!(
        unhappy.reasons.iter().any(|r| r.contains("dissatisfied")),
        "{:?}",
        unhappy.reasons
    );
    let lapsed = ranked[1];
    assert_eq!(lapsed.days_since_purchase, Some(200));
    assert_eq!(
        (lapsed.recency_score, lapsed.orders, lapsed.open_complaints),
        (2, 1, 1)
    );
    assert_eq!(ranked[3].frequency_score, 5);

    let high = client
        .list_at_risk_members(v1::ListAtRiskMembersRequest {
            min_risk_score: 70,
            ..Default::default()
        })
        .await
        .expect("filtered")
        .into_inner();
    assert_eq!(high.members.len(), 2);
    let err = client
        .list_at_risk_members(v1::ListAtRiskMembersRequest {
            page_token: "garbage".into(),
            ..Default::default()
        })
        .await
        .expect_err("bad token");
    assert_eq!(err.code(), Code::InvalidArgument);
}

/// Members enrolled before churn scoring existed are given a placeholder score by the
/// upgrade, which the jobs replace first.
#[tokio::test]
async fn an_upgrade_gives_existing_members_a_score_the_jobs_replace() {
    use migrations::MigratorTrait;
    use sea_orm::{ConnectionTrait, EntityTrait};
    let (db, url) = crate::helpers::TestDb::create().await;
    {
        let conn = sea_orm::Database::connect(&url).await.expect("connect");
        migrations::Migrator::up(&conn, Some(6))
            .await
            .expect("migrations 1-6");
        // A member as the release before the backfill wrote it (no risk row).
        // Written by hand: the entity has columns later migrations add.
        let backend = conn.get_database_backend();
        let sql = match backend {
            sea_orm::DbBackend::Postgres => {
                "INSERT INTO members (id, card_number, enrolled_at, updated_at) \
                 VALUES ($1, $2, $3, $4)"
            }
            _ => {
                "INSERT INTO members (id, card_number, enrolled_at, updated_at) VALUES (?, ?, ?, ?)"
            }
        };
        conn.execute_raw(sea_orm::Statement::from_sql_and_values(
            backend,
            sql,
            [
                uuid::Uuid::now_v7().to_string().into(),
                "CARD-0001".into(),
                (chrono::Utc::now() - chrono::Duration::days(500)).into(),
                chrono::Utc::now().into(),
            ],
        ))
        .await
        .expect("old member");
        migrations::Migrator::up(&conn, None)
            .await
            .expect("the rest");
        let risk = loyalty::store::entities::member_risk::Entity::find()
            .all(&conn)
            .await
            .expect("risk rows");
        assert_eq!(risk.len(), 1);
        assert_eq!(risk[0].reasons, "not scored yet");
    }
    let app = crate::helpers::spawn_with(db, crate::helpers::test_settings(&url)).await;
    let report = app.jobs.run_jobs(100).await.expect("jobs");
    assert_eq!(report.risk_scores, 1);
    let ranked = app
        .feedback()
        .await
        .list_at_risk_members(v1::ListAtRiskMembersRequest::default())
        .await
        .expect("list")
        .into_inner();
    // Enrolled 500 days ago, never bought: R1 F1 M1.
    assert_eq!(ranked.members[0].risk_score, 80);
}
