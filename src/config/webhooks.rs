//! Webhook delivery: where final render events go, how they are signed, and the schedule of
//! retries of the delivery queue (`WEBHOOK_*`).

use std::path::PathBuf;
use std::time::Duration;

use super::{ConfigError, PrivateHostPolicy, Secret, Vars};

/// Svix's schedule: at once, then after 5 s, 5 min, 30 min, 2 h, 5 h, 10 h and 10 h.
const SVIX_SCHEDULE_MS: [u64; 8] = [
    0, 5_000, 300_000, 1_800_000, 7_200_000, 18_000_000, 36_000_000, 36_000_000,
];

/// Signed, durable webhooks for render events: set exactly when `WEBHOOK_ENABLED=true`.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookConfig {
    /// The endpoint of every tenant without one of its own (`WEBHOOK_URL`).
    pub url: Option<url::Url>,
    /// Per-tenant endpoints, lines `tenantId=https://…` (`WEBHOOK_ENDPOINTS_FILE`); a tenant's
    /// line wins over `WEBHOOK_URL`. Read when the worker starts.
    pub endpoints_file: Option<PathBuf>,
    /// Signing secrets (`WEBHOOK_SECRET`, `whsec_<base64>`; several separated by spaces during
    /// a rotation, each signing every delivery).
    pub secrets: Vec<Secret>,
    /// The delivery queue (`WEBHOOK_QUEUE_NAME`, default `design-render-webhooks`), beside the
    /// render queue under the same prefix and Redis.
    pub queue_name: String,
    /// Deliveries processed at once per worker (`WEBHOOK_CONCURRENCY`, default 4).
    pub concurrency: usize,
    /// When each attempt is made, from the previous one (`WEBHOOK_RETRY_SCHEDULE_MS`, a comma
    /// list; default Svix's). The first entry is the wait before the first attempt (0: at once);
    /// the length is the number of attempts.
    pub schedule: Vec<Duration>,
    /// How long a receiver has to answer (`WEBHOOK_TIMEOUT_MS`, default 15000).
    pub timeout: Duration,
    /// Endpoints on private, loopback or metadata addresses are refused unless allowed here
    /// (`WEBHOOK_ALLOW_PRIVATE_HOSTS`, the syntax of `ALLOW_PRIVATE_ASSET_HOSTS`).
    pub private_hosts: PrivateHostPolicy,
}

impl WebhookConfig {
    /// `Some` exactly when `WEBHOOK_ENABLED` is true; then a secret and at least one endpoint
    /// (`WEBHOOK_URL` or `WEBHOOK_ENDPOINTS_FILE`) are required.
    pub(super) fn from_vars(vars: &Vars<'_>) -> Result<Option<Self>, ConfigError> {
        if !vars.bool_or("WEBHOOK_ENABLED", false)? {
            return Ok(None);
        }
        let url = vars
            .get("WEBHOOK_URL")
            .map(|text| {
                url::Url::parse(text.trim())
                    .ok()
                    .filter(|url| matches!(url.scheme(), "http" | "https"))
                    .ok_or_else(|| ConfigError::new("WEBHOOK_URL", "must be an http(s) URL"))
            })
            .transpose()?;
        let endpoints_file = vars.get("WEBHOOK_ENDPOINTS_FILE").map(PathBuf::from);
        if url.is_none() && endpoints_file.is_none() {
            return Err(ConfigError::new(
                "WEBHOOK_URL",
                "is required when WEBHOOK_ENABLED=true (or per-tenant endpoints in WEBHOOK_ENDPOINTS_FILE)",
            ));
        }
        let secrets: Vec<Secret> = vars
            .get("WEBHOOK_SECRET")
            .ok_or_else(|| ConfigError::new("WEBHOOK_SECRET", "is required when WEBHOOK_ENABLED=true"))?
            .split_whitespace()
            .map(Secret::new)
            .collect();
        for secret in &secrets {
            signing_key(secret).map_err(|problem| ConfigError::new("WEBHOOK_SECRET", problem))?;
        }
        let schedule = match vars.get("WEBHOOK_RETRY_SCHEDULE_MS") {
            None => SVIX_SCHEDULE_MS.iter().copied().map(Duration::from_millis).collect(),
            Some(text) => {
                parse_schedule(&text).map_err(|problem| ConfigError::new("WEBHOOK_RETRY_SCHEDULE_MS", problem))?
            }
        };
        Ok(Some(Self {
            url,
            endpoints_file,
            secrets,
            queue_name: vars
                .get("WEBHOOK_QUEUE_NAME")
                .map(|name| name.trim().to_owned())
                .unwrap_or_else(|| "design-render-webhooks".to_owned()),
            concurrency: vars.parse_or("WEBHOOK_CONCURRENCY", 4, |n| (1..=256).contains(n))?,
            schedule,
            timeout: vars.millis_or("WEBHOOK_TIMEOUT_MS", Duration::from_secs(15))?,
            private_hosts: match vars.get("WEBHOOK_ALLOW_PRIVATE_HOSTS") {
                None => PrivateHostPolicy::Deny,
                Some(text) => {
                    PrivateHostPolicy::parse(&text).map_err(|p| ConfigError::new("WEBHOOK_ALLOW_PRIVATE_HOSTS", p))?
                }
            },
        }))
    }
}

/// The HMAC key of a secret: the base64 after `whsec_` (Standard Webhooks), or, for a secret
/// without the prefix, its bytes as they are (the form earlier versions signed with).
pub fn signing_key(secret: &Secret) -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    match secret.expose().strip_prefix("whsec_") {
        Some(encoded) => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| "has the `whsec_` prefix but what follows is not base64".to_owned())
            .and_then(|key| {
                if key.is_empty() {
                    Err("has an empty key after `whsec_`".to_owned())
                } else {
                    Ok(key)
                }
            }),
        None => Ok(secret.expose().as_bytes().to_vec()),
    }
}

fn parse_schedule(text: &str) -> Result<Vec<Duration>, String> {
    let schedule = text
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            entry
                .parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|_| format!("`{entry}` is not a number of milliseconds"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if schedule.is_empty() || schedule.len() > 100 {
        return Err("must list 1 to 100 delays in milliseconds, separated by commas".into());
    }
    Ok(schedule)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn webhooks(pairs: &[(&str, &str)]) -> Result<Option<WebhookConfig>, ConfigError> {
        crate::config::test_support::section(pairs, WebhookConfig::from_vars)
    }

    const ENABLED: (&str, &str) = ("WEBHOOK_ENABLED", "true");
    const SECRET: (&str, &str) = ("WEBHOOK_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");

    #[test]
    fn defaults_are_svix_schedule_four_workers_and_a_queue_beside_the_renders() {
        let config = webhooks(&[ENABLED, SECRET, ("WEBHOOK_URL", "https://hooks.example/render")])
            .unwrap()
            .unwrap();
        assert_eq!(config.queue_name, "design-render-webhooks");
        assert_eq!(config.concurrency, 4);
        assert_eq!(config.timeout, Duration::from_secs(15));
        let hours: Vec<u64> = config.schedule.iter().map(Duration::as_secs).collect();
        assert_eq!(hours, [0, 5, 300, 1800, 7200, 18000, 36000, 36000]);
        assert_eq!(config.private_hosts, PrivateHostPolicy::Deny);
        assert!(webhooks(&[SECRET]).unwrap().is_none(), "off unless enabled");
    }

    #[test]
    fn a_schedule_secrets_and_endpoints_file_are_read_and_bad_ones_named() {
        let config = webhooks(&[
            ENABLED,
            (
                "WEBHOOK_SECRET",
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw  whsec_c2Vjb25k",
            ),
            ("WEBHOOK_ENDPOINTS_FILE", "/etc/design-render/webhooks"),
            ("WEBHOOK_RETRY_SCHEDULE_MS", "0, 50,200"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(config.secrets.len(), 2);
        assert_eq!(signing_key(&config.secrets[1]).unwrap(), b"second");
        assert_eq!(config.url, None);
        let millis: Vec<u128> = config.schedule.iter().map(Duration::as_millis).collect();
        assert_eq!(millis, [0, 50, 200]);
        for (pairs, var) in [
            (vec![ENABLED, SECRET], "WEBHOOK_URL"),
            (vec![ENABLED, ("WEBHOOK_URL", "https://h.example/")], "WEBHOOK_SECRET"),
            (
                vec![
                    ENABLED,
                    ("WEBHOOK_URL", "https://h.example/"),
                    ("WEBHOOK_SECRET", "whsec_!!"),
                ],
                "WEBHOOK_SECRET",
            ),
            (
                vec![
                    ENABLED,
                    SECRET,
                    ("WEBHOOK_URL", "https://h.example/"),
                    ("WEBHOOK_RETRY_SCHEDULE_MS", "0,soon"),
                ],
                "WEBHOOK_RETRY_SCHEDULE_MS",
            ),
            (
                vec![ENABLED, SECRET, ("WEBHOOK_URL", "ftp://h.example/")],
                "WEBHOOK_URL",
            ),
        ] {
            assert_eq!(webhooks(&pairs).unwrap_err().var, var);
        }
    }

    #[test]
    fn the_signing_key_is_the_decoded_whsec_part_or_a_legacy_secrets_bytes() {
        let key = signing_key(&Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")).unwrap();
        assert_eq!(key.len(), 24);
        assert_eq!(signing_key(&Secret::new("plain-secret")).unwrap(), b"plain-secret");
    }
}
