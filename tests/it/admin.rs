//! The worker's admin server: `/healthz`, `/readyz` (Redis, database, shutdown) and `/metrics`,
//! against a private `redis-server` the test can stop and start again, so the shared Redis is
//! never touched.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bullmq::{Queue, QueueOptions};
use serde_json::Value;

use super::helpers::queue::{DEADLINE, HeldAssetServer, QueueSetup, payload};
use super::helpers::{PgSchema, sample, unique};

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

/// Every line is a comment (`# HELP`/`# TYPE` with a metric name) or a sample: a metric name,
/// optional `{label="value",…}` and a number, as Prometheus' text format has it; every sample's
/// metric was declared by a `# TYPE` line.
fn assert_prometheus_text(metrics: &str) {
    let name_ok = |name: &str| {
        !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            && !name.starts_with(|c: char| c.is_ascii_digit())
    };
    let mut typed = std::collections::HashSet::new();
    for line in metrics.lines().filter(|line| !line.trim().is_empty()) {
        if let Some(comment) = line.strip_prefix("# ") {
            let mut words = comment.split_whitespace();
            let kind = words.next().unwrap_or_default();
            let name = words.next().unwrap_or_default();
            assert!(
                matches!(kind, "HELP" | "TYPE") && name_ok(name),
                "bad comment line {line:?}"
            );
            if kind == "TYPE" {
                typed.insert(name.to_owned());
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value in {line:?}"));
        assert!(
            value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value),
            "bad value in {line:?}"
        );
        let name = match series.split_once('{') {
            Some((name, labels)) => {
                let labels = labels
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels in {line:?}"));
                for pair in labels.split(',').map(str::trim).filter(|pair| !pair.is_empty()) {
                    let (label, quoted) = pair.split_once('=').unwrap_or_else(|| panic!("bad label in {line:?}"));
                    assert!(
                        name_ok(label) && quoted.starts_with('"') && quoted.ends_with('"'),
                        "bad label in {line:?}"
                    );
                }
                name
            }
            None => series,
        };
        assert!(name_ok(name), "bad metric name in {line:?}");
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix).filter(|base| typed.contains(*base)))
            .unwrap_or(name);
        assert!(typed.contains(family), "{name} has no # TYPE line");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paid_call_moves_tokens_and_cost_and_failures_open_the_providers_breaker() {
    super::helpers::init();
    let schema = PgSchema::new().await;
    let setup = QueueSetup::new("admin-paid");
    let assets = super::helpers::queue::asset_server(Duration::ZERO).await;
    let openai = wiremock::MockServer::start().await;
    // The first call is paid for; every later one meets a provider outage.
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .and(wiremock::matchers::path("/v1/images/edits"))
        .respond_with(super::helpers::edits_ok("req-paid"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&openai)
        .await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .and(wiremock::matchers::path("/v1/images/edits"))
        .respond_with(wiremock::ResponseTemplate::new(503))
        .mount(&openai)
        .await;
    let openai_url = format!("{}/v1", openai.uri());
    let mut worker = setup.spawn_worker(
        &schema.url(),
        &[
            ("RENDER_PROVIDERS", "openai,builtin"),
            ("OPENAI_API_KEY", "sk-test-abcdef0123456789"),
            ("OPENAI_BASE_URL", &openai_url),
            ("OPENAI_IMAGE_MODEL", "gpt-image-1"),
            ("CIRCUIT_BREAKER_THRESHOLD", "2"),
            ("CIRCUIT_BREAKER_TIMEOUT", "600000"),
            ("WORKER_CONCURRENCY", "1"),
        ],
    );
    let base = worker.admin_base().await;
    let scrape = || async { get(&format!("{base}/metrics")).await.1 };
    let paid = [("provider", "openai"), ("model", "gpt-image-1")];
    let breaker = [("provider", "openai")];
    let metrics = scrape().await;
    assert_eq!(
        sample(&metrics, "design_render_circuit_breaker_state", &breaker),
        Some(0.0),
        "{metrics}"
    );
    assert_eq!(sample(&metrics, "design_render_tokens_total", &paid), None, "{metrics}");

    let queue = Queue::with_options(&setup.queue, setup.queue_options()).await.unwrap();
    let url = format!("{}/base.png", assets.uri());
    let designs: Vec<String> = (0..3).map(|n| unique(&format!("paid-{n}"))).collect();
    for design in &designs {
        schema.insert_design(design, "tenant-p").await;
    }
    queue
        .add("render", payload(&designs[0], "tenant-p", &url))
        .await
        .unwrap();
    worker.wait_for_log(&format!("Completed design {}", designs[0])).await;
    let metrics = scrape().await;
    assert_eq!(
        sample(&metrics, "design_render_tokens_total", &paid),
        Some(4270.0),
        "{metrics}"
    );
    let cost = schema.design(&designs[0]).await.cost_cents;
    let micro_cents = sample(&metrics, "design_render_cost_microcents_total", &paid).expect("a cost sample");
    assert!(micro_cents > 0.0, "{metrics}");
    assert!(
        (micro_cents / 1e6 - f64::from(cost)).abs() <= 1.0,
        "{micro_cents} µ¢ vs the row's {cost} ¢"
    );
    assert_eq!(
        sample(&metrics, "design_render_circuit_breaker_state", &breaker),
        Some(0.0)
    );

    // Two outages in a row (the threshold) open the breaker; the built-in fill renders both.
    for design in &designs[1..] {
        queue.add("render", payload(design, "tenant-p", &url)).await.unwrap();
        worker.wait_for_log(&format!("Completed design {design}")).await;
    }
    let metrics = scrape().await;
    assert_eq!(
        sample(&metrics, "design_render_circuit_breaker_state", &breaker),
        Some(2.0),
        "{metrics}"
    );
    let requests = |provider, outcome| {
        sample(
            &metrics,
            "design_render_provider_requests_total",
            &[("provider", provider), ("outcome", outcome)],
        )
    };
    assert_eq!(requests("openai", "provider_unavailable"), Some(2.0), "{metrics}");
    assert_eq!(requests("builtin", "ok"), Some(2.0), "{metrics}");
    assert_eq!(
        sample(&metrics, "design_render_tokens_total", &paid),
        Some(4270.0),
        "failures cost nothing"
    );
    queue.close().await;
    assert!(worker.terminate().await.success());
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
    let base = worker.admin_base().await;

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
    // The queue's own metrics, in Node BullMQ's names.
    let bullmq = |name, labels: &[(&str, &str)]| sample(&metrics, name, labels);
    let queue_label = ("queue", setup.queue.as_str());
    assert_eq!(
        bullmq("bullmq_job_count", &[queue_label, ("state", "completed")]),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        bullmq("bullmq_job_count", &[queue_label, ("state", "failed")]),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        bullmq("bullmq_job_count", &[queue_label, ("state", "waiting")]),
        Some(0.0),
        "{metrics}"
    );
    assert_eq!(
        bullmq("bullmq_job_completed_total", &[queue_label]),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        bullmq("bullmq_job_failed_total", &[queue_label]),
        Some(1.0),
        "{metrics}"
    );
    assert_prometheus_text(&metrics);

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
    let base = worker.admin_base().await;
    readyz_becomes(&base, 200).await;
    redis.stop();
    let down = readyz_becomes(&base, 503).await;
    assert!(down["down"]["redis"].is_string(), "{down}");
    assert!(down["down"].get("database").is_none(), "{down}");
    redis.restart();
    readyz_becomes(&base, 200).await;
}
