//! The in-memory asset adapter, for tests: serves scripted bytes or errors by asset string.
//!
//! Owns a table from asset text (a URL or a path, compared as [`AssetRef::as_str`] gives it)
//! to an answer, optional gates that hold a load until the test lets it go, and the log of
//! every load it was asked for. It must not touch the network or the disk, and it applies no
//! limits or guard: tests of those rules use the real adapters.
//!
//! An asset nobody scripted answers like a server or disk that does not have it: HTTP 404
//! for a URL, a not-found read error for a path.
//!
//! Holding a load: [`MemoryAssets::hold`] puts a shared `tokio::sync::Barrier::new(2)` in front
//! of an asset. A load of it meets the test at the barrier twice: once on arrival and once more
//! before it answers. The test's first `wait()` therefore returns only when the load has
//! started, and the load cannot finish before the test's second `wait()`:
//!
//! ```text
//! let gate = Arc::new(Barrier::new(2));
//! assets.hold("https://assets.test/base.png", gate.clone());
//! // start the job …
//! gate.wait().await; // the job is now inside the download step
//! // … look at the job while it is held …
//! gate.wait().await; // the download answers
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Barrier;

use super::{AssetError, AssetRole, AssetSource};
use crate::job::AssetRef;

/// Builds the error for one scripted failure; it is given the payload field of the role the
/// asset was loaded as, so one script serves both roles.
pub type ErrorFactory = dyn Fn(&'static str) -> AssetError + Send + Sync;

/// One load the adapter was asked for, in arrival order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssetRequest {
    /// The asset as [`AssetRef::as_str`] spells it.
    pub asset: String,
    pub role: AssetRole,
}

/// Scripted assets, shared by reference: script it through `&self` after wrapping it in an
/// `Arc`, hand one clone to the pipeline and keep one for assertions.
#[derive(Default)]
pub struct MemoryAssets {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    answers: HashMap<String, Answer>,
    gates: HashMap<String, Arc<Barrier>>,
    requests: Vec<AssetRequest>,
}

#[derive(Clone)]
enum Answer {
    Bytes(Arc<[u8]>),
    Fail(Arc<ErrorFactory>),
}

impl MemoryAssets {
    pub fn new() -> Self {
        Self::default()
    }

    /// Answers loads of `asset` with `bytes`, replacing any earlier answer for it.
    pub fn serve(&self, asset: &str, bytes: impl Into<Vec<u8>>) -> &Self {
        let bytes: Vec<u8> = bytes.into();
        self.lock().answers.insert(key(asset), Answer::Bytes(bytes.into()));
        self
    }

    /// Answers loads of `asset` with the error `error` builds, replacing any earlier answer.
    pub fn fail(&self, asset: &str, error: impl Fn(&'static str) -> AssetError + Send + Sync + 'static) -> &Self {
        self.lock().answers.insert(key(asset), Answer::Fail(Arc::new(error)));
        self
    }

    /// Holds every later load of `asset` at `gate` (see the module docs for the protocol).
    /// The answer is looked up only after the gate, so a test may re-script it meanwhile.
    pub fn hold(&self, asset: &str, gate: Arc<Barrier>) -> &Self {
        self.lock().gates.insert(key(asset), gate);
        self
    }

    /// Every load so far, in the order they arrived (recorded before any gate).
    pub fn requests(&self) -> Vec<AssetRequest> {
        self.lock().requests.clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section here is a single insert or clone, so a poisoned lock still
        // guards consistent data.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait::async_trait]
impl AssetSource for MemoryAssets {
    async fn load(&self, asset: &AssetRef, role: AssetRole) -> Result<Vec<u8>, AssetError> {
        let text = asset.as_str().to_owned();
        let gate = {
            let mut state = self.lock();
            state.requests.push(AssetRequest {
                asset: text.clone(),
                role,
            });
            state.gates.get(&text).cloned()
        };
        if let Some(gate) = gate {
            gate.wait().await;
            gate.wait().await;
        }
        let answer = self.lock().answers.get(&text).cloned();
        let field = role.field();
        match (answer, asset) {
            (Some(Answer::Bytes(bytes)), _) => Ok(bytes.to_vec()),
            (Some(Answer::Fail(error)), _) => Err(error(field)),
            (None, AssetRef::Remote(_)) => Err(AssetError::Status { field, status: 404 }),
            (None, AssetRef::Local { path, .. }) => Err(AssetError::LocalRead {
                field,
                path: path.display().to_string(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "not scripted in MemoryAssets"),
            }),
        }
    }
}

/// The table key for a scripted asset: spelled the way a parsed [`AssetRef`] spells it, so
/// `https://host` and `https://host/` name the same asset. Text that does not parse is kept
/// as written (it can never be requested, which the test will notice).
fn key(asset: &str) -> String {
    match AssetRef::parse(asset) {
        Ok(parsed) => parsed.as_str().to_owned(),
        Err(_) => asset.trim().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(text: &str) -> AssetRef {
        AssetRef::parse(text).expect("a valid URL")
    }

    #[tokio::test]
    async fn serves_scripted_bytes_by_url_and_by_path() {
        let assets = MemoryAssets::new();
        assets
            .serve("https://assets.test", b"root".to_vec())
            .serve("/textures/base.png", b"file".to_vec());
        // The key is normalised like a parsed ref: the root URL gains its slash.
        assert_eq!(
            assets
                .load(&remote("https://assets.test/"), AssetRole::BaseTexture)
                .await
                .unwrap(),
            b"root"
        );
        let path = AssetRef::parse("/textures/base.png").unwrap();
        assert_eq!(assets.load(&path, AssetRole::Mask).await.unwrap(), b"file");
    }

    #[tokio::test]
    async fn unscripted_assets_are_missing_the_way_a_server_or_disk_says_so() {
        let assets = MemoryAssets::new();
        let error = assets
            .load(&remote("https://assets.test/none.png"), AssetRole::Mask)
            .await
            .unwrap_err();
        assert!(
            matches!(
                error,
                AssetError::Status {
                    field: "maskUrl",
                    status: 404
                }
            ),
            "{error}"
        );
        let error = assets
            .load(&AssetRef::parse("/none.png").unwrap(), AssetRole::BaseTexture)
            .await
            .unwrap_err();
        assert!(
            matches!(
                error,
                AssetError::LocalRead {
                    field: "baseTextureUrl",
                    ..
                }
            ),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_scripted_error_names_the_field_of_the_role_it_was_loaded_as() {
        let assets = MemoryAssets::new();
        assets.fail("https://assets.test/slow.png", |field| AssetError::Timeout { field });
        let asset = remote("https://assets.test/slow.png");
        for (role, field) in [(AssetRole::BaseTexture, "baseTextureUrl"), (AssetRole::Mask, "maskUrl")] {
            let error = assets.load(&asset, role).await.unwrap_err();
            assert!(
                matches!(error, AssetError::Timeout { field: f } if f == field),
                "{error}"
            );
            assert!(error.is_transient());
        }
    }

    #[tokio::test]
    async fn records_every_request_in_arrival_order() {
        let assets = MemoryAssets::new();
        assets.serve("https://assets.test/a.png", b"a".to_vec());
        let _ = assets
            .load(&remote("https://assets.test/a.png"), AssetRole::BaseTexture)
            .await;
        let _ = assets.load(&remote("https://assets.test/b.png"), AssetRole::Mask).await;
        assert_eq!(
            assets.requests(),
            [
                AssetRequest {
                    asset: "https://assets.test/a.png".into(),
                    role: AssetRole::BaseTexture
                },
                AssetRequest {
                    asset: "https://assets.test/b.png".into(),
                    role: AssetRole::Mask
                },
            ]
        );
    }

    #[tokio::test]
    async fn a_held_load_arrives_and_answers_only_when_the_test_releases_it() {
        let assets = Arc::new(MemoryAssets::new());
        let gate = Arc::new(Barrier::new(2));
        assets
            .serve("https://assets.test/base.png", b"before".to_vec())
            .hold("https://assets.test/base.png", gate.clone());
        let load = tokio::spawn({
            let assets = Arc::clone(&assets);
            async move {
                assets
                    .load(&remote("https://assets.test/base.png"), AssetRole::BaseTexture)
                    .await
            }
        });
        // First rendezvous: the load has started and is now held.
        gate.wait().await;
        assert_eq!(assets.requests().len(), 1);
        // While it is held it cannot have answered, and its answer can still change.
        tokio::task::yield_now().await;
        assert!(!load.is_finished());
        assets.serve("https://assets.test/base.png", b"after".to_vec());
        // Second rendezvous: the load answers.
        gate.wait().await;
        assert_eq!(load.await.unwrap().unwrap(), b"after");
    }
}
