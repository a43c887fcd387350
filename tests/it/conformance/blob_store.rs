//! The [`BlobStore`] contract, run against the local-disk store, the memory store and the fault
//! injector with an empty plan; then the fault injector's own plans.
//!
//! The port can only write, so each fixture reads an object back its own way
//! ([`BlobStoreUnderTest::stored`]): the local store from disk, the memory store with `get`.

use std::sync::Arc;

use design_render::job::{DesignId, TenantId};
use design_render::storage::{AssetKind, BlobStore, StorageKey};

pub trait BlobStoreUnderTest: Send + Sync {
    fn store(&self) -> Arc<dyn BlobStore>;

    /// The bytes the backend holds for `key`, which a put answered with `url`.
    fn stored(&self, key: &StorageKey, url: &url::Url) -> Option<Vec<u8>>;
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
    let url = store
        .put(&preview, b"png bytes".to_vec(), "image/png")
        .await
        .expect("put succeeds");
    assert!(
        url.path().ends_with(preview.as_str()),
        "{url} does not end with the key {preview}"
    );
    assert_eq!(subject.stored(&preview, &url).as_deref(), Some(&b"png bytes"[..]));
}

pub async fn a_second_put_of_a_key_replaces_the_bytes_and_keeps_the_url(subject: &dyn BlobStoreUnderTest) {
    let store = subject.store();
    let composite = key("renders/tenant-a/d-1/composite-00.png");
    let first = store
        .put(&composite, vec![1; 4096], "image/png")
        .await
        .expect("first put");
    let second = store
        .put(&composite, b"short".to_vec(), "image/png")
        .await
        .expect("second put");
    assert_eq!(first, second, "a re-run job must get the same URL");
    // Shorter than the first object: nothing of it may remain.
    assert_eq!(subject.stored(&composite, &second).as_deref(), Some(&b"short"[..]));
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
        let url = store
            .put(key, format!("object {index}").into_bytes(), "image/png")
            .await
            .expect("put succeeds");
        urls.push(url);
    }
    for (index, (key, url)) in keys.iter().zip(&urls).enumerate() {
        assert_eq!(
            subject.stored(key, url),
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
            tokio::spawn(async move { store.put(&shared, vec![writer; 64 * 1024], "image/png").await })
        })
        .collect();
    let mut urls = Vec::new();
    for writer in writers {
        urls.push(writer.await.expect("writer task").expect("every put succeeds"));
    }
    assert!(urls.windows(2).all(|pair| pair[0] == pair[1]), "{urls:?}");
    // The object is one writer's bytes in full, never a mix.
    let stored = subject.stored(&shared, &urls[0]).expect("object stored");
    assert_eq!(stored.len(), 64 * 1024);
    assert!(
        stored.iter().all(|byte| *byte == stored[0]),
        "bytes of two writers mixed"
    );
}

/// One multi-threaded test per suite function for an adapter module that defines
/// `fn open() -> impl BlobStoreUnderTest`.
macro_rules! blob_store_conformance {
    () => {
        blob_store_conformance!(
            a_put_returns_a_url_for_the_key_and_stores_the_bytes,
            a_second_put_of_a_key_replaces_the_bytes_and_keeps_the_url,
            distinct_keys_do_not_collide,
            concurrent_puts_of_one_key_all_succeed,
        );
    };
    ($($test:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                super::$test(&open()).await;
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

    impl BlobStoreUnderTest for Local {
        fn store(&self) -> Arc<dyn BlobStore> {
            self.store.clone()
        }

        fn stored(&self, _key: &StorageKey, url: &url::Url) -> Option<Vec<u8>> {
            let path = url.to_file_path().ok()?;
            assert!(
                path.starts_with(self.store.root()),
                "{} is outside the root",
                path.display()
            );
            std::fs::read(path).ok()
        }
    }

    fn open() -> Local {
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

    impl BlobStoreUnderTest for Memory {
        fn store(&self) -> Arc<dyn BlobStore> {
            self.0.clone()
        }

        fn stored(&self, key: &StorageKey, url: &url::Url) -> Option<Vec<u8>> {
            assert_eq!(url, &MemoryBlobStore::url_of(key).expect("url"));
            self.0.get(key).map(|blob| blob.bytes)
        }
    }

    fn open() -> Memory {
        Memory(Arc::new(MemoryBlobStore::new()))
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

    impl BlobStoreUnderTest for Flaky {
        fn store(&self) -> Arc<dyn BlobStore> {
            self.store.clone()
        }

        fn stored(&self, key: &StorageKey, _url: &url::Url) -> Option<Vec<u8>> {
            assert_eq!(self.store.injected(), 0, "an empty plan injected a fault");
            self.inner.get(key).map(|blob| blob.bytes)
        }
    }

    fn open() -> Flaky {
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
            match flaky.put(attempted, b"x".to_vec(), "image/png").await {
                Err(error @ StorageError::Unavailable { .. }) => {
                    assert!(error.is_transient());
                    assert!(matches!(&error, StorageError::Unavailable { key, .. } if key == attempted));
                }
                other => panic!("expected an injected outage, got {other:?}"),
            }
        }
        assert!(inner.keys().is_empty(), "a failed put reached the inner store");
        assert!(flaky.plan_is_spent());
        let url = flaky
            .put(&first, b"x".to_vec(), "image/png")
            .await
            .expect("passes through");
        assert_eq!(url, MemoryBlobStore::url_of(&first).unwrap());
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
            let error = flaky.put(&preview, b"p".to_vec(), "image/png").await.unwrap_err();
            assert!(matches!(error, StorageError::Rejected { .. }), "{error:?}");
            assert!(!error.is_transient());
        }
        flaky
            .put(&composite, b"c".to_vec(), "image/png")
            .await
            .expect("other kinds pass");
        match flaky.put(&other_tenant, b"x".to_vec(), "image/png").await {
            Err(StorageError::Io { source, .. }) => {
                assert_eq!(source.kind(), std::io::ErrorKind::PermissionDenied)
            }
            other => panic!("expected an injected IO error, got {other:?}"),
        }
        flaky
            .put(&other_tenant, b"x".to_vec(), "image/png")
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
        assert!(flaky.put(&target, b"n".to_vec(), "image/png").await.is_err());
        flaky.set_plan(FaultPlan::new());
        flaky
            .put(&target, b"n".to_vec(), "image/png")
            .await
            .expect("empty plan");
        assert_eq!(
            inner.get(&target).map(|blob| (blob.bytes, blob.content_type)),
            Some((b"n".to_vec(), "image/png"))
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
        assert!(flaky.put(&target, b"r".to_vec(), "image/png").await.is_err());
        flaky
            .put(&target, b"r".to_vec(), "image/png")
            .await
            .expect("second put passes");
        assert_eq!(inner.keys(), vec![target]);
    }
}
