//! The render use case: one job from PROCESSING to COMPLETED, as a readable list of steps.
//!
//! The pipeline sees only ports (`ImageEditor`, `BlobStore`, `DesignStore`) and pure modules; it
//! never names an adapter, a queue or a database driver. The CLI and the queue worker both call
//! [`Pipeline::run`]; what differs between them (which [`AssetSource`] reads the inputs, so
//! whether local files are allowed, and how the Design row is found) is decided when the
//! pipeline is built.

pub mod error;
pub mod metadata;

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, SecondsFormat, Utc};
use image::{GrayImage, RgbaImage};
use serde::Serialize;
use tracing::Instrument;
use tracing::field::Empty;

pub use error::{Disposition, RenderError};
pub use metadata::RenderMetadata;

use metadata::{CacheReport, EncodedBytes, PromptReport, Sizes, StorageReport, Timings};

use crate::assets::{AssetRole, AssetSource};
use crate::cache::{CacheKey, KeyInputs, Lookup, Manifest};
use crate::config::ImagingConfig;
use crate::imaging::{self, AssetSpec, RenderedAssets, codec};
use crate::job::{AssetRef, RenderRequest};
use crate::providers::{EditRequest, ImageEditor};
use crate::safety::{self, SafetyPolicy};
use crate::storage::{AssetKind, BlobStore, StorageKey};
use crate::store::{CompletedRender, DesignStore, FailedRender, StoreError};

/// The steps of one render, in order, for progress reporting and timings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    MarkProcessing,
    SanitizePrompt,
    Download,
    Inpaint,
    Postprocess,
    Upload,
    Record,
}

impl Step {
    pub fn describe(self) -> &'static str {
        match self {
            Self::MarkProcessing => "marking the design PROCESSING",
            Self::SanitizePrompt => "sanitising the prompt",
            Self::Download => "loading the base texture and mask",
            Self::Inpaint => "inpainting",
            Self::Postprocess => "compositing and building outputs",
            Self::Upload => "uploading assets",
            Self::Record => "recording the result",
        }
    }
}

/// Receives step notifications (the CLI draws progress from them), and may ask the render to
/// stop at the next step boundary.
pub trait Progress: Send + Sync {
    fn started(&self, step: Step);

    /// Checked before every step: `Some` stops the render there with
    /// [`RenderError::Stopped`]. A step that has begun is never cut short.
    fn stop(&self) -> Option<Stop> {
        None
    }
}

/// Why a render stopped between two steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The job's tenant lease could not be renewed: the job must not run on without its slot.
    LeaseLost,
    /// The run was cancelled: Ctrl-C on `render`, or a worker's shutdown grace ran out.
    Cancelled,
}

/// A shared "stop between steps" flag: set once, seen by every render that checks it.
#[derive(Debug, Clone, Default)]
pub struct Cancellation(Arc<std::sync::atomic::AtomicBool>);

impl Cancellation {
    pub fn cancel(&self) {
        self.0.store(true, std::sync::atomic::Ordering::Release);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// A progress sink that ignores everything.
pub struct Silent;

impl Progress for Silent {
    fn started(&self, _step: Step) {}
}

/// Settings the pipeline needs from the configuration.
#[derive(Debug, Clone)]
pub struct PipelineSettings {
    pub decode_limits: codec::DecodeLimits,
    pub imaging: ImagingConfig,
    /// Longest prompt passed to a provider, in characters.
    pub prompt_max_chars: usize,
}

/// Everything one render needs, wired once at start-up.
pub struct Pipeline {
    pub assets: Arc<dyn AssetSource>,
    pub editor: Arc<dyn ImageEditor>,
    pub blobs: Arc<dyn BlobStore>,
    pub designs: Arc<dyn DesignStore>,
    pub safety: SafetyPolicy,
    pub settings: PipelineSettings,
    /// The result cache, when `RESULT_CACHE` turns it on for the provider asked first.
    pub cache: Option<Arc<crate::cache::ResultCache>>,
}

/// The result of a completed render: what `render --json` prints and what a queued job returns.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RenderOutput {
    pub design_id: String,
    pub tenant_id: String,
    pub status: &'static str,
    pub composite_texture_url: String,
    pub preview_url: String,
    pub high_res_url: String,
    pub cost_tokens: i32,
    pub cost_cents: i32,
    pub metadata: RenderMetadata,
}

impl Pipeline {
    /// Runs steps 2–9 of the job flow for one request that is a job of its own (the one-shot
    /// CLI). On error nothing is recorded as FAILED: only the caller knows whether this was the
    /// last attempt (see [`Pipeline::record_failure`]).
    pub async fn run(&self, request: &RenderRequest, progress: &dyn Progress) -> Result<RenderOutput, RenderError> {
        self.run_job(request, None, progress).await
    }

    /// [`Pipeline::run`] for one attempt of the queued job `job_id`: paid calls are recorded
    /// with the job id, and tokens recorded by its earlier attempts count against
    /// `MAX_TOKENS_PER_JOB` before the next paid call.
    pub async fn run_attempt(
        &self,
        request: &RenderRequest,
        job_id: &str,
        progress: &dyn Progress,
    ) -> Result<RenderOutput, RenderError> {
        self.run_job(request, Some(job_id), progress).await
    }

    async fn run_job(
        &self,
        request: &RenderRequest,
        job_id: Option<&str>,
        progress: &dyn Progress,
    ) -> Result<RenderOutput, RenderError> {
        let started_at = Utc::now();
        let started = Instant::now();
        let mut timings = Timings::default();
        let design = &request.design_id;
        let tenant = &request.tenant_id;

        begin(progress, Step::MarkProcessing)?;
        let step = Instant::now();
        let tokens_spent = async {
            self.designs.mark_processing(design, tenant).await?;
            Ok::<_, RenderError>(match job_id {
                Some(job) => self
                    .designs
                    .get(design)
                    .await?
                    .map_or(0, |row| row.tokens_recorded_by_job(job)),
                None => 0,
            })
        }
        .instrument(tracing::info_span!("mark processing", design.id = %design, tenant.id = %tenant))
        .await?;
        timings.mark_processing_ms = elapsed_ms(step);

        begin(progress, Step::SanitizePrompt)?;
        let step = Instant::now();
        let sanitized = tracing::info_span!("sanitize", prompt.chars = request.prompt.as_str().chars().count())
            .in_scope(|| safety::sanitize(request.prompt.as_str(), &self.safety, self.settings.prompt_max_chars))?;
        timings.sanitize_prompt_ms = elapsed_ms(step);

        begin(progress, Step::Download)?;
        let step = Instant::now();
        let (base_bytes, mask_bytes) =
            tokio::try_join!(self.load(&request.base_texture, AssetRole::BaseTexture), async {
                match &request.mask {
                    Some(mask) => self.load(mask, AssetRole::Mask).await.map(Some),
                    None => Ok(None),
                }
            })?;
        timings.download_ms = elapsed_ms(step);
        let cached = match self.cache.as_ref().filter(|_| request.options.cache) {
            Some(cache) => {
                let key = cache.key(&KeyInputs {
                    tenant,
                    prompt: sanitized.prompt.as_str(),
                    base: &base_bytes,
                    mask: mask_bytes.as_deref(),
                    options: &request.options,
                    imaging: &self.settings.imaging,
                });
                let span = tracing::info_span!("cache lookup", cache.key = %key, cache.hit = Empty);
                match cache.lookup(&key, tenant, progress).instrument(span.clone()).await {
                    Lookup::Hit(manifest) => {
                        span.record("cache.hit", true);
                        let (outputs, mut metadata) =
                            reused(cache.provider(), *manifest, self.blobs.backend(), timings);
                        metadata.job_id = job_id.map(str::to_owned);
                        metadata.prompt =
                            PromptReport::new(sanitized.truncated, &sanitized.redactions, sanitized.injection_flags);
                        return self
                            .finish(request, progress, None, outputs, metadata, (started_at, started))
                            .await;
                    }
                    Lookup::Miss(claim) => {
                        span.record("cache.hit", false);
                        Some((Arc::clone(cache), key, claim))
                    }
                }
            }
            None => None,
        };
        let step = Instant::now();
        let decoding = tracing::info_span!(
            "decode",
            base.width = Empty,
            base.height = Empty,
            mask = mask_bytes.is_some()
        );
        let (base, mask) = self
            .decode_inputs(base_bytes, mask_bytes)
            .instrument(decoding.clone())
            .await?;
        decoding.record("base.width", base.width());
        decoding.record("base.height", base.height());
        let base = Arc::new(base);
        timings.decode_ms = elapsed_ms(step);

        begin(progress, Step::Inpaint)?;
        let step = Instant::now();
        let mask_coverage = mask.as_ref().map(imaging::coverage);
        let mut edit = if mask_coverage.is_some_and(|coverage| coverage <= 0.0) {
            // A mask that selects nothing leaves the base as it is: no provider is asked, so
            // no call is paid for, whichever provider would have answered.
            unedited(&base)
        } else {
            self.editor
                .edit(EditRequest {
                    image: &base,
                    mask: mask.as_ref(),
                    prompt: &sanitized.prompt,
                    size: request.options.size,
                    quality: request.options.quality,
                    tokens_spent,
                })
                .await?
        };
        timings.inpaint_ms = elapsed_ms(step);
        // Persist the paid call before any later step can fail, so a retry never loses it; the
        // store counts each call id once, so a retry never doubles it.
        let ledger = match &edit.accounting.paid_call {
            Some(call) => Some({
                count_paid_call(call);
                self.designs
                    .record_paid_call(design, tenant, &paid_call_entry(call, job_id))
                    .await?
            }),
            None => None,
        };

        begin(progress, Step::Postprocess)?;
        let step = Instant::now();
        let spec = AssetSpec {
            high_res: (request.options.size.width(), request.options.size.height()),
            preview: self.settings.imaging.preview_size,
            fit: request.options.fit,
            normal_map: request.options.normal_map,
            roughness_map: request.options.roughness_map,
            normal_strength: self.settings.imaging.normal_strength,
            png_level: self.settings.imaging.png_level,
        };
        let feather_radius = self.settings.imaging.feather_radius;
        let base_size = base.dimensions();
        // Taken, not moved out: the rest of the answer is recorded after the upload.
        let generated = std::mem::take(&mut edit.image);
        let assets = blocking(move || {
            let composite = tracing::info_span!("composite", width = base_size.0, height = base_size.1)
                .in_scope(|| imaging::composite::compose(&base, generated, mask.as_ref(), feather_radius));
            imaging::render_assets(&composite, &spec)
        })
        .await??;
        timings.postprocess_ms = elapsed_ms(step);

        let sizes = Sizes {
            base: [base_size.0, base_size.1],
            composite: [assets.composite.width, assets.composite.height],
            fit: request.options.fit,
            high_res: [assets.high_res.width, assets.high_res.height],
            preview: [assets.preview.width, assets.preview.height],
            bytes: EncodedBytes {
                composite: assets.composite.png.len(),
                high_res: assets.high_res.png.len(),
                preview: assets.preview.png.len(),
                normal_map: assets.normal_map.as_ref().map(|a| a.png.len()),
                roughness_map: assets.roughness_map.as_ref().map(|a| a.png.len()),
            },
        };
        let postprocess_timings = assets.timings;

        begin(progress, Step::Upload)?;
        let step = Instant::now();
        let urls = self.upload(request, assets).await?;
        timings.upload_ms = elapsed_ms(step);
        // A result is kept only when the provider the key names made it: not a later one of a
        // fallback chain, and not a dry run's stand-in.
        let cache_report = match cached {
            Some((cache, key, claim)) => {
                if edit.provider == cache.provider() && !edit.accounting.dry_run {
                    let manifest = manifest_of(&key, request, &edit, &urls, &sizes, mask_coverage);
                    cache
                        .store(claim, &request.tenant_id, &manifest)
                        .instrument(tracing::info_span!("cache store", cache.key = %key))
                        .await;
                }
                Some(CacheReport {
                    hit: false,
                    key: key.to_string(),
                    source_design_id: None,
                    saved_micro_cents: None,
                })
            }
            None => None,
        };

        let metadata = RenderMetadata {
            job_id: job_id.map(str::to_owned),
            provider: edit.provider,
            provider_attempts: edit.attempts,
            cost: None,
            estimate: edit.accounting.estimate,
            dry_run: edit.accounting.dry_run,
            prompt_used: edit.prompt_used,
            provider_details: edit.details,
            usage: edit.usage,
            normal_map_url: urls.normal_map.map(String::from),
            roughness_map_url: urls.roughness_map.map(String::from),
            prompt: PromptReport::new(sanitized.truncated, &sanitized.redactions, sanitized.injection_flags),
            sizes,
            mask_coverage,
            postprocess: Some(postprocess_timings),
            storage: urls.storage,
            timings,
            cache: cache_report,
        };
        let outputs = Outputs {
            composite: urls.composite.into(),
            preview: urls.preview.into(),
            high_res: urls.high_res.into(),
        };
        self.finish(request, progress, ledger, outputs, metadata, (started_at, started))
            .await
    }

    /// Step 9 of every render: writes the COMPLETED row with the design's cost (the sum of its
    /// recorded paid calls, including earlier attempts') and answers the render's output.
    async fn finish(
        &self,
        request: &RenderRequest,
        progress: &dyn Progress,
        ledger: Option<crate::store::CostLedger>,
        outputs: Outputs,
        mut metadata: RenderMetadata,
        (started_at, started): (DateTime<Utc>, Instant),
    ) -> Result<RenderOutput, RenderError> {
        let (design, tenant) = (&request.design_id, &request.tenant_id);
        begin(progress, Step::Record)?;
        let step = Instant::now();
        let recording = tracing::info_span!("record", design.id = %design);
        let (cost_tokens, cost_cents) = match &ledger {
            Some(ledger) => (ledger.cost_tokens, ledger.cost_cents),
            None => match self.designs.get(design).instrument(recording.clone()).await? {
                Some(row) => (row.cost_tokens, row.cost_cents),
                None => (0, 0),
            },
        };
        metadata.cost = ledger.map(|ledger| ledger.json);
        metadata.timings.started_at = timestamp(started_at);
        metadata.timings.finished_at = timestamp(Utc::now());
        metadata.timings.total_ms = elapsed_ms(started);
        let stored = serde_json::to_value(&metadata)
            .map_err(|error| RenderError::Internal(format!("metadata not serialisable: {error}")))?;
        let completed = CompletedRender {
            composite_texture_url: outputs.composite,
            preview_url: outputs.preview,
            high_res_url: outputs.high_res,
            cost_tokens,
            cost_cents,
            metadata: stored,
        };
        self.designs
            .mark_completed(design, tenant, &completed)
            .instrument(recording)
            .await?;
        metadata.timings.record_ms = Some(elapsed_ms(step));
        Ok(RenderOutput {
            design_id: design.to_string(),
            tenant_id: tenant.to_string(),
            status: "COMPLETED",
            composite_texture_url: completed.composite_texture_url,
            preview_url: completed.preview_url,
            high_res_url: completed.high_res_url,
            cost_tokens,
            cost_cents,
            metadata,
        })
    }

    /// Marks the design FAILED with the failure's code and message. Call it once, when no
    /// attempt is left or the error is permanent (see `failure::settle`).
    pub async fn record_failure(&self, request: &RenderRequest, failure: &FailedRender) -> Result<(), StoreError> {
        self.designs
            .mark_failed(&request.design_id, &request.tenant_id, failure)
            .await
    }

    async fn load(&self, asset: &AssetRef, role: AssetRole) -> Result<Vec<u8>, RenderError> {
        let span = match role {
            AssetRole::BaseTexture => tracing::info_span!("download base", bytes = Empty),
            AssetRole::Mask => tracing::info_span!("download mask", bytes = Empty),
        };
        let bytes = self.assets.load(asset, role).instrument(span.clone()).await?;
        span.record("bytes", bytes.len());
        Ok(bytes)
    }

    /// Decodes base and mask concurrently on the blocking pool, then turns the mask into a
    /// coverage plane the size of the base.
    async fn decode_inputs(
        &self,
        base: Vec<u8>,
        mask: Option<Vec<u8>>,
    ) -> Result<(RgbaImage, Option<GrayImage>), RenderError> {
        let limits = self.settings.decode_limits;
        let decode = |bytes: Vec<u8>, field: &'static str| {
            blocking(move || codec::decode_rgba(&bytes, limits).map_err(|source| RenderError::Decode { field, source }))
        };
        let base = decode(base, AssetRole::BaseTexture.field());
        let mask = async {
            match mask {
                Some(bytes) => decode(bytes, AssetRole::Mask.field()).await?.map(Some),
                None => Ok(None),
            }
        };
        let (base, mask) = tokio::try_join!(async { base.await? }, mask)?;
        let mask = match mask {
            Some(mask) => {
                let (width, height) = base.dimensions();
                Some(blocking(move || imaging::mask_plane(&mask, width, height)).await?)
            }
            None => None,
        };
        Ok((base, mask))
    }

    /// Uploads every encoded asset concurrently, handing the buffers to the store (no copy).
    async fn upload(&self, request: &RenderRequest, assets: RenderedAssets) -> Result<UploadedUrls, RenderError> {
        let put = |kind: AssetKind, png: bytes::Bytes| {
            let key = StorageKey::for_asset(&request.tenant_id, &request.design_id, kind, &png);
            let blobs = Arc::clone(&self.blobs);
            let span = tracing::info_span!(
                "upload",
                asset = kind.as_str(),
                bytes = png.len(),
                backend = Empty,
                fallback = Empty
            );
            async move {
                let stored = blobs.put(&key, png, "image/png").instrument(span.clone()).await?;
                span.record("backend", stored.backend);
                if let Some(fell_back) = &stored.fallback {
                    span.record("fallback", fell_back.from);
                }
                Ok::<_, crate::storage::StorageError>((kind, stored))
            }
        };
        let optional = |kind, asset: Option<imaging::EncodedImage>| {
            let upload = asset.map(|asset| put(kind, asset.png));
            async move {
                match upload {
                    Some(upload) => upload.await.map(Some),
                    None => Ok(None),
                }
            }
        };
        let (composite, high_res, preview, normal_map, roughness_map) = tokio::try_join!(
            put(AssetKind::Composite, assets.composite.png),
            put(AssetKind::HighRes, assets.high_res.png),
            put(AssetKind::Preview, assets.preview.png),
            optional(AssetKind::NormalMap, assets.normal_map),
            optional(AssetKind::RoughnessMap, assets.roughness_map),
        )?;
        let mut storage = StorageReport {
            backend: self.blobs.backend(),
            fallback_from: None,
            reason: None,
            fell_back: Vec::new(),
        };
        for (kind, stored) in [&composite, &high_res, &preview]
            .into_iter()
            .chain(normal_map.as_ref())
            .chain(roughness_map.as_ref())
        {
            if let Some(fell_back) = &stored.fallback {
                storage.backend = stored.backend;
                storage.fallback_from = Some(fell_back.from);
                storage.reason.get_or_insert_with(|| fell_back.reason.clone());
                storage.fell_back.push(kind.as_str());
            }
        }
        Ok(UploadedUrls {
            composite: composite.1.url,
            high_res: high_res.1.url,
            preview: preview.1.url,
            normal_map: normal_map.map(|(_, stored)| stored.url),
            roughness_map: roughness_map.map(|(_, stored)| stored.url),
            storage,
        })
    }
}

/// `design_render_tokens_total` and `design_render_cost_microcents_total` of one paid call,
/// labelled by provider and model.
fn count_paid_call(call: &crate::providers::PaidCall) {
    let labels = [("provider", call.provider.to_owned()), ("model", call.model.clone())];
    metrics::counter!("design_render_tokens_total", &labels).increment(call.usage.total());
    metrics::counter!("design_render_cost_microcents_total", &labels).increment(call.cost.total.0);
}

fn paid_call_entry(call: &crate::providers::PaidCall, job_id: Option<&str>) -> crate::store::PaidCallEntry {
    let mut details = serde_json::json!({
        "provider": call.provider,
        "model": call.model,
        "usage": call.usage,
        "breakdown": call.cost.breakdown,
        "recordedAt": timestamp(Utc::now()),
    });
    if let (Some(job), Some(object)) = (job_id, details.as_object_mut()) {
        object.insert("jobId".into(), job.into());
    }
    crate::store::PaidCallEntry {
        call_id: call.call_id.clone(),
        tokens: call.usage.total(),
        micro_cents: call.cost.total.0,
        details,
    }
}

/// The cache entry of a fresh render: where its outputs are and what it cost.
fn manifest_of(
    key: &CacheKey,
    request: &RenderRequest,
    edit: &crate::providers::EditResponse,
    urls: &UploadedUrls,
    sizes: &Sizes,
    mask_coverage: Option<f64>,
) -> Manifest {
    Manifest {
        version: crate::cache::PIPELINE_VERSION,
        key: key.to_string(),
        tenant_id: request.tenant_id.to_string(),
        source_design_id: request.design_id.to_string(),
        provider: edit.provider.to_owned(),
        prompt_used: edit.prompt_used,
        provider_details: edit.details.clone(),
        composite_texture_url: urls.composite.to_string(),
        high_res_url: urls.high_res.to_string(),
        preview_url: urls.preview.to_string(),
        normal_map_url: urls.normal_map.as_ref().map(ToString::to_string),
        roughness_map_url: urls.roughness_map.as_ref().map(ToString::to_string),
        sizes: sizes.clone(),
        mask_coverage,
        cost_micro_cents: edit.accounting.paid_call.as_ref().map_or(0, |call| call.cost.total.0),
        created_at: timestamp(Utc::now()),
    }
}

/// The metadata of a render completed from a cache hit: the earlier render's outputs and
/// facts, no provider tried, nothing spent by this render, and the row's URLs. The caller fills
/// in the job id and this render's prompt report.
fn reused(
    provider: &'static str,
    manifest: Manifest,
    backend: &'static str,
    timings: Timings,
) -> (Outputs, RenderMetadata) {
    let outputs = Outputs {
        composite: manifest.composite_texture_url,
        preview: manifest.preview_url,
        high_res: manifest.high_res_url,
    };
    let metadata = RenderMetadata {
        job_id: None,
        provider,
        provider_attempts: Vec::new(),
        cost: None,
        estimate: None,
        dry_run: false,
        prompt_used: manifest.prompt_used,
        provider_details: manifest.provider_details,
        usage: crate::providers::Usage::default(),
        normal_map_url: manifest.normal_map_url,
        roughness_map_url: manifest.roughness_map_url,
        prompt: PromptReport::new(false, &[], Vec::new()),
        sizes: manifest.sizes,
        mask_coverage: manifest.mask_coverage,
        postprocess: None,
        storage: StorageReport {
            backend,
            fallback_from: None,
            reason: None,
            fell_back: Vec::new(),
        },
        timings,
        cache: Some(CacheReport {
            hit: true,
            key: manifest.key,
            source_design_id: Some(manifest.source_design_id),
            saved_micro_cents: Some(manifest.cost_micro_cents),
        }),
    };
    (outputs, metadata)
}

/// The answer for a mask that selects nothing: the base itself, from no provider, at no cost.
fn unedited(base: &RgbaImage) -> crate::providers::EditResponse {
    crate::providers::EditResponse {
        image: base.clone(),
        provider: "none",
        prompt_used: false,
        usage: crate::providers::Usage::default(),
        cost_micro_usd: 0,
        details: serde_json::json!({ "skipped": "the mask selects nothing, so the base is used as it is" }),
        accounting: crate::providers::Accounting::default(),
        attempts: Vec::new(),
    }
}

/// The three URLs every completed row has.
struct Outputs {
    composite: String,
    preview: String,
    high_res: String,
}

struct UploadedUrls {
    composite: url::Url,
    high_res: url::Url,
    preview: url::Url,
    normal_map: Option<url::Url>,
    roughness_map: Option<url::Url>,
    storage: StorageReport,
}

/// Announces a step, unless the render has been asked to stop before it.
fn begin(progress: &dyn Progress, step: Step) -> Result<(), RenderError> {
    match progress.stop() {
        Some(stop) => Err(RenderError::Stopped { stop, before: step }),
        None => {
            progress.started(step);
            Ok(())
        }
    }
}

/// Runs CPU work on the blocking pool inside the current tracing span, turning a panic into an
/// error instead of taking the process down.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, RenderError> {
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(work))
        .await
        .map_err(|error| RenderError::Internal(format!("image task failed: {error}")))
}

/// Milliseconds since `since`, to the microsecond (small jobs take well under a millisecond
/// per step, and whole milliseconds would hide them).
fn elapsed_ms(since: Instant) -> f64 {
    (since.elapsed().as_secs_f64() * 1e6).round() / 1e3
}

fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}
