//! The providers' section: API keys, endpoints, timeouts, the provider order, the circuit
//! breaker, the inpainting overrides and the price table.
//!
//! This file owns [`ProviderConfig`], [`ProviderKind`] and [`InpaintOverrides`] and their
//! parsing. Which adapters are built from them is decided in `app.rs`.

use std::path::PathBuf;
use std::time::Duration;

use super::{ConfigError, Secret, Vars};

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
    /// `PROMPT_BLOCKLIST`: path of an extra blocklist file (format in `safety/mod.rs`).
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

impl ProviderConfig {
    pub(super) fn from_vars(vars: &Vars<'_>) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        Ok(Self {
            openai_api_key: vars.get("OPENAI_API_KEY").map(Secret::new),
            openai_image_edit_enabled: vars.bool_or("OPENAI_IMAGE_EDIT_ENABLED", defaults.openai_image_edit_enabled)?,
            local_diffusion_url: vars
                .get("LOCAL_DIFFUSION_URL")
                .map(|text| {
                    url::Url::parse(&text)
                        .map_err(|e| ConfigError::new("LOCAL_DIFFUSION_URL", format!("is not a URL ({e})")))
                })
                .transpose()?,
            max_tokens_per_job: vars.parse_or("MAX_TOKENS_PER_JOB", defaults.max_tokens_per_job, |v| *v > 0)?,
            dry_run: vars.bool_or("DRY_RUN_MODE", false)?,
            circuit_breaker_threshold: vars.parse_or(
                "CIRCUIT_BREAKER_THRESHOLD",
                defaults.circuit_breaker_threshold,
                |v| *v > 0,
            )?,
            circuit_breaker_timeout: vars.millis_or("CIRCUIT_BREAKER_TIMEOUT", defaults.circuit_breaker_timeout)?,
            openai_base_url: match vars.get("OPENAI_BASE_URL") {
                None => defaults.openai_base_url.clone(),
                Some(text) => parse_http_url("OPENAI_BASE_URL", &text)?,
            },
            openai_image_model: vars
                .get("OPENAI_IMAGE_MODEL")
                .map(|model| model.trim().to_owned())
                .unwrap_or(defaults.openai_image_model.clone()),
            openai_timeout: vars.millis_or("OPENAI_TIMEOUT_MS", defaults.openai_timeout)?,
            openai_moderation_enabled: vars.bool_or("OPENAI_MODERATION_ENABLED", false)?,
            prompt_blocklist: vars.get("PROMPT_BLOCKLIST").map(PathBuf::from),
            render_providers: vars
                .get("RENDER_PROVIDERS")
                .map(|text| parse_provider_list(&text))
                .transpose()?,
            local_diffusion_timeout: vars.millis_or("LOCAL_DIFFUSION_TIMEOUT_MS", defaults.local_diffusion_timeout)?,
            local_diffusion_overrides: InpaintOverrides::from_vars(vars)?,
            price_table: match vars.get("PRICE_TABLE_OVERRIDES") {
                None => crate::budget::PriceTable::default(),
                Some(json) => crate::budget::PriceTable::with_overrides(&json)
                    .map_err(|e| ConfigError::new("PRICE_TABLE_OVERRIDES", e.to_string()))?,
            },
        })
    }
}

impl InpaintOverrides {
    fn from_vars(vars: &Vars<'_>) -> Result<Self, ConfigError> {
        Ok(Self {
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
        })
    }
}

const DEFAULT_OPENAI_BASE_URL: &str = "https://api.openai.com/v1";

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::config;

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
                r#"{"gpt-image-1.5": {"text_input_usd_per_1m": 4}}"#,
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
}
