//! Composition root: turns a [`Config`] into concrete adapters behind the ports and hands the
//! pipeline its trait objects. The only module that names adapter types and matches on backend
//! enums.

use std::sync::Arc;

use anyhow::Context;

use crate::assets::AssetSource;
use crate::assets::http::HttpAssets;
use crate::assets::local::LocalFiles;
use crate::config::StorageBackend;
use crate::config::{Config, DatabaseConfig};
use crate::config::{ProviderConfig, ProviderKind};
use crate::imaging::codec::DecodeLimits;
use crate::pipeline::{Pipeline, PipelineSettings};
use crate::providers::ImageEditor;
use crate::providers::breaker::{BreakerSettings, CircuitBreaker};
use crate::providers::breakered::Breakered;
use crate::providers::builtin::BuiltinFill;
use crate::providers::dry_run::DryRunEditor;
use crate::providers::fallback::FallbackChain;
use crate::providers::local_diffusion::{LocalDiffusionEditor, LocalDiffusionSettings};
use crate::providers::openai::{OpenAiEditor, OpenAiSettings};
use crate::safety::SafetyPolicy;
use crate::storage::cloudinary::CloudinaryStore;
use crate::storage::fallback::LocalFallback;
use crate::storage::local::LocalStore;
use crate::storage::s3::S3Store;
use crate::storage::{BlobStore, Transport};
use crate::store::postgres::{PgDesignStore, PgSettings};
use crate::store::sqlite::{SqliteDesignStore, SqliteSettings};
use crate::store::{DesignStore, MissingDesign};

/// Longest prompt handed to a provider when the provider sets no stricter limit.
const DEFAULT_PROMPT_MAX_CHARS: usize = 4000;

/// A start-up problem that no retry can fix: the configuration itself must change (an unpriced
/// model, a bad blocklist or tenant file, a listed provider that is not configured). The binary
/// exits with 78 (`EX_CONFIG`) for it, and with 75 only for what is worth retrying (a database
/// or Redis that is not reachable yet).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigurationError(pub String);

impl ConfigurationError {
    /// Whether `error`, or anything it was caused by, is a configuration problem: this type, or
    /// a database schema the worker may not change (missing columns, `RUN_MIGRATIONS`).
    pub fn is_cause_of(error: &anyhow::Error) -> bool {
        error.chain().any(|cause| {
            cause.is::<ConfigurationError>()
                || matches!(
                    cause.downcast_ref::<crate::store::StoreError>(),
                    Some(crate::store::StoreError::Schema(_) | crate::store::StoreError::MissingColumns { .. })
                )
        })
    }
}

/// How the pipeline is driven, which decides what inputs it trusts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The one-shot `render` command: local files allowed, the Design row is created if missing.
    OneShot,
    /// The queue worker: local files refused, the Design row must exist for the job's tenant.
    Queue,
}

/// Builds the pipeline for a mode. Performs the IO checks (database reachable and migrated,
/// storage directory writable) so a misconfiguration fails before the first job.
pub async fn build_pipeline(config: &Config, mode: Mode) -> anyhow::Result<Pipeline> {
    let downloads: Arc<dyn AssetSource> =
        Arc::new(HttpAssets::new(config.assets.clone()).context("building the HTTP client for asset downloads")?);
    // Only the one-shot command may read local files; the queue worker gets the downloader
    // alone, which refuses every local path.
    let (assets, missing): (Arc<dyn AssetSource>, _) = match mode {
        Mode::OneShot => (
            Arc::new(LocalFiles::new(config.assets.max_bytes, downloads)),
            MissingDesign::Create,
        ),
        Mode::Queue => (downloads, MissingDesign::Reject),
    };
    // A `StoreError::MissingColumns` (the schema lacks columns and RUN_MIGRATIONS may not add
    // them) stays reachable through the context with `downcast_ref::<StoreError>()`.
    let designs: Arc<dyn DesignStore> = match &config.database {
        DatabaseConfig::Sqlite { path } => Arc::new(
            SqliteDesignStore::open_with(
                SqliteSettings {
                    path,
                    tenant_column: config.design_tenant_column.clone(),
                    migrations: config.migrations,
                },
                missing,
            )
            .await
            .with_context(|| format!("opening SQLite database {}", path.display()))?,
        ),
        DatabaseConfig::Postgres { url } => Arc::new(
            PgDesignStore::connect(
                PgSettings {
                    url: url.expose(),
                    schema: None,
                    max_connections: 8,
                    tenant_column: config.design_tenant_column.clone(),
                    migrations: config.migrations,
                },
                missing,
            )
            .await
            .context("connecting to PostgreSQL (DATABASE_URL)")?,
        ),
    };
    let blobs = build_storage(config, mode)?;
    let providers = build_editor(&config.providers)?;
    tracing::info!(
        "design-render {} ({}): {}",
        env!("CARGO_PKG_VERSION"),
        match mode {
            Mode::OneShot => "render",
            Mode::Queue => "worker",
        },
        config.summary(&providers.order)
    );
    let editor = providers.editor;
    let cache = build_cache(config, mode, &editor, &blobs).await?;
    let safety = match &config.providers.prompt_blocklist {
        None => SafetyPolicy::default(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|error| ConfigurationError(format!("reading PROMPT_BLOCKLIST {}: {error}", path.display())))?;
            SafetyPolicy::with_extra_blocklist(&text)
                .map_err(|error| ConfigurationError(format!("PROMPT_BLOCKLIST {}: {error}", path.display())))?
        }
    };
    Ok(Pipeline {
        assets,
        editor,
        blobs,
        designs,
        safety,
        settings: PipelineSettings {
            decode_limits: DecodeLimits {
                max_dimension: config.assets.max_dimension,
                max_pixels: config.assets.max_pixels,
            },
            imaging: config.imaging.clone(),
            prompt_max_chars: providers.prompt_max_chars,
        },
        cache,
    })
}

/// The result cache `RESULT_CACHE` asks for: by default only for a deterministic provider
/// asked first (the built-in fill), never for dry runs (their editor has no identity). The
/// worker keeps its index in Redis, shared by the fleet; the one-shot command in memory, with
/// the durable manifests in local storage carrying entries from one run to the next.
async fn build_cache(
    config: &Config,
    mode: Mode,
    editor: &Arc<dyn ImageEditor>,
    blobs: &Arc<dyn BlobStore>,
) -> anyhow::Result<Option<Arc<crate::cache::ResultCache>>> {
    use crate::cache::{CacheIndex, ResultCache, memory::MemoryCacheIndex, redis::RedisCacheIndex};
    use crate::config::CacheMode;

    let Some(identity) = editor.identity() else {
        return Ok(None);
    };
    let enabled = match config.result_cache.mode {
        CacheMode::Off => false,
        CacheMode::Auto => identity.deterministic,
        CacheMode::On => true,
    };
    if !enabled {
        return Ok(None);
    }
    let index: Arc<dyn CacheIndex> = match mode {
        Mode::OneShot => Arc::new(MemoryCacheIndex::default()),
        Mode::Queue => {
            let connection = crate::queue::redis_connection(&config.redis)
                .await
                .context("connecting to Redis for the result cache (REDIS_URL or REDIS_HOST/REDIS_PORT)")?;
            Arc::new(RedisCacheIndex::new(
                connection,
                &config.queue.prefix,
                &config.queue.name,
            ))
        }
    };
    tracing::info!(
        "result cache on for {} ({}), entries kept {} s",
        identity.provider,
        identity.model,
        config.result_cache.ttl.as_secs()
    );
    Ok(Some(Arc::new(ResultCache::new(
        index,
        Arc::clone(blobs),
        identity,
        config.result_cache.ttl,
    ))))
}

/// The storage backend `STORAGE_BACKEND` selects, behind the local fallback when
/// `STORAGE_FALLBACK` (default: on for `render`, off for the worker) asks for it.
pub fn build_storage(config: &Config, mode: Mode) -> anyhow::Result<Arc<dyn BlobStore>> {
    let local = || {
        LocalStore::new(&config.storage_dir, config.public_base_url.clone())
            .with_context(|| format!("preparing STORAGE_DIR {}", config.storage_dir.display()))
    };
    let storage = &config.storage;
    let transport = Transport {
        connect_timeout: storage.connect_timeout,
        timeout: storage.timeout,
        retries: storage.retries,
        max_in_flight: storage.max_in_flight,
    };
    let primary: Arc<dyn BlobStore> = match &storage.backend {
        StorageBackend::Local => {
            if mode == Mode::Queue && config.public_base_url.is_none() {
                tracing::warn!(
                    "Assets are stored under STORAGE_DIR with file:// URLs, readable only on this machine; \
                     set STORAGE_BACKEND (cloudinary or s3) for a fleet, or PUBLIC_BASE_URL if the directory is served"
                );
            }
            return Ok(Arc::new(local()?));
        }
        StorageBackend::Cloudinary(cloudinary) => {
            Arc::new(CloudinaryStore::new(cloudinary.clone(), transport).context("building the Cloudinary client")?)
        }
        StorageBackend::S3(s3) => {
            let base = config
                .public_base_url
                .clone()
                .ok_or_else(|| ConfigurationError("S3 storage needs PUBLIC_BASE_URL".into()))?;
            Arc::new(
                S3Store::new(s3, base, transport)
                    .map_err(|error| ConfigurationError(format!("configuring the S3 client (S3_*): {error}")))?,
            )
        }
    };
    if storage.fallback_to_local.unwrap_or(mode == Mode::OneShot) {
        Ok(Arc::new(LocalFallback::new(primary, Arc::new(local()?))))
    } else {
        Ok(primary)
    }
}

/// The queue worker and the readiness checks of what it depends on (Redis, the database).
pub struct BuiltWorker {
    pub worker: crate::worker::RenderWorker,
    pub probes: Vec<crate::admin::Probe>,
    /// The queues' metrics in BullMQ's names, for `/metrics`.
    pub queue_metrics: crate::admin::MetricsText,
    /// The webhook deliveries' worker, with `WEBHOOK_ENABLED=true`.
    pub webhooks: Option<WebhookWorker>,
    /// This worker's heartbeat for the dashboards of the fleet.
    pub heartbeat: crate::dashboard::HeartbeatWriter,
    /// The dashboard's routes, with `DASHBOARD_TOKEN` set.
    pub dashboard: Option<axum::Router>,
}

/// The handler of the webhook queue and that queue's settings.
pub struct WebhookWorker {
    pub deliverer: crate::webhooks::deliver::WebhookDeliverer,
    pub queue: crate::config::QueueConfig,
}

/// Reads `WEBHOOK_ENDPOINTS_FILE` and checks every endpoint against the private-address policy
/// (an error names the endpoint and why), then opens the webhook queue for the outbox and builds
/// the deliverer.
async fn build_webhooks(
    config: &Config,
    webhook: &crate::config::WebhookConfig,
) -> anyhow::Result<(crate::webhooks::WebhookOutbox, WebhookWorker)> {
    use crate::webhooks::{Endpoint, Endpoints};

    let tenants = match &webhook.endpoints_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|error| {
                ConfigurationError(format!("reading WEBHOOK_ENDPOINTS_FILE {}: {error}", path.display()))
            })?;
            Endpoints::parse_file(&text).map_err(|problem| {
                ConfigurationError(format!("WEBHOOK_ENDPOINTS_FILE {}: {problem}", path.display()))
            })?
        }
        None => Default::default(),
    };
    let endpoints = Endpoints {
        default: webhook.url.clone().map(|url| Endpoint { url }),
        tenants,
    };
    endpoints
        .check(&webhook.private_hosts)
        .await
        .map_err(ConfigurationError)?;
    let deliveries = crate::queue::webhooks::BullmqDeliveries::open(&config.queue, &config.redis, webhook)
        .await
        .context("opening the webhook queue")?;
    let render_jobs = crate::queue::webhooks::RenderJobStates::open(&config.queue, &config.redis)
        .await
        .context("connecting to Redis for the webhook queue")?;
    let keys = webhook
        .secrets
        .iter()
        .map(crate::config::signing_key)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|problem| ConfigurationError(format!("WEBHOOK_SECRET {problem}")))?;
    let legacy_key = webhook
        .secrets
        .first()
        .map(|secret| secret.expose().as_bytes().to_vec())
        .unwrap_or_default();
    let deliverer = crate::webhooks::deliver::WebhookDeliverer::new(
        webhook.private_hosts.clone(),
        keys,
        legacy_key,
        webhook.schedule.clone(),
        webhook.timeout,
        Arc::new(render_jobs),
    );
    Ok((
        crate::webhooks::WebhookOutbox::new(Arc::new(endpoints), Arc::new(deliveries)),
        WebhookWorker {
            deliverer,
            queue: crate::queue::webhooks::webhook_queue_config(&config.queue, webhook),
        },
    ))
}

/// This worker among its peers: `host:pid`, as operators find it in traces and logs.
fn worker_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{host}:{}", std::process::id())
}

/// Builds the queue worker: the pipeline in [`Mode::Queue`], Redis tenant leases (limits from
/// `DEFAULT_TENANT_CONCURRENCY`, `TENANT_CONCURRENCY_FILE` and `TENANT_CONCURRENCY_OVERRIDES`,
/// the env winning), the event sinks (Redis PUBLISH, plus the webhook outbox when enabled), the
/// webhook deliverer and the queues' metrics.
pub async fn build_worker(config: &Config) -> anyhow::Result<BuiltWorker> {
    use crate::events::{EventSink, Fanout, redis_pubsub::RedisPublisher};
    use crate::tenancy::{RedisTenantLimiter, TenantLimits};

    let pipeline = build_pipeline(config, Mode::Queue).await?;
    let connection = crate::queue::redis_connection(&config.redis)
        .await
        .context("connecting to Redis (REDIS_URL or REDIS_HOST/REDIS_PORT)")?;
    let mut overrides = match &config.queue.tenant_overrides_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|error| {
                ConfigurationError(format!("reading TENANT_CONCURRENCY_FILE {}: {error}", path.display()))
            })?;
            crate::config::parse_tenant_limits(&text).map_err(|problem| {
                ConfigurationError(format!("TENANT_CONCURRENCY_FILE {}: {problem}", path.display()))
            })?
        }
        None => Default::default(),
    };
    overrides.extend(config.queue.tenant_overrides.clone());
    let limiter_limits = TenantLimits {
        default: config.default_tenant_concurrency,
        overrides,
    };
    let limiter = Arc::new(RedisTenantLimiter::new(
        connection.clone(),
        &config.queue.prefix,
        &config.queue.name,
        limiter_limits.clone(),
        config.queue.tenant_lease,
    ));
    let mut sinks: Vec<Arc<dyn EventSink>> = vec![Arc::new(RedisPublisher::new(connection.clone()))];
    let mut queues = vec![config.queue.clone()];
    let webhooks = match &config.queue.webhook {
        Some(webhook) => {
            let (outbox, worker) = build_webhooks(config, webhook).await?;
            sinks.push(Arc::new(outbox));
            queues.push(worker.queue.clone());
            Some(worker)
        }
        None => None,
    };
    let designs = Arc::clone(&pipeline.designs);
    let database = crate::admin::Probe {
        name: "database",
        check: Box::new(move || {
            let designs = Arc::clone(&designs);
            Box::pin(async move {
                // A read of a row that is never there: the connection and the table answer.
                let probe = crate::job::DesignId::parse("readiness-probe").map_err(|rule| rule.to_string())?;
                designs.get(&probe).await.map(drop).map_err(|error| error.to_string())
            })
        }),
    };
    let queue_metrics = crate::queue::queue_metrics(&queues, &config.redis)
        .await
        .context("opening the queues for their metrics")?;
    let operations: Arc<dyn crate::dashboard::Operations> = Arc::new(
        crate::queue::operations::QueueOperations::open(&config.queue, &config.redis)
            .await
            .context("opening the queues for the dashboard and heartbeats")?,
    );
    let name = worker_name();
    let in_flight: Arc<std::sync::atomic::AtomicU64> = Default::default();
    let heartbeat = crate::dashboard::HeartbeatWriter {
        operations: Arc::clone(&operations),
        editor: Arc::clone(&pipeline.editor),
        in_flight: Arc::clone(&in_flight),
        name: name.clone(),
        concurrency: config.queue.worker_concurrency,
    };
    let dashboard = match &config.queue.dashboard {
        Some(settings) => Some(crate::dashboard::router(Arc::new(crate::dashboard::Dashboard {
            access: crate::dashboard::auth::Access::new(&settings.token),
            read_only: settings.read_only,
            page_size: settings.page_size,
            operations,
            designs: Arc::clone(&pipeline.designs),
            images: crate::dashboard::images::Thumbnails::new(
                &config.assets.private_hosts,
                Some(config.storage_dir.clone()),
                pipeline.settings.decode_limits,
            )
            .context("building the HTTP client for dashboard thumbnails")?,
            tenant_limits: limiter_limits,
        }))),
        None => None,
    };
    Ok(BuiltWorker {
        probes: vec![crate::queue::redis_probe(connection), database],
        queue_metrics,
        webhooks,
        heartbeat,
        dashboard,
        worker: crate::worker::RenderWorker {
            pipeline,
            limiter,
            events: Arc::new(Fanout { sinks }),
            cancellation: Default::default(),
            names: crate::worker::SpanNames::new(&config.queue.name, &name),
            in_flight,
        },
    })
}

/// The editor the pipeline calls, and the longest prompt any provider in it accepts.
pub struct ProviderSetup {
    pub editor: Arc<dyn ImageEditor>,
    /// The provider names in order, for the start-up log.
    pub order: Vec<&'static str>,
    pub prompt_max_chars: usize,
}

/// Chooses and wires the providers:
/// - `DRY_RUN_MODE=true`: the built-in fill behind the dry-run adapter, which reports what the
///   OpenAI call would have cost; no paid provider is built.
/// - `RENDER_PROVIDERS` set: exactly those, in that order; a listed provider that is not
///   configured is a start-up error.
/// - otherwise the configured generative providers in the spec's order (OpenAI when a key is
///   set and `OPENAI_IMAGE_EDIT_ENABLED`, then local diffusion when `LOCAL_DIFFUSION_URL` is
///   set), and the built-in fill only when neither is configured, so a prompt-driven job is
///   never answered silently by the prompt-ignoring fill.
///
/// Every generative provider gets its own circuit breaker (on tokio's clock, so tests move it
/// with `tokio::time::advance`); the list is a fallback chain.
pub fn build_editor(config: &ProviderConfig) -> anyhow::Result<ProviderSetup> {
    let openai_configured = config.openai_image_edit_enabled && config.openai_api_key.is_some();
    let order = match &config.render_providers {
        Some(order) => order.clone(),
        None => {
            let mut order = Vec::new();
            if openai_configured {
                order.push(ProviderKind::OpenAi);
            }
            if config.local_diffusion_url.is_some() {
                order.push(ProviderKind::LocalDiffusion);
            }
            if order.is_empty() {
                order.push(ProviderKind::Builtin);
            }
            order
        }
    };
    let openai = || -> anyhow::Result<OpenAiEditor> {
        let key = config
            .openai_api_key
            .clone()
            .filter(|_| config.openai_image_edit_enabled)
            .ok_or_else(|| {
                ConfigurationError(
                    "RENDER_PROVIDERS lists openai, but OPENAI_API_KEY is unset or OPENAI_IMAGE_EDIT_ENABLED=false"
                        .into(),
                )
            })?;
        OpenAiEditor::new(OpenAiSettings {
            base_url: config.openai_base_url.clone(),
            api_key: key,
            model: config.openai_image_model.clone(),
            connect_timeout: std::time::Duration::from_secs(10).min(config.openai_timeout),
            timeout: config.openai_timeout,
            moderation: config.openai_moderation_enabled,
            max_tokens_per_job: config.max_tokens_per_job,
            prices: config.price_table.clone(),
        })
        .map_err(|error| match error {
            crate::providers::openai::OpenAiBuildError::Unpriced { .. } => ConfigurationError(format!(
                "configuring the OpenAI provider (OPENAI_IMAGE_MODEL, PRICE_TABLE_OVERRIDES): {error}"
            ))
            .into(),
            other => anyhow::Error::new(other).context("building the OpenAI client"),
        })
    };
    let mut prompt_max_chars = DEFAULT_PROMPT_MAX_CHARS;
    if config.dry_run {
        let estimator: Option<crate::providers::dry_run::Estimator> = if order.contains(&ProviderKind::OpenAi) {
            let model = config.openai_image_model.clone();
            let prices = config.price_table.clone();
            prompt_max_chars = prompt_max_chars.min(crate::budget::prompt_char_limit(&model));
            Some(Box::new(move |request| {
                crate::providers::openai::estimate_for(
                    &model,
                    request.image.dimensions(),
                    (request.size.width(), request.size.height()),
                    request.quality,
                    request.prompt.char_count(),
                    &prices,
                )
            }))
        } else {
            None
        };
        return Ok(ProviderSetup {
            editor: Arc::new(DryRunEditor::new(
                Arc::new(BuiltinFill::default()),
                estimator,
                config.max_tokens_per_job,
            )),
            order: vec!["dry-run"],
            prompt_max_chars,
        });
    }
    let breaker = || {
        CircuitBreaker::new(BreakerSettings {
            threshold: config.circuit_breaker_threshold,
            open_for: config.circuit_breaker_timeout,
        })
    };
    let mut editors: Vec<Arc<dyn ImageEditor>> = Vec::new();
    for kind in &order {
        let editor: Arc<dyn ImageEditor> = match kind {
            ProviderKind::OpenAi => {
                let editor = openai()?;
                prompt_max_chars = prompt_max_chars.min(editor.prompt_char_limit());
                Arc::new(Breakered::new(Arc::new(editor), breaker()))
            }
            ProviderKind::LocalDiffusion => {
                let url = config.local_diffusion_url.clone().ok_or_else(|| {
                    ConfigurationError(
                        "RENDER_PROVIDERS lists local-diffusion, but LOCAL_DIFFUSION_URL is unset".into(),
                    )
                })?;
                let editor = LocalDiffusionEditor::new(LocalDiffusionSettings {
                    base_url: url,
                    connect_timeout: std::time::Duration::from_secs(10).min(config.local_diffusion_timeout),
                    timeout: config.local_diffusion_timeout,
                    overrides: config.local_diffusion_overrides.clone(),
                })
                .context("building the local diffusion client")?;
                Arc::new(Breakered::new(Arc::new(editor), breaker()))
            }
            ProviderKind::Builtin => Arc::new(BuiltinFill::default()),
        };
        editors.push(editor);
    }
    let chain = FallbackChain::new(editors);
    Ok(ProviderSetup {
        order: chain.names(),
        editor: Arc::new(chain),
        prompt_max_chars,
    })
}
