//! The worker's admin server: `/healthz`, `/readyz` (Redis, database, shutdown) and `/metrics`,
//! against a private `redis-server` the test can stop and start again, so the shared Redis is
//! never touched.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bullmq::{Queue, QueueOptions};
use serde_json::Value;

use super::helpers::queue::{DEADLINE, HeldAssetServer, QueueSetup, payload};
use super::helpers::{PgSchema, unique};

/// A `redis-server` of this test alone, on a free port.
struct PrivateRedis {
    port: u16,
    process: Option<Child>,
}

impl PrivateRedis {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("free port")
            .port();
        let mut redis = Self { port, process: None };
        redis.restart();
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn restart(&mut self) {
        let process = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.process = Some(process);
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(started.elapsed() < DEADLINE, "private redis did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The base URL of a worker's admin server, from its start-up line.
async fn admin_base(worker: &mut super::helpers::queue::WorkerProcess) -> String {
    let line = worker.wait_for_log("Admin server on http://").await;
    line.split("http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .map(|address| format!("http://{address}"))
        .expect("the admin address")
}

async fn get(url: &str) -> (u16, String) {
    let response = reqwest::get(url).await.expect("admin server answers");
    (response.status().as_u16(), response.text().await.expect("body"))
}

/// `/readyz` until it answers `status`, for changes the worker only notices on its next check
/// (a Redis that is back): polled, since nothing announces a reconnect.
async fn readyz_becomes(base: &str, status: u16) -> Value {
    let started = Instant::now();
    loop {
        let (got, body) = get(&format!("{base}/readyz")).await;
        if got == status {
            return serde_json::from_str(&body).expect("JSON body");
        }
        assert!(started.elapsed() < DEADLINE, "/readyz stayed {got}: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The value of one sample line of a Prometheus text exposition, e.g.
/// `design_render_jobs_total{code="ok",outcome="completed"}`.
fn sample(metrics: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metrics.lines().filter(|line| !line.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, rest) = series.split_once('{').unwrap_or((series, "}"));
        let wanted = metric == name
            && labels
                .iter()
                .all(|(label, value)| rest.contains(&format!("{label}=\"{value}\"")));
        wanted.then(|| value.parse().ok()).flatten()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_and_metrics_follow_jobs_redis_and_shutdown() {
    super::helpers::init();
    let mut redis = PrivateRedis::start();
    let schema = PgSchema::new().await;
    let setup = QueueSetup::new("admin");
    let assets = HeldAssetServer::start().await;
    let mut worker = setup.spawn_worker(
        &schema.url(),
        &[
            ("REDIS_URL", redis.url().as_str()),
            ("WORKER_CONCURRENCY", "1"),
            ("QUEUE_DRAIN_DELAY_SECONDS", "1"),
        ],
    );
    let base = admin_base(&mut worker).await;

    assert_eq!(get(&format!("{base}/healthz")).await.0, 200);
    let ready = readyz_becomes(&base, 200).await;
    assert_eq!(ready["ready"], true, "{ready}");

    // One completed job and one that fails for good (the design belongs to another tenant).
    let queue = Queue::with_options(
        &setup.queue,
        QueueOptions::new()
            .connection(bullmq::options::RedisConnectionOptions::new().url(redis.url()))
            .prefix(setup.prefix.clone()),
    )
    .await
    .unwrap();
    let (good, foreign) = (unique("admin-ok"), unique("admin-foreign"));
    schema.insert_design(&good, "tenant-m").await;
    schema.insert_design(&foreign, "tenant-other").await;
    assets.release();
    queue
        .add("render", payload(&good, "tenant-m", assets.base_url()))
        .await
        .unwrap();
    queue
        .add("render", payload(&foreign, "tenant-m", assets.base_url()))
        .await
        .unwrap();
    worker.wait_for_log(&format!("Completed design {good}")).await;
    worker.wait_for_log("failed for good").await;
    let (status, metrics) = get(&format!("{base}/metrics")).await;
    assert_eq!(status, 200);
    let jobs = |outcome, code| {
        sample(
            &metrics,
            "design_render_jobs_total",
            &[("outcome", outcome), ("code", code)],
        )
    };
    assert_eq!(jobs("completed", "ok"), Some(1.0), "{metrics}");
    assert_eq!(jobs("failed", "design_not_found"), Some(1.0), "{metrics}");
    assert_eq!(
        sample(&metrics, "design_render_job_duration_seconds_count", &[]),
        Some(2.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            "design_render_step_duration_seconds_count",
            &[("step", "upload")]
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "design_render_jobs_in_flight", &[]),
        Some(0.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            "design_render_provider_requests_total",
            &[("provider", "builtin"), ("outcome", "ok")]
        ),
        Some(1.0),
        "one provider call: the foreign design failed before it; {metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            "design_render_provider_latency_seconds_count",
            &[("provider", "builtin")]
        ),
        Some(1.0),
        "{metrics}"
    );
    assert!(!metrics.contains(&good), "no id is a label");

    // Shutting down: alive, but not ready while the grace lets in-flight work finish.
    let late = unique("admin-late");
    schema.insert_design(&late, "tenant-m").await;
    let mut held = HeldAssetServer::start().await;
    queue
        .add("render", payload(&late, "tenant-m", held.base_url()))
        .await
        .unwrap();
    held.request_arrived().await;
    worker.signal("TERM");
    worker.wait_for_log("Shutting down").await;
    let (status, body) = get(&format!("{base}/readyz")).await;
    assert_eq!(status, 503, "{body}");
    let body: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(body["shuttingDown"], true, "{body}");
    assert_eq!(get(&format!("{base}/healthz")).await.0, 200);
    held.release();
    assert!(worker.exit_status().await.success());
    queue.close().await;

    // Redis down: not ready, naming Redis (and not the database); back: ready again. A second
    // worker, since the first has stopped.
    let mut worker = setup.spawn_worker(&schema.url(), &[("REDIS_URL", redis.url().as_str())]);
    let base = admin_base(&mut worker).await;
    readyz_becomes(&base, 200).await;
    redis.stop();
    let down = readyz_becomes(&base, 503).await;
    assert!(down["down"]["redis"].is_string(), "{down}");
    assert!(down["down"].get("database").is_none(), "{down}");
    redis.restart();
    readyz_becomes(&base, 200).await;
}
