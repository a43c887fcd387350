//! Bull Board (`@bull-board/api` with its Express adapter), the queue dashboard the Node side
//! runs, over a queue our worker processes: it lists our completed jobs with their data and the
//! return values the worker stored, read through the board's own JSON API.

use std::time::Duration;

use bullmq::Queue;
use serde_json::json;

use super::helpers::queue::{DEADLINE, QueueSetup, asset_server, await_completed, payload, teardown};
use super::helpers::{PgSchema, node, unique};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bull_board_lists_our_completed_jobs_with_their_return_values() {
    let schema = PgSchema::new().await;
    let setup = QueueSetup::new("bull-board");
    let assets = asset_server(Duration::ZERO).await;
    let base = format!("{}/base.png", assets.uri());
    let designs = [unique("board-a"), unique("board-b")];
    for design in &designs {
        schema.insert_design(design, "tenant-board").await;
    }
    let _worker = setup.spawn_worker(&schema.url(), &[]);
    let events = setup.events().await;
    let queue = Queue::with_options(&setup.queue, setup.queue_options()).await.unwrap();
    let mut added = Vec::new();
    for design in &designs {
        let job = queue
            .add("render", payload(design, "tenant-board", &base))
            .attempts(2)
            .await
            .unwrap();
        added.push((job.id().to_owned(), design));
    }
    let mut completed = await_completed(&events, added.len()).await;
    completed.sort();
    let mut ids: Vec<String> = added.iter().map(|(id, _)| id.clone()).collect();
    ids.sort();
    assert_eq!(completed, ids);

    let board = node(
        "bull-board.mjs",
        json!({"queue": setup.queue, "prefix": setup.prefix, "timeoutMs": DEADLINE.as_millis() as u64}),
    )
    .await;
    assert_eq!(board["ui"]["status"], 200, "{board}");
    assert_eq!(board["queue"], setup.queue.as_str(), "{board}");
    assert_eq!(board["counts"]["completed"], 2, "{board}");
    assert_eq!(board["counts"]["failed"], 0, "{board}");
    let jobs = board["jobs"].as_array().expect("jobs");
    assert_eq!(jobs.len(), 2, "{board}");
    for (id, design) in &added {
        let job = jobs
            .iter()
            .find(|job| job["id"] == id.as_str())
            .unwrap_or_else(|| panic!("the board does not list job {id}: {board}"));
        assert_eq!(job["name"], "render", "{job}");
        assert_eq!(job["data"]["designId"], design.as_str(), "{job}");
        assert_eq!(job["state"], "completed", "{job}");
        assert_eq!(job["data"]["tenantId"], "tenant-board", "{job}");
        let returned = &job["returnValue"];
        assert_eq!(returned["designId"], design.as_str(), "{job}");
        assert_eq!(returned["status"], "COMPLETED", "{job}");
        assert!(
            returned["compositeTextureUrl"]
                .as_str()
                .is_some_and(|url| url.starts_with("file://")),
            "{job}"
        );
    }
    teardown(queue, events, setup, schema).await;
}
