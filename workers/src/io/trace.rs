//! W3C trace context through every hop, a span per handled event, optional OTLP export.
//!
//! The context travels in NATS headers (`traceparent`, `tracestate`) and in the platform
//! HTTP call. It is held in OpenTelemetry's own task context ([`FutureExt::with_context`]
//! around each handled event), not in a `tracing` subscriber layer: workers also run inside
//! other processes (the tests' in-process pipelines) whose subscriber we do not own, and the
//! context must reach the publisher and the HTTP client there too. So the publisher and
//! the deliverers' HTTP calls read [`Context::current`] and need no new parameters.
//!
//! Spans come from an SDK tracer per process. Without `otlp_endpoint` new traces are not
//! sampled (their ids still travel, so downstream systems can join them) and nothing is
//! exported; with it, spans go to `<otlp_endpoint>/v1/traces` as OTLP HTTP/protobuf.
//!
//! Without an exporter nothing would read a span, so none is built: each hop only derives
//! its span context (same trace, new span id, the parent's flags and trace state) by hand.
//! Building SDK spans with their names and attributes per event is a noticeable share of
//! the pipeline's CPU, for nothing anyone could see.

use super::metrics as m;
use crate::config::Config;
use async_nats::header::HeaderMap;
use opentelemetry::context::FutureExt;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{SpanContext, TraceFlags};
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer, TracerProvider};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    IdGenerator, RandomIdGenerator, Sampler, SdkTracer, SdkTracerProvider,
};
use opentelemetry_sdk::Resource;
use std::future::Future;
use std::time::Duration;

/// The W3C header names, lower-case as the recommendation writes them.
pub(crate) const TRACEPARENT: &str = "traceparent";
pub(crate) const TRACESTATE: &str = "tracestate";
/// When the inbound event that started this chain was stored (Unix ms), carried from hop to
/// hop so the deliverer can measure publish → platform accepted. Internal, like
/// `tl.deliver.*` itself; absent on events from publishers.
pub(crate) const ORIGIN_MS: &str = "Threadline-Origin-Ms";

/// Why OTLP export could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up OTLP export to {endpoint}: {reason}")]
pub struct TelemetryError {
    endpoint: String,
    reason: String,
}

/// One process's tracer (and exporter, when configured). Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct Telemetry {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    /// Spans are exported (`otlp_endpoint` is set): only then are SDK spans built.
    exporting: bool,
}

impl Telemetry {
    pub(crate) fn new(config: &Config) -> Result<Telemetry, TelemetryError> {
        let endpoint = config.otlp_endpoint.trim();
        let builder = SdkTracerProvider::builder()
            .with_resource(Resource::builder().with_service_name("threadline").build());
        let provider = if endpoint.is_empty() {
            // Sampled parents stay sampled (their flag is propagated unchanged); new traces
            // are not recorded, since nothing would read them.
            builder
                .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOff)))
                .build()
        } else {
            // The exporter's reqwest client uses rustls without a default provider, like
            // the adapters' clients: ring, installed once per process.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(url)
                .with_timeout(Duration::from_millis(config.http_timeout_ms))
                .build()
                .map_err(|e| TelemetryError {
                    endpoint: crate::config::redact_url(endpoint),
                    reason: e.to_string(),
                })?;
            builder
                .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
                .with_batch_exporter(exporter)
                .build()
        };
        let tracer = provider.tracer("threadline");
        Ok(Telemetry {
            provider,
            tracer,
            exporting: !endpoint.is_empty(),
        })
    }

    /// Runs `work` (the handling of one message) inside a span that continues the trace of
    /// `headers`, or starts a new trace when they carry none. `published_ms` is when this
    /// message was stored: the chain's origin time when the headers do not name an earlier one.
    /// The run loop does the same in two steps ([`Self::event_context`], [`Self::run_in`]).
    #[cfg(test)]
    pub(crate) async fn in_event_span<T>(
        &self,
        stage: &dyn std::fmt::Display,
        subject: &str,
        headers: Option<&HeaderMap>,
        published_ms: u64,
        work: impl Future<Output = T>,
    ) -> T {
        let cx = self.event_context(stage, subject, headers, published_ms);
        Self::run_in(cx, work).await
    }

    /// The context [`in_event_span`](Self::in_event_span) runs its work in. Apart, so a
    /// caller can read the message's headers before it gives the message away. `stage` is
    /// formatted only for a span that is exported.
    pub(crate) fn event_context(
        &self,
        stage: &dyn std::fmt::Display,
        subject: &str,
        headers: Option<&HeaderMap>,
        published_ms: u64,
    ) -> Context {
        let parent = headers
            .map(|h| TraceContextPropagator::new().extract_with_context(&Context::new(), &Nats(h)))
            .unwrap_or_default();
        let origin = headers
            .and_then(|h| header(h, ORIGIN_MS))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(published_ms);
        if !self.exporting {
            return parent
                .with_remote_span_context(child_of(&parent))
                .with_value(Event {
                    origin,
                    tracer: None,
                });
        }
        let span = self
            .tracer
            .span_builder(format!("threadline {stage}"))
            .with_kind(SpanKind::Consumer)
            .with_attributes([
                KeyValue::new("threadline.stage", stage.to_string()),
                KeyValue::new("messaging.system", "nats"),
                KeyValue::new("messaging.destination.name", subject.to_owned()),
            ])
            .start_with_context(&self.tracer, &parent);
        parent.with_span(span).with_value(Event {
            origin,
            tracer: Some(self.tracer.clone()),
        })
    }

    /// Runs `work` in `cx` (from [`event_context`](Self::event_context)), then ends its span
    /// (a no-op for the span context of a hop that exports nothing).
    pub(crate) async fn run_in<T>(cx: Context, work: impl Future<Output = T>) -> T {
        let result = work.with_context(cx.clone()).await;
        cx.span().end();
        result
    }

    /// Exports what is still buffered (on shutdown).
    pub(crate) fn flush(&self) {
        if let Err(error) = self.provider.force_flush() {
            tracing::warn!(%error, "flushing spans failed");
        }
    }
}

/// What the handling of one event carries in its context. One value, not one per field:
/// each `with_value` copies the context's map.
#[derive(Clone, Debug)]
struct Event {
    /// The origin time of the chain the event belongs to (Unix ms).
    origin: u64,
    /// The tracer that started the event's span, for child spans further down; `None`
    /// when nothing is exported (span contexts are then derived by hand).
    tracer: Option<SdkTracer>,
}

/// A span context for a new span under `parent`'s: the same trace (a new one when there
/// is none) with a new span id, and the parent's flags and trace state, as the SDK gives an
/// unexported span.
fn child_of(parent: &Context) -> SpanContext {
    let ids = RandomIdGenerator::default();
    let parent = parent.span().span_context().clone();
    if parent.is_valid() {
        SpanContext::new(
            parent.trace_id(),
            ids.new_span_id(),
            parent.trace_flags(),
            false,
            parent.trace_state().clone(),
        )
    } else {
        SpanContext::new(
            ids.new_trace_id(),
            ids.new_span_id(),
            TraceFlags::default(),
            false,
            Default::default(),
        )
    }
}

/// Names the current event on its span (the id is known only once it is decoded).
pub(crate) fn set_event_id(event_id: &str) {
    let cx = Context::current();
    let span = cx.span();
    if span.is_recording() {
        span.set_attribute(KeyValue::new("threadline.event_id", event_id.to_owned()));
    }
}

/// Records an outcome that is not a success on the current event's span.
pub(crate) fn set_outcome(outcome: &'static str) {
    let cx = Context::current();
    let span = cx.span();
    if !span.is_recording() {
        return;
    }
    span.set_attribute(KeyValue::new("threadline.outcome", outcome));
    match outcome {
        "ack" | "wait" => {}
        _ => span.set_status(Status::error(outcome)),
    }
}

/// Adds the current trace context (and origin time) to an outgoing message, unless it
/// already carries a `traceparent`.
pub(crate) fn inject_nats(headers: &mut HeaderMap) {
    if header(headers, TRACEPARENT).is_some() {
        return;
    }
    let cx = Context::current();
    for (name, value) in trace_headers(&cx) {
        headers.insert(name, value.as_str());
    }
    if let Some(event) = cx.get::<Event>() {
        headers.insert(ORIGIN_MS, event.origin.to_string().as_str());
    }
}

/// The trace headers of a platform call: a client span, child of the current event's span,
/// and its context. The span is ended by [`PlatformCall::finish`] (or when dropped).
pub(crate) struct PlatformCall {
    cx: Context,
    pub(crate) headers: Vec<(&'static str, String)>,
}

impl PlatformCall {
    pub(crate) fn start(method: &str, host: &str) -> PlatformCall {
        let parent = Context::current();
        let cx = match parent.get::<Event>() {
            Some(Event {
                tracer: Some(tracer),
                ..
            }) => {
                let span = tracer
                    .span_builder(format!("{method} {host}"))
                    .with_kind(SpanKind::Client)
                    .with_attributes([
                        KeyValue::new("http.request.method", method.to_owned()),
                        KeyValue::new("server.address", host.to_owned()),
                    ])
                    .start_with_context(tracer, &parent);
                parent.with_span(span)
            }
            // Not exported: only the context is needed, for the headers.
            Some(Event { tracer: None, .. }) => parent.with_remote_span_context(child_of(&parent)),
            None => parent,
        };
        let headers = trace_headers(&cx).collect();
        PlatformCall { cx, headers }
    }

    /// Ends the call's span with the answer's status (`None`: no answer).
    pub(crate) fn finish(self, status: Option<u16>) {
        let span = self.cx.span();
        match status {
            Some(code) => {
                span.set_attribute(KeyValue::new("http.response.status_code", i64::from(code)));
                if code >= 400 {
                    span.set_status(Status::error(format!("HTTP {code}")));
                }
            }
            None => span.set_status(Status::error("no answer")),
        }
        span.end();
    }
}

/// Records the delivery latency of a post the platform just accepted, from the origin time
/// of the current chain.
pub(crate) fn record_delivery_latency(channel: &str) {
    if let Some(Event { origin, .. }) = Context::current().get::<Event>() {
        let elapsed_ms = threadline_schemas::now_ms().saturating_sub(*origin);
        metrics::histogram!(m::DELIVERY_SECONDS, "channel" => channel.to_owned())
            .record(elapsed_ms as f64 / 1000.0);
    }
}

/// A header by name; NATS publishers in other languages may capitalise it.
fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|v| v.as_str()).or_else(|| {
        headers
            .iter()
            .find(|(key, _)| AsRef::<str>::as_ref(*key).eq_ignore_ascii_case(name))
            .and_then(|(_, values)| values.first())
            .map(|v| v.as_str())
    })
}

struct Nats<'a>(&'a HeaderMap);

impl Extractor for Nats<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        header(self.0, key)
    }
    fn keys(&self) -> Vec<&str> {
        self.0
            .iter()
            .map(|(key, _)| AsRef::<str>::as_ref(key))
            .collect()
    }
}

/// The W3C headers of `cx`'s span context, as `TraceContextPropagator::inject_context`
/// writes them, less an empty `tracestate` (the propagator writes one even when the trace
/// has no state; it says nothing, and every header costs a parse and allocations at every
/// hop). Written here because the propagator formats its ids through `format!` with
/// padded hex, which is costly for a header written once per hop and once per platform call;
/// reading headers still goes through it (`extract_with_context`), where a foreign
/// publisher's header is validated.
fn trace_headers(cx: &Context) -> impl Iterator<Item = (&'static str, String)> {
    let span = cx.span();
    let span_context = span.span_context();
    let (parent, state) = if span_context.is_valid() {
        (
            Some((TRACEPARENT, traceparent(span_context))),
            Some(span_context.trace_state().header()).filter(|state| !state.is_empty()),
        )
    } else {
        (None, None)
    };
    parent
        .into_iter()
        .chain(state.map(|state| (TRACESTATE, state)))
}

/// `00-<trace id>-<span id>-<flags>`: version 00, lower-case hex, only the sampled flag.
fn traceparent(span_context: &SpanContext) -> String {
    let mut header = [b'-'; 55];
    header[..2].copy_from_slice(b"00");
    let flags = (span_context.trace_flags() & TraceFlags::SAMPLED).to_u8();
    let fields: [(&[u8], std::ops::Range<usize>); 3] = [
        (&span_context.trace_id().to_bytes(), 3..35),
        (&span_context.span_id().to_bytes(), 36..52),
        (&[flags], 53..55),
    ];
    for (bytes, at) in fields {
        hex::encode_to_slice(bytes, &mut header[at]).expect("two hex digits per byte");
    }
    String::from_utf8(header.to_vec()).expect("hex and dashes are ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_inbound_traceparent_is_continued_and_a_missing_one_starts_a_trace() {
        let telemetry = Telemetry::new(&Config::default()).unwrap();
        let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
        let mut inbound = HeaderMap::new();
        inbound.insert(
            "Traceparent",
            format!("00-{trace_id}-00f067aa0ba902b7-01").as_str(),
        );
        let (nats, http) = telemetry
            .in_event_span(&"router", "tl.in.completion", Some(&inbound), 1, async {
                let mut out = HeaderMap::new();
                inject_nats(&mut out);
                let call = PlatformCall::start("POST", "example.invalid");
                let http = call.headers.clone();
                call.finish(Some(200));
                (out, http)
            })
            .await;
        let forwarded = header(&nats, TRACEPARENT).unwrap();
        assert!(forwarded.starts_with(&format!("00-{trace_id}-")));
        assert!(forwarded.ends_with("-01"), "sampled flag kept: {forwarded}");
        assert_ne!(forwarded, format!("00-{trace_id}-00f067aa0ba902b7-01"));
        assert_eq!(header(&nats, ORIGIN_MS), Some("1"));
        assert!(http[0].1.starts_with(&format!("00-{trace_id}-")));
        assert_ne!(http[0].1, forwarded, "the platform call is a child span");

        let fresh = telemetry
            .in_event_span(&"router", "tl.in.completion", None, 1, async {
                let mut out = HeaderMap::new();
                inject_nats(&mut out);
                out
            })
            .await;
        let started = header(&fresh, TRACEPARENT).unwrap();
        assert!(!started.contains(trace_id));
        assert_eq!(started.len(), 55);
        assert!(
            started.ends_with("-00"),
            "a new trace is not sampled: {started}"
        );
        assert_eq!(
            header(&fresh, TRACESTATE),
            None,
            "an empty state is not sent"
        );
    }

    /// The headers written by hand are the ones the SDK's propagator writes (less an empty
    /// `tracestate`), for sampled and unsampled contexts, with and without state, and none
    /// for an invalid context.
    #[test]
    fn trace_headers_are_the_propagators() {
        let ids = RandomIdGenerator::default();
        let states: [opentelemetry::trace::TraceState; 2] =
            [Default::default(), "vendor=abc,other=x y".parse().unwrap()];
        for (flags, state) in [TraceFlags::SAMPLED, TraceFlags::default()]
            .into_iter()
            .flat_map(|flags| states.iter().map(move |state| (flags, state)))
        {
            let context = SpanContext::new(
                ids.new_trace_id(),
                ids.new_span_id(),
                flags,
                true,
                state.clone(),
            );
            let cx = Context::new().with_remote_span_context(context);
            let mut expected = std::collections::HashMap::new();
            TraceContextPropagator::new().inject_context(&cx, &mut expected);
            expected.retain(|_, value: &mut String| !value.is_empty());
            let written: std::collections::HashMap<String, String> = trace_headers(&cx)
                .map(|(name, value)| (name.to_owned(), value))
                .collect();
            assert_eq!(written, expected);
            assert!(written[TRACEPARENT].ends_with(if flags.is_sampled() { "-01" } else { "-00" }));
        }
        assert_eq!(trace_headers(&Context::new()).count(), 0);
    }

    #[tokio::test]
    async fn without_an_exporter_an_unsampled_parent_stays_unsampled_and_keeps_its_state() {
        let telemetry = Telemetry::new(&Config::default()).unwrap();
        let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
        let mut inbound = HeaderMap::new();
        inbound.insert(
            TRACEPARENT,
            format!("00-{trace_id}-00f067aa0ba902b7-00").as_str(),
        );
        inbound.insert(TRACESTATE, "vendor=abc");
        let (first, second, http) = telemetry
            .in_event_span(&"deliver", "tl.deliver.x", Some(&inbound), 7, async {
                let (mut one, mut two) = (HeaderMap::new(), HeaderMap::new());
                inject_nats(&mut one);
                inject_nats(&mut two);
                let call = PlatformCall::start("POST", "example.invalid");
                (one, two, call.headers.clone())
            })
            .await;
        let forwarded = header(&first, TRACEPARENT).unwrap();
        assert!(
            forwarded.starts_with(&format!("00-{trace_id}-")),
            "{forwarded}"
        );
        assert!(forwarded.ends_with("-00"), "{forwarded}");
        assert_ne!(
            forwarded,
            format!("00-{trace_id}-00f067aa0ba902b7-00"),
            "the event is a span of its own"
        );
        assert_eq!(header(&first, TRACESTATE), Some("vendor=abc"));
        assert_eq!(header(&first, ORIGIN_MS), Some("7"));
        // One span per event: everything it publishes names the same parent.
        assert_eq!(header(&second, TRACEPARENT), Some(forwarded));
        let platform = &http.iter().find(|(k, _)| *k == TRACEPARENT).unwrap().1;
        assert!(platform.starts_with(&format!("00-{trace_id}-")));
        assert_ne!(platform, forwarded, "the platform call is a child span");
    }
}
