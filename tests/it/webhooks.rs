//! Durable webhooks against real Redis and BullMQ queues, a worker process and a receiver on
//! loopback whose answers each test scripts: retries on the schedule with one `webhook-id`,
//! signatures a Node receiver accepts, a receiver that is down and comes back, a worker killed
//! between the render and the delivery, 410 Gone, the dead-letter list and its replay,
//! per-tenant endpoints and the refusal of private ones.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use super::helpers::queue::{DEADLINE, QueueSetup, WorkerProcess, asset_server, payload};
use super::helpers::{PgSchema, REDIS_URL, node, unique};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
struct Arrival {
    headers: HashMap<String, String>,
    body: String,
    at_ms: i64,
}

#[derive(Default)]
struct ReceiverState {
    /// Statuses to answer, in order; the last one repeats.
    script: Mutex<VecDeque<u16>>,
    arrivals: Mutex<Vec<Arrival>>,
    arrived: tokio::sync::Notify,
}

/// A webhook receiver on loopback.
struct Receiver {
    url: String,
    state: Arc<ReceiverState>,
}

async fn receive(
    axum::extract::State(state): axum::extract::State<Arc<ReceiverState>>,
    headers: axum::http::HeaderMap,
    body: String,
) -> axum::http::StatusCode {
    let status = {
        let mut script = state.script.lock().unwrap();
        if script.len() > 1 {
            script.pop_front().unwrap_or(204)
        } else {
            script.front().copied().unwrap_or(204)
        }
    };
    state.arrivals.lock().unwrap().push(Arrival {
        headers: headers
            .iter()
            .map(|(name, value)| (name.as_str().to_owned(), value.to_str().unwrap_or_default().to_owned()))
            .collect(),
        body,
        at_ms: chrono::Utc::now().timestamp_millis(),
    });
    state.arrived.notify_waiters();
    axum::http::StatusCode::from_u16(status).unwrap()
}

impl Receiver {
    async fn start(script: &[u16]) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener, script)
    }

    fn serve(listener: tokio::net::TcpListener, script: &[u16]) -> Self {
        let state = Arc::new(ReceiverState {
            script: Mutex::new(script.iter().copied().collect()),
            ..ReceiverState::default()
        });
        let url = format!("http://{}/hooks", listener.local_addr().unwrap());
        let router = axum::Router::new()
            .route("/hooks", axum::routing::post(receive))
            .with_state(Arc::clone(&state));
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self { url, state }
    }

    fn answer(&self, statuses: &[u16]) {
        *self.state.script.lock().unwrap() = statuses.iter().copied().collect();
    }

    fn arrivals(&self) -> Vec<Arrival> {
        self.state.arrivals.lock().unwrap().clone()
    }

    /// Waits until at least `count` requests arrived.
    async fn wait_for(&self, count: usize) -> Vec<Arrival> {
        tokio::time::timeout(DEADLINE, async {
            loop {
                let notified = self.state.arrived.notified();
                let arrivals = self.arrivals();
                if arrivals.len() >= count {
                    return arrivals;
                }
                notified.await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("only {} of {count} requests arrived", self.arrivals().len()))
    }
}

/// A worker with webhooks on, delivering to loopback (allowed) on a fast schedule.
fn webhook_worker(setup: &QueueSetup, schema: &PgSchema, extra: &[(&str, &str)]) -> WorkerProcess {
    let mut vars = vec![
        ("WEBHOOK_ENABLED", "true"),
        ("WEBHOOK_SECRET", SECRET),
        ("WEBHOOK_ALLOW_PRIVATE_HOSTS", "127.0.0.1"),
        ("WEBHOOK_RETRY_SCHEDULE_MS", "0,100,100,100,100"),
        ("QUEUE_DRAIN_DELAY_SECONDS", "1"),
    ];
    vars.extend_from_slice(extra);
    setup.spawn_worker(&schema.url(), &vars)
}

async fn redis() -> redis::aio::MultiplexedConnection {
    redis::Client::open(REDIS_URL)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// A field of a job's hash in the queue `queue` of the test's prefix.
async fn job_field(setup: &QueueSetup, queue: &str, job_id: &str, field: &str) -> Option<String> {
    redis::cmd("HGET")
        .arg(format!("{}:{queue}:{job_id}", setup.prefix))
        .arg(field)
        .query_async(&mut redis().await)
        .await
        .unwrap()
}

/// The ids in a set of the webhook queue (`failed`, `completed`, …).
async fn webhook_jobs(setup: &QueueSetup, state: &str) -> Vec<String> {
    redis::cmd("ZRANGE")
        .arg(format!("{}:design-render-webhooks:{state}", setup.prefix))
        .arg(0)
        .arg(-1)
        .query_async(&mut redis().await)
        .await
        .unwrap()
}

/// Polls `check` until it holds: for states only visible in Redis (no event announces them).
async fn until<F: std::future::Future<Output = bool>>(what: &str, check: impl Fn() -> F) {
    tokio::time::timeout(DEADLINE, async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("never: {what}"));
}

async fn add_render(setup: &QueueSetup, design: &str, tenant: &str, base_url: &str) -> String {
    let queue = bullmq::Queue::with_options(&setup.queue, setup.queue_options())
        .await
        .unwrap();
    let job = queue.add("render", payload(design, tenant, base_url)).await.unwrap();
    queue.close().await;
    job.id().to_owned()
}

/// `design-render webhooks …` with the test's queue and webhook settings.
async fn webhooks_command(setup: &QueueSetup, args: &[&str], url: &str) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_design-render"))
        .arg("webhooks")
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("REDIS_URL", REDIS_URL)
        .env("QUEUE_NAME", &setup.queue)
        .env("BULLMQ_PREFIX", &setup.prefix)
        .env("WEBHOOK_ENABLED", "true")
        .env("WEBHOOK_SECRET", SECRET)
        .env("WEBHOOK_URL", url)
        .output()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_answering_503_twice_gets_the_event_once_it_accepts_with_one_id_and_valid_signatures() {
    let schema = PgSchema::new().await;
    let setup = QueueSetup::new("hooks-retry");
    let assets = asset_server(Duration::ZERO).await;
    let receiver = Receiver::start(&[503, 503, 204]).await;
    let design = unique("hooked");
    schema.insert_design(&design, "tenant-w").await;
    // Traces on (to a collector that is not there: spans are made, their export fails), so the
    // deliveries carry the trace context of the span that published the event.
    let no_collector = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let collector = format!("http://{no_collector}");
    let mut worker = webhook_worker(
        &setup,
        &schema,
        &[
            ("WEBHOOK_URL", &receiver.url),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &collector),
        ],
    );
    let render_job = add_render(&setup, &design, "tenant-w", &format!("{}/base.png", assets.uri())).await;
    worker.wait_for_log("Delivered design.render.completed").await;

    let arrivals = receiver.arrivals();
    assert_eq!(arrivals.len(), 3, "two refusals and the accepted delivery");
    let event: Value = serde_json::from_str(&arrivals[2].body).unwrap();
    assert_eq!(event["event"], "design.render.completed");
    assert_eq!(event["designId"], design.as_str());
    assert_eq!(event["version"], 1);
    let id = event["id"].as_str().expect("the event has an id");
    for arrival in &arrivals {
        assert_eq!(arrival.headers["webhook-id"], id, "one id on every attempt");
        assert_eq!(arrival.body, arrivals[0].body, "the same bytes on every attempt");
        assert_eq!(arrival.headers["x-design-render-event"], "design.render.completed");
        assert!(arrival.headers["x-design-render-signature"].starts_with("sha256="));
        assert_eq!(arrival.headers["content-type"], "application/json");
        let traceparent = event["traceparent"]
            .as_str()
            .expect("the event carries its trace context");
        assert_eq!(
            arrival.headers["traceparent"], traceparent,
            "the delivery joins the render's trace"
        );
    }
    // A receiver built on node:crypto alone accepts every signature.
    let checked = node(
        "verify-webhook.mjs",
        json!({
            "secret": SECRET,
            "deliveries": arrivals.iter().map(|arrival| json!({
                "id": arrival.headers["webhook-id"],
                "timestamp": arrival.headers["webhook-timestamp"],
                "body": arrival.body,
                "signature": arrival.headers["webhook-signature"],
            })).collect::<Vec<_>>(),
        }),
    )
    .await;
    assert_eq!(checked["valid"], json!([true, true, true]), "{checked}");
    let tampered = node(
        "verify-webhook.mjs",
        json!({"secret": SECRET, "deliveries": [{
            "id": id, "timestamp": arrivals[0].headers["webhook-timestamp"],
            "body": arrivals[0].body.replace("completed", "failed"),
            "signature": arrivals[0].headers["webhook-signature"],
        }]}),
    )
    .await;
    assert_eq!(tampered["valid"], json!([false]), "the check can fail");

    // The render job had finished before the receiver first heard of it.
    let finished: i64 = job_field(&setup, &setup.queue, &render_job, "finishedOn")
        .await
        .expect("the render job finished")
        .parse()
        .unwrap();
    assert!(
        finished <= arrivals[0].at_ms,
        "finished {finished}, first attempt {}",
        arrivals[0].at_ms
    );
    assert!(worker.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_for_two_retries_gets_the_event_when_it_comes_back() {
    let schema = PgSchema::new().await;
    let setup = QueueSetup::new("hooks-down");
    let assets = asset_server(Duration::ZERO).await;
    // A free port nobody listens on yet.
    let address = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let url = format!("http://{address}/hooks");
    let design = unique("hooked-down");
    schema.insert_design(&design, "tenant-d").await;
    let mut worker = webhook_worker(
        &setup,
        &schema,
        &[
            ("WEBHOOK_URL", &url),
            ("WEBHOOK_RETRY_SCHEDULE_MS", "0,200,200,300,300,300,300,300"),
        ],
    );
    add_render(&setup, &design, "tenant-d", &format!("{}/base.png", assets.uri())).await;
    worker.wait_for_log(&format!("Completed design {design}")).await;
    let delivery = async || webhook_jobs(&setup, "delayed").await.first().cloned();
    until("the delivery waits for a retry", || async {
        delivery().await.is_some()
    })
    .await;
    let id = delivery().await.unwrap();
    until("two attempts failed", || async {
        job_field(&setup, "design-render-webhooks", &id, "atm")
            .await
            .is_some_and(|made| made.parse::<u32>().unwrap_or_default() >= 2)
    })
    .await;
    let receiver = Receiver::serve(tokio::net::TcpListener::bind(address).await.unwrap(), &[204]);
    receiver.wait_for(1).await;
    worker.wait_for_log("Delivered design.render.completed").await;
    let arrivals = receiver.arrivals();
    assert_eq!(arrivals.len(), 1);
    let event: Value = serde_json::from_str(&arrivals[0].body).unwrap();
    assert_eq!(event["designId"], design.as_str());
    assert!(worker.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_between_the_render_and_the_delivery_delivers_once_after_restart() {
    let schema = PgSchema::new().await;
    let setup = QueueSetup::new("hooks-kill");
    let assets = asset_server(Duration::ZERO).await;
    let receiver = Receiver::start(&[204]).await;
    let design = unique("hooked-kill");
    schema.insert_design(&design, "tenant-k").await;
    // The first attempt waits 2 s: the kill lands after the render and before any delivery.
    let slow_first = [
        ("WEBHOOK_URL", receiver.url.as_str()),
        ("WEBHOOK_RETRY_SCHEDULE_MS", "2000,100,100"),
    ];
    let mut worker = webhook_worker(&setup, &schema, &slow_first);
    let render_job = add_render(&setup, &design, "tenant-k", &format!("{}/base.png", assets.uri())).await;
    // The kill lands once BullMQ shows the render finished (the log line comes just before;
    // a kill in between leaves the job to stalled recovery, and the delivery waits for it).
    until("the render job finished", || async {
        job_field(&setup, &setup.queue, &render_job, "finishedOn")
            .await
            .is_some()
    })
    .await;
    worker.signal("KILL");
    worker.exit_status().await;
    assert!(receiver.arrivals().is_empty(), "nothing was delivered before the kill");

    let mut restarted = webhook_worker(&setup, &schema, &slow_first);
    restarted.wait_for_log("Delivered design.render.completed").await;
    // Whatever else the restarted worker does, no second request comes: give it the schedule's
    // length to show one.
    assert!(
        tokio::time::timeout(Duration::from_secs(3), receiver.wait_for(2))
            .await
            .is_err(),
        "delivered twice: {:?}",
        receiver.arrivals()
    );
    assert_eq!(receiver.arrivals().len(), 1);
    assert!(restarted.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_stops_at_once_and_an_exhausted_delivery_is_listed_and_replayed() {
    let schema = PgSchema::new().await;
    let setup = QueueSetup::new("hooks-dead");
    let assets = asset_server(Duration::ZERO).await;
    let gone = Receiver::start(&[410]).await;
    let failing = Receiver::start(&[500]).await;
    let endpoints = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(endpoints.path(), format!("tenant-gone={}\n", gone.url)).unwrap();
    let (gone_design, failing_design) = (unique("hooked-gone"), unique("hooked-exhausted"));
    schema.insert_design(&gone_design, "tenant-gone").await;
    schema.insert_design(&failing_design, "tenant-x").await;
    let worker = webhook_worker(
        &setup,
        &schema,
        &[
            ("WEBHOOK_URL", &failing.url),
            ("WEBHOOK_ENDPOINTS_FILE", endpoints.path().to_str().unwrap()),
            ("WEBHOOK_RETRY_SCHEDULE_MS", "0,50,50"),
        ],
    );
    let base = format!("{}/base.png", assets.uri());
    add_render(&setup, &gone_design, "tenant-gone", &base).await;
    add_render(&setup, &failing_design, "tenant-x", &base).await;
    until("both deliveries failed", || async {
        webhook_jobs(&setup, "failed").await.len() == 2
    })
    .await;
    assert_eq!(gone.arrivals().len(), 1, "410 Gone: no second attempt");
    assert_eq!(failing.arrivals().len(), 3, "every attempt of the schedule");

    let listed = webhooks_command(&setup, &["list-failed"], &failing.url).await;
    assert!(listed.status.success(), "{}", String::from_utf8_lossy(&listed.stderr));
    let listed: Vec<Value> = String::from_utf8(listed.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(listed.len(), 2, "{listed:?}");
    let exhausted = listed
        .iter()
        .find(|entry| entry["tenantId"] == "tenant-x")
        .expect("listed");
    assert_eq!(exhausted["attempts"], 3);
    assert!(
        exhausted["reason"].as_str().unwrap().contains("[webhook_rejected]"),
        "{exhausted}"
    );
    let stopped = listed
        .iter()
        .find(|entry| entry["tenantId"] == "tenant-gone")
        .expect("listed");
    assert!(
        stopped["reason"].as_str().unwrap().contains("[webhook_gone]"),
        "{stopped}"
    );
    assert_eq!(stopped["attempts"], 1);

    failing.answer(&[204]);
    let event_id = exhausted["eventId"].as_str().unwrap();
    let replayed = webhooks_command(&setup, &["replay", event_id], &failing.url).await;
    assert!(
        replayed.status.success(),
        "{}",
        String::from_utf8_lossy(&replayed.stderr)
    );
    let arrivals = failing.wait_for(4).await;
    assert_eq!(
        arrivals[3].headers["webhook-id"], event_id,
        "the same event, the same id"
    );
    until("the replayed delivery completed", || async {
        webhook_jobs(&setup, "failed").await.len() == 1
    })
    .await;
    let nothing = webhooks_command(&setup, &["replay", event_id], &failing.url).await;
    assert_eq!(nothing.status.code(), Some(1), "nothing left to replay for that event");
    assert!(worker.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_endpoint_gets_only_its_events_and_private_endpoints_are_refused_at_start_up() {
    let schema = PgSchema::new().await;
    let setup = QueueSetup::new("hooks-tenants");
    let assets = asset_server(Duration::ZERO).await;
    let own = Receiver::start(&[204]).await;
    let shared = Receiver::start(&[204]).await;
    let endpoints = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(endpoints.path(), format!("# receivers\ntenant-own = {}\n", own.url)).unwrap();
    let (own_design, other_design) = (unique("hooked-own"), unique("hooked-other"));
    schema.insert_design(&own_design, "tenant-own").await;
    schema.insert_design(&other_design, "tenant-other").await;
    let file = endpoints.path().to_str().unwrap();
    let worker = webhook_worker(
        &setup,
        &schema,
        &[("WEBHOOK_URL", &shared.url), ("WEBHOOK_ENDPOINTS_FILE", file)],
    );
    let base = format!("{}/base.png", assets.uri());
    add_render(&setup, &own_design, "tenant-own", &base).await;
    add_render(&setup, &other_design, "tenant-other", &base).await;
    own.wait_for(1).await;
    shared.wait_for(1).await;
    let tenants = |receiver: &Receiver| -> Vec<String> {
        receiver
            .arrivals()
            .iter()
            .map(|arrival| serde_json::from_str::<Value>(&arrival.body).unwrap()["tenantId"].to_string())
            .collect()
    };
    assert!(worker.terminate().await.success());
    assert_eq!(tenants(&own), ["\"tenant-own\""]);
    assert_eq!(tenants(&shared), ["\"tenant-other\""]);

    // Without WEBHOOK_ALLOW_PRIVATE_HOSTS, a loopback endpoint stops the worker at start-up.
    let mut refused = setup.spawn_worker(
        &schema.url(),
        &[
            ("WEBHOOK_ENABLED", "true"),
            ("WEBHOOK_SECRET", SECRET),
            ("WEBHOOK_URL", &shared.url),
        ],
    );
    let line = refused.wait_for_log("WEBHOOK_URL is refused").await;
    assert!(
        line.contains("127.0.0.1") && line.contains("WEBHOOK_ALLOW_PRIVATE_HOSTS"),
        "{line}"
    );
    assert_eq!(refused.exit_status().await.code(), Some(78));
}
