//! Issue 5: the OpenAI and local diffusion providers against loopback mock servers that parse
//! what we send the way the reference describes, plus breakers, fallback, dry run, safety and
//! cost accounting through the real pipeline (SQLite in a temp dir). The last tests drive the
//! pipeline with the in-memory adapters (`ScriptedEditor`, `MemoryAssets`) instead.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use design_render::app::{self, Mode};
use design_render::assets::memory::MemoryAssets;
use design_render::assets::{AssetError, AssetRole};
use design_render::config::{Config, ProviderKind, Secret};
use design_render::failure::JobError;
use design_render::job::{DesignId, RenderRequest, TenantId};
use design_render::pipeline::{Disposition, Pipeline, RenderError, Silent};
use design_render::providers::scripted::{Answer, ScriptedEditor, ScriptedImage, paid_call};
use design_render::providers::{ProviderError, Usage};
use design_render::storage::flaky::{Fault, FaultPlan, FlakyBlobStore};
use design_render::store::{DesignStatus, PaidCallEntry};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use super::helpers;
use super::helpers::edits_ok;

const KEY: &str = "sk-test-abcdef0123456789";

/// Base 64x64 and a centred square mask, written to `dir`.
fn inputs(dir: &Path) -> (String, String) {
    let base = dir.join("base.png");
    let mask = dir.join("mask.png");
    std::fs::write(&base, helpers::gradient_png(64, 48)).unwrap();
    std::fs::write(&mask, helpers::square_mask_png(64, 48)).unwrap();
    (base.display().to_string(), mask.display().to_string())
}

fn request(dir: &Path, design: &str, prompt: &str) -> RenderRequest {
    let (base, mask) = inputs(dir);
    let payload = serde_json::json!({
        "designId": design,
        "tenantId": "tenant-1",
        "prompt": prompt,
        "baseTextureUrl": base,
        "maskUrl": mask,
        "renderOptions": {"quality": "hd", "size": "128x128"},
    });
    RenderRequest::from_json(payload.to_string().as_bytes()).unwrap()
}

fn openai_config(dir: &Path, server: &MockServer) -> Config {
    let mut config = Config::for_tests(dir);
    config.providers.openai_api_key = Some(Secret::new(KEY));
    config.providers.openai_base_url = url::Url::parse(&format!("{}/v1", server.uri())).unwrap();
    config.providers.openai_image_model = "gpt-image-1".into();
    config.providers.openai_timeout = Duration::from_secs(5);
    config
}

async fn pipeline(config: &Config) -> Pipeline {
    helpers::init();
    app::build_pipeline(config, Mode::OneShot).await.unwrap()
}

fn png_b64(width: u32, height: u32) -> String {
    base64::engine::general_purpose::STANDARD.encode(helpers::gradient_png(width, height))
}

/// gpt-image-1: 45 × 500 + 65 × 1000 + 4160 × 4000 micro-cents = 16 727 500 → 17 cents.
const EXPECTED_CENTS: i32 = 17;

/// The parts of a multipart body: (name, content type, bytes).
fn multipart(request: &Request) -> Vec<(String, Option<String>, Vec<u8>)> {
    let content_type = request
        .headers
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let boundary = content_type
        .split("boundary=")
        .nth(1)
        .unwrap()
        .trim_matches('"')
        .to_owned();
    let delimiter = format!("--{boundary}").into_bytes();
    let body = &request.body;
    let mut starts = Vec::new();
    let mut index = 0;
    while index + delimiter.len() <= body.len() {
        if body[index..].starts_with(&delimiter) {
            starts.push(index);
            index += delimiter.len();
        } else {
            index += 1;
        }
    }
    let mut parts = Vec::new();
    for pair in starts.windows(2) {
        let chunk = &body[pair[0] + delimiter.len()..pair[1]];
        let chunk = chunk.strip_prefix(b"\r\n").unwrap_or(chunk);
        let chunk = chunk.strip_suffix(b"\r\n").unwrap_or(chunk);
        let split = chunk.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = String::from_utf8_lossy(&chunk[..split]).to_string();
        let data = chunk[split + 4..].to_vec();
        let name = head
            .split("name=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .to_owned();
        let part_type = head
            .lines()
            .find(|line| line.to_ascii_lowercase().starts_with("content-type:"))
            .map(|line| line[13..].trim().to_owned());
        parts.push((name, part_type, data));
    }
    parts
}

fn text_field(parts: &[(String, Option<String>, Vec<u8>)], name: &str) -> Option<String> {
    parts
        .iter()
        .find(|(n, _, _)| n == name)
        .map(|(_, _, data)| String::from_utf8(data.clone()).unwrap())
}

/// Answers like the edits endpoint, after rejecting what the real service would reject.
fn strict_edits(request_ids: Arc<AtomicUsize>) -> impl Fn(&Request) -> ResponseTemplate + Send + Sync {
    move |request: &Request| {
        let bad = |message: &str| {
            ResponseTemplate::new(400).set_body_json(serde_json::json!({
                "error": {"message": message, "type": "invalid_request_error", "param": null, "code": null}
            }))
        };
        let auth = request
            .headers
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_owned());
        if auth.as_deref() != Some(&format!("Bearer {KEY}")) {
            return ResponseTemplate::new(401).set_body_json(serde_json::json!({
                "error": {"message": "Incorrect API key provided: sk-test-ab****6789.", "type": "invalid_request_error",
                          "param": null, "code": "invalid_api_key"}
            }));
        }
        let parts = multipart(request);
        if text_field(&parts, "model").as_deref() != Some("gpt-image-1") {
            return bad("model");
        }
        if !matches!(
            text_field(&parts, "size").as_deref(),
            Some("1024x1024" | "1536x1024" | "1024x1536" | "auto")
        ) {
            return bad("size");
        }
        if text_field(&parts, "quality").as_deref() != Some("high") {
            return bad("quality (hd must become high)");
        }
        let Some(prompt) = text_field(&parts, "prompt") else {
            return bad("prompt required");
        };
        if prompt.contains('@') || prompt.contains("555") {
            return bad("PII reached the provider");
        }
        let Some((_, Some(image_type), image)) = parts.iter().find(|(n, _, _)| n == "image[]" || n == "image") else {
            return bad("image");
        };
        let Some((_, Some(mask_type), mask)) = parts.iter().find(|(n, _, _)| n == "mask") else {
            return bad("mask");
        };
        if image_type != "image/png" || mask_type != "image/png" {
            return bad("unsupported mimetype");
        }
        let image = image::load_from_memory(image).unwrap();
        let mask = image::load_from_memory(mask).unwrap();
        if !mask.color().has_alpha() {
            return bad("Invalid input image - format must be in ['RGBA', 'LA', 'L'], got RGB.");
        }
        if (image.width(), image.height()) != (mask.width(), mask.height()) {
            return bad("mask size mismatch");
        }
        let mask = mask.to_rgba8();
        // Centre is regenerated (transparent), the corner kept (opaque).
        if mask.get_pixel(32, 24).0[3] != 0 || mask.get_pixel(0, 0).0[3] != 255 {
            return bad("mask convention");
        }
        let id = request_ids.fetch_add(1, Ordering::SeqCst);
        edits_ok(&format!("req_{id}"))
    }
}

/// An OpenAI mock that answers edits with [`strict_edits`] and expects exactly `edits` of them.
async fn strict_openai(edits: u64) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/images/edits"))
        .respond_with(strict_edits(Arc::new(AtomicUsize::new(0))))
        .expect(edits)
        .mount(&server)
        .await;
    server
}

#[tokio::test]
async fn openai_success_records_usage_cost_and_sends_the_reference_request_shape() {
    let dir = tempfile::tempdir().unwrap();
    let server = strict_openai(1).await;
    let config = openai_config(dir.path(), &server);
    let pipeline = pipeline(&config).await;
    let prompt = "marble texture, mail me at jane.doe@example.com or call +1 555 123 4567";
    let output = pipeline
        .run(&request(dir.path(), "d-ok", prompt), &Silent)
        .await
        .unwrap();
    assert_eq!(output.cost_tokens, 4270);
    assert_eq!(output.cost_cents, EXPECTED_CENTS);
    assert_eq!(helpers::json(&output.metadata)["provider"], "openai");
    assert_eq!(helpers::json(&output.metadata)["providerAttempts"][0]["outcome"], "ok");
    assert_eq!(
        helpers::json(&output.metadata)["cost"]["calls"]["openai:req_0"]["tokens"],
        4270
    );
    assert_eq!(helpers::json(&output.metadata)["cost"]["totalMicroCents"], 16_727_500);
    let row = pipeline
        .designs
        .get(&DesignId::parse("d-ok").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((row.cost_tokens, row.cost_cents), (4270, EXPECTED_CENTS));
}

#[tokio::test]
async fn content_policy_is_permanent_and_does_not_count_against_the_breaker() {
    let dir = tempfile::tempdir().unwrap();
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/images/edits"))
        .respond_with(ResponseTemplate::new(400).set_body_json(serde_json::json!({
            "error": {"message": "Your request was rejected by the safety system. safety_violations=[violence].",
                      "type": "image_generation_user_error", "param": null, "code": "moderation_blocked",
                      "moderation_details": {"moderation_stage": "input", "categories": ["violence"]}}
        })))
        .expect(3)
        .mount(&server)
        .await;
    let mut config = openai_config(dir.path(), &server);
    config.providers.circuit_breaker_threshold = 1;
    let pipeline = pipeline(&config).await;
    for _ in 0..3 {
        let error = pipeline
            .run(&request(dir.path(), "d-policy", "a castle"), &Silent)
            .await
            .unwrap_err();
        assert_eq!(error.disposition(), Disposition::Abort);
        assert_eq!(error.code(), "provider_content_blocked");
        assert!(
            error.to_string().contains("blocked by provider (category: violence)"),
            "{error}"
        );
    }
    // Three calls reached the mock with a threshold of 1: the breaker never opened.
}

// `tokio::time::pause` needs the current-thread runtime; spelled out because the test relies on it.
#[tokio::test(flavor = "current_thread")]
async fn five_server_errors_open_the_breaker_fall_back_and_then_one_probe_closes_it() {
    let dir = tempfile::tempdir().unwrap();
    let openai = MockServer::start().await;
    let local = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/images/edits"))
        .respond_with(ResponseTemplate::new(500).set_body_json(serde_json::json!({
            "error": {"message": "The server had an error while processing your request.", "type": "server_error",
                      "param": null, "code": null}
        })))
        .up_to_n_times(5)
        .with_priority(1)
        .mount(&openai)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/images/edits"))
        .respond_with(edits_ok("req_probe"))
        .with_priority(2)
        .mount(&openai)
        .await;
    Mock::given(method("POST"))
        .and(path("/sdapi/v1/img2img"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "images": [png_b64(64, 64)], "parameters": {}, "info": "{}"
        })))
        .mount(&local)
        .await;
    let mut config = openai_config(dir.path(), &openai);
    config.providers.local_diffusion_url = Some(url::Url::parse(&local.uri()).unwrap());
    let pipeline = pipeline(&config).await;
    for attempt in 0..5 {
        let output = pipeline
            .run(&request(dir.path(), "d-breaker", "brick wall"), &Silent)
            .await
            .unwrap();
        assert_eq!(
            helpers::json(&output.metadata)["provider"],
            "local-diffusion",
            "attempt {attempt}"
        );
        assert_eq!(
            helpers::json(&output.metadata)["providerAttempts"][0]["outcome"],
            "provider_unavailable"
        );
    }
    assert_eq!(received(&openai).await, 5);
    // Open: OpenAI is skipped without a request.
    let output = pipeline
        .run(&request(dir.path(), "d-breaker", "brick wall"), &Silent)
        .await
        .unwrap();
    assert_eq!(helpers::json(&output.metadata)["provider"], "local-diffusion");
    assert_eq!(
        helpers::json(&output.metadata)["providerAttempts"][0]["outcome"],
        "provider_circuit_open"
    );
    assert_eq!(received(&openai).await, 5);
    // After CIRCUIT_BREAKER_TIMEOUT the single probe goes through, succeeds and closes it.
    // The breaker reads tokio's clock. Time is paused only while nothing is in flight, and
    // resumed before the next request: auto-advance on a paused clock would fire reqwest's and
    // the pool's timers while the mock servers answer over real sockets.
    tokio::time::pause();
    tokio::time::advance(Duration::from_millis(60_001)).await;
    tokio::time::resume();
    let output = pipeline
        .run(&request(dir.path(), "d-breaker", "brick wall"), &Silent)
        .await
        .unwrap();
    assert_eq!(helpers::json(&output.metadata)["provider"], "openai");
    assert_eq!(received(&openai).await, 6);
    let output = pipeline
        .run(&request(dir.path(), "d-breaker", "brick wall"), &Silent)
        .await
        .unwrap();
    assert_eq!(helpers::json(&output.metadata)["provider"], "openai");
    assert_eq!(received(&openai).await, 7);
    assert_eq!(received(&local).await, 6);
}

#[tokio::test]
async fn a_failed_render_records_what_every_provider_did() {
    let dir = tempfile::tempdir().unwrap();
    let openai = MockServer::start().await;
    let local = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/images/edits"))
        .respond_with(ResponseTemplate::new(503).set_body_json(serde_json::json!({
            "error": {"message": "The engine is currently overloaded.", "type": "server_error",
                      "param": null, "code": null}
        })))
        .mount(&openai)
        .await;
    Mock::given(method("POST"))
        .and(path("/sdapi/v1/img2img"))
        .respond_with(ResponseTemplate::new(500).set_body_string("CUDA out of memory"))
        .mount(&local)
        .await;
    let mut config = openai_config(dir.path(), &openai);
    config.providers.local_diffusion_url = Some(url::Url::parse(&local.uri()).unwrap());
    config.providers.render_providers = Some(vec![ProviderKind::OpenAi, ProviderKind::LocalDiffusion]);
    let pipeline = pipeline(&config).await;
    let job = request(dir.path(), "d-exhausted", "weathered brick");

    let error = pipeline.run(&job, &Silent).await.unwrap_err();
    assert_eq!(error.code(), "providers_exhausted");
    assert_eq!(error.disposition(), Disposition::Retry);
    // As on a final attempt: the row is FAILED and says which provider did what.
    pipeline
        .record_failure(&job, &JobError::from(error).failed_render())
        .await
        .unwrap();
    let row = pipeline
        .designs
        .get(&DesignId::parse("d-exhausted").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.status, DesignStatus::Failed);
    let metadata = row.metadata.expect("metadata");
    assert_eq!(metadata["error"]["code"], "providers_exhausted");
    let attempts = metadata["providerAttempts"].as_array().expect("providerAttempts");
    let summary: Vec<(&str, &str)> = attempts
        .iter()
        .map(|attempt| {
            (
                attempt["provider"].as_str().unwrap_or_default(),
                attempt["outcome"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("openai", "provider_unavailable"),
            ("local-diffusion", "provider_unavailable")
        ]
    );
}

async fn received(server: &MockServer) -> usize {
    server.received_requests().await.unwrap().len()
}

#[tokio::test]
async fn rate_limit_is_transient_and_honours_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/images/edits"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "7")
                .set_body_json(serde_json::json!({
                    "error": {"message": "Rate limit reached for images", "type": "requests", "param": null,
                              "code": "rate_limit_exceeded"}
                })),
        )
        .expect(1)
        .mount(&server)
        .await;
    let config = openai_config(dir.path(), &server);
    let pipeline = pipeline(&config).await;
    let error = pipeline
        .run(&request(dir.path(), "d-429", "tiles"), &Silent)
        .await
        .unwrap_err();
    assert_eq!(error.disposition(), Disposition::Retry);
    let RenderError::Provider(provider) = &error else {
        panic!("expected a provider error, got {error}");
    };
    assert_eq!(provider.retry_after(), Some(Duration::from_secs(7)));
    assert!(provider.to_string().contains("rate limited"), "{provider}");
}

#[tokio::test]
async fn token_limit_fails_permanently_before_any_request() {
    let dir = tempfile::tempdir().unwrap();
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(edits_ok("x"))
        .expect(0)
        .mount(&server)
        .await;
    let mut config = openai_config(dir.path(), &server);
    config.providers.max_tokens_per_job = 1000; // hd at 1024x1024 alone is 4160 output tokens
    let pipeline = pipeline(&config).await;
    let error = pipeline
        .run(&request(dir.path(), "d-cap", "tiles"), &Silent)
        .await
        .unwrap_err();
    assert_eq!(error.disposition(), Disposition::Abort);
    assert_eq!(error.code(), "token_limit_exceeded");
}

#[tokio::test]
async fn the_token_cap_counts_what_earlier_attempts_of_the_same_job_used() {
    let dir = tempfile::tempdir().unwrap();
    // The first attempt of job-1 and the one attempt of job-2; never a second for job-1.
    let server = strict_openai(2).await;
    let mut config = openai_config(dir.path(), &server);
    // The estimate (6208 output + 135 image input + text) fits; with the 4270 tokens the first
    // call really used, a second estimate does not.
    config.providers.max_tokens_per_job = 8000;
    let mut pipeline = pipeline(&config).await;
    pipeline.blobs = Arc::new(FlakyBlobStore::with_plan(
        Arc::clone(&pipeline.blobs),
        FaultPlan::new().fail_next_puts(1, Fault::Unavailable),
    ));
    let job = request(dir.path(), "d-capped", "slate");
    let design = DesignId::parse("d-capped").unwrap();

    let error = pipeline.run_attempt(&job, "job-1", &Silent).await.unwrap_err();
    assert_eq!(error.disposition(), Disposition::Retry, "the upload failed: {error}");
    let row = pipeline.designs.get(&design).await.unwrap().unwrap();
    assert_eq!(row.tokens_recorded_by_job("job-1"), 4270);

    let error = pipeline.run_attempt(&job, "job-1", &Silent).await.unwrap_err();
    assert_eq!(error.code(), "token_limit_exceeded");
    assert_eq!(error.disposition(), Disposition::Abort);
    assert!(error.to_string().contains("4270 already used"), "{error}");
    assert_eq!(received(&server).await, 1, "no second paid call for job-1");

    // A new job for the same design starts with its own allowance.
    let output = pipeline.run_attempt(&job, "job-2", &Silent).await.unwrap();
    assert_eq!(output.cost_tokens, 2 * 4270, "the design's cost sums both jobs");
    let row = pipeline.designs.get(&design).await.unwrap().unwrap();
    assert_eq!(row.tokens_recorded_by_job("job-2"), 4270);
}

#[tokio::test]
async fn a_dry_run_is_stopped_by_the_token_cap_like_the_real_run() {
    let dir = tempfile::tempdir().unwrap();
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(edits_ok("x"))
        .expect(0)
        .mount(&server)
        .await;
    let mut config = openai_config(dir.path(), &server);
    config.providers.dry_run = true;
    config.providers.max_tokens_per_job = 1000;
    let pipeline = pipeline(&config).await;
    let error = pipeline
        .run(&request(dir.path(), "d-dry-cap", "tiles"), &Silent)
        .await
        .unwrap_err();
    assert_eq!(error.code(), "token_limit_exceeded");
    assert_eq!(error.disposition(), Disposition::Abort);
}

#[tokio::test]
async fn dry_run_makes_no_request_and_records_an_estimate_at_zero_cents() {
    let dir = tempfile::tempdir().unwrap();
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(edits_ok("x"))
        .expect(0)
        .mount(&server)
        .await;
    let mut config = openai_config(dir.path(), &server);
    config.providers.dry_run = true;
    let pipeline = pipeline(&config).await;
    let output = pipeline
        .run(&request(dir.path(), "d-dry", "tiles"), &Silent)
        .await
        .unwrap();
    assert_eq!(helpers::json(&output.metadata)["dryRun"], true);
    assert_eq!(output.cost_cents, 0);
    assert_eq!(helpers::json(&output.metadata)["provider"], "builtin");
    assert_eq!(helpers::json(&output.metadata)["estimate"]["model"], "gpt-image-1");
    // A 64x48 base is landscape: 1536x1024 at high quality is 6208 output tokens.
    assert_eq!(
        helpers::json(&output.metadata)["estimate"]["tokens"]["image_output"],
        6208
    );
    assert!(
        helpers::json(&output.metadata)["estimate"]["costMicroCents"]
            .as_u64()
            .unwrap()
            > 0
    );
}

#[tokio::test]
async fn blocked_and_obfuscated_prompts_never_reach_the_provider() {
    let dir = tempfile::tempdir().unwrap();
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(edits_ok("x"))
        .expect(0)
        .mount(&server)
        .await;
    let blocklist = dir.path().join("blocklist.txt");
    std::fs::write(&blocklist, "# test list\nviolence/graphic: severed head\n").unwrap();
    let mut config = openai_config(dir.path(), &server);
    config.providers.prompt_blocklist = Some(blocklist);
    let pipeline = pipeline(&config).await;
    for prompt in [
        "a severed head on marble",
        "a S3V3R3D  h e a d",
        "a s\u{0435}vered\u{200B} head", // Cyrillic look-alike and a zero-width space
    ] {
        let error = pipeline
            .run(&request(dir.path(), "d-blocked", prompt), &Silent)
            .await
            .unwrap_err();
        assert_eq!(error.code(), "prompt_blocked", "{prompt}");
        assert_eq!(error.disposition(), Disposition::Abort);
        assert!(error.to_string().contains("violence/graphic"), "{error}");
    }
}

#[tokio::test]
async fn moderation_pre_check_blocks_before_the_edit_and_names_the_category() {
    let dir = tempfile::tempdir().unwrap();
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/moderations"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "id": "modr-1", "model": "omni-moderation-latest",
            "results": [{"flagged": true,
                         "categories": {"harassment": false, "violence": true, "illicit": null},
                         "category_scores": {"violence": 0.99}, "category_applied_input_types": {"violence": ["text"]}}]
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/images/edits"))
        .respond_with(edits_ok("x"))
        .expect(0)
        .mount(&server)
        .await;
    let mut config = openai_config(dir.path(), &server);
    config.providers.openai_moderation_enabled = true;
    let pipeline = pipeline(&config).await;
    let error = pipeline
        .run(&request(dir.path(), "d-mod", "a fight"), &Silent)
        .await
        .unwrap_err();
    assert_eq!(error.code(), "prompt_blocked");
    assert_eq!(error.disposition(), Disposition::Abort);
    assert!(error.to_string().contains("violence"), "{error}");
}

#[tokio::test]
async fn a_refused_key_is_a_configuration_error_without_the_key_in_the_message() {
    let dir = tempfile::tempdir().unwrap();
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/images/edits"))
        .respond_with(strict_edits(Arc::new(AtomicUsize::new(0))))
        .mount(&server)
        .await;
    let mut config = openai_config(dir.path(), &server);
    config.providers.openai_api_key = Some(Secret::new("sk-wrong-SECRETSECRET"));
    let pipeline = pipeline(&config).await;
    let error = pipeline
        .run(&request(dir.path(), "d-401", "tiles"), &Silent)
        .await
        .unwrap_err();
    assert_eq!(error.code(), "provider_misconfigured");
    let text = format!("{error} {error:?}");
    assert!(!text.contains("SECRET") && !text.contains("abcdef"), "{text}");
}

#[tokio::test]
async fn a_retired_model_is_a_misconfiguration_and_the_chain_moves_on() {
    let dir = tempfile::tempdir().unwrap();
    let openai = MockServer::start().await;
    let local = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/images/edits"))
        .respond_with(ResponseTemplate::new(404).set_body_json(serde_json::json!({
            "error": {"message": "The model `gpt-image-1` does not exist or you do not have access to it.",
                      "type": "invalid_request_error", "param": null, "code": "model_not_found"}
        })))
        .expect(1)
        .mount(&openai)
        .await;
    Mock::given(method("POST"))
        .and(path("/sdapi/v1/img2img"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "images": [png_b64(64, 64)], "parameters": {}, "info": "{}"
        })))
        .expect(1)
        .mount(&local)
        .await;
    let mut config = openai_config(dir.path(), &openai);
    config.providers.local_diffusion_url = Some(url::Url::parse(&local.uri()).unwrap());
    let pipeline = pipeline(&config).await;
    let output = pipeline
        .run(&request(dir.path(), "d-retired", "brick wall"), &Silent)
        .await
        .expect("the next provider renders the job");
    let metadata = helpers::json(&output.metadata);
    assert_eq!(metadata["provider"], "local-diffusion");
    assert_eq!(metadata["providerAttempts"][0]["provider"], "openai");
    assert_eq!(metadata["providerAttempts"][0]["outcome"], "provider_misconfigured");
    assert_eq!((output.cost_tokens, output.cost_cents), (0, 0));
}

#[tokio::test]
async fn prompt_used_describes_the_provider_that_produced_the_image() {
    let dir = tempfile::tempdir().unwrap();
    let openai = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/images/edits"))
        .respond_with(strict_edits(Arc::new(AtomicUsize::new(0))))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&openai)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/images/edits"))
        .respond_with(ResponseTemplate::new(503))
        .with_priority(2)
        .mount(&openai)
        .await;
    let mut config = openai_config(dir.path(), &openai);
    // The built-in fill, which ignores the prompt, is the last resort of this chain.
    config.providers.render_providers = Some(vec![ProviderKind::OpenAi, ProviderKind::Builtin]);
    let pipeline = pipeline(&config).await;
    let by_openai = pipeline
        .run(&request(dir.path(), "d-prompt-1", "slate"), &Silent)
        .await
        .unwrap();
    let metadata = helpers::json(&by_openai.metadata);
    assert_eq!(
        (metadata["provider"].as_str(), metadata["promptUsed"].as_bool()),
        (Some("openai"), Some(true))
    );
    let by_fill = pipeline
        .run(&request(dir.path(), "d-prompt-2", "slate"), &Silent)
        .await
        .unwrap();
    let metadata = helpers::json(&by_fill.metadata);
    assert_eq!(
        (metadata["provider"].as_str(), metadata["promptUsed"].as_bool()),
        (Some("builtin"), Some(false))
    );
}

#[tokio::test]
async fn a_mask_that_selects_nothing_is_a_free_no_op_for_a_paid_provider() {
    let dir = tempfile::tempdir().unwrap();
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(edits_ok("x"))
        .expect(0)
        .mount(&server)
        .await;
    let config = openai_config(dir.path(), &server);
    let pipeline = pipeline(&config).await;
    let base = dir.path().join("base.png");
    std::fs::write(&base, helpers::gradient_png(64, 48)).unwrap();
    // All black, and separately fully transparent: both select nothing.
    let black = dir.path().join("black.png");
    let black_mask = image::RgbaImage::from_pixel(64, 48, image::Rgba([0, 0, 0, 255]));
    std::fs::write(
        &black,
        design_render::imaging::codec::encode_rgba_png(&black_mask).unwrap(),
    )
    .unwrap();
    let clear = dir.path().join("clear.png");
    let clear_mask = image::RgbaImage::from_pixel(64, 48, image::Rgba([255, 255, 255, 0]));
    std::fs::write(
        &clear,
        design_render::imaging::codec::encode_rgba_png(&clear_mask).unwrap(),
    )
    .unwrap();
    for (design, mask) in [("d-black", &black), ("d-clear", &clear)] {
        let payload = serde_json::json!({
            "designId": design, "tenantId": "tenant-1", "prompt": "slate",
            "baseTextureUrl": base.display().to_string(), "maskUrl": mask.display().to_string(),
            "renderOptions": {"size": "64x64"},
        });
        let job = RenderRequest::from_json(payload.to_string().as_bytes()).unwrap();
        let output = pipeline.run(&job, &Silent).await.unwrap();
        let metadata = helpers::json(&output.metadata);
        assert_eq!(metadata["provider"], "none", "{design}: {metadata}");
        assert_eq!(metadata["maskCoverage"], 0.0, "{design}");
        assert_eq!((output.cost_tokens, output.cost_cents), (0, 0), "{design}");
        assert!(metadata.get("cost").is_none(), "{design}: nothing was paid");
    }
    assert_eq!(received(&server).await, 0);
}

fn local_only(dir: &Path, server: &MockServer) -> Config {
    let mut config = Config::for_tests(dir);
    config.providers.local_diffusion_url = Some(url::Url::parse(&server.uri()).unwrap());
    config.providers.local_diffusion_timeout = Duration::from_millis(500);
    config
}

#[tokio::test]
async fn local_diffusion_success_sends_an_inpainting_body_and_costs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/sdapi/v1/img2img"))
        .respond_with(|request: &Request| {
            let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
            let decode = |text: &serde_json::Value| {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(text.as_str().unwrap())
                    .unwrap();
                image::load_from_memory(&bytes).unwrap()
            };
            let Some(init) = body["init_images"].get(0) else {
                return ResponseTemplate::new(404)
                    .set_body_json(serde_json::json!({"error": "HTTPException", "detail": "Init image not found"}));
            };
            let init = decode(init);
            let mask = decode(&body["mask"]).to_luma8();
            let ok = (init.width(), init.height()) == (mask.width(), mask.height())
                && mask.get_pixel(32, 24).0[0] == 255
                && mask.get_pixel(0, 0).0[0] == 0
                && body["prompt"] == "mossy stone"
                && body["width"].as_u64().unwrap().is_multiple_of(8)
                && body["inpainting_mask_invert"] == 0
                && body["denoising_strength"] == 0.75;
            if !ok {
                return ResponseTemplate::new(422).set_body_json(serde_json::json!({"detail": "bad body"}));
            }
            ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "images": [png_b64(64, 64)], "parameters": {}, "info": "{\"seed\": 1}"
            }))
        })
        .expect(1)
        .mount(&server)
        .await;
    let pipeline = pipeline(&local_only(dir.path(), &server)).await;
    let output = pipeline
        .run(&request(dir.path(), "d-local", "mossy stone"), &Silent)
        .await
        .unwrap();
    assert_eq!(helpers::json(&output.metadata)["provider"], "local-diffusion");
    assert_eq!((output.cost_tokens, output.cost_cents), (0, 0));
}

#[tokio::test]
async fn local_diffusion_timeout_and_garbage_are_transient_and_clear() {
    let dir = tempfile::tempdir().unwrap();
    let slow = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(5)))
        .mount(&slow)
        .await;
    let pipeline_slow = pipeline(&local_only(dir.path(), &slow)).await;
    let error = pipeline_slow
        .run(&request(dir.path(), "d-slow", "moss"), &Silent)
        .await
        .unwrap_err();
    assert_eq!(error.disposition(), Disposition::Retry);
    assert!(error.to_string().contains("timed out"), "{error}");

    let garbage = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"images": ["bm90IGFuIGltYWdl"]})))
        .mount(&garbage)
        .await;
    let other = tempfile::tempdir().unwrap();
    let pipeline_garbage = pipeline(&local_only(other.path(), &garbage)).await;
    let error = pipeline_garbage
        .run(&request(other.path(), "d-garbage", "moss"), &Silent)
        .await
        .unwrap_err();
    assert_eq!(error.disposition(), Disposition::Retry);
    assert!(error.to_string().contains("images[0] is not an image"), "{error}");
}

#[test]
fn provider_order_follows_render_providers_then_the_spec_default() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::for_tests(dir.path()).providers;
    config.openai_image_model = "gpt-image-1".into();
    assert_eq!(app::build_editor(&config).unwrap().order, vec!["builtin"]);
    config.openai_api_key = Some(Secret::new(KEY));
    config.local_diffusion_url = Some(url::Url::parse("http://127.0.0.1:7860").unwrap());
    assert_eq!(
        app::build_editor(&config).unwrap().order,
        vec!["openai", "local-diffusion"]
    );
    config.render_providers = Some(vec![
        ProviderKind::LocalDiffusion,
        ProviderKind::OpenAi,
        ProviderKind::Builtin,
    ]);
    assert_eq!(
        app::build_editor(&config).unwrap().order,
        vec!["local-diffusion", "openai", "builtin"]
    );
    config.openai_image_edit_enabled = false;
    assert!(app::build_editor(&config).is_err(), "listed but disabled");
    config.render_providers = None;
    assert_eq!(app::build_editor(&config).unwrap().order, vec!["local-diffusion"]);
    // The spec's configuration (a key and nothing else) starts with the default model priced.
    config.openai_image_edit_enabled = true;
    config.openai_image_model = "gpt-image-1.5".into();
    assert_eq!(
        app::build_editor(&config).unwrap().order,
        vec!["openai", "local-diffusion"]
    );
    // A model with no known price is refused at start-up, naming where to add one.
    config.openai_image_model = "gpt-image-2.5-sunburst".into();
    let error = app::build_editor(&config).err().unwrap();
    assert!(format!("{error:#}").contains("PRICE_TABLE_OVERRIDES"), "{error:#}");
}

#[tokio::test]
async fn cost_is_summed_across_a_retried_job_once_per_paid_call() {
    let dir = tempfile::tempdir().unwrap();
    let server = strict_openai(2).await;
    let config = openai_config(dir.path(), &server);
    let mut pipeline = pipeline(&config).await;
    pipeline.blobs = Arc::new(FlakyBlobStore::with_plan(
        Arc::clone(&pipeline.blobs),
        FaultPlan::new().fail_next_puts(1, Fault::Unavailable),
    ));
    let job = request(dir.path(), "d-retry", "slate");
    let design = DesignId::parse("d-retry").unwrap();
    let tenant = TenantId::parse("tenant-1").unwrap();

    // Attempt 1: the paid call succeeds, the upload fails. The cost is already on the row.
    let error = pipeline.run(&job, &Silent).await.unwrap_err();
    assert_eq!(error.disposition(), Disposition::Retry);
    let row = pipeline.designs.get(&design).await.unwrap().unwrap();
    assert_eq!((row.cost_tokens, row.cost_cents), (4270, EXPECTED_CENTS));
    // Recording a failure (as a last attempt would) does not wipe it.
    pipeline
        .record_failure(&job, &JobError::from(error).failed_render())
        .await
        .unwrap();
    let row = pipeline.designs.get(&design).await.unwrap().unwrap();
    assert_eq!(row.cost_tokens, 4270);

    // Replaying the bookkeeping of the same call counts it once.
    let calls = row.metadata.as_ref().unwrap()["cost"]["calls"]
        .as_object()
        .unwrap()
        .clone();
    assert_eq!(calls.len(), 1);
    let replay = PaidCallEntry {
        call_id: "openai:req_0".into(),
        tokens: 4270,
        micro_cents: 16_727_500,
        details: serde_json::json!({}),
    };
    let ledger = pipeline
        .designs
        .record_paid_call(&design, &tenant, &replay)
        .await
        .unwrap();
    assert_eq!(ledger.cost_tokens, 4270);

    // Attempt 2: a second, distinct paid call; the job completes with both counted.
    let output = pipeline.run(&job, &Silent).await.unwrap();
    assert_eq!(output.cost_tokens, 2 * 4270);
    assert_eq!(output.cost_cents, 34); // 33 455 000 micro-cents, rounded up once
    let row = pipeline.designs.get(&design).await.unwrap().unwrap();
    assert_eq!((row.cost_tokens, row.cost_cents), (2 * 4270, 34));
    let calls = row.metadata.as_ref().unwrap()["cost"]["calls"]
        .as_object()
        .unwrap()
        .clone();
    assert_eq!(
        calls.keys().cloned().collect::<Vec<_>>(),
        vec!["openai:req_0", "openai:req_1"]
    );
}

#[test]
fn provider_errors_never_print_the_key() {
    let error = ProviderError::Misconfigured {
        provider: "openai",
        reason: design_render::providers::openai::scrub(&format!("Incorrect API key provided: {KEY}"), KEY),
    };
    assert!(!format!("{error} {error:?}").contains("abcdef"));
}

/// A pipeline whose inputs come from `MemoryAssets` and whose provider is `editor`.
async fn scripted_pipeline(dir: &Path, editor: Arc<ScriptedEditor>) -> (Pipeline, Arc<MemoryAssets>) {
    let assets = Arc::new(MemoryAssets::new());
    assets
        .serve("https://assets.test/base.png", helpers::gradient_png(64, 48))
        .serve("https://assets.test/mask.png", helpers::square_mask_png(64, 48));
    let mut pipeline = pipeline(&Config::for_tests(dir)).await;
    pipeline.assets = assets.clone();
    pipeline.editor = editor;
    (pipeline, assets)
}

fn scripted_request(design: &str, prompt: &str) -> RenderRequest {
    let payload = serde_json::json!({
        "designId": design, "tenantId": "tenant-1", "prompt": prompt,
        "baseTextureUrl": "https://assets.test/base.png", "maskUrl": "https://assets.test/mask.png",
        "renderOptions": {"quality": "hd", "size": "128x128"},
    });
    RenderRequest::from_json(payload.to_string().as_bytes()).unwrap()
}

#[tokio::test]
async fn a_scripted_paid_call_is_costed_on_the_row_and_the_provider_sees_the_safe_prompt() {
    let dir = tempfile::tempdir().unwrap();
    let usage = Usage {
        input_tokens: 110,
        output_tokens: 4160,
    };
    let editor = Arc::new(ScriptedEditor::new([Answer::paid(
        ScriptedImage::Solid([200, 10, 10, 255]),
        paid_call("scripted:call-1", usage, 16_727_500),
    )]));
    let (pipeline, assets) = scripted_pipeline(dir.path(), editor.clone()).await;
    let output = pipeline
        .run(
            &scripted_request("d-scripted", "slate, mail jane.doe@example.com"),
            &Silent,
        )
        .await
        .unwrap();
    assert_eq!(helpers::json(&output.metadata)["provider"], "scripted");
    assert_eq!((output.cost_tokens, output.cost_cents), (4270, EXPECTED_CENTS));
    assert_eq!(
        helpers::json(&output.metadata)["cost"]["calls"]["scripted:call-1"]["tokens"],
        4270
    );
    let row = pipeline
        .designs
        .get(&DesignId::parse("d-scripted").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((row.cost_tokens, row.cost_cents), (4270, EXPECTED_CENTS));

    let received = editor.requests();
    assert_eq!(received.len(), 1);
    assert!(received[0].mask, "the mask reached the provider");
    assert_eq!(received[0].image, (64, 48));
    assert_eq!(
        received[0].size,
        design_render::job::RenderSize::parse("128x128").unwrap()
    );
    assert!(received[0].prompt.starts_with("slate"), "{}", received[0].prompt);
    assert!(
        !received[0].prompt.contains('@'),
        "PII reached the provider: {}",
        received[0].prompt
    );
    let mut loaded: Vec<(String, AssetRole)> = assets
        .requests()
        .into_iter()
        .map(|request| (request.asset, request.role))
        .collect();
    loaded.sort_by_key(|(asset, _)| asset.clone());
    assert_eq!(
        loaded,
        [
            ("https://assets.test/base.png".to_owned(), AssetRole::BaseTexture),
            ("https://assets.test/mask.png".to_owned(), AssetRole::Mask),
        ]
    );
}

#[tokio::test]
async fn a_job_held_mid_inpaint_is_processing_until_the_scripted_provider_answers() {
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(tokio::sync::Barrier::new(2));
    let editor = Arc::new(ScriptedEditor::new([Answer::base().held_at(gate.clone())]));
    let (pipeline, _assets) = scripted_pipeline(dir.path(), editor.clone()).await;
    let pipeline = Arc::new(pipeline);
    let job = tokio::spawn({
        let pipeline = Arc::clone(&pipeline);
        async move { pipeline.run(&scripted_request("d-held", "slate"), &Silent).await }
    });
    // First rendezvous: the job has reached the provider and is held there.
    gate.wait().await;
    let design = DesignId::parse("d-held").unwrap();
    let row = pipeline.designs.get(&design).await.unwrap().unwrap();
    assert_eq!(row.status, DesignStatus::Processing);
    assert!(!job.is_finished());
    // Second rendezvous: the provider answers and the job completes.
    gate.wait().await;
    let output = job.await.unwrap().unwrap();
    assert_eq!(output.status, "COMPLETED");
    let row = pipeline.designs.get(&design).await.unwrap().unwrap();
    assert_eq!(row.status, DesignStatus::Completed);
    assert_eq!(editor.remaining(), 0);
}

#[tokio::test]
async fn a_scripted_asset_failure_fails_the_render_with_its_code_and_disposition() {
    let dir = tempfile::tempdir().unwrap();
    let editor = Arc::new(ScriptedEditor::new([]));
    let (pipeline, assets) = scripted_pipeline(dir.path(), editor.clone()).await;
    assets.fail("https://assets.test/mask.png", |field| AssetError::Status {
        field,
        status: 503,
    });
    let error = pipeline
        .run(&scripted_request("d-asset", "slate"), &Silent)
        .await
        .unwrap_err();
    assert_eq!(error.code(), "asset_http_status");
    assert_eq!(error.disposition(), Disposition::Retry);
    assert!(error.to_string().contains("maskUrl"), "{error}");
    assert!(editor.requests().is_empty(), "no provider call without inputs");
}
