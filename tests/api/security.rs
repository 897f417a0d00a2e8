//! Who may call what, limits, audit, personal data and TLS, through the real server.
use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use loyalty::{
    auth::{self, Role},
    grpc::pb::loyalty::v1,
};
use tokio::task::JoinSet;
use tonic::{Code, Request, transport::Channel};

use crate::helpers::{
    accrual, all_methods, assert_status, by_card, client, line, spawn_configured, with_key,
};

/// Calls `path` with an empty message (valid protobuf for every request type).
async fn call_empty(channel: Channel, path: &str, key: Option<&str>) -> Code {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let mut request = Request::new(());
    if let Some(key) = key {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {key}").parse().expect("header"),
        );
    }
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    let path = http::uri::PathAndQuery::try_from(path.to_owned()).expect("path");
    // Server streaming works for every method: the status arrives with the headers.
    match grpc.server_streaming(request, path, codec).await {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

#[tokio::test]
async fn every_method_with_every_role_and_no_key_follows_the_policy_table() {
    let app = spawn_configured(|s| s.security.require_auth = true).await;
    let methods = all_methods();
    assert!(methods.len() >= 30, "{methods:?}");
    for m in &methods {
        assert!(
            auth::POLICY.iter().any(|(p, _)| p == m),
            "{m} is missing from the policy table"
        );
    }
    let mut keys = Vec::new();
    for role in Role::ALL {
        keys.push((role, client(&app, role.as_str(), role, &["S1"]).await));
    }
    let channel = app.channel().await;
    for method in &methods {
        assert_eq!(
            call_empty(channel.clone(), method, None).await,
            Code::Unauthenticated,
            "{method} without a key"
        );
        assert_eq!(
            call_empty(channel.clone(), method, Some("lk_not-a-key")).await,
            Code::Unauthenticated,
            "{method} with a bad key"
        );
        for (role, key) in &keys {
            let code = call_empty(channel.clone(), method, Some(key)).await;
            if auth::allowed(method, *role) {
                assert!(
                    !matches!(code, Code::PermissionDenied | Code::Unauthenticated),
                    "{method} as {role}: {code:?}"
                );
            } else {
                assert_eq!(code, Code::PermissionDenied, "{method} as {role}");
            }
        }
    }
}

#[tokio::test]
async fn pos_clients_act_for_their_stores_and_holds_belong_to_their_maker() {
    let app = spawn_configured(|s| s.security.require_auth = true).await;
    let admin = client(&app, "admin", Role::Admin, &[]).await;
    let till1 = client(&app, "till S1", Role::Pos, &["S1"]).await;
    let till2 = client(&app, "till S2", Role::Pos, &["S2"]).await;
    let crm = client(&app, "crm", Role::Crm, &[]).await;
    let mut members = app.members.clone();
    members
        .enroll_member(with_key(
            v1::EnrollMemberRequest {
                request_id: "e".into(),
                card_number: "CARD-0001".into(),
                name: "Ada".into(),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .expect("enrol");
    let mut points = app.points.clone();
    let in_store = |store: &str, id: &str| v1::AccrueRequest {
        store_id: store.into(),
        ..accrual(id, "CARD-0001", id, vec![line("1", "SKU", 1, 10_000, 0)])
    };
    points
        .accrue(with_key(in_store("S1", "a-1"), &till1))
        .await
        .expect("own store");
    let err = points
        .accrue(with_key(in_store("S2", "a-2"), &till1))
        .await
        .expect_err("other store");
    assert_status(&err, Code::PermissionDenied, "PERMISSION_DENIED");
    // Another store's order does not exist for this till.
    let err = points
        .return_items(with_key(
            v1::ReturnItemsRequest {
                request_id: "r".into(),
                order_id: "a-1".into(),
                return_id: "r".into(),
                lines: vec![v1::ReturnLine {
                    line_id: "1".into(),
                    quantity: 1,
                }],
            },
            &till2,
        ))
        .await
        .expect_err("other store's order");
    assert_status(&err, Code::NotFound, "ORDER_NOT_FOUND");

    let hold = points
        .create_hold(with_key(
            v1::CreateHoldRequest {
                request_id: "h".into(),
                member: Some(by_card("CARD-0001")),
                points: 10,
                store_id: "S1".into(),
                ..Default::default()
            },
            &till1,
        ))
        .await
        .expect("hold")
        .into_inner()
        .hold
        .expect("hold");
    let err = points
        .void_hold(with_key(
            v1::VoidHoldRequest {
                request_id: "v".into(),
                hold_id: hold.hold_id.clone(),
            },
            &till2,
        ))
        .await
        .expect_err("someone else's hold");
    assert_status(&err, Code::NotFound, "HOLD_NOT_FOUND");
    points
        .void_hold(with_key(
            v1::VoidHoldRequest {
                request_id: "v2".into(),
                hold_id: hold.hold_id,
            },
            &till1,
        ))
        .await
        .expect("own hold");

    let adjust = |reason: v1::AdjustReason, id: &str| v1::AdjustPointsRequest {
        request_id: id.into(),
        member: Some(by_card("CARD-0001")),
        points: 5,
        reason_code: reason.into(),
        note: String::new(),
    };
    points
        .adjust_points(with_key(adjust(v1::AdjustReason::Goodwill, "g"), &crm))
        .await
        .expect("goodwill");
    let err = points
        .adjust_points(with_key(adjust(v1::AdjustReason::Migration, "m"), &crm))
        .await
        .expect_err("migration");
    assert_status(&err, Code::PermissionDenied, "PERMISSION_DENIED");
    app.assert_ledger_balanced().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_from_one_client_is_limited_without_slowing_another() {
    let app = spawn_configured(|s| {
        s.security.require_auth = true;
        s.security.rate_pos = 5;
        s.security.burst_seconds = 1;
    })
    .await;
    let noisy = client(&app, "noisy", Role::Pos, &["S1"]).await;
    let quiet = client(&app, "quiet", Role::Pos, &["S1"]).await;
    let mut tasks = JoinSet::new();
    for _ in 0..40 {
        let mut programme = app.program().await;
        let key = noisy.clone();
        tasks.spawn(async move {
            programme
                .list_tiers(with_key(v1::ListTiersRequest {}, &key))
                .await
                .err()
        });
    }
    let mut limited = 0;
    while let Some(r) = tasks.join_next().await {
        if let Some(status) = r.expect("task") {
            assert_eq!(status.code(), Code::ResourceExhausted);
            let retry = tonic_types::StatusExt::get_details_retry_info(&status).expect("RetryInfo");
            assert!(
                retry
                    .retry_delay
                    .is_some_and(|d| d > Duration::ZERO && d <= Duration::from_secs(1))
            );
            limited += 1;
        }
    }
    assert!(limited >= 30, "only {limited} of 40 limited");
    // The other client's calls go through at once.
    let mut programme = app.program().await;
    let started = Instant::now();
    for _ in 0..4 {
        programme
            .list_tiers(with_key(v1::ListTiersRequest {}, &quiet))
            .await
            .expect("quiet client");
    }
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn admin_and_crm_mutations_and_denied_calls_are_audited() {
    let app = spawn_configured(|s| s.security.require_auth = true).await;
    let admin = client(&app, "head office", Role::Admin, &[]).await;
    let till = client(&app, "till", Role::Pos, &["S1"]).await;
    app.members
        .clone()
        .enroll_member(with_key(
            v1::EnrollMemberRequest {
                request_id: "enrol-1".into(),
                card_number: "CARD-0001".into(),
                name: "Ada".into(),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .expect("enrol");
    let err = app
        .program()
        .await
        .update_program(with_key(v1::UpdateProgramRequest::default(), &till))
        .await
        .expect_err("denied");
    assert_eq!(err.code(), Code::PermissionDenied);
    let mut audit = v1::audit_service_client::AuditServiceClient::new(app.channel().await);
    let err = audit
        .list_audit_events(with_key(v1::ListAuditEventsRequest::default(), &till))
        .await
        .expect_err("admins only");
    assert_eq!(err.code(), Code::PermissionDenied);
    let events = audit
        .list_audit_events(with_key(v1::ListAuditEventsRequest::default(), &admin))
        .await
        .expect("audit log")
        .into_inner()
        .events;
    let enrol = events
        .iter()
        .find(|e| e.method.ends_with("/EnrollMember"))
        .expect("enrolment audited");
    assert_eq!(
        (
            enrol.client_name.as_str(),
            enrol.role.as_str(),
            enrol.outcome.as_str()
        ),
        ("head office", "admin", "Ok")
    );
    assert_eq!(
        (enrol.target.as_str(), enrol.request_id.as_str()),
        ("card:CARD-0001", "enrol-1")
    );
    assert!(events.iter().any(|e| e.method.ends_with("/UpdateProgram")
        && e.outcome == "PermissionDenied"
        && e.client_name == "till"));
    assert!(
        events
            .iter()
            .any(|e| e.method.ends_with("/ListAuditEvents") && e.outcome == "PermissionDenied")
    );
}

#[tokio::test]
async fn export_returns_everything_and_erasure_keeps_the_books() {
    let app = spawn_configured(|_| {}).await;
    let mut members = app.members.clone();
    let member = members
        .enroll_member(v1::EnrollMemberRequest {
            request_id: "e".into(),
            card_number: "CARD-0001".into(),
            name: "Ada Lovelace".into(),
            email: "ada@example.com".into(),
            phone: "+441234567890".into(),
            ..Default::default()
        })
        .await
        .expect("enrol")
        .into_inner()
        .member
        .expect("member");
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
        .create_hold(v1::CreateHoldRequest {
            request_id: "h".into(),
            member: Some(by_card("CARD-0001")),
            points: 30,
            ..Default::default()
        })
        .await
        .expect("hold");
    let mut feedback = app.feedback().await;
    feedback
        .record_feedback(v1::RecordFeedbackRequest {
            request_id: "f".into(),
            member: Some(by_card("CARD-0001")),
            kind: v1::FeedbackKind::Csat.into(),
            score: 2,
            comment: "Ada here, call me on +441234567890".into(),
            ..Default::default()
        })
        .await
        .expect("feedback");
    feedback
        .record_complaint(v1::RecordComplaintRequest {
            request_id: "k".into(),
            member: Some(by_card("CARD-0001")),
            topic: v1::Topic::Staff.into(),
            severity: v1::Severity::Low.into(),
            note: "Ada Lovelace was upset".into(),
            ..Default::default()
        })
        .await
        .expect("complaint");
    let export = members
        .export_member(v1::ExportMemberRequest {
            member: Some(by_card("CARD-0001")),
        })
        .await
        .expect("export")
        .into_inner();
    assert_eq!(export.feedback.len(), 1);
    assert_eq!(export.feedback[0].score, 2);
    assert_eq!(export.complaints.len(), 1);
    assert_eq!(export.complaints[0].note, "Ada Lovelace was upset");
    assert_eq!(
        export.member.as_ref().map(|m| m.email.as_str()),
        Some("ada@example.com")
    );
    assert_eq!(export.ledger.len(), 2);
    assert_eq!(export.holds.len(), 1);
    assert_eq!(
        export.balance.map(|b| (b.available, b.held)),
        Some((70, 30))
    );

    members
        .erase_member(v1::EraseMemberRequest {
            request_id: "erase".into(),
            member: Some(by_card("CARD-0001")),
        })
        .await
        .expect("erase");
    let err = members
        .get_member(v1::GetMemberRequest {
            member: Some(by_card("CARD-0001")),
        })
        .await
        .expect_err("old card");
    assert_eq!(err.code(), Code::NotFound);
    let erased = members
        .get_member(v1::GetMemberRequest {
            member: Some(crate::helpers::by_id(&member.member_id)),
        })
        .await
        .expect("by id")
        .into_inner()
        .member
        .expect("member");
    assert!(erased.erase_time.is_some());
    assert!(
        erased.name.is_empty()
            && erased.email.is_empty()
            && erased.phone.is_empty()
            && erased.card_number.is_empty()
    );
    let balance = points
        .get_balance(v1::GetBalanceRequest {
            member: Some(crate::helpers::by_id(&member.member_id)),
        })
        .await
        .expect("balance")
        .into_inner()
        .balance
        .expect("balance");
    assert_eq!(
        (balance.available, balance.held),
        (70, 30),
        "the pseudonymous books stay"
    );
    // Free text about the member goes with the erasure; the scores stay.
    let after = members
        .export_member(v1::ExportMemberRequest {
            member: Some(crate::helpers::by_id(&member.member_id)),
        })
        .await
        .expect("export after erasure")
        .into_inner();
    assert_eq!(after.feedback[0].comment, "");
    assert_eq!(after.feedback[0].score, 2);
    assert_eq!(after.complaints[0].note, "");
    // A CRM still holding the profile cannot write it back.
    let err = members
        .update_member(v1::UpdateMemberRequest {
            request_id: "write-back".into(),
            member: Some(v1::Member {
                member_id: member.member_id.clone(),
                name: "Ada".into(),
                email: "ada@example.com".into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["name".into(), "email".into()],
            }),
        })
        .await
        .expect_err("erased members cannot be updated");
    crate::helpers::assert_status(&err, tonic::Code::FailedPrecondition, "MEMBER_ERASED");
    // Nor can new feedback store text about them.
    let err = feedback
        .record_feedback(v1::RecordFeedbackRequest {
            request_id: "f-after".into(),
            member: Some(crate::helpers::by_id(&member.member_id)),
            kind: v1::FeedbackKind::Csat.into(),
            score: 5,
            comment: "hi from Eve".into(),
            ..Default::default()
        })
        .await
        .expect_err("feedback about an erased member");
    crate::helpers::assert_status(&err, tonic::Code::FailedPrecondition, "MEMBER_ERASED");
    // A second erasure (another request id) keeps the first one's time.
    let again = members
        .erase_member(v1::EraseMemberRequest {
            request_id: "erase-again".into(),
            member: Some(crate::helpers::by_id(&member.member_id)),
        })
        .await
        .expect("erase again")
        .into_inner();
    assert_eq!(again.erase_time, erased.erase_time);
    app.assert_ledger_balanced().await;
}

#[tokio::test]
async fn oversized_requests_are_refused() {
    let app = spawn_configured(|s| s.server.max_request_bytes = 64 * 1024).await;
    let err = app
        .members
        .clone()
        .enroll_member(v1::EnrollMemberRequest {
            request_id: "e".into(),
            card_number: "CARD-0001".into(),
            name: "x".repeat(100_000),
            ..Default::default()
        })
        .await
        .expect_err("too large");
    assert_status(&err, Code::ResourceExhausted, "REQUEST_TOO_LARGE");
}

#[tokio::test]
async fn tls_and_mutual_tls() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};

    let dir = tempfile::tempdir().expect("dir");
    let ca_key = KeyPair::generate().expect("key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
    let issue = |name: &str| {
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(vec![name.to_owned()])
            .expect("params")
            .signed_by(&key, &issuer)
            .expect("cert");
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = issue("localhost");
    let (client_cert, client_key) = issue("till-7");
    for (name, pem) in [
        ("ca.pem", ca.pem()),
        ("server.pem", server_cert),
        ("server.key", server_key),
    ] {
        std::fs::write(dir.path().join(name), pem).expect("write");
    }
    let app = spawn_configured(|s| {
        s.security.tls_cert_file = Some(dir.path().join("server.pem"));
        s.security.tls_key_file = Some(dir.path().join("server.key"));
        s.security.tls_client_ca_file = Some(dir.path().join("ca.pem"));
    })
    .await;
    let connect = |identity: Option<Identity>| {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca.pem()))
            .domain_name("localhost");
        if let Some(identity) = identity {
            tls = tls.identity(identity);
        }
        let endpoint = Channel::from_shared(format!("https://localhost:{}", app.addr.port()))
            .expect("uri")
            .tls_config(tls)
            .expect("tls");
        async move {
            let channel = endpoint.connect().await.ok()?;
            tonic_health::pb::health_client::HealthClient::new(channel)
                .check(tonic_health::pb::HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .ok()
        }
    };
    assert!(
        connect(None).await.is_none(),
        "mTLS: no client certificate, no call"
    );
    assert!(
        connect(Some(Identity::from_pem(client_cert, client_key)))
            .await
            .is_some(),
        "a client certificate from the CA is let in"
    );
    // Plain text is refused on a TLS port.
    let plain = Channel::from_shared(format!("http://127.0.0.1:{}", app.addr.port()))
        .expect("uri")
        .connect()
        .await;
    if let Ok(channel) = plain {
        let r = tonic_health::pb::health_client::HealthClient::new(channel)
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await;
        assert!(r.is_err());
    }
}

/// A full scenario against the binary with debug logs: no name, e-mail, phone or API key
/// may appear in what it logs.
#[test]
fn logs_never_contain_personal_data_or_keys() {
    let dir = tempfile::tempdir().expect("dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let binary = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_loyalty"));
        c.current_dir(dir.path())
            .env("RUST_LOG", "debug")
            .env("LOYALTY__LOG__FORMAT", "json")
            .env("LOYALTY__SERVER__LISTEN_ADDR", format!("127.0.0.1:{port}"));
        c
    };
    let created = binary()
        .args(["clients", "create", "--name", "crm", "--role", "admin"])
        .output()
        .expect("create client");
    let key = String::from_utf8_lossy(&created.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("api_key: "))
        .expect("key")
        .to_owned();
    let child = binary()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let started = Instant::now();
        let channel = loop {
            if let Ok(c) = Channel::from_shared(format!("http://127.0.0.1:{port}"))
                .expect("uri")
                .connect()
                .await
            {
                break c;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "server did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let mut members = v1::member_service_client::MemberServiceClient::new(channel.clone());
        let mut points = v1::points_service_client::PointsServiceClient::new(channel);
        let member = members
            .enroll_member(with_key(
                v1::EnrollMemberRequest {
                    request_id: "e-1".into(),
                    card_number: "CARD-7777".into(),
                    name: "Zebulon Quartermaine".into(),
                    email: "zebulon@example.org".into(),
                    phone: "+4915199999999".into(),
                    ..Default::default()
                },
                &key,
            ))
            .await
            .expect("enrol")
            .into_inner()
            .member
            .expect("member");
        members
            .update_member(with_key(
                v1::UpdateMemberRequest {
                    request_id: "u-1".into(),
                    member: Some(v1::Member {
                        member_id: member.member_id.clone(),
                        email: "zeb.q@example.org".into(),
                        ..Default::default()
                    }),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["email".into()],
                    }),
                },
                &key,
            ))
            .await
            .expect("update");
        points
            .accrue(with_key(
                accrual(
                    "a-1",
                    "CARD-7777",
                    "o-1",
                    vec![line("1", "SKU", 1, 1_000, 0)],
                ),
                &key,
            ))
            .await
            .expect("accrue");
        let _ = members
            .get_member(with_key(
                v1::GetMemberRequest {
                    member: Some(by_card("NOPE-0000")),
                },
                &key,
            ))
            .await;
        members
            .export_member(with_key(
                v1::ExportMemberRequest {
                    member: Some(by_card("CARD-7777")),
                },
                &key,
            ))
            .await
            .expect("export");
        members
            .erase_member(with_key(
                v1::EraseMemberRequest {
                    request_id: "x-1".into(),
                    member: Some(by_card("CARD-7777")),
                },
                &key,
            ))
            .await
            .expect("erase");
    });
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let output = child.wait_with_output().expect("wait");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        log.contains("points accrued"),
        "the scenario ran and logged:\n{log}"
    );
    for secret in [
        "Zebulon",
        "Quartermaine",
        "zebulon@example.org",
        "zeb.q@example.org",
        "+4915199999999",
        "4915199999999",
        key.as_str(),
    ] {
        assert!(!log.contains(secret), "{secret} appears in the log");
    }
}
