//! The Node side of the interop tests: the real `bullmq` npm package in `tests/node`, installed
//! on first use, and a runner for its fixture scripts.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use super::project_file;

/// Installs the Node fixture's packages once per machine state (`npm ci` when node_modules is
/// missing), under a file lock so parallel tests and test processes do not race.
fn ensure_node_modules() -> PathBuf {
    static READY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    READY
        .get_or_init(|| {
            let dir = project_file("tests/node");
            let lock = std::fs::File::create(std::env::temp_dir().join("design-render-npm-ci.lock")).unwrap();
            lock.lock().expect("npm lock");
            // The newest package of the fixture: a node_modules without it is out of date.
            if !dir.join("node_modules/playwright-core/package.json").exists() {
                let status = Command::new("npm")
                    .args(["ci", "--no-audit", "--no-fund"])
                    .current_dir(&dir)
                    .status()
                    .expect("npm runs");
                assert!(status.success(), "npm ci in tests/node failed");
            }
            lock.unlock().unwrap();
            dir
        })
        .clone()
}

/// Runs a Node fixture script with a JSON argument and parses its JSON output.
pub async fn node(script: &str, spec: Value) -> Value {
    let dir = ensure_node_modules();
    let output = tokio::process::Command::new("node")
        .arg(script)
        .arg(spec.to_string())
        .current_dir(&dir)
        .output()
        .await
        .expect("node runs");
    assert!(
        output.status.success(),
        "node {script} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "node output is not JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}
