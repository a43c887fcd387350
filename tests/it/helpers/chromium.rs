//! The browser of the browser-driven tests: Debian's `chromium` (with `chromium-driver`),
//! installed with apt-get on first use when it is missing. Playwright's own browser download
//! cannot run here, so the Node scripts launch this binary through `playwright-core`.

use std::path::PathBuf;
use std::process::Command;

/// Where Debian's package puts the browser.
const CHROMIUM: &str = "/usr/bin/chromium";

/// Returns the path of the Chromium binary, installing Debian's `chromium` and
/// `chromium-driver` first when it is missing (once per process, under a file lock so parallel
/// tests and test processes do not run apt-get at the same time). Panics when that fails.
pub fn ensure_installed() -> PathBuf {
    static READY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    READY
        .get_or_init(|| {
            let binary = PathBuf::from(CHROMIUM);
            let lock = std::fs::File::create(std::env::temp_dir().join("design-render-chromium.lock"))
                .expect("chromium lock file");
            lock.lock().expect("chromium lock");
            // Another process may have installed it while this one waited for the lock.
            if !binary.exists() {
                apt_get(&["update"]);
                apt_get(&[
                    "install",
                    "-y",
                    "--no-install-recommends",
                    "chromium",
                    "chromium-driver",
                ]);
                assert!(
                    binary.exists(),
                    "apt-get installed chromium but {CHROMIUM} is still missing"
                );
            }
            lock.unlock().expect("chromium unlock");
            binary
        })
        .clone()
}

/// Runs `apt-get` non-interactively with `args`; panics with its output when it fails.
fn apt_get(args: &[&str]) {
    let output = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run apt-get to install chromium ({e}); install `chromium` and `chromium-driver` by hand")
        });
    assert!(
        output.status.success(),
        "`apt-get {}` failed while installing chromium for the browser tests ({}):\n{}\n{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
}
