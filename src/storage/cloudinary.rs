//! Cloudinary: signed multipart uploads to `<upload prefix>/v1_1/<cloud>/<type>/upload`.
//!
//! PNG keys are `image` assets whose public id is the key without `.png` (Cloudinary adds the
//! format); any other key (the result cache's JSON manifests) is a `raw` asset whose public id
//! keeps its extension. Public ids go under `CLOUDINARY_FOLDER` when set, and `overwrite=1`
//! makes a re-run rewrite the same asset. An object is read back by its key through the
//! unversioned delivery URL `<delivery prefix>/<cloud>/<type>/upload/<public id>[.png]`.
//!
//! Every request is signed just before it is sent, retries included (signatures go stale after
//! an hour): the signed parameters sorted by name as `k=v` joined with `&` (each `&` inside a
//! pair escaped as `%26`), the API secret appended, hashed with SHA-1 (or SHA-256).
//!
//! 420, 429, 5xx, timeouts and connection errors are retried a bounded number of times with
//! backoff, then reported as transient. Other 4xx (a bad signature, bad credentials, a bad
//! request) are permanent: logged at ERROR once per distinct message, never retried. The API
//! secret is never logged or put in an error.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::{BlobStore, StorageError, StorageKey, Stored, Transport};
use crate::config::{CloudinaryConfig, SignatureAlgorithm};
use crate::http::Traced;

const NAME: &str = "cloudinary";

pub struct CloudinaryStore {
    client: reqwest::Client,
    config: CloudinaryConfig,
    transport: Transport,
    in_flight: Arc<tokio::sync::Semaphore>,
    /// Permanent failures already logged at ERROR (by message), so a bad secret is one line,
    /// not one per asset.
    reported: Mutex<HashSet<String>>,
}

/// How Cloudinary holds the object of one key.
struct Asset {
    /// `image` or `raw`: a path segment of every endpoint and delivery URL.
    resource_type: &'static str,
    public_id: String,
    /// What delivery URLs append to the public id (`.png` for images, nothing for raw files).
    extension: &'static str,
}

/// A failed attempt: whether another may succeed, and what happened.
enum Failure {
    Transient(String),
    Permanent(String),
}

impl CloudinaryStore {
    pub fn new(config: CloudinaryConfig, transport: Transport) -> Result<Self, reqwest::Error> {
        let client = crate::http::client_builder(transport.connect_timeout, transport.timeout).build()?;
        Ok(Self {
            client,
            config,
            in_flight: Arc::new(tokio::sync::Semaphore::new(transport.max_in_flight.max(1))),
            transport,
            reported: Mutex::new(HashSet::new()),
        })
    }

    /// Where the object of `key` lives: PNGs are images without their extension, anything
    /// else a raw file with it, under the folder.
    fn asset(&self, key: &StorageKey) -> Asset {
        let (resource_type, id, extension) = match key.as_str().strip_suffix(".png") {
            Some(id) => ("image", id, ".png"),
            None => ("raw", key.as_str(), ""),
        };
        let public_id = match &self.config.folder {
            Some(folder) => format!("{folder}/{id}"),
            None => id.to_owned(),
        };
        Asset {
            resource_type,
            public_id,
            extension,
        }
    }

    fn endpoint(&self, asset: &Asset, action: &str) -> String {
        format!(
            "{}/v1_1/{}/{}/{action}",
            self.config.upload_prefix.as_str().trim_end_matches('/'),
            self.config.cloud_name,
            asset.resource_type
        )
    }

    /// The unversioned delivery URL of an asset, which serves its latest version.
    fn delivery_url(&self, key: &StorageKey, asset: &Asset) -> Result<url::Url, StorageError> {
        let text = format!(
            "{}/{}/{}/upload/{}{}",
            self.config.delivery_prefix.as_str().trim_end_matches('/'),
            self.config.cloud_name,
            asset.resource_type,
            asset.public_id,
            asset.extension
        );
        url::Url::parse(&text).map_err(|error| StorageError::Rejected {
            key: key.clone(),
            reason: format!("no delivery URL: {error}"),
        })
    }

    /// Runs `attempt` until it succeeds, fails permanently, or the retries are spent; waits
    /// 250 ms, 500 ms, 1 s, … (plus up to a quarter more) between tries.
    async fn with_retries<T, F, Fut>(&self, key: &StorageKey, mut attempt: F) -> Result<T, StorageError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let mut tries = 0;
        loop {
            let outcome = {
                // Never closed, so acquiring only waits.
                let _permit = self.in_flight.acquire().await.ok();
                attempt().await
            };
            match outcome {
                Ok(value) => return Ok(value),
                Err(Failure::Permanent(reason)) => {
                    self.report_once(&reason);
                    return Err(StorageError::Rejected {
                        key: key.clone(),
                        reason,
                    });
                }
                Err(Failure::Transient(reason)) if tries >= self.transport.retries => {
                    return Err(StorageError::Unavailable {
                        key: key.clone(),
                        reason: format!("{reason} (after {} tries)", tries + 1),
                    });
                }
                Err(Failure::Transient(reason)) => {
                    tracing::debug!("Cloudinary upload of {key} failed, retrying: {reason}");
                    let base = Duration::from_millis(250) * 2u32.saturating_pow(tries.min(8));
                    tokio::time::sleep(base + crate::jitter::jitter(base / 4)).await;
                    tries += 1;
                }
            }
        }
    }

    fn report_once(&self, reason: &str) {
        let first = self
            .reported
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(reason.to_owned());
        if first {
            tracing::error!(
                storage.backend = NAME,
                "Cloudinary refused an upload (check CLOUDINARY_URL or the CLOUDINARY_* variables): {reason}"
            );
        }
    }

    /// The signed parameters of one request, in the order they are sent.
    fn signed(&self, mut params: Vec<(&'static str, String)>) -> Vec<(&'static str, String)> {
        params.push(("timestamp", chrono::Utc::now().timestamp().to_string()));
        let signature = sign(&params, self.config.api_secret.expose(), self.config.signature);
        params.push(("signature", signature));
        params.push(("api_key", self.config.api_key.clone()));
        params
    }

    async fn upload_once(
        &self,
        asset: &Asset,
        bytes: &bytes::Bytes,
        content_type: &'static str,
    ) -> Result<url::Url, Failure> {
        let params = self.signed(vec![
            ("overwrite", "1".to_owned()),
            ("public_id", asset.public_id.clone()),
        ]);
        let form = params
            .into_iter()
            .fold(reqwest::multipart::Form::new(), |form, (name, value)| {
                form.text(name, value)
            });
        // `Bytes` clones share the buffer: a retry sends the same memory again.
        let file = reqwest::multipart::Part::stream_with_length(reqwest::Body::from(bytes.clone()), bytes.len() as u64)
            .file_name(format!("file{}", asset.extension))
            .mime_str(content_type)
            .map_err(|error| Failure::Permanent(format!("invalid content type: {error}")))?;
        let response = self
            .client
            .post(self.endpoint(asset, "upload"))
            .timeout(self.transport.timeout)
            .multipart(form.part("file", file))
            .traced()
            .send()
            .await
            .map_err(|error| Failure::Transient(describe_send_error(error)))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|error| {
            Failure::Transient(format!("reading the answer failed: {}", describe_send_error(error)))
        })?;
        if !status.is_success() {
            return Err(classify(status, &body));
        }
        let answer: UploadAnswer = serde_json::from_slice(&body)
            .map_err(|error| Failure::Transient(format!("answer is not the documented JSON: {error}")))?;
        url::Url::parse(&answer.secure_url)
            .map_err(|error| Failure::Transient(format!("secure_url `{}` is not a URL: {error}", answer.secure_url)))
    }

    async fn destroy_once(&self, asset: &Asset) -> Result<(), Failure> {
        let params = self.signed(vec![
            ("invalidate", "1".to_owned()),
            ("public_id", asset.public_id.clone()),
        ]);
        let form = params
            .into_iter()
            .fold(reqwest::multipart::Form::new(), |form, (name, value)| {
                form.text(name, value)
            });
        let response = self
            .client
            .post(self.endpoint(asset, "destroy"))
            .timeout(self.transport.timeout)
            .multipart(form)
            .traced()
            .send()
            .await
            .map_err(|error| Failure::Transient(describe_send_error(error)))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|error| Failure::Transient(describe_send_error(error)))?;
        if status.is_success() {
            // `{"result":"ok"}`, or `{"result":"not found"}` for what is already gone.
            Ok(())
        } else {
            Err(classify(status, &body))
        }
    }

    /// One GET of a delivery URL; a 404 is an absent object.
    async fn fetch_once(&self, url: &url::Url) -> Result<Option<Vec<u8>>, Failure> {
        let response = self
            .client
            .get(url.clone())
            .timeout(self.transport.timeout)
            .traced()
            .send()
            .await
            .map_err(|error| Failure::Transient(describe_send_error(error)))?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let body = response
            .bytes()
            .await
            .map_err(|error| Failure::Transient(describe_send_error(error)))?;
        if status.is_success() {
            Ok(Some(body.to_vec()))
        } else {
            Err(classify(status, &body))
        }
    }
}

#[derive(serde::Deserialize)]
struct UploadAnswer {
    secure_url: String,
}

#[async_trait::async_trait]
impl BlobStore for CloudinaryStore {
    fn backend(&self) -> &'static str {
        NAME
    }

    async fn put(
        &self,
        key: &StorageKey,
        bytes: bytes::Bytes,
        content_type: &'static str,
    ) -> Result<Stored, StorageError> {
        let asset = self.asset(key);
        let url = self
            .with_retries(key, || self.upload_once(&asset, &bytes, content_type))
            .await?;
        Ok(Stored {
            url,
            backend: NAME,
            fallback: None,
        })
    }

    async fn get(&self, key: &StorageKey, url: &url::Url) -> Result<Option<Vec<u8>>, StorageError> {
        self.with_retries(key, || self.fetch_once(url)).await
    }

    fn reads_by_key(&self) -> bool {
        true
    }

    async fn get_by_key(&self, key: &StorageKey) -> Result<Option<Vec<u8>>, StorageError> {
        let url = self.delivery_url(key, &self.asset(key))?;
        self.with_retries(key, || self.fetch_once(&url)).await
    }

    async fn delete(&self, key: &StorageKey) -> Result<(), StorageError> {
        let asset = self.asset(key);
        self.with_retries(key, || self.destroy_once(&asset)).await
    }
}

/// The request signature: sorted `name=value` pairs (with `&` inside a pair escaped as `%26`),
/// joined with `&`, the secret appended, hashed and written as lowercase hex. `api_key`,
/// `file`, `cloud_name` and `resource_type` are never signed, nor are empty values.
fn sign(params: &[(&'static str, String)], secret: &str, algorithm: SignatureAlgorithm) -> String {
    let mut pairs: Vec<String> = params
        .iter()
        .filter(|(name, value)| {
            !value.is_empty() && !matches!(*name, "api_key" | "file" | "cloud_name" | "resource_type" | "signature")
        })
        .map(|(name, value)| format!("{name}={value}").replace('&', "%26"))
        .collect();
    pairs.sort();
    let text = format!("{}{secret}", pairs.join("&"));
    match algorithm {
        SignatureAlgorithm::Sha1 => {
            use sha1::Digest;
            hex::encode(sha1::Sha1::digest(text.as_bytes()))
        }
        SignatureAlgorithm::Sha256 => {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(text.as_bytes()))
        }
    }
}

/// What a non-success answer means: 420, 429, 423 and 5xx may pass on retry; other 4xx will
/// not. The reason quotes Cloudinary's `error.message` (which never contains the secret).
fn classify(status: reqwest::StatusCode, body: &[u8]) -> Failure {
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        error: ErrorMessage,
    }
    #[derive(serde::Deserialize)]
    struct ErrorMessage {
        message: String,
    }
    let message = serde_json::from_slice::<ErrorBody>(body)
        .map(|body| body.error.message)
        .unwrap_or_else(|_| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned());
    let reason = format!("HTTP {}: {message}", status.as_u16());
    match status.as_u16() {
        420 | 423 | 429 | 500..=599 => Failure::Transient(reason),
        _ => Failure::Permanent(reason),
    }
}

/// A connection-level failure without the URL (which is ours, but keeps messages short).
fn describe_send_error(error: reqwest::Error) -> String {
    if error.is_timeout() {
        "the request timed out".to_owned()
    } else if error.is_connect() {
        "could not connect".to_owned()
    } else {
        format!("the request failed: {}", error.without_url())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(text: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
        text.iter().map(|(name, value)| (*name, (*value).to_owned())).collect()
    }

    #[test]
    fn signatures_match_the_reference_vectors() {
        let sha1 = SignatureAlgorithm::Sha1;
        assert_eq!(
            sign(
                &pairs(&[("timestamp", "1315060510"), ("public_id", "sample_image")]),
                "abcd",
                sha1
            ),
            "b4ad47fb4e25c7bf5f92a20089f9db59bc302313"
        );
        assert_eq!(
            sign(
                &pairs(&[
                    ("public_id", "sample_image"),
                    ("eager", "w_400,h_300,c_pad|w_260,h_200,c_crop"),
                    ("timestamp", "1315060510"),
                ]),
                "abcd",
                sha1
            ),
            "bfd09f95f331f558cbd1320e67aa8d488770583e"
        );
        let upload = pairs(&[
            ("tags", "design,preview"),
            ("folder", "designs/tenant-1"),
            ("overwrite", "1"),
            ("public_id", "design-123_preview"),
            ("timestamp", "1700000000"),
            ("api_key", "1234"),
            ("file", "ignored"),
        ]);
        assert_eq!(
            sign(&upload, "SECRET", sha1),
            "bf849d8c89d61f28091b7028b53db556cf144e47"
        );
        assert_eq!(
            sign(&upload, "SECRET", SignatureAlgorithm::Sha256),
            "a5bc26a138416ea26424ab68337b6b20ffb41868d1e35e5ad60a0d93abdc9c44"
        );
        assert_eq!(
            sign(
                &pairs(&[
                    ("public_id", "designs/tenant-1/design-123_preview"),
                    ("invalidate", "1"),
                    ("timestamp", "1700000000"),
                ]),
                "SECRET",
                sha1
            ),
            "5ff1cda5e06e0db400099839217281287a194ba6"
        );
    }

    #[test]
    fn answers_are_sorted_into_transient_and_permanent() {
        let body = br#"{"error":{"message":"Invalid Signature abc. String to sign - 'public_id=x&timestamp=1'."}}"#;
        match classify(reqwest::StatusCode::UNAUTHORIZED, body) {
            Failure::Permanent(reason) => assert!(reason.starts_with("HTTP 401: Invalid Signature"), "{reason}"),
            Failure::Transient(reason) => panic!("401 is permanent: {reason}"),
        }
        for status in [420, 423, 429, 500, 503] {
            let status = reqwest::StatusCode::from_u16(status).unwrap();
            assert!(matches!(classify(status, b"oops"), Failure::Transient(_)), "{status}");
        }
        assert!(matches!(
            classify(reqwest::StatusCode::BAD_REQUEST, b"{}"),
            Failure::Permanent(_)
        ));
    }
}
