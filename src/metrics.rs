//! Metrics: OpenTelemetry instruments, read by Prometheus from `/metrics` on a port of
//! its own and pushed by OTLP when an endpoint is configured. One set per server (a
//! `prometheus::Registry` each), so several servers in one process do not mix figures.
use std::{
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use opentelemetry::{
    KeyValue,
    metrics::{Counter, Histogram, MeterProvider as _},
};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use prometheus::{Encoder, TextEncoder};

use crate::{config::TelemetrySettings, store::Store};

/// Figures read from the database (or the pool) before each scrape.
#[derive(Default)]
struct Sampled {
    pool_size: AtomicI64,
    pool_idle: AtomicI64,
    holds_open: AtomicI64,
    outbox_unrelayed: AtomicI64,
    outbox_lag_ms: AtomicI64,
    /// Unix milliseconds of the last successful job run (0: none yet).
    jobs_last_success_ms: AtomicI64,
}

pub struct Metrics {
    registry: prometheus::Registry,
    provider: SdkMeterProvider,
    sampled: Arc<Sampled>,
    /// Calls by method and status code.
    pub calls: Counter<u64>,
    /// Call latency in seconds, by method and status code.
    pub duration: Histogram<f64>,
    pub points_accrued: Counter<u64>,
    pub points_redeemed: Counter<u64>,
    /// Job runs by outcome.
    pub job_runs: Counter<u64>,
    pub job_duration: Histogram<f64>,
    /// Accruals per shared transaction, by how each call went (batched, alone).
    pub accrual_batch: Histogram<u64>,
    /// Reads answered by one shared statement, by kind (balance, member offers).
    pub read_batch: Histogram<u64>,
}

/// Latency buckets for calls (seconds): a till waits in milliseconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

impl Metrics {
    pub fn new(settings: &TelemetrySettings) -> anyhow::Result<Arc<Self>> {
        let registry = prometheus::Registry::new();
        let exporter = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .build()?;
        let mut builder = SdkMeterProvider::builder()
            .with_reader(exporter)
            .with_resource(crate::telemetry::resource(settings));
        if !settings.otlp_endpoint.is_empty() {
            let otlp = opentelemetry_otlp::MetricExporter::builder()
                .with_tonic()
                .with_endpoint(settings.otlp_endpoint.clone())
                .build()
                .map_err(|e| anyhow::anyhow!("telemetry.otlp_endpoint: {e}"))?;
            builder = builder.with_reader(
                PeriodicReader::builder(otlp)
                    .with_interval(Duration::from_millis(
                        settings.otlp_metrics_interval_ms.max(1000),
                    ))
                    .build(),
            );
        }
        let provider = builder.build();
        let meter = provider.meter("loyalty");
        let sampled = Arc::new(Sampled::default());
        let gauge = |name: &'static str,
                     unit: &'static str,
                     help: &'static str,
                     read: fn(&Sampled) -> i64| {
            let sampled = Arc::clone(&sampled);
            meter
                .i64_observable_gauge(name)
                .with_unit(unit)
                .with_description(help)
                .with_callback(move |observer| observer.observe(read(&sampled), &[]))
                .build()
        };
        // Observable instruments live as long as the provider.
        let _ = gauge(
            "loyalty.db.pool.connections",
            "{connection}",
            "Open database connections",
            |s| s.pool_size.load(Ordering::Relaxed),
        );
        let _ = gauge(
            "loyalty.db.pool.idle",
            "{connection}",
            "Idle database connections",
            |s| s.pool_idle.load(Ordering::Relaxed),
        );
        let _ = gauge("loyalty.holds.open", "{hold}", "Active point holds", |s| {
            s.holds_open.load(Ordering::Relaxed)
        });
        let _ = gauge(
            "loyalty.outbox.unrelayed",
            "{event}",
            "Committed events still without a cursor",
            |s| s.outbox_unrelayed.load(Ordering::Relaxed),
        );
        let _ = meter
            .u64_observable_counter("loyalty.audit.write_failures")
            .with_unit("{record}")
            .with_description("Audit records this replica could not write (database down)")
            .with_callback(|observer| {
                observer.observe(
                    crate::grpc::middleware::AUDIT_WRITE_FAILURES.load(Ordering::Relaxed),
                    &[],
                )
            })
            .build();
        let seconds = |name: &'static str, help: &'static str, read: fn(&Sampled) -> f64| {
            let sampled = Arc::clone(&sampled);
            meter
                .f64_observable_gauge(name)
                .with_unit("s")
                .with_description(help)
                .with_callback(move |observer| observer.observe(read(&sampled), &[]))
                .build()
        };
        let _ = seconds(
            "loyalty.outbox.lag",
            "Age of the oldest event still without a cursor",
            |s| s.outbox_lag_ms.load(Ordering::Relaxed) as f64 / 1000.0,
        );
        let _ = seconds(
            "loyalty.jobs.since_success",
            "Time since the jobs last ran successfully on this replica (-1: never)",
            |s| match s.jobs_last_success_ms.load(Ordering::Relaxed) {
                0 => -1.0,
                at => (chrono::Utc::now().timestamp_millis() - at) as f64 / 1000.0,
            },
        );
        Ok(Arc::new(Self {
            calls: meter
                .u64_counter("loyalty.rpc.calls")
                .with_description("gRPC calls by method and status code")
                .build(),
            duration: meter
                .f64_histogram("loyalty.rpc.duration")
                .with_unit("s")
                .with_description("gRPC call latency by method and status code")
                .with_boundaries(LATENCY_BUCKETS.to_vec())
                .build(),
            points_accrued: meter
                .u64_counter("loyalty.points.accrued")
                .with_description("Points earned by accruals")
                .build(),
            points_redeemed: meter
                .u64_counter("loyalty.points.redeemed")
                .with_description("Points spent by redemptions and captured holds")
                .build(),
            job_runs: meter
                .u64_counter("loyalty.jobs.runs")
                .with_description("Background job runs by outcome")
                .build(),
            job_duration: meter
                .f64_histogram("loyalty.jobs.duration")
                .with_unit("s")
                .with_description("Duration of a background job run")
                .with_boundaries(vec![0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0])
                .build(),
            accrual_batch: meter
                .u64_histogram("loyalty.accrual.batch.size")
                .with_unit("{call}")
                .with_description("Accruals written by one shared transaction")
                .with_boundaries(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0])
                .build(),
            read_batch: meter
                .u64_histogram("loyalty.read.batch.size")
                .with_unit("{call}")
                .with_description("Reads answered by one shared statement, by kind")
                .with_boundaries(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0])
                .build(),
            registry,
            provider,
            sampled,
        }))
    }

    /// Records one finished call (of `program`, when the call was authenticated).
    pub fn record_call(&self, method: &str, program: Option<&str>, code: i64, seconds: f64) {
        let attrs = [
            KeyValue::new("rpc.method", method.to_owned()),
            KeyValue::new("rpc.grpc.status_code", code),
            KeyValue::new("program", program.unwrap_or("").to_owned()),
        ];
        self.calls.add(1, &attrs);
        self.duration.record(seconds, &attrs);
    }

    /// Records a job run.
    pub fn record_jobs(&self, program: &str, ok: bool, seconds: f64) {
        let attrs = [
            KeyValue::new("outcome", if ok { "ok" } else { "error" }),
            KeyValue::new("program", program.to_owned()),
        ];
        self.job_runs.add(1, &attrs);
        self.job_duration.record(seconds, &attrs);
        if ok {
            self.sampled
                .jobs_last_success_ms
                .store(chrono::Utc::now().timestamp_millis(), Ordering::Relaxed);
        }
    }

    /// Reads the sampled figures from the pool and the database.
    pub async fn sample(&self, store: &Store) {
        let (size, idle) = store.pool_stats();
        self.sampled.pool_size.store(size, Ordering::Relaxed);
        self.sampled.pool_idle.store(idle, Ordering::Relaxed);
        match crate::store::holds::count_active(store.conn()).await {
            Ok(n) => self.sampled.holds_open.store(n, Ordering::Relaxed),
            Err(e) => tracing::debug!(error = %e, "metrics: holds not sampled"),
        }
        match crate::store::events::unrelayed(store.conn()).await {
            Ok((n, oldest)) => {
                self.sampled.outbox_unrelayed.store(n, Ordering::Relaxed);
                let lag =
                    oldest.map_or(0, |at| (chrono::Utc::now() - at).num_milliseconds().max(0));
                self.sampled.outbox_lag_ms.store(lag, Ordering::Relaxed);
            }
            Err(e) => tracing::debug!(error = %e, "metrics: outbox not sampled"),
        }
    }

    /// The Prometheus text exposition of every instrument.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "metrics: encoding failed");
        }
        String::from_utf8(out).unwrap_or_default()
    }

    /// Pushes what is pending over OTLP (shutdown).
    pub fn shutdown(&self) {
        let _ = self.provider.shutdown();
    }
}

/// Serves `GET /metrics` on `listener` until `stop` completes; samples the database first.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    store: Store,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::{Router, http::header, response::IntoResponse, routing::get};
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let metrics = Arc::clone(&metrics);
            let store = store.clone();
            async move {
                metrics.sample(&store).await;
                (
                    [(
                        header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    metrics.render(),
                )
                    .into_response()
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
}
