//! Issue 15: the result cache. A render identical to an earlier one of the same tenant reuses its
//! outputs without asking the provider (a loopback OpenAI mock that counts what it receives);
//! any changed input renders again; two workers rendering one key at once pay for one call.

use std::path::Path;
use std::time::Duration;

use bullmq::Queue;
use design_render::app::Mode;
use design_render::config::{CacheMode, Config, Secret, StorageBackend};
use design_render::job::RenderRequest;
use design_render::pipeline::{Pipeline, RenderOutput, Silent};
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer};

use super::helpers::cloudinary::{API_SECRET, CLOUD, CloudinaryMock};
use super::helpers::queue::{HeldAssetServer, QueueSetup, await_completed, payload};
use super::helpers::{self, PgSchema, edits_ok, unique};

/// What the OpenAI mock's answer costs with gpt-image-1, in micro-cents (see `providers.rs`).
const CALL_MICRO_CENTS: u64 = 16_727_500;

async fn openai_mock() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/images/edits"))
        .respond_with(edits_ok("req-cache"))
        .mount(&server)
        .await;
    server
}

fn config(dir: &Path, openai: &MockServer, mode: CacheMode) -> Config {
    let mut config = Config::for_tests(dir);
    config.providers.openai_api_key = Some(Secret::new("sk-test-abcdef0123456789"));
    config.providers.openai_base_url = url::Url::parse(&format!("{}/v1", openai.uri())).unwrap();
    config.providers.openai_image_model = "gpt-image-1".into();
    config.result_cache.mode = mode;
    config
}

async fn pipeline(config: &Config) -> Pipeline {
    helpers::pipeline(config, Mode::OneShot).await
}

/// A 64x48 base and a centred square mask in `dir`; the mask's first pixel is `corner`.
fn inputs(dir: &Path, corner: u8) -> (String, String) {
    let base = dir.join("base.png");
    std::fs::write(&base, helpers::gradient_png(64, 48)).unwrap();
    let mut mask = image::load_from_memory(&helpers::square_mask_png(64, 48))
        .unwrap()
        .to_rgba8();
    mask.put_pixel(0, 0, image::Rgba([corner, corner, corner, 255]));
    let mask_path = dir.join(format!("mask-{corner}.png"));
    std::fs::write(
        &mask_path,
        design_render::imaging::codec::encode_rgba_png(&mask).unwrap(),
    )
    .unwrap();
    (base.display().to_string(), mask_path.display().to_string())
}

struct Job {
    tenant: &'static str,
    prompt: &'static str,
    mask_corner: u8,
    options: Value,
}

const SAME: Job = Job {
    tenant: "tenant-1",
    prompt: "weathered red brick",
    mask_corner: 0,
    options: Value::Null,
};

async fn render(pipeline: &Pipeline, dir: &Path, design: &str, job: &Job) -> RenderOutput {
    let (base, mask) = inputs(dir, job.mask_corner);
    let mut options = json!({"quality": "hd", "size": "128x128"});
    if let Value::Object(extra) = &job.options {
        options.as_object_mut().unwrap().extend(extra.clone());
    }
    let payload = json!({
        "designId": design,
        "tenantId": job.tenant,
        "prompt": job.prompt,
        "baseTextureUrl": base,
        "maskUrl": mask,
        "renderOptions": options,
    });
    let request = RenderRequest::from_json(payload.to_string().as_bytes()).unwrap();
    pipeline.run(&request, &Silent).await.expect("the render completes")
}

fn cache_of(output: &RenderOutput) -> Value {
    helpers::json(&output.metadata)["cache"].clone()
}

#[tokio::test]
async fn an_identical_render_reuses_the_outputs_and_any_changed_input_renders_again() {
    let dir = tempfile::tempdir().unwrap();
    let openai = openai_mock().await;
    let config = config(dir.path(), &openai, CacheMode::On);
    let pipeline = pipeline(&config).await;
    let calls = || async { openai.received_requests().await.unwrap().len() };

    let first = render(&pipeline, dir.path(), "design-1", &SAME).await;
    assert_eq!(calls().await, 1);
    let first_cache = cache_of(&first);
    assert_eq!(first_cache["hit"], false, "{first_cache}");
    let key = first_cache["key"].as_str().unwrap().to_owned();
    assert_eq!(key.len(), 64);
    assert_eq!(first.cost_cents, 17);

    let second = render(&pipeline, dir.path(), "design-2", &SAME).await;
    assert_eq!(calls().await, 1, "the identical render asked OpenAI again");
    assert_eq!(
        cache_of(&second),
        json!({"hit": true, "key": key, "sourceDesignId": "design-1", "savedMicroCents": CALL_MICRO_CENTS})
    );
    assert_eq!((second.cost_tokens, second.cost_cents), (0, 0));
    assert_eq!(second.composite_texture_url, first.composite_texture_url);
    assert_eq!(second.high_res_url, first.high_res_url);
    assert_eq!(second.preview_url, first.preview_url);
    let metadata = helpers::json(&second.metadata);
    assert_eq!(metadata["provider"], "openai");
    assert_eq!(metadata["usage"]["inputTokens"], 0);
    assert!(metadata.get("postprocess").is_none(), "{metadata}");
    let row = pipeline
        .designs
        .get(&design_render::job::DesignId::parse("design-2").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((row.cost_tokens, row.cost_cents), (0, 0));
    assert_eq!(row.metadata.unwrap()["cache"]["hit"], true);

    // Each change is a miss that pays for a call of its own.
    let changes = [
        (
            "a changed prompt",
            Job {
                prompt: "mossy red brick",
                ..SAME
            },
        ),
        ("a changed mask byte", Job { mask_corner: 1, ..SAME }),
        (
            "a changed option",
            Job {
                options: json!({"generateNormalMap": true}),
                ..SAME
            },
        ),
        (
            "another tenant",
            Job {
                tenant: "tenant-2",
                ..SAME
            },
        ),
    ];
    for (number, (change, job)) in changes.iter().enumerate() {
        let output = render(&pipeline, dir.path(), &format!("design-change-{number}"), job).await;
        assert_eq!(calls().await, 2 + number, "{change} was served from the cache");
        let cache = cache_of(&output);
        assert_eq!(cache["hit"], false, "{change}: {cache}");
        assert_ne!(cache["key"], key.as_str(), "{change} kept the key");
        assert_eq!(output.cost_cents, 17, "{change}");
    }

    // A job may opt out: it renders, and the cache is not part of its metadata.
    let opted_out = render(
        &pipeline,
        dir.path(),
        "design-opt-out",
        &Job {
            options: json!({"cache": false}),
            ..SAME
        },
    )
    .await;
    assert_eq!(calls().await, 6);
    assert_eq!(cache_of(&opted_out), Value::Null);

    // A new process has an empty index: the durable manifest beside the assets answers.
    let restarted = self::pipeline(&config).await;
    let after_restart = render(&restarted, dir.path(), "design-3", &SAME).await;
    assert_eq!(calls().await, 6, "the durable manifest was not used");
    assert_eq!(cache_of(&after_restart)["sourceDesignId"], "design-1");
    assert_eq!(after_restart.composite_texture_url, first.composite_texture_url);
}

#[tokio::test]
async fn the_cache_is_on_by_default_only_for_the_deterministic_fill_and_never_for_dry_runs() {
    let dir = tempfile::tempdir().unwrap();
    let openai = openai_mock().await;
    let cached = |config: &Config| {
        let config = config.clone();
        async move { pipeline(&config).await.cache.is_some() }
    };
    let auto = config(dir.path(), &openai, CacheMode::Auto);
    assert!(
        !cached(&auto).await,
        "a generative provider was cached without RESULT_CACHE=on"
    );
    assert!(cached(&config(dir.path(), &openai, CacheMode::On)).await);
    let mut fill = Config::for_tests(dir.path());
    fill.result_cache.mode = CacheMode::Auto;
    assert!(
        cached(&fill).await,
        "the built-in fill is deterministic: cached by default"
    );
    fill.result_cache.mode = CacheMode::Off;
    assert!(!cached(&fill).await);
    let mut dry_run = config(dir.path(), &openai, CacheMode::On);
    dry_run.providers.dry_run = true;
    assert!(!cached(&dry_run).await, "a dry run's stand-in image was cached");
}

/// Two worker processes, each with one job of the same inputs, both held mid-download until the
/// test releases them: one renders (a slow OpenAI answer), the other waits for its manifest.
#[tokio::test]
async fn two_workers_rendering_one_key_at_once_pay_for_one_call() {
    helpers::init();
    let schema = PgSchema::new().await;
    let setup = QueueSetup::new("cache-two-workers");
    let mut assets = HeldAssetServer::start().await;
    let openai = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/images/edits"))
        .respond_with(edits_ok("req-once").set_delay(Duration::from_millis(1500)))
        .mount(&openai)
        .await;
    let openai_url = format!("{}/v1", openai.uri());
    let env = [
        ("RENDER_PROVIDERS", "openai"),
        ("OPENAI_API_KEY", "sk-test-abcdef0123456789"),
        ("OPENAI_BASE_URL", openai_url.as_str()),
        ("OPENAI_IMAGE_MODEL", "gpt-image-1"),
        ("WORKER_CONCURRENCY", "1"),
        ("RESULT_CACHE", "on"),
    ];
    let mut workers = [
        setup.spawn_worker(&schema.url(), &env),
        setup.spawn_worker(&schema.url(), &env),
    ];
    let mut admin = Vec::new();
    for worker in &mut workers {
        worker.wait_for_log("result cache on for openai").await;
        admin.push(worker.admin_base().await);
    }
    let queue = Queue::with_options(&setup.queue, setup.queue_options()).await.unwrap();
    let events = setup.events().await;
    let designs = [unique("cache-a"), unique("cache-b")];
    for design in &designs {
        schema.insert_design(design, "tenant-c").await;
        queue
            .add("render", payload(design, "tenant-c", assets.base_url()))
            .await
            .unwrap();
    }
    // Each worker (one job at a time) holds one of the jobs in its download.
    assets.request_arrived().await;
    assets.request_arrived().await;
    assets.release();
    let [first, second] = &mut workers;
    let waiting = "is rendering the same inputs; waiting for it";
    tokio::select! {
        _ = first.wait_for_log(waiting) => {}
        _ = second.wait_for_log(waiting) => {}
    }
    await_completed(&events, 2).await;
    assert_eq!(
        openai.received_requests().await.unwrap().len(),
        1,
        "two paid calls for one key"
    );
    let rows = [schema.design(&designs[0]).await, schema.design(&designs[1]).await];
    let hits: Vec<&design_render::store::DesignRow> = rows
        .iter()
        .filter(|row| row.metadata.as_ref().unwrap()["cache"]["hit"] == true)
        .collect();
    assert_eq!(hits.len(), 1, "exactly one render reused the other's");
    let hit = hits[0];
    let source = rows.iter().find(|row| row.id != hit.id).unwrap();
    let cache = &hit.metadata.as_ref().unwrap()["cache"];
    assert_eq!(cache["sourceDesignId"], source.id.as_str());
    assert_eq!(cache["savedMicroCents"], CALL_MICRO_CENTS);
    assert_eq!(hit.composite_texture_url, source.composite_texture_url);
    assert_eq!((hit.cost_cents, source.cost_cents), (0, 17));

    // Between them, the two workers' /metrics count one hit, one miss and the saving.
    let mut totals = [0.0; 3];
    for base in &admin {
        let metrics = reqwest::get(format!("{base}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let counted = |name: &str, labels: &[(&str, &str)]| helpers::sample(&metrics, name, labels).unwrap_or(0.0);
        totals[0] += counted("design_render_result_cache_lookups_total", &[("outcome", "hit")]);
        totals[1] += counted("design_render_result_cache_lookups_total", &[("outcome", "miss")]);
        totals[2] += counted("design_render_result_cache_saved_microcents_total", &[]);
    }
    assert_eq!(totals, [1.0, 1.0, CALL_MICRO_CENTS as f64]);
}

/// On Cloudinary the durable manifest is a raw asset beside the images, and a worker whose
/// index is empty (a restart, a flushed Redis) reads it back through the delivery URL.
#[tokio::test]
async fn on_cloudinary_a_restarted_worker_finds_the_manifest_through_the_delivery_url() {
    let dir = tempfile::tempdir().unwrap();
    let mock = CloudinaryMock::start().await;
    let mut config = Config::for_tests(dir.path());
    config.storage.backend = StorageBackend::Cloudinary(mock.storage(API_SECRET));
    // The built-in fill is deterministic, so the default mode caches it.
    config.result_cache.mode = CacheMode::Auto;

    let first = render(&pipeline(&config).await, dir.path(), "design-1", &SAME).await;
    let key = cache_of(&first)["key"].as_str().unwrap().to_owned();
    let manifest = mock
        .held("raw", &format!("cache/tenant-1/{key}.json"))
        .expect("the manifest is a raw asset with its extension");
    let manifest: Value = serde_json::from_slice(&manifest).unwrap();
    assert_eq!(manifest["sourceDesignId"], "design-1", "{manifest}");
    let uploads = mock.upload_statuses().len();
    assert_eq!(uploads, 4, "three images and the manifest");

    let restarted = pipeline(&config).await;
    let second = render(&restarted, dir.path(), "design-2", &SAME).await;
    let cache = cache_of(&second);
    assert_eq!(cache["hit"], true, "{cache}");
    assert_eq!(cache["sourceDesignId"], "design-1");
    assert_eq!(second.composite_texture_url, first.composite_texture_url);
    assert!(
        first
            .composite_texture_url
            .contains(&format!("/{CLOUD}/image/upload/v")),
        "{}",
        first.composite_texture_url
    );
    assert_eq!(mock.upload_statuses().len(), uploads, "a hit uploaded again");
}
