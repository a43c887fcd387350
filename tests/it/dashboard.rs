//! The operations dashboard, driven in headless Chromium (`tests/node/dashboard.mjs` through
//! playwright-core) as an operator would use it, plus the HTTP-level rules of its access.
//! Set `DASHBOARD_SCREENSHOTS=<dir>` to keep the screenshots (the README's come from here).

use std::time::Duration;

use bullmq::{JobOptions, Queue, QueueEvent};
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::helpers::queue::{DEADLINE, QueueSetup, payload};
use super::helpers::{PgSchema, node, project_file, unique};

const TOKEN: &str = "dashboard-test-token-0123456789";

/// Serves the README's example brick and mask, so the thumbnails show real pictures.
async fn example_assets() -> MockServer {
    let server = MockServer::start().await;
    for (route, file) in [("/brick.png", "examples/base.png"), ("/mask.png", "examples/mask.png")] {
        let body = std::fs::read(project_file(file)).expect("example picture");
        Mock::given(method("GET"))
            .and(path(route))
            .respond_with(ResponseTemplate::new(200).set_body_raw(body, "image/png"))
            .mount(&server)
            .await;
    }
    server
}

/// Waits until BullMQ reports `completed` completions and `failed` failures.
async fn await_finished(setup: &QueueSetup, completed: usize, failed: usize) {
    let events = setup.events().await;
    tokio::time::timeout(DEADLINE, async {
        let (mut done, mut broken) = (0, 0);
        while done < completed || broken < failed {
            match events.next_event().await.map(|entry| entry.event) {
                Some(QueueEvent::Completed { .. }) => done += 1,
                Some(QueueEvent::Failed { .. }) => broken += 1,
                Some(_) => {}
                None => panic!("event stream closed"),
            }
        }
    })
    .await
    .expect("the jobs finish before the deadline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_logs_in_sees_the_renders_and_retries_a_failed_job_in_a_browser() {
    super::helpers::init();
    let chromium = super::helpers::chromium::ensure_installed();
    let schema = PgSchema::new().await;
    let setup = QueueSetup::new("dashboard");
    let assets = example_assets().await;
    let mut worker = setup.spawn_worker(
        &schema.url(),
        &[
            ("DASHBOARD_TOKEN", TOKEN),
            ("PREVIEW_SIZE", "256"),
            ("WORKER_CONCURRENCY", "2"),
        ],
    );
    let base = worker.admin_base().await;

    // Three renders that complete, and one whose row belongs to another tenant: it fails for
    // good (design_not_found) until the backend fixes the row.
    let designs: Vec<String> = (0..3).map(|i| unique(&format!("dash-{i}"))).collect();
    for design in &designs {
        schema.insert_design(design, "tenant-d").await;
    }
    let foreign = unique("dash-foreign");
    schema.insert_design(&foreign, "tenant-other").await;
    let queue = Queue::with_options(&setup.queue, setup.queue_options())
        .await
        .expect("queue");
    let job = |design: &str| {
        let mut data = payload(design, "tenant-d", &format!("{}/brick.png", assets.uri()));
        data["maskUrl"] = json!(format!("{}/mask.png", assets.uri()));
        data["renderOptions"] = json!({"size": "512x512", "generateNormalMap": true});
        data
    };
    for design in designs.iter().chain([&foreign]) {
        queue
            .add("render", job(design))
            .options(JobOptions::new().attempts(1))
            .await
            .expect("job added");
    }
    await_finished(&setup, 3, 1).await;
    sqlx::query(r#"UPDATE "Design" SET "tenantId" = 'tenant-d' WHERE "id" = $1"#)
        .bind(&foreign)
        .execute(schema.store.pool())
        .await
        .expect("the backend fixes the row");

    let screenshots = std::env::var("DASHBOARD_SCREENSHOTS").ok();
    let report = node(
        "dashboard.mjs",
        json!({
            "url": base,
            "token": TOKEN,
            "expectCompleted": 3,
            "expectFailed": 1,
            "screenshots": screenshots,
            "timeoutMs": DEADLINE.as_millis() as u64,
            "chromium": chromium,
        }),
    )
    .await;

    assert_eq!(report["unauthenticatedStatus"], 401, "{report}");
    assert_eq!(report["loggedIn"], true, "{report}");
    assert_eq!(report["cookie"]["httpOnly"], true, "{report}");
    assert_eq!(report["cookie"]["sameSite"], "Strict", "{report}");
    assert_eq!(report["overview"]["completed"], 3, "{report}");
    assert_eq!(report["overview"]["failed"], 1, "{report}");
    // Every render shows its base and its result, as decoded pictures.
    assert_eq!(report["renders"], 3, "{report}");
    let thumbnails = report["thumbnails"].as_array().expect("thumbnails");
    assert_eq!(thumbnails.len(), 6, "{report}");
    for thumbnail in thumbnails {
        assert!(thumbnail["naturalWidth"].as_u64() > Some(0), "{thumbnail}");
        assert!(thumbnail["naturalHeight"].as_u64() > Some(0), "{thumbnail}");
    }
    assert_eq!(report["forgedPostStatus"], 403, "{report}");
    assert_eq!(report["retryFormHasCsrf"], true, "{report}");
    assert_eq!(report["afterRetry"]["completed"], 4, "{report}");
    assert_eq!(report["afterRetry"]["failed"], 0, "{report}");
    assert_eq!(
        schema.design(&foreign).await.status,
        design_render::store::DesignStatus::Completed
    );
    queue.close().await;
}

/// GET with optional headers; the status and body.
async fn get(url: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let mut request = client.get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("the admin server answers");
    (response.status().as_u16(), response.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_opens_the_dashboard_read_only_hides_actions_and_without_a_token_there_is_none() {
    super::helpers::init();
    let schema = PgSchema::new().await;
    let setup = QueueSetup::new("dashboard-ro");
    let mut read_only = setup.spawn_worker(
        &schema.url(),
        &[("DASHBOARD_TOKEN", TOKEN), ("DASHBOARD_READ_ONLY", "true")],
    );
    let base = read_only.admin_base().await;
    let bearer = format!("Bearer {TOKEN}");
    // A job whose design does not exist fails for good at once.
    let queue = Queue::with_options(&setup.queue, setup.queue_options())
        .await
        .expect("queue");
    let missing = unique("dash-missing");
    queue
        .add("render", payload(&missing, "tenant-d", "http://127.0.0.1:9/never.png"))
        .options(JobOptions::new().attempts(1))
        .await
        .expect("job added");
    await_finished(&setup, 0, 1).await;

    let (status, page) = get(&format!("{base}/dashboard"), &[]).await;
    assert_eq!(status, 401);
    assert!(page.contains("form id=\"login\""), "{page}");
    assert!(!page.contains(TOKEN));
    let (status, _) = get(
        &format!("{base}/dashboard"),
        &[("authorization", "Bearer wrong-token-0123456789")],
    )
    .await;
    assert_eq!(status, 401);
    let (status, page) = get(&format!("{base}/dashboard/failed"), &[("authorization", &bearer)]).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains(&missing) && page.contains("design_not_found"), "{page}");
    assert!(page.contains("read-only"), "{page}");
    assert!(
        !page.contains("class=\"retry\"") && !page.contains("retry-code"),
        "no action is offered: {page}"
    );
    assert!(!page.contains(TOKEN), "the page never shows the token");
    // Actions are refused whatever the form carries.
    let client = reqwest::Client::new();
    let refused = client
        .post(format!("{base}/dashboard/failed/retry-code"))
        .header("authorization", &bearer)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("code=design_not_found&csrf=anything")
        .send()
        .await
        .expect("answer");
    assert_eq!(refused.status().as_u16(), 403);

    // The worker's heartbeat shows on the workers page within an interval.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let (_, page) = get(&format!("{base}/dashboard/workers"), &[("authorization", &bearer)]).await;
        if page.contains("data-worker=") {
            assert!(page.contains(">live<"), "{page}");
            assert!(page.contains(env!("CARGO_PKG_VERSION")), "{page}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no heartbeat: {page}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    read_only.terminate().await;
    queue.close().await;

    let mut without = setup.spawn_worker(&schema.url(), &[]);
    let base = without.admin_base().await;
    let (status, _) = get(&format!("{base}/dashboard"), &[("authorization", &bearer)]).await;
    assert_eq!(status, 404, "no DASHBOARD_TOKEN, no dashboard");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_all_of_a_code_moves_exactly_those_jobs_back_and_they_complete() {
    super::helpers::init();
    let schema = PgSchema::new().await;
    let setup = QueueSetup::new("dashboard-codes");
    let assets = example_assets().await;
    let mut worker = setup.spawn_worker(&schema.url(), &[("DASHBOARD_TOKEN", TOKEN)]);
    let base = worker.admin_base().await;
    let bearer = format!("Bearer {TOKEN}");
    let queue = Queue::with_options(&setup.queue, setup.queue_options())
        .await
        .expect("queue");

    // Two jobs whose rows do not exist yet (design_not_found) and one with a refused base URL
    // (a link-local address: asset_refused).
    let missing: Vec<String> = (0..2).map(|i| unique(&format!("dash-late-{i}"))).collect();
    for design in &missing {
        queue
            .add(
                "render",
                payload(design, "tenant-c", &format!("{}/brick.png", assets.uri())),
            )
            .options(JobOptions::new().attempts(1))
            .await
            .expect("job added");
    }
    let refused = unique("dash-refused");
    schema.insert_design(&refused, "tenant-c").await;
    queue
        .add(
            "render",
            payload(&refused, "tenant-c", "http://169.254.169.254/latest.png"),
        )
        .options(JobOptions::new().attempts(1))
        .await
        .expect("job added");
    await_finished(&setup, 0, 3).await;
    // The backend creates the missing rows late; a retry of that code can now succeed.
    for design in &missing {
        schema.insert_design(design, "tenant-c").await;
    }

    let (status, page) = get(&format!("{base}/dashboard/failed"), &[("authorization", &bearer)]).await;
    assert_eq!(status, 200);
    assert!(
        page.contains("<tr data-code=\"design_not_found\"><td>design_not_found</td><td class=\"n\">2</td>"),
        "{page}"
    );
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a CSRF token in the page")
        .to_owned();
    let events = setup.events().await;
    let answer = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .post(format!("{base}/dashboard/failed/retry-code"))
        .header("authorization", &bearer)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("code=design_not_found&csrf={csrf}"))
        .send()
        .await
        .expect("answer");
    assert_eq!(answer.status().as_u16(), 303);
    tokio::time::timeout(DEADLINE, async {
        let mut completed = 0;
        while completed < 2 {
            if let Some(QueueEvent::Completed { .. }) = events.next_event().await.map(|entry| entry.event) {
                completed += 1;
            }
        }
    })
    .await
    .expect("both retried jobs complete");
    for design in &missing {
        assert_eq!(
            schema.design(design).await.status,
            design_render::store::DesignStatus::Completed
        );
    }
    // The other code stayed failed.
    let (_, page) = get(&format!("{base}/dashboard/failed"), &[("authorization", &bearer)]).await;
    assert!(page.contains(&refused) && page.contains("<h2>1 failed"), "{page}");
    queue.close().await;
}
