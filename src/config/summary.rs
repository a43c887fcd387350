//! The one start-up line that says what this process will do: where designs, assets, jobs and
//! events go, and the limits that shape a job. Secrets never appear: keys are left out, a URL's
//! password becomes `***` and its query (which may carry credentials) is dropped.

use std::fmt::Write as _;

use super::{Config, DatabaseConfig, Migrations, PrivateHostPolicy, Secret, StorageBackend};

/// Variables that are read only by one storage backend, and what the others say about them.
const CLOUDINARY_ONLY: [&str; 8] = [
    "CLOUDINARY_URL",
    "CLOUDINARY_CLOUD_NAME",
    "CLOUDINARY_API_KEY",
    "CLOUDINARY_API_SECRET",
    "CLOUDINARY_UPLOAD_PREFIX",
    "CLOUDINARY_DELIVERY_PREFIX",
    "CLOUDINARY_FOLDER",
    "CLOUDINARY_SIGNATURE_ALGORITHM",
];
const S3_ONLY: [&str; 7] = [
    "S3_BUCKET",
    "S3_REGION",
    "S3_ENDPOINT",
    "S3_ACCESS_KEY_ID",
    "S3_SECRET_ACCESS_KEY",
    "S3_FORCE_PATH_STYLE",
    "S3_PREFIX",
];
const WEBHOOK_ONLY: [&str; 8] = [
    "WEBHOOK_URL",
    "WEBHOOK_SECRET",
    "WEBHOOK_ENDPOINTS_FILE",
    "WEBHOOK_QUEUE_NAME",
    "WEBHOOK_CONCURRENCY",
    "WEBHOOK_RETRY_SCHEDULE_MS",
    "WEBHOOK_TIMEOUT_MS",
    "WEBHOOK_ALLOW_PRIVATE_HOSTS",
];

impl Config {
    /// `key=value` pairs on one line; `providers` is the chain in the order it is tried.
    pub fn summary(&self, providers: &[&str]) -> String {
        let mut line = String::new();
        let database = match &self.database {
            DatabaseConfig::Sqlite { path } => format!("sqlite:{}", path.display()),
            DatabaseConfig::Postgres { url } => redacted_url(url),
        };
        let _ = write!(line, "database={database}");
        let _ = write!(
            line,
            " tenant_column={}",
            self.design_tenant_column
                .as_ref()
                .map_or("none", |column| column.as_str())
        );
        let migrations = match self.migrations {
            Migrations::Auto => "auto",
            Migrations::Add => "true",
            Migrations::Off => "false",
        };
        let _ = write!(line, " migrations={migrations}");
        let storage = match &self.storage.backend {
            StorageBackend::Local => format!("local:{}", self.storage_dir.display()),
            StorageBackend::Cloudinary(cloudinary) => format!(
                "cloudinary:{}{}",
                cloudinary.cloud_name,
                cloudinary.folder.as_ref().map(|f| format!("/{f}")).unwrap_or_default()
            ),
            StorageBackend::S3(s3) => format!(
                "s3:{}{}{}",
                s3.bucket,
                s3.prefix.as_ref().map(|p| format!("/{p}")).unwrap_or_default(),
                s3.endpoint.as_ref().map(|e| format!("@{e}")).unwrap_or_default()
            ),
        };
        let _ = write!(line, " storage={storage}");
        if let Some(fallback) = self.storage.fallback_to_local {
            let _ = write!(line, " storage_fallback={}", if fallback { "local" } else { "off" });
        }
        if let Some(base) = &self.public_base_url {
            let _ = write!(line, " public_base_url={base}");
        }
        let _ = write!(line, " providers={}", providers.join(">"));
        let providers_config = &self.providers;
        if providers.contains(&"openai") || providers_config.dry_run {
            let _ = write!(line, " openai_model={}", providers_config.openai_image_model);
        }
        let _ = write!(
            line,
            " dry_run={} max_tokens_per_job={} breaker={}x/{}ms",
            providers_config.dry_run,
            providers_config.max_tokens_per_job,
            providers_config.circuit_breaker_threshold,
            providers_config.circuit_breaker_timeout.as_millis()
        );
        let queue = &self.queue;
        let redis = &self.redis;
        let redis_target = if !redis.cluster_nodes.is_empty() {
            format!("cluster({} seed nodes)", redis.cluster_nodes.len())
        } else if let Some(url) = &redis.url {
            redacted_url(url)
        } else {
            format!("{}:{}", redis.host, redis.port)
        };
        let _ = write!(
            line,
            " redis={redis_target} queue={} prefix={} concurrency={} lock={}ms stalled={}ms grace={}s",
            queue.name,
            queue.prefix,
            queue.worker_concurrency,
            queue.lock_duration.as_millis(),
            queue.stalled_interval.as_millis(),
            queue.shutdown_grace.as_secs()
        );
        let _ = write!(
            line,
            " tenant_concurrency={} tenant_overrides={} lease={}s",
            self.default_tenant_concurrency,
            queue.tenant_overrides.len() + usize::from(queue.tenant_overrides_file.is_some()),
            queue.tenant_lease.as_secs()
        );
        let webhook = queue.webhook.as_ref().map_or_else(
            || "off".to_owned(),
            |webhook| {
                let mut text = webhook.url.as_ref().map_or_else(
                    || "per-tenant".to_owned(),
                    |url| redacted_url(&Secret::new(url.as_str())),
                );
                if webhook.endpoints_file.is_some() && webhook.url.is_some() {
                    text.push_str("+per-tenant");
                }
                let _ = write!(text, " webhook_queue={}", webhook.queue_name);
                text
            },
        );
        let _ = write!(line, " webhook={webhook}");
        match &self.traces {
            Some(traces) => {
                let endpoint = redacted_url(&Secret::new(traces.endpoint.as_str()));
                let _ = write!(line, " traces={endpoint} service={}", traces.service_name);
            }
            None => line.push_str(" traces=off"),
        }
        let private_hosts = match &self.assets.private_hosts {
            PrivateHostPolicy::Deny => "deny".to_owned(),
            PrivateHostPolicy::AllowAll => "allow-all".to_owned(),
            PrivateHostPolicy::Allow(hosts) => format!("allow({})", hosts.len()),
        };
        let _ = write!(
            line,
            " max_asset_bytes={} max_image={}px/{}px private_asset_hosts={private_hosts} preview={}",
            self.assets.max_bytes, self.assets.max_dimension, self.assets.max_pixels, self.imaging.preview_size
        );
        line
    }

    /// Variables that are set but that this configuration does not use, each with the reason:
    /// another storage backend's variables, a webhook's variables while `WEBHOOK_ENABLED` is
    /// not true. Reported once at start-up, so a deployment's drift is not silently ignored.
    pub fn unused_vars(&self, lookup: impl Fn(&str) -> Option<String>) -> Vec<(&'static str, &'static str)> {
        let mut unused = Vec::new();
        let mut check = |names: &[&'static str], used: bool, why: &'static str| {
            if !used {
                unused.extend(
                    names
                        .iter()
                        .filter(|name| lookup(name).is_some_and(|value| !value.trim().is_empty()))
                        .map(|name| (*name, why)),
                );
            }
        };
        let backend = &self.storage.backend;
        check(
            &CLOUDINARY_ONLY,
            matches!(backend, StorageBackend::Cloudinary(_)),
            "the storage backend is not cloudinary (STORAGE_BACKEND)",
        );
        check(
            &S3_ONLY,
            matches!(backend, StorageBackend::S3(_)),
            "the storage backend is not s3 (STORAGE_BACKEND)",
        );
        check(
            &WEBHOOK_ONLY,
            self.queue.webhook.is_some(),
            "WEBHOOK_ENABLED is not true",
        );
        unused
    }
}

/// The URL with its password replaced by `***`, and of its query only the parameters that
/// cannot carry a credential (`schema=…` stays, `sslpassword=…` or `token=…` go); text that is
/// not a URL is not shown at all.
fn redacted_url(url: &Secret) -> String {
    let Ok(mut parsed) = url::Url::parse(url.expose()) else {
        return "[unparsable URL]".to_owned();
    };
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some("***"));
    }
    let kept: Vec<(String, String)> = parsed
        .query_pairs()
        .filter(|(name, _)| {
            let name = name.to_ascii_lowercase();
            !["pass", "secret", "token", "key", "auth", "cred", "sig"]
                .iter()
                .any(|word| name.contains(word))
        })
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect();
    parsed.set_query(None);
    if !kept.is_empty() {
        parsed.query_pairs_mut().extend_pairs(kept);
    }
    parsed.set_fragment(None);
    parsed.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_shows_where_things_go_and_no_secret() {
        let vars = std::collections::HashMap::from([
            (
                "DATABASE_URL",
                "postgres://app:hunter2@db.internal:5432/designs?sslpassword=s3cret&schema=render",
            ),
            ("REDIS_URL", "redis://:redispass@cache.internal:6379/0"),
            ("OPENAI_API_KEY", "sk-live-0123456789abcdef"),
            ("WEBHOOK_URL", "https://hooks.example/render?token=abc"),
            ("WEBHOOK_ENABLED", "true"),
            ("WEBHOOK_SECRET", "whsec_c2VjcmV0LXNpZ25pbmcta2V5"),
            ("WORKER_CONCURRENCY", "6"),
        ]);
        let config = Config::from_lookup(|name| vars.get(name).map(|value| (*value).to_owned())).unwrap();
        let line = config.summary(&["openai", "builtin"]);
        for secret in ["hunter2", "s3cret", "redispass", "sk-live", "token=abc", "whsec_"] {
            assert!(!line.contains(secret), "{secret} leaked: {line}");
        }
        for expected in [
            "database=postgres://app:***@db.internal:5432/designs?schema=render ",
            "redis=redis://:***@cache.internal:6379/0 ",
            "providers=openai>builtin ",
            "openai_model=gpt-image-1.5 ",
            "concurrency=6 ",
            "webhook=https://hooks.example/render ",
            "tenant_column=tenantId ",
        ] {
            assert!(line.contains(expected), "{expected} missing: {line}");
        }
        assert!(!line.contains('\n'));
    }

    #[test]
    fn variables_the_configuration_does_not_use_are_reported() {
        let vars = std::collections::HashMap::from([
            ("STORAGE_BACKEND", "local"),
            ("CLOUDINARY_CLOUD_NAME", "acme"),
            ("S3_BUCKET", " "),
            ("WEBHOOK_URL", "https://hooks.example/render"),
        ]);
        let lookup = |name: &str| vars.get(name).map(|value| (*value).to_owned());
        let config = Config::from_lookup(lookup).unwrap();
        let unused = config.unused_vars(lookup);
        let names: Vec<_> = unused.iter().map(|(name, _)| *name).collect();
        assert_eq!(
            names,
            ["CLOUDINARY_CLOUD_NAME", "WEBHOOK_URL"],
            "a blank variable is unset"
        );
        assert!(unused[0].1.contains("not cloudinary"));
        assert!(
            Config::for_tests(std::path::Path::new("/tmp"))
                .unused_vars(|_| None)
                .is_empty()
        );
    }
}
