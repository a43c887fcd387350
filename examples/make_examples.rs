//! Regenerates `examples/base.png` (a 512x512 brick wall) and `examples/mask.png` (a white blob
//! to regenerate over a black background). Deterministic: the committed files are its output.
//!
//! Run with `cargo run --example make_examples`.

use image::{GrayImage, Luma, Rgb, RgbImage};

fn main() -> Result<(), image::ImageError> {
    let size = 512;
    let base = RgbImage::from_fn(size, size, brick);
    base.save("examples/base.png")?;
    let mask = GrayImage::from_fn(size, size, |x, y| {
        // A soft-cornered blob, off-centre, covering about 12% of the image.
        let (dx, dy) = (x as f32 - 300.0, y as f32 - 230.0);
        let inside = (dx / 110.0).powi(4) + (dy / 80.0).powi(4) <= 1.0;
        Luma([if inside { 255 } else { 0 }])
    });
    mask.save("examples/mask.png")?;
    Ok(())
}

/// Running-bond brick courses with mortar joints and per-brick tint and grain.
fn brick(x: u32, y: u32) -> Rgb<u8> {
    let (brick_w, brick_h, mortar) = (64u32, 28u32, 4u32);
    let course = y / brick_h;
    let offset = if course.is_multiple_of(2) { 0 } else { brick_w / 2 };
    let bx = (x + offset) % brick_w;
    let by = y % brick_h;
    let column = (x + offset) / brick_w;
    let grain = noise(x, y, 7) * 0.5 + noise(x / 3, y / 3, 11) * 0.5;
    if bx < mortar || by < mortar {
        let v = 170.0 + grain * 30.0;
        return Rgb([v as u8, (v * 0.97) as u8, (v * 0.9) as u8]);
    }
    let tint = noise(column, course, 3);
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
