//! OpenTelemetry traces over OTLP/HTTP, through the maintained crates
//! (`opentelemetry`, `opentelemetry-otlp`, `tracing-opentelemetry`): the
//! gateway's `tracing` spans (the request, each GraphQL operation, fal
//! calls) become OpenTelemetry spans, each database statement gets a span
//! of its own (timed by the store), a caller's W3C `traceparent` is the
//! parent of the request's span, and fal calls carry ours on.
//!
//! Off unless `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set; the exporter reads the
//! standard `OTEL_*` variables itself. The protocol is OTLP/HTTP with JSON
//! bodies (the collector's port 4318 takes it). Statement spans carry the
//! SQL text only when it holds no literal (`'`): values are bound, never
//! in the text, and a statement with an inlined literal is named by its
//! first word alone, so no value can reach a trace.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt as _, Tracer as _};
use opentelemetry::{global, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;

static ON: AtomicBool = AtomicBool::new(false);

const SCOPE: &str = "points-gateway";

/// Whether traces are exported (checked before any per-statement work).
pub fn enabled() -> bool {
    ON.load(Ordering::Relaxed)
}

/// The exporting provider; flushed and stopped by [`Telemetry::shutdown`].
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    pub const OFF: Telemetry = Telemetry { provider: None };

    /// Sends what is still buffered, then stops the exporter.
    pub fn shutdown(self) {
        if let Some(p) = self.provider {
            if let Err(e) = p.shutdown() {
                tracing::warn!(error = %e, "cannot flush the trace exporter");
            }
        }
    }
}

/// The layer exporting spans, when an OTLP endpoint is configured.
pub fn layer<S>() -> anyhow::Result<(
    Option<tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>>,
    Telemetry,
)>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    let configured = [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|v| std::env::var(v).is_ok_and(|s| !s.is_empty()));
    if !configured {
        return Ok((None, Telemetry::OFF));
    }
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::WithExportConfig as _;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpJson)
        .build()?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(SCOPE)
                .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
                .build(),
        )
        .build();
    global::set_tracer_provider(provider.clone());
    global::set_text_map_propagator(TraceContextPropagator::new());
    let tracer = provider.tracer(SCOPE);
    ON.store(true, Ordering::Relaxed);
    Ok((
        Some(tracing_opentelemetry::layer().with_tracer(tracer)),
        Telemetry {
            provider: Some(provider),
        },
    ))
}

/// Makes the caller's `traceparent` (W3C Trace Context) the parent of
/// `span`; nothing when traces are off or the header is absent or bad.
pub fn adopt_parent(span: &tracing::Span, headers: &axum::http::HeaderMap) {
    if !enabled() {
        return;
    }
    let parent = global::get_text_map_propagator(|p| {
        p.extract(&opentelemetry_http::HeaderExtractor(headers))
    });
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}

/// The current span's context as `traceparent` (and `tracestate`) headers
/// for an outgoing call.
pub fn outgoing_headers() -> axum::http::HeaderMap {
    let mut headers = axum::http::HeaderMap::new();
    if enabled() {
        let cx = tracing::Span::current().context();
        global::get_text_map_propagator(|p| {
            p.inject_context(&cx, &mut opentelemetry_http::HeaderInjector(&mut headers))
        });
    }
    headers
}

/// A span for one database statement that just ran, a child of the
/// current span, with the time it took.
pub fn statement(sql: &str, elapsed: Duration, failed: bool) {
    if !enabled() {
        return;
    }
    let end = SystemTime::now();
    let start = end.checked_sub(elapsed).unwrap_or(end);
    let tracer = global::tracer(SCOPE);
    let cx = tracing::Span::current().context();
    let text = if sql.contains('\'') {
        sql.split_whitespace().next().unwrap_or("").to_owned()
    } else {
        sql.chars().take(2_000).collect()
    };
    let name = format!(
        "db {}",
        sql.split_whitespace()
            .next()
            .unwrap_or("statement")
            .to_uppercase()
    );
    let mut span = tracer
        .span_builder(name)
        .with_kind(SpanKind::Client)
        .with_start_time(start)
        .with_attributes([KeyValue::new("db.query.text", text)])
        .start_with_context(&tracer, &cx);
    if failed {
        span.set_status(Status::error("the statement failed"));
    }
    span.end_with_timestamp(end);
}

#[cfg(test)]
mod tests {
    #[test]
    fn nothing_happens_while_traces_are_off() {
        assert!(!super::enabled());
        assert!(super::outgoing_headers().is_empty());
        super::statement("SELECT 1", std::time::Duration::from_millis(1), false);
    }
}
