//! The result cache (`RESULT_CACHE`, `RESULT_CACHE_TTL_SECONDS`).

use std::time::Duration;

use super::{ConfigError, Vars};

/// Whether renders reuse the outputs of an earlier identical render.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheMode {
    /// Unset: on when the provider asked first is deterministic (the built-in fill) and
    /// dry-run is off; off for generative providers, whose users may want variety.
    Auto,
    /// `on`: also for generative providers (OpenAI, local diffusion). Dry runs never use it.
    On,
    /// `off`: never.
    Off,
}

/// `RESULT_CACHE` and the lifetime of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResultCacheConfig {
    pub mode: CacheMode,
    /// How long an entry is found after it was written (`RESULT_CACHE_TTL_SECONDS`, default
    /// 30 days).
    pub ttl: Duration,
}

/// Thirty days.
const DEFAULT_TTL_SECONDS: u64 = 30 * 24 * 3600;

impl Default for ResultCacheConfig {
    fn default() -> Self {
        Self {
            mode: CacheMode::Auto,
            ttl: Duration::from_secs(DEFAULT_TTL_SECONDS),
        }
    }
}

impl ResultCacheConfig {
    pub(super) fn from_vars(vars: &Vars<'_>) -> Result<Self, ConfigError> {
        let mode = match vars
            .get("RESULT_CACHE")
            .map(|v| v.trim().to_ascii_lowercase())
            .as_deref()
        {
            None | Some("auto") => CacheMode::Auto,
            Some("on" | "true" | "1" | "yes") => CacheMode::On,
            Some("off" | "false" | "0" | "no") => CacheMode::Off,
            Some(_) => return Err(ConfigError::new("RESULT_CACHE", "must be `on`, `off` or `auto`")),
        };
        let ttl = vars.parse_or("RESULT_CACHE_TTL_SECONDS", DEFAULT_TTL_SECONDS, |seconds| {
            (1..=365 * 24 * 3600).contains(seconds)
        })?;
        Ok(Self {
            mode,
            ttl: Duration::from_secs(ttl),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(pairs: &[(&str, &str)]) -> Result<ResultCacheConfig, ConfigError> {
        crate::config::test_support::section(pairs, ResultCacheConfig::from_vars)
    }

    #[test]
    fn the_cache_defaults_to_auto_for_thirty_days_and_names_a_bad_value() {
        assert_eq!(cache(&[]).unwrap(), ResultCacheConfig::default());
        assert_eq!(cache(&[]).unwrap().ttl, Duration::from_secs(2_592_000));
        assert_eq!(cache(&[("RESULT_CACHE", "ON")]).unwrap().mode, CacheMode::On);
        assert_eq!(cache(&[("RESULT_CACHE", "off")]).unwrap().mode, CacheMode::Off);
        assert_eq!(
            cache(&[("RESULT_CACHE_TTL_SECONDS", "60")]).unwrap().ttl,
            Duration::from_secs(60)
        );
        let error = cache(&[("RESULT_CACHE", "sometimes")]).unwrap_err().to_string();
        assert!(error.contains("RESULT_CACHE"), "{error}");
        let error = cache(&[("RESULT_CACHE_TTL_SECONDS", "0")]).unwrap_err().to_string();
        assert!(error.contains("RESULT_CACHE_TTL_SECONDS"), "{error}");
    }
}
