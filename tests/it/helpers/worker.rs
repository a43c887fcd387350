//! `TestWorker`: the real `RenderWorker` and `Pipeline` on the in-memory twins (designs, blobs,
//! leases, events, assets) with a scripted editor, driven in-process one delivery at a time.
//!
//! When it is dropped at the end of a passing test it asserts that nothing was left behind: no
//! tenant lease held, no Design row PROCESSING, no published event that the test did not take.
//! A test therefore runs every job it starts to its final outcome and checks every event.

use std::sync::Arc;
use std::time::Duration;

use design_render::assets::memory::MemoryAssets;
use design_render::config::ImagingConfig;
use design_render::events::{MemorySink, RenderEvent};
use design_render::imaging::codec::DecodeLimits;
use design_render::job::{DesignId, TenantId};
use design_render::pipeline::{Pipeline, PipelineSettings};
use design_render::providers::scripted::{Answer, ScriptedEditor};
use design_render::safety::SafetyPolicy;
use design_render::storage::flaky::FlakyBlobStore;
use design_render::storage::memory::MemoryBlobStore;
use design_render::store::memory::MemoryDesignStore;
use design_render::store::{DesignRow, MissingDesign};
use design_render::tenancy::{MemoryTenantLimiter, TenantLimits};
use design_render::worker::{Delivery, JobHandler, JobOutcome, RenderWorker, SpanNames};
use serde_json::{Value, json};

/// Where every test job's base texture is served from (by [`MemoryAssets`], not the network).
pub const BASE_URL: &str = "https://assets.example/base.png";

pub struct TestWorker {
    pub worker: RenderWorker,
    pub designs: Arc<MemoryDesignStore>,
    pub blobs: Arc<FlakyBlobStore<MemoryBlobStore>>,
    pub limiter: Arc<MemoryTenantLimiter>,
    pub events: Arc<MemorySink>,
    pub assets: Arc<MemoryAssets>,
    pub editor: Arc<ScriptedEditor>,
}

impl TestWorker {
    /// A worker whose editor gives `answers` in order; every tenant may run 2 jobs at once and
    /// a lease lives 30 s.
    pub fn new(answers: impl IntoIterator<Item = Answer>) -> Self {
        Self::with_limits(answers, 2, Duration::from_secs(30))
    }

    pub fn with_limits(answers: impl IntoIterator<Item = Answer>, tenant_limit: u32, lease: Duration) -> Self {
        let designs = Arc::new(MemoryDesignStore::new(MissingDesign::Reject));
        let blobs = Arc::new(FlakyBlobStore::new(Arc::new(MemoryBlobStore::new())));
        let limiter = Arc::new(MemoryTenantLimiter::new(
            TenantLimits {
                default: tenant_limit,
                overrides: Default::default(),
            },
            lease,
        ));
        let events = Arc::new(MemorySink::default());
        let assets = Arc::new(MemoryAssets::new());
        assets.serve(BASE_URL, super::gradient_png(64, 64));
        let editor = Arc::new(ScriptedEditor::new(answers));
        let pipeline = Pipeline {
            assets: assets.clone(),
            editor: editor.clone(),
            blobs: blobs.clone(),
            designs: designs.clone(),
            safety: SafetyPolicy::default(),
            settings: PipelineSettings {
                decode_limits: DecodeLimits {
                    max_dimension: 4096,
                    max_pixels: 4096 * 4096,
                },
                imaging: ImagingConfig {
                    preview_size: 32,
                    ..ImagingConfig::default()
                },
                prompt_max_chars: 4000,
            },
            cache: None,
        };
        let worker = RenderWorker {
            pipeline,
            limiter: limiter.clone(),
            events: events.clone(),
            cancellation: Default::default(),
            names: SpanNames::new("design-render", "test-host:1"),
            in_flight: Default::default(),
        };
        Self {
            worker,
            designs,
            blobs,
            limiter,
            events,
            assets,
            editor,
        }
    }

    /// Adds a PENDING Design row owned by `tenant` (the backend creates rows before enqueueing).
    pub fn design(&self, design: &str, tenant: &str) {
        self.designs.insert_pending(&id(design), &tenant_id(tenant));
    }

    /// Runs attempt `attempt` of `attempts_allowed` of job `job_id`.
    pub async fn deliver(&self, job_id: &str, payload: Value, attempt: u32, attempts_allowed: u32) -> JobOutcome {
        self.worker
            .handle(Delivery {
                job_id: job_id.to_owned(),
                attempt,
                attempts_allowed,
                payload: payload.into(),
                job_name: "render".to_owned(),
                enqueued_at_ms: 1_765_000_000_000,
                trace_carrier: None,
                children: None,
            })
            .await
    }

    pub fn row(&self, design: &str) -> DesignRow {
        self.designs
            .rows()
            .into_iter()
            .find(|row| row.id == design)
            .unwrap_or_else(|| panic!("no row {design}"))
    }

    /// Takes every event published so far (the drop check wants none left untaken).
    pub fn take_events(&self) -> Vec<RenderEvent> {
        self.events.take()
    }
}

impl Drop for TestWorker {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        let leases = self.limiter.held_leases();
        assert!(leases.is_empty(), "tenant leases left held: {leases:?}");
        let processing = self.designs.processing_rows();
        assert!(processing.is_empty(), "rows left PROCESSING: {processing:?}");
        let events = self.events.take();
        assert!(events.is_empty(), "events the test never checked: {events:?}");
    }
}

/// A valid job payload for `design` of `tenant`, rendering the served base at 64×64.
pub fn payload(design: &str, tenant: &str) -> Value {
    json!({
        "designId": design,
        "prompt": "mossy stone",
        "baseTextureUrl": BASE_URL,
        "tenantId": tenant,
        "userId": "user-1",
        "renderOptions": {"size": "64x64", "generateNormalMap": true}
    })
}

pub fn id(design: &str) -> DesignId {
    DesignId::parse(design).expect("valid design id")
}

pub fn tenant_id(tenant: &str) -> TenantId {
    TenantId::parse(tenant).expect("valid tenant id")
}

/// `value` with what differs between runs (clock readings, durations) replaced by placeholders,
/// so wire formats can be snapshot.
pub fn redact(mut value: Value) -> Value {
    fn walk(value: &mut Value, key: Option<&str>) {
        match value {
            Value::Object(map) => {
                for (name, member) in map.iter_mut() {
                    walk(member, Some(name));
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|item| walk(item, key)),
            Value::Number(_) if key.is_some_and(|k| k.ends_with("Ms") || k == "latencyMs") => {
                *value = "<ms>".into();
            }
            Value::String(_)
                if key.is_some_and(|k| {
                    matches!(k, "timestamp" | "startedAt" | "finishedAt" | "failedAt" | "recordedAt")
                }) =>
            {
                *value = "<time>".into();
            }
            _ => {}
        }
    }
    walk(&mut value, None);
    value
}
