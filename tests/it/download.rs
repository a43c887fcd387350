//! Asset downloads against a local HTTP server: success, redirects into private space, size
//! limits and decompression bombs, through the real pipeline and the `HttpAssets` adapter.

use design_render::app::Mode;
use design_render::assets::http::HttpAssets;
use design_render::assets::{AssetError, AssetRole, AssetSource};
use design_render::job::{AssetRef, RenderRequest};
use design_render::pipeline::{RenderError, Silent};
use design_render::store::DesignStatus;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::helpers;

fn request(base: &str, mask: Option<&str>) -> RenderRequest {
    let mut payload = serde_json::json!({
        "designId": "download-test", "prompt": "stone", "baseTextureUrl": base, "tenantId": "t1",
        "renderOptions": {"size": "128x128", "generateNormalMap": true}
    });
    if let Some(mask) = mask {
        payload["maskUrl"] = mask.into();
    }
    RenderRequest::from_json(payload.to_string().as_bytes()).expect("valid payload")
}

async fn serve(server: &MockServer, route: &str, response: ResponseTemplate) {
    Mock::given(method("GET"))
        .and(path(route))
        .respond_with(response)
        .mount(server)
        .await;
}

fn loader(config: &design_render::config::Config) -> HttpAssets {
    helpers::init();
    HttpAssets::new(config.assets.clone()).expect("client")
}

#[tokio::test]
async fn queued_render_downloads_base_and_mask_over_http() {
    let server = MockServer::start().await;
    serve(
        &server,
        "/base.png",
        ResponseTemplate::new(200).set_body_bytes(helpers::gradient_png(96, 64)),
    )
    .await;
    serve(
        &server,
        "/mask.png",
        ResponseTemplate::new(200).set_body_bytes(helpers::square_mask_png(48, 32)),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = helpers::config_allowing_loopback(dir.path());
    // The queue mode refuses missing rows, so create it the way the backend would, via the CLI mode.
    let creator = helpers::pipeline(&config, Mode::OneShot).await;
    let request = request(
        &format!("{}/base.png", server.uri()),
        Some(&format!("{}/mask.png", server.uri())),
    );
    creator
        .designs
        .mark_processing(&request.design_id, &request.tenant_id)
        .await
        .unwrap();
    let pipeline = helpers::pipeline(&config, Mode::Queue).await;
    let output = pipeline.run(&request, &Silent).await.expect("render succeeds");
    assert_eq!(output.status, "COMPLETED");
    assert_eq!(
        helpers::json(&output.metadata)["sizes"]["base"],
        serde_json::json!([96, 64])
    );
    assert!(helpers::json(&output.metadata)["normalMapUrl"].is_string());
    let row = pipeline.designs.get(&request.design_id).await.unwrap().unwrap();
    assert_eq!(row.status, DesignStatus::Completed);
}

#[tokio::test]
async fn redirects_into_private_space_are_refused_without_connecting() {
    let server = MockServer::start().await;
    for (route, target) in [
        ("/to-metadata", "http://169.254.169.254/latest/meta-data/".to_owned()),
        ("/to-private", "http://10.20.30.40/base.png".to_owned()),
        (
            "/to-loopback-name",
            format!("http://localhost:{}/base.png", server.address().port()),
        ),
        ("/to-decimal-private", "http://167772161/base.png".to_owned()), // 10.0.0.1
    ] {
        serve(
            &server,
            route,
            ResponseTemplate::new(302).insert_header("Location", target.as_str()),
        )
        .await;
    }
    let dir = tempfile::tempdir().unwrap();
    let loader = loader(&helpers::config_allowing_loopback(dir.path()));
    for route in [
        "/to-metadata",
        "/to-private",
        "/to-loopback-name",
        "/to-decimal-private",
    ] {
        let asset = AssetRef::parse(&format!("{}{route}", server.uri())).unwrap();
        let error = loader.load(&asset, AssetRole::BaseTexture).await.expect_err(route);
        assert!(
            matches!(
                error,
                AssetError::Blocked {
                    field: "baseTextureUrl",
                    ..
                }
            ),
            "{route}: {error}"
        );
        assert!(!error.is_transient(), "{route}");
    }
}

#[tokio::test]
async fn redirect_chains_are_followed_up_to_the_limit() {
    let server = MockServer::start().await;
    let png = helpers::gradient_png(8, 8);
    serve(
        &server,
        "/hop1",
        ResponseTemplate::new(301).insert_header("Location", "/hop2"),
    )
    .await;
    serve(
        &server,
        "/hop2",
        ResponseTemplate::new(307).insert_header("Location", "/final.png"),
    )
    .await;
    serve(
        &server,
        "/final.png",
        ResponseTemplate::new(200).set_body_bytes(png.clone()),
    )
    .await;
    serve(
        &server,
        "/loop",
        ResponseTemplate::new(302).insert_header("Location", "/loop"),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let loader = loader(&helpers::config_allowing_loopback(dir.path()));
    let fetched = loader
        .load(
            &AssetRef::parse(&format!("{}/hop1", server.uri())).unwrap(),
            AssetRole::Mask,
        )
        .await
        .unwrap();
    assert_eq!(fetched, png);
    let error = loader
        .load(
            &AssetRef::parse(&format!("{}/loop", server.uri())).unwrap(),
            AssetRole::Mask,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(error, AssetError::Redirect { field: "maskUrl", .. }),
        "{error}"
    );
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let server = MockServer::start().await;
    serve(
        &server,
        "/big.png",
        ResponseTemplate::new(200).set_body_bytes(vec![0u8; 300 * 1024]),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = helpers::config_allowing_loopback(dir.path());
    config.assets.max_bytes = 256 * 1024;
    let loader = loader(&config);
    let error = loader
        .load(
            &AssetRef::parse(&format!("{}/big.png", server.uri())).unwrap(),
            AssetRole::BaseTexture,
        )
        .await
        .unwrap_err();
    assert!(matches!(error, AssetError::TooLarge { limit: 262_144, .. }), "{error}");
}

#[tokio::test]
async fn loopback_is_refused_unless_allowed() {
    let server = MockServer::start().await;
    serve(
        &server,
        "/base.png",
        ResponseTemplate::new(200).set_body_bytes(helpers::gradient_png(8, 8)),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = design_render::config::Config::for_tests(dir.path());
    let error = loader(&config)
        .load(
            &AssetRef::parse(&format!("{}/base.png", server.uri())).unwrap(),
            AssetRole::BaseTexture,
        )
        .await
        .unwrap_err();
    assert!(matches!(error, AssetError::Blocked { .. }), "{error}");
    assert!(
        server.received_requests().await.unwrap_or_default().is_empty(),
        "the guard let a request through"
    );
}

#[tokio::test]
async fn decompression_bomb_is_refused_from_its_header() {
    let server = MockServer::start().await;
    // A PNG header claiming 30000x30000 (3.6 GB as RGBA) followed by a few bytes of junk.
    let mut bomb = png_header(30_000, 30_000);
    bomb.extend_from_slice(&[0u8; 64]);
    serve(&server, "/bomb.png", ResponseTemplate::new(200).set_body_bytes(bomb)).await;
    serve(&server, "/status", ResponseTemplate::new(503)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = helpers::config_allowing_loopback(dir.path());
    let creator = helpers::pipeline(&config, Mode::OneShot).await;
    let bomb_request = request(&format!("{}/bomb.png", server.uri()), None);
    let error = creator
        .run(&bomb_request, &Silent)
        .await
        .expect_err("bomb must be refused");
    assert!(
        matches!(
            error,
            RenderError::Decode {
                field: "baseTextureUrl",
                ..
            }
        ),
        "{error}"
    );
    assert_eq!(error.code(), "image_too_large");
    assert_eq!(error.disposition(), design_render::pipeline::Disposition::Abort);

    let unavailable = request(&format!("{}/status", server.uri()), None);
    let error = creator.run(&unavailable, &Silent).await.expect_err("503");
    assert_eq!(error.disposition(), design_render::pipeline::Disposition::Retry);
}

fn png_header(width: u32, height: u32) -> Vec<u8> {
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = b"IHDR".to_vec();
    chunk.extend_from_slice(&width.to_be_bytes());
    chunk.extend_from_slice(&height.to_be_bytes());
    chunk.extend_from_slice(&[8, 6, 0, 0, 0]);
    let crc = crc32(&chunk);
    bytes.extend_from_slice(&13u32.to_be_bytes());
    bytes.extend_from_slice(&chunk);
    bytes.extend_from_slice(&crc.to_be_bytes());
    // An empty IDAT chunk: decoders read up to the first image data before reporting the size.
    bytes.extend_from_slice(&0u32.to_be_bytes());
    bytes.extend_from_slice(b"IDAT");
    bytes.extend_from_slice(&crc32(b"IDAT").to_be_bytes());
    bytes
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for byte in data {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// `ALLOW_PRIVATE_ASSET_HOSTS=127.0.0.1:<port>` opens that asset server only; another
/// service on the same host is refused as `asset_refused` before any connection is made.
#[tokio::test]
async fn a_host_port_entry_opens_only_that_port() {
    let allowed = MockServer::start().await;
    serve(
        &allowed,
        "/base.png",
        ResponseTemplate::new(200).set_body_bytes(helpers::gradient_png(8, 8)),
    )
    .await;
    // The other local service: a bare listener, so a connection attempt would be seen as a
    // pending accept.
    let other = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let other_port = other.local_addr().unwrap().port();

    let dir = tempfile::tempdir().unwrap();
    let mut config = design_render::config::Config::for_tests(dir.path());
    config.assets.private_hosts = design_render::config::Config::from_lookup(|name| {
        (name == "ALLOW_PRIVATE_ASSET_HOSTS").then(|| format!("127.0.0.1:{}", allowed.address().port()))
    })
    .expect("the allow-list parses")
    .assets
    .private_hosts;
    let loader = loader(&config);

    let bytes = loader
        .load(
            &AssetRef::parse(&format!("{}/base.png", allowed.uri())).unwrap(),
            AssetRole::BaseTexture,
        )
        .await
        .expect("the allowed port downloads");
    assert_eq!(bytes, helpers::gradient_png(8, 8));

    let error = loader
        .load(
            &AssetRef::parse(&format!("http://127.0.0.1:{other_port}/base.png")).unwrap(),
            AssetRole::BaseTexture,
        )
        .await
        .unwrap_err();
    assert_eq!(
        error.code(),
        design_render::error_code::ErrorCode::AssetRefused,
        "{error}"
    );
    assert!(
        matches!(&error, AssetError::Blocked { field: "baseTextureUrl", host, .. } if *host == format!("127.0.0.1:{other_port}")),
        "{error}"
    );
    // The refusal came before connecting: nothing is waiting to be accepted.
    assert!(
        futures_util::FutureExt::now_or_never(other.accept()).is_none(),
        "the guard connected to the refused port"
    );
}
