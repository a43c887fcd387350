//! Thumbnails for the dashboard: the stored outputs and the job's base, fetched the way the
//! worker itself may fetch (local storage under `STORAGE_DIR` only, HTTP through the SSRF guard
//! of downloads), decoded within the decode limits, scaled down and kept in a small cache. What
//! cannot be fetched becomes a placeholder, so one broken URL never breaks the page.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;

use crate::config::PrivateHostPolicy;
use crate::imaging::codec::{self, DecodeLimits};

/// Entries kept: a page of the renders grid twice over.
const CACHE_ENTRIES: usize = 256;

/// The largest picture fetched for a thumbnail.
const MAX_SOURCE_BYTES: usize = 64 * 1024 * 1024;

/// Shown instead of a picture that could not be fetched or decoded.
pub const PLACEHOLDER_SVG: &str = concat!(
    r##"<svg xmlns="http://www.w3.org/2000/svg" width="256" height="256" viewBox="0 0 256 256">"##,
    r##"<rect width="256" height="256" fill="#e5e7eb"/>"##,
    r##"<path d="M64 184l40-52 32 38 22-26 34 40z" fill="#9ca3af"/><circle cx="170" cy="88" r="16" fill="#9ca3af"/>"##,
    r##"<text x="128" y="232" font-family="sans-serif" font-size="16" text-anchor="middle" fill="#6b7280">not reachable</text>"##,
    "</svg>"
);

/// A picture for the page.
pub enum Picture {
    Png(Bytes),
    /// The placeholder (with why, for the log).
    Unavailable(String),
}

pub struct Thumbnails {
    client: reqwest::Client,
    /// Where local storage keeps assets (`file://` URLs are served only from below it).
    storage_root: Option<PathBuf>,
    limits: DecodeLimits,
    cache: Mutex<VecDeque<(String, Bytes)>>,
}

impl Thumbnails {
    pub fn new(
        policy: &PrivateHostPolicy,
        storage_root: Option<PathBuf>,
        limits: DecodeLimits,
    ) -> Result<Self, reqwest::Error> {
        Ok(Self {
            client: crate::assets::http::guarded_client(policy, None, Duration::from_secs(3), Duration::from_secs(10))?,
            storage_root: storage_root.and_then(|root| root.canonicalize().ok()),
            limits,
            cache: Mutex::new(VecDeque::new()),
        })
    }

    /// `url` scaled to fit `side`² as PNG.
    pub async fn thumbnail(&self, url: &str, side: u32) -> Picture {
        let key = format!("{side} {url}");
        if let Some(hit) = self.cached(&key) {
            return Picture::Png(hit);
        }
        let source = match self.fetch(url).await {
            Ok(source) => source,
            Err(why) => return Picture::Unavailable(why),
        };
        let limits = self.limits;
        let scaled = tokio::task::spawn_blocking(move || scale(&source, side, limits)).await;
        match scaled {
            Ok(Ok(png)) => {
                self.remember(key, png.clone());
                Picture::Png(png)
            }
            Ok(Err(why)) => Picture::Unavailable(why),
            Err(error) => Picture::Unavailable(format!("scaling failed: {error}")),
        }
    }

    fn cached(&self, key: &str) -> Option<Bytes> {
        let cache = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        cache
            .iter()
            .find(|(cached, _)| cached == key)
            .map(|(_, png)| png.clone())
    }

    fn remember(&self, key: String, png: Bytes) {
        let mut cache = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache.len() >= CACHE_ENTRIES {
            cache.pop_front();
        }
        cache.push_back((key, png));
    }

    async fn fetch(&self, url: &str) -> Result<Vec<u8>, String> {
        let parsed = url::Url::parse(url).map_err(|_| "not a URL".to_owned())?;
        match parsed.scheme() {
            "file" => {
                let root = self.storage_root.as_ref().ok_or("no local storage here")?;
                let path = parsed.to_file_path().map_err(|()| "not a local path".to_owned())?;
                let path = tokio::fs::canonicalize(&path)
                    .await
                    .map_err(|error| error.to_string())?;
                if !path.starts_with(root) {
                    return Err("outside STORAGE_DIR".into());
                }
                let bytes = tokio::fs::read(&path).await.map_err(|error| error.to_string())?;
                if bytes.len() > MAX_SOURCE_BYTES {
                    return Err("too large".into());
                }
                Ok(bytes)
            }
            "http" | "https" => {
                let mut response = self
                    .client
                    .get(parsed)
                    .send()
                    .await
                    .and_then(reqwest::Response::error_for_status)
                    .map_err(|error| error.without_url().to_string())?;
                let mut bytes = Vec::new();
                while let Some(chunk) = response
                    .chunk()
                    .await
                    .map_err(|error| error.without_url().to_string())?
                {
                    if bytes.len() + chunk.len() > MAX_SOURCE_BYTES {
                        return Err("too large".into());
                    }
                    bytes.extend_from_slice(&chunk);
                }
                Ok(bytes)
            }
            other => Err(format!("`{other}` URLs are not fetched")),
        }
    }
}

fn scale(source: &[u8], side: u32, limits: DecodeLimits) -> Result<Bytes, String> {
    let image = codec::decode_rgba(source, limits).map_err(|error| error.to_string())?;
    let (width, height) = image.dimensions();
    let factor = f64::from(side) / f64::from(width.max(height).max(1));
    let image = if factor < 1.0 {
        let fit = |length: u32| ((f64::from(length) * factor).round() as u32).max(1);
        crate::imaging::resize::resize_rgba(&image, fit(width), fit(height))
    } else {
        image
    };
    codec::encode_rgba_png(&image)
        .map(Bytes::from)
        .map_err(|error| error.to_string())
}
