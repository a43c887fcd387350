//! `design-render render --batch jobs.jsonl`: one render per line of a JSON Lines file, a few at
//! a time, with a progress bar on a terminal, one JSON result per line with `--json`, and a
//! summary. A bad line fails that line only, named by its number; the command exits 0 only
//! when every line rendered.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Instant;

use futures_util::StreamExt as _;
use tracing::Instrument as _;

use super::{Interrupts, Outcome, fail, start_up_outcome};
use crate::app::{self, Mode};
use crate::config::Config;
use crate::failure::{JobError, settle};
use crate::job::RenderRequest;
use crate::pipeline::{Pipeline, RenderOutput, Silent};

/// The batch file's jobs, each with its line number as an editor counts lines (blank lines
/// skipped), or the outcome of a file that cannot be read.
fn read_lines(path: &Path) -> Result<Vec<NumberedLine>, Outcome> {
    let text = std::fs::read_to_string(path).map_err(|error| {
        fail(
            &format!("cannot read batch file {}: {error}", path.display()),
            Outcome::Failed,
        )
    })?;
    Ok(text
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(index, line)| {
            (
                index + 1,
                RenderRequest::from_json(line.as_bytes()).map_err(|e| e.to_string()),
            )
        })
        .collect())
}

/// A batch line's number and its job, or why it is not one.
type NumberedLine = (usize, Result<RenderRequest, String>);

/// What became of one line.
type LineResult = Result<RenderOutput, LineFailure>;

struct LineFailure {
    code: String,
    message: String,
}

pub(super) async fn render_batch(path: &Path, parallel: usize, json: bool, config: &Config) -> Outcome {
    let lines = match read_lines(path) {
        Ok(lines) => lines,
        Err(outcome) => return outcome,
    };
    if lines.is_empty() {
        return fail(&format!("batch file {} holds no job", path.display()), Outcome::Failed);
    }
    let pipeline = match app::build_pipeline(config, Mode::OneShot).await {
        Ok(pipeline) => pipeline,
        Err(error) => return fail(&format!("{error:#}"), start_up_outcome(&error)),
    };
    let interrupts = Interrupts::watch(Box::new(Silent));
    let total = lines.len();
    let mut bar = Bar::new(total, !json && std::io::stderr().is_terminal());
    let (pipeline, watch) = (&pipeline, &interrupts);
    let mut results = futures_util::stream::iter(lines)
        .map(|(line, parsed)| async move { (line, render_line(pipeline, watch, parsed).await) })
        .buffer_unordered(parallel.max(1));
    let mut failed_lines = Vec::new();
    loop {
        let next = tokio::select! {
            next = results.next() => next,
            () = interrupts.abandon.notified() => {
                bar.clear();
                return fail(&format!("batch stopped with {} of {total} lines done", bar.done), Outcome::Interrupted);
            }
        };
        let Some((line, result)) = next else { break };
        if result.is_err() {
            failed_lines.push(line);
        }
        bar.clear();
        report(line, &result, json);
        bar.advance(result.is_err());
    }
    bar.clear();
    failed_lines.sort_unstable();
    let seconds = bar.started.elapsed().as_secs_f64();
    let _ = writeln!(
        std::io::stderr(),
        "Batch: {} of {total} rendered, {} failed, in {seconds:.1} s",
        total - failed_lines.len(),
        failed_lines.len()
    );
    if failed_lines.is_empty() {
        Outcome::Success
    } else {
        let numbers: Vec<String> = failed_lines.iter().map(usize::to_string).collect();
        fail(&format!("failed lines: {}", numbers.join(", ")), Outcome::Failed)
    }
}

async fn render_line(
    pipeline: &Pipeline,
    interrupts: &Interrupts,
    parsed: Result<RenderRequest, String>,
) -> LineResult {
    let request = parsed.map_err(|message| LineFailure {
        code: crate::error_code::ErrorCode::InvalidPayload.as_str().to_owned(),
        message,
    })?;
    let span = tracing::info_span!("render", design.id = %request.design_id, tenant.id = %request.tenant_id);
    match pipeline.run(&request, interrupts).instrument(span).await {
        Ok(output) => Ok(output),
        Err(error) => {
            // Each line is a one-shot render with a single attempt, settled like a job.
            let error = JobError::from(error);
            if settle(&error, 1, 1).record_failed
                && let Err(store_error) = pipeline.record_failure(&request, &error.failed_render()).await
            {
                tracing::warn!(error = %store_error, "could not record the failure on the design row");
            }
            Err(LineFailure {
                code: error.code().as_str().to_owned(),
                message: error.reason(),
            })
        }
    }
}

/// One finished line: a JSON object with `--json`, a line of text otherwise.
fn report(line: usize, result: &LineResult, json: bool) {
    let text = match (result, json) {
        (Ok(output), true) => serde_json::json!({"line": line, "status": "COMPLETED", "result": output}).to_string(),
        (Err(failure), true) => serde_json::json!({
            "line": line,
            "status": "FAILED",
            "error": {"code": failure.code, "message": failure.message},
        })
        .to_string(),
        (Ok(output), false) => format!(
            "line {line}: rendered design {} -> {}",
            output.design_id, output.composite_texture_url
        ),
        (Err(failure), false) => format!("line {line}: failed: {}", failure.message.replace(['\n', '\r'], " ")),
    };
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

/// The progress line on a terminal: done, failed and the time left at the pace so far.
struct Bar {
    total: usize,
    done: usize,
    failed: usize,
    started: Instant,
    visible: bool,
}

impl Bar {
    fn new(total: usize, visible: bool) -> Self {
        let bar = Self {
            total,
            done: 0,
            failed: 0,
            started: Instant::now(),
            visible,
        };
        bar.draw();
        bar
    }

    fn advance(&mut self, failed: bool) {
        self.done += 1;
        self.failed += usize::from(failed);
        self.draw();
    }

    fn draw(&self) {
        if !self.visible {
            return;
        }
        const WIDTH: usize = 30;
        let filled = WIDTH * self.done / self.total.max(1);
        let eta = if self.done == 0 {
            "–".to_owned()
        } else {
            let left = self.started.elapsed().as_secs_f64() / self.done as f64 * (self.total - self.done) as f64;
            format!("{}:{:02}", left as u64 / 60, left as u64 % 60)
        };
        let _ = write!(
            std::io::stderr(),
            "\r[{}{}] {}/{} done, {} failed, ETA {eta}",
            "#".repeat(filled),
            ".".repeat(WIDTH - filled),
            self.done,
            self.total,
            self.failed
        );
    }

    /// Erases the progress line so other output starts on a clean line.
    fn clear(&self) {
        if self.visible {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
        }
    }
}

/// `enqueue --batch`: validates every line first, adds the good ones with BullMQ's bulk add
/// (in chunks) and prints their ids, one per line in file order; bad lines are named on stderr
/// and make the exit code 1. With `--as-flow` the good lines become one flow, printed as
/// `batch <parent id>` followed by the renders' ids.
pub(super) async fn enqueue_batch(path: &Path, args: &super::EnqueueArgs, config: &Config) -> Outcome {
    let lines = match read_lines(path) {
        Ok(lines) => lines,
        Err(outcome) => return outcome,
    };
    let mut payloads = Vec::new();
    let mut bad = Vec::new();
    for (number, parsed) in lines {
        match parsed {
            Ok(request) if super::uses_local_files(&request) => {
                bad.push((
                    number,
                    "queued jobs cannot use local files: give http(s) URLs".to_owned(),
                ));
            }
            Ok(request) => payloads.push(request.to_payload()),
            Err(problem) => bad.push((number, problem)),
        }
    }
    for (number, problem) in &bad {
        let _ = writeln!(
            std::io::stderr(),
            "line {number}: {}",
            problem.replace(['\n', '\r'], " ")
        );
    }
    if payloads.is_empty() && bad.is_empty() {
        return fail(&format!("batch file {} holds no job", path.display()), Outcome::Failed);
    }
    if !payloads.is_empty() {
        let added = if args.as_flow {
            crate::queue::enqueue_flow(&config.queue, &config.redis, &payloads, args.attempts, args.backoff_ms)
                .await
                .map(|ids| {
                    std::iter::once(format!("batch {}", ids.parent))
                        .chain(ids.children)
                        .collect()
                })
        } else {
            crate::queue::enqueue_bulk(&config.queue, &config.redis, &payloads, args.attempts, args.backoff_ms).await
        };
        match added {
            Ok(ids) => {
                let mut stdout = std::io::stdout().lock();
                for id in ids {
                    let _ = writeln!(stdout, "{id}");
                }
            }
            Err(error) => {
                return fail(
                    &crate::failure::with_code(&error, error.code()),
                    super::outcome_of(error.disposition()),
                );
            }
        }
    }
    if bad.is_empty() {
        Outcome::Success
    } else {
        let numbers: Vec<String> = bad.iter().map(|(number, _)| number.to_string()).collect();
        fail(
            &format!("{} jobs added; failed lines: {}", payloads.len(), numbers.join(", ")),
            Outcome::Failed,
        )
    }
}
