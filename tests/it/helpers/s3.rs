//! A real S3-compatible server for the storage tests: moto (`moto[s3]==5.2.5` from the Python
//! package index) on 127.0.0.1:5055, installed into `~/.cache/design-render/moto-5.2.5` and
//! started on first use when nothing answers there (as the Node fixture runs `npm ci`). It is a
//! shared loopback service like Redis: it keeps running for later test runs. Each test makes
//! its own bucket.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Where the tests expect the server; `S3_TEST_ENDPOINT` overrides it (a running server only).
pub fn endpoint() -> String {
    std::env::var("S3_TEST_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:5055".to_owned())
}

fn answering(endpoint: &str) -> bool {
    let address = endpoint.trim_start_matches("http://").trim_end_matches('/');
    address
        .parse()
        .ok()
        .is_some_and(|address| TcpStream::connect_timeout(&address, Duration::from_millis(300)).is_ok())
}

/// Makes sure the server answers: installs and starts it once per machine, under a file lock so
/// parallel test processes do not race.
pub fn ensure_running() -> String {
    static READY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    READY
        .get_or_init(|| {
            let endpoint = endpoint();
            if answering(&endpoint) {
                return endpoint;
            }
            let lock = std::fs::File::create(std::env::temp_dir().join("design-render-moto.lock")).unwrap();
            lock.lock().expect("moto lock");
            if !answering(&endpoint) {
                let program = install();
                let log = std::fs::File::create(std::env::temp_dir().join("design-render-moto.log")).unwrap();
                let port = endpoint
                    .rsplit(':')
                    .next()
                    .unwrap_or("5055")
                    .trim_end_matches('/')
                    .to_owned();
                use std::os::unix::process::CommandExt;
                let mut server = Command::new(program)
                    .args(["-H", "127.0.0.1", "-p", &port])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(log)
                    // Its own process group: it outlives this test process, like Redis does.
                    .process_group(0)
                    .spawn()
                    .expect("moto_server starts");
                // Reaped if it ever exits while this process runs; it outlives the process otherwise.
                std::thread::spawn(move || server.wait());
                let started = Instant::now();
                while !answering(&endpoint) {
                    assert!(
                        started.elapsed() < Duration::from_secs(60),
                        "moto_server did not answer on {endpoint}"
                    );
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            lock.unlock().unwrap();
            endpoint
        })
        .clone()
}

/// The `moto_server` of the pinned version, installed into a virtual environment when missing.
pub fn install() -> PathBuf {
    let home = std::env::var_os("HOME").map_or_else(std::env::temp_dir, PathBuf::from);
    let venv = home.join(".cache/design-render/moto-5.2.5");
    let program = venv.join("bin/moto_server");
    if !program.exists() {
        let status = Command::new("python3")
            .arg("-m")
            .arg("venv")
            .arg(&venv)
            .status()
            .expect("python3 runs");
        assert!(status.success(), "python3 -m venv {} failed", venv.display());
        let status = Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "moto[s3]==5.2.5", "flask", "flask-cors"])
            .status()
            .expect("pip runs");
        assert!(status.success(), "pip install moto failed");
    }
    program
}

/// A bucket of one test on the server (moto accepts any credentials).
pub struct TestBucket {
    pub name: String,
    pub endpoint: String,
}

impl TestBucket {
    pub async fn new(label: &str) -> Self {
        super::init();
        let endpoint = tokio::task::spawn_blocking(ensure_running).await.expect("moto");
        let name = super::unique(label).to_ascii_lowercase().replace('_', "-");
        let created = reqwest::Client::new()
            .put(format!("{endpoint}/{name}"))
            .send()
            .await
            .expect("moto answers");
        assert!(
            created.status().is_success(),
            "creating bucket {name}: {}",
            created.status()
        );
        Self { name, endpoint }
    }

    /// An object as a plain HTTP client sees it (path style): status, headers, body. moto
    /// refuses anonymous reads of a private bucket but does not check signatures, so any
    /// credentials in the header do.
    pub async fn fetch(&self, key: &str) -> reqwest::Response {
        reqwest::Client::new()
            .get(format!("{}/{}/{key}", self.endpoint, self.name))
            .header(
                "authorization",
                "AWS4-HMAC-SHA256 Credential=testing/20261207/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0",
            )
            .send()
            .await
            .expect("moto answers")
    }

    /// The storage variables of a worker or `render` that writes to this bucket.
    pub fn env(&self, public_base: &str) -> Vec<(&'static str, String)> {
        vec![
            ("STORAGE_BACKEND", "s3".to_owned()),
            ("S3_BUCKET", self.name.clone()),
            ("S3_ENDPOINT", self.endpoint.clone()),
            ("S3_FORCE_PATH_STYLE", "true".to_owned()),
            ("S3_ACCESS_KEY_ID", "testing".to_owned()),
            ("S3_SECRET_ACCESS_KEY", "testing".to_owned()),
            ("PUBLIC_BASE_URL", public_base.to_owned()),
        ]
    }
}
