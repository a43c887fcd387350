//! Logging and tracing set-up, and the names of fields used across spans.
//!
//! Logs go to stderr (stdout belongs to `render --json`). `LOG_FORMAT=json` writes one JSON object
//! per line for log shippers; the default is human-readable. `RUST_LOG` filters as usual.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::writer::MakeWriterExt;

use crate::config::LogFormat;

/// Installs the global subscriber. `default_directive` applies when `RUST_LOG` is unset.
pub fn init(format: LogFormat, default_directive: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_directive));
    let writer = std::io::stderr.with_max_level(tracing::Level::TRACE);
    let result = match format {
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_env_filter(filter)
            .with_writer(writer)
            .try_init(),
        LogFormat::Pretty => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(writer)
            .with_target(false)
            .try_init(),
    };
    // A subscriber may already be installed (tests, embedding); keeping it is the right call.
    drop(result);
}
