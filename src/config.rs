//! Typed, validated configuration.
//!
//! This is the only module that reads environment variables. Everything else receives a
//! [`Config`] (or a piece of it). Parsing is pure: [`Config::from_lookup`] takes any lookup
//! function, so tests build configurations without touching the process environment.
//! Every parse error names the variable. Secrets are wrapped in [`Secret`], whose `Debug`
//! and `Display` print a placeholder.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A configuration problem, naming the variable.
#[derive(Debug, thiserror::Error)]
#[error("configuration: `{var}` {problem}")]
pub struct ConfigError {
    pub var: &'static str,
    pub problem: String,
}

impl ConfigError {
    fn new(var: &'static str, problem: impl Into<String>) -> Self {
        Self {
            var,
            problem: problem.into(),
        }
    }
}

/// A string that must never be printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret value, for the one place that must send it somewhere.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Where Design rows live.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseConfig {
    /// An embedded SQLite file (the default: `design-render.db` in the working directory).
    Sqlite { path: PathBuf },
    /// A PostgreSQL server shared with the backend. The URL may contain a password.
    Postgres { url: Secret },
}

impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite { path } => f.debug_struct("Sqlite").field("path", path).finish(),
            Self::Postgres { .. } => f.write_str("Postgres { url: [redacted] }"),
        }
    }
}

/// Which hosts the asset downloader may reach even though they resolve to private, loopback or
/// link-local addresses. The default refuses them all.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PrivateHostPolicy {
    #[default]
    Deny,
    /// `ALLOW_PRIVATE_ASSET_HOSTS=true`: anything goes (development only).
    AllowAll,
    /// A comma-separated list of host names, IP addresses or CIDR blocks.
    Allow(Vec<AllowedHost>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedHost {
    Name(String),
    Network { addr: IpAddr, prefix: u8 },
}

impl PrivateHostPolicy {
    fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        match text.to_ascii_lowercase().as_str() {
            "" | "false" | "0" | "no" | "off" => return Ok(Self::Deny),
            "true" | "1" | "yes" | "on" | "*" => return Ok(Self::AllowAll),
            _ => {}
        }
        let mut hosts = Vec::new();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            hosts.push(AllowedHost::parse(entry)?);
        }
        Ok(Self::Allow(hosts))
    }

    /// Whether a host name (as written in the URL) is explicitly allowed.
    pub fn allows_name(&self, host: &str) -> bool {
        match self {
            Self::Deny => false,
            Self::AllowAll => true,
            Self::Allow(hosts) => hosts
                .iter()
                .any(|h| matches!(h, AllowedHost::Name(name) if name.eq_ignore_ascii_case(host))),
        }
    }

    /// Whether an address is explicitly allowed.
    pub fn allows_addr(&self, addr: IpAddr) -> bool {
        match self {
            Self::Deny => false,
            Self::AllowAll => true,
            Self::Allow(hosts) => hosts.iter().any(|h| match h {
                AllowedHost::Network { addr: network, prefix } => ip_in_network(addr, *network, *prefix),
                AllowedHost::Name(_) => false,
            }),
        }
    }
}

impl AllowedHost {
    fn parse(entry: &str) -> Result<Self, String> {
        let (addr_text, prefix_text) = match entry.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (entry, None),
        };
        if let Ok(addr) = addr_text.trim_matches(['[', ']']).parse::<IpAddr>() {
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let prefix = match prefix_text {
                None => max,
                Some(text) => text
                    .parse::<u8>()
                    .ok()
                    .filter(|p| *p <= max)
                    .ok_or_else(|| format!("has an invalid prefix length in `{entry}`"))?,
            };
            return Ok(Self::Network { addr, prefix });
        }
        if prefix_text.is_some() || entry.contains(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '.')) {
            return Err(format!(
                "entry `{entry}` is neither a host name, an IP address nor a CIDR block"
            ));
        }
        Ok(Self::Name(entry.to_ascii_lowercase()))
    }
}

fn ip_in_network(addr: IpAddr, network: IpAddr, prefix: u8) -> bool {
    match (addr, network) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(prefix))
            };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(prefix))
            };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// Limits and timeouts of the asset downloader and decoder.
#[derive(Debug, Clone, PartialEq)]
pub struct AssetLimits {
    /// Largest accepted body (`MAX_ASSET_BYTES`, default 32 MiB).
    pub max_bytes: u64,
    /// Largest accepted width or height (`MAX_IMAGE_DIMENSION`, default 8192).
    pub max_dimension: u32,
    /// Largest accepted pixel count (`MAX_IMAGE_PIXELS`, default 40 megapixels).
    pub max_pixels: u64,
    pub connect_timeout: Duration,
    /// Deadline for the whole download, headers and body (`ASSET_TIMEOUT_MS`).
    pub timeout: Duration,
    pub max_redirects: u8,
    pub private_hosts: PrivateHostPolicy,
}

impl Default for AssetLimits {
    fn default() -> Self {
        Self {
            max_bytes: 32 * 1024 * 1024,
            max_dimension: 8192,
            max_pixels: 40_000_000,
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(30),
            max_redirects: 3,
            private_hosts: PrivateHostPolicy::Deny,
        }
    }
}

/// Output settings of the imaging steps.
#[derive(Debug, Clone, PartialEq)]
pub struct ImagingConfig {
    /// Side of the square preview (`PREVIEW_SIZE`, default 512).
    pub preview_size: u32,
    /// Strength of the normal map's slopes (`NORMAL_MAP_STRENGTH`, default 2.0).
    pub normal_strength: f32,
    /// Feather radius of the composite seam in pixels of the base (`FEATHER_RADIUS`, default 4).
    pub feather_radius: u32,
}

impl Default for ImagingConfig {
    fn default() -> Self {
        Self {
            preview_size: 512,
            normal_strength: 2.0,
            feather_radius: 4,
        }
    }
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable, for terminals.
    Pretty,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Settings of the generative providers and their reliability controls (the spec's names).
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderConfig {
    pub openai_api_key: Option<Secret>,
    pub openai_image_edit_enabled: bool,
    pub local_diffusion_url: Option<url::Url>,
    pub max_tokens_per_job: u64,
    pub dry_run: bool,
    pub circuit_breaker_threshold: u32,
    pub circuit_breaker_timeout: Duration,
    /// `OPENAI_BASE_URL` (default `https://api.openai.com/v1`); the edits and moderation paths
    /// are appended to it.
    pub openai_base_url: url::Url,
    /// `OPENAI_IMAGE_MODEL` (default `gpt-image-1.5`).
    pub openai_image_model: String,
    /// `OPENAI_TIMEOUT_MS` (default 120000): deadline of one OpenAI request.
    pub openai_timeout: Duration,
    /// `OPENAI_MODERATION_ENABLED` (default false): check prompts with `/moderations` first.
    pub openai_moderation_enabled: bool,
    /// `PROMPT_BLOCKLIST`: path of an extra blocklist file (format in `safety.rs`).
    pub prompt_blocklist: Option<PathBuf>,
    /// `RENDER_PROVIDERS`: explicit provider order; `None` means the default order.
    pub render_providers: Option<Vec<ProviderKind>>,
    /// `LOCAL_DIFFUSION_TIMEOUT_MS` (default 300000): deadline of one img2img request.
    pub local_diffusion_timeout: Duration,
    /// `LOCAL_DIFFUSION_*` overrides of the inpainting parameters.
    pub local_diffusion_overrides: InpaintOverrides,
    /// `PRICE_TABLE_OVERRIDES` (JSON, format in `budget.rs`) laid over the reference prices.
    pub price_table: crate::budget::PriceTable,
}

/// A provider name as written in `RENDER_PROVIDERS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    OpenAi,
    LocalDiffusion,
    Builtin,
}

impl ProviderKind {
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "openai" => Some(Self::OpenAi),
            "local-diffusion" | "local_diffusion" | "stable-diffusion" => Some(Self::LocalDiffusion),
            "builtin" | "built-in" => Some(Self::Builtin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::OpenAi => "openai",
            Self::LocalDiffusion => "local-diffusion",
            Self::Builtin => "builtin",
        }
    }
}

/// Operator overrides of the Automatic1111 inpainting parameters; `None` keeps the adapter's
/// documented default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InpaintOverrides {
    /// `LOCAL_DIFFUSION_STEPS`
    pub steps: Option<u32>,
    /// `LOCAL_DIFFUSION_DENOISING_STRENGTH` (0..=1)
    pub denoising_strength: Option<f32>,
    /// `LOCAL_DIFFUSION_CFG_SCALE`
    pub cfg_scale: Option<f32>,
    /// `LOCAL_DIFFUSION_SAMPLER`
    pub sampler_name: Option<String>,
    /// `LOCAL_DIFFUSION_INPAINTING_FILL` (0 fill, 1 original, 2 latent noise, 3 latent nothing)
    pub inpainting_fill: Option<u8>,
    /// `LOCAL_DIFFUSION_MASK_BLUR`
    pub mask_blur: Option<u32>,
    /// `LOCAL_DIFFUSION_INPAINT_FULL_RES`
    pub inpaint_full_res: Option<bool>,
    /// `LOCAL_DIFFUSION_INPAINT_PADDING`
    pub inpaint_full_res_padding: Option<u32>,
    /// `LOCAL_DIFFUSION_NEGATIVE_PROMPT`
    pub negative_prompt: Option<String>,
}

impl Default for ProviderConfig {
    fn default() -> Self {
        Self {
            openai_api_key: None,
            openai_image_edit_enabled: true,
            local_diffusion_url: None,
            max_tokens_per_job: 10_000,
            dry_run: false,
            circuit_breaker_threshold: 5,
            circuit_breaker_timeout: Duration::from_millis(60_000),
            openai_base_url: url::Url::parse(DEFAULT_OPENAI_BASE_URL).expect("constant URL parses"),
            openai_image_model: "gpt-image-1.5".into(),
            openai_timeout: Duration::from_millis(120_000),
            openai_moderation_enabled: false,
            prompt_blocklist: None,
            render_providers: None,
            local_diffusion_timeout: Duration::from_millis(300_000),
            local_diffusion_overrides: InpaintOverrides::default(),
            price_table: crate::budget::PriceTable::default(),
        }
    }
}

const DEFAULT_OPENAI_BASE_URL: &str = "https://api.openai.com/v1";

/// Redis connection settings (used by the queue worker).
#[derive(Debug, Clone, PartialEq)]
pub struct RedisConfig {
    pub host: String,
    pub port: u16,
    pub password: Option<Secret>,
    /// `REDIS_URL` wins over host/port/password when set.
    pub url: Option<Secret>,
    /// Seed nodes of a Redis Cluster (`REDIS_CLUSTER_NODES=redis://10.0.0.1:7000,…`); when set,
    /// they win over `REDIS_URL` and host/port, and `REDIS_PASSWORD` authenticates to every node.
    pub cluster_nodes: Vec<String>,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            host: "localhost".into(),
            port: 6379,
            password: None,
            url: None,
            cluster_nodes: Vec::new(),
        }
    }
}

/// Settings of the queue worker and the `enqueue` producer (issue 4).
#[derive(Debug, Clone, PartialEq)]
pub struct QueueConfig {
    /// BullMQ queue name (`QUEUE_NAME`, default `design-render`).
    pub name: String,
    /// BullMQ key prefix (`BULLMQ_PREFIX`, default `bull`; `{bull}` for Redis Cluster).
    pub prefix: String,
    /// Jobs processed at once by one worker process (`WORKER_CONCURRENCY`, default 4).
    pub worker_concurrency: usize,
    /// Per-tenant concurrency limits that replace `DEFAULT_TENANT_CONCURRENCY`
    /// (`TENANT_CONCURRENCY_OVERRIDES=tenantA=5,tenantB=1`).
    pub tenant_overrides: BTreeMap<String, u32>,
    /// A file of `tenant=limit` lines merged under the env overrides
    /// (`TENANT_CONCURRENCY_FILE`); read when the worker is built.
    pub tenant_overrides_file: Option<PathBuf>,
    /// Lifetime of a tenant slot lease, renewed while the job runs (`TENANT_LEASE_SECONDS`, default 30).
    pub tenant_lease: Duration,
    /// How long in-flight jobs may run after SIGTERM/SIGINT (`SHUTDOWN_GRACE_SECONDS`, default 30).
    pub shutdown_grace: Duration,
    /// BullMQ job lock duration (`QUEUE_LOCK_DURATION_MS`, default 30000); renewed at half of it.
    pub lock_duration: Duration,
    /// How often stalled jobs are looked for (`QUEUE_STALLED_INTERVAL_MS`, default 30000).
    pub stalled_interval: Duration,
    /// Signed webhook for render events (`WEBHOOK_ENABLED`, `WEBHOOK_URL`, `WEBHOOK_SECRET`).
    pub webhook: Option<WebhookConfig>,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            name: "design-render".into(),
            prefix: "bull".into(),
            worker_concurrency: 4,
            tenant_overrides: BTreeMap::new(),
            tenant_overrides_file: None,
            tenant_lease: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(30),
            lock_duration: Duration::from_secs(30),
            stalled_interval: Duration::from_secs(30),
            webhook: None,
        }
    }
}

/// Where render events are POSTed, and the HMAC-SHA256 key that signs them.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookConfig {
    pub url: url::Url,
    pub secret: Secret,
}

/// Whether Redis Cluster would hash `key` by a tag: the text between the first `{` and the next
/// `}`, when not empty.
fn has_hash_tag(key: &str) -> bool {
    key.split_once('{')
        .and_then(|(_, rest)| rest.split_once('}'))
        .is_some_and(|(tag, _)| !tag.is_empty())
}

/// Parses `REDIS_CLUSTER_NODES`: comma-separated `host:port` or `redis[s]://host:port` seed
/// nodes, returned as URLs. Credentials belong in `REDIS_PASSWORD`, never in the node list, so
/// the list can be logged.
pub fn parse_cluster_nodes(text: &str) -> Result<Vec<String>, String> {
    let mut nodes = Vec::new();
    for entry in text.split(',').map(str::trim).filter(|entry| !entry.is_empty()) {
        // Messages show the node without anything before an `@`, which could be a password.
        let shown = match entry.rsplit_once('@') {
            Some((_, host)) => format!("***@{host}"),
            None => entry.to_owned(),
        };
        let with_scheme = if entry.contains("://") {
            entry.to_owned()
        } else {
            format!("redis://{entry}")
        };
        let url = url::Url::parse(&with_scheme).map_err(|error| format!("node `{shown}` is not host:port: {error}"))?;
        if !matches!(url.scheme(), "redis" | "rediss") {
            return Err(format!("node `{shown}` must use redis:// or rediss://"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!(
                "node `{shown}` carries credentials; set REDIS_PASSWORD instead"
            ));
        }
        if url.host_str().is_none_or(str::is_empty) || url.port().is_none() {
            return Err(format!("node `{shown}` needs a host and a port"));
        }
        nodes.push(format!(
            "{}://{}:{}",
            url.scheme(),
            url.host_str().unwrap_or_default(),
            url.port().unwrap_or_default()
        ));
    }
    if nodes.is_empty() {
        return Err("lists no node".into());
    }
    Ok(nodes)
}

/// Parses `tenantA=5,tenantB=1` (commas or newlines; `#` starts a comment line).
pub fn parse_tenant_limits(text: &str) -> Result<BTreeMap<String, u32>, String> {
    let mut limits = BTreeMap::new();
    for entry in text.split([',', '\n']).map(str::trim) {
        if entry.is_empty() || entry.starts_with('#') {
            continue;
        }
        let (tenant, limit) = entry
            .split_once('=')
            .ok_or_else(|| format!("entry `{entry}` is not `tenant=limit`"))?;
        let limit: u32 = limit
            .trim()
            .parse()
            .ok()
            .filter(|limit| *limit > 0)
            .ok_or_else(|| format!("entry `{entry}` needs a positive whole limit"))?;
        limits.insert(tenant.trim().to_owned(), limit);
    }
    Ok(limits)
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub database: DatabaseConfig,
    pub storage_dir: PathBuf,
    pub public_base_url: Option<url::Url>,
    pub assets: AssetLimits,
    pub imaging: ImagingConfig,
    pub providers: ProviderConfig,
    pub redis: RedisConfig,
    pub default_tenant_concurrency: u32,
    pub webhook_enabled: bool,
    /// Queue worker settings.
    pub queue: QueueConfig,
    /// Run the additive PostgreSQL migrations at start-up (`RUN_MIGRATIONS`, default true).
    pub run_migrations: bool,
    pub log_format: LogFormat,
    /// Variables that were set but are not used by this build, reported at start-up.
    pub unused: BTreeMap<&'static str, &'static str>,
}

impl Config {
    /// Reads the process environment (after loading `.env` if present).
    pub fn from_env() -> Result<Self, ConfigError> {
        // A missing .env is normal; a malformed one is reported by the variable it breaks.
        let _ = dotenvy::dotenv();
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Builds a configuration from any variable lookup.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let vars = Vars { lookup: &lookup };
        let database = match vars.get("DATABASE_URL") {
            None => DatabaseConfig::Sqlite {
                path: PathBuf::from("design-render.db"),
            },
            Some(url) => parse_database_url(&url)?,
        };
        let public_base_url = vars
            .get("PUBLIC_BASE_URL")
            .map(|text| {
                let mut url = url::Url::parse(&text)
                    .map_err(|e| ConfigError::new("PUBLIC_BASE_URL", format!("is not a URL ({e})")))?;
                if !matches!(url.scheme(), "http" | "https") {
                    return Err(ConfigError::new("PUBLIC_BASE_URL", "must be an http(s) URL"));
                }
                // Keys are appended to the base, so it must end with a slash to keep its path.
                if !url.path().ends_with('/') {
                    url.set_path(&format!("{}/", url.path()));
                }
                Ok(url)
            })
            .transpose()?;
        let defaults = AssetLimits::default();
        let assets = AssetLimits {
            max_bytes: vars.parse_or("MAX_ASSET_BYTES", defaults.max_bytes, |v| *v >= 1024)?,
            max_dimension: vars.parse_or("MAX_IMAGE_DIMENSION", defaults.max_dimension, |v| {
                (64..=65_535).contains(v)
            })?,
            max_pixels: vars.parse_or("MAX_IMAGE_PIXELS", defaults.max_pixels, |v| *v >= 4096)?,
            connect_timeout: vars.millis_or("ASSET_CONNECT_TIMEOUT_MS", defaults.connect_timeout)?,
            timeout: vars.millis_or("ASSET_TIMEOUT_MS", defaults.timeout)?,
            max_redirects: vars.parse_or("ASSET_MAX_REDIRECTS", defaults.max_redirects, |v| *v <= 10)?,
            private_hosts: match vars.get("ALLOW_PRIVATE_ASSET_HOSTS") {
                None => PrivateHostPolicy::Deny,
                Some(text) => {
                    PrivateHostPolicy::parse(&text).map_err(|p| ConfigError::new("ALLOW_PRIVATE_ASSET_HOSTS", p))?
                }
            },
        };
        let imaging_defaults = ImagingConfig::default();
        let imaging = ImagingConfig {
            preview_size: vars.parse_or("PREVIEW_SIZE", imaging_defaults.preview_size, |v| {
                (16..=4096).contains(v)
            })?,
            normal_strength: vars.parse_or("NORMAL_MAP_STRENGTH", imaging_defaults.normal_strength, |v| {
                v.is_finite() && *v > 0.0 && *v <= 100.0
            })?,
            feather_radius: vars.parse_or("FEATHER_RADIUS", imaging_defaults.feather_radius, |v| *v <= 256)?,
        };
        let provider_defaults = ProviderConfig::default();
        let providers = ProviderConfig {
            openai_api_key: vars.get("OPENAI_API_KEY").map(Secret::new),
            openai_image_edit_enabled: vars
                .bool_or("OPENAI_IMAGE_EDIT_ENABLED", provider_defaults.openai_image_edit_enabled)?,
            local_diffusion_url: vars
                .get("LOCAL_DIFFUSION_URL")
                .map(|text| {
                    url::Url::parse(&text)
                        .map_err(|e| ConfigError::new("LOCAL_DIFFUSION_URL", format!("is not a URL ({e})")))
                })
                .transpose()?,
            max_tokens_per_job: vars
                .parse_or("MAX_TOKENS_PER_JOB", provider_defaults.max_tokens_per_job, |v| *v > 0)?,
            dry_run: vars.bool_or("DRY_RUN_MODE", false)?,
            circuit_breaker_threshold: vars.parse_or(
                "CIRCUIT_BREAKER_THRESHOLD",
                provider_defaults.circuit_breaker_threshold,
                |v| *v > 0,
            )?,
            circuit_breaker_timeout: vars
                .millis_or("CIRCUIT_BREAKER_TIMEOUT", provider_defaults.circuit_breaker_timeout)?,
            openai_base_url: match vars.get("OPENAI_BASE_URL") {
                None => provider_defaults.openai_base_url.clone(),
                Some(text) => parse_http_url("OPENAI_BASE_URL", &text)?,
            },
            openai_image_model: vars
                .get("OPENAI_IMAGE_MODEL")
                .map(|model| model.trim().to_owned())
                .unwrap_or(provider_defaults.openai_image_model.clone()),
            openai_timeout: vars.millis_or("OPENAI_TIMEOUT_MS", provider_defaults.openai_timeout)?,
            openai_moderation_enabled: vars.bool_or("OPENAI_MODERATION_ENABLED", false)?,
            prompt_blocklist: vars.get("PROMPT_BLOCKLIST").map(PathBuf::from),
            render_providers: vars
                .get("RENDER_PROVIDERS")
                .map(|text| parse_provider_list(&text))
                .transpose()?,
            local_diffusion_timeout: vars
                .millis_or("LOCAL_DIFFUSION_TIMEOUT_MS", provider_defaults.local_diffusion_timeout)?,
            local_diffusion_overrides: InpaintOverrides {
                steps: vars.parse_opt("LOCAL_DIFFUSION_STEPS", |v: &u32| (1..=150).contains(v))?,
                denoising_strength: vars
                    .parse_opt("LOCAL_DIFFUSION_DENOISING_STRENGTH", |v: &f32| (0.0..=1.0).contains(v))?,
                cfg_scale: vars.parse_opt("LOCAL_DIFFUSION_CFG_SCALE", |v: &f32| v.is_finite() && *v > 0.0)?,
                sampler_name: vars.get("LOCAL_DIFFUSION_SAMPLER").map(|s| s.trim().to_owned()),
                inpainting_fill: vars.parse_opt("LOCAL_DIFFUSION_INPAINTING_FILL", |v: &u8| *v <= 3)?,
                mask_blur: vars.parse_opt("LOCAL_DIFFUSION_MASK_BLUR", |v: &u32| *v <= 64)?,
                inpaint_full_res: match vars.get("LOCAL_DIFFUSION_INPAINT_FULL_RES") {
                    None => None,
                    Some(_) => Some(vars.bool_or("LOCAL_DIFFUSION_INPAINT_FULL_RES", false)?),
                },
                inpaint_full_res_padding: vars.parse_opt("LOCAL_DIFFUSION_INPAINT_PADDING", |v: &u32| *v <= 1024)?,
                negative_prompt: vars.get("LOCAL_DIFFUSION_NEGATIVE_PROMPT"),
            },
            price_table: match vars.get("PRICE_TABLE_OVERRIDES") {
                None => crate::budget::PriceTable::default(),
                Some(json) => crate::budget::PriceTable::with_overrides(&json)
                    .map_err(|e| ConfigError::new("PRICE_TABLE_OVERRIDES", e.to_string()))?,
            },
        };
        let redis_defaults = RedisConfig::default();
        let redis = RedisConfig {
            host: vars.get("REDIS_HOST").unwrap_or(redis_defaults.host),
            port: vars.parse_or("REDIS_PORT", redis_defaults.port, |v| *v > 0)?,
            password: vars.get("REDIS_PASSWORD").map(Secret::new),
            url: vars
                .get("REDIS_URL")
                .map(|text| {
                    if text.starts_with("redis://") || text.starts_with("rediss://") {
                        Ok(Secret::new(text))
                    } else {
                        Err(ConfigError::new("REDIS_URL", "must start with redis:// or rediss://"))
                    }
                })
                .transpose()?,
            cluster_nodes: vars
                .get("REDIS_CLUSTER_NODES")
                .map(|text| parse_cluster_nodes(&text))
                .transpose()
                .map_err(|rule| ConfigError::new("REDIS_CLUSTER_NODES", rule))?
                .unwrap_or_default(),
        };
        let queue = queue_config(&vars)?;
        if !redis.cluster_nodes.is_empty() && !has_hash_tag(&queue.prefix) && !has_hash_tag(&queue.name) {
            return Err(ConfigError::new(
                "BULLMQ_PREFIX",
                "must carry a hash tag such as `{bull}` when REDIS_CLUSTER_NODES is set, so all keys of \
                 a queue share one cluster slot",
            ));
        }
        let mut unused = BTreeMap::new();
        for (var, reason) in [
            (
                "CLOUDINARY_CLOUD_NAME",
                "Cloudinary uploads are not part of this build; assets go to STORAGE_DIR",
            ),
            (
                "CLOUDINARY_URL",
                "Cloudinary uploads are not part of this build; assets go to STORAGE_DIR",
            ),
        ] {
            if vars.get(var).is_some() {
                unused.insert(var, reason);
            }
        }
        Ok(Self {
            database,
            storage_dir: vars
                .get("STORAGE_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("storage")),
            public_base_url,
            assets,
            imaging,
            providers,
            redis,
            default_tenant_concurrency: vars.parse_or("DEFAULT_TENANT_CONCURRENCY", 2, |v| *v > 0)?,
            webhook_enabled: vars.bool_or("WEBHOOK_ENABLED", false)?,
            queue,
            run_migrations: vars.bool_or("RUN_MIGRATIONS", true)?,
            log_format: match vars.get("LOG_FORMAT").as_deref() {
                None | Some("pretty") | Some("text") => LogFormat::Pretty,
                Some("json") => LogFormat::Json,
                Some(_) => return Err(ConfigError::new("LOG_FORMAT", "must be `pretty` or `json`")),
            },
            unused,
        })
    }

    /// A configuration for tests: SQLite and storage under `dir`, default limits, no secrets.
    pub fn for_tests(dir: &std::path::Path) -> Self {
        Self {
            database: DatabaseConfig::Sqlite {
                path: dir.join("design-render.db"),
            },
            storage_dir: dir.join("storage"),
            public_base_url: None,
            assets: AssetLimits::default(),
            imaging: ImagingConfig::default(),
            providers: ProviderConfig::default(),
            redis: RedisConfig::default(),
            default_tenant_concurrency: 2,
            webhook_enabled: false,
            queue: QueueConfig::default(),
            run_migrations: true,
            log_format: LogFormat::Pretty,
            unused: BTreeMap::new(),
        }
    }
}

fn queue_config(vars: &Vars<'_>) -> Result<QueueConfig, ConfigError> {
    let defaults = QueueConfig::default();
    let key_part = |name: &'static str, default: String| -> Result<String, ConfigError> {
        let value = vars.get(name).map(|v| v.trim().to_owned()).unwrap_or(default);
        if value.contains(':') || value.len() > 200 {
            return Err(ConfigError::new(
                name,
                "must not contain `:` and be at most 200 characters",
            ));
        }
        Ok(value)
    };
    let seconds = |name: &'static str, default: Duration| -> Result<Duration, ConfigError> {
        vars.parse_or(name, default.as_secs(), |v| *v > 0 && *v <= 24 * 3600)
            .map(Duration::from_secs)
    };
    let webhook = if vars.bool_or("WEBHOOK_ENABLED", false)? {
        let url = vars
            .get("WEBHOOK_URL")
            .ok_or_else(|| ConfigError::new("WEBHOOK_URL", "is required when WEBHOOK_ENABLED=true"))?;
        let url = url::Url::parse(url.trim())
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https"))
            .ok_or_else(|| ConfigError::new("WEBHOOK_URL", "must be an http(s) URL"))?;
        let secret = vars
            .get("WEBHOOK_SECRET")
            .ok_or_else(|| ConfigError::new("WEBHOOK_SECRET", "is required when WEBHOOK_ENABLED=true"))?;
        Some(WebhookConfig {
            url,
            secret: Secret::new(secret),
        })
    } else {
        None
    };
    Ok(QueueConfig {
        name: key_part("QUEUE_NAME", defaults.name)?,
        prefix: key_part("BULLMQ_PREFIX", defaults.prefix)?,
        worker_concurrency: vars.parse_or("WORKER_CONCURRENCY", defaults.worker_concurrency, |v| {
            (1..=1024).contains(v)
        })?,
        tenant_overrides: match vars.get("TENANT_CONCURRENCY_OVERRIDES") {
            None => BTreeMap::new(),
            Some(text) => {
                parse_tenant_limits(&text).map_err(|p| ConfigError::new("TENANT_CONCURRENCY_OVERRIDES", p))?
            }
        },
        tenant_overrides_file: vars.get("TENANT_CONCURRENCY_FILE").map(PathBuf::from),
        tenant_lease: seconds("TENANT_LEASE_SECONDS", defaults.tenant_lease)?,
        shutdown_grace: seconds("SHUTDOWN_GRACE_SECONDS", defaults.shutdown_grace)?,
        lock_duration: vars.millis_or("QUEUE_LOCK_DURATION_MS", defaults.lock_duration)?,
        stalled_interval: vars.millis_or("QUEUE_STALLED_INTERVAL_MS", defaults.stalled_interval)?,
        webhook,
    })
}

fn parse_http_url(var: &'static str, text: &str) -> Result<url::Url, ConfigError> {
    let url = url::Url::parse(text.trim()).map_err(|e| ConfigError::new(var, format!("is not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ConfigError::new(var, "must be an http(s) URL"));
    }
    Ok(url)
}

/// `RENDER_PROVIDERS`: a comma-separated, non-empty list of known names without repeats.
fn parse_provider_list(text: &str) -> Result<Vec<ProviderKind>, ConfigError> {
    let mut kinds = Vec::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let kind = ProviderKind::parse(entry).ok_or_else(|| {
            ConfigError::new(
                "RENDER_PROVIDERS",
                format!("has unknown provider `{entry}` (known: openai, local-diffusion, builtin)"),
            )
        })?;
        if kinds.contains(&kind) {
            return Err(ConfigError::new("RENDER_PROVIDERS", format!("lists `{entry}` twice")));
        }
        kinds.push(kind);
    }
    if kinds.is_empty() {
        return Err(ConfigError::new("RENDER_PROVIDERS", "names no provider"));
    }
    Ok(kinds)
}

fn parse_database_url(text: &str) -> Result<DatabaseConfig, ConfigError> {
    if let Some(rest) = text.strip_prefix("sqlite:") {
        let path = rest.trim_start_matches("//");
        let path = path.split('?').next().unwrap_or_default();
        if path.is_empty() {
            return Err(ConfigError::new(
                "DATABASE_URL",
                "sqlite: URL must name a file, e.g. sqlite://design-render.db",
            ));
        }
        return Ok(DatabaseConfig::Sqlite { path: path.into() });
    }
    if text.starts_with("postgres://") || text.starts_with("postgresql://") {
        return Ok(DatabaseConfig::Postgres { url: Secret::new(text) });
    }
    Err(ConfigError::new(
        "DATABASE_URL",
        "must start with postgres://, postgresql:// or sqlite:",
    ))
}

struct Vars<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

impl Vars<'_> {
    /// A set, non-blank variable.
    fn get(&self, name: &str) -> Option<String> {
        (self.lookup)(name).filter(|value| !value.trim().is_empty())
    }

    fn parse_or<T>(&self, name: &'static str, default: T, valid: impl Fn(&T) -> bool) -> Result<T, ConfigError>
    where
        T: std::str::FromStr + fmt::Display,
    {
        Ok(self.parse_opt(name, valid)?.unwrap_or(default))
    }

    /// A set variable parsed as a number that `valid` accepts; the error names the variable.
    fn parse_opt<T>(&self, name: &'static str, valid: impl Fn(&T) -> bool) -> Result<Option<T>, ConfigError>
    where
        T: std::str::FromStr + fmt::Display,
    {
        let Some(text) = self.get(name) else {
            return Ok(None);
        };
        let value: T = text
            .trim()
            .parse()
            .map_err(|_| ConfigError::new(name, format!("must be a number (got `{}`)", text.trim())))?;
        if !valid(&value) {
            return Err(ConfigError::new(name, format!("value {value} is out of range")));
        }
        Ok(Some(value))
    }

    fn millis_or(&self, name: &'static str, default: Duration) -> Result<Duration, ConfigError> {
        let default_ms = u64::try_from(default.as_millis()).unwrap_or(u64::MAX);
        self.parse_or(name, default_ms, |v| *v > 0 && *v <= 24 * 3600 * 1000)
            .map(Duration::from_millis)
    }

    fn bool_or(&self, name: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.get(name).map(|v| v.trim().to_ascii_lowercase()).as_deref() {
            None => Ok(default),
            Some("true" | "1" | "yes" | "on") => Ok(true),
            Some("false" | "0" | "no" | "off") => Ok(false),
            Some(_) => Err(ConfigError::new(name, "must be true or false")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: BTreeMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_need_no_variables() {
        let config = config(&[]).unwrap();
        assert_eq!(
            config.database,
            DatabaseConfig::Sqlite {
                path: "design-render.db".into()
            }
        );
        assert_eq!(config.storage_dir, PathBuf::from("storage"));
        assert_eq!(config.providers.max_tokens_per_job, 10_000);
        assert_eq!(config.providers.circuit_breaker_threshold, 5);
        assert_eq!(config.providers.circuit_breaker_timeout, Duration::from_secs(60));
        assert_eq!(config.default_tenant_concurrency, 2);
        assert_eq!(config.assets.private_hosts, PrivateHostPolicy::Deny);
    }

    #[test]
    fn cluster_nodes_parse_and_reject_credentials() {
        let redis = config(&[
            ("REDIS_CLUSTER_NODES", "10.0.0.1:7000, rediss://cache.example:7001,"),
            ("BULLMQ_PREFIX", "{bull}"),
        ])
        .unwrap()
        .redis;
        assert_eq!(
            redis.cluster_nodes,
            ["redis://10.0.0.1:7000", "rediss://cache.example:7001"]
        );
        assert!(config(&[]).unwrap().redis.cluster_nodes.is_empty());
        for (value, needle) in [
            ("redis://:hunter2@10.0.0.1:7000", "REDIS_PASSWORD"),
            ("redis://:hunter2@[not-a-host", "not host:port"),
            ("10.0.0.1", "host and a port"),
            ("http://10.0.0.1:7000", "redis://"),
            (" , ", "lists no node"),
        ] {
            let error = config(&[("REDIS_CLUSTER_NODES", value)]).unwrap_err().to_string();
            assert!(
                error.contains("REDIS_CLUSTER_NODES") && error.contains(needle),
                "{value}: {error}"
            );
            assert!(!error.contains("hunter2"), "{error}");
        }
    }

    #[test]
    fn cluster_mode_needs_a_hash_tagged_prefix_or_queue() {
        let cluster = ("REDIS_CLUSTER_NODES", "10.0.0.1:7000");
        let error = config(&[cluster]).unwrap_err().to_string();
        assert!(error.contains("BULLMQ_PREFIX") && error.contains("hash tag"), "{error}");
        assert!(
            config(&[cluster, ("BULLMQ_PREFIX", "{}")]).is_err(),
            "an empty tag hashes the whole key"
        );
        assert!(config(&[cluster, ("BULLMQ_PREFIX", "{bull}")]).is_ok());
        assert!(config(&[cluster, ("QUEUE_NAME", "{design-render}")]).is_ok());
        assert!(
            config(&[("BULLMQ_PREFIX", "bull")]).is_ok(),
            "no tag needed without a cluster"
        );
    }

    #[test]
    fn provider_variables_parse_with_defaults_and_name_errors() {
        let defaults = config(&[]).unwrap().providers;
        assert_eq!(defaults.openai_base_url.as_str(), "https://api.openai.com/v1");
        assert_eq!(defaults.openai_image_model, "gpt-image-1.5");
        assert_eq!(defaults.openai_timeout, Duration::from_secs(120));
        assert!(!defaults.openai_moderation_enabled);
        assert_eq!(defaults.render_providers, None);
        assert_eq!(defaults.local_diffusion_overrides, InpaintOverrides::default());
        let set = config(&[
            ("OPENAI_BASE_URL", "http://127.0.0.1:9/v1"),
            ("OPENAI_IMAGE_MODEL", " gpt-image-1 "),
            ("OPENAI_TIMEOUT_MS", "2500"),
            ("OPENAI_MODERATION_ENABLED", "true"),
            ("PROMPT_BLOCKLIST", "/etc/blocklist.txt"),
            ("RENDER_PROVIDERS", "local-diffusion, openai"),
            ("LOCAL_DIFFUSION_TIMEOUT_MS", "900"),
            ("LOCAL_DIFFUSION_STEPS", "12"),
            ("LOCAL_DIFFUSION_DENOISING_STRENGTH", "0.5"),
            ("LOCAL_DIFFUSION_INPAINT_FULL_RES", "yes"),
            (
                "PRICE_TABLE_OVERRIDES",
                r#"{"gpt-image-1.5": {"text_input_usd_per_1m": 5}}"#,
            ),
        ])
        .unwrap()
        .providers;
        assert_eq!(set.openai_base_url.as_str(), "http://127.0.0.1:9/v1");
        assert_eq!(set.openai_image_model, "gpt-image-1");
        assert_eq!(set.openai_timeout, Duration::from_millis(2500));
        assert!(set.openai_moderation_enabled);
        assert_eq!(set.prompt_blocklist, Some(PathBuf::from("/etc/blocklist.txt")));
        assert_eq!(
            set.render_providers,
            Some(vec![ProviderKind::LocalDiffusion, ProviderKind::OpenAi])
        );
        assert_eq!(set.local_diffusion_timeout, Duration::from_millis(900));
        assert_eq!(set.local_diffusion_overrides.steps, Some(12));
        assert_eq!(set.local_diffusion_overrides.denoising_strength, Some(0.5));
        assert_eq!(set.local_diffusion_overrides.inpaint_full_res, Some(true));
        assert_ne!(set.price_table, crate::budget::PriceTable::default());
        for (var, value) in [
            ("OPENAI_BASE_URL", "ftp://x"),
            ("RENDER_PROVIDERS", "openai,dalle"),
            ("RENDER_PROVIDERS", "openai,openai"),
            ("LOCAL_DIFFUSION_DENOISING_STRENGTH", "1.5"),
            ("LOCAL_DIFFUSION_INPAINTING_FILL", "7"),
            ("PRICE_TABLE_OVERRIDES", "{not json"),
            ("OPENAI_MODERATION_ENABLED", "sometimes"),
        ] {
            assert_eq!(config(&[(var, value)]).unwrap_err().var, var, "{var}={value}");
        }
        // The key never shows in Debug output of the configuration.
        let with_key = config(&[("OPENAI_API_KEY", "sk-live-topsecret")]).unwrap();
        assert!(!format!("{with_key:?}").contains("topsecret"));
    }

    #[test]
    fn errors_name_the_variable() {
        let error = config(&[("MAX_TOKENS_PER_JOB", "lots")]).unwrap_err();
        assert_eq!(error.var, "MAX_TOKENS_PER_JOB");
        assert!(error.to_string().contains("MAX_TOKENS_PER_JOB"));
        assert_eq!(config(&[("DRY_RUN_MODE", "maybe")]).unwrap_err().var, "DRY_RUN_MODE");
        assert_eq!(
            config(&[("DATABASE_URL", "mysql://x")]).unwrap_err().var,
            "DATABASE_URL"
        );
        assert_eq!(
            config(&[("CIRCUIT_BREAKER_THRESHOLD", "0")]).unwrap_err().var,
            "CIRCUIT_BREAKER_THRESHOLD"
        );
        assert_eq!(
            config(&[("ALLOW_PRIVATE_ASSET_HOSTS", "10.0.0.0/99")]).unwrap_err().var,
            "ALLOW_PRIVATE_ASSET_HOSTS"
        );
    }

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        let config = config(&[
            ("OPENAI_API_KEY", "sk-very-secret"),
            ("DATABASE_URL", "postgres://user:hunter2@db/app"),
            ("REDIS_PASSWORD", "redis-secret"),
        ])
        .unwrap();
        let printed = format!("{config:?}");
        for secret in ["sk-very-secret", "hunter2", "redis-secret"] {
            assert!(!printed.contains(secret), "{secret} leaked into {printed}");
        }
        assert_eq!(
            config.providers.openai_api_key.as_ref().map(Secret::expose),
            Some("sk-very-secret")
        );
    }

    #[test]
    fn database_url_selects_the_store() {
        assert!(matches!(
            config(&[("DATABASE_URL", "postgresql://localhost/test")])
                .unwrap()
                .database,
            DatabaseConfig::Postgres { .. }
        ));
        assert_eq!(
            config(&[("DATABASE_URL", "sqlite://data/renders.db")])
                .unwrap()
                .database,
            DatabaseConfig::Sqlite {
                path: "data/renders.db".into()
            }
        );
    }

    #[test]
    fn private_host_policy_parses_names_addresses_and_networks() {
        let policy = PrivateHostPolicy::parse("assets.internal, 127.0.0.1, 10.0.0.0/8, [::1]").unwrap();
        assert!(policy.allows_name("ASSETS.internal"));
        assert!(!policy.allows_name("other.internal"));
        assert!(policy.allows_addr("127.0.0.1".parse().unwrap()));
        assert!(!policy.allows_addr("127.0.0.2".parse().unwrap()));
        assert!(policy.allows_addr("10.200.3.4".parse().unwrap()));
        assert!(!policy.allows_addr("11.0.0.1".parse().unwrap()));
        assert!(policy.allows_addr("::1".parse().unwrap()));
        assert_eq!(PrivateHostPolicy::parse("true").unwrap(), PrivateHostPolicy::AllowAll);
        assert_eq!(PrivateHostPolicy::parse("false").unwrap(), PrivateHostPolicy::Deny);
    }

    #[test]
    fn queue_settings_have_defaults_and_overrides() {
        let defaults = config(&[]).unwrap().queue;
        assert_eq!(
            (defaults.name.as_str(), defaults.prefix.as_str()),
            ("design-render", "bull")
        );
        assert!(defaults.webhook.is_none());
        let queue = config(&[
            ("QUEUE_NAME", "renders"),
            ("BULLMQ_PREFIX", "{bull}"),
            ("WORKER_CONCURRENCY", "8"),
            ("TENANT_CONCURRENCY_OVERRIDES", "tenantA=5, tenantB=1"),
            ("TENANT_LEASE_SECONDS", "10"),
        ])
        .unwrap()
        .queue;
        assert_eq!(queue.prefix, "{bull}");
        assert_eq!(queue.worker_concurrency, 8);
        assert_eq!(queue.tenant_overrides.get("tenantA"), Some(&5));
        assert_eq!(queue.tenant_overrides.get("tenantB"), Some(&1));
        assert_eq!(queue.tenant_lease, Duration::from_secs(10));
        for (var, value) in [
            ("TENANT_CONCURRENCY_OVERRIDES", "tenantA"),
            ("TENANT_CONCURRENCY_OVERRIDES", "tenantA=0"),
            ("BULLMQ_PREFIX", "a:b"),
            ("WORKER_CONCURRENCY", "0"),
            ("WEBHOOK_ENABLED", "true"),
        ] {
            let error = config(&[(var, value)]).unwrap_err();
            assert!(
                error.var == var || (var == "WEBHOOK_ENABLED" && error.var == "WEBHOOK_URL"),
                "{error}"
            );
        }
        assert!(!config(&[("RUN_MIGRATIONS", "false")]).unwrap().run_migrations);
    }

    #[test]
    fn public_base_url_keeps_its_path() {
        let config = config(&[("PUBLIC_BASE_URL", "https://cdn.example.com/renders")]).unwrap();
        assert_eq!(
            config.public_base_url.unwrap().as_str(),
            "https://cdn.example.com/renders/"
        );
    }
}
