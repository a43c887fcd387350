//! Telea's fast-marching inpainting (A. Telea, "An Image Inpainting Technique Based on the
//! Fast Marching Method", 2004), the algorithm OpenCV exposes as `INPAINT_TELEA`.
//!
//! This module owns the classical baseline: pixels are filled in order of their distance
//! from the hole boundary, each one as a weighted sum of first-order extrapolations from
//! already known neighbours. It also lends that fill to PatchMatch as the initial guess on
//! the coarsest pyramid level. It must not do IO and must not touch pixels outside the hole.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use image::{GrayImage, RgbaImage};

use super::{FillError, FillOutcome, FillStats, Prepared, prepare, to_byte};

/// Fills every pixel with `hole >= 128` by Telea's method; `radius` is the neighbourhood
/// radius in pixels (OpenCV's `inpaintRadius`, 3 to 5 is typical; 0 is treated as 1).
pub fn telea_fill(image: &RgbaImage, hole: &GrayImage, radius: u32) -> Result<FillOutcome, FillError> {
    let mask = match prepare(image, hole)? {
        Prepared::Done(outcome) => return Ok(outcome),
        Prepared::Fill(mask) => mask,
    };
    let mut pixels: Vec<[f32; 4]> = image.pixels().map(|pixel| pixel.0.map(f32::from)).collect();
    let radius = radius.max(1);
    telea_in_place(&mut pixels, &mask.flags, mask.width, mask.height, radius);

    let mut output = image.clone();
    for ((out, value), &inside) in output.pixels_mut().zip(&pixels).zip(&mask.flags) {
        if inside {
            out.0 = value.map(to_byte);
        }
    }
    Ok(FillOutcome {
        image: output,
        filled_pixels: mask.count,
        stats: FillStats::Telea { radius },
    })
}

/// Pixel state during the march, as in the paper.
#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    /// Outside the hole, or already filled and frozen.
    Known,
    /// On the narrow band: filled, but its arrival time may still decrease.
    Band,
    /// Not reached yet.
    Inside,
}

/// Arrival time used for pixels the front has not reached.
const FAR: f32 = 1.0e6;

/// A heap entry. Ties on arrival time are broken by pixel index so the fill order, and
/// with it the output, never depends on the heap's internal layout.
#[derive(Clone, Copy, PartialEq)]
struct Front {
    time: f32,
    index: usize,
}

impl Eq for Front {}

impl PartialOrd for Front {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Front {
    fn cmp(&self, other: &Self) -> Ordering {
        self.time.total_cmp(&other.time).then(self.index.cmp(&other.index))
    }
}

/// Fills the hole pixels of `pixels` in place. Known pixels are only read.
/// `hole` must hold at least one `false`, otherwise nothing is reachable and the hole
/// keeps its input values.
pub(super) fn telea_in_place(pixels: &mut [[f32; 4]], hole: &[bool], width: usize, height: usize, radius: u32) {
    let mut march = March {
        width,
        height,
        radius: radius as i64,
        hole: hole.to_vec(),
        carried: vec![([0.0; 4], [0.0; 4]); hole.len()],
        state: hole
            .iter()
            .map(|&inside| if inside { State::Inside } else { State::Known })
            .collect(),
        time: hole.iter().map(|&inside| if inside { FAR } else { 0.0 }).collect(),
    };
    let mut heap = BinaryHeap::new();
    // The initial band is the known pixels that touch the hole; their arrival time is 0.
    for y in 0..height {
        for x in 0..width {
            let index = y * width + x;
            if !hole[index] && march.neighbours(x, y).any(|n| hole[n]) {
                march.state[index] = State::Band;
                heap.push(Reverse(Front { time: 0.0, index }));
            }
        }
    }

    while let Some(Reverse(front)) = heap.pop() {
        let index = front.index;
        // Entries are never removed when a time decreases, so skip the stale ones.
        if march.state[index] == State::Known || front.time > march.time[index] {
            continue;
        }
        march.state[index] = State::Known;
        let (x, y) = (index % width, index / width);
        let neighbours: Vec<usize> = march.neighbours(x, y).collect();
        for neighbour in neighbours {
            if march.state[neighbour] == State::Known {
                continue;
            }
            let arrival = march.arrival_time(neighbour);
            if march.state[neighbour] == State::Inside {
                march.time[neighbour] = arrival;
                // The pixel must still count as unknown while it is being estimated, so its
                // own placeholder value never enters the gradients of its neighbours.
                let value = march.inpaint(pixels, neighbour);
                pixels[neighbour] = value;
                march.state[neighbour] = State::Band;
                heap.push(Reverse(Front {
                    time: arrival,
                    index: neighbour,
                }));
            } else if arrival < march.time[neighbour] {
                march.time[neighbour] = arrival;
                heap.push(Reverse(Front {
                    time: arrival,
                    index: neighbour,
                }));
            }
        }
    }
}

/// An image gradient: the x and y differences of each channel.
type Gradient = ([f32; 4], [f32; 4]);

/// The fast-marching state: flags and arrival times per pixel.
struct March {
    width: usize,
    height: usize,
    radius: i64,
    /// The original hole: pixels whose values are estimates, not input.
    hole: Vec<bool>,
    /// For filled pixels, the image gradient they carry forward (x and y, per channel).
    carried: Vec<Gradient>,
    state: Vec<State>,
    time: Vec<f32>,
}

impl March {
    /// The 4-connected neighbours of (x, y) that lie inside the image.
    fn neighbours(&self, x: usize, y: usize) -> impl Iterator<Item = usize> + use<> {
        let (width, height) = (self.width, self.height);
        let candidates = [
            (x.checked_sub(1), Some(y)),
            ((x + 1 < width).then_some(x + 1), Some(y)),
            (Some(x), y.checked_sub(1)),
            (Some(x), (y + 1 < height).then_some(y + 1)),
        ];
        candidates
            .into_iter()
            .filter_map(move |(nx, ny)| Some(ny? * width + nx?))
    }

    /// The frozen arrival time at (x, y), or `None` outside the image or when not frozen.
    fn frozen_time(&self, x: i64, y: i64) -> Option<f32> {
        let index = self.index(x, y)?;
        (self.state[index] == State::Known).then_some(self.time[index])
    }

    fn index(&self, x: i64, y: i64) -> Option<usize> {
        let inside = x >= 0 && y >= 0 && (x as usize) < self.width && (y as usize) < self.height;
        inside.then(|| y as usize * self.width + x as usize)
    }

    /// Solves the eikonal equation |grad T| = 1 at `index` from the frozen neighbours,
    /// taking the smallest solution over the four vertical/horizontal quadrant pairs.
    fn arrival_time(&self, index: usize) -> f32 {
        let (x, y) = ((index % self.width) as i64, (index / self.width) as i64);
        let mut best = FAR;
        for dy in [-1, 1] {
            for dx in [-1, 1] {
                let vertical = self.frozen_time(x, y + dy);
                let horizontal = self.frozen_time(x + dx, y);
                let solution = match (vertical, horizontal) {
                    (Some(a), Some(b)) => {
                        let difference = a - b;
                        if difference.abs() < 1.0 {
                            // Both neighbours contribute: the upwind quadratic has a real root.
                            (a + b + (2.0 - difference * difference).sqrt()) * 0.5
                        } else {
                            1.0 + a.min(b)
                        }
                    }
                    (Some(a), None) | (None, Some(a)) => 1.0 + a,
                    (None, None) => FAR,
                };
                best = best.min(solution);
            }
        }
        best
    }

    /// True when the pixel already carries a usable value (known or filled).
    fn has_value(&self, x: i64, y: i64) -> Option<usize> {
        let index = self.index(x, y)?;
        (self.state[index] != State::Inside).then_some(index)
    }

    /// The neighbours to take a difference from at (x, y) along `step`: central when both
    /// carry a value, one-sided when only one does. Returns (later, earlier, divisor).
    fn stencil(&self, x: i64, y: i64, step: (i64, i64)) -> Option<(usize, usize, f32)> {
        let (dx, dy) = step;
        let centre = self.index(x, y)?;
        let forward = self.has_value(x + dx, y + dy);
        let backward = self.has_value(x - dx, y - dy);
        match (backward, forward) {
            (Some(b), Some(f)) => Some((f, b, 2.0)),
            (None, Some(f)) => Some((f, centre, 1.0)),
            (Some(b), None) => Some((centre, b, 1.0)),
            (None, None) => None,
        }
    }

    /// Derivative of the arrival time at (x, y) along `step`.
    fn time_derivative(&self, x: i64, y: i64, step: (i64, i64)) -> f32 {
        self.stencil(x, y, step).map_or(0.0, |(later, earlier, divisor)| {
            (self.time[later] - self.time[earlier]) / divisor
        })
    }

    /// Derivative of every channel at (x, y) along `step`.
    fn pixel_derivative(&self, pixels: &[[f32; 4]], x: i64, y: i64, step: (i64, i64)) -> [f32; 4] {
        self.stencil(x, y, step).map_or([0.0; 4], |(later, earlier, divisor)| {
            std::array::from_fn(|c| (pixels[later][c] - pixels[earlier][c]) / divisor)
        })
    }

    /// Telea's estimate for pixel `index`: a weighted mean, over known pixels q within the
    /// radius, of the first-order extrapolation I(q) + grad I(q) . (p - q). The weight is the
    /// product of the directional, geometric distance and level-set distance factors.
    fn inpaint(&mut self, pixels: &[[f32; 4]], index: usize) -> [f32; 4] {
        let (px, py) = ((index % self.width) as i64, (index / self.width) as i64);
        let grad_time_x = self.time_derivative(px, py, (1, 0));
        let grad_time_y = self.time_derivative(px, py, (0, 1));
        let time_p = self.time[index];

        let mut sum = [0.0f32; 4];
        let mut weight_sum = 0.0f32;
        let mut gradient_sum = ([0.0f32; 4], [0.0f32; 4]);
        let radius_sq = self.radius * self.radius;
        for qy in py - self.radius..=py + self.radius {
            for qx in px - self.radius..=px + self.radius {
                let (rx, ry) = (px - qx, py - qy);
                let distance_sq = rx * rx + ry * ry;
                if distance_sq == 0 || distance_sq > radius_sq {
                    continue;
                }
                let Some(q) = self.has_value(qx, qy) else {
                    continue;
                };
                let (rx, ry) = (rx as f32, ry as f32);
                let length_sq = distance_sq as f32;
                let mut direction = (rx * grad_time_x + ry * grad_time_y) / length_sq.sqrt();
                if direction.abs() <= 0.01 {
                    // The paper's directional factor vanishes tangentially; keep a tiny
                    // weight so a pixel with only tangential neighbours still gets a value.
                    direction = 1.0e-6;
                }
                let geometric = 1.0 / length_sq;
                let level = 1.0 / (1.0 + (self.time[q] - time_p).abs());
                let weight = (direction * geometric * level).abs();

                // The paper extrapolates with the image gradient at q. Inside the hole a
                // finite difference of earlier estimates, extrapolated over several pixels,
                // compounds layer by layer until the fill is noise on any textured input.
                // So filled pixels carry the weighted mean of the gradients they were built
                // from instead: that is exact on linear ramps and never amplifies noise.
                let (grad_x, grad_y) = if self.hole[q] {
                    self.carried[q]
                } else {
                    (
                        self.pixel_derivative(pixels, qx, qy, (1, 0)),
                        self.pixel_derivative(pixels, qx, qy, (0, 1)),
                    )
                };
                for channel in 0..4 {
                    let extrapolated = pixels[q][channel] + grad_x[channel] * rx + grad_y[channel] * ry;
                    sum[channel] += weight * extrapolated;
                    gradient_sum.0[channel] += weight * grad_x[channel];
                    gradient_sum.1[channel] += weight * grad_y[channel];
                }
                weight_sum += weight;
            }
        }
        if weight_sum <= 0.0 {
            return pixels[index];
        }
        self.carried[index] = (
            gradient_sum.0.map(|g| g / weight_sum),
            gradient_sum.1.map(|g| g / weight_sum),
        );
        sum.map(|value| (value / weight_sum).clamp(0.0, 255.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Luma, Rgba};

    fn square_hole(width: u32, height: u32, x0: u32, y0: u32, side: u32) -> GrayImage {
        GrayImage::from_fn(width, height, |x, y| {
            let inside = x >= x0 && x < x0 + side && y >= y0 && y < y0 + side;
            Luma([if inside { 255 } else { 0 }])
        })
    }

    #[test]
    fn reproduces_a_linear_ramp_inside_the_hole() {
        let image = RgbaImage::from_fn(64, 48, |x, y| {
            Rgba([(2 * x + y) as u8, (3 * y) as u8, (100 + x) as u8, 255])
        });
        let hole = square_hole(64, 48, 20, 14, 16);
        let outcome = telea_fill(&image, &hole, 5).expect("fill runs");
        assert_eq!(outcome.filled_pixels, 256);
        let mut worst = 0i32;
        for (x, y, pixel) in outcome.image.enumerate_pixels() {
            let expected = image.get_pixel(x, y);
            for channel in 0..4 {
                worst = worst.max((i32::from(pixel[channel]) - i32::from(expected[channel])).abs());
            }
        }
        assert!(worst <= 2, "largest ramp error was {worst}");
    }

    #[test]
    fn keeps_pixels_outside_the_hole_and_changes_the_inside() {
        let image = RgbaImage::from_fn(40, 30, |x, y| Rgba([(x * 6) as u8, (y * 8) as u8, 7, 255]));
        let hole = square_hole(40, 30, 0, 0, 12);
        let mut defaced = image.clone();
        for (x, y, pixel) in defaced.enumerate_pixels_mut() {
            if hole.get_pixel(x, y)[0] >= 128 {
                *pixel = Rgba([255, 0, 255, 255]);
            }
        }
        let outcome = telea_fill(&defaced, &hole, 3).expect("fill runs");
        for (x, y, pixel) in outcome.image.enumerate_pixels() {
            if hole.get_pixel(x, y)[0] < 128 {
                assert_eq!(pixel, defaced.get_pixel(x, y));
            } else {
                assert_ne!(pixel, &Rgba([255, 0, 255, 255]));
            }
        }
    }

    #[test]
    fn empty_full_and_mismatched_masks() {
        let image = RgbaImage::from_pixel(16, 8, Rgba([1, 2, 3, 255]));
        let empty = GrayImage::new(16, 8);
        let outcome = telea_fill(&image, &empty, 3).expect("empty hole is fine");
        assert_eq!(outcome.filled_pixels, 0);
        assert_eq!(outcome.image, image);
        assert_eq!(outcome.stats, FillStats::Unchanged);

        let full = GrayImage::from_pixel(16, 8, Luma([255]));
        assert!(matches!(telea_fill(&image, &full, 3), Err(FillError::NoSource)));

        let wrong = GrayImage::new(8, 16);
        assert!(matches!(
            telea_fill(&image, &wrong, 3),
            Err(FillError::SizeMismatch {
                width: 16,
                height: 8,
                mask_width: 8,
                mask_height: 16
            })
        ));
    }

    #[test]
    fn a_single_known_pixel_floods_the_image() {
        let mut image = RgbaImage::from_pixel(9, 5, Rgba([0, 0, 0, 0]));
        image.put_pixel(8, 4, Rgba([200, 100, 50, 255]));
        let mut hole = GrayImage::from_pixel(9, 5, Luma([255]));
        hole.put_pixel(8, 4, Luma([0]));
        let outcome = telea_fill(&image, &hole, 2).expect("fill runs");
        assert!(outcome.image.pixels().all(|pixel| *pixel == Rgba([200, 100, 50, 255])));
    }
}
