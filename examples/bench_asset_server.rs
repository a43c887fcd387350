//! A minimal HTTP/1.1 keep-alive file server for `scripts/bench-queue.sh`: answers every GET with
//! the one file it was given, so the queue benchmark measures the worker rather than a slow
//! asset host (Python's `http.server` closes the connection after every response).
//!
//! Usage: `cargo run --release --example bench_asset_server -- <file> <port>`

use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(file), Some(port)) = (args.next(), args.next()) else {
        eprintln!("usage: bench_asset_server <file> <port>");
        std::process::exit(2);
    };
    let port: u16 = port.parse().map_err(std::io::Error::other)?;
    let body = std::fs::read(&file)?;
    let mut response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    response.extend_from_slice(&body);
    let response: Arc<[u8]> = response.into();
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let response = Arc::clone(&response);
        tokio::spawn(async move {
            let (reader, mut writer) = stream.into_split();
            let mut reader = BufReader::new(reader);
            let mut line = String::new();
            // One request per loop: read the header block up to the blank line, then answer.
            'requests: loop {
                loop {
                    line.clear();
                    match reader.read_line(&mut line).await {
                        Ok(0) | Err(_) => break 'requests,
                        Ok(_) if line == "\r\n" || line == "\n" => break,
                        Ok(_) => {}
                    }
                }
                if writer.write_all(&response).await.is_err() {
                    break;
                }
            }
        });
    }
}
