//! Multi-scale exemplar-based completion: PatchMatch nearest-neighbour fields (Barnes et
//! al. 2009) inside coarse-to-fine EM voting in the spirit of Wexler et al. 2007.
//!
//! This module owns the texture-synthesising fill engine. For every pixel whose patch
//! overlaps the hole it keeps the position of the most similar source patch (a patch lying
//! wholly outside the hole), improves those matches by propagation and random search, and
//! re-estimates each hole pixel as a weighted vote of the overlapping matched patches.
//! Work starts on a reduced-resolution pyramid level; the nearest-neighbour field itself,
//! not the pixels, is upsampled to the next level.
//!
//! Two choices keep fine texture, such as the thin veins of marble, from washing out.
//! The votes are strongly similarity-weighted, close to taking the mode of the candidates
//! rather than their mean, because a blurred estimate steers the next search towards
//! plain source patches. And the final full-resolution pass copies each hole pixel from
//! the best-matching patch that covers it, then softens the seams this leaves at the
//! hole's edge with a correction that fades out within a few pixels of it.
//!
//! The output is a pure function of the input and `seed`: random numbers come from a
//! counter-based generator keyed by pixel, level and iteration, parallel work is split
//! into fixed strips whose results do not depend on scheduling, and the arithmetic avoids
//! transcendental library calls whose last bit may differ between platforms.
//! It must not do IO and must never write a pixel outside the hole.

use image::{GrayImage, RgbaImage};
use rayon::prelude::*;

use super::telea::telea_in_place;
use super::{FillError, FillOutcome, FillStats, Prepared, prepare, to_byte};

/// Tuning for [`patchmatch_fill`]. The defaults are the ones `eval` measures and the speed
/// figures were taken with; most callers should only change `seed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchMatchParams {
    /// Patch side in pixels. Even values are rounded up to the next odd one. When no patch
    /// of this size fits wholly outside the hole, smaller patches are tried, down to 1.
    pub patch_size: u32,
    /// Number of pyramid levels including full resolution; `None` picks as many as keep
    /// the coarsest level at least `min_level_side` pixels on its shorter side. An explicit
    /// value is an upper bound: levels without any valid source patch are dropped.
    pub pyramid_levels: Option<u32>,
    /// EM iterations (search, then vote) on the small levels, and always on the coarsest.
    pub em_iterations: u32,
    /// EM iterations on the full-resolution level and the one below it, which hold
    /// nearly all the pixels and start from an already good upsampled field.
    pub fine_em_iterations: u32,
    /// PatchMatch sweeps (propagation plus random search) per EM iteration.
    pub nnf_iterations: u32,
    /// Shortest side the automatic pyramid may shrink an image to.
    pub min_level_side: u32,
    /// Seed of the per-pixel random generators.
    pub seed: u64,
}

impl Default for PatchMatchParams {
    fn default() -> Self {
        Self {
            patch_size: 9,
            pyramid_levels: None,
            em_iterations: 4,
            fine_em_iterations: 2,
            nnf_iterations: 2,
            min_level_side: 32,
            seed: 0x5EED_F111,
        }
    }
}

/// Fills every pixel with `hole >= 128` by multi-scale PatchMatch completion.
pub fn patchmatch_fill(
    image: &RgbaImage,
    hole: &GrayImage,
    params: &PatchMatchParams,
) -> Result<FillOutcome, FillError> {
    let mask = match prepare(image, hole)? {
        Prepared::Done(outcome) => return Ok(outcome),
        Prepared::Fill(mask) => mask,
    };
    let finest = Level {
        width: mask.width,
        height: mask.height,
        pixels: texels_with_features(image, &mask.flags, requested_radius_for_features(params)),
        hole: mask.flags,
    };

    // The largest patch that still leaves at least one valid source wins; a patch of one
    // pixel always has a source because the hole does not cover the whole image.
    let requested_radius = (params.patch_size.max(1) / 2) as usize;
    let radius = (0..=requested_radius)
        .rev()
        .find(|&radius| has_source(&finest, radius))
        .unwrap_or(0);

    let mut pyramid = vec![finest];
    let level_cap = params.pyramid_levels.map_or(usize::MAX, |n| n.max(1) as usize);
    let min_side = params.min_level_side.max(2 * radius as u32 + 2) as usize;
    while pyramid.len() < level_cap {
        let Some(last) = pyramid.last() else { break };
        if last.width / 2 < min_side || last.height / 2 < min_side {
            break;
        }
        let coarser = last.downsample();
        if !coarser.hole.iter().any(|&inside| inside) || !has_source(&coarser, radius) {
            break;
        }
        pyramid.push(coarser);
    }

    let level_count = pyramid.len();
    let mut em_iterations_run = 0;
    // Matches are stored as u32 pixel indices, half the memory of usize: the decode limits
    // (`MAX_IMAGE_PIXELS`, at most a gigapixel) keep every index below 2^32.
    let mut field: Option<(usize, usize, Vec<u32>)> = None;
    for (level_index, mut level) in pyramid.into_iter().enumerate().rev() {
        let mut space = SearchSpace::new(&level, radius);
        if field.is_some() {
            // Below the coarsest level the upsampled field already holds globally searched
            // matches, so random search only refines them locally. This is most of the
            // speed-up that the pyramid buys at full resolution.
            space.search_window = (space.search_window / FINE_SEARCH_DIVISOR).max(1);
        }
        let mut nnf = match field.take() {
            None => {
                level.initialise_hole_by_diffusion();
                space.random_field(params.seed, level_index)
            }
            Some((coarse_width, coarse_height, coarse_nnf)) => {
                let nnf = space.upsample_field(&coarse_nnf, coarse_width, coarse_height, params.seed, level_index);
                // The first estimate at a finer level comes from the upsampled field's
                // uniform vote, which keeps the structure found at the coarser level.
                space.vote(&mut level.pixels, &nnf, Vote::Uniform);
                nnf
            }
        };
        // The two largest levels hold about 94% of the pixels, so they get the short
        // schedule; the small levels, where the layout of the fill is decided, the long
        // one. The coarsest level starts from random matches and always needs the long one.
        let coarsest = level_index + 1 == level_count;
        let iterations = if level_index <= 1 && !coarsest {
            params.fine_em_iterations.max(1)
        } else {
            params.em_iterations.max(1)
        };
        let mut best_sources = None;
        for em in 0..iterations {
            let mut distance = space.distances(&level.pixels, &nnf);
            for sweep in 0..params.nnf_iterations {
                let key = [params.seed, level_index as u64, u64::from(em), u64::from(sweep)];
                space.improve(&level.pixels, &mut nnf, &mut distance, key, sweep % 2 == 1);
            }
            em_iterations_run += 1;
            if level_index == 0 && em + 1 == iterations {
                best_sources = Some(space.best_sources(&nnf, &distance));
            } else {
                space.vote(&mut level.pixels, &nnf, Vote::Weighted(&distance));
            }
        }
        if let Some((holes, sources)) = best_sources {
            // The field and its distances are spent: free them before the seam correction,
            // the step of the fill that needs the most memory of its own.
            drop(nnf);
            let filled = space.copy_with_seam_correction(&level.pixels, &holes, &sources);
            drop(level.pixels);
            let mut output = image.clone();
            let samples: &mut [u8] = &mut output;
            for (&index, texel) in holes.iter().zip(&filled) {
                samples[index * 4..index * 4 + 4].copy_from_slice(&texel[..4]);
            }
            return Ok(FillOutcome {
                image: output,
                filled_pixels: mask.count,
                stats: FillStats::PatchMatch {
                    pyramid_levels: level_count as u32,
                    patch_size: 2 * radius as u32 + 1,
                    em_iterations_run,
                },
            });
        }
        field = Some((level.width, level.height, nnf));
    }
    // The loop always returns on level 0, which exists because the pyramid starts with it.
    Err(FillError::NoSource)
}

/// Channels per texel: RGBA, two texture features, two unused lanes that keep the
/// texel eight bytes wide so the distance loop vectorises.
const CHANNELS: usize = 8;

/// A pixel as the search sees it: RGBA followed by the texture features.
type Texel = [u8; CHANNELS];

/// Scale of the texture features: mean absolute luma difference times this. Large enough
/// that a source patch with much weaker texture than the hole's estimate loses to a
/// textured one, even when its colours match the estimate a little better.
const FEATURE_GAIN: f32 = 6.0;

fn requested_radius_for_features(params: &PatchMatchParams) -> usize {
    (params.patch_size.max(1) / 2).max(1) as usize
}

/// Builds texels from the image: RGBA plus the mean absolute horizontal and vertical luma
/// differences over a window around each known pixel (Newson et al. 2014).
///
/// Plain colour distances favour flat source patches once the estimate in the hole is a
/// little blurred, and the fill washes out. Averaging gradient magnitudes does not cancel
/// the way averaging colours does, so the voted features keep telling the search how much
/// texture belongs in the hole. Hole pixels start at zero and are filled like colours.
fn texels_with_features(image: &RgbaImage, hole: &[bool], radius: usize) -> Vec<Texel> {
    let (width, height) = (image.width() as usize, image.height() as usize);
    let luma: Vec<f32> = image
        .pixels()
        .map(|p| 0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2]))
        .collect();
    // Differences count only between two known pixels, so the hole's placeholder
    // values never leak into the features of its surroundings.
    let mut horizontal = vec![0.0f32; width * height];
    let mut vertical = vec![0.0f32; width * height];
    let mut weight = vec![0.0f32; width * height];
    for y in 0..height {
        for x in 0..width {
            let index = y * width + x;
            if hole[index] {
                continue;
            }
            weight[index] = 1.0;
            if x + 1 < width && !hole[index + 1] {
                horizontal[index] = (luma[index + 1] - luma[index]).abs();
            }
            if y + 1 < height && !hole[index + width] {
                vertical[index] = (luma[index + width] - luma[index]).abs();
            }
        }
    }
    drop(luma);
    let horizontal = box_sum(horizontal, width, height, radius);
    let vertical = box_sum(vertical, width, height, radius);
    let weight = box_sum(weight, width, height, radius);
    image
        .pixels()
        .enumerate()
        .map(|(index, pixel)| {
            let mut texel = [0u8; CHANNELS];
            texel[..4].copy_from_slice(&pixel.0);
            if !hole[index] && weight[index] > 0.0 {
                texel[4] = to_byte(FEATURE_GAIN * horizontal[index] / weight[index]);
                texel[5] = to_byte(FEATURE_GAIN * vertical[index] / weight[index]);
            }
            texel
        })
        .collect()
}

/// Sum over the (2 radius + 1)^2 window around each pixel, clipped to the image.
/// Rows are summed with prefix sums, then a running window of whole rows is kept, so both
/// passes walk memory in order. Sums are f64, so adding and removing rows loses nothing.
/// The input buffer is reused for the output, which keeps the peak memory of a 2048² fill
/// down: only the row sums are allocated.
fn box_sum(mut values: Vec<f32>, width: usize, height: usize, radius: usize) -> Vec<f32> {
    let mut rows = vec![0.0f64; width * height];
    rows.par_chunks_mut(width.max(1)).enumerate().for_each(|(y, row)| {
        let mut prefix = vec![0.0f64; width + 1];
        for x in 0..width {
            prefix[x + 1] = prefix[x] + f64::from(values[y * width + x]);
        }
        for (x, out) in row.iter_mut().enumerate() {
            let (low, high) = (x.saturating_sub(radius), (x + radius + 1).min(width));
            *out = prefix[high] - prefix[low];
        }
    });
    let output = &mut values;
    let mut window = vec![0.0f64; width];
    for row in rows.chunks(width.max(1)).take(radius.min(height)) {
        for (total, &value) in window.iter_mut().zip(row) {
            *total += value;
        }
    }
    for y in 0..height {
        if y + radius < height {
            let entering = &rows[(y + radius) * width..(y + radius + 1) * width];
            for (total, &value) in window.iter_mut().zip(entering) {
                *total += value;
            }
        }
        if y > radius {
            let leaving = &rows[(y - radius - 1) * width..(y - radius) * width];
            for (total, &value) in window.iter_mut().zip(leaving) {
                *total -= value;
            }
        }
        for (out, &total) in output[y * width..(y + 1) * width].iter_mut().zip(&window) {
            *out = total as f32;
        }
    }
    values
}

/// One pyramid level: the current estimate and which pixels it must fill.
struct Level {
    width: usize,
    height: usize,
    /// Known pixels hold (downsampled) input values; hole pixels hold the estimate.
    pixels: Vec<Texel>,
    hole: Vec<bool>,
}

impl Level {
    /// Halves the level. A coarse pixel is part of the hole when any of its four fine
    /// pixels is, so known coarse pixels are averages of known fine pixels only.
    fn downsample(&self) -> Level {
        let (width, height) = (self.width / 2, self.height / 2);
        let mut pixels = vec![[0u8; CHANNELS]; width * height];
        let mut hole = vec![false; width * height];
        for y in 0..height {
            for x in 0..width {
                let mut sum = [0u32; CHANNELS];
                let mut known = 0u32;
                let mut any_hole = false;
                for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                    let fine = (2 * y + dy) * self.width + 2 * x + dx;
                    if self.hole[fine] {
                        any_hole = true;
                    } else {
                        known += 1;
                        for (total, &value) in sum.iter_mut().zip(&self.pixels[fine]) {
                            *total += u32::from(value);
                        }
                    }
                }
                let index = y * width + x;
                hole[index] = any_hole;
                if known > 0 {
                    pixels[index] = sum.map(|total| ((total + known / 2) / known) as u8);
                }
            }
        }
        Level {
            width,
            height,
            pixels,
            hole,
        }
    }

    /// Gives the hole a smooth first estimate from its boundary (Telea's fast marching),
    /// so the first patch search compares against plausible colours rather than zeros.
    fn initialise_hole_by_diffusion(&mut self) {
        // Colours and texture features are diffused separately because the Telea engine
        // works on four channels at a time.
        for first in [0, 4] {
            let mut values: Vec<[f32; 4]> = self
                .pixels
                .iter()
                .map(|texel| std::array::from_fn(|c| f32::from(texel[first + c])))
                .collect();
            telea_in_place(&mut values, &self.hole, self.width, self.height, 3);
            for ((texel, value), &inside) in self.pixels.iter_mut().zip(&values).zip(&self.hole) {
                if inside {
                    for (channel, &v) in value.iter().enumerate() {
                        texel[first + channel] = to_byte(v);
                    }
                }
            }
        }
    }
}

/// How a hole pixel combines the candidate values of the matched patches covering it.
/// The last pass at full resolution does not vote: it copies from the best-matching
/// covering patch (see [`SearchSpace::best_sources`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Vote<'a> {
    /// Plain average: used right after upsampling, when distances are not known yet.
    Uniform,
    /// Wexler's similarity-weighted average of the matches with these patch distances, with
    /// the sharp scale of [`VOTE_SCALE`].
    Weighted(&'a [u32]),
}

/// Scale of the vote weights exp(-d / 2s) as a fraction of the 75th percentile of the
/// per-pixel patch distances. Wexler et al. use the percentile itself, which makes the
/// vote close to a plain mean of the up to patch-side² candidates. Those disagree about
/// where thin or noisy structure lies, so their mean is blurred, and the next search then
/// prefers plain source patches that match the blur: marble's veins faded from the fill.
/// At this scale a candidate whose per-pixel distance exceeds another's by 6% of the
/// percentile counts e⁻¹ times as much, so the vote follows the best-matching patches.
const VOTE_SCALE: f32 = 0.03;

/// Fraction of the boundary mismatch that survives each step into the hole in the seam
/// correction. Below one, the correction is a screened membrane: it takes about half the
/// step away at a straight edge, spreads the rest over a few pixels and fades within a
/// few more, so copied texture deeper in is kept.
const SEAM_PERSISTENCE: f32 = 0.9;

/// Jacobi sweeps of the seam correction. Each sweep carries the correction one pixel
/// further in; with `SEAM_PERSISTENCE` below one, what lies beyond is negligible.
const SEAM_SWEEPS: usize = 20;

/// Marks a missing neighbour in [`SeamLink::neighbours`].
const NO_NEIGHBOUR: u32 = u32::MAX;

/// What the seam correction of one hole pixel depends on, fixed before the sweeps.
struct SeamLink {
    /// Positions in the hole list of the pixel's 4-neighbours inside the hole.
    neighbours: [u32; 4],
    /// Summed mismatches (known value minus what the copied texture predicts there) over
    /// the pixel's known 4-neighbours, per RGBA channel.
    mismatch: [f32; 4],
    /// How many terms the mean over neighbours has: hole neighbours plus known
    /// neighbours that contributed a mismatch.
    terms: f32,
}

/// How much smaller the first random-search window is below the coarsest level.
const FINE_SEARCH_DIVISOR: usize = 8;

/// Rows per strip in the parallel sweep. Fixed, so strips never depend on the thread count.
const STRIP_ROWS: usize = 16;

/// Everything the search needs about one level that does not change while it runs.
struct SearchSpace {
    width: usize,
    height: usize,
    radius: usize,
    /// The pixels to fill.
    hole: Vec<bool>,
    /// Pixels whose patch overlaps the hole: they need a match. This is the hole dilated
    /// by the patch radius.
    target: Vec<bool>,
    /// Patch centres usable as sources: the whole patch is inside the image and outside
    /// the hole.
    source: Vec<bool>,
    /// The indices of `source`, for uniform random picks (u32: half the memory of usize, and
    /// a level never has 2^32 pixels).
    sources: Vec<u32>,
    /// Half-side of the first random-search window; it halves down to one pixel.
    search_window: usize,
}

impl SearchSpace {
    fn new(level: &Level, radius: usize) -> SearchSpace {
        let (width, height) = (level.width, level.height);
        let target = dilate(&level.hole, width, height, radius);
        let mut source = vec![false; width * height];
        let mut sources = Vec::new();
        if width > 2 * radius && height > 2 * radius {
            for y in radius..height - radius {
                for x in radius..width - radius {
                    let index = y * width + x;
                    if !target[index] {
                        source[index] = true;
                        sources.extend(u32::try_from(index).ok());
                    }
                }
            }
        }
        SearchSpace {
            width,
            height,
            radius,
            hole: level.hole.clone(),
            target,
            source,
            sources,
            search_window: width.max(height),
        }
    }

    /// Any source, picked by `random`; `fallback` when the level has none, which the
    /// pyramid construction rules out but which must not panic if that ever changes.
    fn random_source(&self, random: &mut SplitMix, fallback: usize) -> usize {
        if self.sources.is_empty() {
            return fallback;
        }
        self.sources[random.below(self.sources.len())] as usize
    }

    /// Targets get a uniformly random source; every other pixel matches itself, which
    /// makes the field well defined everywhere without ever being used as a source.
    fn random_field(&self, seed: u64, level_index: usize) -> Vec<u32> {
        (0..self.width * self.height)
            .into_par_iter()
            .map(|index| {
                let source = if self.target[index] {
                    let mut random = SplitMix::keyed(&[seed, level_index as u64, u64::MAX, index as u64]);
                    self.random_source(&mut random, index)
                } else {
                    index
                };
                source as u32
            })
            .collect()
    }

    /// Lifts a coarse field to this level: each fine pixel takes its coarse parent's match,
    /// doubled and shifted by the pixel's position within the parent. Matches that land on
    /// an invalid source are replaced by a random valid one.
    fn upsample_field(
        &self,
        coarse: &[u32],
        coarse_width: usize,
        coarse_height: usize,
        seed: u64,
        level_index: usize,
    ) -> Vec<u32> {
        (0..self.width * self.height)
            .into_par_iter()
            .map(|index| {
                if !self.target[index] {
                    return index as u32;
                }
                let (x, y) = (index % self.width, index / self.width);
                let (cx, cy) = ((x / 2).min(coarse_width - 1), (y / 2).min(coarse_height - 1));
                let coarse_match = coarse[cy * coarse_width + cx] as usize;
                let (sx, sy) = (coarse_match % coarse_width, coarse_match / coarse_width);
                let fx = (2 * sx + x - 2 * cx).clamp(self.radius, self.width - 1 - self.radius);
                let fy = (2 * sy + y - 2 * cy).clamp(self.radius, self.height - 1 - self.radius);
                let candidate = fy * self.width + fx;
                let source = if self.source[candidate] {
                    candidate
                } else {
                    let mut random = SplitMix::keyed(&[seed, level_index as u64, u64::MAX - 1, index as u64]);
                    self.random_source(&mut random, index)
                };
                source as u32
            })
            .collect()
    }

    /// Sum of squared differences over all four channels between the patch at `target`
    /// and the patch at `source`, restricted to the part of the target patch inside the
    /// image. Stops early and returns `None` once the sum reaches `bound`.
    fn patch_distance(&self, pixels: &[Texel], target: usize, source: usize, bound: u32) -> Option<u32> {
        let r = self.radius;
        let (tx, ty) = (target % self.width, target / self.width);
        let (sx, sy) = (source % self.width, source / self.width);
        let left = r.min(tx);
        let right = r.min(self.width - 1 - tx);
        let top = r.min(ty);
        let bottom = r.min(self.height - 1 - ty);
        let span = left + right + 1;
        let mut total = 0u32;
        for row in 0..=top + bottom {
            let target_start = (ty + row - top) * self.width + tx - left;
            let source_start = (sy + row - top) * self.width + sx - left;
            let target_row = &pixels[target_start..target_start + span];
            let source_row = &pixels[source_start..source_start + span];
            total += row_distance(target_row, source_row);
            if total >= bound {
                return None;
            }
        }
        Some(total)
    }

    /// Number of pixels of the patch at `index` that lie inside the image.
    fn patch_area(&self, index: usize) -> u32 {
        let (x, y) = (index % self.width, index / self.width);
        let r = self.radius;
        let columns = r.min(x) + r.min(self.width - 1 - x) + 1;
        let rows = r.min(y) + r.min(self.height - 1 - y) + 1;
        (columns * rows) as u32
    }

    /// Current distance of every target to its match; non-targets get 0.
    fn distances(&self, pixels: &[Texel], nnf: &[u32]) -> Vec<u32> {
        let mut distance = vec![0u32; self.width * self.height];
        distance.par_chunks_mut(self.width).enumerate().for_each(|(y, row)| {
            for (x, value) in row.iter_mut().enumerate() {
                let index = y * self.width + x;
                if self.target[index] {
                    *value = self
                        .patch_distance(pixels, index, nnf[index] as usize, u32::MAX)
                        .unwrap_or(u32::MAX);
                }
            }
        });
        distance
    }

    /// One PatchMatch sweep: propagation from the previous pixel in scan order (reversed
    /// on odd sweeps) and random search with a halving window.
    ///
    /// The image is cut into strips of `STRIP_ROWS` rows that run in parallel. Inside a
    /// strip the scan is sequential, so good matches travel along it as in the serial
    /// algorithm. Across strip borders a strip reads its neighbour's row as it was before
    /// the sweep, so the result is identical however rayon schedules the strips.
    fn improve(&self, pixels: &[Texel], nnf: &mut [u32], distance: &mut [u32], key: [u64; 4], reverse: bool) {
        let width = self.width;
        let strip_len = STRIP_ROWS * width;
        let strip_count = self.height.div_ceil(STRIP_ROWS);
        // The row each strip propagates from across its border, frozen before the sweep.
        let borders: Vec<Option<Vec<u32>>> = (0..strip_count)
            .map(|strip| {
                let row = if reverse {
                    Some((strip + 1) * STRIP_ROWS).filter(|&row| row < self.height)
                } else {
                    (strip * STRIP_ROWS).checked_sub(1)
                };
                row.map(|row| nnf[row * width..(row + 1) * width].to_vec())
            })
            .collect();

        nnf.par_chunks_mut(strip_len)
            .zip(distance.par_chunks_mut(strip_len))
            .enumerate()
            .for_each(|(strip, (strip_nnf, strip_distance))| {
                let first_row = strip * STRIP_ROWS;
                let rows = strip_nnf.len() / width;
                let border = borders[strip].as_deref();
                for step in 0..rows * width {
                    let local = if reverse { rows * width - 1 - step } else { step };
                    let index = first_row * width + local;
                    if !self.target[index] {
                        continue;
                    }
                    let (x, y) = (local % width, local / width);
                    let mut best = (strip_nnf[local] as usize, strip_distance[local]);

                    // Propagation: the neighbour's match shifted by one pixel, so coherent
                    // regions of the field grow along the scan.
                    let horizontal = if reverse {
                        (x + 1 < width).then(|| strip_nnf[local + 1] as usize)
                    } else {
                        (x > 0).then(|| strip_nnf[local - 1] as usize)
                    };
                    if let Some(neighbour) = horizontal {
                        let (nx, ny) = (neighbour % width, neighbour / width);
                        let shifted = if reverse { nx.checked_sub(1) } else { Some(nx + 1) };
                        if let Some(sx) = shifted.filter(|&sx| sx < width) {
                            self.consider(pixels, index, ny * width + sx, &mut best);
                        }
                    }
                    let vertical = if reverse {
                        if y + 1 < rows {
                            Some(strip_nnf[local + width] as usize)
                        } else {
                            border.map(|row| row[x] as usize)
                        }
                    } else if y > 0 {
                        Some(strip_nnf[local - width] as usize)
                    } else {
                        border.map(|row| row[x] as usize)
                    };
                    if let Some(neighbour) = vertical {
                        let (nx, ny) = (neighbour % width, neighbour / width);
                        let shifted = if reverse { ny.checked_sub(1) } else { Some(ny + 1) };
                        if let Some(sy) = shifted.filter(|&sy| sy < self.height) {
                            self.consider(pixels, index, sy * width + nx, &mut best);
                        }
                    }

                    // Random search around the current best in a window that halves.
                    let mut random = SplitMix::keyed(&[key[0], key[1], key[2] << 32 | key[3], index as u64]);
                    let mut window = self.search_window;
                    while window >= 1 {
                        let (bx, by) = (best.0 % width, best.0 / width);
                        let low_x = bx.saturating_sub(window).max(self.radius);
                        let high_x = (bx + window).min(width - 1 - self.radius);
                        let low_y = by.saturating_sub(window).max(self.radius);
                        let high_y = (by + window).min(self.height - 1 - self.radius);
                        if low_x <= high_x && low_y <= high_y {
                            let cx = low_x + random.below(high_x - low_x + 1);
                            let cy = low_y + random.below(high_y - low_y + 1);
                            self.consider(pixels, index, cy * width + cx, &mut best);
                        }
                        window /= 2;
                    }

                    (strip_nnf[local], strip_distance[local]) = (best.0 as u32, best.1);
                }
            });
    }

    /// Replaces `best` (match, distance) by `candidate` when it is a valid, different
    /// source with a smaller distance for the patch at `target`.
    fn consider(&self, pixels: &[Texel], target: usize, candidate: usize, best: &mut (usize, u32)) {
        if candidate != best.0
            && self.source[candidate]
            && let Some(distance) = self.patch_distance(pixels, target, candidate, best.1)
        {
            *best = (candidate, distance);
        }
    }

    /// Re-estimates every hole pixel from the matched patches covering it, in place; known
    /// pixels are unchanged. The estimates are made from the old values into a buffer of the
    /// hole's size and then written back, so the level is never copied whole.
    fn vote(&self, pixels: &mut [Texel], nnf: &[u32], mode: Vote<'_>) {
        let weights = match mode {
            Vote::Weighted(distance) => Some(self.vote_weights(distance)),
            Vote::Uniform => None,
        };
        let holes: Vec<usize> = (0..self.hole.len()).filter(|&index| self.hole[index]).collect();
        let estimates: Vec<Texel> = holes
            .par_iter()
            .map(|&q| self.weighted_vote(pixels, nnf, weights.as_deref(), q % self.width, q / self.width))
            .collect();
        for (&q, estimate) in holes.iter().zip(estimates) {
            pixels[q] = estimate;
        }
    }

    /// Wexler's weight of every patch: exp(-d / 2s) of its per-pixel distance (patches
    /// clipped by the border compare fairly), 1 for the patches that need no match.
    fn vote_weights(&self, distance: &[u32]) -> Vec<f32> {
        let normalised = |index: usize| distance[index] / self.patch_area(index);
        // The scale comes from the distance distribution; the 75th percentile is robust
        // against the few very bad matches. See VOTE_SCALE for why only a small fraction of
        // it is used.
        let mut sample: Vec<u32> = (0..self.target.len())
            .filter(|&index| self.target[index])
            .map(normalised)
            .collect();
        let rank = sample.len() * 3 / 4;
        let percentile = if rank < sample.len() {
            let (_, value, _) = sample.select_nth_unstable(rank);
            (*value).max(1) as f32
        } else {
            1.0
        };
        drop(sample);
        let scale = VOTE_SCALE * percentile;
        (0..self.target.len())
            .into_par_iter()
            .map(|index| {
                let d = if self.target[index] { normalised(index) } else { 0 };
                decay(d as f32 / (2.0 * scale))
            })
            .collect()
    }

    /// The positions p of the patches covering hole pixel (x, y), each with the offset
    /// d = (x, y) - p, so that the patch's vote for the pixel is source(p) + d. The source
    /// patch lies wholly inside the image, so that position always exists.
    fn covering(&self, x: usize, y: usize) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
        let r = self.radius;
        let rows = y.saturating_sub(r)..(y + r + 1).min(self.height);
        rows.flat_map(move |py| {
            let columns = x.saturating_sub(r)..(x + r + 1).min(self.width);
            columns.map(move |px| (py * self.width + px, x + r - px, y + r - py))
        })
    }

    /// The sample a patch at `p` with match `source` gives for offset (dx, dy) + r.
    fn sample(&self, source: usize, shifted_x: usize, shifted_y: usize) -> usize {
        let sx = source % self.width + shifted_x - self.radius;
        let sy = source / self.width + shifted_y - self.radius;
        sy * self.width + sx
    }

    fn weighted_vote(&self, pixels: &[Texel], nnf: &[u32], weights: Option<&[f32]>, x: usize, y: usize) -> Texel {
        let mut sum = [0.0f32; CHANNELS];
        let mut weight_sum = 0.0f32;
        for (p, shifted_x, shifted_y) in self.covering(x, y) {
            let value = pixels[self.sample(nnf[p] as usize, shifted_x, shifted_y)];
            let weight = weights.map_or(1.0, |weights| weights[p]);
            for (total, &channel) in sum.iter_mut().zip(&value) {
                *total += weight * f32::from(channel);
            }
            weight_sum += weight;
        }
        if weight_sum > 0.0 {
            sum.map(|total| to_byte(total / weight_sum))
        } else {
            pixels[y * self.width + x]
        }
    }

    /// The last pass at full resolution copies every hole pixel from its best source and
    /// then removes the seams at the hole's edge (see [`Self::copy_with_seam_correction`]).
    /// This returns the hole pixels and, for each, the position of the source pixel it
    /// should copy: the value proposed by whichever covering patch matches best per pixel
    /// of its area. Only the hole pixels get per-pixel state, which at 2048² with a 15% hole
    /// is a sixth of what full-image buffers would take.
    ///
    /// A pixel's own patch is only one of the patches covering it. Near the hole's edge the
    /// best of them is usually one that overlaps the known pixels and so is anchored by
    /// real data, which continues structure entering the hole better than a mean would.
    fn best_sources(&self, nnf: &[u32], distance: &[u32]) -> (Vec<usize>, Vec<usize>) {
        let holes: Vec<usize> = (0..self.hole.len()).filter(|&index| self.hole[index]).collect();
        let sources = holes
            .par_iter()
            .map(|&index| {
                let (x, y) = (index % self.width, index / self.width);
                // Every pixel covering a hole pixel is a target, the pixel itself among
                // them. Ties go to the first patch in scan order, so the choice is
                // deterministic.
                let mut best = (u32::MAX, nnf[index] as usize);
                for (p, shifted_x, shifted_y) in self.covering(x, y) {
                    let per_pixel = distance[p] / self.patch_area(p);
                    if per_pixel < best.0 {
                        best = (per_pixel, self.sample(nnf[p] as usize, shifted_x, shifted_y));
                    }
                }
                best.1
            })
            .collect();
        (holes, sources)
    }

    /// The new value of every pixel of `holes`, in the same order: copied from its source,
    /// with the seams at the hole's edge corrected.
    ///
    /// Each edge between a hole pixel and a known neighbour compares the neighbour with
    /// the value the copied texture would have there (the source's own neighbour). These
    /// mismatches are spread into the hole by a screened membrane, a local form of Poisson
    /// blending (Pérez et al. 2003): every sweep sets a hole pixel's correction to
    /// `SEAM_PERSISTENCE` times the mean of its neighbours' mismatches and corrections.
    /// The step at the edge shrinks to a gentle ramp, while a few pixels in the correction
    /// has faded and the copied texture is left as it is. Jacobi sweeps over a double
    /// buffer keep the result independent of how rayon schedules the work.
    fn copy_with_seam_correction(&self, pixels: &[Texel], holes: &[usize], sources: &[usize]) -> Vec<Texel> {
        let links = self.seam_links(pixels, holes, sources);
        let mut correction = vec![[0.0f32; 4]; holes.len()];
        let mut next = correction.clone();
        for _ in 0..SEAM_SWEEPS {
            next.par_iter_mut().zip(&links).for_each(|(out, link)| {
                if link.terms == 0.0 {
                    return;
                }
                let mut sum = link.mismatch;
                for &neighbour in link.neighbours.iter().filter(|&&neighbour| neighbour != NO_NEIGHBOUR) {
                    for (total, &value) in sum.iter_mut().zip(&correction[neighbour as usize]) {
                        *total += value;
                    }
                }
                *out = sum.map(|total| SEAM_PERSISTENCE * total / link.terms);
            });
            std::mem::swap(&mut correction, &mut next);
        }
        drop((links, next));

        sources
            .iter()
            .zip(&correction)
            .map(|(&source, shift)| {
                let mut texel = pixels[source];
                for (channel, &delta) in texel.iter_mut().zip(shift) {
                    *channel = to_byte(f32::from(*channel) + delta);
                }
                texel
            })
            .collect()
    }

    /// The fixed terms of the seam correction for each pixel of `holes` (see
    /// [`SeamLink`]). A known neighbour contributes only when the source's neighbour in
    /// the same direction lies inside the image and outside the hole.
    fn seam_links(&self, pixels: &[Texel], holes: &[usize], sources: &[usize]) -> Vec<SeamLink> {
        let (width, height) = (self.width, self.height);
        let mut slot = vec![NO_NEIGHBOUR; width * height];
        for (compact, &index) in holes.iter().enumerate() {
            slot[index] = compact as u32;
        }
        holes
            .par_iter()
            .zip(sources)
            .map(|(&index, &source)| {
                let (x, y) = (index % width, index / width);
                let (source_x, source_y) = (source % width, source / width);
                let mut link = SeamLink {
                    neighbours: [NO_NEIGHBOUR; 4],
                    mismatch: [0.0; 4],
                    terms: 0.0,
                };
                let steps: [(isize, isize); 4] = [(-1, 0), (1, 0), (0, -1), (0, 1)];
                for (neighbour, (dx, dy)) in link.neighbours.iter_mut().zip(steps) {
                    let (Some(nx), Some(ny)) = (offset(x, dx, width), offset(y, dy, height)) else {
                        continue;
                    };
                    let adjacent = ny * width + nx;
                    if self.hole[adjacent] {
                        *neighbour = slot[adjacent];
                        link.terms += 1.0;
                        continue;
                    }
                    let (Some(px), Some(py)) = (offset(source_x, dx, width), offset(source_y, dy, height)) else {
                        continue;
                    };
                    let predicted = py * width + px;
                    if self.hole[predicted] {
                        continue;
                    }
                    for (total, (&known, &copied)) in link
                        .mismatch
                        .iter_mut()
                        .zip(pixels[adjacent].iter().zip(&pixels[predicted]))
                    {
                        *total += f32::from(known) - f32::from(copied);
                    }
                    link.terms += 1.0;
                }
                link
            })
            .collect()
    }
}

/// `value + step` when it stays inside `0..limit`.
fn offset(value: usize, step: isize, limit: usize) -> Option<usize> {
    value.checked_add_signed(step).filter(|&moved| moved < limit)
}

/// Whether any patch of the given radius lies wholly inside the image and outside the hole.
fn has_source(level: &Level, radius: usize) -> bool {
    let (width, height) = (level.width, level.height);
    if width <= 2 * radius || height <= 2 * radius {
        return false;
    }
    let blocked = dilate(&level.hole, width, height, radius);
    (radius..height - radius).any(|y| (radius..width - radius).any(|x| !blocked[y * width + x]))
}

/// Sum of squared channel differences between two equally long pixel rows.
fn row_distance(a: &[Texel], b: &[Texel]) -> u32 {
    a.iter()
        .zip(b)
        .map(|(p, q)| {
            let mut sum = 0u32;
            for channel in 0..CHANNELS {
                let d = i32::from(p[channel]) - i32::from(q[channel]);
                sum += (d * d) as u32;
            }
            sum
        })
        .sum()
}

/// exp(-x) for x >= 0 as (1 + x/16)^-16: close enough for vote weights, and made of basic
/// arithmetic only, so it rounds identically on every platform.
fn decay(x: f32) -> f32 {
    let base = 1.0 / (1.0 + x / 16.0);
    let squared = base * base;
    let fourth = squared * squared;
    let eighth = fourth * fourth;
    eighth * eighth
}

/// Chebyshev dilation of `mask` by `radius`, done separably with running counts.
fn dilate(mask: &[bool], width: usize, height: usize, radius: usize) -> Vec<bool> {
    let mut horizontal = vec![false; width * height];
    for y in 0..height {
        let row = &mask[y * width..(y + 1) * width];
        let mut prefix = vec![0u32; width + 1];
        for x in 0..width {
            prefix[x + 1] = prefix[x] + u32::from(row[x]);
        }
        for x in 0..width {
            let low = x.saturating_sub(radius);
            let high = (x + radius + 1).min(width);
            horizontal[y * width + x] = prefix[high] > prefix[low];
        }
    }
    let mut output = vec![false; width * height];
    for x in 0..width {
        let mut prefix = vec![0u32; height + 1];
        for y in 0..height {
            prefix[y + 1] = prefix[y] + u32::from(horizontal[y * width + x]);
        }
        for y in 0..height {
            let low = y.saturating_sub(radius);
            let high = (y + radius + 1).min(height);
            output[y * width + x] = prefix[high] > prefix[low];
        }
    }
    output
}

/// The splitmix64 generator (Steele, Lea and Flood 2014). Seeded from a key, it gives
/// every pixel of every sweep its own stream, which is what keeps the fill independent
/// of thread scheduling.
struct SplitMix(u64);

impl SplitMix {
    fn keyed(key: &[u64]) -> SplitMix {
        let mut state = 0x243F_6A88_85A3_08D3u64;
        for &part in key {
            state = mix64(state ^ part);
        }
        SplitMix(state)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.0)
    }

    /// A number in `0..bound`; `bound` must be positive.
    fn below(&mut self, bound: usize) -> usize {
        ((u128::from(self.next()) * bound as u128) >> 64) as usize
    }
}

fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fixtures::*;
    use image::{Luma, Rgba};
    use proptest::prelude::*;

    /// Helpers kept in a module of their own so the tests read as specifications.
    mod fixtures {
        use image::{GrayImage, Luma, Rgba, RgbaImage};

        pub const MAGENTA: Rgba<u8> = Rgba([255, 0, 255, 255]);

        pub fn rect_hole(width: u32, height: u32, x0: u32, y0: u32, w: u32, h: u32) -> GrayImage {
            GrayImage::from_fn(width, height, |x, y| {
                let inside = x >= x0 && x < x0 + w && y >= y0 && y < y0 + h;
                Luma([if inside { 255 } else { 0 }])
            })
        }

        /// A pseudo-random but reproducible texture, so patches are distinguishable.
        pub fn noise_texture(width: u32, height: u32) -> RgbaImage {
            RgbaImage::from_fn(width, height, |x, y| {
                let h = (x.wrapping_mul(73_856_093) ^ y.wrapping_mul(19_349_663)) % 251;
                Rgba([h as u8, (x * 4 % 256) as u8, (y * 3 % 256) as u8, 255])
            })
        }

        /// The image with the hole painted magenta, so any unfilled pixel stands out.
        pub fn deface(image: &RgbaImage, hole: &GrayImage) -> RgbaImage {
            let mut defaced = image.clone();
            for (x, y, pixel) in defaced.enumerate_pixels_mut() {
                if hole.get_pixel(x, y)[0] >= 128 {
                    *pixel = MAGENTA;
                }
            }
            defaced
        }

        pub fn assert_outside_unchanged(input: &RgbaImage, output: &RgbaImage, hole: &GrayImage) {
            for (x, y, pixel) in output.enumerate_pixels() {
                if hole.get_pixel(x, y)[0] < 128 {
                    assert_eq!(
                        pixel,
                        input.get_pixel(x, y),
                        "pixel ({x}, {y}) outside the hole changed"
                    );
                }
            }
        }

        /// Mean absolute error over the hole, all channels.
        pub fn hole_error(truth: &RgbaImage, output: &RgbaImage, hole: &GrayImage) -> f64 {
            let mut total = 0.0;
            let mut count = 0.0;
            for (x, y, pixel) in output.enumerate_pixels() {
                if hole.get_pixel(x, y)[0] >= 128 {
                    let expected = truth.get_pixel(x, y);
                    for channel in 0..4 {
                        total += (f64::from(pixel[channel]) - f64::from(expected[channel])).abs();
                        count += 1.0;
                    }
                }
            }
            total / count
        }
    }

    fn fill(image: &RgbaImage, hole: &GrayImage) -> FillOutcome {
        patchmatch_fill(image, hole, &PatchMatchParams::default()).expect("fill succeeds")
    }

    #[test]
    fn same_seed_gives_identical_bytes_whatever_the_thread_count() {
        let image = noise_texture(150, 110);
        let hole = rect_hole(150, 110, 40, 30, 50, 35);
        let params = PatchMatchParams {
            seed: 42,
            ..PatchMatchParams::default()
        };
        let first = patchmatch_fill(&image, &hole, &params).expect("fill succeeds");
        let second = patchmatch_fill(&image, &hole, &params).expect("fill succeeds");
        assert_eq!(first.image.as_raw(), second.image.as_raw());

        let single = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .expect("a one-thread pool can be built");
        let serial = single.install(|| patchmatch_fill(&image, &hole, &params).expect("fill succeeds"));
        assert_eq!(first.image.as_raw(), serial.image.as_raw());

        let other_seed = PatchMatchParams { seed: 43, ..params };
        let different = patchmatch_fill(&image, &hole, &other_seed).expect("fill succeeds");
        assert_ne!(first.image.as_raw(), different.image.as_raw(), "the seed has no effect");
    }

    #[test]
    fn pixels_outside_the_hole_are_copied_exactly() {
        let image = noise_texture(120, 100);
        let hole = rect_hole(120, 100, 30, 20, 40, 30);
        let defaced = deface(&image, &hole);
        let outcome = fill(&defaced, &hole);
        assert_eq!(outcome.filled_pixels, 40 * 30);
        assert_outside_unchanged(&defaced, &outcome.image, &hole);
        assert!(outcome.image.pixels().all(|pixel| *pixel != MAGENTA));
    }

    #[test]
    fn empty_full_and_mismatched_masks() {
        let image = noise_texture(32, 24);
        let outcome = fill(&image, &GrayImage::new(32, 24));
        assert_eq!(outcome.filled_pixels, 0);
        assert_eq!(outcome.stats, FillStats::Unchanged);
        assert_eq!(outcome.image, image);

        let full = GrayImage::from_pixel(32, 24, Luma([200]));
        let params = PatchMatchParams::default();
        assert!(matches!(
            patchmatch_fill(&image, &full, &params),
            Err(FillError::NoSource)
        ));

        let wrong = GrayImage::new(24, 32);
        assert!(matches!(
            patchmatch_fill(&image, &wrong, &params),
            Err(FillError::SizeMismatch {
                width: 32,
                height: 24,
                mask_width: 24,
                mask_height: 32
            })
        ));
    }

    #[test]
    fn holes_touching_the_border_and_corners_are_filled() {
        let image = noise_texture(96, 96);
        let mut hole = rect_hole(96, 96, 0, 0, 20, 14);
        for (x, y, value) in rect_hole(96, 96, 70, 40, 26, 30).enumerate_pixels() {
            if value[0] >= 128 {
                hole.put_pixel(x, y, Luma([255]));
            }
        }
        let defaced = deface(&image, &hole);
        let outcome = fill(&defaced, &hole);
        assert_outside_unchanged(&defaced, &outcome.image, &hole);
        assert!(outcome.image.pixels().all(|pixel| *pixel != MAGENTA));
    }

    #[test]
    fn tiny_and_non_square_images_work() {
        for (width, height) in [(64, 64), (200, 90), (90, 200), (9, 5)] {
            let image = noise_texture(width, height);
            let hole = rect_hole(width, height, width / 3, height / 3, width / 4 + 1, height / 4 + 1);
            let defaced = deface(&image, &hole);
            let outcome = fill(&defaced, &hole);
            assert_outside_unchanged(&defaced, &outcome.image, &hole);
            assert!(
                outcome.image.pixels().all(|pixel| *pixel != MAGENTA),
                "{width}x{height} left a hole pixel unfilled"
            );
        }
    }

    #[test]
    fn falls_back_to_smaller_patches_when_no_full_patch_fits() {
        // Only a two-pixel frame is known: no 9x9 or 5x5 patch fits outside the hole.
        let image = noise_texture(20, 20);
        let hole = rect_hole(20, 20, 2, 2, 16, 16);
        let outcome = fill(&image, &hole);
        let FillStats::PatchMatch { patch_size, .. } = outcome.stats else {
            panic!("expected PatchMatch stats, got {:?}", outcome.stats);
        };
        assert!(patch_size < 5, "patch size {patch_size} cannot fit");
        assert_outside_unchanged(&image, &outcome.image, &hole);

        // A single known pixel still is a source.
        let image = noise_texture(16, 16);
        let mut lonely = GrayImage::from_pixel(16, 16, Luma([255]));
        lonely.put_pixel(15, 0, Luma([0]));
        let outcome = fill(&image, &lonely);
        let corner = *image.get_pixel(15, 0);
        assert!(outcome.image.pixels().all(|pixel| *pixel == corner));
    }

    fn stripes(width: u32, height: u32) -> RgbaImage {
        RgbaImage::from_fn(width, height, |x, _| {
            if x % 8 < 4 {
                Rgba([30, 40, 200, 255])
            } else {
                Rgba([230, 210, 40, 255])
            }
        })
    }

    fn checkerboard(width: u32, height: u32) -> RgbaImage {
        RgbaImage::from_fn(width, height, |x, y| {
            if (x / 6 + y / 6) % 2 == 0 {
                Rgba([20, 20, 20, 255])
            } else {
                Rgba([240, 240, 240, 255])
            }
        })
    }

    #[test]
    fn continues_periodic_textures_far_better_than_telea() {
        for (name, truth) in [("stripes", stripes(96, 80)), ("checkerboard", checkerboard(96, 80))] {
            let hole = rect_hole(96, 80, 33, 25, 27, 23);
            let patchmatch = fill(&deface(&truth, &hole), &hole);
            let telea = super::super::telea_fill(&deface(&truth, &hole), &hole, 5).expect("telea runs");
            let patchmatch_error = hole_error(&truth, &patchmatch.image, &hole);
            let telea_error = hole_error(&truth, &telea.image, &hole);
            assert!(
                patchmatch_error < 2.0,
                "{name}: PatchMatch error {patchmatch_error:.2} is too large"
            );
            assert!(
                patchmatch_error * 10.0 < telea_error,
                "{name}: PatchMatch error {patchmatch_error:.2} is not far below Telea's {telea_error:.2}"
            );
        }
    }

    #[test]
    fn seam_correction_halves_the_step_at_the_hole_edge_and_fades_inwards() {
        // Known pixels are grey 100 except a block of 160 in the top-left corner; the hole
        // copies from inside that block, so a plain copy would leave a step of 60 all
        // around the hole's edge. The screened correction takes at least half of it away
        // at the edge and leaves the copied value nearly intact in the middle.
        let (width, height) = (40, 30);
        let texel = |value: u8| [value, value, value, 255, 0, 0, 0, 0];
        let block = |x: usize, y: usize| x < 13 && y < 13;
        let in_hole = |x: usize, y: usize| (20..30).contains(&x) && (12..22).contains(&y);
        let level = Level {
            width,
            height,
            pixels: (0..width * height)
                .map(|index| texel(if block(index % width, index / width) { 160 } else { 100 }))
                .collect(),
            hole: (0..width * height)
                .map(|index| in_hole(index % width, index / width))
                .collect(),
        };
        let space = SearchSpace::new(&level, 1);
        let holes: Vec<usize> = (0..width * height).filter(|&index| level.hole[index]).collect();
        let sources: Vec<usize> = holes.iter().map(|&index| index - 19 - 11 * width).collect();
        let filled = space.copy_with_seam_correction(&level.pixels, &holes, &sources);
        assert_eq!(filled.len(), holes.len());
        let mut output = level.pixels.clone();
        for (&index, texel) in holes.iter().zip(filled) {
            output[index] = texel;
        }

        let at = |x: usize, y: usize| i32::from(output[y * width + x][0]);
        for y in 13..21 {
            let step = (at(20, y) - at(19, y)).abs();
            assert!(step <= 30, "the step at the left edge of row {y} is still {step}");
        }
        let centre = at(25, 17);
        assert!((150..=160).contains(&centre), "the hole's centre moved to {centre}");
    }

    #[test]
    fn decay_tracks_the_exponential() {
        let mut previous = f32::INFINITY;
        for step in 0..40 {
            let x = step as f32 * 0.25;
            let value = decay(x);
            assert!(value < previous, "decay is not decreasing at {x}");
            assert!((value - (-x).exp()).abs() < 0.02, "decay({x}) = {value}");
            previous = value;
        }
        assert_eq!(decay(0.0), 1.0);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn random_masks_never_panic_and_keep_outside_pixels(
            width in 1u32..=48,
            height in 1u32..=48,
            bits in proptest::collection::vec(any::<bool>(), 48 * 48),
            blocky in any::<bool>(),
            seed in any::<u64>(),
        ) {
            let image = noise_texture(width, height);
            // Blocky masks group bits into 6x6 cells so large holes occur too.
            let hole = GrayImage::from_fn(width, height, |x, y| {
                let (bx, by) = if blocky { (x / 6, y / 6) } else { (x, y) };
                Luma([if bits[(by * 48 + bx) as usize] { 255 } else { 0 }])
            });
            let params = PatchMatchParams { seed, ..PatchMatchParams::default() };
            let full = hole.pixels().all(|p| p[0] >= 128);
            match patchmatch_fill(&image, &hole, &params) {
                Ok(outcome) => {
                    prop_assert!(!full);
                    assert_outside_unchanged(&image, &outcome.image, &hole);
                }
                Err(FillError::NoSource) => prop_assert!(full),
                Err(other) => prop_assert!(false, "unexpected error {other}"),
            }
        }
    }
}
