//! The outside services of `scripts/bench-queue.sh` on loopback, answering at once so the
//! benchmark measures the workers: `GET /<name>` serves the files of a directory (the jobs' base
//! and mask) over keep-alive HTTP/1.1, and `POST /v1/images/edits` answers like OpenAI's image
//! edit endpoint with `generated.png` of that directory as `b64_json` and a 1024² high-quality
//! usage block, whatever the request carried (its body is read in full, as a server would).
//!
//! Usage: `cargo run --release --example bench_asset_server -- <dir> <port>`

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use base64::Engine as _;

struct Files {
    by_name: HashMap<String, Bytes>,
    edit_response: Bytes,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(port)) = (args.next(), args.next()) else {
        eprintln!("usage: bench_asset_server <dir> <port>");
        std::process::exit(2);
    };
    let port: u16 = port.parse().map_err(std::io::Error::other)?;
    let mut by_name = HashMap::new();
    for entry in std::fs::read_dir(&dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            let name = entry.file_name().to_string_lossy().into_owned();
            by_name.insert(name, Bytes::from(std::fs::read(entry.path())?));
        }
    }
    let generated = by_name
        .get("generated.png")
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, format!("{dir}/generated.png is missing")))?;
    // The shape of OpenAI's answer, with the token counts of one high-quality 1024² image.
    let edit_response = serde_json::json!({
        "created": 1_765_000_000,
        "data": [{"b64_json": base64::engine::general_purpose::STANDARD.encode(generated)}],
        "usage": {"total_tokens": 4270, "input_tokens": 110, "output_tokens": 4160,
                  "input_tokens_details": {"text_tokens": 45, "image_tokens": 65}},
    });
    let files = Arc::new(Files {
        by_name,
        edit_response: Bytes::from(edit_response.to_string()),
    });
    let app = Router::new()
        .route("/{name}", get(serve_file))
        .route("/v1/images/edits", post(edit))
        .layer(DefaultBodyLimit::disable())
        .with_state(files);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    axum::serve(listener, app).await
}

async fn serve_file(State(files): State<Arc<Files>>, Path(name): Path<String>) -> impl IntoResponse {
    match files.by_name.get(&name) {
        Some(body) => Ok(([(header::CONTENT_TYPE, "image/png")], body.clone())),
        None => Err(StatusCode::NOT_FOUND),
    }
}

async fn edit(State(files): State<Arc<Files>>, _request: Bytes) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        files.edit_response.clone(),
    )
}
