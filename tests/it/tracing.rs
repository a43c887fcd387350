//! Traces: a worker exporting over OTLP/HTTP to a receiver on loopback that decodes the
//! protobuf bodies, with jobs added by a Node backend traced by `bullmq-otel`. The job span must
//! continue the producer's trace, every step must have its span, and the trace context must
//! reach the OpenAI mock, the published events and the JSON logs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use prost::Message as _;
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use super::helpers::queue::{DEADLINE, PublishedEvents, QueueSetup, asset_server, payload};
use super::helpers::{PgSchema, edits_ok, node, square_mask_png, unique};

/// One span as the receiver decoded it, with its resource's service name.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    name: String,
    kind: i32,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    status: i32,
    attributes: HashMap<String, String>,
}

impl Received {
    fn attribute(&self, key: &str) -> &str {
        self.attributes
            .get(key)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("span {:?} has no attribute {key}: {:?}", self.name, self.attributes))
    }
}

/// What the receiver has decoded so far, and a wake-up for each export that arrives.
#[derive(Clone, Default)]
struct Inbox {
    spans: Arc<Mutex<Vec<Received>>>,
    arrived: Arc<tokio::sync::Notify>,
}

/// An OTLP/HTTP receiver: `POST /v1/traces` with a protobuf `ExportTraceServiceRequest`.
struct OtlpReceiver {
    endpoint: String,
    inbox: Inbox,
}

async fn export(
    axum::extract::State(inbox): axum::extract::State<Inbox>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::http::StatusCode {
    assert_eq!(
        headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/x-protobuf"),
        "OTLP/HTTP with protobuf bodies"
    );
    let request = ExportTraceServiceRequest::decode(body).expect("a protobuf export request");
    inbox.spans.lock().unwrap().extend(decode(request));
    inbox.arrived.notify_waiters();
    axum::http::StatusCode::OK
}

impl OtlpReceiver {
    async fn start() -> Self {
        let inbox = Inbox::default();
        let router = axum::Router::new()
            .route("/v1/traces", axum::routing::post(export))
            .with_state(inbox.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self { endpoint, inbox }
    }

    /// Waits until the spans received so far satisfy `done`, and returns them.
    async fn wait_until(&self, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        tokio::time::timeout(DEADLINE, async {
            loop {
                let notified = self.inbox.arrived.notified();
                {
                    let spans = self.inbox.spans.lock().unwrap();
                    if done(&spans) {
                        return spans.clone();
                    }
                }
                notified.await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("spans never arrived: {:#?}", self.inbox.spans.lock().unwrap()))
    }
}

fn decode(request: ExportTraceServiceRequest) -> Vec<Received> {
    let mut received = Vec::new();
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .map(|resource| attributes(&resource.attributes))
            .and_then(|mut attributes| attributes.remove("service.name"))
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                received.push(Received {
                    service: service.clone(),
                    name: span.name.clone(),
                    kind: span.kind,
                    trace_id: hex::encode(&span.trace_id),
                    span_id: hex::encode(&span.span_id),
                    parent_span_id: hex::encode(&span.parent_span_id),
                    status: span.status.as_ref().map_or(0, |status| status.code),
                    attributes: attributes(&span.attributes),
                });
            }
        }
    }
    received
}

/// Attribute values as text (numbers and booleans printed), enough for the assertions.
fn attributes(pairs: &[KeyValue]) -> HashMap<String, String> {
    pairs
        .iter()
        .filter_map(|pair| {
            let value = match pair.value.as_ref()?.value.as_ref()? {
                AnyValue::StringValue(text) => text.clone(),
                AnyValue::IntValue(number) => number.to_string(),
                AnyValue::DoubleValue(number) => number.to_string(),
                AnyValue::BoolValue(flag) => flag.to_string(),
                other => format!("{other:?}"),
            };
            Some((pair.key.clone(), value))
        })
        .collect()
}

/// The trace id inside a `traceparent` header value.
fn trace_of(traceparent: &str) -> &str {
    traceparent.split('-').nth(1).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traced_node_producers_jobs_continue_its_trace_through_every_step_to_openai_events_and_logs() {
    let schema = PgSchema::new().await;
    let setup = QueueSetup::new("traces");
    let receiver = OtlpReceiver::start().await;
    let assets = asset_server(std::time::Duration::ZERO).await;
    Mock::given(method("GET"))
        .and(path("/mask.png"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(square_mask_png(64, 64), "image/png"))
        .mount(&assets)
        .await;
    let openai = wiremock::MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/images/edits"))
        .respond_with(edits_ok("req-traced"))
        .mount(&openai)
        .await;
    let (good, foreign) = (unique("traced-ok"), unique("traced-foreign"));
    schema.insert_design(&good, "tenant-t").await;
    schema.insert_design(&foreign, "tenant-other").await;
    let mut events = PublishedEvents::subscribe().await;
    let openai_url = format!("{}/v1", openai.uri());
    let mut worker = setup.spawn_worker(
        &schema.url(),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint.as_str()),
            // Export each batch within 100 ms instead of 5 s.
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("LOG_FORMAT", "json"),
            ("RENDER_PROVIDERS", "openai"),
            ("OPENAI_API_KEY", "sk-test-abcdef0123456789"),
            ("OPENAI_BASE_URL", &openai_url),
            ("OPENAI_IMAGE_MODEL", "gpt-image-1"),
            ("WORKER_CONCURRENCY", "1"),
        ],
    );
    let mut with_mask = payload(&good, "tenant-t", &format!("{}/base.png", assets.uri()));
    with_mask["maskUrl"] = json!(format!("{}/mask.png", assets.uri()));
    let added = node(
        "traced-add.mjs",
        json!({
            "queue": setup.queue,
            "prefix": setup.prefix,
            "jobs": [
                {"name": "render", "data": with_mask},
                {"name": "render", "data": payload(&foreign, "tenant-t", &format!("{}/base.png", assets.uri()))},
            ],
        }),
    )
    .await;
    let producer = |index: usize| -> (String, String, String) {
        let job = &added["jobs"][index];
        let text = |key: &str| {
            job[key]
                .as_str()
                .unwrap_or_else(|| panic!("no {key} in {added}"))
                .to_owned()
        };
        (text("id"), text("traceId"), text("spanId"))
    };
    let (good_job, good_trace, good_parent) = producer(0);
    let (foreign_job, foreign_trace, foreign_parent) = producer(1);

    let completed = events.wait_for(&good, "design.render.completed").await;
    events.wait_for(&foreign, "design.render.failed").await;
    let log_line = worker.wait_for_log(&format!("Completed design {good}")).await;

    let job_span_name = format!("process {}", setup.queue);
    let spans = receiver
        .wait_until(|spans| {
            spans.iter().filter(|span| span.name == job_span_name).count() == 2
                && spans
                    .iter()
                    .any(|span| span.name == "publish" && span.trace_id == foreign_trace)
        })
        .await;

    // The job span is bullmq-otel's consumer span, a child of the producer's span.
    let job = spans
        .iter()
        .find(|span| span.name == job_span_name && span.trace_id == good_trace)
        .unwrap_or_else(|| panic!("no job span in the producer's trace {good_trace}: {spans:#?}"));
    assert_eq!(job.parent_span_id, good_parent, "the producer's span is the parent");
    assert_eq!(job.kind, SpanKind::Consumer as i32);
    assert_eq!(job.service, "design-render");
    assert_eq!(job.attribute("bullmq.queue.name"), setup.queue);
    assert_eq!(job.attribute("bullmq.queue.operation"), "process");
    assert_eq!(job.attribute("bullmq.job.id"), good_job);
    assert_eq!(job.attribute("bullmq.job.name"), "render");
    assert_eq!(job.attribute("bullmq.job.attempts.made"), "0");
    assert!(job.attribute("bullmq.worker.name").contains(':'), "host:pid");
    assert_eq!(job.attribute("design.id"), good);
    assert_eq!(job.attribute("tenant.id"), "tenant-t");
    assert_eq!(job.attribute("provider"), "openai");
    assert_eq!(job.attribute("tokens"), "4270");
    assert_eq!(job.attribute("outcome"), "completed");
    assert_ne!(job.status, StatusCode::Error as i32);

    // Every step has its span in the job's trace, under the job span.
    let in_trace: Vec<&Received> = spans.iter().filter(|span| span.trace_id == good_trace).collect();
    let by_id: HashMap<&str, &Received> = in_trace.iter().map(|span| (span.span_id.as_str(), *span)).collect();
    let under_job = |span: &Received| {
        let mut parent = span.parent_span_id.as_str();
        while let Some(ancestor) = by_id.get(parent) {
            if ancestor.span_id == job.span_id {
                return true;
            }
            parent = ancestor.parent_span_id.as_str();
        }
        false
    };
    let named = |name: &str| -> Vec<&Received> { in_trace.iter().copied().filter(|span| span.name == name).collect() };
    for step in [
        "mark processing",
        "sanitize",
        "download base",
        "download mask",
        "decode",
        "provider attempt",
        "composite",
        "output",
        "upload",
        "record",
        "publish",
    ] {
        let found = named(step);
        assert!(!found.is_empty(), "no {step:?} span: {in_trace:#?}");
        assert!(
            found.iter().all(|span| under_job(span)),
            "{step:?} is not under the job span"
        );
    }
    for download in ["download base", "download mask"] {
        assert!(
            named(download)[0].attribute("bytes").parse::<u64>().unwrap() > 0,
            "{download}"
        );
    }
    let attempt = named("provider attempt")[0];
    assert_eq!(
        (attempt.attribute("provider"), attempt.attribute("outcome")),
        ("openai", "ok")
    );
    assert_eq!(attempt.attribute("model"), "gpt-image-1");
    assert_eq!(attempt.attribute("tokens"), "4270");
    assert!(attempt.attribute("cost.microcents").parse::<u64>().unwrap() > 0);
    let mut outputs: Vec<&str> = named("output").iter().map(|span| span.attribute("asset")).collect();
    outputs.sort_unstable();
    assert_eq!(outputs, ["composite"], "64x64 at 64x64: the composite is every size");
    let uploads = named("upload");
    assert_eq!(uploads.len(), 3, "composite, high-res, preview");
    assert!(uploads.iter().all(|span| span.attribute("backend") == "local"));
    assert!(
        uploads
            .iter()
            .all(|span| span.attribute("bytes").parse::<u64>().unwrap() > 0)
    );

    // The trace went on to OpenAI, into the event, and into the JSON log line.
    let requests = openai.received_requests().await.unwrap_or_default();
    let traceparent = requests
        .iter()
        .find(|request| request.url.path() == "/v1/images/edits")
        .and_then(|request| request.headers.get("traceparent"))
        .and_then(|value| value.to_str().ok())
        .expect("the edits request carries a traceparent");
    assert_eq!(trace_of(traceparent), good_trace);
    let attempt_span = traceparent.split('-').nth(2).unwrap_or_default();
    assert!(
        in_trace
            .iter()
            .any(|span| span.span_id == attempt_span && under_job(span)),
        "the request's parent is a span of the job"
    );
    let event_traceparent = completed["traceparent"]
        .as_str()
        .expect("the event carries a traceparent");
    assert_eq!(trace_of(event_traceparent), good_trace);
    let log: Value = serde_json::from_str(&log_line).expect("a JSON log line");
    assert_eq!(log["trace_id"], good_trace.as_str(), "{log}");
    assert!(
        in_trace.iter().any(|span| log["span_id"] == span.span_id.as_str()),
        "{log}"
    );

    // The failed job: its own producer's trace, the error's code and disposition.
    let failed = spans
        .iter()
        .find(|span| span.name == job_span_name && span.trace_id == foreign_trace)
        .expect("the failed job's span");
    assert_eq!(failed.parent_span_id, foreign_parent);
    assert_eq!(failed.attribute("bullmq.job.id"), foreign_job);
    assert_eq!(failed.attribute("error.code"), "design_not_found");
    assert_eq!(failed.attribute("error.disposition"), "abort");
    assert_eq!(failed.attribute("outcome"), "failed");
    assert_eq!(failed.status, StatusCode::Error as i32);
    assert!(worker.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_still_buffered_are_exported_when_the_worker_stops() {
    let schema = PgSchema::new().await;
    let setup = QueueSetup::new("traces-flush");
    let receiver = OtlpReceiver::start().await;
    let assets = asset_server(std::time::Duration::ZERO).await;
    let design = unique("flushed");
    schema.insert_design(&design, "tenant-f").await;
    let mut events = PublishedEvents::subscribe().await;
    let mut worker = setup.spawn_worker(
        &schema.url(),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint.as_str()),
            // Far longer than the test: only the flush at shutdown can deliver the spans.
            ("OTEL_BSP_SCHEDULE_DELAY", "600000"),
            ("OTEL_SERVICE_NAME", "renders-eu"),
            ("QUEUE_DRAIN_DELAY_SECONDS", "1"),
        ],
    );
    let queue = bullmq::Queue::with_options(&setup.queue, setup.queue_options())
        .await
        .unwrap();
    queue
        .add(
            "render",
            payload(&design, "tenant-f", &format!("{}/base.png", assets.uri())),
        )
        .await
        .unwrap();
    events.wait_for(&design, "design.render.completed").await;
    worker.wait_for_log(&format!("Completed design {design}")).await;
    assert!(
        receiver.inbox.spans.lock().unwrap().is_empty(),
        "nothing exported before the stop"
    );
    assert!(worker.terminate().await.success());
    let job_span_name = format!("process {}", setup.queue);
    let spans = receiver
        .wait_until(|spans| spans.iter().any(|span| span.name == job_span_name))
        .await;
    let job = spans.iter().find(|span| span.name == job_span_name).unwrap();
    assert_eq!(job.service, "renders-eu");
    assert_eq!(job.parent_span_id, "", "a job without a producer trace starts its own");
    assert!(
        spans
            .iter()
            .any(|span| span.name == "upload" && span.trace_id == job.trace_id)
    );
    queue.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_shot_render_is_one_trace_exported_before_the_command_exits() {
    let receiver = OtlpReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let base = super::helpers::project_file("examples/base.png");
    let mask = super::helpers::project_file("examples/mask.png");
    let output = tokio::process::Command::from(super::helpers::render_command(dir.path()))
        .args(["--base", base.to_str().unwrap(), "--mask", mask.to_str().unwrap()])
        .args(["--prompt", "weathered red brick", "--size", "256x256"])
        .args(["--normal-map", "--roughness-map"])
        .env(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            format!("{}/v1/traces", receiver.endpoint),
        )
        .env("OTEL_BSP_SCHEDULE_DELAY", "600000")
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    // Exported at exit: the spans are here once the command has returned.
    let spans = receiver.inbox.spans.lock().unwrap().clone();
    let root = spans
        .iter()
        .find(|span| span.name == "render")
        .unwrap_or_else(|| panic!("no render span: {spans:#?}"));
    assert_eq!(root.parent_span_id, "");
    assert!(spans.iter().all(|span| span.trace_id == root.trace_id), "one trace");
    let mut outputs: Vec<&str> = spans
        .iter()
        .filter(|span| span.name == "output")
        .map(|span| span.attribute("asset"))
        .collect();
    outputs.sort_unstable();
    // The example base is 512², the preview's size: the preview is the composite, not encoded
    // again.
    assert_eq!(outputs, ["composite", "high-res image", "normal map", "roughness map"]);
    let attempt = spans
        .iter()
        .find(|span| span.name == "provider attempt")
        .expect("a provider attempt span");
    assert_eq!(attempt.attribute("provider"), "builtin");
    assert!(
        !attempt.attributes.contains_key("model"),
        "the built-in fill is not a paid call"
    );
}
