//! Shared test fixtures: images, configurations and a pipeline on temporary storage, plus the
//! RAII fixtures for the real services in [`pg`] (a schema per test) and [`redis`] (a key prefix
//! per test). Each of those cleans up in `Drop`, so a failing test leaves nothing behind either.
//! [`queue`] holds the fixtures of the process tests (a queue of one test, worker processes, a
//! held asset server, published events) and [`node`] runs the Node BullMQ fixture scripts;
//! [`chromium`] provides the headless browser those scripts drive.

pub mod chromium;
pub mod cloudinary;
pub mod node;
pub mod pg;
pub mod queue;
pub mod redis;
pub mod s3;
pub mod worker;

pub use self::node::node;
pub use self::pg::{PG_URL, PgSchema, SchemaGuard, create_schema};
pub use self::redis::{REDIS_URL, RedisKeys};

use std::path::Path;

use design_render::app::{self, Mode};
use design_render::config::{AllowedHost, Config, PrivateHostPolicy};
use design_render::pipeline::Pipeline;

/// Installs the TLS provider reqwest needs; harmless when already installed.
pub fn init() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// `design-render render` in `dir` with a clean environment: local storage and an SQLite
/// database in `dir`, nothing else set. Add arguments and variables to it.
pub fn render_command(dir: &Path) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_design-render"));
    command
        .arg("render")
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("STORAGE_DIR", dir.join("storage"))
        .env("DATABASE_URL", format!("sqlite://{}", dir.join("renders.db").display()));
    command
}

pub fn project_file(relative: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// A small opaque PNG with a gradient.
pub fn gradient_png(width: u32, height: u32) -> Vec<u8> {
    let image = image::RgbaImage::from_fn(width, height, |x, y| {
        image::Rgba([(x * 255 / width) as u8, (y * 255 / height) as u8, 128, 255])
    });
    design_render::imaging::codec::encode_rgba_png(&image).expect("encode")
}

/// The OpenAI image edits answer of `reference/openai-images.md`: a 64x64 PNG and its usage
/// (4270 tokens: 110 in, 4160 out).
pub fn edits_ok(request_id: &str) -> wiremock::ResponseTemplate {
    use base64::Engine as _;
    wiremock::ResponseTemplate::new(200)
        .insert_header("x-request-id", request_id)
        .set_body_json(serde_json::json!({
            "created": 1_713_833_628,
            "data": [{"b64_json": base64::engine::general_purpose::STANDARD.encode(gradient_png(64, 64))}],
            "usage": {"total_tokens": 4270, "input_tokens": 110, "output_tokens": 4160,
                      "input_tokens_details": {"text_tokens": 45, "image_tokens": 65}},
        }))
}

/// A mask PNG with a white square in the middle.
pub fn square_mask_png(width: u32, height: u32) -> Vec<u8> {
    let image = image::RgbaImage::from_fn(width, height, |x, y| {
        let inside = x > width / 3 && x < 2 * width / 3 && y > height / 3 && y < 2 * height / 3;
        let v = if inside { 255 } else { 0 };
        image::Rgba([v, v, v, 255])
    });
    design_render::imaging::codec::encode_rgba_png(&image).expect("encode")
}

/// A configuration rooted in `dir` that may download from 127.0.0.1 only.
pub fn config_allowing_loopback(dir: &Path) -> Config {
    let mut config = Config::for_tests(dir);
    config.assets.private_hosts = PrivateHostPolicy::Allow(vec![AllowedHost::Network {
        addr: "127.0.0.1".parse().expect("address"),
        prefix: 32,
        port: None,
    }]);
    config
}

pub async fn pipeline(config: &Config, mode: Mode) -> Pipeline {
    init();
    app::build_pipeline(config, mode).await.expect("pipeline builds")
}

/// A name no other test (or earlier run) uses.
pub fn unique(label: &str) -> String {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{label}_{}_{}_{}",
        std::process::id(),
        nanos % 1_000_000_000_000,
        COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

/// A value as JSON, to assert on wire shapes (`json(&output.metadata)["sizes"]`).
pub fn json<T: serde::Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).expect("serialisable")
}

/// The value of one sample line of a Prometheus text exposition, e.g.
/// `design_render_jobs_total{code="ok",outcome="completed"}`.
pub fn sample(metrics: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metrics.lines().filter(|line| !line.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, rest) = series.split_once('{').unwrap_or((series, "}"));
        let wanted = metric == name
            && labels
                .iter()
                .all(|(label, value)| rest.contains(&format!("{label}=\"{value}\"")));
        wanted.then(|| value.parse().ok()).flatten()
    })
}
