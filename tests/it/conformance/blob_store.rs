//! The [`BlobStore`] contract, run against every backend: Cloudinary (a loopback mock that
//! checks signatures), S3 (a real moto server), local disk, memory, the local fallback and the
//! fault injector with an empty plan; then the fault injector's own plans.
//!
//! Besides the port's own `get`, each fixture reads an object back its own way
//! ([`BlobStoreUnderTest::stored`]): the local store from disk, S3 with a plain HTTP GET, the
//! Cloudinary mock from what it received, the memory store with `blob`.

use std::sync::Arc;

use bytes::Bytes;
use design_render::job::{DesignId, TenantId};
use design_render::storage::{AssetKind, BlobStore, StorageKey};

#[async_trait::async_trait]
pub trait BlobStoreUnderTest: Send + Sync {
    fn store(&self) -> Arc<dyn BlobStore>;

    /// The bytes the backend holds for `key`, which a put answered with `url`, read without
    /// the port.
    async fn stored(&self, key: &StorageKey, url: &url::Url) -> Option<Vec<u8>>;

    /// Whether a second put of a key answers with the same URL. Cloudinary's `secure_url`
    /// carries the upload's version, so each put of a key has its own (every one of them
    /// serves the asset).
    fn stable_urls(&self) -> bool {
        true
    }
}

fn key(text: &str) -> StorageKey {
    StorageKey::parse(text).expect("valid key")
}

fn asset_key(tenant: &str, design: &str, kind: AssetKind) -> StorageKey {
    StorageKey::for_asset(
        &TenantId::parse(tenant).expect("tenant"),
        &DesignId::parse(design).expect("design"),
        kind,
        b"content",
    )
}

pub async fn a_put_returns_a_url_for_the_key_and_stores_the_bytes(subject: &dyn BlobStoreUnderTest) {
    let store = subject.store();
    let preview = asset_key("tenant-a", "d-1", AssetKind::Preview);
    let stored = store
        .put(&preview, Bytes::from_static(b"png bytes"), "image/png")
        .await
        .expect("put succeeds");
    assert!(
        stored.url.path().ends_with(preview.as_str()),
        "{} does not end with the key {preview}",
        stored.url
    );
    assert_eq!((stored.backend, stored.fallback), (store.backend(), None));
    assert_eq!(
        subject.stored(&preview, &stored.url).await.as_deref(),
        Some(&b"png bytes"[..])
    );
    assert_eq!(
        store.get(&preview, &stored.url).await.expect("get").as_deref(),
        Some(&b"png bytes"[..])
    );
    assert!(store.reads_by_key(), "every backend here reads objects by key");
    assert_eq!(
        store.get_by_key(&preview).await.expect("get by key").as_deref(),
        Some(&b"png bytes"[..])
    );
    let absent = asset_key("tenant-a", "d-404", AssetKind::Preview);
    assert_eq!(store.get_by_key(&absent).await.expect("get by key"), None);
}

/// The result cache keeps JSON manifests beside the images and reads them back by key alone.
pub async fn a_json_object_is_read_back_by_its_key_apart_from_an_image_of_the_same_name(
    subject: &dyn BlobStoreUnderTest,
) {
    let store = subject.store();
    let name = "cache/tenant-a/5f0c7a3e9b2d4c18a6e1f0b9d8c7a6e5f4d3c2b1a0918273645546372819a0b1";
    let (manifest, image) = (key(&format!("{name}.json")), key(&format!("{name}.png")));
    let body = br#"{"designId":"d-1","composite":"https://cdn.example.com/c.png"}"#;
    let stored = store
        .put(&manifest, Bytes::from_static(body), "application/json")
        .await
        .expect("put succeeds");
    store
        .put(&image, Bytes::from_static(b"png bytes"), "image/png")
        .await
        .expect("put succeeds");
    assert_eq!(subject.stored(&manifest, &stored.url).await.as_deref(), Some(&body[..]));
    assert_eq!(
        store.get_by_key(&manifest).await.expect("get by key").as_deref(),
        Some(&body[..])
    );
    assert_eq!(
        store.get_by_key(&image).await.expect("get by key").as_deref(),
        Some(&b"png bytes"[..])
    );
    store.delete(&manifest).await.expect("delete");
    assert_eq!(store.get_by_key(&manifest).await.expect("get by key"), None);
    assert_eq!(
        store.get_by_key(&image).await.expect("get by key").as_deref(),
        Some(&b"png bytes"[..]),
        "deleting the manifest took the image with it"
    );
}

pub async fn a_second_put_of_a_key_replaces_the_bytes(subject: &dyn BlobStoreUnderTest) {
    let store = subject.store();
    let composite = key("renders/tenant-a/d-1/composite-00.png");
    let first = store
        .put(&composite, vec![1; 4096].into(), "image/png")
        .await
        .expect("first put");
    let second = store
        .put(&composite, Bytes::from_static(b"short"), "image/png")
        .await
        .expect("second put");
    if subject.stable_urls() {
        assert_eq!(first.url, second.url, "a re-run job must get the same URL");
    }
    // Shorter than the first object: nothing of it may remain.
    assert_eq!(
        subject.stored(&composite, &second.url).await.as_deref(),
        Some(&b"short"[..])
    );
}

pub async fn distinct_keys_do_not_collide(subject: &dyn BlobStoreUnderTest) {
    let store = subject.store();
    let keys = [
        asset_key("tenant-a", "d-1", AssetKind::Preview),
        asset_key("tenant-a", "d-1", AssetKind::Composite),
        asset_key("tenant-a", "d-2", AssetKind::Preview),
        asset_key("tenant-b", "d-1", AssetKind::Preview),
        key("renders/tenant-a/d-1/preview-00.png.bak"),
    ];
    let mut urls = Vec::new();
    for (index, key) in keys.iter().enumerate() {
        let stored = store
            .put(key, format!("object {index}").into_bytes().into(), "image/png")
            .await
            .expect("put succeeds");
        urls.push(stored.url);
    }
    for (index, (key, url)) in keys.iter().zip(&urls).enumerate() {
        assert_eq!(
            subject.stored(key, url).await,
            Some(format!("object {index}").into_bytes()),
            "{key} was overwritten"
        );
    }
    let mut distinct = urls.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), urls.len(), "two keys share a URL: {urls:?}");
}

pub async fn concurrent_puts_of_one_key_all_succeed(subject: &dyn BlobStoreUnderTest) {
    let store = subject.store();
    let shared = asset_key("tenant-a", "d-1", AssetKind::HighRes);
    let writers: Vec<_> = (0..16u8)
        .map(|writer| {
            let (store, shared) = (Arc::clone(&store), shared.clone());
            tokio::spawn(async move { store.put(&shared, vec![writer; 64 * 1024].into(), "image/png").await })
        })
        .collect();
    let mut urls = Vec::new();
    for writer in writers {
        urls.push(writer.await.expect("writer task").expect("every put succeeds").url);
    }
    if subject.stable_urls() {
        assert!(urls.windows(2).all(|pair| pair[0] == pair[1]), "{urls:?}");
    }
    // The object is one writer's bytes in full, never a mix.
    let stored = subject.stored(&shared, &urls[0]).await.expect("object stored");
    assert_eq!(stored.len(), 64 * 1024);
    assert!(
        stored.iter().all(|byte| *byte == stored[0]),
        "bytes of two writers mixed"
    );
}

pub async fn a_deleted_object_is_gone_and_deleting_again_succeeds(subject: &dyn BlobStoreUnderTest) {
    let store = subject.store();
    let normal = asset_key("tenant-a", "d-3", AssetKind::NormalMap);
    let stored = store
        .put(&normal, Bytes::from_static(b"normal"), "image/png")
        .await
        .expect("put succeeds");
    store.delete(&normal).await.expect("delete");
    assert_eq!(store.get(&normal, &stored.url).await.expect("get"), None);
    assert_eq!(subject.stored(&normal, &stored.url).await, None);
    store.delete(&normal).await.expect("deleting what is gone succeeds");
}

/// One multi-threaded test per suite function for an adapter module that defines
/// `async fn open() -> impl BlobStoreUnderTest`.
macro_rules! blob_store_conformance {
    () => {
        blob_store_conformance!(
            a_put_returns_a_url_for_the_key_and_stores_the_bytes,
            a_json_object_is_read_back_by_its_key_apart_from_an_image_of_the_same_name,
            a_second_put_of_a_key_replaces_the_bytes,
            distinct_keys_do_not_collide,
            concurrent_puts_of_one_key_all_succeed,
            a_deleted_object_is_gone_and_deleting_again_succeeds,
        );
    };
    ($($test:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                super::$test(&open().await).await;
            }
        )*
    };
}

mod local {
    use std::sync::Arc;

    use design_render::storage::local::LocalStore;
    use design_render::storage::{BlobStore, StorageKey};

    use super::BlobStoreUnderTest;

    struct Local {
        store: Arc<LocalStore>,
        _dir: tempfile::TempDir,
    }

    #[async_trait::async_trait]
    impl BlobStoreUnderTest for Local {
        fn store(&self) -> Arc<dyn BlobStore> {
            self.store.clone()
        }

        async fn stored(&self, _key: &StorageKey, url: &url::Url) -> Option<Vec<u8>> {
            let path = url.to_file_path().ok()?;
            assert!(
                path.starts_with(self.store.root()),
                "{} is outside the root",
                path.display()
            );
            std::fs::read(path).ok()
        }
    }

    async fn open() -> Local {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(LocalStore::new(dir.path(), None).expect("local store"));
        Local { store, _dir: dir }
    }

    blob_store_conformance!();
}

mod memory {
    use std::sync::Arc;

    use design_render::storage::memory::MemoryBlobStore;
    use design_render::storage::{BlobStore, StorageKey};

    use super::BlobStoreUnderTest;

    struct Memory(Arc<MemoryBlobStore>);

    #[async_trait::async_trait]
    impl BlobStoreUnderTest for Memory {
        fn store(&self) -> Arc<dyn BlobStore> {
            self.0.clone()
        }

        async fn stored(&self, key: &StorageKey, url: &url::Url) -> Option<Vec<u8>> {
            assert_eq!(url, &MemoryBlobStore::url_of(key).expect("url"));
            self.0.blob(key).map(|blob| blob.bytes.to_vec())
        }
    }

    async fn open() -> Memory {
        Memory(Arc::new(MemoryBlobStore::new()))
    }

    blob_store_conformance!();
}

/// Signed uploads to the loopback Cloudinary, which refuses any request whose signature is off.
mod cloudinary {
    use std::sync::Arc;
    use std::time::Duration;

    use design_render::config::CloudinaryConfig;
    use design_render::storage::cloudinary::CloudinaryStore;
    use design_render::storage::{BlobStore, StorageKey, Transport};

    use super::BlobStoreUnderTest;
    use crate::helpers::cloudinary::{API_SECRET, CLOUD, CloudinaryMock};

    struct Cloudinary {
        mock: CloudinaryMock,
        store: Arc<CloudinaryStore>,
    }

    #[async_trait::async_trait]
    impl BlobStoreUnderTest for Cloudinary {
        fn store(&self) -> Arc<dyn BlobStore> {
            self.store.clone()
        }

        async fn stored(&self, key: &StorageKey, url: &url::Url) -> Option<Vec<u8>> {
            let (resource_type, public_id) = match key.as_str().strip_suffix(".png") {
                Some(id) => ("image", id),
                None => ("raw", key.as_str()),
            };
            let held = self.mock.held(resource_type, &format!("folder/{public_id}"));
            if held.is_some() {
                assert!(
                    url.path().starts_with(&format!("/{CLOUD}/{resource_type}/upload/v")),
                    "{url}"
                );
            }
            assert!(
                self.mock.upload_statuses().iter().all(|status| *status == 200),
                "an upload was refused: {:?}",
                self.mock.upload_statuses()
            );
            held
        }

        fn stable_urls(&self) -> bool {
            false
        }
    }

    pub fn open_store(mock: &CloudinaryMock, secret: &str) -> CloudinaryStore {
        design_render::http::ensure_tls_provider();
        CloudinaryStore::new(
            CloudinaryConfig {
                folder: Some("folder".into()),
                ..mock.storage(secret)
            },
            Transport {
                connect_timeout: Duration::from_secs(2),
                timeout: Duration::from_secs(10),
                retries: 2,
                max_in_flight: 4,
            },
        )
        .expect("client")
    }

    async fn open() -> Cloudinary {
        let mock = CloudinaryMock::start().await;
        let store = Arc::new(open_store(&mock, API_SECRET));
        Cloudinary { mock, store }
    }

    blob_store_conformance!();
}

/// A real S3-compatible server (moto) on loopback, one bucket per test, under a key prefix.
mod s3 {
    use std::sync::Arc;
    use std::time::Duration;

    use design_render::config::{S3Config, S3Credentials, Secret};
    use design_render::storage::s3::S3Store;
    use design_render::storage::{BlobStore, StorageKey, Transport};

    use super::BlobStoreUnderTest;
    use crate::helpers::s3::TestBucket;

    struct S3 {
        bucket: TestBucket,
        store: Arc<S3Store>,
    }

    #[async_trait::async_trait]
    impl BlobStoreUnderTest for S3 {
        fn store(&self) -> Arc<dyn BlobStore> {
            self.store.clone()
        }

        async fn stored(&self, key: &StorageKey, url: &url::Url) -> Option<Vec<u8>> {
            assert_eq!(url.as_str(), format!("https://cdn.example.com/assets/prefix/{key}"));
            let response = self.bucket.fetch(&format!("prefix/{key}")).await;
            if response.status() == reqwest::StatusCode::NOT_FOUND {
                return None;
            }
            assert!(response.status().is_success(), "{}", response.status());
            let headers = response.headers().clone();
            let content_type = if key.as_str().ends_with(".json") {
                "application/json"
            } else {
                "image/png"
            };
            assert_eq!(headers["content-type"], content_type);
            assert_eq!(headers["cache-control"], "public, max-age=31536000, immutable");
            Some(response.bytes().await.expect("body").to_vec())
        }
    }

    pub fn open_store(bucket: &TestBucket) -> S3Store {
        S3Store::new(
            &S3Config {
                bucket: bucket.name.clone(),
                region: "us-east-1".into(),
                endpoint: Some(url::Url::parse(&bucket.endpoint).expect("url")),
                credentials: Some(S3Credentials {
                    access_key_id: "testing".into(),
                    secret_access_key: Secret::new("testing"),
                }),
                aws_chain: Vec::new(),
                force_path_style: true,
                prefix: Some("prefix".into()),
            },
            url::Url::parse("https://cdn.example.com/assets/").expect("url"),
            Transport {
                connect_timeout: Duration::from_secs(2),
                timeout: Duration::from_secs(10),
                retries: 2,
                max_in_flight: 8,
            },
        )
        .expect("client")
    }

    async fn open() -> S3 {
        let bucket = TestBucket::new("conformance").await;
        let store = Arc::new(open_store(&bucket));
        S3 { bucket, store }
    }

    blob_store_conformance!();
}

/// The local fallback over a healthy primary must be indistinguishable from the primary.
mod local_fallback_over_a_healthy_primary {
    use std::sync::Arc;

    use design_render::storage::fallback::LocalFallback;
    use design_render::storage::local::LocalStore;
    use design_render::storage::memory::MemoryBlobStore;
    use design_render::storage::{BlobStore, StorageKey};

    use super::BlobStoreUnderTest;

    struct Fallback {
        primary: Arc<MemoryBlobStore>,
        store: Arc<LocalFallback>,
        _dir: tempfile::TempDir,
    }

    #[async_trait::async_trait]
    impl BlobStoreUnderTest for Fallback {
        fn store(&self) -> Arc<dyn BlobStore> {
            self.store.clone()
        }

        async fn stored(&self, key: &StorageKey, _url: &url::Url) -> Option<Vec<u8>> {
            assert_eq!(self.store.fallbacks(), 0, "a healthy primary never falls back");
            self.primary.blob(key).map(|blob| blob.bytes.to_vec())
        }
    }

    async fn open() -> Fallback {
        let dir = tempfile::tempdir().expect("tempdir");
        let primary = Arc::new(MemoryBlobStore::new());
        let local = LocalStore::new(dir.path(), None).expect("local store");
        Fallback {
            store: Arc::new(LocalFallback::new(primary.clone(), Arc::new(local))),
            primary,
            _dir: dir,
        }
    }

    blob_store_conformance!();
}

/// The fault injector with an empty plan must be indistinguishable from the store it wraps.
mod flaky_with_an_empty_plan {
    use std::sync::Arc;

    use design_render::storage::flaky::FlakyBlobStore;
    use design_render::storage::memory::MemoryBlobStore;
    use design_render::storage::{BlobStore, StorageKey};

    use super::BlobStoreUnderTest;

    struct Flaky {
        inner: Arc<MemoryBlobStore>,
        store: Arc<FlakyBlobStore<MemoryBlobStore>>,
    }

    #[async_trait::async_trait]
    impl BlobStoreUnderTest for Flaky {
        fn store(&self) -> Arc<dyn BlobStore> {
            self.store.clone()
        }

        async fn stored(&self, key: &StorageKey, _url: &url::Url) -> Option<Vec<u8>> {
            assert_eq!(self.store.injected(), 0, "an empty plan injected a fault");
            self.inner.blob(key).map(|blob| blob.bytes.to_vec())
        }
    }

    async fn open() -> Flaky {
        let inner = Arc::new(MemoryBlobStore::new());
        Flaky {
            store: Arc::new(FlakyBlobStore::new(Arc::clone(&inner))),
            inner,
        }
    }

    blob_store_conformance!();
}

/// What the fault plans inject, and that every put they do not claim reaches the inner store.
mod flaky_faults {
    use std::sync::Arc;

    use bytes::Bytes;
    use design_render::storage::flaky::{Fault, FaultPlan, FlakyBlobStore, Times};
    use design_render::storage::memory::MemoryBlobStore;
    use design_render::storage::{AssetKind, BlobStore, StorageError};

    use super::{asset_key, key};

    #[tokio::test]
    async fn the_next_n_puts_fail_as_planned_then_puts_pass_through() {
        let inner = Arc::new(MemoryBlobStore::new());
        let flaky = FlakyBlobStore::with_plan(
            Arc::clone(&inner),
            FaultPlan::new().fail_next_puts(2, Fault::Unavailable),
        );
        let (first, second) = (key("renders/t/d/composite-01.png"), key("renders/t/d/preview-01.png"));
        for attempted in [&first, &second] {
            match flaky.put(attempted, Bytes::from_static(b"x"), "image/png").await {
                Err(error @ StorageError::Unavailable { .. }) => {
                    assert!(error.is_transient());
                    assert!(matches!(&error, StorageError::Unavailable { key, .. } if key == attempted));
                }
                other => panic!("expected an injected outage, got {other:?}"),
            }
        }
        assert!(inner.keys().is_empty(), "a failed put reached the inner store");
        assert!(flaky.plan_is_spent());
        let stored = flaky
            .put(&first, Bytes::from_static(b"x"), "image/png")
            .await
            .expect("passes through");
        assert_eq!(stored.url, MemoryBlobStore::url_of(&first).unwrap());
        assert_eq!(inner.keys(), vec![first]);
        assert_eq!(flaky.injected(), 2);
    }

    #[tokio::test]
    async fn faults_aimed_at_a_kind_or_a_predicate_leave_other_puts_alone() {
        let inner = Arc::new(MemoryBlobStore::new());
        let plan = FaultPlan::new()
            .fail_puts_of(AssetKind::Preview, Fault::Rejected, Times::Always)
            .fail_puts_where(
                |key| key.as_str().starts_with("renders/tenant-x/"),
                Fault::Io(std::io::ErrorKind::PermissionDenied),
                Times::Next(1),
            );
        let flaky = FlakyBlobStore::with_plan(Arc::clone(&inner), plan);
        let preview = asset_key("tenant-a", "d-1", AssetKind::Preview);
        let composite = asset_key("tenant-a", "d-1", AssetKind::Composite);
        let other_tenant = asset_key("tenant-x", "d-1", AssetKind::Composite);

        for _ in 0..3 {
            let error = flaky
                .put(&preview, Bytes::from_static(b"p"), "image/png")
                .await
                .unwrap_err();
            assert!(matches!(error, StorageError::Rejected { .. }), "{error:?}");
            assert!(!error.is_transient());
        }
        flaky
            .put(&composite, Bytes::from_static(b"c"), "image/png")
            .await
            .expect("other kinds pass");
        match flaky.put(&other_tenant, Bytes::from_static(b"x"), "image/png").await {
            Err(StorageError::Io { source, .. }) => {
                assert_eq!(source.kind(), std::io::ErrorKind::PermissionDenied)
            }
            other => panic!("expected an injected IO error, got {other:?}"),
        }
        flaky
            .put(&other_tenant, Bytes::from_static(b"x"), "image/png")
            .await
            .expect("fired once only");

        let mut expected = vec![composite, other_tenant];
        expected.sort_by(|left, right| left.as_str().cmp(right.as_str()));
        assert_eq!(inner.keys(), expected);
        assert_eq!(flaky.injected(), 4);
        assert!(!flaky.plan_is_spent(), "the Always rule never runs out");
    }

    #[tokio::test]
    async fn a_new_plan_replaces_the_old_one() {
        let inner = Arc::new(MemoryBlobStore::new());
        let flaky = FlakyBlobStore::with_plan(
            Arc::clone(&inner),
            FaultPlan::new().fail_next_puts(5, Fault::Unavailable),
        );
        let target = key("renders/t/d/normal-01.png");
        assert!(flaky.put(&target, Bytes::from_static(b"n"), "image/png").await.is_err());
        flaky.set_plan(FaultPlan::new());
        flaky
            .put(&target, Bytes::from_static(b"n"), "image/png")
            .await
            .expect("empty plan");
        assert_eq!(
            inner.blob(&target).map(|blob| (blob.bytes, blob.content_type)),
            Some((Bytes::from_static(b"n"), "image/png"))
        );
        assert_eq!(flaky.injected(), 1);
    }

    #[tokio::test]
    async fn it_wraps_a_store_behind_a_trait_object() {
        let inner = Arc::new(MemoryBlobStore::new());
        let erased: Arc<dyn BlobStore> = inner.clone();
        let flaky: FlakyBlobStore =
            FlakyBlobStore::with_plan(erased, FaultPlan::new().fail_next_puts(1, Fault::Unavailable));
        let target = key("renders/t/d/roughness-01.png");
        assert!(flaky.put(&target, Bytes::from_static(b"r"), "image/png").await.is_err());
        flaky
            .put(&target, Bytes::from_static(b"r"), "image/png")
            .await
            .expect("second put passes");
        assert_eq!(inner.keys(), vec![target]);
    }
}
