//! Several programmes in one deployment: creating and reading them, acting in one by
//! header, and each running with its own settings (currency, expiry, jobs).
use loyalty::{auth::Role, grpc::pb::loyalty::v1};
use tonic::{Code, Request};

use crate::helpers::{
    TestApp, accrual, assert_status, by_card, client, line, spawn_app, spawn_configured,
    test_settings, violated_fields, with_key,
};

/// `message` acting in `program` (authentication off: the caller is a platform admin).
fn in_program<T>(program: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("x-loyalty-program", program.parse().expect("header"));
    request
}

/// Available points of the member with `card` in `program`.
async fn available_in(app: &TestApp, program: &str, card: &str) -> i64 {
    app.points
        .clone()
        .get_balance(in_program(
            program,
            v1::GetBalanceRequest {
                member: Some(by_card(card)),
            },
        ))
        .await
        .expect("balance")
        .into_inner()
        .balance
        .expect("balance")
        .available
}

async fn create_program(
    app: &TestApp,
    id: &str,
    settings: v1::ProgramSettings,
) -> Result<v1::ProgramInfo, tonic::Status> {
    app.program()
        .await
        .create_program(v1::CreateProgramRequest {
            request_id: format!("create-{id}"),
            program_id: id.into(),
            display_name: format!("Programme {id}"),
            settings: Some(settings),
        })
        .await
        .map(|r| r.into_inner().program.expect("program"))
}

#[tokio::test]
async fn a_programme_is_created_with_the_configured_defaults_and_read_back() {
    let app = spawn_app().await;
    let requested = v1::ProgramSettings {
        currency: Some("GBP".into()),
        pending_days: Some(14),
        ..Default::default()
    };
    let created = create_program(&app, "fashion-uk", requested.clone())
        .await
        .expect("create");
    let settings = created.settings.expect("settings");
    assert_eq!(settings.currency.as_deref(), Some("GBP"));
    assert_eq!(settings.pending_days, Some(14));
    // Left out: the configured default.
    assert_eq!(settings.goodwill_max_per_grant, Some(500));
    assert_eq!(settings.expiry_policy, v1::ExpiryPolicy::Never as i32);

    // A retry answers the same; another request for the same id is ALREADY_EXISTS.
    let again = create_program(&app, "fashion-uk", requested)
        .await
        .expect("retry");
    assert_eq!(again.create_time, created.create_time);
    let taken = app
        .program()
        .await
        .create_program(v1::CreateProgramRequest {
            request_id: "another".into(),
            program_id: "fashion-uk".into(),
            display_name: "Again".into(),
            settings: None,
        })
        .await
        .expect_err("taken");
    assert_status(&taken, Code::AlreadyExists, "PROGRAM_EXISTS");

    let listed = app
        .program()
        .await
        .list_programs(v1::ListProgramsRequest {})
        .await
        .expect("list")
        .into_inner()
        .programs;
    let ids: Vec<&str> = listed.iter().map(|p| p.program_id.as_str()).collect();
    assert_eq!(ids, ["default", "fashion-uk"]);
    let read = app
        .program()
        .await
        .get_program(v1::GetProgramRequest {
            program_id: "fashion-uk".into(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(
        read.info.expect("info").display_name,
        "Programme fashion-uk"
    );
    assert_eq!(read.program.expect("rules").version, 0);

    // Bad ids and settings are the caller's mistake, each field named.
    let bad = app
        .program()
        .await
        .create_program(v1::CreateProgramRequest {
            request_id: "bad".into(),
            program_id: "Not Valid!".into(),
            display_name: String::new(),
            settings: Some(v1::ProgramSettings {
                pending_days: Some(-1),
                ..Default::default()
            }),
        })
        .await
        .expect_err("invalid");
    assert_eq!(
        violated_fields(&bad),
        ["display_name", "program_id", "settings.pending_days"]
    );
    let bad = create_program(
        &app,
        "bad-currency",
        v1::ProgramSettings {
            currency: Some("EURO".into()),
            ..Default::default()
        },
    )
    .await
    .expect_err("invalid currency");
    assert_eq!(violated_fields(&bad), ["settings.currency"]);
    // A hold may be kept a year at most: an expiry past what a timestamp holds is
    // refused when the programme is created, not when a hold overflows.
    let bad = create_program(
        &app,
        "long-holds",
        v1::ProgramSettings {
            hold_max_ttl_seconds: Some(9_223_372_036_854_776),
            ..Default::default()
        },
    )
    .await
    .expect_err("hold time-to-live out of range");
    assert_eq!(violated_fields(&bad), ["settings.hold_max_ttl_seconds"]);
    let missing = app
        .program()
        .await
        .get_program(in_program("no-such", v1::GetProgramRequest::default()))
        .await
        .expect_err("unknown programme");
    assert_status(&missing, Code::NotFound, "PROGRAM_NOT_FOUND");
}

#[tokio::test]
async fn each_programme_runs_with_its_own_currency_expiry_and_jobs() {
    // Events kept: the moved clock would otherwise let the jobs prune them.
    let app = spawn_configured(|s| s.events.retention_days = 0).await;
    create_program(
        &app,
        "expiring",
        v1::ProgramSettings {
            currency: Some("GBP".into()),
            expiry_policy: v1::ExpiryPolicy::MonthsAfterEarning.into(),
            expiry_months: Some(1),
            ..Default::default()
        },
    )
    .await
    .expect("create");
    let mut members = app.members.clone();
    let mut points = app.points.clone();
    for program in ["default", "expiring"] {
        members
            .enroll_member(in_program(
                program,
                v1::EnrollMemberRequest {
                    request_id: format!("enrol-{program}"),
                    card_number: "CARD-0001".into(),
                    name: "Same card, two programmes".into(),
                    ..Default::default()
                },
            ))
            .await
            .expect("enrol");
    }
    // Each programme prices in its own currency.
    let eur = accrual(
        "a-1",
        "CARD-0001",
        "O-1",
        vec![line("1", "SKU", 1, 1_000, 0)],
    );
    let mut gbp = eur.clone();
    gbp.currency = "GBP".into();
    let err = points
        .accrue(in_program("expiring", eur.clone()))
        .await
        .expect_err("EUR in a GBP programme");
    assert_eq!(violated_fields(&err), ["currency"]);
    points
        .accrue(in_program("expiring", gbp))
        .await
        .expect("GBP");
    points
        .accrue(in_program("default", eur))
        .await
        .expect("EUR with the same order id in the other programme");

    // Two months on, the jobs expire the points of the programme whose points expire.
    app.store.clock().advance(chrono::Duration::days(62));
    let mut settings = test_settings(&app.url);
    settings.events.retention_days = 0;
    let reports = loyalty::startup::run_jobs_once(&app.store, &settings)
        .await
        .expect("jobs");
    assert_eq!(reports.len(), 2);
    assert_eq!(available_in(&app, "expiring", "CARD-0001").await, 0);
    assert_eq!(available_in(&app, "default", "CARD-0001").await, 10);
    app.assert_ledger_balanced().await;
}

#[tokio::test]
async fn only_a_platform_client_acts_in_another_programme() {
    let app = spawn_configured(|s| s.security.require_auth = true).await;
    let platform = client(&app, "platform", Role::Platform, &[]).await;
    let admin = client(&app, "admin", Role::Admin, &[]).await;
    let mut programs = app.program().await;
    let mut create = with_key(
        v1::CreateProgramRequest {
            request_id: "c".into(),
            program_id: "brand-b".into(),
            display_name: "Brand B".into(),
            settings: None,
        },
        &admin,
    );
    let denied = programs
        .create_program(create)
        .await
        .expect_err("admins do not create programmes");
    assert_eq!(denied.code(), Code::PermissionDenied);
    create = with_key(
        v1::CreateProgramRequest {
            request_id: "c".into(),
            program_id: "brand-b".into(),
            display_name: "Brand B".into(),
            settings: None,
        },
        &platform,
    );
    programs.create_program(create).await.expect("platform");

    let named = |key: &str, program: &str| {
        let mut r = with_key(v1::ListTiersRequest {}, key);
        r.metadata_mut()
            .insert("x-loyalty-program", program.parse().expect("header"));
        r
    };
    let err = programs
        .list_tiers(named(&admin, "brand-b"))
        .await
        .expect_err("an admin of default in brand-b");
    assert_status(&err, Code::PermissionDenied, "PROGRAM_DENIED");
    programs
        .list_tiers(named(&admin, "default"))
        .await
        .expect("its own programme, named");
    programs
        .list_tiers(named(&platform, "brand-b"))
        .await
        .expect("platform in brand-b");
    let err = programs
        .list_tiers(named(&platform, "Brand B"))
        .await
        .expect_err("malformed header");
    assert_status(&err, Code::InvalidArgument, "INVALID_PROGRAM");
    // An admin lists its own programme only.
    let own = programs
        .list_programs(with_key(v1::ListProgramsRequest {}, &admin))
        .await
        .expect("list")
        .into_inner()
        .programs;
    assert_eq!(own.len(), 1);
    assert_eq!(own[0].program_id, "default");
    let err = programs
        .get_program(with_key(
            v1::GetProgramRequest {
                program_id: "brand-b".into(),
            },
            &admin,
        ))
        .await
        .expect_err("another programme by id");
    assert_eq!(err.code(), Code::PermissionDenied);
}

/// Accruals of several programmes share batches: concurrent calls with the same cards
/// and order ids in two programmes each land in their own programme, and a member id of
/// one programme named in the other is unknown there, batched or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_accruals_of_two_programmes_each_land_in_their_own() {
    let app = spawn_app().await;
    create_program(
        &app,
        "brand-b",
        v1::ProgramSettings {
            base_points: Some(2),
            ..Default::default()
        },
    )
    .await
    .expect("create");
    let mut b_member = String::new();
    for program in ["default", "brand-b"] {
        for i in 0..5 {
            let member = app
                .members
                .clone()
                .enroll_member(in_program(
                    program,
                    v1::EnrollMemberRequest {
                        request_id: format!("enrol-{program}-{i}"),
                        card_number: format!("CARD-000{i}"),
                        name: "Member".into(),
                        ..Default::default()
                    },
                ))
                .await
                .expect("enrol")
                .into_inner()
                .member
                .expect("member");
            b_member = member.member_id;
        }
    }
    let mut calls = tokio::task::JoinSet::new();
    for round in 0..4 {
        for i in 0..5 {
            for program in ["default", "brand-b"] {
                let mut points = app.points.clone();
                calls.spawn(async move {
                    points
                        .accrue(in_program(
                            program,
                            accrual(
                                &format!("acc-{round}-{i}"),
                                &format!("CARD-000{i}"),
                                &format!("O-{round}-{i}"),
                                vec![line("1", "SKU", 1, 1_000, 0)],
                            ),
                        ))
                        .await
                        .map(|r| r.into_inner().points_earned)
                });
            }
        }
    }
    // B's member by id, in the default programme, among them.
    let mut points = app.points.clone();
    let stranger = v1::AccrueRequest {
        member: Some(crate::helpers::by_id(&b_member)),
        ..accrual(
            "acc-x",
            "unused",
            "O-X",
            vec![line("1", "SKU", 1, 1_000, 0)],
        )
    };
    calls.spawn(async move {
        points
            .accrue(in_program("default", stranger))
            .await
            .map(|r| r.into_inner().points_earned)
    });
    let mut earned = Vec::new();
    let mut refused = Vec::new();
    while let Some(result) = calls.join_next().await {
        match result.expect("task") {
            Ok(points) => earned.push(points),
            Err(status) => refused.push(status.code()),
        }
    }
    assert_eq!(refused, [Code::NotFound]);
    earned.sort_unstable();
    assert_eq!(earned, [vec![10; 20], vec![20; 20]].concat());
    for i in 0..5 {
        let card = format!("CARD-000{i}");
        assert_eq!(available_in(&app, "default", &card).await, 40);
        assert_eq!(available_in(&app, "brand-b", &card).await, 80);
    }
    app.assert_ledger_balanced().await;
}
