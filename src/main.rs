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
    telemetry::init(config.log_format, "warn");
    design_render::http::ensure_tls_provider();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(cli::Outcome::TryLater.exit_code());
        }
    };
    let outcome = runtime.block_on(cli::run(cli, config));
    ExitCode::from(outcome.exit_code())
}
