//! The worker's admin HTTP server (`ADMIN_ADDR`): `/healthz` (the process answers), `/readyz`
//! (Redis and the database answer and the worker is not shutting down) and `/metrics`
//! (Prometheus text of every metric recorded through the `metrics` facade, then the queues' own
//! metrics in BullMQ's names).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// How often the recorder's upkeep folds recorded histogram samples into their buckets.
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// How long one readiness check may take before it counts as down.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// One readiness check in flight: `Err` says what is wrong.
pub type ProbeFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// A dependency the worker cannot work without, checked on every `/readyz`.
pub struct Probe {
    pub name: &'static str,
    pub check: Box<dyn Fn() -> ProbeFuture + Send + Sync>,
}

/// Prometheus text rendered elsewhere, appended to `/metrics`: the queue's own metrics in
/// BullMQ's names. `Err` says why they are missing this time.
pub type MetricsText = Box<dyn Fn() -> Pin<Box<dyn Future<Output = Result<String, String>> + Send>> + Send + Sync>;

/// What the routes read.
pub struct AdminState {
    pub probes: Vec<Probe>,
    /// Set when the worker starts shutting down: it is alive but takes no new work.
    pub shutting_down: AtomicBool,
    /// The process's recorder; `None` when no admin server runs (metrics are then not recorded).
    pub metrics: Option<PrometheusHandle>,
    /// More metrics, appended to ours: those of the queue, read from Redis on each scrape.
    pub queue_metrics: Option<MetricsText>,
}

/// The process-wide Prometheus recorder, installed on first use (a process has one recorder;
/// later calls get the same handle). Durations get buckets from 5 ms to 5 min.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
                ])
                .unwrap_or_else(|_| PrometheusBuilder::new());
            match builder.install_recorder() {
                Ok(handle) => handle,
                // Another recorder is installed (an embedding program): render our own, empty.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            }
        })
        .clone()
}

/// Serves the admin routes, and `more` (the dashboard's) when given, on `listener` until
/// `stop` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AdminState>,
    more: Option<axum::Router>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut router = axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state);
    if let Some(more) = more {
        router = router.merge(more);
    }
    axum::serve(listener, router).with_graceful_shutdown(stop).await
}

async fn readyz(axum::extract::State(state): axum::extract::State<Arc<AdminState>>) -> Response {
    let checks = state.probes.iter().map(|probe| async move {
        let outcome = match tokio::time::timeout(PROBE_TIMEOUT, (probe.check)()).await {
            Ok(outcome) => outcome,
            Err(_) => Err(format!("no answer within {} s", PROBE_TIMEOUT.as_secs())),
        };
        (probe.name, outcome)
    });
    let mut down = serde_json::Map::new();
    for (name, outcome) in futures_util::future::join_all(checks).await {
        if let Err(reason) = outcome {
            down.insert(name.to_owned(), reason.into());
        }
    }
    let shutting_down = state.shutting_down.load(Ordering::Acquire);
    let ready = down.is_empty() && !shutting_down;
    let body = serde_json::json!({
        "ready": ready,
        "shuttingDown": shutting_down,
        "down": down,
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

async fn metrics(axum::extract::State(state): axum::extract::State<Arc<AdminState>>) -> Response {
    let mut text = state.metrics.as_ref().map(PrometheusHandle::render).unwrap_or_default();
    if let Some(queue_metrics) = &state.queue_metrics {
        // A scrape without the queue's metrics beats a failed scrape: ours still count.
        match tokio::time::timeout(PROBE_TIMEOUT, queue_metrics()).await {
            Ok(Ok(queue)) => {
                if !text.is_empty() && !text.ends_with('\n') {
                    text.push('\n');
                }
                text.push_str(&queue);
                text.push('\n');
            }
            Ok(Err(error)) => tracing::debug!("The queue's metrics are missing from this scrape: {error}"),
            Err(_) => tracing::debug!("The queue's metrics are missing from this scrape: Redis did not answer in time"),
        }
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        text,
    )
        .into_response()
}
