//! The `render` command end to end, as a user runs it: the real binary, the committed examples,
//! a temporary SQLite database and storage directory.

use std::process::{Command, Output};

use design_render::imaging::codec::{self, DecodeLimits};
use design_render::job::DesignId;
use design_render::store::sqlite::SqliteDesignStore;
use design_render::store::{DesignStatus, DesignStore, MissingDesign};

use super::helpers::queue::{DEADLINE, HeldAssetServer};
use super::helpers::{project_file, render_command};

const LIMITS: DecodeLimits = DecodeLimits {
    max_dimension: 8192,
    max_pixels: 1 << 26,
};

fn render(dir: &std::path::Path, args: &[&str]) -> Output {
    render_with(dir, args, &[])
}

/// `render` with extra environment variables.
fn render_with(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    render_command(dir)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("binary runs")
}

fn dimensions_of(url: &str) -> (u32, u32) {
    let path = url::Url::parse(url).expect("URL").to_file_path().expect("file URL");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{} unreadable: {e}", path.display()));
    let header = codec::probe(&bytes, LIMITS).expect("PNG header");
    (header.width, header.height)
}

#[tokio::test]
async fn render_json_writes_every_asset_and_completes_the_sqlite_row() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = project_file("examples/base.png");
    let mask = project_file("examples/mask.png");
    let output = render(
        dir.path(),
        &[
            "--base",
            base.to_str().unwrap(),
            "--mask",
            mask.to_str().unwrap(),
            "--prompt",
            "weathered red brick",
            "--design-id",
            "cli-test-1",
            "--tenant-id",
            "tenant-a",
            "--size",
            "1024x768",
            "--normal-map",
            "--roughness-map",
            "--json",
        ],
    );
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).expect("utf-8");
    assert_eq!(stdout.trim().lines().count(), 1, "exactly one line of JSON: {stdout}");
    let json: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert_eq!(json["designId"], "cli-test-1");
    assert_eq!(json["status"], "COMPLETED");
    assert_eq!(json["costTokens"], 0);
    assert_eq!(json["costCents"], 0);
    assert_eq!(json["metadata"]["provider"], "builtin");
    assert_eq!(json["metadata"]["promptUsed"], false);
    assert!(json["metadata"]["timings"]["startedAt"].is_string());
    assert!(json["metadata"]["timings"]["inpaintMs"].is_f64());

    let url = |key: &str| json[key].as_str().unwrap_or_else(|| panic!("{key} missing")).to_owned();
    assert_eq!(dimensions_of(&url("compositeTextureUrl")), (512, 512));
    // The square composite fits inside the 1024x768 box without stretching: 768x768.
    assert_eq!(dimensions_of(&url("highResUrl")), (768, 768));
    assert_eq!(json["metadata"]["sizes"]["highRes"], serde_json::json!([768, 768]));
    assert_eq!(dimensions_of(&url("previewUrl")), (512, 512));
    let normal = json["metadata"]["normalMapUrl"].as_str().expect("normal map URL");
    let roughness = json["metadata"]["roughnessMapUrl"].as_str().expect("roughness map URL");
    assert_eq!(dimensions_of(normal), (768, 768));
    assert_eq!(dimensions_of(roughness), (768, 768));
    // Every asset lives under STORAGE_DIR.
    let storage = dir.path().join("storage").canonicalize().unwrap();
    for asset in [url("compositeTextureUrl"), url("previewUrl"), normal.to_owned()] {
        assert!(
            url::Url::parse(&asset)
                .unwrap()
                .to_file_path()
                .unwrap()
                .starts_with(&storage),
            "{asset}"
        );
    }

    let store = SqliteDesignStore::open(&dir.path().join("renders.db"), MissingDesign::Reject)
        .await
        .expect("db");
    let row = store
        .get(&DesignId::parse("cli-test-1").unwrap())
        .await
        .expect("query")
        .expect("row exists");
    assert_eq!(row.status, DesignStatus::Completed);
    assert_eq!(row.tenant_id.as_deref(), Some("tenant-a"));
    assert_eq!(
        row.composite_texture_url.as_deref(),
        Some(url("compositeTextureUrl").as_str())
    );
    assert_eq!(row.preview_url.as_deref(), Some(url("previewUrl").as_str()));
    assert_eq!(row.high_res_url.as_deref(), Some(url("highResUrl").as_str()));
    assert_eq!(row.metadata.expect("metadata")["normalMapUrl"], normal);
}

#[test]
fn composite_keeps_base_pixels_outside_the_feathered_mask() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = project_file("examples/base.png");
    let mask = project_file("examples/mask.png");
    let output = render(
        dir.path(),
        &[
            "--base",
            base.to_str().unwrap(),
            "--mask",
            mask.to_str().unwrap(),
            "--prompt",
            "x",
            "--size",
            "64x64",
            "--json",
        ],
    );
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let composite_path = url::Url::parse(json["compositeTextureUrl"].as_str().unwrap())
        .unwrap()
        .to_file_path()
        .unwrap();
    let composite = codec::decode_rgba(&std::fs::read(composite_path).unwrap(), LIMITS).unwrap();
    let original = codec::decode_rgba(&std::fs::read(&base).unwrap(), LIMITS).unwrap();
    let mask_plane = codec::decode_rgba(&std::fs::read(&mask).unwrap(), LIMITS).unwrap();
    let (mut kept, mut changed_inside) = (0, 0);
    for (x, y, pixel) in composite.enumerate_pixels() {
        // Farther than twice the feather radius (4) from any masked pixel: must be identical.
        let near_mask = (x.saturating_sub(9)..(x + 10).min(512))
            .any(|mx| (y.saturating_sub(9)..(y + 10).min(512)).any(|my| mask_plane.get_pixel(mx, my)[0] > 0));
        if !near_mask {
            assert_eq!(pixel, original.get_pixel(x, y), "({x},{y}) changed outside the mask");
            kept += 1;
        } else if mask_plane.get_pixel(x, y)[0] == 255 && pixel != original.get_pixel(x, y) {
            changed_inside += 1;
        }
    }
    assert!(kept > 150_000, "only {kept} pixels checked");
    assert!(
        changed_inside > 1000,
        "the fill changed only {changed_inside} masked pixels"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_the_render_at_the_next_step_marks_it_failed_cancelled_and_exits_130() {
    use tokio::io::AsyncBufReadExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut assets = HeldAssetServer::start().await;
    let mut child = tokio::process::Command::from(render_command(dir.path()))
        .args([
            "--base",
            assets.base_url(),
            "--prompt",
            "stone",
            "--design-id",
            "d-cancel",
        ])
        .env("ALLOW_PRIVATE_ASSET_HOSTS", "127.0.0.1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("render starts");
    let mut stderr = tokio::io::BufReader::new(child.stderr.take().expect("piped")).lines();
    // Mid-download, Ctrl-C: once the render says it will stop, the download may finish.
    assets.request_arrived().await;
    let pid = child.id().expect("running").to_string();
    assert!(Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    let said = tokio::time::timeout(DEADLINE, stderr.next_line())
        .await
        .expect("an answer to Ctrl-C")
        .unwrap()
        .unwrap_or_default();
    assert!(said.contains("Cancelling after the current step"), "{said}");
    assets.release();
    let status = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .expect("exits")
        .unwrap();
    let rest = tokio::time::timeout(DEADLINE, stderr.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap_or_default();
    assert_eq!(status.code(), Some(130), "{rest}");
    assert!(rest.contains("[cancelled]"), "{rest}");

    let store = SqliteDesignStore::open(&dir.path().join("renders.db"), MissingDesign::Reject)
        .await
        .expect("db");
    let row = store
        .get(&DesignId::parse("d-cancel").unwrap())
        .await
        .unwrap()
        .expect("row exists");
    assert_eq!(row.status, DesignStatus::Failed);
    assert_eq!(row.metadata.expect("metadata")["error"]["code"], "cancelled");
    assert!(
        row.composite_texture_url.is_none(),
        "stopped before anything was produced"
    );
}

#[test]
fn a_dotenv_line_that_does_not_parse_exits_78_naming_the_line_and_variable_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join(".env"),
        "STORAGE_DIR=storage\nOPENAI_API_KEY=\"sk-live-secret-value\nQUEUE_NAME=renders\n",
    )
    .unwrap();
    let base = project_file("examples/base.png");
    let output = render(dir.path(), &["--base", base.to_str().unwrap(), "--prompt", "x"]);
    assert_eq!(output.status.code(), Some(78));
    let stderr = String::from_utf8(output.stderr).expect("utf-8");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("line 2 (`OPENAI_API_KEY`)"), "{stderr}");
    assert!(!stderr.contains("sk-live"), "{stderr}");
}

#[test]
fn user_errors_exit_non_zero_with_one_line_naming_the_cause() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = project_file("examples/base.png");
    let output = render(
        dir.path(),
        &["--base", base.to_str().unwrap(), "--prompt", "x", "--size", "10x10"],
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).expect("utf-8");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("renderOptions.size"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let missing = render(dir.path(), &["--base", "does-not-exist.png", "--prompt", "x"]);
    assert_eq!(missing.status.code(), Some(1));
    let stderr = String::from_utf8(missing.stderr).expect("utf-8");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("baseTextureUrl") && stderr.contains("does-not-exist.png"),
        "{stderr}"
    );

    let not_an_image = dir.path().join("notes.txt");
    std::fs::write(&not_an_image, "hello").unwrap();
    let garbage = render(dir.path(), &["--base", not_an_image.to_str().unwrap(), "--prompt", "x"]);
    assert_eq!(garbage.status.code(), Some(1));
    let stderr = String::from_utf8(garbage.stderr).expect("utf-8");
    assert!(
        stderr.contains("`baseTextureUrl` is not a PNG, JPEG or WebP image"),
        "{stderr}"
    );

    // A mask that selects everything leaves the built-in fill nothing to continue from.
    let everything = dir.path().join("everything.png");
    image::RgbaImage::from_pixel(32, 32, image::Rgba([255, 255, 255, 255]))
        .save(&everything)
        .unwrap();
    let whole = render(
        dir.path(),
        &[
            "--base",
            base.to_str().unwrap(),
            "--mask",
            everything.to_str().unwrap(),
            "--prompt",
            "x",
        ],
    );
    assert_eq!(whole.status.code(), Some(1));
    let stderr = String::from_utf8(whole.stderr).expect("utf-8");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("`maskUrl` selects the whole image"), "{stderr}");
}

#[test]
fn job_file_uses_the_queue_payload_format() {
    let dir = tempfile::tempdir().expect("tempdir");
    let job = serde_json::json!({
        "designId": "from-job-file",
        "prompt": "moss between bricks",
        "baseTextureUrl": project_file("examples/base.png").to_str().unwrap(),
        "maskUrl": format!("file://{}", project_file("examples/mask.png").display()),
        "tenantId": "tenant-b",
        "renderOptions": {"size": "256x256", "generateRoughnessMap": true}
    });
    let job_path = dir.path().join("job.json");
    std::fs::write(&job_path, job.to_string()).unwrap();
    let output = render(dir.path(), &["--job", job_path.to_str().unwrap(), "--json"]);
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(json["designId"], "from-job-file");
    assert!(json["metadata"]["roughnessMapUrl"].is_string());
    assert!(json["metadata"].get("normalMapUrl").is_none());
    assert_eq!(dimensions_of(json["highResUrl"].as_str().unwrap()), (256, 256));
}

#[test]
fn configuration_problems_exit_78_naming_what_to_change() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = project_file("examples/base.png");
    let args = ["--base", base.to_str().unwrap(), "--prompt", "x"];
    let cases: [(&[(&str, &str)], &str); 4] = [
        (&[("MAX_TOKENS_PER_JOB", "lots")], "MAX_TOKENS_PER_JOB"),
        (
            &[
                ("OPENAI_API_KEY", "sk-test-key"),
                ("OPENAI_IMAGE_MODEL", "gpt-image-2.5-sunburst"),
            ],
            "PRICE_TABLE_OVERRIDES",
        ),
        (
            &[("PROMPT_BLOCKLIST", "/nonexistent/blocklist.txt")],
            "PROMPT_BLOCKLIST",
        ),
        (&[("RENDER_PROVIDERS", "local-diffusion")], "LOCAL_DIFFUSION_URL"),
    ];
    for (env, named) in cases {
        let output = render_with(dir.path(), &args, env);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(78), "{env:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(named), "{env:?}: {stderr}");
        assert!(!stderr.contains("sk-test-key"), "{stderr}");
    }
}

/// A `--job` file is validated by its bytes: a byte-order mark and a wrong JSON type
/// are named, with exit code 1 and one line on stderr.
#[test]
fn job_file_problems_are_named_precisely() {
    let dir = tempfile::tempdir().expect("tempdir");
    let job = serde_json::json!({
        "designId": "from-job-file", "prompt": "moss", "tenantId": "tenant-b",
        "baseTextureUrl": project_file("examples/base.png").to_str().unwrap(),
        "renderOptions": {"size": 2048}
    });
    let cases = [
        (
            [b"\xEF\xBB\xBF".as_slice(), b"{}"].concat(),
            "invalid job payload: `payload` starts with a byte-order mark (U+FEFF); send UTF-8 JSON without a BOM",
        ),
        (
            job.to_string().into_bytes(),
            "invalid job payload: `renderOptions.size` must be a string like \"2048x2048\", got a number",
        ),
    ];
    for (bytes, message) in cases {
        let job_path = dir.path().join("job.json");
        std::fs::write(&job_path, bytes).unwrap();
        let output = render(dir.path(), &["--job", job_path.to_str().unwrap()]);
        assert_eq!(output.status.code(), Some(1));
        let stderr = String::from_utf8(output.stderr).expect("utf-8");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(message), "{stderr}");
    }
}

#[tokio::test]
async fn a_batch_renders_every_good_line_and_names_the_bad_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().join("base.png");
    std::fs::write(&base, super::helpers::gradient_png(64, 64)).unwrap();
    let mut lines = Vec::new();
    for number in 1..=20 {
        let line = match number {
            5 => "{not json".to_owned(),
            12 => serde_json::json!({
                "designId": "batch-12", "prompt": "x", "tenantId": "tenant-b",
                "baseTextureUrl": base.to_str().unwrap(), "renderOptions": {"size": "9x9"}
            })
            .to_string(),
            _ => serde_json::json!({
                "designId": format!("batch-{number}"), "prompt": "moss", "tenantId": "tenant-b",
                "baseTextureUrl": base.to_str().unwrap(), "renderOptions": {"size": "64x64"}
            })
            .to_string(),
        };
        lines.push(line);
        if number == 10 {
            lines.push(String::new()); // blank lines are skipped but keep the numbering
        }
    }
    let batch = dir.path().join("jobs.jsonl");
    std::fs::write(&batch, lines.join("\n")).unwrap();

    let output = render(
        dir.path(),
        &["--batch", batch.to_str().unwrap(), "--parallel", "4", "--json"],
    );
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let results: Vec<serde_json::Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
        .collect();
    assert_eq!(results.len(), 20);
    let mut failed: Vec<(u64, String)> = results
        .iter()
        .filter(|result| result["status"] == "FAILED")
        .map(|result| {
            (
                result["line"].as_u64().unwrap(),
                result["error"]["code"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    failed.sort();
    // Line 12 of the input is the 13th line of the file (the blank line after line 10).
    assert_eq!(
        failed,
        [(5, "invalid_payload".to_owned()), (13, "invalid_payload".to_owned())]
    );
    let size_error = results.iter().find(|result| result["line"] == 13).unwrap();
    assert!(
        size_error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("renderOptions.size"),
        "{size_error}"
    );
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("18 of 20 rendered, 2 failed"), "{stderr}");
    assert!(stderr.contains("failed lines: 5, 13"), "{stderr}");

    let store = SqliteDesignStore::open(&dir.path().join("renders.db"), MissingDesign::Reject)
        .await
        .expect("the batch's database");
    let rows = store.recent(DesignStatus::Completed, 0, 100).await.unwrap();
    assert_eq!(rows.len(), 18);
    for result in results.iter().filter(|result| result["status"] == "COMPLETED") {
        let id = DesignId::parse(result["result"]["designId"].as_str().unwrap()).unwrap();
        assert_eq!(store.get(&id).await.unwrap().unwrap().status, DesignStatus::Completed);
    }
}

/// The built-in fill is deterministic, so `render` reuses an identical earlier render by default,
/// across runs of the command (through the manifest kept in local storage); `--no-cache` renders
/// again.
#[test]
fn an_identical_render_is_reused_across_runs_unless_no_cache_is_given() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().join("base.png");
    let mask = dir.path().join("mask.png");
    std::fs::write(&base, super::helpers::gradient_png(64, 48)).unwrap();
    std::fs::write(&mask, super::helpers::square_mask_png(64, 48)).unwrap();
    let run = |design: &str, extra: &[&str]| {
        let mut args = vec![
            "--base",
            base.to_str().unwrap(),
            "--mask",
            mask.to_str().unwrap(),
            "--prompt",
            "brick",
            "--design-id",
            design,
        ];
        args.extend_from_slice(extra);
        let output = render(dir.path(), &args);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).expect("utf-8")
    };
    let json = |text: String| -> serde_json::Value { serde_json::from_str(text.trim()).expect("one JSON object") };
    let first = json(run("cached-1", &["--json"]));
    assert_eq!(first["metadata"]["cache"]["hit"], false);
    let second = json(run("cached-2", &["--json"]));
    assert_eq!(second["metadata"]["cache"]["hit"], true, "{second}");
    assert_eq!(second["metadata"]["cache"]["sourceDesignId"], "cached-1");
    assert_eq!(second["metadata"]["cache"]["key"], first["metadata"]["cache"]["key"]);
    assert_eq!(second["compositeTextureUrl"], first["compositeTextureUrl"]);
    let summary = run("cached-3", &[]);
    assert!(summary.contains("reused the render of design cached-1"), "{summary}");
    let fresh = json(run("cached-4", &["--no-cache", "--json"]));
    assert!(fresh["metadata"].get("cache").is_none(), "{fresh}");
    assert!(fresh["metadata"]["postprocess"].is_object());
}
