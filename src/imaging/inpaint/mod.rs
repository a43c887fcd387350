//! Content-aware fill of a binary hole in an RGBA texture, done purely on the CPU.
//!
//! This module owns the built-in fill engines: [`telea_fill`], the classical fast-marching
//! baseline, and [`patchmatch_fill`], multi-scale exemplar-based completion.
//! In tests and with the non-default `eval` cargo feature it also has `eval`, the procedural
//! quality evaluation that compares the two (`design-render eval-fill`), and `textures`, its
//! ground truth. Neither is part of the production library, so nothing else may depend on them.
//! It must not do IO: no files, no network, no environment, no logging. Callers decode
//! and encode images and decide where the results go; these functions only turn pixels
//! into pixels, so they can run inside `spawn_blocking` or a test without any setup.

#[cfg(any(test, feature = "eval"))]
pub mod eval;
mod patchmatch;
mod telea;
#[cfg(any(test, feature = "eval"))]
pub mod textures;

pub use patchmatch::{PatchMatchParams, patchmatch_fill};
pub use telea::telea_fill;

use crate::error_code::ErrorCode;
use image::{GrayImage, RgbaImage};

/// Why a fill could not run. Both variants are caller errors, so retrying cannot help.
#[derive(Debug, thiserror::Error)]
pub enum FillError {
    #[error("mask is {mask_width}x{mask_height} but the image is {width}x{height}")]
    SizeMismatch {
        width: u32,
        height: u32,
        mask_width: u32,
        mask_height: u32,
    },
    #[error("the mask covers the whole image: there is nothing to sample texture from")]
    NoSource,
}

impl FillError {
    /// A stable, low-cardinality code for the DB, events and metric labels.
    pub fn code(&self) -> ErrorCode {
        match self {
            FillError::SizeMismatch { .. } => ErrorCode::FillMaskSizeMismatch,
            FillError::NoSource => ErrorCode::FillNoSource,
        }
    }
}

/// The result of a fill: the completed image plus what the engine did.
#[derive(Debug, Clone)]
pub struct FillOutcome {
    /// The filled image. Pixels outside the hole are byte-identical to the input.
    pub image: RgbaImage,
    /// How many pixels the hole had, and so how many the engine wrote.
    pub filled_pixels: u64,
    /// Engine-specific figures, useful for logs and tuning.
    pub stats: FillStats,
}

/// Engine-specific figures about one fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FillStats {
    /// The hole was empty, so no engine ran.
    Unchanged,
    /// Telea's fast marching ran with this neighbourhood radius.
    Telea { radius: u32 },
    /// PatchMatch ran; the figures are the ones actually used after any fallback.
    PatchMatch {
        /// Number of pyramid levels, counting the full-resolution one.
        pyramid_levels: u32,
        /// Patch side in pixels; smaller than requested when no patch of the
        /// requested size fits wholly outside the hole.
        patch_size: u32,
        /// EM (search then vote) iterations summed over all levels.
        em_iterations_run: u32,
    },
}

/// The hole as one flag per pixel, row-major, after the common checks.
struct HoleMask {
    width: usize,
    height: usize,
    flags: Vec<bool>,
    count: u64,
}

/// What a fill engine should do with a given image and hole.
enum Prepared {
    /// Nothing to fill: return this outcome as it is.
    Done(FillOutcome),
    /// Run the engine on this hole.
    Fill(HoleMask),
}

/// Runs the checks both engines share: sizes must match, an empty hole is a no-op and a
/// hole covering every pixel leaves nothing to sample from.
fn prepare(image: &RgbaImage, hole: &GrayImage) -> Result<Prepared, FillError> {
    let (width, height) = image.dimensions();
    let (mask_width, mask_height) = hole.dimensions();
    if (width, height) != (mask_width, mask_height) {
        return Err(FillError::SizeMismatch {
            width,
            height,
            mask_width,
            mask_height,
        });
    }
    let flags: Vec<bool> = hole.as_raw().iter().map(|&value| value >= 128).collect();
    let count = flags.iter().filter(|&&inside| inside).count() as u64;
    if count == 0 {
        return Ok(Prepared::Done(FillOutcome {
            image: image.clone(),
            filled_pixels: 0,
            stats: FillStats::Unchanged,
        }));
    }
    if count == flags.len() as u64 {
        return Err(FillError::NoSource);
    }
    Ok(Prepared::Fill(HoleMask {
        width: width as usize,
        height: height as usize,
        flags,
        count,
    }))
}

/// Rounds a channel value to the nearest byte, saturating at both ends.
fn to_byte(value: f32) -> u8 {
    (value + 0.5).clamp(0.0, 255.0) as u8
}
