//! Rendering to the production storage backends: Cloudinary (a loopback mock that checks every
//! signature) and S3 (a real moto server), through the real pipeline, the `render` command and
//! the queue worker; the retry, permanent-failure and local-fallback paths.

use std::process::Command;
use std::time::Duration;

use bullmq::Queue;
use design_render::app::{self, Mode};
use design_render::config::{Config, StorageBackend};
use design_render::pipeline::{Disposition, RenderError, Silent};
use design_render::storage::StorageError;
use design_render::store::DesignStatus;
use serde_json::{Value, json};

use super::helpers::cloudinary::{API_KEY, API_SECRET, CLOUD, CloudinaryMock};
use super::helpers::queue::{QueueSetup, asset_server, await_completed, payload, teardown};
use super::helpers::s3::TestBucket;
use super::helpers::{PgSchema, project_file, unique};

/// A one-shot request on the committed example files, with both maps (five assets).
fn request(design: &str) -> design_render::job::RenderRequest {
    design_render::job::RenderRequest::from_json(
        json!({
            "designId": design, "tenantId": "tenant-s", "prompt": "weathered brick",
            "baseTextureUrl": project_file("examples/base.png").display().to_string(),
            "maskUrl": project_file("examples/mask.png").display().to_string(),
            "renderOptions": {"size": "256x256", "generateNormalMap": true, "generateRoughnessMap": true}
        })
        .to_string()
        .as_bytes(),
    )
    .expect("valid request")
}

fn cloudinary_config(dir: &std::path::Path, mock: &CloudinaryMock, secret: &str, fallback: bool) -> Config {
    let mut config = Config::for_tests(dir);
    config.storage.backend = StorageBackend::Cloudinary(mock.storage(secret));
    config.storage.retries = 2;
    config.storage.fallback_to_local = Some(fallback);
    config
}

async fn build(config: &Config) -> design_render::pipeline::Pipeline {
    super::helpers::init();
    app::build_pipeline(config, Mode::OneShot).await.expect("pipeline")
}

fn metadata(output: &design_render::pipeline::RenderOutput) -> Value {
    super::helpers::json(&output.metadata)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cloudinary_render_keeps_the_secure_urls_and_every_asset_is_uploaded_signed() {
    let dir = tempfile::tempdir().unwrap();
    let mock = CloudinaryMock::start().await;
    let pipeline = build(&cloudinary_config(dir.path(), &mock, API_SECRET, false)).await;
    let request = request("d-cloud");
    let output = pipeline.run(&request, &Silent).await.expect("render");
    let metadata = metadata(&output);
    assert_eq!(metadata["storage"], json!({"backend": "cloudinary"}));
    let delivery = format!("{}/{CLOUD}/image/upload/v", mock.prefix());
    for url in [
        output.composite_texture_url.as_str(),
        output.high_res_url.as_str(),
        output.preview_url.as_str(),
        metadata["normalMapUrl"].as_str().expect("normal map"),
        metadata["roughnessMapUrl"].as_str().expect("roughness map"),
    ] {
        assert!(url.starts_with(&delivery), "{url} is not a secure_url of the mock");
    }
    let row = pipeline.designs.get(&request.design_id).await.unwrap().unwrap();
    assert_eq!(row.status, DesignStatus::Completed);
    assert_eq!(row.high_res_url.as_deref(), Some(output.high_res_url.as_str()));
    // Five signed uploads, each with a public id derived from the content-addressed key.
    assert_eq!(mock.upload_statuses(), vec![200; 5]);
    for fields in mock.upload_fields() {
        assert_eq!(fields["overwrite"], "1");
        assert!(
            fields["public_id"].starts_with("renders/tenant-s/d-cloud/"),
            "{fields:?}"
        );
        assert!(!fields["public_id"].ends_with(".png"));
    }
    let preview = reqwest::get(&output.preview_url).await.unwrap().bytes().await.unwrap();
    assert!(preview.starts_with(b"\x89PNG"), "the secure_url serves the preview");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_cloudinary_secret_or_a_stale_clock_fails_permanently_without_retries() {
    let dir = tempfile::tempdir().unwrap();
    let mock = CloudinaryMock::start().await;
    let pipeline = build(&cloudinary_config(dir.path(), &mock, "not-the-secret", false)).await;
    let error = pipeline.run(&request("d-badsecret"), &Silent).await.unwrap_err();
    assert_eq!(error.disposition(), Disposition::Abort, "{error}");
    assert!(
        matches!(error, RenderError::Storage(StorageError::Rejected { .. })),
        "{error:?}"
    );
    assert!(error.to_string().contains("Invalid Signature"), "{error}");
    assert!(!error.to_string().contains("not-the-secret"), "{error}");
    let statuses = mock.upload_statuses();
    assert!(
        !statuses.is_empty() && statuses.iter().all(|status| *status == 401),
        "{statuses:?}"
    );
    let ids: Vec<String> = mock
        .upload_fields()
        .into_iter()
        .map(|f| f["public_id"].clone())
        .collect();
    let mut distinct = ids.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), ids.len(), "an asset was retried: {ids:?}");

    let stale = CloudinaryMock::start().await;
    stale.skew_clock_two_hours();
    let pipeline = build(&cloudinary_config(dir.path(), &stale, API_SECRET, false)).await;
    let error = pipeline.run(&request("d-stale"), &Silent).await.unwrap_err();
    assert_eq!(error.disposition(), Disposition::Abort, "{error}");
    assert!(error.to_string().contains("Stale request"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudinary_server_errors_are_retried_within_the_upload_then_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let mock = CloudinaryMock::start().await;
    mock.fail_next(&[500, 420]);
    let pipeline = build(&cloudinary_config(dir.path(), &mock, API_SECRET, false)).await;
    let output = pipeline
        .run(&request("d-retry"), &Silent)
        .await
        .expect("render after retries");
    assert_eq!(metadata(&output)["storage"]["backend"], "cloudinary");
    let statuses = mock.upload_statuses();
    assert_eq!(
        statuses.iter().filter(|status| **status == 200).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(statuses.len(), 7, "two failed tries, each retried: {statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cloudinary_outage_is_transient_or_falls_back_to_local_storage_when_enabled() {
    let dir = tempfile::tempdir().unwrap();
    let mock = CloudinaryMock::start().await;
    mock.fail_next(&[503; 200]);
    let pipeline = build(&cloudinary_config(dir.path(), &mock, API_SECRET, false)).await;
    let error = pipeline.run(&request("d-outage"), &Silent).await.unwrap_err();
    assert_eq!(error.disposition(), Disposition::Retry, "{error}");
    assert!(error.to_string().contains("after 3 tries"), "{error}");

    let pipeline = build(&cloudinary_config(dir.path(), &mock, API_SECRET, true)).await;
    let output = pipeline.run(&request("d-fallback"), &Silent).await.expect("fell back");
    let storage = &metadata(&output)["storage"];
    assert_eq!(storage["backend"], "local", "{storage}");
    assert_eq!(storage["fallbackFrom"], "cloudinary", "{storage}");
    assert!(
        storage["reason"].as_str().unwrap_or_default().contains("HTTP 503"),
        "{storage}"
    );
    assert_eq!(storage["fellBack"].as_array().map(Vec::len), Some(5), "{storage}");
    let path = url::Url::parse(&output.high_res_url).unwrap().to_file_path().unwrap();
    assert!(path.starts_with(dir.path().join("storage").canonicalize().unwrap()));
    assert!(std::fs::read(path).unwrap().starts_with(b"\x89PNG"));
}

/// `render` and the queue worker both write every asset to the bucket, with the content type
/// and cache headers; the row keeps `PUBLIC_BASE_URL` + key; a re-run rewrites the same keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn render_and_the_queue_worker_write_every_asset_to_an_s3_bucket() {
    let bucket = TestBucket::new("e2e").await;
    let public = "https://cdn.example.com/";
    let dir = tempfile::tempdir().unwrap();
    let render = |design: &str| {
        Command::new(env!("CARGO_BIN_EXE_design-render"))
            .args([
                "render",
                "--json",
                "--design-id",
                design,
                "--prompt",
                "brick",
                "--normal-map",
            ])
            .arg("--base")
            .arg(project_file("examples/base.png"))
            .arg("--mask")
            .arg(project_file("examples/mask.png"))
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env(
                "DATABASE_URL",
                format!("sqlite://{}", dir.path().join("r.db").display()),
            )
            .envs(bucket.env(public))
            .output()
            .expect("render runs")
    };
    let first = render("d-s3");
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let output: Value = serde_json::from_slice(&first.stdout).expect("JSON");
    assert_eq!(output["metadata"]["storage"], json!({"backend": "s3"}));
    let urls: Vec<String> = ["compositeTextureUrl", "highResUrl", "previewUrl"]
        .iter()
        .map(|key| output[key].as_str().expect("url").to_owned())
        .chain(output["metadata"]["normalMapUrl"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(urls.len(), 4);
    for url in &urls {
        let key = url
            .strip_prefix(public)
            .unwrap_or_else(|| panic!("{url} is not under {public}"));
        assert!(key.starts_with("renders/local/d-s3/"), "{key}");
        let object = bucket.fetch(key).await;
        assert_eq!(object.status(), 200, "{key}");
        assert_eq!(object.headers()["content-type"], "image/png");
        assert_eq!(object.headers()["cache-control"], "public, max-age=31536000, immutable");
    }
    // Idempotent: the same render writes the same keys again.
    let again = render("d-s3");
    assert!(again.status.success());
    let again: Value = serde_json::from_slice(&again.stdout).expect("JSON");
    assert_eq!(again["highResUrl"], output["highResUrl"]);

    // The queue worker, same bucket, a Design row in PostgreSQL.
    let schema = PgSchema::new().await;
    let setup = QueueSetup::new("s3");
    let assets = asset_server(Duration::ZERO).await;
    let design = unique("s3");
    schema.insert_design(&design, "tenant-s3").await;
    let env = bucket.env(public);
    let env: Vec<(&str, &str)> = env.iter().map(|(name, value)| (*name, value.as_str())).collect();
    let _worker = setup.spawn_worker(&schema.url(), &env);
    let events = setup.events().await;
    let queue = Queue::with_options(&setup.queue, setup.queue_options()).await.unwrap();
    queue
        .add(
            "render",
            payload(&design, "tenant-s3", &format!("{}/base.png", assets.uri())),
        )
        .await
        .unwrap();
    await_completed(&events, 1).await;
    let row = schema.design(&design).await;
    assert_eq!(row.status, DesignStatus::Completed);
    let high_res = row.high_res_url.expect("high-res URL");
    let key = high_res.strip_prefix(public).expect("PUBLIC_BASE_URL + key");
    assert!(
        key.starts_with(&format!("renders/tenant-s3/{design}/highres-")),
        "{key}"
    );
    assert_eq!(bucket.fetch(key).await.status(), 200);
    teardown(queue, events, setup, schema).await;
}

fn storage_check(dir: &std::path::Path, env: &[(&str, String)]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_design-render"))
        .args(["storage", "check"])
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().map(|(name, value)| (*name, value.as_str())))
        .output()
        .expect("design-render runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_check_proves_the_backend_works_or_exits_78_on_bad_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = TestBucket::new("check").await;
    let output = storage_check(dir.path(), &bucket.env("https://cdn.example.com/"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for step in ["write     ok", "read back ok", "delete    ok", "storage s3 works"] {
        assert!(stdout.contains(step), "{step} missing: {stdout}");
    }
    let key = stdout
        .lines()
        .find_map(|line| {
            line.split_whitespace()
                .last()
                .filter(|word| word.starts_with("_design-render-check/"))
        })
        .expect("the deleted key");
    assert_eq!(bucket.fetch(key).await.status(), 404, "the probe object is gone");

    let mock = CloudinaryMock::start().await;
    let output = storage_check(
        dir.path(),
        &[
            ("CLOUDINARY_URL", format!("cloudinary://{API_KEY}:wrong-secret@{CLOUD}")),
            ("CLOUDINARY_UPLOAD_PREFIX", mock.prefix()),
        ],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("Invalid Signature"), "{stderr}");
    assert!(!stderr.contains("wrong-secret"), "{stderr}");
}
