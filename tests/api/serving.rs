use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use loyalty::grpc::pb::loyalty::v1;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

use crate::helpers::{accrual, by_card, line, spawn_app, spawn_configured};

async fn health(channel: Channel, service: &str) -> ServingStatus {
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .expect("health check")
        .into_inner()
        .status()
}

#[tokio::test]
async fn health_reports_serving_for_the_server_and_each_service() {
    let app = spawn_app().await;
    for service in ["", "loyalty.v1.MemberService", "loyalty.v1.PointsService"] {
        assert_eq!(
            health(app.channel().await, service).await,
            ServingStatus::Serving,
            "{service:?}"
        );
    }
}

#[tokio::test]
async fn reflection_v1_lists_every_service() {
    let app = spawn_app().await;
    let mut client = ServerReflectionClient::new(app.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection")
        .into_inner();
    let response = stream.next().await.expect("one response").expect("ok");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection response {response:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "loyalty.v1.MemberService",
        "loyalty.v1.PointsService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_reports_not_serving_and_lets_in_flight_calls_finish() {
    let mut app = spawn_app().await;
    app.enroll("CARD-0001").await;
    let mut watch = HealthClient::new(app.channel().await)
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("watch")
        .into_inner();
    assert_eq!(
        watch.next().await.expect("status").expect("ok").status(),
        ServingStatus::Serving
    );

    // Hold the member's row (and on SQLite the write lock) so that an accrual stays in flight.
    let blocker = app.store.begin_write().await.expect("blocking transaction");
    sea_orm::ConnectionTrait::execute_unprepared(
        &*blocker,
        "UPDATE members SET points_available = points_available WHERE card_number = 'CARD-0001'",
    )
    .await
    .expect("lock row");
    let mut points = app.points.clone();
    let in_flight = tokio::spawn(async move {
        points
            .accrue(accrual(
                "a-1",
                "CARD-0001",
                "order-1",
                vec![line("1", "SKU", 1, 700, 0)],
            ))
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !in_flight.is_finished(),
        "the accrual must be waiting for the lock"
    );

    app.begin_shutdown();
    let status = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("health changes promptly")
        .expect("status")
        .expect("ok")
        .status();
    assert_eq!(status, ServingStatus::NotServing);
    drop(watch);

    blocker.commit().await.expect("release");
    let receipt = in_flight
        .await
        .expect("task")
        .expect("the in-flight accrual completes")
        .into_inner();
    assert_eq!(receipt.points_earned, 7);
    tokio::time::timeout(Duration::from_secs(10), app.wait_stopped())
        .await
        .expect("server stops after draining")
        .expect("clean stop");
    app.assert_ledger_balanced().await;
}

/// The binary as an operator runs it: no configuration, an empty directory; an API key
/// made with `loyalty clients create`.
#[test]
fn the_binary_serves_with_zero_setup_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let binary = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_loyalty"));
        c.current_dir(dir.path())
            .env_remove("LOYALTY_CONFIG")
            .env_remove("RUST_LOG")
            .env("LOYALTY__SERVER__LISTEN_ADDR", format!("127.0.0.1:{port}"));
        c
    };
    let created = binary()
        .args([
            "clients",
            "create",
            "--name",
            "smoke test",
            "--role",
            "admin",
        ])
        .output()
        .expect("loyalty clients create");
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let stdout = String::from_utf8_lossy(&created.stdout).into_owned();
    // Only the result is on stdout (logs go to stderr), so `$(loyalty clients create …)`
    // captures the key and nothing else.
    assert_eq!(
        stdout
            .lines()
            .map(|l| l.split(':').next().unwrap_or(""))
            .collect::<Vec<_>>(),
        vec!["client_id", "program", "api_key"],
        "{stdout}"
    );
    let key = stdout
        .lines()
        .find_map(|l| l.strip_prefix("api_key: "))
        .expect("the key is printed")
        .to_owned();
    let child = binary()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start loyalty");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let started = Instant::now();
    let outcome = rt.block_on(async {
        loop {
            if let Ok(channel) = Channel::from_shared(format!("http://127.0.0.1:{port}"))
                .expect("uri")
                .connect()
                .await
                && health(channel.clone(), "").await == ServingStatus::Serving
            {
                let mut members =
                    loyalty::grpc::pb::loyalty::v1::member_service_client::MemberServiceClient::new(
                        channel,
                    );
                let enrol = |with_key: bool| {
                    let mut request = tonic::Request::new(v1::EnrollMemberRequest {
                        request_id: "e-1".into(),
                        card_number: "CARD-0001".into(),
                        name: "Ada".into(),
                        ..Default::default()
                    });
                    if with_key {
                        request.metadata_mut().insert(
                            "authorization",
                            format!("Bearer {key}").parse().expect("header"),
                        );
                    }
                    request
                };
                let without = members
                    .enroll_member(enrol(false))
                    .await
                    .err()
                    .map(|s| s.code());
                let with = members.enroll_member(enrol(true)).await.is_ok();
                return (without, with);
            }
            if started.elapsed() > Duration::from_secs(30) {
                return (None, false);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let output = child.wait_with_output().expect("wait");
    let log = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        outcome,
        (Some(tonic::Code::Unauthenticated), true),
        "log:\n{log}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "exit status {:?}; log:\n{log}",
        output.status
    );
    assert!(
        dir.path().join("loyalty.db").exists(),
        "the embedded SQLite file is created"
    );
    assert!(log.contains("authentication is on"), "log:\n{log}");
    assert!(log.contains("shutting down"), "log:\n{log}");
    assert!(!log.contains(&key), "the key never reaches the log");
}

#[test]
fn a_bad_setting_stops_start_up_with_a_message_naming_the_key() {
    let output = Command::new(env!("CARGO_BIN_EXE_loyalty"))
        .env("LOYALTY__DATABASE__MAX_CONNECTIONS", "plenty")
        .arg("serve")
        .output()
        .expect("run loyalty");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.to_lowercase().contains("database.max_connections"),
        "stderr: {stderr}"
    );
}

/// PostgreSQL: with pooled connections checked only once idle
/// (`database.ping_idle_after_ms`), a connection the database dropped while it sat in
/// the pool is still replaced before a call gets it. (That busy connections skip the
/// check is a benchmark figure, not asserted here.) On SQLite there is no server to drop
/// connections: nothing to check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_dropped_while_idle_is_replaced_before_a_call_gets_it() {
    let app = spawn_configured(|s| s.database.ping_idle_after_ms = 100).await;
    if app.store.backend() != sea_orm::DbBackend::Postgres {
        return;
    }
    app.enroll("IDLE-1").await;
    // Another session ends every connection of the server's pool, as a restarted
    // database or a firewall would.
    let admin = sea_orm::Database::connect(&app.url).await.expect("connect");
    let ended = sea_orm::ConnectionTrait::execute_unprepared(
        &admin,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .await
    .expect("terminate");
    assert!(ended.rows_affected() > 0, "the pool had connections to end");
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..3 {
        assert_eq!(app.balance("IDLE-1").await.available, 0);
    }
}

/// A call cancelled by the server's request timeout while its transaction waits on a
/// row lock leaves nothing behind: once the lock is released its statement finishes,
/// the pool rolls the orphaned transaction back as it takes the connection back (not
/// whenever the connection is next used; checked on PostgreSQL), and the retry, with
/// the same request id, applies once without waiting on the orphan's lock. The vendored
/// sqlx-core releases connections with `flush` instead of `ping` (vendor/README.md);
/// this is what the release must still do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_cancelled_mid_transaction_is_rolled_back_and_its_retry_applies_once() {
    let app = spawn_configured(|s| {
        s.server.request_timeout_ms = 2_000;
        // The call must still be waiting for the row when the deadline comes.
        s.database.lock_timeout_ms = 30_000;
        // No background statements (relay, health check) that would take the orphaned
        // connection from the pool and so finish its rollback by chance.
        s.events.relay_interval_ms = 3_600_000;
        s.server.health_check_interval_ms = 3_600_000;
    })
    .await;
    app.enroll("CANCEL-1").await;
    let goodwill = || v1::AdjustPointsRequest {
        request_id: "gw-cancel".into(),
        member: Some(by_card("CANCEL-1")),
        points: 200,
        reason_code: v1::AdjustReason::Goodwill.into(),
        note: String::new(),
    };
    // Several idle connections in the pool, so that the retry is not handed the
    // cancelled call's connection (where the rollback would run first in any case).
    futures_util::future::join_all((0..6).map(|_| app.balance("CANCEL-1"))).await;
    // Another session, outside the server's pool, holds the member's row (on SQLite:
    // the database's write lock).
    let other = sea_orm::Database::connect(&app.url).await.expect("connect");
    let holder = sea_orm::TransactionTrait::begin(&other)
        .await
        .expect("begin");
    sea_orm::ConnectionTrait::execute_unprepared(
        &holder,
        "UPDATE members SET name = name WHERE card_number = 'CANCEL-1'",
    )
    .await
    .expect("lock");
    let err = app
        .points
        .clone()
        .adjust_points(goodwill())
        .await
        .expect_err("the call outlives the request timeout");
    crate::helpers::assert_status(&err, tonic::Code::DeadlineExceeded, "DEADLINE_EXCEEDED");
    holder.commit().await.expect("release the row");
    if app.store.backend() == sea_orm::DbBackend::Postgres {
        // The orphaned statement runs now; its transaction must then be rolled back,
        // not left idle in transaction holding the row until the connection is reused.
        let mut open = i64::MAX;
        for _ in 0..40 {
            let row = sea_orm::ConnectionTrait::query_one_raw(
                &other,
                sea_orm::Statement::from_string(
                    sea_orm::DbBackend::Postgres,
                    "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = \
                     current_database() AND state LIKE 'idle in transaction%'",
                ),
            )
            .await
            .expect("query")
            .expect("row");
            open = row.try_get::<i64>("", "n").expect("n");
            if open == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(open, 0, "a cancelled call's transaction was left open");
    }
    // The retry must not queue behind a transaction the cancelled call left open.
    let receipt = app
        .points
        .clone()
        .adjust_points(goodwill())
        .await
        .expect("retry within the request timeout")
        .into_inner();
    assert_eq!(receipt.balance.expect("balance").available, 200);
    assert_eq!(app.balance("CANCEL-1").await.available, 200);
    let entries = app.statement("CANCEL-1").await;
    assert_eq!(entries.len(), 1, "applied once: {entries:?}");
    app.assert_ledger_balanced().await;
}

/// The service graph is built from settings over a store without binding a socket, and
/// its use cases work on their own: what a CLI command or a test needs.
#[tokio::test]
async fn the_service_graph_builds_and_works_without_a_socket() {
    use loyalty::{
        auth::Caller,
        domain::{CardNumber, Consents, MemberKey, MemberName, RequestId},
        service::{Mutation, NewMember},
    };
    let (_db, url) = crate::helpers::TestDb::create().await;
    let settings = crate::helpers::test_settings(&url);
    let store = loyalty::store::Store::connect(&settings.database)
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    let graph = loyalty::startup::build(store, &settings, None).expect("build the graph");
    let card = CardNumber::parse("GRAPH-1").expect("card");
    let member = graph
        .members
        .enroll(
            &Mutation {
                caller: Caller::anonymous(),
                request_id: RequestId::parse("graph-1").expect("request id"),
                fingerprint: vec![1],
            },
            NewMember {
                card_number: card.clone(),
                name: MemberName::parse("Ada").expect("name"),
                email: None,
                phone: None,
                birthday: None,
                consents: Consents::default(),
                referred_by_code: None,
            },
        )
        .await
        .expect("enrol through the graph");
    let (member_id, balance, _) = graph
        .balances
        .balance(&MemberKey::Card(card))
        .await
        .expect("balance through the graph");
    assert_eq!(member_id, member.member_id);
    assert_eq!(balance.available, 0);
}

/// A write transaction abandoned at any instant, even while its BEGIN is in flight,
/// leaves no pooled connection inside a transaction: otherwise the next autocommit
/// statement on that connection would run inside it and never commit. Checked on
/// PostgreSQL, where a statement inside an older transaction sees `now()` before its own
/// start; on SQLite the pool must still hand out writers afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_transactions_leave_no_connection_inside_one() {
    let app = spawn_app().await;
    for i in 0..600u64 {
        let wait = Duration::from_micros(20 + (i * 37) % 900);
        let _ = tokio::time::timeout(wait, app.store.begin_write()).await;
    }
    // The abandoned calls' own clean-up runs as their connections go back to the pool.
    tokio::time::sleep(Duration::from_millis(300)).await;
    if app.url.starts_with("postgres") {
        #[derive(sea_orm::FromQueryResult)]
        struct Stale {
            stale: bool,
        }
        // Enough concurrent statements to take every pooled connection at once.
        let checks = (0..16).map(|_| async {
            <Stale as sea_orm::FromQueryResult>::find_by_statement(sea_orm::Statement::from_string(
                sea_orm::DbBackend::Postgres,
                "SELECT now() < statement_timestamp() - interval '0.1 second' AS stale FROM pg_sleep(0.2)",
            ))
            .one(app.store.conn())
            .await
            .expect("check a connection")
            .expect("a row")
            .stale
        });
        let stale = futures_util::future::join_all(checks).await;
        assert!(
            stale.iter().all(|s| !s),
            "a pooled connection was still inside a transaction: {stale:?}"
        );
    }
    let txn = tokio::time::timeout(Duration::from_secs(5), app.store.begin_write())
        .await
        .expect("a writer within 5 s")
        .expect("begin");
    txn.commit().await.expect("commit");
}
