//! The command-line interface: argument parsing and the `render` command's terminal output.
//!
//! `render` turns flags or a job file into the same [`RenderRequest`] the queue worker parses,
//! runs the same [`Pipeline`](crate::pipeline::Pipeline), and prints either a human summary or exactly one JSON object.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

mod batch;
use tracing::Instrument;

use crate::app::{self, Mode};
use crate::config::Config;
use crate::failure::{JobError, settle, with_code};
use crate::job::{JobPayload, RenderOptionsPayload, RenderRequest};
use crate::pipeline::{Cancellation, Disposition, Progress, RenderError, RenderOutput, Silent, Step, Stop};

#[derive(Debug, Parser)]
#[command(
    name = "design-render",
    version,
    about = "Render design textures from a base image, a mask and a prompt"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Render one design now (or a batch of them), without any queue (local files or http(s) URLs).
    Render(RenderCommandArgs),
    /// Consume render jobs from the BullMQ queue until SIGTERM/SIGINT.
    Worker,
    /// Add one render job (or a batch of them) to the BullMQ queue and print the ids.
    Enqueue(EnqueueArgs),
    /// Operate on the configured asset storage.
    #[command(subcommand)]
    Storage(StorageCommand),
    /// Inspect and replay webhook deliveries (`WEBHOOK_ENABLED=true`).
    #[command(subcommand)]
    Webhooks(WebhooksCommand),
    /// Measure the built-in fill against the classical Telea baseline on procedural textures.
    /// Only in builds with the `eval` cargo feature.
    #[cfg(feature = "eval")]
    EvalFill(EvalFillArgs),
    /// Time the post-processing of one 2048² render on the inputs `benches/sharp/bench.js`
    /// reads (writing them first), and print one JSON line: every iteration's milliseconds and
    /// each output's PNG size. Only in builds with the `eval` cargo feature.
    #[cfg(feature = "eval")]
    BenchPostprocess(BenchPostprocessArgs),
}

#[derive(Debug, Subcommand)]
pub enum StorageCommand {
    /// Write, read back and delete a small object under `_design-render-check/` with the
    /// configured backend (never the local fallback), and print how each step went.
    Check,
}

#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// List deliveries that exhausted their attempts or were refused (410): the dead letters,
    /// newest first, one JSON object per line.
    ListFailed {
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Send failed deliveries again, with a fresh schedule of attempts.
    Replay {
        /// The event id (`evt_…`, the `webhook-id` header) whose failed deliveries to replay.
        #[arg(required_unless_present = "all_failed", conflicts_with = "all_failed")]
        event_id: Option<String>,
        /// Replay every failed delivery.
        #[arg(long)]
        all_failed: bool,
    },
}

#[cfg(feature = "eval")]
#[derive(Debug, Args)]
pub struct EvalFillArgs {
    /// Side of the square test textures.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(64..=4096))]
    pub size: u32,
    /// Seed for textures, masks and the fill.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

#[cfg(feature = "eval")]
#[derive(Debug, Args)]
pub struct BenchPostprocessArgs {
    /// Timed iterations, after one untimed warm-up.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub iterations: u32,
    /// Where the inputs are written and the outputs of the last iteration saved.
    #[arg(long, default_value = "target/bench-inputs")]
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct RenderArgs {
    /// A job file in the queue's JSON payload format (instead of the flags below).
    #[arg(long, conflicts_with_all = ["base", "mask", "prompt", "design_id", "tenant_id", "size", "fit", "quality", "normal_map", "roughness_map", "no_cache"])]
    pub job: Option<PathBuf>,
    /// A JSON Lines file of job payloads, one render per line (instead of the flags below).
    #[arg(long, conflicts_with_all = ["job", "base", "mask", "prompt", "design_id", "tenant_id", "size", "fit", "quality", "normal_map", "roughness_map", "no_cache"])]
    pub batch: Option<PathBuf>,
    /// Base texture: a local path, a file:// URL or an http(s) URL.
    #[arg(long, required_unless_present_any = ["job", "batch"])]
    pub base: Option<String>,
    /// Mask (white = regenerate, black = keep); without it the whole image may change.
    #[arg(long)]
    pub mask: Option<String>,
    /// What to render into the masked area.
    #[arg(long, required_unless_present_any = ["job", "batch"])]
    pub prompt: Option<String>,
    /// Design id (default: `local-<timestamp>`).
    #[arg(long)]
    pub design_id: Option<String>,
    /// Tenant id.
    #[arg(long, default_value = "local")]
    pub tenant_id: String,
    /// Bounding box of the high-resolution output, WxH with sides 64..=4096.
    #[arg(long)]
    pub size: Option<String>,
    /// How outputs fit their box: inside (keep the aspect ratio; default), cover (crop to the
    /// box) or fill (stretch to the box).
    #[arg(long)]
    pub fit: Option<String>,
    /// standard, hd, low, medium, high or auto.
    #[arg(long)]
    pub quality: Option<String>,
    /// Also produce a tangent-space normal map.
    #[arg(long)]
    pub normal_map: bool,
    /// Also produce a roughness map.
    #[arg(long)]
    pub roughness_map: bool,
    /// Render even when an identical earlier render is in the result cache, and keep this one
    /// out of it (`renderOptions.cache: false`).
    #[arg(long)]
    pub no_cache: bool,
    /// Print exactly one JSON object on stdout instead of the human summary (with `--batch`,
    /// one per line of the batch, as each finishes).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RenderCommandArgs {
    #[command(flatten)]
    pub render: RenderArgs,
    /// With `--batch`: how many renders run at once.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64), requires = "batch")]
    pub parallel: u16,
}

#[derive(Debug, Args)]
pub struct EnqueueArgs {
    #[command(flatten)]
    pub render: RenderArgs,
    /// Attempts before the job fails for good.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub attempts: u32,
    /// Exponential backoff base between attempts, in milliseconds (0 = retry at once).
    #[arg(long, default_value_t = 5000)]
    pub backoff_ms: u64,
    /// A custom job id (BullMQ rules: not an integer, no `:`); re-adding an id adds nothing.
    #[arg(long, conflicts_with = "batch")]
    pub job_id: Option<String>,
    /// With `--batch`: add the renders as one BullMQ flow whose parent job runs once every
    /// render finished and publishes `design.render.batch.completed` with the counts and the
    /// total cost. Prints the parent's id first, then the renders'.
    #[arg(long, requires = "batch")]
    pub as_flow: bool,
}

/// How a command ended, mapped to the process exit code by `main`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// Bad input or a refusal: running it again will fail the same way (exit 1).
    Failed,
    /// A temporary failure: running it again later may succeed (exit 75, EX_TEMPFAIL).
    TryLater,
    /// The configuration must change before anything can work (exit 78, EX_CONFIG).
    Misconfigured,
    /// Stopped by Ctrl-C (exit 130, as shells report SIGINT).
    Interrupted,
}

impl Outcome {
    pub fn exit_code(self) -> u8 {
        match self {
            Self::Success => 0,
            Self::Failed => 1,
            Self::TryLater => 75,
            Self::Misconfigured => 78,
            Self::Interrupted => 130,
        }
    }
}

/// Runs a parsed command. Errors are printed here, as one line on stderr.
pub async fn run(cli: Cli, config: Config) -> Outcome {
    match cli.command {
        Command::Render(args) => render(args, config).await,
        Command::Worker => worker(config).await,
        Command::Enqueue(args) => enqueue(args, config).await,
        Command::Storage(StorageCommand::Check) => storage_check(config).await,
        Command::Webhooks(command) => webhooks(command, config).await,
        #[cfg(feature = "eval")]
        Command::EvalFill(args) => eval_fill(&args),
        #[cfg(feature = "eval")]
        Command::BenchPostprocess(args) => bench_postprocess(&args, &config),
    }
}

#[cfg(feature = "eval")]
fn bench_postprocess(args: &BenchPostprocessArgs, config: &Config) -> Outcome {
    use crate::imaging::bench::{Inputs, SPEC};
    // `PNG_COMPRESSION_LEVEL` applies, as in the worker.
    let spec = crate::imaging::AssetSpec {
        png_level: config.imaging.png_level,
        ..SPEC
    };
    let inputs = Inputs::generate();
    // The libvips side (`benches/sharp/bench.js`) and `render` read the same files.
    let saved = std::fs::create_dir_all(&args.dir)
        .map_err(image::ImageError::IoError)
        .and_then(|()| inputs.base.save(args.dir.join("base.png")))
        .and_then(|()| inputs.generated.save(args.dir.join("generated.png")))
        .and_then(|()| inputs.hole.save(args.dir.join("hole.png")));
    if let Err(error) = saved {
        return fail(
            &format!("writing the inputs to {} failed: {error}", args.dir.display()),
            Outcome::Failed,
        );
    }
    let mut milliseconds = Vec::new();
    let mut last = None;
    for iteration in 0..=args.iterations {
        let started = std::time::Instant::now();
        match inputs.postprocess(&spec) {
            Ok(assets) => last = Some(assets),
            Err(error) => return fail(&error.to_string(), Outcome::Failed),
        }
        if iteration > 0 {
            milliseconds.push(started.elapsed().as_secs_f64() * 1000.0);
        }
    }
    let Some(assets) = last else {
        return Outcome::Failed;
    };
    let outputs = [
        ("composite", Some(&assets.composite)),
        ("preview", Some(&assets.preview)),
        ("normal", assets.normal_map.as_ref()),
        ("roughness", assets.roughness_map.as_ref()),
    ];
    let mut bytes = serde_json::Map::new();
    for (name, encoded) in outputs {
        let Some(encoded) = encoded else { continue };
        bytes.insert(name.to_owned(), encoded.png.len().into());
        if let Err(error) = std::fs::write(args.dir.join(format!("design-render-{name}.png")), &encoded.png) {
            return fail(&format!("writing the {name} output failed: {error}"), Outcome::Failed);
        }
    }
    let line = serde_json::json!({
        "side": "design-render",
        "threads": rayon::current_num_threads(),
        "ms": milliseconds,
        "bytes": bytes,
        "stages": assets.timings,
        "pngLevel": spec.png_level,
    });
    match writeln!(std::io::stdout().lock(), "{line}") {
        Ok(()) => Outcome::Success,
        Err(_) => Outcome::Failed,
    }
}

#[cfg(feature = "eval")]
fn eval_fill(args: &EvalFillArgs) -> Outcome {
    let report = crate::imaging::inpaint::eval::run_eval(args.size, args.seed);
    let comparisons = report.comparisons();
    let met = comparisons.iter().filter(|c| c.meets_targets).count();
    let mut stdout = std::io::stdout().lock();
    let written = write!(stdout, "{}", report.to_markdown())
        .and_then(|()| writeln!(stdout, "\nTargets met in {met} of {} cases.", comparisons.len()));
    if written.is_err() {
        Outcome::Failed
    } else {
        Outcome::Success
    }
}

async fn render(command: RenderCommandArgs, config: Config) -> Outcome {
    let args = command.render;
    if let Some(path) = args.batch {
        return batch::render_batch(&path, usize::from(command.parallel), args.json, &config).await;
    }
    let json = args.json;
    let request = match request_from_args(args) {
        Ok(request) => request,
        Err(message) => return fail(&message, Outcome::Failed),
    };
    let pipeline = match app::build_pipeline(&config, Mode::OneShot).await {
        Ok(pipeline) => pipeline,
        Err(error) => return fail(&format!("{error:#}"), start_up_outcome(&error)),
    };
    let terminal = !json && std::io::stderr().is_terminal();
    let progress: Box<dyn Progress> = if terminal {
        Box::new(TerminalProgress)
    } else {
        Box::new(Silent)
    };
    let interrupts = Interrupts::watch(progress);
    let result = tokio::select! {
        // One trace per render when spans are exported, its steps under this span.
        result = pipeline.run(&request, &interrupts).instrument(tracing::info_span!(
            "render",
            design.id = %request.design_id,
            tenant.id = %request.tenant_id,
        )) => result,
        () = interrupts.abandon.notified() => Err(RenderError::Stopped {
            stop: Stop::Cancelled,
            before: interrupts.current_step().unwrap_or(Step::MarkProcessing),
        }),
    };
    match result {
        Ok(output) => {
            if json {
                print_json(&output)
            } else {
                print_summary(&output);
                Outcome::Success
            }
        }
        Err(error) => {
            // The one-shot command has a single attempt, settled by the same rule as a job.
            let error = JobError::from(error);
            if settle(&error, 1, 1).record_failed
                && let Err(store_error) = pipeline.record_failure(&request, &error.failed_render()).await
            {
                tracing::warn!(error = %store_error, "could not record the failure on the design row");
            }
            let outcome = if matches!(
                error,
                JobError::Render(RenderError::Stopped {
                    stop: Stop::Cancelled,
                    ..
                })
            ) {
                Outcome::Interrupted
            } else {
                outcome_of(error.disposition())
            };
            fail(&error.reason(), outcome)
        }
    }
}

/// Ctrl-C during `render`: the first stops the render at its next step boundary (a paid call
/// in flight is waited for and recorded), the second abandons it at once. Either way the design
/// is marked FAILED (`cancelled`) and the command exits 130.
struct Interrupts {
    inner: Box<dyn Progress>,
    cancellation: Cancellation,
    abandon: std::sync::Arc<tokio::sync::Notify>,
    current: std::sync::Mutex<Option<Step>>,
    watcher: tokio::task::JoinHandle<()>,
}

impl Interrupts {
    fn watch(inner: Box<dyn Progress>) -> Self {
        let cancellation = Cancellation::default();
        let abandon = std::sync::Arc::new(tokio::sync::Notify::new());
        // Registered here, before the render starts, so no early Ctrl-C is missed. Without a
        // handler (it cannot fail on Unix in practice) Ctrl-C keeps its default effect.
        let interrupts = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok();
        let watcher = tokio::spawn({
            let (cancellation, abandon) = (cancellation.clone(), std::sync::Arc::clone(&abandon));
            async move {
                let Some(mut interrupts) = interrupts else { return };
                if interrupts.recv().await.is_none() {
                    return;
                }
                eprintln!("Cancelling after the current step (Ctrl-C again to stop at once)");
                cancellation.cancel();
                if interrupts.recv().await.is_some() {
                    abandon.notify_one();
                }
            }
        });
        Self {
            inner,
            cancellation,
            abandon,
            current: std::sync::Mutex::new(None),
            watcher,
        }
    }

    fn current_step(&self) -> Option<Step> {
        *self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Progress for Interrupts {
    fn started(&self, step: Step) {
        *self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(step);
        self.inner.started(step);
    }

    fn stop(&self) -> Option<Stop> {
        self.cancellation.is_cancelled().then_some(Stop::Cancelled)
    }
}

impl Drop for Interrupts {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

/// A start-up failure is worth retrying only when it is not a configuration problem (a database
/// or Redis that is not reachable yet).
fn start_up_outcome(error: &anyhow::Error) -> Outcome {
    if app::ConfigurationError::is_cause_of(error) {
        Outcome::Misconfigured
    } else {
        Outcome::TryLater
    }
}

fn outcome_of(disposition: Disposition) -> Outcome {
    match disposition {
        Disposition::Abort => Outcome::Failed,
        Disposition::Retry => Outcome::TryLater,
    }
}

async fn worker(config: Config) -> Outcome {
    // The recorder first, so what building the worker records (each breaker closed) counts; and
    // only with the admin server: without `/metrics` nobody reads them, and every metric is a
    // no-op.
    let metrics = config.queue.admin_addr.map(|_| crate::admin::metrics_handle());
    if let Some(handle) = metrics.clone() {
        // Histogram samples wait in the recorder until upkeep folds them into the buckets; a
        // worker nobody scrapes would otherwise keep every sample it ever recorded.
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(crate::admin::UPKEEP_INTERVAL);
            loop {
                tick.tick().await;
                handle.run_upkeep();
            }
        });
    }
    let built = match app::build_worker(&config).await {
        Ok(built) => built,
        Err(error) => return fail(&format!("{error:#}"), start_up_outcome(&error)),
    };
    let signals = match crate::worker::ShutdownSignals::install() {
        Ok(signals) => signals,
        Err(error) => return fail(&format!("cannot install signal handlers: {error}"), Outcome::TryLater),
    };
    let admin = std::sync::Arc::new(crate::admin::AdminState {
        probes: built.probes,
        shutting_down: std::sync::atomic::AtomicBool::new(false),
        metrics,
        queue_metrics: Some(built.queue_metrics),
    });
    let (stopped, admin_stop) = tokio::sync::oneshot::channel::<()>();
    if let Some(address) = config.queue.admin_addr {
        let listener = match tokio::net::TcpListener::bind(address).await {
            Ok(listener) => listener,
            Err(error) => {
                return fail(
                    &format!("cannot listen on ADMIN_ADDR {address}: {error} (set another address or `off`)"),
                    Outcome::Misconfigured,
                );
            }
        };
        match listener.local_addr() {
            Ok(bound) => tracing::info!(
                "Admin server on http://{bound} (/healthz, /readyz, /metrics{})",
                if built.dashboard.is_some() { ", /dashboard" } else { "" }
            ),
            Err(error) => tracing::warn!("Admin server listening; its address is unknown: {error}"),
        }
        let state = std::sync::Arc::clone(&admin);
        let dashboard = built.dashboard;
        tokio::spawn(async move {
            let stop = async {
                let _ = admin_stop.await;
            };
            if let Err(error) = crate::admin::serve(listener, state, dashboard, stop).await {
                tracing::warn!("The admin server stopped: {error}");
            }
        });
    }
    let shutdown = {
        let admin = std::sync::Arc::clone(&admin);
        async move {
            signals.first().await;
            admin.shutting_down.store(true, std::sync::atomic::Ordering::Release);
        }
    };
    // One signal stops both queues' workers and the heartbeat.
    let shutdown = futures_util::FutureExt::shared(Box::pin(shutdown));
    tokio::spawn(built.heartbeat.run(shutdown.clone()));
    let renders = crate::queue::serve(
        std::sync::Arc::new(built.worker),
        &config.queue,
        &config.redis,
        shutdown.clone(),
    );
    let deliveries = async {
        match built.webhooks {
            Some(webhooks) => {
                crate::queue::serve(
                    std::sync::Arc::new(webhooks.deliverer),
                    &webhooks.queue,
                    &config.redis,
                    shutdown,
                )
                .await
            }
            None => Ok(()),
        }
    };
    let (served, delivered) = tokio::join!(renders, deliveries);
    drop(stopped);
    match served.and(delivered) {
        Ok(()) => Outcome::Success,
        Err(error) => fail(&with_code(&error, error.code()), Outcome::TryLater),
    }
}

async fn storage_check(mut config: Config) -> Outcome {
    use crate::storage::{StorageError, StorageKey};
    // The backend itself is under test: a fallback would hide its failure.
    config.storage.fallback_to_local = Some(false);
    let store = match app::build_storage(&config, Mode::OneShot) {
        Ok(store) => store,
        Err(error) => return fail(&format!("{error:#}"), start_up_outcome(&error)),
    };
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%3f");
    let key = match StorageKey::parse(&format!("_design-render-check/{stamp}-{}.png", std::process::id())) {
        Ok(key) => key,
        Err(error) => return fail(&error.to_string(), Outcome::Failed),
    };
    let probe = image::RgbaImage::from_pixel(1, 1, image::Rgba([0, 128, 255, 255]));
    let bytes = match crate::imaging::codec::encode_rgba_png(&probe) {
        Ok(bytes) => bytes::Bytes::from(bytes),
        Err(error) => return fail(&format!("encoding the probe image: {error}"), Outcome::Failed),
    };
    let failed = |step: &str, error: StorageError| {
        let outcome = if error.is_transient() {
            Outcome::TryLater
        } else {
            Outcome::Misconfigured
        };
        fail(
            &format!("storage check ({}): {step} failed: {error}", store.backend()),
            outcome,
        )
    };
    let started = std::time::Instant::now();
    let stored = match store.put(&key, bytes.clone(), "image/png").await {
        Ok(stored) => stored,
        Err(error) => return failed("write", error),
    };
    println!("write     ok  {:>5} ms  {}", started.elapsed().as_millis(), stored.url);
    let started = std::time::Instant::now();
    match store.get(&key, &stored.url).await {
        Ok(Some(read)) if read == bytes => {
            println!(
                "read back ok  {:>5} ms  {} bytes, identical",
                started.elapsed().as_millis(),
                read.len()
            );
        }
        Ok(Some(read)) => {
            return fail(
                &format!(
                    "storage check: read back {} bytes that differ from the {} written",
                    read.len(),
                    bytes.len()
                ),
                Outcome::Failed,
            );
        }
        Ok(None) => return fail("storage check: the object just written is not there", Outcome::Failed),
        Err(error) => return failed("read back", error),
    }
    let started = std::time::Instant::now();
    if let Err(error) = store.delete(&key).await {
        return failed("delete", error);
    }
    println!("delete    ok  {:>5} ms  {key}", started.elapsed().as_millis());
    println!("storage {} works", store.backend());
    Outcome::Success
}

async fn webhooks(command: WebhooksCommand, config: Config) -> Outcome {
    let Some(webhook) = &config.queue.webhook else {
        return fail(
            "webhooks are off: set WEBHOOK_ENABLED=true with the worker's WEBHOOK_* variables",
            Outcome::Misconfigured,
        );
    };
    match command {
        WebhooksCommand::ListFailed { limit } => {
            match crate::queue::webhooks::list_failed(&config.queue, &config.redis, webhook, limit).await {
                Ok(failed) => {
                    let mut stdout = std::io::stdout().lock();
                    for delivery in failed {
                        let _ = writeln!(stdout, "{}", serde_json::json!(delivery));
                    }
                    Outcome::Success
                }
                Err(error) => fail(&format!("reading the webhook queue: {error}"), Outcome::TryLater),
            }
        }
        WebhooksCommand::Replay { event_id, .. } => {
            match crate::queue::webhooks::replay(&config.queue, &config.redis, webhook, event_id.as_deref()).await {
                Ok(replayed) if replayed.is_empty() => fail(
                    &match event_id {
                        Some(id) => format!("no failed delivery of event {id}"),
                        None => "no failed delivery".to_owned(),
                    },
                    Outcome::Failed,
                ),
                Ok(replayed) => {
                    let mut stdout = std::io::stdout().lock();
                    for id in replayed {
                        let _ = writeln!(stdout, "{id}");
                    }
                    Outcome::Success
                }
                Err(error) => fail(&format!("replaying webhook deliveries: {error}"), Outcome::TryLater),
            }
        }
    }
}

async fn enqueue(args: EnqueueArgs, config: Config) -> Outcome {
    if let Some(path) = &args.render.batch {
        return batch::enqueue_batch(path, &args, &config).await;
    }
    let request = match request_from_args(args.render) {
        Ok(request) => request,
        Err(message) => return fail(&message, Outcome::Failed),
    };
    if uses_local_files(&request) {
        return fail(
            "queued jobs cannot use local files: give http(s) URLs for --base and --mask",
            Outcome::Failed,
        );
    }
    let submission = crate::queue::Submission {
        payload: request.to_payload(),
        attempts: args.attempts,
        backoff_ms: args.backoff_ms,
        job_id: args.job_id,
    };
    match crate::queue::enqueue(&config.queue, &config.redis, submission).await {
        Ok(id) => {
            let _ = writeln!(std::io::stdout(), "{id}");
            Outcome::Success
        }
        Err(error) => fail(&with_code(&error, error.code()), outcome_of(error.disposition())),
    }
}

/// Whether a request reads local files, which a queued job may not (workers run elsewhere).
fn uses_local_files(request: &RenderRequest) -> bool {
    let local = |asset: &crate::job::AssetRef| matches!(asset, crate::job::AssetRef::Local { .. });
    local(&request.base_texture) || request.mask.as_ref().is_some_and(local)
}

fn request_from_args(args: RenderArgs) -> Result<RenderRequest, String> {
    if let Some(path) = args.job {
        let text = std::fs::read(&path).map_err(|e| format!("cannot read job file {}: {e}", path.display()))?;
        return RenderRequest::from_json(&text).map_err(|e| e.to_string());
    }
    let design_id = args
        .design_id
        .unwrap_or_else(|| format!("local-{}", chrono::Utc::now().format("%Y%m%dT%H%M%S%3f")));
    let payload = JobPayload {
        design_id,
        prompt: args.prompt.unwrap_or_default(),
        base_texture_url: args.base.unwrap_or_default(),
        mask_url: args.mask,
        tenant_id: args.tenant_id,
        user_id: None,
        render_options: RenderOptionsPayload {
            generate_normal_map: Some(args.normal_map),
            generate_roughness_map: Some(args.roughness_map),
            quality: args.quality,
            size: args.size,
            fit: args.fit,
            cache: args.no_cache.then_some(false),
        },
    };
    RenderRequest::parse(payload).map_err(|e| e.to_string())
}

fn fail(message: &str, outcome: Outcome) -> Outcome {
    // One line, whatever the message contains.
    let line = message.replace(['\n', '\r'], " ");
    let _ = writeln!(std::io::stderr(), "error: {line}");
    outcome
}

fn print_json(output: &RenderOutput) -> Outcome {
    match serde_json::to_string(output) {
        Ok(text) => {
            let mut stdout = std::io::stdout().lock();
            if writeln!(stdout, "{text}").is_err() {
                return Outcome::Failed;
            }
            Outcome::Success
        }
        Err(error) => fail(&format!("cannot serialise the result: {error}"), Outcome::Failed),
    }
}

fn print_summary(output: &RenderOutput) {
    let metadata = &output.metadata;
    let mut lines = vec![
        format!("Rendered design {} ({})", output.design_id, output.status),
        format!("  composite  {}", output.composite_texture_url),
        format!("  high-res   {}", output.high_res_url),
        format!("  preview    {}", output.preview_url),
    ];
    for (label, url) in [
        ("normal map", &metadata.normal_map_url),
        ("roughness ", &metadata.roughness_map_url),
    ] {
        if let Some(url) = url {
            lines.push(format!("  {label} {url}"));
        }
    }
    let prompt_note = if metadata.prompt_used {
        ""
    } else {
        " (content-aware fill; the prompt is not used)"
    };
    lines.push(format!("  provider   {}{prompt_note}", metadata.provider));
    if let Some(cache) = metadata.cache.as_ref().filter(|cache| cache.hit) {
        lines.push(format!(
            "  cache      reused the render of design {} (--no-cache renders again)",
            cache.source_design_id.as_deref().unwrap_or("?")
        ));
    }
    lines.push(format!(
        "  cost       {} tokens, {} cents",
        output.cost_tokens, output.cost_cents
    ));
    lines.push(format!("  time       {} ms", metadata.timings.total_ms));
    let mut stdout = std::io::stdout().lock();
    for line in lines {
        let _ = writeln!(stdout, "{line}");
    }
}

/// Prints each step on stderr as it starts.
struct TerminalProgress;

impl Progress for TerminalProgress {
    fn started(&self, step: Step) {
        let number = match step {
            Step::MarkProcessing => 1,
            Step::SanitizePrompt => 2,
            Step::Download => 3,
            Step::Inpaint => 4,
            Step::Postprocess => 5,
            Step::Upload => 6,
            Step::Record => 7,
        };
        let _ = writeln!(std::io::stderr(), "[{number}/7] {}…", step.describe());
    }
}
