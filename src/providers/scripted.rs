//! The scripted editor, for tests: an [`ImageEditor`] that gives the answers it was told to
//! give, in order, and records what it was asked.
//!
//! It owns a queue of [`Answer`]s (an image, an image with a paid call in its accounting, or a
//! [`ProviderError`]), an optional gate per answer that holds the call until the test lets it
//! go, and the log of every request. It must not touch the network, sleep, or decide anything
//! a real adapter decides (retries, breakers, fallback): the decorators are tested by wrapping
//! it. A call for which no answer is left fails as misconfigured, naming the call, so a test
//! that scripted too few answers fails loudly instead of hanging.
//!
//! Holding a call: [`Answer::held_at`] puts a shared `tokio::sync::Barrier::new(2)` in front of
//! one answer. The call meets the test at the barrier twice: once on arrival and once more
//! before it answers. The test's first `wait()` therefore returns only when the job is inside
//! the inpaint step, and the step cannot finish before the test's second `wait()`:
//!
//! ```text
//! let gate = Arc::new(Barrier::new(2));
//! let editor = Arc::new(ScriptedEditor::new([Answer::base().held_at(gate.clone())]));
//! // start the job …
//! gate.wait().await; // the job is now mid-inpaint
//! // … shut down, cancel, look at the row …
//! gate.wait().await; // the edit answers
//! ```

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use image::RgbaImage;
use tokio::sync::Barrier;

use super::{Accounting, EditRequest, EditResponse, ImageEditor, PaidCall, ProviderError, Usage};
use crate::job::{Quality, RenderSize};

/// The default provider name, recorded as `metadata.provider`.
pub const NAME: &str = "scripted";

/// The picture an image answer returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScriptedImage {
    /// The base texture, unchanged.
    Base,
    /// One RGBA colour, at the base's dimensions (so the composite needs no resize).
    Solid([u8; 4]),
}

/// One scripted answer. Build it with [`Answer::base`], [`Answer::solid`], [`Answer::paid`] or
/// [`Answer::fail`], and optionally hold it with [`Answer::held_at`].
#[derive(Debug)]
pub struct Answer {
    outcome: Outcome,
    gate: Option<Arc<Barrier>>,
}

/// One request the editor received, in arrival order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedEdit {
    /// The sanitised prompt text the provider was given.
    pub prompt: String,
    /// The job's requested output size.
    pub size: RenderSize,
    pub quality: Quality,
    /// The base image's dimensions.
    pub image: (u32, u32),
    /// Whether a mask came with the request.
    pub mask: bool,
}

/// An editor whose answers are scripted. Share it as an `Arc`: one clone for the pipeline, one
/// for the test's assertions and for [`ScriptedEditor::push`].
pub struct ScriptedEditor {
    name: &'static str,
    uses_prompt: bool,
    state: Mutex<State>,
}

#[derive(Debug)]
enum Outcome {
    Image {
        image: ScriptedImage,
        paid_call: Option<PaidCall>,
    },
    Fail(ProviderError),
    Panic,
}

#[derive(Default)]
struct State {
    answers: VecDeque<Answer>,
    received: Vec<ReceivedEdit>,
}

impl Answer {
    /// Returns the base unchanged, at no cost.
    pub fn base() -> Self {
        Self::image(ScriptedImage::Base, None)
    }

    /// Returns a solid colour at the base's dimensions, at no cost.
    pub fn solid(rgba: [u8; 4]) -> Self {
        Self::image(ScriptedImage::Solid(rgba), None)
    }

    /// Returns `image` as the product of the paid call `call`: `accounting.paid_call` carries
    /// it, and `usage` and `cost_micro_usd` are the call's, as a paid adapter reports them.
    pub fn paid(image: ScriptedImage, call: PaidCall) -> Self {
        Self::image(image, Some(call))
    }

    /// Fails with `error`, exactly as given.
    pub fn fail(error: ProviderError) -> Self {
        Self {
            outcome: Outcome::Fail(error),
            gate: None,
        }
    }

    /// Panics inside the call, as a provider with a bug would, so tests can check that a panic
    /// costs one attempt and nothing else (no held slot, no stuck row).
    pub fn panic() -> Self {
        Self {
            outcome: Outcome::Panic,
            gate: None,
        }
    }

    /// Holds this answer at `gate` (see the module docs for the two-rendezvous protocol).
    pub fn held_at(mut self, gate: Arc<Barrier>) -> Self {
        self.gate = Some(gate);
        self
    }

    fn image(image: ScriptedImage, paid_call: Option<PaidCall>) -> Self {
        Self {
            outcome: Outcome::Image { image, paid_call },
            gate: None,
        }
    }
}

/// A paid call by the scripted provider, for [`Answer::paid`]: `micro_cents` is the exact cost
/// (the store rounds the design's sum up to whole cents), `call_id` the idempotency key.
pub fn paid_call(call_id: impl Into<String>, usage: Usage, micro_cents: u64) -> PaidCall {
    PaidCall {
        call_id: call_id.into(),
        provider: NAME,
        model: "scripted".to_owned(),
        usage,
        cost: crate::budget::Cost {
            total: crate::budget::MicroCents(micro_cents),
            breakdown: crate::budget::CostBreakdown::default(),
        },
    }
}

impl ScriptedEditor {
    /// An editor named [`NAME`] that follows the prompt and gives `answers` in order.
    pub fn new(answers: impl IntoIterator<Item = Answer>) -> Self {
        Self {
            name: NAME,
            uses_prompt: true,
            state: Mutex::new(State {
                answers: answers.into_iter().collect(),
                received: Vec::new(),
            }),
        }
    }

    /// Reports another provider name (to stand in for `openai` in a chain, say).
    pub fn named(mut self, name: &'static str) -> Self {
        self.name = name;
        self
    }

    /// Says the provider ignores the prompt, as the built-in fill does.
    #[cfg(test)]
    fn ignoring_prompt(mut self) -> Self {
        self.uses_prompt = false;
        self
    }

    /// Appends an answer to the script.
    pub fn push(&self, answer: Answer) {
        self.lock().answers.push_back(answer);
    }

    /// Every request so far, in arrival order (recorded before any gate).
    pub fn requests(&self) -> Vec<ReceivedEdit> {
        self.lock().received.clone()
    }

    /// How many scripted answers are still unused.
    pub fn remaining(&self) -> usize {
        self.lock().answers.len()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Each critical section is one push, pop or clone, so a poisoned lock still guards
        // consistent data.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait::async_trait]
impl ImageEditor for ScriptedEditor {
    fn name(&self) -> &'static str {
        self.name
    }

    async fn edit(&self, request: EditRequest<'_>) -> Result<EditResponse, ProviderError> {
        // The answer is taken on arrival, so concurrent calls get answers in arrival order
        // even when an earlier one is held at its gate.
        let (call, answer) = {
            let mut state = self.lock();
            state.received.push(ReceivedEdit {
                prompt: request.prompt.as_str().to_owned(),
                size: request.size,
                quality: request.quality,
                image: request.image.dimensions(),
                mask: request.mask.is_some(),
            });
            (state.received.len(), state.answers.pop_front())
        };
        let Some(Answer { outcome, gate }) = answer else {
            return Err(ProviderError::Misconfigured {
                provider: self.name,
                reason: format!("the script has no answer left for call {call}"),
            });
        };
        if let Some(gate) = gate {
            gate.wait().await;
            gate.wait().await;
        }
        let (image, paid_call) = match outcome {
            Outcome::Fail(error) => return Err(error),
            Outcome::Panic => panic!("scripted panic in call {call}"),
            Outcome::Image { image, paid_call } => (image, paid_call),
        };
        let image = match image {
            ScriptedImage::Base => RgbaImage::clone(request.image),
            ScriptedImage::Solid(rgba) => {
                let (width, height) = request.image.dimensions();
                RgbaImage::from_pixel(width, height, image::Rgba(rgba))
            }
        };
        let usage = paid_call.as_ref().map_or_else(Usage::default, |paid| paid.usage);
        let cost_micro_usd = paid_call.as_ref().map_or(0, |paid| paid.cost.total.0.div_ceil(100));
        Ok(EditResponse {
            image,
            provider: self.name,
            prompt_used: self.uses_prompt,
            usage,
            cost_micro_usd,
            details: serde_json::json!({ "scripted": true, "call": call }),
            accounting: Accounting {
                paid_call,
                estimate: None,
                dry_run: false,
            },
            attempts: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::safety::{SafePrompt, SafetyPolicy, sanitize};

    struct Inputs {
        image: Arc<RgbaImage>,
        mask: image::GrayImage,
        prompt: SafePrompt,
    }

    fn inputs(prompt: &str) -> Inputs {
        Inputs {
            image: Arc::new(RgbaImage::from_fn(6, 4, |x, y| image::Rgba([x as u8, y as u8, 9, 255]))),
            mask: image::GrayImage::from_pixel(6, 4, image::Luma([255])),
            prompt: sanitize(prompt, &SafetyPolicy::default(), 100).unwrap().prompt,
        }
    }

    fn request<'a>(inputs: &'a Inputs, with_mask: bool) -> EditRequest<'a> {
        EditRequest {
            image: &inputs.image,
            mask: with_mask.then_some(&inputs.mask),
            prompt: &inputs.prompt,
            size: RenderSize::parse("128x64").unwrap(),
            quality: Quality::Hd,
            tokens_spent: 0,
        }
    }

    #[tokio::test]
    async fn answers_come_in_script_order_and_then_run_out_loudly() {
        let inputs = inputs("mossy stone");
        let editor = ScriptedEditor::new([
            Answer::base(),
            Answer::solid([10, 20, 30, 255]),
            Answer::fail(ProviderError::Rejected {
                provider: "openai",
                code: crate::error_code::ErrorCode::ProviderContentBlocked,
                reason: "blocked by provider".into(),
            }),
        ]);

        let base = editor.edit(request(&inputs, true)).await.unwrap();
        assert_eq!(base.image, *inputs.image);
        assert_eq!(base.provider, "scripted");
        assert!(base.accounting.paid_call.is_none());
        assert_eq!(base.cost_micro_usd, 0);

        let solid = editor.edit(request(&inputs, true)).await.unwrap();
        assert_eq!(solid.image.dimensions(), (6, 4));
        assert!(solid.image.pixels().all(|pixel| pixel.0 == [10, 20, 30, 255]));

        let error = editor.edit(request(&inputs, true)).await.unwrap_err();
        assert_eq!(error.code(), "provider_content_blocked");
        assert!(!error.is_retryable());

        assert_eq!(editor.remaining(), 0);
        let error = editor.edit(request(&inputs, true)).await.unwrap_err();
        assert_eq!(error.code(), "provider_misconfigured");
        assert!(error.to_string().contains("no answer left for call 4"), "{error}");
    }

    #[tokio::test]
    async fn a_paid_answer_carries_its_call_in_the_accounting() {
        let inputs = inputs("slate");
        let usage = Usage {
            input_tokens: 110,
            output_tokens: 4160,
        };
        let call = paid_call("scripted:call-1", usage, 16_727_500);
        let editor = ScriptedEditor::new([Answer::paid(ScriptedImage::Base, call.clone())]).named("openai");

        let response = editor.edit(request(&inputs, false)).await.unwrap();
        assert_eq!(response.provider, "openai");
        assert_eq!(response.accounting.paid_call, Some(call));
        assert_eq!(response.usage, usage);
        // 16 727 500 micro-cents are 167 275 micro-dollars.
        assert_eq!(response.cost_micro_usd, 167_275);
        assert!(!response.accounting.dry_run);
    }

    #[tokio::test]
    async fn records_prompt_size_quality_and_mask_of_every_request() {
        let inputs = inputs("weathered brick");
        let editor = ScriptedEditor::new([Answer::base(), Answer::base()]).ignoring_prompt();
        let response = editor.edit(request(&inputs, true)).await.unwrap();
        assert!(!response.prompt_used);
        editor.edit(request(&inputs, false)).await.unwrap();
        let expected = |mask| ReceivedEdit {
            prompt: "weathered brick".into(),
            size: RenderSize::parse("128x64").unwrap(),
            quality: Quality::Hd,
            image: (6, 4),
            mask,
        };
        assert_eq!(editor.requests(), [expected(true), expected(false)]);
    }

    #[tokio::test]
    async fn pushed_answers_extend_the_script() {
        let inputs = inputs("tiles");
        let editor = ScriptedEditor::new([]);
        editor.push(Answer::solid([1, 2, 3, 4]));
        assert_eq!(editor.remaining(), 1);
        let response = editor.edit(request(&inputs, true)).await.unwrap();
        assert_eq!(response.image.get_pixel(0, 0).0, [1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn a_held_answer_arrives_and_answers_only_when_the_test_releases_it() {
        let gate = Arc::new(Barrier::new(2));
        let editor = Arc::new(ScriptedEditor::new([Answer::base().held_at(gate.clone())]));
        let call = tokio::spawn({
            let editor = Arc::clone(&editor);
            async move {
                let inputs = inputs("marble");
                editor
                    .edit(request(&inputs, true))
                    .await
                    .map(|response| response.provider)
            }
        });
        // First rendezvous: the call has arrived and been recorded, and is now held.
        gate.wait().await;
        assert_eq!(editor.requests().len(), 1);
        tokio::task::yield_now().await;
        assert!(!call.is_finished(), "a held call must not answer before the release");
        // Second rendezvous: the call answers.
        gate.wait().await;
        assert_eq!(call.await.unwrap().unwrap(), "scripted");
    }
}
