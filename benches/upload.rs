//! Upload time of one 2048² render with both maps (five assets, as the pipeline uploads them:
//! concurrently) to a loopback S3-compatible server, against writing the same bytes to local
//! disk and against the fixed cost of one round trip per object (five concurrent 1-byte puts).
//! A fourth figure is the floor the server sets: the same five bodies sent as plain concurrent
//! HTTP PUTs (reqwest, no signing), so the cost of the S3 client itself is visible. The four
//! are measured in turn within every round, the order rotating, so they share the machine's
//! load; medians and ranges are printed, and the per-round ratios.
//!
//! Run: start moto (`.ci/run` does, or `moto_server -H 127.0.0.1 -p 5055`), then
//! `cargo bench --features eval --bench upload` (`S3_BENCH_ENDPOINT`, `BENCH_ROUNDS` override
//! the defaults). Figures are recorded in BENCHMARKS.md.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use design_render::config::{S3Config, S3Credentials, Secret};
use design_render::imaging;
use design_render::imaging::inpaint::textures::{TextureKind, texture};
use design_render::storage::local::LocalStore;
use design_render::storage::s3::S3Store;
use design_render::storage::{BlobStore, StorageKey, Transport};

fn assets() -> Vec<(StorageKey, Bytes)> {
    let composite = texture(TextureKind::Brick, 2048, 2048, 7);
    // What the worker makes of a 2048² base with both maps, as in the post-processing bench.
    let rendered = imaging::render_assets(&composite, &imaging::bench::SPEC).expect("render");
    let key = |kind: &str| StorageKey::parse(&format!("renders/bench/d-1/{kind}.png")).expect("key");
    vec![
        (key("composite"), rendered.composite.png),
        (key("highres"), rendered.high_res.png),
        (key("preview"), rendered.preview.png),
        (key("normal"), rendered.normal_map.expect("normal").png),
        (key("roughness"), rendered.roughness_map.expect("roughness").png),
    ]
}

async fn upload_all(store: &Arc<dyn BlobStore>, assets: &[(StorageKey, Bytes)]) -> Duration {
    let started = Instant::now();
    let puts = assets.iter().map(|(key, bytes)| {
        let store = Arc::clone(store);
        let (key, bytes) = (key.clone(), bytes.clone());
        async move { store.put(&key, bytes, "image/png").await.expect("put") }
    });
    futures_util::future::join_all(puts).await;
    started.elapsed()
}

/// The same bodies as plain HTTP PUTs to the server (moto checks that credentials are present,
/// not the signature).
async fn raw_puts(client: &reqwest::Client, base: &str, assets: &[(StorageKey, Bytes)]) -> Duration {
    let started = Instant::now();
    let puts = assets.iter().map(|(key, bytes)| {
        client
            .put(format!("{base}/raw/{key}"))
            .header(
                "authorization",
                "AWS4-HMAC-SHA256 Credential=bench/20261207/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0",
            )
            .header("content-type", "image/png")
            .body(bytes.clone())
            .send()
    });
    for response in futures_util::future::join_all(puts).await {
        assert!(response.expect("raw put").status().is_success());
    }
    started.elapsed()
}

fn summary(label: &str, samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    let median = samples[samples.len() / 2];
    println!(
        "{label:<28} median {median:>8.1} ms   min {:>8.1}   max {:>8.1}",
        samples[0],
        samples[samples.len() - 1]
    );
    median
}

#[tokio::main]
async fn main() {
    design_render::http::ensure_tls_provider();
    let endpoint = std::env::var("S3_BENCH_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:5055".into());
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(15);
    let bucket = format!("bench-upload-{}", std::process::id());
    let raw_base = format!("{endpoint}/{bucket}");
    let raw = reqwest::Client::new();
    let created = reqwest::Client::new().put(format!("{endpoint}/{bucket}")).send().await;
    if !created.as_ref().is_ok_and(|response| response.status().is_success()) {
        eprintln!("no S3 server answers at {endpoint} (start moto: see the header of benches/upload.rs)");
        std::process::exit(2);
    }
    let transport = Transport {
        connect_timeout: Duration::from_secs(5),
        timeout: Duration::from_secs(60),
        retries: 0,
        max_in_flight: 8,
    };
    let s3: Arc<dyn BlobStore> = Arc::new(
        S3Store::new(
            &S3Config {
                bucket,
                region: "us-east-1".into(),
                endpoint: Some(url::Url::parse(&endpoint).expect("endpoint")),
                credentials: Some(S3Credentials {
                    access_key_id: "bench".into(),
                    secret_access_key: Secret::new("bench"),
                }),
                aws_chain: Vec::new(),
                force_path_style: true,
                prefix: None,
            },
            url::Url::parse("https://cdn.example.com/").expect("base"),
            transport,
        )
        .expect("s3 client"),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let local: Arc<dyn BlobStore> = Arc::new(LocalStore::new(dir.path(), None).expect("local"));
    let assets = assets();
    let total: usize = assets.iter().map(|(_, bytes)| bytes.len()).sum();
    let tiny: Vec<(StorageKey, Bytes)> = assets
        .iter()
        .map(|(key, _)| {
            (
                StorageKey::parse(&format!("rtt/{key}")).expect("key"),
                Bytes::from_static(b"x"),
            )
        })
        .collect();
    println!(
        "5 assets, {:.1} MiB in all; {rounds} rounds",
        total as f64 / 1_048_576.0
    );
    // Warm-up: connections, bucket, page cache.
    upload_all(&s3, &assets).await;
    upload_all(&local, &assets).await;
    upload_all(&s3, &tiny).await;

    raw_puts(&raw, &raw_base, &assets).await;

    let (mut on_s3, mut on_disk, mut trips, mut plain) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut against_target, mut against_plain) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let mut times = [0.0; 4];
        for step in 0..4 {
            let which = (step + round) % 4;
            let elapsed = match which {
                0 => upload_all(&s3, &assets).await,
                1 => upload_all(&local, &assets).await,
                2 => upload_all(&s3, &tiny).await,
                _ => raw_puts(&raw, &raw_base, &assets).await,
            };
            times[which] = elapsed.as_secs_f64() * 1000.0;
        }
        on_s3.push(times[0]);
        on_disk.push(times[1]);
        trips.push(times[2]);
        plain.push(times[3]);
        against_target.push(times[0] / (times[1] + times[2]));
        against_plain.push(times[0] / times[3]);
    }
    summary("s3 (5 assets, concurrent)", &mut on_s3);
    summary("local disk (same bytes)", &mut on_disk);
    summary("round trips (5 x 1 byte)", &mut trips);
    summary("plain HTTP PUTs (same bytes)", &mut plain);
    for (label, ratios) in [
        ("s3 / (local + round trips)", &mut against_target),
        ("s3 / plain HTTP PUTs", &mut against_plain),
    ] {
        ratios.sort_by(f64::total_cmp);
        println!(
            "{label:<28} median {:>8.2}      min {:>8.2}   max {:>8.2}",
            ratios[rounds / 2],
            ratios[0],
            ratios[rounds - 1]
        );
    }
}
