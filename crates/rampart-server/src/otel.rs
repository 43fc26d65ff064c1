//! `--trace-config mode=opentelemetry`: each sampled request becomes one OTLP span (`InferRequest`, from its
//! first to its last timestamp, every Triton timestamp an event), exported over OTLP/HTTP by a batch
//! processor on its own thread. A client's W3C `traceparent` makes the span a child of the client's trace.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::KeyValue;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{Span, SpanKind, Tracer, TracerProvider};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};
use rampart_core::trace::{TraceExporter, TraceRecord};

use crate::cli::OtelSettings;

pub struct OtlpExporter {
    provider: SdkTracerProvider,
    tracer: opentelemetry_sdk::trace::SdkTracer,
    propagator: opentelemetry_sdk::propagation::TraceContextPropagator,
}

impl OtlpExporter {
    /// Builds the exporter (no connection yet). Call outside the async runtime: the HTTP client blocks.
    pub fn new(settings: &OtelSettings) -> Result<OtlpExporter, String> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(settings.url.clone())
            .with_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| {
                format!("--trace-config opentelemetry: cannot build the OTLP exporter: {e}")
            })?;
        let batch = BatchConfigBuilder::default()
            .with_max_queue_size(settings.max_queue_size)
            .with_scheduled_delay(Duration::from_millis(settings.schedule_delay_ms))
            .with_max_export_batch_size(settings.max_export_batch_size)
            .build();
        let processor = BatchSpanProcessor::builder(exporter).with_batch_config(batch).build();
        let mut resource =
            opentelemetry_sdk::Resource::builder().with_service_name("triton-inference-server");
        let attributes: Vec<KeyValue> =
            settings.resources.iter().map(|(k, v)| KeyValue::new(k.clone(), v.clone())).collect();
        resource = resource.with_attributes(attributes);
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_resource(resource.build())
            .build();
        let tracer = provider.tracer("rampart");
        Ok(OtlpExporter { provider, tracer, propagator: Default::default() })
    }
}

fn at(ns: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns)
}

impl TraceExporter for OtlpExporter {
    fn export(&self, r: &TraceRecord<'_>) {
        let (Some(first), Some(last)) = (r.stamps.first(), r.stamps.last()) else { return };
        let parent = match r.traceparent {
            Some(tp) => {
                let carrier: HashMap<String, String> =
                    [("traceparent".to_string(), tp.to_string())].into();
                self.propagator.extract(&carrier)
            }
            None => opentelemetry::Context::new(),
        };
        let mut span = self
            .tracer
            .span_builder("InferRequest")
            .with_kind(SpanKind::Server)
            .with_start_time(at(first.1))
            .with_attributes([
                KeyValue::new("triton.model_name", r.model.to_string()),
                KeyValue::new("triton.model_version", r.version),
                KeyValue::new("triton.trace_id", r.id as i64),
            ])
            .start_with_context(&self.tracer, &parent);
        for (name, ns) in r.stamps {
            span.add_event_with_timestamp(*name, at(*ns), vec![]);
        }
        span.end_with_timestamp(at(last.1));
    }

    fn flush(&self) {
        if let Err(e) = self.provider.force_flush() {
            tracing::warn!("OpenTelemetry export at shutdown: {e}");
        }
    }

    fn mode(&self) -> &'static str {
        "opentelemetry"
    }
}

impl Drop for OtlpExporter {
    fn drop(&mut self) {
        let _ = self.provider.shutdown();
    }
}
