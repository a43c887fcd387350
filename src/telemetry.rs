//! Logging and trace export.
//!
//! Logs go to stderr (stdout belongs to `render --json`). `LOG_FORMAT=json` writes one JSON object
//! per line for log shippers, with `trace_id` and `span_id` while a traced span is active; the
//! default is human-readable. `RUST_LOG` filters the logs as usual.
//!
//! With an OTLP endpoint configured ([`TracesConfig`]), the `tracing` spans of this crate become
//! OpenTelemetry spans, batched on the SDK's own thread and posted as protobuf to the collector.
//! `RUST_LOG` does not filter them: a quiet log never loses a trace. W3C trace context travels
//! both ways: [`continue_trace`] continues a producer's trace from the carrier BullMQ stored with
//! the job, and [`trace_headers`] gives the `traceparent` of the current span to put on
//! outgoing requests and published events.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Subscriber;
use tracing::dispatcher::WeakDispatch;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::writer::MakeWriterExt;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogFormat, TracesConfig};

/// Set once trace export is running; until then nothing reads trace context.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// The installed subscriber, for log lines to find the OpenTelemetry ids of their span.
static DISPATCH: OnceLock<WeakDispatch> = OnceLock::new();

/// Trace export failed to start (a malformed `OTEL_EXPORTER_OTLP_HEADERS`, say).
#[derive(Debug, thiserror::Error)]
#[error("trace export cannot start: {0}")]
pub struct TelemetryError(String);

/// What [`init`] set up; [`Telemetry::shutdown`] exports the spans still buffered.
#[must_use = "call shutdown() before exit, or buffered spans are lost"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still in the batch and stops the exporter. Call it outside the async
    /// runtime, once, before the process exits.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown()
        {
            tracing::warn!("Could not export the last spans: {error}");
        }
    }
}

/// Installs the global subscriber and, with `traces`, the OTLP span exporter.
/// `default_directive` filters logs when `RUST_LOG` is unset.
pub fn init(
    format: LogFormat,
    default_directive: &str,
    traces: Option<&TracesConfig>,
) -> Result<Telemetry, TelemetryError> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_directive));
    let writer = std::io::stderr.with_max_level(tracing::Level::TRACE);
    let logs = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_writer(writer)
            .map_event_format(WithTraceIds)
            .with_filter(filter)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .with_target(false)
            .with_filter(filter)
            .boxed(),
    };
    let (provider, spans) = match traces {
        Some(traces) => {
            let provider = tracer_provider(traces)?;
            let tracer = provider.tracer(env!("CARGO_PKG_NAME"));
            let layer = tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_location(false)
                .with_threads(false)
                .with_tracked_inactivity(false)
                // Context travels through `tracing` spans (`trace_headers`); attaching an
                // OpenTelemetry context on every poll of every instrumented future is pure cost.
                .with_context_activation(false)
                .with_filter(
                    tracing_subscriber::filter::Targets::new().with_target(crate_target(), tracing::Level::INFO),
                );
            (Some(provider), Some(layer))
        }
        None => (None, None),
    };
    let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(logs).with(spans));
    // A subscriber may already be installed (tests, embedding); keeping it is the right call.
    if tracing::dispatcher::set_global_default(dispatch.clone()).is_ok() {
        let _ = DISPATCH.set(dispatch.downgrade());
        EXPORTING.store(provider.is_some(), Ordering::Release);
    }
    Ok(Telemetry { provider })
}

/// The `tracing` target of this crate's spans (the library's name).
fn crate_target() -> &'static str {
    module_path!().split("::").next().unwrap_or(module_path!())
}

/// The SDK provider with the OTLP/HTTP exporter. The exporter reads the standard variables
/// itself (endpoint, headers, timeout), the SDK the sampler and batch settings; the resource
/// gets the configured service name on top of `OTEL_RESOURCE_ATTRIBUTES`.
fn tracer_provider(traces: &TracesConfig) -> Result<SdkTracerProvider, TelemetryError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|error| TelemetryError(error.to_string()))?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(traces.service_name.clone())
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_resource(resource)
        .with_batch_exporter(exporter)
        .build())
}

/// Whether spans are exported (and trace context is worth reading and passing on).
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Acquire)
}

/// The parent of a job's span from the W3C carrier a traced BullMQ producer stored with the job
/// (`opts.tm`, a JSON object as a string). `None` when it carries no valid context.
fn parent_context(carrier: &str) -> Option<opentelemetry::Context> {
    let fields: HashMap<String, String> = serde_json::from_str(carrier).ok()?;
    let context = TraceContextPropagator::new().extract(&fields);
    context.span().span_context().is_valid().then_some(context)
}

/// Makes `span` a child of the producer's span, when a carrier gives one and spans are exported.
pub fn continue_trace(span: &tracing::Span, carrier: Option<&str>) {
    if let Some(parent) = carrier.filter(|_| exporting()).and_then(parent_context) {
        // Only fails for a span that has already started, which this one has not.
        let _ = span.set_parent(parent);
    }
}

/// Sets attributes that only the exported span carries (log lines do not show them).
pub fn set_attributes(
    span: &tracing::Span,
    attributes: impl IntoIterator<Item = (&'static str, opentelemetry::Value)>,
) {
    if exporting() {
        for (key, value) in attributes {
            span.set_attribute(key, value);
        }
    }
}

/// Marks the exported span as failed, with the error's description.
pub fn set_error(span: &tracing::Span, description: String) {
    if exporting() {
        span.set_status(opentelemetry::trace::Status::error(description));
    }
}

/// The W3C headers (`traceparent`, and `tracestate` when set) of the current span; empty when
/// spans are not exported.
pub fn trace_headers() -> Vec<(&'static str, String)> {
    if !exporting() {
        return Vec::new();
    }
    let context = tracing::Span::current().context();
    if !context.span().span_context().is_valid() {
        return Vec::new();
    }
    let mut fields = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut fields);
    ["traceparent", "tracestate"]
        .into_iter()
        .filter_map(|name| {
            fields
                .remove(name)
                .filter(|value| !value.is_empty())
                .map(|value| (name, value))
        })
        .collect()
}

/// The `traceparent` of the current span, for published events.
pub fn traceparent() -> Option<String> {
    trace_headers()
        .into_iter()
        .find_map(|(name, value)| (name == "traceparent").then_some(value))
}

/// JSON log lines gain `trace_id` and `span_id` of the innermost span when it is traced.
struct WithTraceIds<F>(F);

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let ids = ids_of_current_span(ctx);
        let Some((trace_id, span_id)) = ids else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        match line.trim_end().strip_suffix('}') {
            Some(object) => writeln!(
                writer,
                "{object},\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\"}}"
            ),
            None => writer.write_str(&line),
        }
    }
}

/// Trace and span id (hex) of the event's span, when spans are exported and it has a valid one.
fn ids_of_current_span<S, N>(ctx: &FmtContext<'_, S, N>) -> Option<(String, String)>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    if !exporting() {
        return None;
    }
    let span = ctx.lookup_current()?;
    let dispatch = DISPATCH.get()?.upgrade()?;
    let context = tracing_opentelemetry::get_otel_context(&span.id(), &dispatch)?;
    let otel_span = context.span();
    let ids = otel_span.span_context();
    ids.is_valid().then(|| {
        let mut trace_id = String::with_capacity(32);
        let _ = write!(trace_id, "{}", ids.trace_id());
        (trace_id, ids.span_id().to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bullmq_carrier_gives_the_producers_span_as_parent() {
        let carrier = r#"{"traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}"#;
        let context = parent_context(carrier).expect("a valid parent");
        let span = context.span();
        let ids = span.span_context();
        assert_eq!(ids.trace_id().to_string(), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(ids.span_id().to_string(), "b7ad6b7169203331");
        assert!(ids.is_remote() && ids.is_sampled());
    }

    #[test]
    fn carriers_without_a_valid_context_give_no_parent() {
        for carrier in [
            "",
            "not json",
            "{}",
            r#"{"traceparent":"00-00000000000000000000000000000000-b7ad6b7169203331-01"}"#,
            r#"{"traceparent":"garbage"}"#,
        ] {
            assert!(parent_context(carrier).is_none(), "{carrier}");
        }
    }
}
