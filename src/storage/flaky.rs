//! Fault injection for storage: a [`BlobStore`] decorator that fails chosen puts on purpose.
//!
//! Tests wrap any store in [`FlakyBlobStore`] and give it a [`FaultPlan`]: fail the next N puts,
//! or fail the puts of one asset kind or of keys matching a predicate, a bounded number of times
//! or always. A put the plan does not claim goes to the inner store untouched, so with an empty
//! plan the decorator behaves exactly like what it wraps. It owns only the plan and a count of
//! the faults it injected; it never retries, delays or alters a put.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::{AssetKind, BlobStore, StorageError, StorageKey, Stored};

/// The error an injected fault returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// [`StorageError::Unavailable`]: a transient outage, retried by the worker.
    Unavailable,
    /// [`StorageError::Rejected`]: a permanent refusal.
    Rejected,
    /// [`StorageError::Io`] with this kind, as a full disk or a permission problem would give.
    Io(std::io::ErrorKind),
}

impl Fault {
    fn error(self, key: &StorageKey) -> StorageError {
        const REASON: &str = "fault injected by FlakyBlobStore";
        match self {
            Self::Unavailable => StorageError::Unavailable {
                key: key.clone(),
                reason: REASON.into(),
            },
            Self::Rejected => StorageError::Rejected {
                key: key.clone(),
                reason: REASON.into(),
            },
            Self::Io(kind) => StorageError::Io {
                key: key.clone(),
                source: std::io::Error::new(kind, REASON),
            },
        }
    }
}

/// How often a rule of the plan fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Times {
    /// On every put it matches.
    Always,
    /// On the next `n` puts it matches, then never again.
    Next(usize),
}

/// Which puts fail, and how. Rules are tried in the order they were added; the first one that
/// matches the key and has not run out claims the put.
#[derive(Default)]
pub struct FaultPlan {
    rules: Vec<FaultRule>,
}

impl FaultPlan {
    /// A plan that injects nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Fails the next `count` puts, whatever their key.
    pub fn fail_next_puts(self, count: usize, fault: Fault) -> Self {
        self.rule(KeyFilter::Any, fault, Times::Next(count))
    }

    /// Fails puts of one asset kind (keys made by [`StorageKey::for_asset`]).
    pub fn fail_puts_of(self, kind: AssetKind, fault: Fault, times: Times) -> Self {
        self.rule(KeyFilter::Kind(kind), fault, times)
    }

    /// Fails puts whose key satisfies `predicate`.
    pub fn fail_puts_where(
        self,
        predicate: impl Fn(&StorageKey) -> bool + Send + Sync + 'static,
        fault: Fault,
        times: Times,
    ) -> Self {
        self.rule(KeyFilter::Matching(Box::new(predicate)), fault, times)
    }

    /// Whether no rule can fire any more (every counted rule is used up, none fires always).
    fn is_spent(&self) -> bool {
        self.rules.iter().all(|rule| rule.times == Times::Next(0))
    }

    fn rule(mut self, filter: KeyFilter, fault: Fault, times: Times) -> Self {
        self.rules.push(FaultRule { filter, fault, times });
        self
    }

    /// The fault for a put of `key`, using up one firing of the rule that claims it.
    fn claim(&mut self, key: &StorageKey) -> Option<Fault> {
        let rule = self
            .rules
            .iter_mut()
            .find(|rule| rule.times != Times::Next(0) && rule.filter.matches(key))?;
        if let Times::Next(left) = &mut rule.times {
            *left -= 1;
        }
        Some(rule.fault)
    }
}

impl fmt::Debug for FaultPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.rules).finish()
    }
}

/// A store that injects the faults of its plan and hands every other put to `inner`.
pub struct FlakyBlobStore<S: ?Sized = dyn BlobStore> {
    inner: Arc<S>,
    plan: Mutex<FaultPlan>,
    injected: AtomicUsize,
}

impl<S: ?Sized> FlakyBlobStore<S> {
    /// Wraps `inner` with an empty plan: every put passes through until a plan is set.
    pub fn new(inner: Arc<S>) -> Self {
        Self::with_plan(inner, FaultPlan::new())
    }

    pub fn with_plan(inner: Arc<S>, plan: FaultPlan) -> Self {
        Self {
            inner,
            plan: Mutex::new(plan),
            injected: AtomicUsize::new(0),
        }
    }

    /// Replaces the plan, for a test that changes the failure mode half way.
    pub fn set_plan(&self, plan: FaultPlan) {
        *self.lock() = plan;
    }

    /// Whether the plan has no fault left to inject.
    pub fn plan_is_spent(&self) -> bool {
        self.lock().is_spent()
    }

    /// How many puts failed on purpose so far.
    pub fn injected(&self) -> usize {
        self.injected.load(Ordering::SeqCst)
    }

    pub fn inner(&self) -> &Arc<S> {
        &self.inner
    }

    /// A poisoned lock only means a thread panicked in a plan predicate; the rule counts are
    /// still consistent.
    fn lock(&self) -> MutexGuard<'_, FaultPlan> {
        self.plan.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait::async_trait]
impl<S: BlobStore + ?Sized> BlobStore for FlakyBlobStore<S> {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn put(
        &self,
        key: &StorageKey,
        bytes: bytes::Bytes,
        content_type: &'static str,
    ) -> Result<Stored, StorageError> {
        // The guard is dropped before the inner put is awaited.
        let fault = self.lock().claim(key);
        if let Some(fault) = fault {
            self.injected.fetch_add(1, Ordering::SeqCst);
            return Err(fault.error(key));
        }
        self.inner.put(key, bytes, content_type).await
    }

    async fn get(&self, key: &StorageKey, url: &url::Url) -> Result<Option<Vec<u8>>, StorageError> {
        self.inner.get(key, url).await
    }

    fn reads_by_key(&self) -> bool {
        self.inner.reads_by_key()
    }

    async fn get_by_key(&self, key: &StorageKey) -> Result<Option<Vec<u8>>, StorageError> {
        self.inner.get_by_key(key).await
    }

    async fn delete(&self, key: &StorageKey) -> Result<(), StorageError> {
        self.inner.delete(key).await
    }
}

struct FaultRule {
    filter: KeyFilter,
    fault: Fault,
    times: Times,
}

impl fmt::Debug for FaultRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultRule")
            .field("filter", &self.filter)
            .field("fault", &self.fault)
            .field("times", &self.times)
            .finish()
    }
}

enum KeyFilter {
    Any,
    Kind(AssetKind),
    Matching(Box<dyn Fn(&StorageKey) -> bool + Send + Sync>),
}

impl KeyFilter {
    fn matches(&self, key: &StorageKey) -> bool {
        match self {
            Self::Any => true,
            Self::Kind(kind) => is_asset_of(key, *kind),
            Self::Matching(predicate) => predicate(key),
        }
    }
}

impl fmt::Debug for KeyFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("Any"),
            Self::Kind(kind) => write!(f, "Kind({})", kind.as_str()),
            Self::Matching(_) => f.write_str("Matching(..)"),
        }
    }
}

/// Asset keys end in `/{kind}-{hash}.png`; no kind name is a prefix of another followed by `-`.
fn is_asset_of(key: &StorageKey, kind: AssetKind) -> bool {
    key.as_str()
        .rsplit('/')
        .next()
        .and_then(|file| file.strip_prefix(kind.as_str()))
        .is_some_and(|rest| rest.starts_with('-'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{DesignId, TenantId};

    #[test]
    fn asset_kinds_are_told_apart_by_the_file_name() {
        let tenant = TenantId::parse("composite").unwrap();
        let design = DesignId::parse("preview-1").unwrap();
        let key = StorageKey::for_asset(&tenant, &design, AssetKind::HighRes, b"x");
        assert!(is_asset_of(&key, AssetKind::HighRes));
        for other in [
            AssetKind::Composite,
            AssetKind::Preview,
            AssetKind::NormalMap,
            AssetKind::RoughnessMap,
        ] {
            assert!(!is_asset_of(&key, other), "{key} taken for {other:?}");
        }
    }
}
