//! Fixtures of the queue tests: a queue of one test (name, key prefix, storage directory), the
//! `design-render worker` process, a local asset server, the `design.render.*` messages
//! published on Redis, and BullMQ's event stream. Everything is removed or killed on drop.

use std::process::{Command, Stdio};
use std::time::Duration;

use bullmq::{Queue, QueueEvent, QueueEvents, QueueEventsOptions, QueueOptions};
use futures_util::StreamExt;
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::{PgSchema, REDIS_URL, RedisKeys, gradient_png, unique};

/// Generous: two busy cores, debug builds.
pub const DEADLINE: Duration = Duration::from_secs(90);

/// Queue name, prefix and a storage directory of one test. Dropping it deletes every Redis key
/// under the prefix (the queue's and the tenant leases).
pub struct QueueSetup {
    pub queue: String,
    pub prefix: String,
    pub dir: tempfile::TempDir,
    /// Owns the prefix's keys; a test that swaps `prefix` for a cluster one keeps it anyway.
    _keys: RedisKeys,
}

impl QueueSetup {
    pub fn new(label: &str) -> Self {
        let keys = RedisKeys::new("drtest");
        Self {
            queue: unique(label),
            prefix: keys.prefix().to_owned(),
            dir: tempfile::tempdir().expect("tempdir"),
            _keys: keys,
        }
    }

    pub fn queue_options(&self) -> QueueOptions {
        QueueOptions::new()
            .connection(bullmq::options::RedisConnectionOptions::new().url(REDIS_URL))
            .prefix(self.prefix.clone())
    }

    /// Events of this queue from its very beginning (so none is missed).
    pub async fn events(&self) -> QueueEvents {
        QueueEvents::with_options(
            &self.queue,
            QueueEventsOptions {
                connection: bullmq::options::RedisConnectionOptions::new().url(REDIS_URL),
                prefix: self.prefix.clone(),
                last_event_id: Some("0-0".into()),
                ..QueueEventsOptions::default()
            },
        )
        .await
        .expect("queue events")
    }

    /// How many tenant slots `tenant` holds in this queue (the lease sorted set's size).
    pub async fn held_slots(&self, tenant: &str) -> u64 {
        let mut connection = redis::Client::open(REDIS_URL)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        redis::cmd("ZCARD")
            .arg(format!("{}:{}:tenant-slots:{tenant}", self.prefix, self.queue))
            .query_async(&mut connection)
            .await
            .unwrap()
    }

    /// Starts `design-render worker` with this test's queue, the schema and extra variables.
    pub fn spawn_worker(&self, database_url: &str, extra: &[(&str, &str)]) -> WorkerProcess {
        let mut command = Command::new(env!("CARGO_BIN_EXE_design-render"));
        command
            .arg("worker")
            .current_dir(self.dir.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("REDIS_URL", REDIS_URL)
            .env("QUEUE_NAME", &self.queue)
            .env("BULLMQ_PREFIX", &self.prefix)
            .env("DATABASE_URL", database_url)
            .env("STORAGE_DIR", self.dir.path().join("storage"))
            .env("ALLOW_PRIVATE_ASSET_HOSTS", "127.0.0.1")
            .env("PREVIEW_SIZE", "64")
            // Off, so tests that send identical inputs see each render; the cache's tests turn
            // it on.
            .env("RESULT_CACHE", "off")
            // A free port each: workers of parallel tests must not share the admin server's.
            .env("ADMIN_ADDR", "127.0.0.1:0")
            // No RUST_LOG: the worker's default level (info) is what tests that wait for a log
            // line (`wait_for_log`) read, as an operator would.
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (key, value) in extra {
            command.env(key, value);
        }
        WorkerProcess::spawn(command)
    }
}

/// A worker process; killed (SIGKILL) when dropped so a failing test leaves nothing running.
/// Its log lines are collected (and echoed when `TEST_LOG` is set) so a test can await one.
pub struct WorkerProcess {
    child: tokio::process::Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl WorkerProcess {
    fn spawn(command: Command) -> Self {
        let mut child = tokio::process::Command::from(command)
            .kill_on_drop(true)
            .spawn()
            .expect("worker starts");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (sender, lines) = tokio::sync::mpsc::unbounded_channel();
        let echo = std::env::var_os("TEST_LOG").is_some();
        tokio::spawn(async move {
            use tokio::io::AsyncBufReadExt;
            let mut reader = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if echo {
                    eprintln!("{line}");
                }
                // The receiver may be gone; keep draining so the worker never blocks on a pipe.
                let _ = sender.send(line);
            }
        });
        Self { child, lines }
    }

    /// The base URL of the worker's admin server, from its start-up line.
    pub async fn admin_base(&mut self) -> String {
        let line = self.wait_for_log("Admin server on http://").await;
        line.split("http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .map(|address| format!("http://{address}"))
            .expect("the admin address")
    }

    /// Waits for a log line containing `needle` (lines before it are consumed).
    pub async fn wait_for_log(&mut self, needle: &str) -> String {
        tokio::time::timeout(DEADLINE, async {
            loop {
                match self.lines.recv().await {
                    Some(line) if line.contains(needle) => return line,
                    Some(_) => {}
                    None => panic!("the worker exited before logging {needle:?}"),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the worker never logged {needle:?}"))
    }

    /// Sends a signal (`TERM`, `INT`, `KILL`) without waiting.
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().expect("worker still running");
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(pid.to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the process to exit.
    pub async fn exit_status(&mut self) -> std::process::ExitStatus {
        self.child.wait().await.expect("worker exits")
    }

    /// Sends SIGTERM and waits for the exit.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        self.exit_status().await
    }
}

/// Closes a test's queue clients, then drops its Redis keys and PostgreSQL schema (their
/// fixtures clean up in `Drop`).
pub async fn teardown(queue: Queue, events: QueueEvents, setup: QueueSetup, schema: PgSchema) {
    queue.close().await;
    events.close().await;
    drop(setup);
    drop(schema);
}

/// A local asset server with a 64x64 base texture at `/base.png`.
pub async fn asset_server(delay: Duration) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/base.png"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_raw(gradient_png(64, 64), "image/png")
                .set_delay(delay),
        )
        .mount(&server)
        .await;
    server
}

/// An asset server that answers every `GET` with a 64x64 PNG, but holds each answer until
/// [`release`](Self::release) and reports each request as it arrives. A test can so act while a
/// worker is mid-download, however slow the machine, and then let the download finish.
pub struct HeldAssetServer {
    base_url: String,
    arrivals: tokio::sync::mpsc::UnboundedReceiver<()>,
    gate: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
    /// Aborting it drops the connections' `JoinSet`, which aborts every held answer.
    server: tokio::task::JoinHandle<()>,
}

impl HeldAssetServer {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base_url = format!("http://{}/base.png", listener.local_addr().expect("address"));
        let (arrived, arrivals) = tokio::sync::mpsc::unbounded_channel();
        let gate = std::sync::Arc::new(tokio::sync::watch::channel(false).0);
        let body = gradient_png(64, 64);
        let server = {
            let gate = std::sync::Arc::clone(&gate);
            tokio::spawn(async move {
                let mut connections = tokio::task::JoinSet::new();
                while let Ok((stream, _)) = listener.accept().await {
                    let (arrived, mut open, body) = (arrived.clone(), gate.subscribe(), body.clone());
                    connections.spawn(async move {
                        let mut stream = stream;
                        if read_request_head(&mut stream).await.is_none() {
                            return;
                        }
                        let _ = arrived.send(());
                        if open.wait_for(|open| *open).await.is_err() {
                            return;
                        }
                        let head = format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        );
                        use tokio::io::AsyncWriteExt;
                        let _ = stream.write_all(head.as_bytes()).await;
                        let _ = stream.write_all(&body).await;
                        let _ = stream.shutdown().await;
                    });
                }
            })
        };
        Self {
            base_url,
            arrivals,
            gate,
            server,
        }
    }

    /// The URL of the base texture.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Waits until the next request has arrived (and is being held).
    pub async fn request_arrived(&mut self) {
        tokio::time::timeout(DEADLINE, self.arrivals.recv())
            .await
            .expect("a download request arrives before the deadline")
            .expect("the asset server is running");
    }

    /// Answers every held request, and every later one at once.
    pub fn release(&self) {
        self.gate.send_replace(true);
    }
}

impl Drop for HeldAssetServer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Reads an HTTP request head (up to its blank line); `None` if the peer closed first.
async fn read_request_head(stream: &mut tokio::net::TcpStream) -> Option<()> {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::with_capacity(1024);
    let mut buffer = [0_u8; 1024];
    while !head.windows(4).any(|window| window == b"\r\n\r\n") {
        let read = stream.read(&mut buffer).await.ok()?;
        if read == 0 || head.len() > 64 * 1024 {
            return None;
        }
        head.extend_from_slice(&buffer[..read]);
    }
    Some(())
}

pub fn payload(design: &str, tenant: &str, base_url: &str) -> Value {
    json!({
        "designId": design,
        "prompt": "mossy stone",
        "baseTextureUrl": base_url,
        "tenantId": tenant,
        "userId": "user-1",
        "renderOptions": {"size": "64x64"}
    })
}

/// `design.render.*` messages published while the test runs, kept in arrival order.
pub struct PublishedEvents {
    receiver: tokio::sync::mpsc::UnboundedReceiver<Value>,
    seen: Vec<Value>,
}

impl PublishedEvents {
    pub async fn subscribe() -> Self {
        Self::subscribe_at(REDIS_URL).await
    }

    /// Subscribes on the Redis at `url` (on a cluster, any node: PUBLISH reaches every node).
    pub async fn subscribe_at(url: &str) -> Self {
        let client = redis::Client::open(url).unwrap();
        let mut pubsub = client.get_async_pubsub().await.expect("pubsub");
        pubsub.subscribe("design.render.completed").await.unwrap();
        pubsub.subscribe("design.render.failed").await.unwrap();
        pubsub.subscribe(design_render::events::BATCH_COMPLETED).await.unwrap();
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut messages = pubsub.into_on_message();
            while let Some(message) = messages.next().await {
                let text: String = message.get_payload().unwrap_or_default();
                if let Ok(value) = serde_json::from_str(&text)
                    && sender.send(value).is_err()
                {
                    break;
                }
            }
        });
        Self {
            receiver,
            seen: Vec::new(),
        }
    }

    /// Waits for the event of `design` with the given name (already received or still to come).
    pub async fn wait_for(&mut self, design: &str, event: &str) -> Value {
        self.wait_until(|value| value["designId"] == design && value["event"] == event)
            .await
            .unwrap_or_else(|| panic!("no {event} event for {design}"))
    }

    /// Waits for the `design.render.batch.completed` event of the batch job `job_id`.
    pub async fn wait_for_batch(&mut self, job_id: &str) -> Value {
        self.wait_until(|value| value["jobId"] == job_id && value["event"] == design_render::events::BATCH_COMPLETED)
            .await
            .unwrap_or_else(|| panic!("no batch event for {job_id}"))
    }

    /// The first event (already received or still to come) that `matches`; `None` after the
    /// deadline.
    async fn wait_until(&mut self, matches: impl Fn(&Value) -> bool) -> Option<Value> {
        if let Some(found) = self.seen.iter().find(|v| matches(v)) {
            return Some(found.clone());
        }
        let receiver = &mut self.receiver;
        let seen = &mut self.seen;
        tokio::time::timeout(DEADLINE, async {
            loop {
                let value = receiver.recv().await.expect("event stream open");
                seen.push(value.clone());
                if matches(&value) {
                    return value;
                }
            }
        })
        .await
        .ok()
    }

    /// Every event received so far about `design`, after draining what is queued.
    pub fn all_for(&mut self, design: &str) -> Vec<Value> {
        while let Ok(value) = self.receiver.try_recv() {
            self.seen.push(value);
        }
        self.seen.iter().filter(|v| v["designId"] == design).cloned().collect()
    }
}

/// Waits until `count` jobs of the queue completed, as reported by BullMQ's event stream.
pub async fn await_completed(events: &QueueEvents, count: usize) -> Vec<String> {
    tokio::time::timeout(DEADLINE, async {
        let mut done = Vec::new();
        while done.len() < count {
            match events.next_event().await.map(|entry| entry.event) {
                Some(QueueEvent::Completed { job_id, .. }) => done.push(job_id),
                Some(QueueEvent::Failed {
                    job_id, failed_reason, ..
                }) => {
                    panic!("job {job_id} failed: {failed_reason}")
                }
                Some(_) => {}
                None => panic!("event stream closed"),
            }
        }
        done
    })
    .await
    .expect("jobs complete before the deadline")
}
