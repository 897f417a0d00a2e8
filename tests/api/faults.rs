//! What a caller sees when things break or when it sends something wrong: malformed
//! bytes, deadlines, numbers at the edge, NUL characters, long error lists, a member
//! someone else holds, connections the database drops.
use std::time::{Duration, Instant};

use loyalty::{
    auth::Role,
    grpc::{FILE_DESCRIPTOR_SET, pb::loyalty::v1},
};
use prost::Message;
use prost::bytes::{Buf, BufMut};
use sea_orm::{ConnectionTrait, DbBackend, TransactionTrait};
use tokio::task::JoinSet;
use tonic::{
    Code, Request, Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
};

use crate::helpers::{
    TestApp, accrual, all_methods, assert_status, by_card, client, enroll_as, line,
    spawn_configured, violated_fields, with_key,
};

/// Sends and receives raw bytes: the request is whatever the test wrote.
#[derive(Default)]
struct Raw;

struct RawEncoder;
struct RawDecoder;

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        Ok(Some(bytes.to_vec()))
    }
}

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

pub async fn call_raw(app: &TestApp, path: &str, body: Vec<u8>) -> Result<(), Status> {
    call_raw_as(app, path, body, None).await
}

async fn call_raw_as(
    app: &TestApp,
    path: &str,
    body: Vec<u8>,
    key: Option<&str>,
) -> Result<(), Status> {
    let mut grpc = tonic::client::Grpc::new(app.channel().await);
    grpc.ready().await.expect("ready");
    let path = http::uri::PathAndQuery::try_from(path.to_owned()).expect("path");
    let request = match key {
        Some(key) => with_key(body, key),
        None => Request::new(body),
    };
    // Server streaming works for every method: an error arrives with the headers.
    grpc.server_streaming(request, path, Raw).await.map(|_| ())
}

/// Bytes that are no request message, however read: a varint that never ends, a
/// length past the end, a string field of invalid UTF-8, a field of a wire type no
/// field of these messages has (a deprecated group).
fn malformed() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("bad varint", vec![0x08, 0xff, 0xff, 0xff]),
        ("length past the end", vec![0x0a, 0x7f, b'a']),
        ("invalid UTF-8", vec![0x0a, 0x02, 0xc3, 0x28]),
        ("group wire type", vec![0x0b, 0x08, 0x01, 0x0c]),
        ("tag zero", vec![0x00, 0x01]),
    ]
}

#[tokio::test]
async fn malformed_bytes_on_every_method_are_invalid_argument_never_internal() {
    let app = spawn_configured(|_| {}).await;
    app.enroll("CARD-0001").await;
    let before = app.statement("CARD-0001").await;
    let methods = all_methods();
    assert!(methods.len() >= 39, "methods: {methods:?}");
    for method in &methods {
        for (what, bytes) in malformed() {
            let started = Instant::now();
            let result = call_raw(&app, method, bytes).await;
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{method} with {what} took {:?}",
                started.elapsed()
            );
            match (what, result) {
                // Where field 1 is not a string, these bytes are a valid message (a
                // nested message, or an unknown field skipped): refused, if at all,
                // for what they lack.
                ("invalid UTF-8" | "group wire type", Ok(())) => {}
                ("invalid UTF-8" | "group wire type", Err(err)) => assert!(
                    !matches!(err.code(), Code::Internal | Code::Unknown),
                    "{method} with {what}: {err:?}"
                ),
                (_, Ok(())) => panic!("{method} accepted {what}"),
                (_, Err(err)) => assert_status(&err, Code::InvalidArgument, "MALFORMED_REQUEST"),
            }
        }
    }
    assert_eq!(app.statement("CARD-0001").await, before);
    app.assert_ledger_balanced().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_servers_deadline_answers_deadline_exceeded() {
    let app = spawn_configured(|s| {
        s.database.lock_timeout_ms = 30_000;
        s.server.request_timeout_ms = 400;
    })
    .await;
    app.enroll("SLOW-1").await;
    // Another session holds the member (SQLite: the write lock).
    let other = sea_orm::Database::connect(&app.url).await.expect("connect");
    let holder = other.begin().await.expect("begin");
    holder
        .execute_unprepared("UPDATE members SET name = name WHERE card_number = 'SLOW-1'")
        .await
        .expect("lock");
    let request = Request::new(v1::AdjustPointsRequest {
        request_id: "slow".into(),
        member: Some(by_card("SLOW-1")),
        points: 10,
        reason_code: v1::AdjustReason::Goodwill.into(),
        note: String::new(),
    });
    let started = Instant::now();
    let err = app
        .points
        .clone()
        .adjust_points(request)
        .await
        .expect_err("deadline");
    assert_status(&err, Code::DeadlineExceeded, "DEADLINE_EXCEEDED");
    // On SQLite the answer then waits for its audit record, which needs the same
    // database-wide write lock (up to database.busy_timeout_ms).
    if app.store.backend() == DbBackend::Postgres {
        assert!(started.elapsed() < Duration::from_secs(2));
    }
    holder.rollback().await.expect("release");
}

#[tokio::test]
async fn points_at_the_edge_are_refused_with_a_reason_never_an_overflow() {
    let app = spawn_configured(|s| {
        s.program.migration_max_points = loyalty::domain::MAX_POINTS;
    })
    .await;
    app.enroll("EDGE-1").await;
    let adjust = |id: &str, points: i64, reason: v1::AdjustReason| v1::AdjustPointsRequest {
        request_id: id.into(),
        member: Some(by_card("EDGE-1")),
        points,
        reason_code: reason.into(),
        note: String::new(),
    };
    let mut points = app.points.clone();
    let err = points
        .adjust_points(adjust("max", i64::MAX, v1::AdjustReason::Migration))
        .await
        .expect_err("i64::MAX");
    assert_eq!(violated_fields(&err), ["points"]);
    let err = points
        .adjust_points(adjust("corr", 200_000, v1::AdjustReason::Correction))
        .await
        .expect_err("over the correction cap");
    assert_status(&err, Code::FailedPrecondition, "ADJUSTMENT_CAP_EXCEEDED");
    // A balance one movement short of the bound.
    let near = loyalty::domain::MAX_BALANCE - 10;
    app.store
        .conn()
        .execute_unprepared(&format!(
            "UPDATE members SET points_available = {near} WHERE card_number = 'EDGE-1'"
        ))
        .await
        .expect("near the bound");
    for attempt in 0..2 {
        let err = points
            .adjust_points(adjust(
                &format!("over-{attempt}"),
                loyalty::domain::MAX_POINTS,
                v1::AdjustReason::Migration,
            ))
            .await
            .expect_err("past the bound");
        assert_status(&err, Code::OutOfRange, "POINTS_OUT_OF_RANGE");
    }
    assert_eq!(app.balance("EDGE-1").await.available, near);
}

#[tokio::test]
async fn nul_characters_and_long_error_lists_are_refused_clearly() {
    let app = spawn_configured(|_| {}).await;
    app.enroll("TEXT-1").await;
    let mut feedback = app.feedback().await;
    let err = feedback
        .record_feedback(v1::RecordFeedbackRequest {
            request_id: "fb-nul".into(),
            member: Some(by_card("TEXT-1")),
            kind: v1::FeedbackKind::Csat.into(),
            score: 4,
            comment: "good\0bad".into(),
            ..Default::default()
        })
        .await
        .expect_err("NUL in a comment");
    assert_eq!(violated_fields(&err), ["comment"]);
    let err = feedback
        .record_complaint(v1::RecordComplaintRequest {
            request_id: "c-nul".into(),
            member: Some(by_card("TEXT-1")),
            topic: v1::Topic::Price.into(),
            severity: v1::Severity::Low.into(),
            note: "x\0".into(),
            ..Default::default()
        })
        .await
        .expect_err("NUL in a note");
    assert_eq!(violated_fields(&err), ["note"]);
    let err = app
        .points
        .clone()
        .accrue(accrual(
            "bad\0id",
            "TEXT-1",
            "o-1",
            vec![line("1", "S", 1, 100, 0)],
        ))
        .await
        .expect_err("NUL in a request id");
    assert!(violated_fields(&err).contains(&"request_id".to_owned()));
    let mut rewards = v1::reward_service_client::RewardServiceClient::new(app.channel().await);
    for (name, description, field) in [
        ("Mug\0", "", "reward.name"),
        ("Mug", "a\0b", "reward.description"),
    ] {
        let err = rewards
            .create_reward(v1::CreateRewardRequest {
                request_id: format!("rw-{field}"),
                reward: Some(v1::Reward {
                    name: name.into(),
                    description: description.into(),
                    points_cost: 100,
                    active: true,
                    ..Default::default()
                }),
            })
            .await
            .expect_err("NUL in a reward");
        assert_eq!(violated_fields(&err), [field]);
    }
    let err = app
        .offers()
        .await
        .get_offer_report(v1::GetOfferReportRequest {
            offer_id: "offer\0".into(),
        })
        .await
        .expect_err("NUL in an offer id");
    assert_eq!(violated_fields(&err), ["offer_id"]);
    let err = app
        .members
        .clone()
        .enroll_member(v1::EnrollMemberRequest {
            request_id: "e-nul".into(),
            card_number: "TEXT-2".into(),
            name: "Ada".into(),
            referred_by_code: "REF\0".into(),
            ..Default::default()
        })
        .await
        .expect_err("NUL in a referral code");
    assert_eq!(violated_fields(&err), ["referred_by_code"]);
    // Programme text a later accrual would carry to the database.
    let err = app
        .program()
        .await
        .upsert_tier(v1::UpsertTierRequest {
            request_id: "tier-nul".into(),
            tier: Some(v1::Tier {
                tier_id: "\0".into(),
                name: "Silver".into(),
                rank: 1,
                threshold_points: Some(100),
                earn_multiplier_percent: 100,
                ..Default::default()
            }),
        })
        .await
        .expect_err("NUL in a tier id");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        violated_fields(&err).iter().any(|f| f.ends_with("tier_id")),
        "{err:?}"
    );
    // 300 bad lines: the status names at most 20 and counts the rest, and fits.
    let lines = (0..300)
        .map(|i| line(&format!("l{i}"), "", -1, -1, 0))
        .collect();
    let err = app
        .points
        .clone()
        .accrue(accrual("many", "TEXT-1", "o-2", lines))
        .await
        .expect_err("many violations");
    assert_eq!(err.code(), Code::InvalidArgument);
    let details = tonic_types::StatusExt::get_details_bad_request(&err).expect("bad request");
    assert!(
        details.field_violations.len() <= 21,
        "{}",
        details.field_violations.len()
    );
    assert!(err.message().len() + err.details().len() < 8 * 1024);
}

#[tokio::test]
async fn a_store_scoped_key_names_its_own_store_or_is_told_what_is_missing() {
    let app = spawn_configured(|s| s.security.require_auth = true).await;
    let admin = client(&app, "admin", Role::Admin, &[]).await;
    let till = client(&app, "pos", Role::Pos, &["SB"]).await;
    enroll_as(&app, &admin, "SCOPE-1").await;
    let err = app
        .feedback()
        .await
        .record_feedback(with_key(
            v1::RecordFeedbackRequest {
                request_id: "fb".into(),
                member: Some(by_card("SCOPE-1")),
                kind: v1::FeedbackKind::Csat.into(),
                score: 5,
                store_id: "SA".into(),
                ..Default::default()
            },
            &till,
        ))
        .await
        .expect_err("another store's feedback");
    assert_status(&err, Code::PermissionDenied, "PERMISSION_DENIED");
    let err = app
        .points
        .clone()
        .redeem(with_key(
            v1::RedeemRequest {
                request_id: "r".into(),
                member: Some(by_card("SCOPE-1")),
                points: 1,
                ..Default::default()
            },
            &till,
        ))
        .await
        .expect_err("no store");
    assert_eq!(violated_fields(&err), ["store_id"]);
    // Health and reflection need no key.
    let mut health = tonic_health::pb::health_client::HealthClient::new(app.channel().await);
    health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("health without a key");
}

/// Every method whose request carries a store (read from the served descriptors) refuses
/// a store-scoped key that names another store, before it does anything.
#[tokio::test]
async fn every_method_that_carries_a_store_refuses_another_stores_key() {
    let app = spawn_configured(|s| s.security.require_auth = true).await;
    let till = client(&app, "pos", Role::Pos, &["SB"]).await;
    let member = || Some(by_card("SCOPE-1"));
    let requests: Vec<(&str, Vec<u8>)> = vec![
        (
            "/loyalty.v1.PointsService/Accrue",
            v1::AccrueRequest {
                store_id: "SA".into(),
                ..accrual("a", "SCOPE-1", "o", vec![line("1", "S", 1, 100, 0)])
            }
            .encode_to_vec(),
        ),
        (
            "/loyalty.v1.PointsService/QuoteAccrual",
            v1::QuoteAccrualRequest {
                member: member(),
                order_id: "q".into(),
                channel: v1::Channel::Pos.into(),
                store_id: "SA".into(),
                currency: "EUR".into(),
                lines: vec![line("1", "S", 1, 100, 0)],
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            "/loyalty.v1.PointsService/Redeem",
            v1::RedeemRequest {
                request_id: "r".into(),
                member: member(),
                points: 1,
                order_id: String::new(),
                store_id: "SA".into(),
            }
            .encode_to_vec(),
        ),
        (
            "/loyalty.v1.PointsService/CreateHold",
            v1::CreateHoldRequest {
                request_id: "h".into(),
                member: member(),
                points: 1,
                store_id: "SA".into(),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            "/loyalty.v1.RewardService/RedeemReward",
            v1::RedeemRewardRequest {
                request_id: "rr".into(),
                member: member(),
                reward_id: uuid::Uuid::now_v7().to_string(),
                store_id: "SA".into(),
            }
            .encode_to_vec(),
        ),
        (
            "/loyalty.v1.FeedbackService/RecordFeedback",
            v1::RecordFeedbackRequest {
                request_id: "fb".into(),
                member: member(),
                kind: v1::FeedbackKind::Csat.into(),
                score: 5,
                store_id: "SA".into(),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            "/loyalty.v1.FeedbackService/RecordComplaint",
            v1::RecordComplaintRequest {
                request_id: "c".into(),
                member: member(),
                topic: v1::Topic::Price.into(),
                severity: v1::Severity::Low.into(),
                store_id: "SA".into(),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
    ];
    // The list above is every method with a store_id in its request, no more, no less.
    let fds = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("descriptors");
    let mut carrying = Vec::new();
    for file in fds.file.iter().filter(|f| f.package() == "loyalty.v1") {
        for service in &file.service {
            for method in &service.method {
                let input = method.input_type().rsplit('.').next().unwrap_or_default();
                let has_store = fds
                    .file
                    .iter()
                    .flat_map(|f| &f.message_type)
                    .filter(|m| m.name() == input)
                    .any(|m| m.field.iter().any(|f| f.name() == "store_id"));
                if has_store {
                    carrying.push(format!("/loyalty.v1.{}/{}", service.name(), method.name()));
                }
            }
        }
    }
    carrying.sort();
    let mut listed: Vec<String> = requests.iter().map(|(m, _)| (*m).to_owned()).collect();
    listed.sort();
    assert_eq!(
        listed, carrying,
        "a method carrying a store is missing here"
    );
    for (method, body) in requests {
        let err = call_raw_as(&app, method, body, Some(&till))
            .await
            .expect_err("another store");
        assert_status(&err, Code::PermissionDenied, "PERMISSION_DENIED");
    }
    // Its own store, but another store's order: to the till that order does not exist.
    let admin = client(&app, "admin", Role::Admin, &[]).await;
    enroll_as(&app, &admin, "SCOPE-1").await;
    app.points
        .clone()
        .accrue(with_key(
            v1::AccrueRequest {
                store_id: "SA".into(),
                ..accrual(
                    "a-sa",
                    "SCOPE-1",
                    "o-sa",
                    vec![line("1", "S", 1, 10_000, 0)],
                )
            },
            &admin,
        ))
        .await
        .expect("accrue at SA");
    let err = app
        .points
        .clone()
        .redeem(with_key(
            v1::RedeemRequest {
                request_id: "r-sa".into(),
                member: member(),
                points: 10,
                order_id: "o-sa".into(),
                store_id: "SB".into(),
            },
            &till,
        ))
        .await
        .expect_err("another store's order");
    assert_status(&err, Code::NotFound, "ORDER_NOT_FOUND");
}

/// PostgreSQL: another session holds one member's row. Calls for that member answer
/// MEMBER_BUSY after `database.lock_timeout_ms`; calls for other members go on at their
/// usual pace, and health stays SERVING. (SQLite has one writer for the whole database:
/// there a member cannot be busy alone, and writers queue in the process.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_busy_member_fails_fast_and_the_others_keep_working() {
    let app = spawn_configured(|s| s.database.lock_timeout_ms = 300).await;
    if app.store.backend() != DbBackend::Postgres {
        return;
    }
    for i in 0..5 {
        app.enroll(&format!("BUSY-{i}")).await;
    }
    let other = sea_orm::Database::connect(&app.url).await.expect("connect");
    let holder = other.begin().await.expect("begin");
    holder
        .execute_unprepared("SELECT id FROM members WHERE card_number = 'BUSY-0' FOR UPDATE")
        .await
        .expect("hold the row");
    let until = Instant::now() + Duration::from_secs(4);
    let mut tasks = JoinSet::new();
    for caller in 0..28 {
        let card = if caller < 24 {
            "BUSY-0".to_owned()
        } else {
            format!("BUSY-{}", caller - 23)
        };
        let mut points = app.points.clone();
        tasks.spawn(async move {
            let (mut busy, mut ok, mut latencies) = (0, 0, Vec::new());
            let mut n = 0;
            while Instant::now() < until {
                n += 1;
                let started = Instant::now();
                let result = points
                    .adjust_points(v1::AdjustPointsRequest {
                        request_id: format!("{card}-{caller}-{n}"),
                        member: Some(by_card(&card)),
                        points: 1,
                        reason_code: v1::AdjustReason::Correction.into(),
                        note: String::new(),
                    })
                    .await;
                latencies.push(started.elapsed());
                match result {
                    Ok(_) => ok += 1,
                    Err(e) => {
                        assert_status(&e, Code::Aborted, "MEMBER_BUSY");
                        busy += 1;
                    }
                }
            }
            (card, busy, ok, latencies)
        });
    }
    let mut others = Vec::new();
    let (mut busy_total, mut busy_ok) = (0, 0);
    while let Some(done) = tasks.join_next().await {
        let (card, busy, ok, latencies) = done.expect("task");
        if card == "BUSY-0" {
            busy_total += busy;
            busy_ok += ok;
            assert!(latencies.iter().all(|l| *l < Duration::from_secs(2)));
        } else {
            others.extend(latencies);
        }
    }
    holder.rollback().await.expect("release");
    assert!(
        busy_total > 0 && busy_ok == 0,
        "busy {busy_total}, ok {busy_ok}"
    );
    others.sort();
    let p99 = others[others.len() * 99 / 100];
    eprintln!(
        "busy member: {busy_total} MEMBER_BUSY; others: {} calls, p99 {p99:?}",
        others.len()
    );
    assert!(others.len() > 100, "others were starved: {}", others.len());
    assert!(p99 < Duration::from_millis(250), "others' p99 {p99:?}");
    let mut health = tonic_health::pb::health_client::HealthClient::new(app.channel().await);
    let serving = health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("health")
        .into_inner();
    assert_eq!(serving.status, 1, "SERVING");
    // The busy member works again once released.
    app.points
        .clone()
        .adjust_points(v1::AdjustPointsRequest {
            request_id: "after".into(),
            member: Some(by_card("BUSY-0")),
            points: 1,
            reason_code: v1::AdjustReason::Correction.into(),
            note: String::new(),
        })
        .await
        .expect("free again");
    app.assert_ledger_balanced().await;
}

/// PostgreSQL: the database drops every connection of the service (a restart, a
/// failover, `pg_terminate_backend`). Callers see OK or UNAVAILABLE, never INTERNAL,
/// and calls succeed again within a second without restarting the service.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dropped_connections_answer_unavailable_and_the_service_recovers() {
    let app = spawn_configured(|_| {}).await;
    if app.store.backend() != DbBackend::Postgres {
        return;
    }
    for i in 0..4 {
        app.enroll(&format!("DROP-{i}")).await;
    }
    let admin = sea_orm::Database::connect(&app.url).await.expect("connect");
    let stop = Instant::now() + Duration::from_secs(3);
    let mut tasks = JoinSet::new();
    for caller in 0..8 {
        let mut points = app.points.clone();
        tasks.spawn(async move {
            let card = format!("DROP-{}", caller % 4);
            let mut codes = Vec::new();
            let mut n = 0;
            while Instant::now() < stop {
                n += 1;
                let r = if n % 2 == 0 {
                    points
                        .get_balance(v1::GetBalanceRequest {
                            member: Some(by_card(&card)),
                        })
                        .await
                        .map(|_| ())
                } else {
                    points
                        .accrue(accrual(
                            &format!("d-{caller}-{n}"),
                            &card,
                            &format!("o-{caller}-{n}"),
                            vec![line("1", "SKU", 1, 100, 0)],
                        ))
                        .await
                        .map(|_| ())
                };
                codes.push((Instant::now(), r.err().map(|e| e.code())));
            }
            codes
        });
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let killed_at = Instant::now();
    admin
        .execute_unprepared(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .await
        .expect("terminate");
    let mut failures_after_a_second = 0;
    while let Some(done) = tasks.join_next().await {
        for (at, code) in done.expect("task") {
            match code {
                Some(Code::Unavailable) if at > killed_at + Duration::from_secs(1) => {
                    failures_after_a_second += 1;
                }
                None | Some(Code::Unavailable) => {}
                Some(other) => panic!("a dropped connection gave {other:?}"),
            }
        }
    }
    assert_eq!(failures_after_a_second, 0, "still failing a second after");
    app.assert_ledger_balanced().await;
}

/// Rules that would grant more than one movement's bound (10^12 points) are refused with
/// OUT_OF_RANGE on the batched and the single path alike, never wrapped to a wrong
/// figure or dropped to 0, and the accrual workers keep serving afterwards.
#[tokio::test]
async fn accruals_past_the_points_bound_are_refused_and_the_workers_go_on() {
    let app = spawn_configured(|_| {}).await;
    app.enroll("BOUND-1").await;
    app.program()
        .await
        .update_program(v1::UpdateProgramRequest {
            update_mask: None,
            request_id: "rich".into(),
            program: Some(v1::Program {
                time_zone: "UTC".into(),
                base_points: 1_000_000,
                base_spend_minor: 1,
                tier_window_months: 12,
                ..Default::default()
            }),
        })
        .await
        .expect("a generous programme");
    let mut points = app.points.clone();
    for (request, unit) in [("big-1", 1_000_001), ("big-2", 10_000_000_000_000)] {
        let err = points
            .accrue(accrual(
                request,
                "BOUND-1",
                request,
                vec![line("1", "SKU", 1, unit, 0)],
            ))
            .await
            .expect_err("past 10^12 points");
        assert_status(&err, Code::OutOfRange, "POINTS_OUT_OF_RANGE");
        let err = points
            .quote_accrual(v1::QuoteAccrualRequest {
                member: Some(by_card("BOUND-1")),
                order_id: format!("q-{request}"),
                store_id: "store-1".into(),
                channel: v1::Channel::Pos.into(),
                currency: "EUR".into(),
                lines: vec![line("1", "SKU", 1, unit, 0)],
                ..Default::default()
            })
            .await
            .expect_err("the quote too");
        assert_status(&err, Code::OutOfRange, "POINTS_OUT_OF_RANGE");
    }
    // The workers survived: an ordinary accrual goes through.
    let ok = points
        .accrue(accrual(
            "small",
            "BOUND-1",
            "small",
            vec![line("1", "SKU", 1, 5, 0)],
        ))
        .await
        .expect("an accrual within bounds")
        .into_inner();
    assert_eq!(ok.points_earned, 5_000_000);
    app.assert_ledger_balanced().await;
}

/// Targeting windows are bounded: a century-plus look-back is refused at the door rather
/// than overflowing date arithmetic on every member's offer list.
#[tokio::test]
async fn offer_targeting_days_are_bounded_and_forged_offer_pages_are_harmless() {
    let app = spawn_configured(|_| {}).await;
    app.enroll("DAYS-1").await;
    for targeting in [
        v1::OfferTargeting {
            new_within_days: Some(i32::MAX),
            ..Default::default()
        },
        v1::OfferTargeting {
            lapsed_days: Some(36_501),
            ..Default::default()
        },
    ] {
        let err = app
            .offers()
            .await
            .create_offer(v1::CreateOfferRequest {
                request_id: "o".into(),
                offer: Some(v1::Offer {
                    code: "FOREVER".into(),
                    name: "forever".into(),
                    kind: v1::OfferKind::BonusPoints.into(),
                    value: 10,
                    active: true,
                    targeting: Some(targeting),
                    ..Default::default()
                }),
            })
            .await
            .expect_err("unbounded look-back");
        let fields = violated_fields(&err);
        assert!(
            fields == ["offer.targeting.new_within_days"]
                || fields == ["offer.targeting.lapsed_days"],
            "{fields:?}"
        );
    }
    use base64::Engine;
    let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(format!("member-offers:{}", usize::MAX));
    let page = app
        .offers()
        .await
        .list_member_offers(v1::ListMemberOffersRequest {
            member: Some(by_card("DAYS-1")),
            channel: v1::Channel::Pos.into(),
            page_size: 0,
            page_token: forged,
        })
        .await
        .expect("a page past the end is empty, not a crash")
        .into_inner();
    assert!(page.offers.is_empty() && page.next_page_token.is_empty());
}

/// A member at the balance bound takes no more bonus points, and that must not fail
/// another member's call: the referred member's first accrual goes through (the
/// referrer's share is skipped) and the referred member gets their own share.
#[tokio::test]
async fn a_referrer_at_the_balance_bound_does_not_block_the_referred_member() {
    let app = spawn_configured(|_| {}).await;
    app.program()
        .await
        .update_program(v1::UpdateProgramRequest {
            update_mask: None,
            request_id: "referrals".into(),
            program: Some(v1::Program {
                time_zone: "UTC".into(),
                base_points: 1,
                base_spend_minor: 100,
                tier_window_months: 12,
                referral_bonus_referrer: 1_000,
                referral_bonus_referred: 50,
                ..Default::default()
            }),
        })
        .await
        .expect("referral bonuses");
    let referrer = app.enroll("RICH-1").await;
    // Stand-in for years of earning: the referrer's balance sits at the bound.
    app.store
        .conn()
        .execute_unprepared(&format!(
            "UPDATE members SET points_available = {} WHERE id = '{}'",
            loyalty::domain::MAX_BALANCE,
            referrer.member_id
        ))
        .await
        .expect("a full balance");
    app.members
        .clone()
        .enroll_member(v1::EnrollMemberRequest {
            request_id: "friend".into(),
            card_number: "FRIEND-1".into(),
            name: "Friend".into(),
            referred_by_code: referrer.referral_code.clone(),
            ..Default::default()
        })
        .await
        .expect("referred member");
    let receipt = app
        .points
        .clone()
        .accrue(accrual(
            "f-1",
            "FRIEND-1",
            "f-1",
            vec![line("1", "SKU", 1, 1_000, 0)],
        ))
        .await
        .expect("the referred member's accrual is not the referrer's problem")
        .into_inner();
    assert_eq!(receipt.points_earned, 10);
    assert_eq!(
        app.balance("FRIEND-1").await.available,
        60,
        "10 earned + 50 referral"
    );
    assert_eq!(
        app.balance("RICH-1").await.available,
        loyalty::domain::MAX_BALANCE,
        "the referrer's share was skipped"
    );
}

/// Values no client should send are refused by name, not read as a default: an unknown
/// combine mode, a rule id in the offers' namespace, more than seven weekdays, a negative
/// spend band and a discount past the largest basket line.
#[tokio::test]
async fn unknown_enums_and_out_of_range_settings_are_refused_by_name() {
    let app = spawn_configured(|_| {}).await;
    let err = app
        .program()
        .await
        .update_program(v1::UpdateProgramRequest {
            update_mask: None,
            request_id: "odd".into(),
            program: Some(v1::Program {
                time_zone: "UTC".into(),
                base_points: 1,
                base_spend_minor: 100,
                tier_window_months: 12,
                rules: vec![v1::EarnRule {
                    rule_id: "offer:abc".into(),
                    effect: Some(v1::earn_rule::Effect::MultiplierPercent(200)),
                    combine: 99,
                    window: Some(v1::RuleWindow {
                        days_of_week: vec![1; 8],
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        })
        .await
        .expect_err("odd rule");
    let fields = violated_fields(&err);
    for field in [
        "program.rules[0].combine",
        "program.rules[0].rule_id",
        "program.rules[0].window.days_of_week",
    ] {
        assert!(fields.iter().any(|f| f == field), "{field} in {fields:?}");
    }
    let err = app
        .offers()
        .await
        .create_offer(v1::CreateOfferRequest {
            request_id: "odd-offer".into(),
            offer: Some(v1::Offer {
                code: "ODD".into(),
                name: "odd".into(),
                kind: v1::OfferKind::FixedDiscount.into(),
                value: i64::MAX,
                active: true,
                targeting: Some(v1::OfferTargeting {
                    min_spend_minor: Some(-1),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        })
        .await
        .expect_err("odd offer");
    assert_eq!(
        violated_fields(&err),
        vec!["offer.targeting.min_spend_minor", "offer.value"]
    );
}
