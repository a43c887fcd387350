//! Where rendered assets go: `STORAGE_BACKEND` and each backend's variables.
//!
//! Selection: `STORAGE_BACKEND` = `cloudinary` | `s3` | `local`; unset means Cloudinary when any
//! Cloudinary variable is set, else S3 when `S3_BUCKET` is set, else local disk. A selected
//! backend must be complete: a missing variable stops start-up naming it.

use std::time::Duration;

use super::{ConfigError, Secret, Vars};

/// Storage settings shared by every backend, and the backend itself.
#[derive(Debug, Clone, PartialEq)]
pub struct StorageConfig {
    pub backend: StorageBackend,
    /// `STORAGE_FALLBACK=local` (`true`) or `off` (`false`); unset (`None`) means the mode's
    /// default: on for `render`, off for the worker.
    pub fallback_to_local: Option<bool>,
    /// Connect timeout of one upload request (`STORAGE_CONNECT_TIMEOUT_MS`, default 5000).
    pub connect_timeout: Duration,
    /// Deadline of one upload request (`STORAGE_TIMEOUT_MS`, default 60000).
    pub timeout: Duration,
    /// Retries of a transient upload failure inside one put (`STORAGE_RETRIES`, default 3).
    pub retries: u32,
    /// Upload requests in flight at once per process (`STORAGE_MAX_IN_FLIGHT`, default 8).
    pub max_in_flight: usize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            backend: StorageBackend::Local,
            fallback_to_local: None,
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(60),
            retries: 3,
            max_in_flight: 8,
        }
    }
}

/// The primary storage backend.
#[derive(Debug, Clone, PartialEq)]
pub enum StorageBackend {
    /// `STORAGE_DIR` on this machine.
    Local,
    Cloudinary(CloudinaryConfig),
    S3(S3Config),
}

impl StorageBackend {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Cloudinary(_) => "cloudinary",
            Self::S3(_) => "s3",
        }
    }
}

/// Signed uploads to Cloudinary.
#[derive(Debug, Clone, PartialEq)]
pub struct CloudinaryConfig {
    pub cloud_name: String,
    pub api_key: String,
    pub api_secret: Secret,
    /// `CLOUDINARY_UPLOAD_PREFIX` (default `https://api.cloudinary.com`): regional API hosts and
    /// tests.
    pub upload_prefix: url::Url,
    /// `CLOUDINARY_DELIVERY_PREFIX` (default `https://res.cloudinary.com`): where delivery URLs
    /// start, for reading an object by its key (a CNAME host, tests).
    pub delivery_prefix: url::Url,
    /// `CLOUDINARY_FOLDER`: prefixed to every public id.
    pub folder: Option<String>,
    /// `CLOUDINARY_SIGNATURE_ALGORITHM`: `sha1` (default) or `sha256` for accounts restricted
    /// to it.
    pub signature: SignatureAlgorithm,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureAlgorithm {
    Sha1,
    Sha256,
}

/// An S3-compatible bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct S3Config {
    pub bucket: String,
    /// `S3_REGION` (default `us-east-1`).
    pub region: String,
    /// `S3_ENDPOINT`: R2, MinIO, Wasabi, a loopback test server; unset means AWS.
    pub endpoint: Option<url::Url>,
    /// `S3_ACCESS_KEY_ID` and `S3_SECRET_ACCESS_KEY`, else the AWS variables below, else the
    /// instance's credentials (metadata service).
    pub credentials: Option<S3Credentials>,
    /// AWS credential-chain variables that are set (`AWS_SESSION_TOKEN`, web identity,
    /// container credentials), passed to the client as they are.
    pub aws_chain: Vec<(&'static str, Secret)>,
    /// `S3_FORCE_PATH_STYLE`: `https://host/bucket/key` instead of `https://bucket.host/key`.
    pub force_path_style: bool,
    /// `S3_PREFIX`: a key prefix (plain segments), without leading or trailing `/`.
    pub prefix: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct S3Credentials {
    pub access_key_id: String,
    pub secret_access_key: Secret,
}

const CLOUDINARY_VARS: [&str; 4] = [
    "CLOUDINARY_URL",
    "CLOUDINARY_CLOUD_NAME",
    "CLOUDINARY_API_KEY",
    "CLOUDINARY_API_SECRET",
];

/// The AWS variables of the standard credential chain that the S3 client is given as they are.
const AWS_CHAIN_VARS: [&str; 7] = [
    "AWS_SESSION_TOKEN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
];

impl StorageConfig {
    pub(super) fn from_vars(vars: &Vars<'_>) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let chosen = vars.get("STORAGE_BACKEND").map(|text| text.trim().to_ascii_lowercase());
        let backend = match chosen.as_deref() {
            Some("local") => StorageBackend::Local,
            Some("cloudinary") => StorageBackend::Cloudinary(CloudinaryConfig::from_vars(vars)?),
            Some("s3") => StorageBackend::S3(S3Config::from_vars(vars)?),
            Some(other) => {
                return Err(ConfigError::new(
                    "STORAGE_BACKEND",
                    format!("must be cloudinary, s3 or local (got `{other}`)"),
                ));
            }
            None if CLOUDINARY_VARS.iter().any(|name| vars.get(name).is_some()) => {
                StorageBackend::Cloudinary(CloudinaryConfig::from_vars(vars)?)
            }
            None if vars.get("S3_BUCKET").is_some() => StorageBackend::S3(S3Config::from_vars(vars)?),
            None => StorageBackend::Local,
        };
        let fallback_to_local = match vars
            .get("STORAGE_FALLBACK")
            .map(|text| text.trim().to_ascii_lowercase())
        {
            None => None,
            Some(text) => match text.as_str() {
                "local" | "true" | "on" => Some(true),
                "off" | "none" | "false" => Some(false),
                _ => {
                    return Err(ConfigError::new(
                        "STORAGE_FALLBACK",
                        format!("must be `local` or `off` (got `{text}`)"),
                    ));
                }
            },
        };
        Ok(Self {
            backend,
            fallback_to_local,
            connect_timeout: vars.millis_or("STORAGE_CONNECT_TIMEOUT_MS", defaults.connect_timeout)?,
            timeout: vars.millis_or("STORAGE_TIMEOUT_MS", defaults.timeout)?,
            retries: vars.parse_or("STORAGE_RETRIES", defaults.retries, |v| *v <= 10)?,
            max_in_flight: vars.parse_or("STORAGE_MAX_IN_FLIGHT", defaults.max_in_flight, |v| {
                (1..=256).contains(v)
            })?,
        })
    }
}

impl CloudinaryConfig {
    fn from_vars(vars: &Vars<'_>) -> Result<Self, ConfigError> {
        // CLOUDINARY_URL first; the separate variables fill (or override) its parts.
        let (mut cloud_name, mut api_key, mut api_secret, mut upload_prefix) = (None, None, None, None);
        if let Some(text) = vars.get("CLOUDINARY_URL") {
            let parts = parse_cloudinary_url(text.trim())?;
            (cloud_name, api_key, api_secret, upload_prefix) = (
                Some(parts.cloud_name),
                Some(parts.api_key),
                Some(parts.api_secret),
                parts.upload_prefix,
            );
        }
        let cloud_name = vars
            .get("CLOUDINARY_CLOUD_NAME")
            .map(|text| text.trim().to_owned())
            .or(cloud_name)
            .ok_or_else(|| missing("CLOUDINARY_CLOUD_NAME"))?;
        if !cloud_name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        {
            return Err(ConfigError::new(
                "CLOUDINARY_CLOUD_NAME",
                "must be a cloud name of letters, digits, `-` and `_`",
            ));
        }
        let api_key = vars
            .get("CLOUDINARY_API_KEY")
            .map(|text| text.trim().to_owned())
            .or(api_key)
            .ok_or_else(|| missing("CLOUDINARY_API_KEY"))?;
        let api_secret = vars
            .get("CLOUDINARY_API_SECRET")
            .map(|text| Secret::new(text.trim()))
            .or(api_secret)
            .ok_or_else(|| missing("CLOUDINARY_API_SECRET"))?;
        let upload_prefix = match vars.get("CLOUDINARY_UPLOAD_PREFIX") {
            Some(text) => http_url("CLOUDINARY_UPLOAD_PREFIX", text.trim())?,
            None => match upload_prefix {
                Some(prefix) => prefix,
                None => http_url("CLOUDINARY_UPLOAD_PREFIX", "https://api.cloudinary.com")?,
            },
        };
        let delivery_prefix = http_url(
            "CLOUDINARY_DELIVERY_PREFIX",
            vars.get("CLOUDINARY_DELIVERY_PREFIX")
                .as_deref()
                .map_or("https://res.cloudinary.com", str::trim),
        )?;
        let folder = vars
            .get("CLOUDINARY_FOLDER")
            .map(|text| text.trim().trim_matches('/').to_owned())
            .filter(|folder| !folder.is_empty());
        if let Some(folder) = &folder {
            crate::storage::StorageKey::parse(folder)
                .map_err(|error| ConfigError::new("CLOUDINARY_FOLDER", error.to_string()))?;
        }
        let signature = match vars
            .get("CLOUDINARY_SIGNATURE_ALGORITHM")
            .map(|t| t.trim().to_ascii_lowercase())
        {
            None => SignatureAlgorithm::Sha1,
            Some(text) if text == "sha1" => SignatureAlgorithm::Sha1,
            Some(text) if text == "sha256" => SignatureAlgorithm::Sha256,
            Some(text) => {
                return Err(ConfigError::new(
                    "CLOUDINARY_SIGNATURE_ALGORITHM",
                    format!("must be sha1 or sha256 (got `{text}`)"),
                ));
            }
        };
        Ok(Self {
            cloud_name,
            api_key,
            api_secret,
            upload_prefix,
            delivery_prefix,
            folder,
            signature,
        })
    }
}

struct CloudinaryUrlParts {
    cloud_name: String,
    api_key: String,
    api_secret: Secret,
    upload_prefix: Option<url::Url>,
}

/// `cloudinary://<api_key>:<api_secret>@<cloud_name>[?upload_prefix=…]`; the key and secret may
/// be percent-encoded. Errors never repeat the URL (it holds the secret).
fn parse_cloudinary_url(text: &str) -> Result<CloudinaryUrlParts, ConfigError> {
    let invalid = |problem: &str| {
        ConfigError::new(
            "CLOUDINARY_URL",
            format!("{problem}; expected cloudinary://<api_key>:<api_secret>@<cloud_name>"),
        )
    };
    let url = url::Url::parse(text).map_err(|_| invalid("is not a URL"))?;
    if url.scheme() != "cloudinary" {
        return Err(invalid("must use the cloudinary:// scheme"));
    }
    let decode = |part: &str| {
        percent_decode(part).ok_or_else(|| invalid("has a key or secret that is not valid percent-encoded UTF-8"))
    };
    let api_key = decode(url.username())?;
    let api_secret = decode(url.password().unwrap_or_default())?;
    let cloud_name = url.host_str().unwrap_or_default().to_owned();
    if api_key.is_empty() || api_secret.is_empty() || cloud_name.is_empty() {
        return Err(invalid("lacks the API key, the secret or the cloud name"));
    }
    let upload_prefix = url
        .query_pairs()
        .find(|(name, _)| name == "upload_prefix")
        .map(|(_, value)| http_url("CLOUDINARY_URL", &value))
        .transpose()?;
    Ok(CloudinaryUrlParts {
        cloud_name,
        api_key,
        api_secret: Secret::new(api_secret),
        upload_prefix,
    })
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = text.get(index + 1..index + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            index += 3;
        } else {
            out.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl S3Config {
    fn from_vars(vars: &Vars<'_>) -> Result<Self, ConfigError> {
        let bucket = vars
            .get("S3_BUCKET")
            .map(|text| text.trim().to_owned())
            .ok_or_else(|| missing("S3_BUCKET"))?;
        let valid_bucket = (3..=63).contains(&bucket.len())
            && bucket
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.'));
        if !valid_bucket {
            return Err(ConfigError::new(
                "S3_BUCKET",
                "must be a bucket name of 3 to 63 lowercase letters, digits, `-` and `.`",
            ));
        }
        let endpoint = vars
            .get("S3_ENDPOINT")
            .map(|text| http_url("S3_ENDPOINT", text.trim()))
            .transpose()?;
        let credentials = match (
            vars.get("S3_ACCESS_KEY_ID").or_else(|| vars.get("AWS_ACCESS_KEY_ID")),
            vars.get("S3_SECRET_ACCESS_KEY")
                .or_else(|| vars.get("AWS_SECRET_ACCESS_KEY")),
        ) {
            (Some(id), Some(secret)) => Some(S3Credentials {
                access_key_id: id.trim().to_owned(),
                secret_access_key: Secret::new(secret.trim()),
            }),
            (None, None) => None,
            (Some(_), None) => return Err(missing("S3_SECRET_ACCESS_KEY")),
            (None, Some(_)) => return Err(missing("S3_ACCESS_KEY_ID")),
        };
        let prefix = vars
            .get("S3_PREFIX")
            .map(|text| text.trim().trim_matches('/').to_owned())
            .filter(|prefix| !prefix.is_empty());
        if let Some(prefix) = &prefix {
            crate::storage::StorageKey::parse(prefix)
                .map_err(|error| ConfigError::new("S3_PREFIX", error.to_string()))?;
        }
        Ok(Self {
            bucket,
            region: vars
                .get("S3_REGION")
                .map(|text| text.trim().to_owned())
                .unwrap_or_else(|| "us-east-1".to_owned()),
            endpoint,
            credentials,
            aws_chain: AWS_CHAIN_VARS
                .iter()
                .filter_map(|name| vars.get(name).map(|value| (*name, Secret::new(value.trim()))))
                .collect(),
            force_path_style: vars.bool_or("S3_FORCE_PATH_STYLE", false)?,
            prefix,
        })
    }
}

fn missing(var: &'static str) -> ConfigError {
    ConfigError::new(var, "is required by the selected storage backend")
}

fn http_url(var: &'static str, text: &str) -> Result<url::Url, ConfigError> {
    let url = url::Url::parse(text).map_err(|error| ConfigError::new(var, format!("is not a URL ({error})")))?;
    if !matches!(url.scheme(), "http" | "https") || url.password().is_some() {
        return Err(ConfigError::new(var, "must be an http(s) URL without credentials"));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::config;
    use super::*;

    #[test]
    fn without_storage_variables_assets_stay_local() {
        let storage = config(&[]).unwrap().storage;
        assert_eq!(storage.backend, StorageBackend::Local);
        assert_eq!(storage.fallback_to_local, None);
    }

    #[test]
    fn cloudinary_is_chosen_when_configured_and_its_url_and_variables_combine() {
        let storage = config(&[(
            "CLOUDINARY_URL",
            "cloudinary://1234:s%2Fcr3t@acme?upload_prefix=https://api-eu.cloudinary.com",
        )])
        .unwrap()
        .storage;
        let StorageBackend::Cloudinary(cloudinary) = storage.backend else {
            panic!("expected cloudinary, got {:?}", storage.backend);
        };
        assert_eq!(
            (
                cloudinary.cloud_name.as_str(),
                cloudinary.api_key.as_str(),
                cloudinary.api_secret.expose()
            ),
            ("acme", "1234", "s/cr3t")
        );
        assert_eq!(cloudinary.upload_prefix.as_str(), "https://api-eu.cloudinary.com/");
        assert_eq!(cloudinary.delivery_prefix.as_str(), "https://res.cloudinary.com/");
        assert_eq!(cloudinary.signature, SignatureAlgorithm::Sha1);
        let error = config(&[
            ("CLOUDINARY_URL", "cloudinary://1234:secret@acme"),
            ("CLOUDINARY_DELIVERY_PREFIX", "ftp://media.example.com"),
        ])
        .unwrap_err();
        assert_eq!(error.var, "CLOUDINARY_DELIVERY_PREFIX");

        // The spec's three variables, one missing: the error names it.
        let error = config(&[("CLOUDINARY_CLOUD_NAME", "acme"), ("CLOUDINARY_API_KEY", "1234")]).unwrap_err();
        assert_eq!(error.var, "CLOUDINARY_API_SECRET");
        let error = config(&[("CLOUDINARY_URL", "cloudinary://1234:topsecret@")]).unwrap_err();
        assert_eq!(error.var, "CLOUDINARY_URL");
        assert!(!error.to_string().contains("topsecret"), "{error}");
    }

    #[test]
    fn s3_needs_a_bucket_both_halves_of_a_key_and_a_public_base_url() {
        let base = [
            ("S3_BUCKET", "renders"),
            ("PUBLIC_BASE_URL", "https://cdn.example.com/"),
        ];
        let storage = config(&base).unwrap().storage;
        let StorageBackend::S3(s3) = storage.backend else {
            panic!("expected s3");
        };
        assert_eq!((s3.bucket.as_str(), s3.region.as_str()), ("renders", "us-east-1"));
        assert_eq!(s3.credentials, None);

        let error = config(&[base[0], base[1], ("S3_ACCESS_KEY_ID", "AKIA")]).unwrap_err();
        assert_eq!(error.var, "S3_SECRET_ACCESS_KEY");
        let error = config(&[("S3_BUCKET", "renders")]).unwrap_err();
        assert_eq!(error.var, "PUBLIC_BASE_URL");
        let error = config(&[("STORAGE_BACKEND", "s3"), base[1]]).unwrap_err();
        assert_eq!(error.var, "S3_BUCKET");
        let error = config(&[base[0], base[1], ("S3_PREFIX", "../up")]).unwrap_err();
        assert_eq!(error.var, "S3_PREFIX");
    }

    #[test]
    fn an_explicit_backend_wins_and_the_fallback_is_parsed() {
        let storage = config(&[
            ("STORAGE_BACKEND", "local"),
            ("CLOUDINARY_URL", "cloudinary://1:2@acme"),
            ("STORAGE_FALLBACK", "local"),
        ])
        .unwrap()
        .storage;
        assert_eq!(storage.backend, StorageBackend::Local);
        assert_eq!(storage.fallback_to_local, Some(true));
        assert_eq!(
            config(&[("STORAGE_BACKEND", "gcs")]).unwrap_err().var,
            "STORAGE_BACKEND"
        );
        assert_eq!(
            config(&[("STORAGE_FALLBACK", "s3")]).unwrap_err().var,
            "STORAGE_FALLBACK"
        );
    }
}
