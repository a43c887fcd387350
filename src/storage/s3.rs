//! S3-compatible buckets (AWS, R2, MinIO, Wasabi) through `object_store`.
//!
//! Objects are written under `S3_PREFIX` + key with `Content-Type: image/png` and
//! `Cache-Control: public, max-age=31536000, immutable` (a content-addressed key never changes
//! content). The URL the Design row keeps is `PUBLIC_BASE_URL` + the object key: a CDN or the
//! bucket's website, since presigned URLs expire.
//!
//! `object_store` retries 5xx, 429 and connection failures with backoff up to
//! `STORAGE_RETRIES` times within its own deadline; what is left after that is transient for
//! the job. Missing credentials or permissions and a missing bucket are permanent.

use std::sync::Arc;

use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path;
use object_store::{Attribute, Attributes, ObjectStore, ObjectStoreExt, PutOptions, PutPayload};

use super::{BlobStore, StorageError, StorageKey, Stored, Transport};
use crate::config::S3Config;

const NAME: &str = "s3";

const CACHE_CONTROL: &str = "public, max-age=31536000, immutable";

pub struct S3Store {
    bucket: AmazonS3,
    prefix: Option<String>,
    public_base: url::Url,
    in_flight: Arc<tokio::sync::Semaphore>,
}

impl S3Store {
    /// A client for the bucket; no request is made until the first put.
    pub fn new(config: &S3Config, public_base: url::Url, transport: Transport) -> Result<Self, object_store::Error> {
        crate::http::ensure_tls_provider();
        let client_options = object_store::ClientOptions::new()
            .with_connect_timeout(transport.connect_timeout)
            .with_timeout(transport.timeout);
        let retry = object_store::RetryConfig {
            max_retries: transport.retries as usize,
            retry_timeout: transport.timeout * (transport.retries + 1),
            backoff: object_store::BackoffConfig::default(),
        };
        // `UNSIGNED-PAYLOAD`: the request is still signed, but the body is not hashed into the
        // signature. Hashing costs a SHA-256 pass over every PNG before the first byte is sent
        // (a third of the upload time of a 2048² render on loopback, see BENCHMARKS.md);
        // TLS already protects the body in transit.
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_client_options(client_options)
            .with_retry(retry)
            .with_unsigned_payload(true)
            .with_http_connector(TracedConnector);
        builder = match &config.endpoint {
            // An explicit endpoint: path style when asked, else virtual-hosted on that host.
            Some(endpoint) => {
                let endpoint_text = if config.force_path_style {
                    endpoint.as_str().trim_end_matches('/').to_owned()
                } else {
                    let mut hosted = endpoint.clone();
                    let host = format!("{}.{}", config.bucket, endpoint.host_str().unwrap_or_default());
                    // A bucket name is a valid host label, so this cannot fail for a valid URL.
                    let _ = hosted.set_host(Some(&host));
                    hosted.as_str().trim_end_matches('/').to_owned()
                };
                builder
                    .with_endpoint(endpoint_text)
                    .with_allow_http(endpoint.scheme() == "http")
                    .with_virtual_hosted_style_request(!config.force_path_style)
            }
            None => builder.with_virtual_hosted_style_request(!config.force_path_style),
        };
        if let Some(credentials) = &config.credentials {
            builder = builder
                .with_access_key_id(&credentials.access_key_id)
                .with_secret_access_key(credentials.secret_access_key.expose());
        }
        for (name, value) in &config.aws_chain {
            if let Ok(key) = name.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
                builder = builder.with_config(key, value.expose());
            }
        }
        Ok(Self {
            bucket: builder.build()?,
            prefix: config.prefix.clone(),
            public_base,
            in_flight: Arc::new(tokio::sync::Semaphore::new(transport.max_in_flight.max(1))),
        })
    }

    fn object_key(&self, key: &StorageKey) -> String {
        match &self.prefix {
            Some(prefix) => format!("{prefix}/{key}"),
            None => key.as_str().to_owned(),
        }
    }

    fn error(&self, key: &StorageKey, error: object_store::Error) -> StorageError {
        use object_store::Error;
        let reason = error.to_string();
        match error {
            Error::PermissionDenied { .. }
            | Error::Unauthenticated { .. }
            | Error::InvalidPath { .. }
            | Error::NotSupported { .. }
            | Error::NotImplemented { .. }
            | Error::NotFound { .. } => StorageError::Rejected {
                key: key.clone(),
                reason,
            },
            _ => StorageError::Unavailable {
                key: key.clone(),
                reason,
            },
        }
    }
}

#[async_trait::async_trait]
impl BlobStore for S3Store {
    fn backend(&self) -> &'static str {
        NAME
    }

    async fn put(
        &self,
        key: &StorageKey,
        bytes: bytes::Bytes,
        content_type: &'static str,
    ) -> Result<Stored, StorageError> {
        let object_key = self.object_key(key);
        let url = self
            .public_base
            .join(&object_key)
            .map_err(|error| StorageError::Rejected {
                key: key.clone(),
                reason: format!("PUBLIC_BASE_URL + key is not a URL: {error}"),
            })?;
        let mut attributes = Attributes::new();
        attributes.insert(Attribute::ContentType, content_type.into());
        attributes.insert(Attribute::CacheControl, CACHE_CONTROL.into());
        let options = PutOptions {
            attributes,
            ..PutOptions::default()
        };
        let _permit = self.in_flight.acquire().await.ok();
        // The payload shares the buffer; object_store's retries resend it without copying.
        self.bucket
            .put_opts(&Path::from(object_key), PutPayload::from(bytes), options)
            .await
            .map_err(|error| self.error(key, error))?;
        Ok(Stored {
            url,
            backend: NAME,
            fallback: None,
        })
    }

    async fn get(&self, key: &StorageKey, _url: &url::Url) -> Result<Option<Vec<u8>>, StorageError> {
        self.get_by_key(key).await
    }

    fn reads_by_key(&self) -> bool {
        true
    }

    async fn get_by_key(&self, key: &StorageKey) -> Result<Option<Vec<u8>>, StorageError> {
        let path = Path::from(self.object_key(key));
        let _permit = self.in_flight.acquire().await.ok();
        match self.bucket.get(&path).await {
            Ok(found) => found
                .bytes()
                .await
                .map(|bytes| Some(bytes.to_vec()))
                .map_err(|error| self.error(key, error)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(error) => Err(self.error(key, error)),
        }
    }

    async fn delete(&self, key: &StorageKey) -> Result<(), StorageError> {
        let path = Path::from(self.object_key(key));
        let _permit = self.in_flight.acquire().await.ok();
        match self.bucket.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(self.error(key, error)),
        }
    }
}

/// object_store's reqwest client, with the current span's W3C trace headers added to every
/// request. They are added after signing: S3 checks only the headers a signature lists.
#[derive(Debug, Default)]
struct TracedConnector;

impl object_store::client::HttpConnector for TracedConnector {
    fn connect(&self, options: &object_store::ClientOptions) -> object_store::Result<object_store::client::HttpClient> {
        let inner = object_store::client::ReqwestConnector::default().connect(options)?;
        Ok(object_store::client::HttpClient::new(TracedService(inner)))
    }
}

#[derive(Debug)]
struct TracedService(object_store::client::HttpClient);

#[async_trait::async_trait]
impl object_store::client::HttpService for TracedService {
    async fn call(
        &self,
        mut request: object_store::client::HttpRequest,
    ) -> Result<object_store::client::HttpResponse, object_store::client::HttpError> {
        for (name, value) in crate::telemetry::trace_headers() {
            if let Ok(value) = reqwest::header::HeaderValue::from_str(&value) {
                request.headers_mut().insert(name, value);
            }
        }
        self.0.execute(request).await
    }
}
