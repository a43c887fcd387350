//! Regenerates `examples/base.png` (a 512x512 brick wall) and `examples/mask.png` (a white blob
//! to regenerate over a black background). Deterministic: the committed files are its output.
//!
//! Run with `cargo run --example make_examples`. With a directory and a side,
//! `make_examples <dir> <side>` writes the same pictures at that side into the directory, plus
//! `generated.png` (other bricks, as a provider's answer), for `scripts/bench-queue.sh`.

use image::{GrayImage, Luma, Rgb, RgbImage};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().unwrap_or_else(|| "examples".into()));
    let size: u32 = args.next().map_or(Ok(512), |side| side.parse())?;
    let base = RgbImage::from_fn(size, size, |x, y| brick(x, y, 0));
    base.save(dir.join("base.png"))?;
    // Coordinates of the 512² original, so the blob covers the same share at any side.
    let scale = 512.0 / size as f32;
    let mask = GrayImage::from_fn(size, size, |x, y| {
        // A soft-cornered blob, off-centre, covering about 12% of the image.
        let (dx, dy) = (x as f32 * scale - 300.0, y as f32 * scale - 230.0);
        let inside = (dx / 110.0).powi(4) + (dy / 80.0).powi(4) <= 1.0;
        Luma([if inside { 255 } else { 0 }])
    });
    mask.save(dir.join("mask.png"))?;
    if dir != std::path::Path::new("examples") {
        RgbImage::from_fn(size, size, |x, y| brick(x, y, 17)).save(dir.join("generated.png"))?;
    }
    Ok(())
}

/// Running-bond brick courses with mortar joints and per-brick tint and grain; `seed` varies
/// the tint and grain.
fn brick(x: u32, y: u32, seed: u32) -> Rgb<u8> {
    let (brick_w, brick_h, mortar) = (64u32, 28u32, 4u32);
    let course = y / brick_h;
    let offset = if course.is_multiple_of(2) { 0 } else { brick_w / 2 };
    let bx = (x + offset) % brick_w;
    let by = y % brick_h;
    let column = (x + offset) / brick_w;
    let grain = noise(x, y, 7 + seed) * 0.5 + noise(x / 3, y / 3, 11 + seed) * 0.5;
    if bx < mortar || by < mortar {
        let v = 170.0 + grain * 30.0;
        return Rgb([v as u8, (v * 0.97) as u8, (v * 0.9) as u8]);
    }
    let tint = noise(column, course, 3 + seed);
    let r = 140.0 + tint * 50.0 + grain * 25.0;
    let g = 60.0 + tint * 20.0 + grain * 15.0;
    let b = 45.0 + tint * 10.0 + grain * 10.0;
    Rgb([r as u8, g as u8, b as u8])
}

/// Hash noise in 0..1.
fn noise(x: u32, y: u32, seed: u32) -> f32 {
    let mut h = x.wrapping_mul(0x85eb_ca6b) ^ y.wrapping_mul(0xc2b2_ae35) ^ seed.wrapping_mul(0x27d4_eb2f);
    h ^= h >> 15;
    h = h.wrapping_mul(0x2c1b_3c6d);
    h ^= h >> 12;
    (h & 0xffff) as f32 / 65535.0
}
