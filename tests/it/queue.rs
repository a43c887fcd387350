//! The queue worker against real Redis (127.0.0.1:6379) and PostgreSQL (127.0.0.1:5432), with
//! the real `bullmq` npm package on the Node side. Every test uses its own queue name, key
//! prefix and PostgreSQL schema, so tests run in parallel and twice in a row.

use std::process::Command;
use std::time::Duration;

use bullmq::types::JobState;
use bullmq::{Queue, QueueEvents};
use design_render::store::{DesignRow, DesignStatus};
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use super::helpers::queue::{
    DEADLINE, HeldAssetServer, PublishedEvents, QueueSetup, WorkerProcess, asset_server, await_completed, payload,
    teardown,
};
use super::helpers::{PgSchema, REDIS_URL, edits_ok, gradient_png, node, unique};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_producer_sees_completed_retried_and_failed_jobs_and_events_are_published() {
    let schema = PgSchema::new().await;
    let setup = QueueSetup::new("compat");
    let assets = asset_server(Duration::ZERO).await;
    // The transient case: the first download answers 503, later ones succeed.
    Mock::given(method("GET"))
        .and(path("/flaky.png"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&assets)
        .await;
    Mock::given(method("GET"))
        .and(path("/flaky.png"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(gradient_png(64, 64), "image/png"))
        .with_priority(2)
        .mount(&assets)
        .await;
    let ok = unique("ok");
    let flaky = unique("flaky");
    let foreign = unique("foreign");
    schema.insert_design(&ok, "tenant-a").await;
    schema.insert_design(&flaky, "tenant-a").await;
    // Owned by another tenant: the job names tenant-a, so it must fail and change nothing.
    schema.insert_design(&foreign, "tenant-b").await;
    let mut published = PublishedEvents::subscribe().await;
    let _worker = setup.spawn_worker(&schema.url(), &[("WORKER_CONCURRENCY", "4")]);

    let options = json!({"attempts": 3, "backoff": {"type": "exponential", "delay": 200}});
    let base = format!("{}/base.png", assets.uri());
    let report = node(
        "scenario.mjs",
        json!({
            "queue": setup.queue,
            "prefix": setup.prefix,
            "timeoutMs": DEADLINE.as_millis() as u64,
            "jobs": [
                {"name": "render", "data": payload(&ok, "tenant-a", &base), "opts": options},
                {"name": "render", "data": payload(&flaky, "tenant-a", &format!("{}/flaky.png", assets.uri())), "opts": options},
                {"name": "render", "data": payload(&foreign, "tenant-a", &base), "opts": options},
            ]
        }),
    )
    .await;
    let results = report["results"].as_array().expect("results");

    // Completed: Node sees the state, the return value with URLs, and the QueueEvents event.
    let first = &results[0];
    assert_eq!(first["state"], "completed", "{first}");
    assert_eq!(first["attemptsMade"], 1, "{first}");
    let returned = &first["returnvalue"];
    assert_eq!(returned["designId"], ok.as_str());
    assert_eq!(returned["status"], "COMPLETED");
    for key in ["compositeTextureUrl", "previewUrl", "highResUrl"] {
        assert!(
            returned[key].as_str().is_some_and(|url| url.starts_with("file://")),
            "{key}: {returned}"
        );
    }
    assert!(returned["costTokens"].is_number() && returned["costCents"].is_number());
    let node_events = report["events"].as_array().expect("events");
    assert!(
        node_events
            .iter()
            .any(|e| e["event"] == "completed" && e["jobId"] == first["id"]),
        "QueueEvents saw no completed event: {node_events:?}"
    );

    // Transient: retried with backoff, then completed.
    let second = &results[1];
    assert_eq!(second["state"], "completed", "{second}");
    assert_eq!(second["attemptsMade"], 2, "{second}");
    assert_eq!(second["returnvalue"]["designId"], flaky.as_str());

    // Permanent: failed after one attempt with a clear reason, the row untouched.
    let third = &results[2];
    assert_eq!(third["state"], "failed", "{third}");
    assert_eq!(third["attemptsMade"], 1, "{third}");
    let reason = third["failedReason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("design_not_found") && reason.contains(&foreign),
        "{reason}"
    );

    assert_eq!(schema.design(&ok).await.status, DesignStatus::Completed);
    let flaky_row = schema.design(&flaky).await;
    assert_eq!(flaky_row.status, DesignStatus::Completed);
    assert!(flaky_row.high_res_url.is_some());
    let foreign_row = schema.design(&foreign).await;
    assert_eq!(foreign_row.status, DesignStatus::Pending);
    assert_eq!(foreign_row.metadata, None);

    // Events: the documented payloads.
    let completed = published.wait_for(&ok, "design.render.completed").await;
    for key in [
        "jobId",
        "tenantId",
        "userId",
        "attemptsMade",
        "costTokens",
        "costCents",
        "timestamp",
    ] {
        assert!(completed.get(key).is_some(), "{key} missing in {completed}");
    }
    assert_eq!(completed["compositeTextureUrl"], returned["compositeTextureUrl"]);
    assert_eq!(completed["userId"], "user-1");
    let retried = published.wait_for(&flaky, "design.render.completed").await;
    assert_eq!(retried["attemptsMade"], 2);
    let failed = published.wait_for(&foreign, "design.render.failed").await;
    assert_eq!(failed["error"]["code"], "design_not_found");
    assert_eq!(failed["error"]["permanent"], true);
    assert_eq!(failed["attemptsMade"], 1);
    assert_eq!(failed["tenantId"], "tenant-a");
    assert!(failed.get("compositeTextureUrl").is_none());
}

/// `design-render enqueue` on the setup's queue and prefix, with nothing else in its environment.
fn enqueue_command(setup: &QueueSetup) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_design-render"));
    command
        .arg("enqueue")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("REDIS_URL", REDIS_URL)
        .env("QUEUE_NAME", &setup.queue)
        .env("BULLMQ_PREFIX", &setup.prefix)
        .current_dir(setup.dir.path());
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_command_job_is_processed_by_a_node_worker() {
    let setup = QueueSetup::new("enqueue");
    let design = unique("enq");
    let output = enqueue_command(&setup)
        .args([
            "--base",
            "https://assets.example.com/base.png",
            "--prompt",
            "polished oak",
            "--design-id",
            &design,
            "--tenant-id",
            "tenant-e",
            "--size",
            "64x64",
            "--attempts",
            "4",
            "--backoff-ms",
            "250",
        ])
        .output()
        .expect("enqueue runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let job_id = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    assert!(!job_id.is_empty());

    let received = node(
        "consume.mjs",
        json!({"queue": setup.queue, "prefix": setup.prefix, "count": 1, "timeoutMs": DEADLINE.as_millis() as u64}),
    )
    .await;
    let job = &received[0];
    assert_eq!(job["id"], job_id.as_str());
    assert_eq!(job["name"], "render");
    assert_eq!(job["attempts"], 4);
    assert_eq!(job["backoff"]["type"], "exponential");
    assert_eq!(job["backoff"]["delay"], 250);
    assert_eq!(job["data"]["designId"], design.as_str());
    assert_eq!(job["data"]["tenantId"], "tenant-e");
    assert_eq!(job["data"]["baseTextureUrl"], "https://assets.example.com/base.png");
    assert_eq!(job["data"]["renderOptions"]["size"], "64x64");

    // Local files are refused before anything is queued.
    let refused = Command::new(env!("CARGO_BIN_EXE_design-render"))
        .args(["enqueue", "--base", "/etc/passwd", "--prompt", "x"])
        .env_clear()
        .env("REDIS_URL", REDIS_URL)
        .env("QUEUE_NAME", &setup.queue)
        .env("BULLMQ_PREFIX", &setup.prefix)
        .output()
        .expect("enqueue runs");
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("local files"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_limit_holds_across_two_workers_and_other_tenants_are_not_blocked() {
    let schema = PgSchema::new().await;
    let setup = QueueSetup::new("tenants");
    // Slow downloads make jobs long enough for overlaps to show.
    let assets = asset_server(Duration::from_millis(200)).await;
    let base = format!("{}/base.png", assets.uri());
    let busy: Vec<String> = (0..8).map(|i| unique(&format!("busy{i}"))).collect();
    let other: Vec<String> = (0..2).map(|i| unique(&format!("other{i}"))).collect();
    for design in &busy {
        schema.insert_design(design, "busy-tenant").await;
    }
    for design in &other {
        schema.insert_design(design, "other-tenant").await;
    }
    let env = [("WORKER_CONCURRENCY", "8"), ("DEFAULT_TENANT_CONCURRENCY", "2")];
    let _first = setup.spawn_worker(&schema.url(), &env);
    let _second = setup.spawn_worker(&schema.url(), &env);
    let events = setup.events().await;
    let queue = Queue::with_options(&setup.queue, setup.queue_options()).await.unwrap();
    for design in &busy {
        queue
            .add("render", payload(design, "busy-tenant", &base))
            .attempts(3)
            .await
            .unwrap();
    }
    for design in &other {
        queue
            .add("render", payload(design, "other-tenant", &base))
            .attempts(3)
            .await
            .unwrap();
    }
    await_completed(&events, busy.len() + other.len()).await;

    // Measured from the rows: every render's [startedAt, finishedAt] lies inside its lease.
    let interval = |row: &DesignRow| {
        let timings = &row.metadata.as_ref().expect("metadata")["timings"];
        let parse = |key: &str| {
            chrono::DateTime::parse_from_rfc3339(timings[key].as_str().expect("timestamp"))
                .expect("RFC 3339")
                .timestamp_millis()
        };
        (parse("startedAt"), parse("finishedAt"))
    };
    let mut busy_intervals = Vec::new();
    for design in &busy {
        let row = schema.design(design).await;
        assert_eq!(row.status, DesignStatus::Completed);
        busy_intervals.push(interval(&row));
    }
    let mut points: Vec<(i64, i32)> = busy_intervals.iter().flat_map(|(s, f)| [(*s, 1), (*f, -1)]).collect();
    // At equal times a finish comes before a start (a slot is released before it is reused).
    points.sort();
    let (mut in_flight, mut peak) = (0, 0);
    for (_, delta) in points {
        in_flight += delta;
        peak = peak.max(in_flight);
    }
    assert!(peak <= 2, "{peak} jobs of one tenant ran at once: {busy_intervals:?}");
    assert_eq!(peak, 2, "the limit of 2 was never used fully: {busy_intervals:?}");
    let last_busy = busy_intervals.iter().map(|(_, f)| *f).max().unwrap();
    for design in &other {
        let (_, finished) = interval(&schema.design(design).await);
        assert!(finished < last_busy, "other tenant's job waited behind the busy tenant");
    }
    // No slot is left held.
    assert_eq!(setup.held_slots("busy-tenant").await, 0);
    teardown(queue, events, setup, schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_worker_job_is_completed_by_another_worker_once() {
    let schema = PgSchema::new().await;
    let setup = QueueSetup::new("crash");
    let mut assets = HeldAssetServer::start().await;
    let design = unique("crash");
    schema.insert_design(&design, "tenant-c").await;
    let mut published = PublishedEvents::subscribe().await;
    // Short locks so the stalled check of the second worker finds the job soon after the kill.
    let env = [
        ("WORKER_CONCURRENCY", "1"),
        ("QUEUE_LOCK_DURATION_MS", "1000"),
        ("QUEUE_STALLED_INTERVAL_MS", "500"),
        ("TENANT_LEASE_SECONDS", "3"),
    ];
    let mut victim = setup.spawn_worker(&schema.url(), &env);
    let events = setup.events().await;
    let queue = Queue::with_options(&setup.queue, setup.queue_options()).await.unwrap();
    let job = queue
        .add("render", payload(&design, "tenant-c", assets.base_url()))
        .attempts(2)
        .await
        .unwrap();

    // Kill it mid-job: its download is held, so the job is active and the row PROCESSING.
    assets.request_arrived().await;
    assert_eq!(schema.design(&design).await.status, DesignStatus::Processing);
    victim.signal("KILL");
    victim.exit_status().await;
    let killed_at = chrono::Utc::now().timestamp_millis();
    assert_eq!(queue.get_job_state(job.id()).await.unwrap(), JobState::Active);

    let mut connection = redis::Client::open(REDIS_URL)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let lease_key = format!("{}:{}:tenant-slots:tenant-c", setup.prefix, setup.queue);
    let expiry: Option<f64> = redis::cmd("ZSCORE")
        .arg(&lease_key)
        .arg(job.id())
        .query_async(&mut connection)
        .await
        .unwrap();
    let expiry = expiry.expect("the killed worker held a lease");
    assert!(
        (expiry as i64) <= killed_at + 3_000 + 100,
        "the dead worker's slot would outlive the lease time"
    );

    assets.release();
    let _rescuer = setup.spawn_worker(&schema.url(), &env);
    let completed = await_completed(&events, 1).await;
    assert_eq!(completed, vec![job.id().to_owned()]);
    let row = schema.design(&design).await;
    assert_eq!(row.status, DesignStatus::Completed);
    assert!(row.composite_texture_url.is_some());
    assert_eq!(
        (row.cost_tokens, row.cost_cents),
        (0, 0),
        "built-in provider costs nothing"
    );
    let event = published.wait_for(&design, "design.render.completed").await;
    assert_eq!(event["jobId"], job.id());
    // Exactly one outcome was announced for this design.
    let announced = published.all_for(&design);
    assert_eq!(announced.len(), 1, "{announced:?}");
    assert_eq!(
        setup.held_slots("tenant-c").await,
        0,
        "slot released after the recovered job"
    );
    teardown(queue, events, setup, schema).await;
}

/// A worker of concurrency 1 that is mid-job: the job is active in BullMQ and its Design row
/// is PROCESSING, while its download is held by the asset server until the test releases it.
struct LongJob {
    schema: PgSchema,
    setup: QueueSetup,
    assets: HeldAssetServer,
    worker: WorkerProcess,
    events: QueueEvents,
    queue: Queue,
    design: String,
    job: String,
}

impl LongJob {
    async fn start(label: &str, grace_seconds: &str) -> Self {
        let schema = PgSchema::new().await;
        let setup = QueueSetup::new(label);
        let mut assets = HeldAssetServer::start().await;
        let worker = setup.spawn_worker(
            &schema.url(),
            &[("WORKER_CONCURRENCY", "1"), ("SHUTDOWN_GRACE_SECONDS", grace_seconds)],
        );
        let events = setup.events().await;
        let queue = Queue::with_options(&setup.queue, setup.queue_options()).await.unwrap();
        let design = unique(label);
        schema.insert_design(&design, "tenant-d").await;
        let job = queue
            .add("render", payload(&design, "tenant-d", assets.base_url()))
            .attempts(2)
            .await
            .unwrap()
            .id()
            .to_owned();
        assets.request_arrived().await;
        assert_eq!(queue.get_job_state(&job).await.unwrap(), JobState::Active);
        assert_eq!(schema.design(&design).await.status, DesignStatus::Processing);
        Self {
            schema,
            setup,
            assets,
            worker,
            events,
            queue,
            design,
            job,
        }
    }

    async fn finish(self) {
        teardown(self.queue, self.events, self.setup, self.schema).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_in_flight_job_finish_and_takes_no_new_one() {
    let mut run = LongJob::start("drain", "60").await;
    run.worker.signal("TERM");
    // Added after the signal: the draining worker must leave it for another worker.
    let late = unique("late");
    run.schema.insert_design(&late, "tenant-d").await;
    let late_job = run
        .queue
        .add("render", payload(&late, "tenant-d", run.assets.base_url()))
        .await
        .unwrap();
    // Once the worker has begun draining, the held download may finish: the worker's only slot
    // was busy until then, so the late job cannot have been taken before the drain began.
    run.worker.wait_for_log("Shutting down").await;
    run.assets.release();

    let status = run.worker.exit_status().await;
    assert!(status.success(), "worker exit status {status:?}");
    assert_eq!(run.queue.get_job_state(&run.job).await.unwrap(), JobState::Completed);
    assert_eq!(run.schema.design(&run.design).await.status, DesignStatus::Completed);
    assert_eq!(run.queue.get_job_state(late_job.id()).await.unwrap(), JobState::Waiting);
    assert_eq!(run.schema.design(&late).await.status, DesignStatus::Pending);
    assert_eq!(
        run.setup.held_slots("tenant-d").await,
        0,
        "the finished job released its slot"
    );
    run.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_signal_exits_at_once_and_leaves_the_job_to_stalled_recovery() {
    // The download is never released and the grace is long: only an immediate exit ends it.
    let mut run = LongJob::start("abort", "600").await;
    run.worker.signal("TERM");
    run.worker.signal("INT");
    let status = tokio::time::timeout(DEADLINE, run.worker.exit_status())
        .await
        .expect("the second signal ends the worker");
    assert_eq!(status.code(), Some(130), "{status:?}");
    // Nothing was finished in a hurry: the job is still active (its lock will lapse and the
    // stalled check of a live worker retries it) and the Design is not marked FAILED.
    assert_eq!(run.queue.get_job_state(&run.job).await.unwrap(), JobState::Active);
    assert_eq!(run.schema.design(&run.design).await.status, DesignStatus::Processing);
    run.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_running_past_the_grace_stops_at_its_next_step_and_is_left_for_another_worker() {
    let mut run = LongJob::start("grace", "1").await;
    let mut published = PublishedEvents::subscribe().await;
    run.worker.signal("TERM");
    // Still mid-download when the grace runs out: the job is asked to stop at the next step.
    run.worker.wait_for_log("shutdown grace of 1s is over").await;
    run.assets.release();
    run.worker
        .wait_for_log(&format!("Job {} (design {}) cancelled before", run.job, run.design))
        .await;
    let status = run.worker.exit_status().await;
    assert!(status.success(), "worker exit status {status:?}");

    // Nothing was settled: the job is still active for stalled recovery, the row still
    // PROCESSING, no attempt counted, nothing announced, and the tenant slot is free.
    let job = run.queue.get_job(&run.job).await.unwrap().expect("the job is kept");
    assert_eq!(run.queue.get_job_state(&run.job).await.unwrap(), JobState::Active);
    assert_eq!(job.attempts_made(), 0);
    assert_eq!(run.schema.design(&run.design).await.status, DesignStatus::Processing);
    let mut connection = redis::Client::open(REDIS_URL)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    assert_eq!(
        run.setup.held_slots("tenant-d").await,
        0,
        "the cancelled job released its slot"
    );
    let lock: Option<String> = redis::cmd("GET")
        .arg(format!("{}:{}:{}:lock", run.setup.prefix, run.setup.queue, run.job))
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(lock, None, "the lock was given up for the stalled check");

    // Another worker's stalled check hands it on, and it completes once.
    let _rescuer = run
        .setup
        .spawn_worker(&run.schema.url(), &[("QUEUE_STALLED_INTERVAL_MS", "300")]);
    assert_eq!(await_completed(&run.events, 1).await, vec![run.job.clone()]);
    assert_eq!(run.schema.design(&run.design).await.status, DesignStatus::Completed);
    published.wait_for(&run.design, "design.render.completed").await;
    assert_eq!(published.all_for(&run.design).len(), 1, "one outcome announced");
    run.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_logs_its_configuration_unused_spec_variables_and_each_outcome_by_default_and_carries_the_user_id() {
    let schema = PgSchema::new().await;
    let setup = QueueSetup::new("startup");
    let assets = asset_server(Duration::ZERO).await;
    // Trust authentication ignores the password, so it can be checked for in the logs.
    let database_url = schema
        .url()
        .replacen("postgres://postgres@", "postgres://postgres:pg-secret-pw@", 1);
    // A webhook URL without WEBHOOK_ENABLED=true would be silently ignored: it is reported.
    let mut worker = setup.spawn_worker(
        &database_url,
        &[
            ("WEBHOOK_URL", "https://hooks.example/render"),
            ("QUEUE_DRAIN_DELAY_SECONDS", "1"),
        ],
    );
    let unused = worker.wait_for_log("WEBHOOK_URL is set but not used").await;
    assert!(unused.contains("WEBHOOK_ENABLED is not true"), "{unused}");
    // No storage backend and no PUBLIC_BASE_URL: the operator is told the URLs stay local.
    let local = worker.wait_for_log("readable only on this machine").await;
    assert!(local.contains("WARN"), "{local}");
    let summary = worker.wait_for_log("(worker): database=").await;
    assert!(summary.contains("INFO"), "logged at info: {summary}");
    assert!(
        summary.contains(&format!(
            "database=postgres://postgres:***@127.0.0.1:5432/test?schema={} ",
            schema.name
        )),
        "{summary}"
    );
    assert!(!summary.contains("pg-secret-pw"), "{summary}");
    assert!(summary.contains(" providers=builtin "), "{summary}");
    assert!(summary.contains(&format!(" queue={} ", setup.queue)), "{summary}");

    // An e-mail-style user id is carried into the event as it was sent.
    let design = unique("startup");
    schema.insert_design(&design, "tenant-s").await;
    let mut published = PublishedEvents::subscribe().await;
    let queue = Queue::with_options(&setup.queue, setup.queue_options()).await.unwrap();
    let events = setup.events().await;
    let mut data = payload(&design, "tenant-s", &format!("{}/base.png", assets.uri()));
    data["userId"] = "ana.lopez+renders@example.com".into();
    queue.add("render", data).await.unwrap();
    worker.wait_for_log(&format!("Completed design {design}")).await;
    let event = published.wait_for(&design, "design.render.completed").await;
    assert_eq!(event["userId"], "ana.lopez+renders@example.com");
    assert!(worker.terminate().await.success());
    teardown(queue, events, setup, schema).await;
}

/// Records what the worker's validation makes of each delivery and fails the job with it.
struct ValidationRecorder {
    seen: tokio::sync::mpsc::UnboundedSender<(String, Result<String, String>)>,
}

#[async_trait::async_trait]
impl design_render::worker::JobHandler for ValidationRecorder {
    async fn handle(&self, delivery: design_render::worker::Delivery) -> design_render::worker::JobOutcome {
        use design_render::failure::JobError;
        use design_render::pipeline::RenderError;
        let result = design_render::worker::parse_request(&delivery.payload);
        let _ = self.seen.send((
            delivery.job_id.clone(),
            result
                .as_ref()
                .map(|r| r.design_id.to_string())
                .map_err(ToString::to_string),
        ));
        match result {
            Ok(_) => design_render::worker::JobOutcome::Completed(serde_json::Value::Null),
            Err(error) => design_render::worker::JobOutcome::Abort(JobError::Render(RenderError::Payload(error))),
        }
    }
}

/// The crate decodes job data lossily and turns text that is not JSON into `null`;
/// the consumer reads the stored bytes instead, so data that is not UTF-8 is refused (not
/// repaired with U+FFFD) and text that is not JSON is refused saying where and why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_data_that_is_not_utf8_or_not_json_is_refused_by_its_bytes() {
    let setup = QueueSetup::new("raw-data");
    let producer = Queue::with_options(&setup.queue, setup.queue_options())
        .await
        .expect("queue");
    let valid = json!({
        "designId": "raw-ok", "prompt": "p", "baseTextureUrl": "https://a.example/b.png", "tenantId": "t1"
    });
    let mut not_utf8 = valid.to_string().into_bytes();
    let at = not_utf8.windows(6).position(|w| w == b"raw-ok").expect("design id") + 3;
    not_utf8[at] = 0xFF;
    let cases: [(&str, Vec<u8>); 4] = [
        ("valid", valid.to_string().into_bytes()),
        ("not-utf8", not_utf8),
        (
            "lone-surrogate",
            br#"{"designId": "d\ud800", "tenantId": "t1"}"#.to_vec(),
        ),
        (
            "bom",
            [b"\xEF\xBB\xBF".as_slice(), valid.to_string().as_bytes()].concat(),
        ),
    ];
    let mut redis = redis::Client::open(REDIS_URL)
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let mut names = std::collections::HashMap::new();
    for (name, bytes) in &cases {
        let job = producer.add("render", &valid).await.expect("add");
        // Stored before any worker runs, as a producer that is not BullMQ's Node client could.
        let _: () = redis::cmd("HSET")
            .arg(format!("{}:{}:{}", setup.prefix, setup.queue, job.id()))
            .arg("data")
            .arg(bytes.as_slice())
            .query_async(&mut redis)
            .await
            .expect("HSET data");
        names.insert(job.id().to_owned(), *name);
    }
    producer.close().await;

    let (seen, mut results) = tokio::sync::mpsc::unbounded_channel();
    let mut config = design_render::config::Config::for_tests(setup.dir.path());
    config.queue.name = setup.queue.clone();
    config.queue.prefix = setup.prefix.clone();
    config.redis.url = Some(design_render::config::Secret::new(REDIS_URL));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(async move {
        design_render::queue::serve(
            std::sync::Arc::new(ValidationRecorder { seen }),
            &config.queue,
            &config.redis,
            async {
                let _ = stopped.await;
            },
        )
        .await
    });
    let mut outcomes = std::collections::HashMap::new();
    while outcomes.len() < cases.len() {
        let (job_id, result) = tokio::time::timeout(DEADLINE, results.recv())
            .await
            .expect("every job is delivered")
            .expect("the worker is running");
        outcomes.insert(names[job_id.as_str()], result);
    }
    let _ = stop.send(());
    worker.await.expect("worker task").expect("worker stops cleanly");

    assert_eq!(outcomes["valid"], Ok("raw-ok".to_owned()));
    assert_eq!(
        outcomes["not-utf8"],
        Err(format!(
            "invalid job payload: `payload` is not valid UTF-8: byte 0xFF does not belong to a UTF-8 sequence \
             at line 1 column {} (byte offset {at})",
            at + 1
        ))
    );
    assert_eq!(
        outcomes["lone-surrogate"],
        Err(
            "invalid job payload: `payload` has a lone UTF-16 surrogate escape (like \"\\ud800\"), which is not a \
             Unicode character at line 1 column 22"
                .to_owned()
        )
    );
    assert_eq!(
        outcomes["bom"],
        Err(
            "invalid job payload: `payload` starts with a byte-order mark (U+FEFF); send UTF-8 JSON without a BOM"
                .to_owned()
        )
    );
}

/// Answers OpenAI image edits: the first with 429 and `retry-after: 2`, the rest with an image;
/// notes when each request arrived (Unix milliseconds, the clock BullMQ's timestamps use).
#[derive(Clone, Default)]
struct RateLimitedOnce {
    arrivals: std::sync::Arc<std::sync::Mutex<Vec<u64>>>,
}

impl wiremock::Respond for RateLimitedOnce {
    fn respond(&self, _request: &wiremock::Request) -> ResponseTemplate {
        let mut arrivals = self.arrivals.lock().unwrap();
        arrivals.push(chrono::Utc::now().timestamp_millis() as u64);
        if arrivals.len() == 1 {
            ResponseTemplate::new(429)
                .insert_header("retry-after", "2")
                .set_body_json(json!({
                    "error": {"message": "Rate limit reached for images", "type": "requests",
                              "param": null, "code": "rate_limit_exceeded"}
                }))
        } else {
            edits_ok("req-after-429")
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_providers_retry_after_delays_the_next_attempt_at_least_that_long_and_counts_it() {
    let schema = PgSchema::new().await;
    let setup = QueueSetup::new("retry-after");
    let assets = asset_server(Duration::ZERO).await;
    let openai = wiremock::MockServer::start().await;
    let limiter = RateLimitedOnce::default();
    Mock::given(method("POST"))
        .and(path("/v1/images/edits"))
        .respond_with(limiter.clone())
        .mount(&openai)
        .await;
    let design = unique("retry-after");
    schema.insert_design(&design, "tenant-r").await;
    let openai_url = format!("{}/v1", openai.uri());
    let _worker = setup.spawn_worker(
        &schema.url(),
        &[
            ("RENDER_PROVIDERS", "openai"),
            ("OPENAI_API_KEY", "sk-test-abcdef0123456789"),
            ("OPENAI_BASE_URL", &openai_url),
            ("OPENAI_IMAGE_MODEL", "gpt-image-1"),
        ],
    );
    // BullMQ's own backoff would retry after 50 ms; the provider asked for 2 s.
    let report = node(
        "scenario.mjs",
        json!({
            "queue": setup.queue,
            "prefix": setup.prefix,
            "timeoutMs": DEADLINE.as_millis() as u64,
            "jobs": [{"name": "render", "data": payload(&design, "tenant-r", &format!("{}/base.png", assets.uri())),
                      "opts": {"attempts": 3, "backoff": {"type": "fixed", "delay": 50}}}],
        }),
    )
    .await;
    let result = &report["results"][0];
    assert_eq!(result["state"], "completed", "{result}");
    assert_eq!(result["attemptsMade"], 2, "the rate-limited attempt counts: {result}");
    let arrivals = limiter.arrivals.lock().unwrap().clone();
    assert_eq!(arrivals.len(), 2, "one refused call, one that succeeded");
    let waited = arrivals[1] - arrivals[0];
    assert!(waited >= 2000, "retried after {waited} ms, sooner than retry-after");
    // Node saw the job go back to `delayed` until the provider's time (plus at most a tenth
    // of jitter), not the backoff's.
    let delayed = report["events"]
        .as_array()
        .expect("events")
        .iter()
        .find(|event| event["event"] == "delayed")
        .unwrap_or_else(|| panic!("no delayed event: {report}"));
    let until = delayed["delay"]
        .as_u64()
        .or_else(|| delayed["delay"].as_str().and_then(|ms| ms.parse().ok()))
        .unwrap_or_else(|| panic!("no delay in {delayed}"));
    assert!(until >= arrivals[0] + 2000, "{delayed} (refused at {})", arrivals[0]);
    assert!(until <= arrivals[1], "{delayed} (retried at {})", arrivals[1]);
    let row = schema.design(&design).await;
    assert_eq!(row.status, DesignStatus::Completed);
    assert_eq!(row.cost_tokens, 4270, "only the call that succeeded was paid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_batch_adds_the_good_lines_in_order_and_names_the_bad_ones() {
    let setup = QueueSetup::new("enqueue-batch");
    let designs: Vec<String> = (0..3).map(|i| unique(&format!("enqb-{i}"))).collect();
    let line = |design: &str, base: &str| {
        json!({"designId": design, "prompt": "oak", "tenantId": "tenant-e", "baseTextureUrl": base}).to_string()
    };
    let lines = [
        line(&designs[0], "https://assets.example.com/a.png"),
        "{\"designId\": 7}".to_owned(),
        line(&designs[1], "/home/me/local.png"),
        String::new(),
        line(&designs[2], "https://assets.example.com/c.png"),
    ];
    let batch = setup.dir.path().join("jobs.jsonl");
    std::fs::write(&batch, lines.join("\n")).unwrap();
    let output = enqueue_command(&setup)
        .args(["--batch", batch.to_str().unwrap(), "--attempts", "2"])
        .output()
        .expect("enqueue runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("line 2: invalid job payload"), "{stderr}");
    assert!(
        stderr.contains("line 3: queued jobs cannot use local files"),
        "{stderr}"
    );
    assert!(stderr.contains("2 jobs added; failed lines: 2, 3"), "{stderr}");
    let ids: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(ids.len(), 2);

    let received = node(
        "consume.mjs",
        json!({"queue": setup.queue, "prefix": setup.prefix, "count": 2, "timeoutMs": DEADLINE.as_millis() as u64}),
    )
    .await;
    let received = received.as_array().expect("jobs");
    let by_id = |id: &str| {
        received
            .iter()
            .find(|job| job["id"] == id)
            .expect("the job reached Node")
    };
    assert_eq!(by_id(&ids[0])["data"]["designId"], designs[0].as_str());
    assert_eq!(by_id(&ids[1])["data"]["designId"], designs[2].as_str());
    assert_eq!(by_id(&ids[0])["attempts"], 2);
}

/// `--as-flow`: one parent job that runs once every render finished (one of three fails for
/// good: its design does not exist) and publishes one batch event with the counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_batch_as_flow_announces_the_batch_once_every_render_finished() {
    super::helpers::init();
    let schema = PgSchema::new().await;
    let setup = QueueSetup::new("enqueue-flow");
    let assets = asset_server(Duration::ZERO).await;
    let url = format!("{}/base.png", assets.uri());
    let designs: Vec<String> = (0..3).map(|i| unique(&format!("flow-{i}"))).collect();
    for design in &designs[..2] {
        schema.insert_design(design, "tenant-f").await;
    }
    let lines: Vec<String> = designs
        .iter()
        .map(|design| payload(design, "tenant-f", &url).to_string())
        .collect();
    let batch = setup.dir.path().join("flow.jsonl");
    std::fs::write(&batch, lines.join("\n")).unwrap();
    let output = enqueue_command(&setup)
        .args(["--batch", batch.to_str().unwrap(), "--as-flow", "--attempts", "1"])
        .output()
        .expect("enqueue runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let mut printed = stdout.lines();
    let parent = printed
        .next()
        .and_then(|line| line.strip_prefix("batch "))
        .unwrap_or_else(|| panic!("the parent id comes first: {stdout}"))
        .to_owned();
    let children: Vec<&str> = printed.collect();
    assert_eq!(children.len(), 3, "{stdout}");

    let mut published = PublishedEvents::subscribe().await;
    let queue = Queue::with_options(&setup.queue, setup.queue_options()).await.unwrap();
    assert_eq!(
        queue.get_job_state(&parent).await.unwrap(),
        JobState::WaitingChildren,
        "the batch runs only after its renders"
    );
    let _worker = setup.spawn_worker(&schema.url(), &[]);
    let event = published.wait_for_batch(&parent).await;
    assert_eq!(
        (&event["total"], &event["completed"], &event["failed"]),
        (&json!(3), &json!(2), &json!(1)),
        "{event}"
    );
    assert_eq!(event["costCents"], 0);
    assert_eq!(event["failures"][0]["designId"], designs[2].as_str());
    let reason = event["failures"][0]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("[design_not_found]"), "{reason}");
    for design in &designs[..2] {
        assert_eq!(schema.design(design).await.status, DesignStatus::Completed);
    }
    let finished = queue.get_job(&parent).await.unwrap().expect("the batch job");
    let returned: serde_json::Value = serde_json::from_str(finished.returnvalue()).expect("JSON return value");
    assert_eq!(returned, event, "the job returns the event");
    queue.close().await;
}
