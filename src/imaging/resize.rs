//! Resampling with SIMD kernels (fast_image_resize), multi-threaded through rayon.

use fast_image_resize::{FilterType, ResizeAlg, ResizeOptions, Resizer};
use image::{GrayImage, RgbaImage};

/// Lanczos3 resize of an RGBA image. Alpha is premultiplied during filtering only when the image
/// actually has transparency, which saves two passes over opaque textures.
pub fn resize_rgba(source: &RgbaImage, width: u32, height: u32) -> RgbaImage {
    if source.dimensions() == (width, height) {
        return source.clone();
    }
    let mut target = RgbaImage::new(width, height);
    let options = ResizeOptions::new()
        .resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3))
        .use_alpha(!super::codec::is_opaque(source));
    run(source, &mut target, &options);
    target
}

/// Lanczos3 resize that first crops the source, centred, to the target's aspect ratio, so the
/// target is covered without distortion (what is cut is the overhang on the longer side).
pub fn resize_rgba_cover(source: &RgbaImage, width: u32, height: u32) -> RgbaImage {
    if source.dimensions() == (width, height) {
        return source.clone();
    }
    let mut target = RgbaImage::new(width, height);
    let options = ResizeOptions::new()
        .resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3))
        .fit_into_destination(Some((0.5, 0.5)))
        .use_alpha(!super::codec::is_opaque(source));
    run(source, &mut target, &options);
    target
}

/// Bilinear resize of a single-channel plane (masks), where Lanczos ringing would only add
/// halos to hard edges.
pub fn resize_gray(source: &GrayImage, width: u32, height: u32) -> GrayImage {
    if source.dimensions() == (width, height) {
        return source.clone();
    }
    let mut target = GrayImage::new(width, height);
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
    run(source, &mut target, &options);
    target
}

fn run<I>(source: &I, target: &mut I, options: &ResizeOptions)
where
    I: fast_image_resize::IntoImageView + fast_image_resize::IntoImageViewMut,
{
    // Both buffers are the same pixel type by construction and neither is empty (our sizes are
    // validated to be at least 1), so the resizer has no way to fail here.
    if let Err(error) = Resizer::new().resize(source, target, options) {
        unreachable!("resize of same-typed, non-empty buffers failed: {error}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resizing_keeps_flat_colour_and_reaches_the_target_size() {
        let source = RgbaImage::from_pixel(300, 200, image::Rgba([10, 120, 240, 255]));
        let target = resize_rgba(&source, 128, 64);
        assert_eq!(target.dimensions(), (128, 64));
        assert!(target.pixels().all(|p| p.0 == [10, 120, 240, 255]));
        let mask = GrayImage::from_pixel(10, 10, image::Luma([255]));
        assert!(resize_gray(&mask, 40, 20).pixels().all(|p| p.0 == [255]));
    }

    #[test]
    fn cover_cuts_the_overhang_evenly_instead_of_squeezing() {
        // Left third red, middle third green, right third blue: covering a square keeps only
        // the middle, so the edges of the result are green, not red and blue.
        let source = RgbaImage::from_fn(300, 100, |x, _| match x / 100 {
            0 => image::Rgba([255, 0, 0, 255]),
            1 => image::Rgba([0, 255, 0, 255]),
            _ => image::Rgba([0, 0, 255, 255]),
        });
        let covered = resize_rgba_cover(&source, 50, 50);
        assert_eq!(covered.dimensions(), (50, 50));
        // (Lanczos taps may reach a pixel or two past the cut, so allow a faint fringe.)
        let mostly_green = |p: &image::Rgba<u8>| p[1] >= 200 && p[0] <= 40 && p[2] <= 40;
        let edges = [covered.get_pixel(0, 25), covered.get_pixel(49, 25)];
        assert!(
            covered.pixels().all(mostly_green),
            "only the middle third remains: {edges:?}"
        );
        let squeezed = resize_rgba(&source, 50, 50);
        assert_eq!(
            squeezed.get_pixel(0, 25).0,
            [255, 0, 0, 255],
            "a plain resize keeps every third"
        );
    }
}
