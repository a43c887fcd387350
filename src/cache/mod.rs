//! The result cache: a render whose inputs, options and provider match an earlier render of
//! the same tenant reuses that render's outputs instead of paying a provider again.
//!
//! It owns the key ([`ResultCache::key`]: SHA-256 over the tenant, the sanitized prompt, the
//! bytes of base and mask, the options, the imaging settings, the provider asked first with its
//! model and settings, and [`PIPELINE_VERSION`]), the [`Manifest`] an entry holds, and the
//! protocol that keeps two workers from paying twice for one key: the first to miss takes a
//! short lock ([`Claim`], renewed while it renders), the others wait for its manifest, or take
//! the lock themselves when it is released or expires without one (the holder failed or died).
//!
//! Where entries live is the [`CacheIndex`] port: Redis for the fleet (every worker sees it),
//! memory for the one-shot command. Every manifest is also written to the blob store beside
//! the assets when the backend reads by key (local disk, S3), so losing the index loses only
//! speed: a miss in the index reads the durable copy and puts it back.
//!
//! The cache never fails a render: when the index or the blob store cannot be reached, the
//! render goes on as a miss and the problem is logged.

pub mod memory;
pub mod redis;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::config::ImagingConfig;
use crate::job::{RenderOptions, TenantId};
use crate::pipeline::Progress;
use crate::pipeline::metadata::Sizes;
use crate::providers::EditorIdentity;
use crate::storage::{BlobStore, StorageKey};

/// Changes whenever a change of the code makes the same inputs give other output bytes, so
/// entries written before it are never reused. 2: the banded PNG encoder.
pub const PIPELINE_VERSION: u32 = 2;

/// How long a lock lives without renewal. The holder renews it every third of this while it
/// renders, so a worker that dies frees the key this long after its last renewal.
const LOCK_TTL: Duration = Duration::from_secs(30);

/// How often a waiting worker looks for the holder's manifest.
const POLL: Duration = Duration::from_millis(200);

/// The longest a worker waits for another one's render of the same key before rendering
/// itself (a render that takes longer than this is stuck, even at OpenAI's slowest).
const MAX_WAIT: Duration = Duration::from_secs(600);

/// A cache key: 64 lowercase hex digits of SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey(String);

impl CacheKey {
    /// A key from its 64 hex digits (lowercase), as printed.
    pub fn from_hex(text: &str) -> Option<Self> {
        (text.len() == 64 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
            .then(|| Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Where the durable copy of the manifest is kept in the blob store, beside the tenant's
    /// renders.
    fn manifest_key(&self, tenant: &TenantId) -> Option<StorageKey> {
        StorageKey::parse(&format!("cache/{tenant}/{}.json", self.0)).ok()
    }
}

impl std::fmt::Display for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Everything of one render that decides its outputs, apart from the provider.
pub struct KeyInputs<'a> {
    pub tenant: &'a TenantId,
    /// The sanitized prompt: what the provider would be sent.
    pub prompt: &'a str,
    pub base: &'a [u8],
    pub mask: Option<&'a [u8]>,
    pub options: &'a RenderOptions,
    pub imaging: &'a ImagingConfig,
}

/// What one entry holds: where the outputs are and the facts a reusing render reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub version: u32,
    pub key: String,
    pub tenant_id: String,
    /// The design whose render made the outputs.
    pub source_design_id: String,
    pub provider: String,
    pub prompt_used: bool,
    pub provider_details: serde_json::Value,
    pub composite_texture_url: String,
    pub high_res_url: String,
    pub preview_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normal_map_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roughness_map_url: Option<String>,
    pub sizes: Sizes,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask_coverage: Option<f64>,
    /// What the provider call behind the outputs cost: what every reuse saves.
    pub cost_micro_cents: u64,
    /// RFC 3339; a durable copy older than the TTL is not used.
    pub created_at: String,
}

/// Why the index could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("result cache index unavailable: {0}")]
pub struct CacheError(pub String);

/// Where entries and locks live. Entries expire after their TTL; a lock is held by one token
/// until it is released or expires.
#[async_trait::async_trait]
pub trait CacheIndex: Send + Sync {
    async fn read(&self, key: &CacheKey) -> Result<Option<String>, CacheError>;

    async fn write(&self, key: &CacheKey, manifest: &str, ttl: Duration) -> Result<(), CacheError>;

    /// Takes the lock of `key` for `token` when nobody holds it. True when taken.
    async fn try_lock(&self, key: &CacheKey, token: &str, ttl: Duration) -> Result<bool, CacheError>;

    /// Extends the lock while `token` still holds it. True when it did.
    async fn renew_lock(&self, key: &CacheKey, token: &str, ttl: Duration) -> Result<bool, CacheError>;

    /// Releases the lock if `token` holds it; another holder's lock is left alone.
    async fn unlock(&self, key: &CacheKey, token: &str) -> Result<(), CacheError>;

    async fn is_locked(&self, key: &CacheKey) -> Result<bool, CacheError>;
}

/// The answer of [`ResultCache::lookup`].
pub enum Lookup {
    /// An earlier render's outputs: reuse them.
    Hit(Box<Manifest>),
    /// Render. With a claim, this worker holds the key's lock and others wait for its
    /// [`ResultCache::store`]; without one, the index could not be used or the wait ran out.
    Miss(Option<Claim>),
}

/// The lock of one key, renewed in the background until it is dropped; dropping it releases it.
pub struct Claim {
    key: CacheKey,
    token: String,
    index: Arc<dyn CacheIndex>,
    renewal: tokio::task::JoinHandle<()>,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.renewal.abort();
        let (index, key, token) = (
            Arc::clone(&self.index),
            self.key.clone(),
            std::mem::take(&mut self.token),
        );
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(error) = index.unlock(&key, &token).await {
                    tracing::warn!("releasing the result cache lock of {key}: {error}; it expires by itself");
                }
            });
        }
    }
}

/// The cache as the pipeline uses it: keys, lookups with the lock protocol, stores.
pub struct ResultCache {
    index: Arc<dyn CacheIndex>,
    blobs: Arc<dyn BlobStore>,
    identity: EditorIdentity,
    ttl: Duration,
}

impl ResultCache {
    /// A cache for the editor that `identity` describes (the provider asked first).
    pub fn new(index: Arc<dyn CacheIndex>, blobs: Arc<dyn BlobStore>, identity: EditorIdentity, ttl: Duration) -> Self {
        Self {
            index,
            blobs,
            identity,
            ttl,
        }
    }

    /// The provider whose images the entries hold; an image from another provider (a later
    /// one of a fallback chain) is never stored.
    pub fn provider(&self) -> &'static str {
        self.identity.provider
    }

    pub fn key(&self, inputs: &KeyInputs<'_>) -> CacheKey {
        let digest = |bytes: &[u8]| hex::encode(sha2::Sha256::digest(bytes));
        let options = inputs.options;
        let document = serde_json::json!({
            "pipeline": PIPELINE_VERSION,
            "tenant": inputs.tenant.as_str(),
            "prompt": inputs.prompt,
            "base": digest(inputs.base),
            "mask": inputs.mask.map(digest),
            "options": {
                "size": options.size.to_string(),
                "quality": options.quality.as_str(),
                "fit": options.fit.as_str(),
                "normalMap": options.normal_map,
                "roughnessMap": options.roughness_map,
            },
            "imaging": {
                "previewSize": inputs.imaging.preview_size,
                "normalStrength": inputs.imaging.normal_strength,
                "featherRadius": inputs.imaging.feather_radius,
                "pngLevel": inputs.imaging.png_level,
            },
            "provider": self.identity,
        });
        CacheKey(digest(document.to_string().as_bytes()))
    }

    /// Finds the entry of `key`, or decides who renders it. Waits while another worker holds
    /// the key's lock, until its manifest appears, its lock goes, `progress` asks to stop or
    /// the wait runs out.
    pub async fn lookup(&self, key: &CacheKey, tenant: &TenantId, progress: &dyn Progress) -> Lookup {
        let waited = tokio::time::Instant::now();
        loop {
            match self.find(key, tenant).await {
                Ok(Some(manifest)) => {
                    metrics::counter!("design_render_result_cache_lookups_total", "outcome" => "hit").increment(1);
                    metrics::counter!("design_render_result_cache_saved_microcents_total")
                        .increment(manifest.cost_micro_cents);
                    return Lookup::Hit(Box::new(manifest));
                }
                Ok(None) => {}
                Err(error) => return self.miss(Some(error)),
            }
            let token = crate::jitter::unique_hex();
            match self.index.try_lock(key, &token, LOCK_TTL).await {
                Ok(true) => {
                    let renewal = tokio::spawn(renew(Arc::clone(&self.index), key.clone(), token.clone()));
                    metrics::counter!("design_render_result_cache_lookups_total", "outcome" => "miss").increment(1);
                    return Lookup::Miss(Some(Claim {
                        key: key.clone(),
                        token,
                        index: Arc::clone(&self.index),
                        renewal,
                    }));
                }
                Ok(false) => {}
                Err(error) => return self.miss(Some(error)),
            }
            // Another worker renders this key: wait for its manifest or for its lock to go.
            tracing::info!("another worker is rendering the same inputs; waiting for it (result cache key {key})");
            loop {
                if progress.stop().is_some() || waited.elapsed() > MAX_WAIT {
                    return self.miss(None);
                }
                tokio::time::sleep(POLL).await;
                match self.index.read(key).await {
                    Ok(Some(_)) => break,
                    Ok(None) => {}
                    Err(error) => return self.miss(Some(error)),
                }
                match self.index.is_locked(key).await {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(error) => return self.miss(Some(error)),
                }
            }
        }
    }

    fn miss(&self, error: Option<CacheError>) -> Lookup {
        if let Some(error) = error {
            tracing::warn!("{error}; rendering without the cache");
        }
        metrics::counter!("design_render_result_cache_lookups_total", "outcome" => "miss").increment(1);
        Lookup::Miss(None)
    }

    /// The entry from the index, else from its durable copy (put back into the index).
    async fn find(&self, key: &CacheKey, tenant: &TenantId) -> Result<Option<Manifest>, CacheError> {
        if let Some(text) = self.index.read(key).await? {
            return Ok(self.accept(key, tenant, &text));
        }
        let Some(stored) = key.manifest_key(tenant).filter(|_| self.blobs.reads_by_key()) else {
            return Ok(None);
        };
        let bytes = match self.blobs.get_by_key(&stored).await {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return Ok(None),
            Err(error) => {
                tracing::warn!("reading the durable result cache manifest {stored}: {error}");
                return Ok(None);
            }
        };
        let Some((text, manifest)) = String::from_utf8(bytes)
            .ok()
            .and_then(|text| self.accept(key, tenant, &text).map(|manifest| (text, manifest)))
        else {
            return Ok(None);
        };
        let age = chrono::DateTime::parse_from_rfc3339(&manifest.created_at)
            .ok()
            .and_then(|created| (chrono::Utc::now() - created.to_utc()).to_std().ok());
        let Some(remaining) = age
            .and_then(|age| self.ttl.checked_sub(age))
            .filter(|left| !left.is_zero())
        else {
            return Ok(None);
        };
        self.index.write(key, &text, remaining).await?;
        Ok(Some(manifest))
    }

    /// A manifest that parses and belongs to this key and tenant; anything else is a miss.
    fn accept(&self, key: &CacheKey, tenant: &TenantId, text: &str) -> Option<Manifest> {
        let manifest: Manifest = serde_json::from_str(text)
            .inspect_err(|error| tracing::warn!("result cache entry {key} does not parse: {error}"))
            .ok()?;
        (manifest.version == PIPELINE_VERSION && manifest.key == key.as_str() && manifest.tenant_id == tenant.as_str())
            .then_some(manifest)
    }

    /// Writes the entry to the index and its durable copy, then releases the claim, so the
    /// workers waiting for it find it.
    pub async fn store(&self, claim: Option<Claim>, tenant: &TenantId, manifest: &Manifest) {
        let key = CacheKey(manifest.key.clone());
        let text = match serde_json::to_string(manifest) {
            Ok(text) => text,
            Err(error) => {
                tracing::warn!("result cache manifest not serialisable: {error}");
                return;
            }
        };
        // The index first: the workers waiting for this key poll it.
        if let Err(error) = self.index.write(&key, &text, self.ttl).await {
            tracing::warn!("{error}; the render of {key} is not cached");
        }
        if let Some(stored) = key.manifest_key(tenant).filter(|_| self.blobs.reads_by_key()) {
            // The buffer moves into the put: no copy of the manifest.
            if let Err(error) = self
                .blobs
                .put(&stored, text.into_bytes().into(), "application/json")
                .await
            {
                tracing::warn!("writing the durable result cache manifest {stored}: {error}");
            }
        }
        drop(claim);
    }
}

/// Keeps a claim's lock alive until the claim is dropped (which aborts this task).
async fn renew(index: Arc<dyn CacheIndex>, key: CacheKey, token: String) {
    let mut ticks = tokio::time::interval(LOCK_TTL / 3);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        match index.renew_lock(&key, &token, LOCK_TTL).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!("the result cache lock of {key} was lost; another worker may render it too");
                return;
            }
            Err(error) => tracing::warn!("renewing the result cache lock of {key}: {error}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{Quality, RenderOptions};

    fn identity(provider: &'static str) -> EditorIdentity {
        EditorIdentity {
            provider,
            model: "m".into(),
            settings: "s".into(),
            deterministic: true,
        }
    }

    fn cache(provider: &'static str) -> ResultCache {
        ResultCache::new(
            Arc::new(memory::MemoryCacheIndex::default()),
            Arc::new(crate::storage::memory::MemoryBlobStore::new()),
            identity(provider),
            Duration::from_secs(60),
        )
    }

    fn manifest(key: &CacheKey, tenant: &TenantId) -> Manifest {
        Manifest {
            version: PIPELINE_VERSION,
            key: key.to_string(),
            tenant_id: tenant.to_string(),
            source_design_id: "design-1".into(),
            provider: "builtin".into(),
            prompt_used: false,
            provider_details: serde_json::Value::Null,
            composite_texture_url: "memory://blobs/composite.png".into(),
            high_res_url: "memory://blobs/highres.png".into(),
            preview_url: "memory://blobs/preview.png".into(),
            normal_map_url: None,
            roughness_map_url: None,
            sizes: serde_json::from_value(serde_json::json!({
                "base": [64, 64], "composite": [64, 64], "fit": "inside", "highRes": [64, 64],
                "preview": [32, 32], "bytes": {"composite": 1, "highRes": 1, "preview": 1}
            }))
            .unwrap(),
            mask_coverage: Some(0.1),
            cost_micro_cents: 1_000,
            created_at: chrono::Utc::now().to_rfc3339(),
        }
    }

    /// Two renders of one key on one index: the second waits while the first holds the lock,
    /// then reuses what it stored; a holder that fails lets the next one render.
    #[tokio::test(start_paused = true)]
    async fn a_second_lookup_waits_for_the_holder_and_takes_over_when_it_fails() {
        let index: Arc<dyn CacheIndex> = Arc::new(memory::MemoryCacheIndex::default());
        let blobs = Arc::new(crate::storage::memory::MemoryBlobStore::new());
        let worker = || {
            ResultCache::new(
                Arc::clone(&index),
                blobs.clone(),
                identity("builtin"),
                Duration::from_secs(60),
            )
        };
        let (first, second) = (worker(), worker());
        let tenant = TenantId::parse("tenant-1").unwrap();
        let key = CacheKey::from_hex(&"e".repeat(64)).unwrap();
        let silent = crate::pipeline::Silent;

        let Lookup::Miss(Some(claim)) = first.lookup(&key, &tenant, &silent).await else {
            panic!("the first lookup must claim the key");
        };
        let waiting = second.lookup(&key, &tenant, &silent);
        tokio::pin!(waiting);
        // The second lookup waits as long as the claim is held (and renewed).
        assert!(
            tokio::time::timeout(LOCK_TTL * 3, &mut waiting).await.is_err(),
            "the second lookup did not wait for the holder"
        );
        first.store(Some(claim), &tenant, &manifest(&key, &tenant)).await;
        match waiting.await {
            Lookup::Hit(found) => assert_eq!(found.source_design_id, "design-1"),
            Lookup::Miss(_) => panic!("the stored manifest was not found"),
        }

        let other = CacheKey::from_hex(&"f".repeat(64)).unwrap();
        let Lookup::Miss(Some(failing)) = first.lookup(&other, &tenant, &silent).await else {
            panic!("the first lookup must claim the key");
        };
        let waiting = second.lookup(&other, &tenant, &silent);
        tokio::pin!(waiting);
        assert!(tokio::time::timeout(POLL * 5, &mut waiting).await.is_err());
        // The holder's render failed: dropping its claim frees the key for the waiter.
        drop(failing);
        match waiting.await {
            Lookup::Miss(Some(_)) => {}
            Lookup::Miss(None) => panic!("the waiter rendered without the lock"),
            Lookup::Hit(_) => panic!("a failed render left an entry"),
        }
    }

    /// A manifest of another tenant under the key is never served, and an entry found only in
    /// the blob store (the index lost) is served and put back.
    #[tokio::test(start_paused = true)]
    async fn entries_are_checked_against_the_tenant_and_restored_from_the_blob_store() {
        let index: Arc<dyn CacheIndex> = Arc::new(memory::MemoryCacheIndex::default());
        let blobs = Arc::new(crate::storage::memory::MemoryBlobStore::new());
        let cache = ResultCache::new(
            Arc::clone(&index),
            blobs.clone(),
            identity("builtin"),
            Duration::from_secs(60),
        );
        let (tenant, other) = (
            TenantId::parse("tenant-1").unwrap(),
            TenantId::parse("tenant-2").unwrap(),
        );
        let key = CacheKey::from_hex(&"a".repeat(64)).unwrap();
        let silent = crate::pipeline::Silent;
        index
            .write(
                &key,
                &serde_json::to_string(&manifest(&key, &other)).unwrap(),
                Duration::from_secs(60),
            )
            .await
            .unwrap();
        assert!(matches!(cache.lookup(&key, &tenant, &silent).await, Lookup::Miss(_)));

        let durable = CacheKey::from_hex(&"b".repeat(64)).unwrap();
        cache.store(None, &tenant, &manifest(&durable, &tenant)).await;
        let lost_index: Arc<dyn CacheIndex> = Arc::new(memory::MemoryCacheIndex::default());
        let restarted = ResultCache::new(
            Arc::clone(&lost_index),
            blobs,
            identity("builtin"),
            Duration::from_secs(60),
        );
        assert!(matches!(
            restarted.lookup(&durable, &tenant, &silent).await,
            Lookup::Hit(_)
        ));
        assert!(
            lost_index.read(&durable).await.unwrap().is_some(),
            "the entry was not put back"
        );
    }

    #[test]
    fn every_input_that_shapes_the_outputs_changes_the_key() {
        let tenant = TenantId::parse("tenant-1").unwrap();
        let other_tenant = TenantId::parse("tenant-2").unwrap();
        let options = RenderOptions::default();
        let imaging = ImagingConfig::default();
        let base = vec![1u8, 2, 3];
        let mask = vec![0u8, 255];
        let inputs = KeyInputs {
            tenant: &tenant,
            prompt: "brick",
            base: &base,
            mask: Some(&mask),
            options: &options,
            imaging: &imaging,
        };
        let cache = cache("builtin");
        let key = cache.key(&inputs);
        assert_eq!(key.as_str().len(), 64);
        assert_eq!(key, cache.key(&inputs), "the key is a function of its inputs");
        let changed_base = [1u8, 2, 4];
        let changed_mask = [0u8, 254];
        let hd = RenderOptions {
            quality: Quality::Hd,
            ..RenderOptions::default()
        };
        let with_map = RenderOptions {
            normal_map: true,
            ..RenderOptions::default()
        };
        let wider_feather = ImagingConfig {
            feather_radius: 5,
            ..ImagingConfig::default()
        };
        let smaller_files = ImagingConfig {
            png_level: 6,
            ..ImagingConfig::default()
        };
        let variants = [
            KeyInputs {
                tenant: &other_tenant,
                ..inputs
            },
            KeyInputs {
                prompt: "bricks",
                ..inputs
            },
            KeyInputs {
                base: &changed_base,
                ..inputs
            },
            KeyInputs {
                mask: Some(&changed_mask),
                ..inputs
            },
            KeyInputs { mask: None, ..inputs },
            KeyInputs { options: &hd, ..inputs },
            KeyInputs {
                options: &with_map,
                ..inputs
            },
            KeyInputs {
                imaging: &wider_feather,
                ..inputs
            },
            KeyInputs {
                imaging: &smaller_files,
                ..inputs
            },
        ];
        let mut keys: Vec<CacheKey> = variants.iter().map(|variant| cache.key(variant)).collect();
        keys.push(self::cache("openai").key(&inputs));
        for (index, variant) in keys.iter().enumerate() {
            assert_ne!(variant, &key, "variant {index} kept the key");
        }
        let distinct: std::collections::HashSet<_> = keys.iter().collect();
        assert_eq!(distinct.len(), keys.len());
    }
}
