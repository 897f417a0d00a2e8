//! Logs and traces. Logs are human-readable by default and JSON lines by configuration,
//! with the trace id of the call they belong to. Every call is a span whose parent is the
//! caller's `traceparent`; spans are exported by OTLP when `telemetry.otlp_endpoint` is set.
use std::io::IsTerminal;

use opentelemetry::{KeyValue, trace::TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{Resource, trace::SdkTracerProvider};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::{LogFormat, LogSettings, TelemetrySettings};

/// Keeps the exporters alive; flushes them on drop (after the server stopped).
pub struct TelemetryGuard {
    tracer: SdkTracerProvider,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Err(e) = self.tracer.shutdown() {
            eprintln!("loyalty: flushing traces failed: {e}");
        }
    }
}

/// The resource attributes every span and metric carries.
pub fn resource(settings: &TelemetrySettings) -> Resource {
    let instance = if settings.service_instance.is_empty() {
        std::env::var("HOSTNAME").unwrap_or_else(|_| "local".into())
    } else {
        settings.service_instance.clone()
    };
    Resource::builder()
        .with_service_name(settings.service_name.clone())
        .with_attributes([
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("deployment.environment.name", settings.environment.clone()),
            KeyValue::new("service.instance.id", instance),
        ])
        .build()
}

/// Installs the global subscriber (and the W3C trace-context propagator). `RUST_LOG`,
/// when set, overrides `log.filter`. Must run inside the Tokio runtime (the OTLP
/// exporter's channel lives there).
/// `to_stderr`: the CLI commands print their results (an API key, a client list) on
/// stdout, so their logs go to stderr; the server logs on stdout.
pub fn init(
    log: &LogSettings,
    telemetry: &TelemetrySettings,
    to_stderr: bool,
) -> anyhow::Result<TelemetryGuard> {
    let writer = || {
        if to_stderr {
            fmt::writer::BoxMakeWriter::new(std::io::stderr)
        } else {
            fmt::writer::BoxMakeWriter::new(std::io::stdout)
        }
    };
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.is_empty() => EnvFilter::try_new(directives)?,
        _ => EnvFilter::try_new(&log.filter).map_err(|e| anyhow::anyhow!("log.filter: {e}"))?,
    };
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    // Spans get trace ids (for the logs) even when nothing is exported.
    let mut provider = SdkTracerProvider::builder().with_resource(resource(telemetry));
    if !telemetry.otlp_endpoint.is_empty() {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(telemetry.otlp_endpoint.clone())
            .build()
            .map_err(|e| anyhow::anyhow!("telemetry.otlp_endpoint: {e}"))?;
        provider = provider.with_batch_exporter(exporter);
    }
    let provider = provider.build();
    let otel = tracing_opentelemetry::layer().with_tracer(provider.tracer("loyalty"));
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    match log.format {
        LogFormat::Human => registry
            .with(
                fmt::layer()
                    .with_writer(writer())
                    .with_target(false)
                    .with_ansi(!to_stderr && std::io::stdout().is_terminal()),
            )
            .try_init()?,
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .with_writer(writer())
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    // The enclosing call span carries the trace id.
                    .with_span_list(true),
            )
            .try_init()?,
    }
    Ok(TelemetryGuard { tracer: provider })
}

/// The span of one gRPC call: its parent is the caller's `traceparent` (if any), and its
/// `trace_id` field puts the trace id into every log line of the call.
pub fn call_span(request: &http::Request<tonic::body::Body>) -> tracing::Span {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let method = request.uri().path();
    let span = tracing::info_span!(
        "grpc",
        otel.name = %method,
        otel.kind = "server",
        rpc.system = "grpc",
        method = %method,
        trace_id = tracing::field::Empty,
    );
    let parent = opentelemetry::global::get_text_map_propagator(|p| {
        p.extract(&opentelemetry_http::HeaderExtractor(request.headers()))
    });
    let _ = span.set_parent(parent);
    let trace_id = {
        use opentelemetry::trace::TraceContextExt;
        span.context().span().span_context().trace_id()
    };
    if trace_id != opentelemetry::trace::TraceId::INVALID {
        span.record("trace_id", tracing::field::display(trace_id));
    }
    span
}
