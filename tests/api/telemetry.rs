//! Observability: Prometheus metrics (checked by promtool) and OpenTelemetry traces
//! exported by OTLP to a real collector endpoint, with the caller's trace as parent.
use std::{
    io::{Read, Write},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use loyalty::grpc::pb::loyalty::v1;
use opentelemetry_proto::tonic::{
    collector::metrics::v1::{
        ExportMetricsServiceRequest, ExportMetricsServiceResponse,
        metrics_service_server::{MetricsService, MetricsServiceServer},
    },
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::any_value::Value,
    trace::v1::Span,
};
use tokio_stream::wrappers::TcpListenerStream;

use crate::helpers::{accrual, line, spawn_configured};

/// GET `path` over plain HTTP/1.0; the body.
pub(crate) fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    let (head, body) = response.split_once("\r\n\r\n").expect("http response");
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    body.to_owned()
}

#[tokio::test]
async fn metrics_are_served_for_prometheus_and_pass_promtool() {
    let app = spawn_configured(|s| {
        s.telemetry.metrics_listen_addr = Some("127.0.0.1:0".parse().expect("addr"));
    })
    .await;
    app.enroll("CARD-0001").await;
    app.points
        .clone()
        .accrue(accrual(
            "a",
            "CARD-0001",
            "o-1",
            vec![line("1", "SKU", 1, 12_300, 0)],
        ))
        .await
        .expect("accrue");
    app.points
        .clone()
        .create_hold(v1::CreateHoldRequest {
            request_id: "h".into(),
            member: Some(crate::helpers::by_card("CARD-0001")),
            points: 20,
            store_id: "store-1".into(),
            ..Default::default()
        })
        .await
        .expect("hold");
    let _ = app
        .points
        .clone()
        .get_balance(v1::GetBalanceRequest {
            member: Some(crate::helpers::by_card("NOPE-0001")),
        })
        .await
        .expect_err("unknown member");
    let addr = app.metrics_addr.expect("metrics endpoint");
    let body = tokio::task::spawn_blocking(move || http_get(addr, "/metrics"))
        .await
        .expect("scrape");
    for expected in [
        r#"loyalty_rpc_calls_total{"#,
        r#"rpc_method="/loyalty.v1.PointsService/Accrue""#,
        // GetBalance for an unknown member: NOT_FOUND is 5.
        r#"rpc_grpc_status_code="5""#,
        "loyalty_rpc_duration_seconds_bucket{",
        "loyalty_points_accrued_total{",
        "loyalty_holds_open{",
        "loyalty_db_pool_connections{",
        "loyalty_outbox_unrelayed{",
        "loyalty_jobs_since_success_seconds{",
        r#"service_name="loyalty""#,
    ] {
        assert!(body.contains(expected), "{expected} missing from:\n{body}");
    }
    let accrued = body
        .lines()
        .find(|l| l.starts_with("loyalty_points_accrued_total{"))
        .and_then(|l| l.rsplit(' ').next())
        .expect("accrued");
    assert_eq!(accrued, "123");
    let holds = body
        .lines()
        .find(|l| l.starts_with("loyalty_holds_open{"))
        .and_then(|l| l.rsplit(' ').next())
        .expect("holds");
    assert_eq!(holds, "1");

    // promtool (Debian package `prometheus`) must accept the exposition. CI sets
    // LOYALTY_REQUIRE_PROMTOOL=1 and installs it; elsewhere it runs when present.
    match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(mut child) => {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(body.as_bytes())
                .expect("feed promtool");
            let out = child.wait_with_output().expect("promtool");
            assert!(
                out.status.success(),
                "promtool check metrics failed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Err(e) => assert!(
            std::env::var("LOYALTY_REQUIRE_PROMTOOL").is_err(),
            "promtool is required here (apt-get install prometheus): {e}"
        ),
    }
}

/// A minimal OTLP/gRPC collector: keeps the traces and the metric names it is sent.
#[derive(Clone, Default)]
struct Collector(
    Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    Arc<Mutex<Vec<String>>>,
);

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let mut names = self.1.lock().expect("lock");
        for rm in &request.get_ref().resource_metrics {
            for sm in &rm.scope_metrics {
                names.extend(sm.metrics.iter().map(|m| m.name.clone()));
            }
        }
        Ok(tonic::Response::new(ExportMetricsServiceResponse {
            partial_success: None,
        }))
    }
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.lock().expect("lock").push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl Collector {
    /// Every span received, with its resource's attributes.
    fn spans(&self) -> Vec<(Vec<(String, String)>, Span)> {
        let mut out = Vec::new();
        for request in self.0.lock().expect("lock").iter() {
            for rs in &request.resource_spans {
                let attrs: Vec<(String, String)> = rs
                    .resource
                    .iter()
                    .flat_map(|r| &r.attributes)
                    .map(|kv| {
                        let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                            Some(Value::StringValue(s)) => s.clone(),
                            other => format!("{other:?}"),
                        };
                        (kv.key.clone(), v)
                    })
                    .collect();
                for ss in &rs.scope_spans {
                    for span in &ss.spans {
                        out.push((attrs.clone(), span.clone()));
                    }
                }
            }
        }
        out
    }
}

#[test]
fn a_calls_spans_reach_the_collector_under_the_callers_trace() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let collector = Collector::default();
    let otlp_addr = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(collector.clone()))
                .add_service(MetricsServiceServer::new(collector.clone()))
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        addr
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_loyalty"))
        .current_dir(dir.path())
        .env_remove("LOYALTY_CONFIG")
        .env_remove("RUST_LOG")
        .env("LOYALTY__SERVER__LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("LOYALTY__SECURITY__REQUIRE_AUTH", "false")
        .env("LOYALTY__LOG__FORMAT", "json")
        .env(
            "LOYALTY__TELEMETRY__OTLP_ENDPOINT",
            format!("http://{otlp_addr}"),
        )
        .env("LOYALTY__TELEMETRY__ENVIRONMENT", "ci")
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start loyalty");
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent_id = "00f067aa0ba902b7";
    let called = rt.block_on(async {
        let started = Instant::now();
        loop {
            if let Ok(channel) =
                tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))
                    .expect("uri")
                    .connect()
                    .await
            {
                let mut members = v1::member_service_client::MemberServiceClient::new(channel);
                let mut request = tonic::Request::new(v1::EnrollMemberRequest {
                    request_id: "e-1".into(),
                    card_number: "CARD-0001".into(),
                    name: "Ada".into(),
                    ..Default::default()
                });
                request.metadata_mut().insert(
                    "traceparent",
                    format!("00-{trace_id}-{parent_id}-01")
                        .parse()
                        .expect("header"),
                );
                return members.enroll_member(request).await.is_ok();
            }
            if started.elapsed() > Duration::from_secs(30) {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    // The batch exporter sends within 100 ms; shutdown flushes whatever is left.
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline
        && !collector
            .spans()
            .iter()
            .any(|(_, s)| hex(&s.trace_id) == trace_id)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let output = child.wait_with_output().expect("wait");
    let log = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        called,
        "the call failed; log:\n{log}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let spans = collector.spans();
    let ours: Vec<_> = spans
        .iter()
        .filter(|(_, s)| hex(&s.trace_id) == trace_id)
        .collect();
    let (resource, server) = ours
        .iter()
        .find(|(_, s)| s.name == "/loyalty.v1.MemberService/EnrollMember")
        .unwrap_or_else(|| {
            panic!(
                "no server span in {:#?}",
                spans.iter().map(|(_, s)| &s.name).collect::<Vec<_>>()
            )
        });
    assert_eq!(
        hex(&server.parent_span_id),
        parent_id,
        "the caller's span is the parent"
    );
    assert_eq!(server.kind, 2, "SPAN_KIND_SERVER");
    let attr = |key: &str| {
        resource
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("resource attribute {key} missing: {resource:?}"))
    };
    assert_eq!(attr("service.name"), "loyalty");
    assert_eq!(attr("deployment.environment.name"), "ci");
    assert_eq!(attr("service.version"), env!("CARGO_PKG_VERSION"));
    // The use case and its database work are children in the same trace.
    let child_of = |parent: &Span, name: &str| {
        ours.iter()
            .find(|(_, s)| s.name == name && s.parent_span_id == parent.span_id)
            .map(|(_, s)| s.clone())
            .unwrap_or_else(|| {
                panic!(
                    "no {name} span under {}: {:#?}",
                    parent.name,
                    ours.iter().map(|(_, s)| &s.name).collect::<Vec<_>>()
                )
            })
    };
    let enroll = child_of(server, "members.enroll");
    child_of(&enroll, "db.begin");
    child_of(&enroll, "db.members.insert");
    child_of(&enroll, "db.commit");
    // Metrics went out by OTLP too (flushed at shutdown at the latest).
    let metric_names = collector.1.lock().expect("lock").clone();
    assert!(
        metric_names.iter().any(|n| n == "loyalty.rpc.calls"),
        "{metric_names:?}"
    );
    // The call's log lines carry its trace id.
    assert!(
        log.lines()
            .any(|l| l.contains("member enrolled") && l.contains(trace_id)),
        "no log line with the trace id:\n{log}"
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
