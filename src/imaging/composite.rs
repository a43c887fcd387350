//! Blending the provider's output over the base through a feathered mask.

use image::{GrayImage, RgbaImage};
use rayon::prelude::*;

/// Brings the provider's image to the base's size (Lanczos-3) and blends it in through the mask
/// feathered by `feather_radius`. Without a mask the whole image is the provider's.
pub fn compose(base: &RgbaImage, generated: RgbaImage, mask: Option<&GrayImage>, feather_radius: u32) -> RgbaImage {
    let (width, height) = base.dimensions();
    let generated = if generated.dimensions() == (width, height) {
        generated
    } else {
        super::resize::resize_rgba(&generated, width, height)
    };
    match mask {
        Some(mask) => blend(base, &generated, &feather(mask, feather_radius)),
        None => generated,
    }
}

/// Softens a mask's edge with two box-blur passes of `radius` (close to a Gaussian). Support is
/// finite, so pixels farther than `2 * radius` from the mask stay exactly 0.
pub fn feather(mask: &GrayImage, radius: u32) -> GrayImage {
    if radius == 0 {
        return mask.clone();
    }
    let (width, height) = (mask.width() as usize, mask.height() as usize);
    let mut plane = mask.as_raw().clone();
    let mut scratch = vec![0u8; plane.len()];
    for _ in 0..2 {
        box_blur_rows(&plane, &mut scratch, width, radius as usize);
        box_blur_columns(&scratch, &mut plane, width, height, radius as usize);
    }
    GrayImage::from_raw(mask.width(), mask.height(), plane).unwrap_or_else(|| mask.clone())
}

/// `base * (1 - w) + generated * w` per pixel, with `w = weights / 255`. Where the weight is 0
/// the base is copied exactly; where it is 255 the generated pixel is copied exactly.
pub fn blend(base: &RgbaImage, generated: &RgbaImage, weights: &GrayImage) -> RgbaImage {
    debug_assert_eq!(base.dimensions(), generated.dimensions());
    debug_assert_eq!(base.dimensions(), weights.dimensions());
    let mut out = base.clone();
    let row_len = base.width() as usize * 4;
    out.as_mut()
        .par_chunks_mut(row_len)
        .zip(generated.as_raw().par_chunks(row_len))
        .zip(weights.as_raw().par_chunks(base.width() as usize))
        .for_each(|((out_row, generated_row), weight_row)| {
            for ((out_pixel, generated_pixel), &weight) in out_row
                .chunks_exact_mut(4)
                .zip(generated_row.chunks_exact(4))
                .zip(weight_row)
            {
                match weight {
                    0 => {}
                    255 => out_pixel.copy_from_slice(generated_pixel),
                    w => {
                        let w = u32::from(w);
                        for (o, g) in out_pixel.iter_mut().zip(generated_pixel) {
                            *o = ((u32::from(*o) * (255 - w) + u32::from(*g) * w + 127) / 255) as u8;
                        }
                    }
                }
            }
        });
    out
}

fn box_blur_rows(source: &[u8], target: &mut [u8], width: usize, radius: usize) {
    target
        .par_chunks_mut(width)
        .zip(source.par_chunks(width))
        .for_each(|(out, row)| {
            let window = 2 * radius + 1;
            let at = |i: isize| -> u32 { u32::from(row[i.clamp(0, width as isize - 1) as usize]) };
            let mut sum: u32 = (-(radius as isize)..=radius as isize).map(at).sum();
            for (x, value) in out.iter_mut().enumerate() {
                *value = ((sum + window as u32 / 2) / window as u32) as u8;
                let x = x as isize;
                sum = sum + at(x + radius as isize + 1) - at(x - radius as isize);
            }
        });
}

fn box_blur_columns(source: &[u8], target: &mut [u8], width: usize, height: usize, radius: usize) {
    let window = (2 * radius + 1) as u32;
    let row = |y: isize| -> &[u8] {
        let y = y.clamp(0, height as isize - 1) as usize;
        &source[y * width..(y + 1) * width]
    };
    let mut sums = vec![0u32; width];
    for dy in -(radius as isize)..=radius as isize {
        for (sum, value) in sums.iter_mut().zip(row(dy)) {
            *sum += u32::from(*value);
        }
    }
    for (y, out) in target.chunks_exact_mut(width).enumerate() {
        for (value, sum) in out.iter_mut().zip(&sums) {
            *value = ((sum + window / 2) / window) as u8;
        }
        let y = y as isize;
        let (incoming, outgoing) = (row(y + radius as isize + 1), row(y - radius as isize));
        for ((sum, add), sub) in sums.iter_mut().zip(incoming).zip(outgoing) {
            *sum = *sum + u32::from(*add) - u32::from(*sub);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn square_mask(size: u32, from: u32, to: u32) -> GrayImage {
        GrayImage::from_fn(size, size, |x, y| {
            let inside = (from..to).contains(&x) && (from..to).contains(&y);
            image::Luma([if inside { 255 } else { 0 }])
        })
    }

    #[test]
    fn pixels_well_outside_the_mask_keep_the_base_exactly() {
        let size = 96;
        let base = RgbaImage::from_fn(size, size, |x, y| image::Rgba([x as u8, y as u8, (x ^ y) as u8, 255]));
        let generated = RgbaImage::from_pixel(size, size, image::Rgba([250, 3, 7, 255]));
        let radius = 4;
        let weights = feather(&square_mask(size, 40, 60), radius);
        let out = blend(&base, &generated, &weights);
        let reach = 2 * radius;
        for (x, y, pixel) in out.enumerate_pixels() {
            let far = x + reach < 40 || x >= 60 + reach || y + reach < 40 || y >= 60 + reach;
            if far {
                assert_eq!(pixel, base.get_pixel(x, y), "({x},{y}) changed");
            }
        }
        // Deep inside the mask the generated image wins outright.
        assert_eq!(out.get_pixel(50, 50), generated.get_pixel(50, 50));
        // On the seam the result lies strictly between the two.
        let seam = out.get_pixel(40, 50)[0];
        assert!(seam > base.get_pixel(40, 50)[0] && seam < 250, "seam {seam}");
    }

    #[test]
    fn feathering_is_monotonic_across_an_edge() {
        let weights = feather(&square_mask(64, 16, 48), 3);
        let row: Vec<u8> = (0..32).map(|x| weights.get_pixel(x, 32)[0]).collect();
        assert!(row.windows(2).all(|w| w[0] <= w[1]), "{row:?}");
        assert_eq!(row[0], 0);
        assert_eq!(row[31], 255);
    }
}
