//! Logging and tracing setup: `RUST_LOG` filter, text or JSON lines on stdout, and OpenTelemetry
//! trace export over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.

use std::{collections::HashMap, io::IsTerminal};

use ioscale_adapter::TracePropagator;
use opentelemetry::{
    propagation::TextMapPropagator,
    trace::{TraceContextExt, TracerProvider as _},
};
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig};
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt, util::SubscriberInitExt};

use crate::config::LogFormat;

/// Default filter when `RUST_LOG` is not set.
pub const DEFAULT_FILTER: &str = "ioscale_node=info,ioscale_adapter=info,socketioxide=warn,warn";

/// The installed telemetry; [`Telemetry::shutdown`] flushes pending spans.
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exports_traces(&self) -> bool {
        self.provider.is_some()
    }

    /// Flushes and stops the exporter.
    pub fn shutdown(&self) {
        if let Some(p) = &self.provider
            && let Err(e) = p.shutdown()
        {
            eprintln!("trace exporter shutdown: {e}");
        }
    }
}

/// Whether `OTEL_EXPORTER_OTLP_ENDPOINT` asks for trace export.
pub fn otlp_requested() -> bool {
    std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").is_ok_and(|v| !v.is_empty())
}

fn build_provider() -> Result<SdkTracerProvider, opentelemetry_otlp::ExporterBuildError> {
    // The standard variable chooses the encoding; protobuf is the OTLP default.
    let protocol = match std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL").as_deref() {
        Ok("http/json") => Protocol::HttpJson,
        _ => Protocol::HttpBinary,
    };
    let exporter = SpanExporter::builder()
        .with_http()
        .with_protocol(protocol)
        .build()?;
    // Resource::builder() also reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES.
    let resource = Resource::builder()
        .with_service_name("ioscale-node")
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// Installs the global subscriber. Safe to call once per process.
pub fn init(format: LogFormat) -> Telemetry {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let fmt = tracing_subscriber::fmt::layer().with_ansi(std::io::stdout().is_terminal());
    let fmt = match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().boxed(),
    };
    let mut export_error = None;
    let provider = if otlp_requested() {
        match build_provider() {
            Ok(p) => Some(p),
            Err(e) => {
                export_error = Some(e);
                None
            }
        }
    } else {
        None
    };
    let otel = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("ioscale-node")));
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init();
    if let Some(e) = export_error {
        tracing::error!(error = %e, "OTLP trace exporter not started; continuing without");
    }
    Telemetry { provider }
}

/// Puts W3C trace context into adapter messages and takes it out on the other node.
#[derive(Debug, Clone, Copy)]
pub struct OtelPropagator;

impl TracePropagator for OtelPropagator {
    fn inject(&self, span: &tracing::Span) -> Option<String> {
        let cx = span.context();
        if !cx.span().span_context().is_valid() {
            return None;
        }
        let mut carrier = HashMap::new();
        TraceContextPropagator::new().inject_context(&cx, &mut carrier);
        carrier.remove("traceparent")
    }

    fn set_parent(&self, span: &tracing::Span, traceparent: &str) {
        let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
        let cx = TraceContextPropagator::new().extract(&carrier);
        if let Err(e) = span.set_parent(cx) {
            tracing::debug!(error = %e, "trace parent not set");
        }
    }
}
