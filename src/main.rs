//! The `design-render` binary: configuration, telemetry and the chosen command. All logic lives
//! in the library.

use std::process::ExitCode;

use clap::Parser;
use design_render::cli::{self, Cli};
use design_render::config::Config;
use design_render::telemetry;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(cli::Outcome::Misconfigured.exit_code());
        }
    };
    // The worker is a service: its operators want a line per job. The one-shot commands print
    // their own results and keep stderr for warnings and errors.
    let default_level = match cli.command {
        cli::Command::Worker => "info",
        _ => "warn",
    };
    // Before telemetry: an https collector needs the TLS provider too.
    design_render::http::ensure_tls_provider();
    let telemetry = match telemetry::init(config.log_format, default_level, config.traces.as_ref()) {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(cli::Outcome::Misconfigured.exit_code());
        }
    };
    for (name, why) in config.unused_vars_in_env() {
        tracing::warn!("{name} is set but not used: {why}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            telemetry.shutdown();
            return ExitCode::from(cli::Outcome::TryLater.exit_code());
        }
    };
    let outcome = runtime.block_on(cli::run(cli, config));
    // The exporter's last batch goes out on its own thread, outside the runtime.
    drop(runtime);
    telemetry.shutdown();
    ExitCode::from(outcome.exit_code())
}
