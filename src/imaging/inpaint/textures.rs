//! Deterministic procedural textures and hole masks for evaluating the fill engines.
//!
//! This module owns the generators that `eval` and the tests use as ground truth: wood
//! grain, brick courses with mortar, plain-weave fabric and veined marble, plus three kinds
//! of hole mask. Every generator is a pure function of its size and seed; feature sizes
//! are in pixels, so a larger image shows more repeats rather than bigger features.
//! It must not do IO.

use std::f32::consts::TAU;

use image::{GrayImage, Luma, Rgba, RgbaImage};

/// The procedural texture families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextureKind {
    /// Growth rings distorted by noise, with fine longitudinal grain.
    Wood,
    /// Running-bond brick courses with varied brick colours and grey mortar joints.
    Brick,
    /// Plain-weave fabric: alternating over-under warp and weft threads.
    Fabric,
    /// Noisy natural stone: turbulent marble veins over speckled grain.
    Marble,
}

impl TextureKind {
    pub const ALL: [TextureKind; 4] = [
        TextureKind::Wood,
        TextureKind::Brick,
        TextureKind::Fabric,
        TextureKind::Marble,
    ];

    pub fn name(self) -> &'static str {
        match self {
            TextureKind::Wood => "wood",
            TextureKind::Brick => "brick",
            TextureKind::Fabric => "fabric",
            TextureKind::Marble => "marble",
        }
    }
}

/// The hole shapes the evaluation covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskKind {
    /// Many small discs covering about 5% of the image.
    ScatteredBlobs,
    /// One irregular blob covering about 15% of the image.
    LargeBlob,
    /// A thick wavy stroke covering about 8% of the image.
    Stroke,
}

impl MaskKind {
    pub const ALL: [MaskKind; 3] = [MaskKind::ScatteredBlobs, MaskKind::LargeBlob, MaskKind::Stroke];

    pub fn name(self) -> &'static str {
        match self {
            MaskKind::ScatteredBlobs => "scattered 5%",
            MaskKind::LargeBlob => "blob 15%",
            MaskKind::Stroke => "stroke 8%",
        }
    }
}

/// Builds a `width` x `height` texture of the given kind.
pub fn texture(kind: TextureKind, width: u32, height: u32, seed: u64) -> RgbaImage {
    let noise = ValueNoise { seed };
    match kind {
        TextureKind::Wood => wood(&noise, width, height),
        TextureKind::Brick => brick(&noise, width, height),
        TextureKind::Fabric => fabric(&noise, width, height),
        TextureKind::Marble => marble(&noise, width, height),
    }
}

/// Builds a `width` x `height` hole mask (255 = hole) of the given kind.
pub fn mask(kind: MaskKind, width: u32, height: u32, seed: u64) -> GrayImage {
    match kind {
        MaskKind::ScatteredBlobs => scattered_blobs(width, height, seed),
        MaskKind::LargeBlob => large_blob(width, height, seed),
        MaskKind::Stroke => stroke(width, height, seed),
    }
}

/// Fraction of pixels a mask marks as hole.
pub fn hole_fraction(mask: &GrayImage) -> f64 {
    let total = mask.as_raw().len().max(1);
    mask.as_raw().iter().filter(|&&value| value >= 128).count() as f64 / total as f64
}

fn mix(a: f32, b: f32, t: f32) -> f32 {
    a + (b - a) * t
}

fn colour(a: [f32; 3], b: [f32; 3], t: f32) -> Rgba<u8> {
    let t = t.clamp(0.0, 1.0);
    Rgba([
        mix(a[0], b[0], t).clamp(0.0, 255.0) as u8,
        mix(a[1], b[1], t).clamp(0.0, 255.0) as u8,
        mix(a[2], b[2], t).clamp(0.0, 255.0) as u8,
        255,
    ])
}

fn wood(noise: &ValueNoise, width: u32, height: u32) -> RgbaImage {
    let light = [205.0, 158.0, 105.0];
    let dark = [118.0, 72.0, 38.0];
    // The ring centre sits far above the board, as in a flat-sawn plank: the grain runs
    // along x and bends gently, so no single feature (such as the tight vertex of the
    // rings) is unique to one spot of the image.
    let (centre_x, centre_y) = (0.5 * width as f32, -3000.0);
    RgbaImage::from_fn(width, height, |x, y| {
        let (fx, fy) = (x as f32, y as f32);
        let dx = (fx - centre_x) * 1.5;
        let dy = fy - centre_y;
        let radius = (dx * dx + dy * dy).sqrt() + 14.0 * noise.fbm(fx / 90.0, fy / 90.0, 3);
        let ring = (radius / 17.0).fract();
        // Early wood is light and widens; late wood is a narrow dark band.
        let late = ((ring - 0.72) / 0.2).clamp(0.0, 1.0);
        let grain = noise.fbm(fx / 60.0 + 100.0, fy / 1.7, 2);
        let pores = noise.value(fx / 3.0 + 300.0, fy / 1.2);
        let t = 0.15 + 0.6 * late + 0.25 * grain + 0.12 * pores;
        colour(light, dark, t)
    })
}

fn brick(noise: &ValueNoise, width: u32, height: u32) -> RgbaImage {
    let (course, length, joint) = (32u32, 64u32, 4u32);
    let mortar = [182.0, 176.0, 166.0];
    RgbaImage::from_fn(width, height, |x, y| {
        let row = y / course;
        let shift = if row % 2 == 1 { length / 2 } else { 0 };
        let column = (x + shift) / length;
        let in_joint = y % course < joint || (x + shift) % length < joint;
        let (fx, fy) = (x as f32, y as f32);
        let speckle = noise.fbm(fx / 4.0, fy / 4.0, 2) - 0.5;
        if in_joint {
            let grey = speckle * 30.0;
            return colour(mortar, [mortar[0] + grey, mortar[1] + grey, mortar[2] + grey], 1.0);
        }
        let tone = noise.lattice(i64::from(column), i64::from(row), 7);
        let base = [150.0 + 50.0 * tone, 62.0 + 25.0 * tone, 45.0 + 15.0 * tone];
        let dirt = noise.fbm(fx / 24.0 + 50.0, fy / 24.0, 3) - 0.5;
        let shade = 55.0 * speckle + 40.0 * dirt;
        colour(
            base,
            [base[0] + shade, base[1] + shade * 0.7, base[2] + shade * 0.6],
            1.0,
        )
    })
}

fn fabric(noise: &ValueNoise, width: u32, height: u32) -> RgbaImage {
    let thread = 8u32;
    let warp = [58.0, 78.0, 138.0];
    let weft = [206.0, 194.0, 160.0];
    RgbaImage::from_fn(width, height, |x, y| {
        let (column, row) = (x / thread, y / thread);
        let warp_on_top = (column + row) % 2 == 0;
        // Position across the visible thread, -1..1, gives its rounded cross-section.
        let across = if warp_on_top { x % thread } else { y % thread };
        let along = if warp_on_top { y % thread } else { x % thread };
        let offset = (across as f32 + 0.5) / thread as f32 * 2.0 - 1.0;
        let bulge = (1.0 - offset * offset).max(0.0).sqrt();
        let ends = (along as f32 + 0.5) / thread as f32 * 2.0 - 1.0;
        let dip = 1.0 - 0.35 * ends * ends;
        let fibre = if warp_on_top {
            noise.value(x as f32 / 1.3, y as f32 / 6.0)
        } else {
            noise.value(x as f32 / 6.0 + 70.0, y as f32 / 1.3)
        };
        let light = (0.45 + 0.55 * bulge * dip) * (0.85 + 0.3 * fibre);
        let base = if warp_on_top { warp } else { weft };
        colour([0.0; 3], base, light)
    })
}

fn marble(noise: &ValueNoise, width: u32, height: u32) -> RgbaImage {
    let stone = [226.0, 222.0, 214.0];
    let vein = [74.0, 78.0, 88.0];
    RgbaImage::from_fn(width, height, |x, y| {
        let (fx, fy) = (x as f32, y as f32);
        let turbulence = noise.fbm(fx / 70.0, fy / 70.0, 5);
        let phase = (fx * 0.6 + fy) / 38.0 + 7.0 * turbulence;
        let band = (phase * std::f32::consts::PI).sin().abs();
        let veins = (1.0 - band).powi(7);
        let speckle = noise.fbm(fx / 2.5 + 40.0, fy / 2.5, 2) - 0.5;
        let cloud = noise.fbm(fx / 30.0 + 90.0, fy / 30.0, 3) - 0.5;
        let t = veins * 0.85 + 0.35 * speckle + 0.3 * cloud + 0.1;
        colour(stone, vein, t)
    })
}

fn scattered_blobs(width: u32, height: u32, seed: u64) -> GrayImage {
    let mut mask = GrayImage::new(width, height);
    let side = width.min(height).max(1) as f32;
    let target = 0.05 * width as f64 * height as f64;
    let random = ValueNoise { seed: seed ^ 0xB10B };
    let mut covered = 0.0f64;
    let mut draw = 0i64;
    while covered < target && draw < 100_000 {
        let cx = random.lattice(draw, 0, 1) * width as f32;
        let cy = random.lattice(draw, 1, 1) * height as f32;
        let radius = (side / 64.0) * (1.0 + random.lattice(draw, 2, 1));
        covered += stamp_disc(&mut mask, cx, cy, radius.max(1.0)) as f64;
        draw += 1;
    }
    mask
}

/// Marks a disc as hole and returns how many pixels it newly covered.
fn stamp_disc(mask: &mut GrayImage, cx: f32, cy: f32, radius: f32) -> u64 {
    let (width, height) = mask.dimensions();
    let mut added = 0;
    let low_y = (cy - radius).floor().max(0.0) as u32;
    let high_y = ((cy + radius).ceil().max(0.0) as u32).min(height);
    let low_x = (cx - radius).floor().max(0.0) as u32;
    let high_x = ((cx + radius).ceil().max(0.0) as u32).min(width);
    for y in low_y..high_y {
        for x in low_x..high_x {
            let (dx, dy) = (x as f32 + 0.5 - cx, y as f32 + 0.5 - cy);
            if dx * dx + dy * dy <= radius * radius && mask.get_pixel(x, y)[0] == 0 {
                mask.put_pixel(x, y, Luma([255]));
                added += 1;
            }
        }
    }
    added
}

fn large_blob(width: u32, height: u32, seed: u64) -> GrayImage {
    let random = ValueNoise { seed: seed ^ 0x1A26E };
    let cx = (0.35 + 0.3 * random.lattice(0, 0, 2)) * width as f32;
    let cy = (0.35 + 0.3 * random.lattice(1, 0, 2)) * height as f32;
    let phases: Vec<f32> = (0..3).map(|k| random.lattice(k, 1, 2) * TAU).collect();
    // The outline wobbles with three low harmonics, so the blob is irregular but simple.
    let shape = |angle: f32| {
        1.0 + 0.18 * (2.0 * angle + phases[0]).sin()
            + 0.1 * (3.0 * angle + phases[1]).sin()
            + 0.06 * (5.0 * angle + phases[2]).sin()
    };
    let build = |scale: f32| {
        GrayImage::from_fn(width, height, |x, y| {
            let (dx, dy) = (x as f32 + 0.5 - cx, y as f32 + 0.5 - cy);
            let inside = (dx * dx + dy * dy).sqrt() <= scale * shape(dy.atan2(dx));
            Luma([if inside { 255 } else { 0 }])
        })
    };
    let scale = search_scale(0.15, width.max(height) as f32, |scale| hole_fraction(&build(scale)));
    build(scale)
}

fn stroke(width: u32, height: u32, seed: u64) -> GrayImage {
    let random = ValueNoise { seed: seed ^ 0x57_0CE };
    let phase = random.lattice(0, 0, 3) * TAU;
    let (w, h) = (width as f32, height as f32);
    let centre = |x: f32| h * (0.5 + 0.22 * (x / w * TAU * 1.3 + phase).sin());
    let slope = |x: f32| h * 0.22 * (TAU * 1.3 / w) * (x / w * TAU * 1.3 + phase).cos();
    let build = |thickness: f32| {
        GrayImage::from_fn(width, height, |x, y| {
            let fx = x as f32 + 0.5;
            let along = fx >= 0.08 * w && fx <= 0.92 * w;
            // Vertical half-width that gives a constant thickness across the curve.
            let half = 0.5 * thickness * (1.0 + slope(fx).powi(2)).sqrt();
            let inside = along && (y as f32 + 0.5 - centre(fx)).abs() <= half;
            Luma([if inside { 255 } else { 0 }])
        })
    };
    let thickness = search_scale(0.08, h, |thickness| hole_fraction(&build(thickness)));
    build(thickness)
}

/// Bisection for the size parameter in `0..upper` whose mask covers `fraction`.
fn search_scale(fraction: f64, upper: f32, coverage: impl Fn(f32) -> f64) -> f32 {
    let (mut low, mut high) = (0.0f32, upper);
    for _ in 0..18 {
        let middle = 0.5 * (low + high);
        if coverage(middle) < fraction {
            low = middle;
        } else {
            high = middle;
        }
    }
    high
}

/// Lattice value noise with a hashed lattice, and its fractal sum.
struct ValueNoise {
    seed: u64,
}

impl ValueNoise {
    /// A hash of (x, y, salt) mapped to 0..1.
    fn lattice(&self, x: i64, y: i64, salt: u64) -> f32 {
        let mut z = self.seed ^ salt.wrapping_mul(0xD6E8_FEB8_6659_FD93);
        for part in [x as u64, y as u64] {
            z = z.wrapping_add(part).wrapping_add(0x9E37_79B9_7F4A_7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
        }
        (z >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Smoothly interpolated lattice noise in 0..1.
    fn value(&self, x: f32, y: f32) -> f32 {
        let (x0, y0) = (x.floor(), y.floor());
        let (tx, ty) = (x - x0, y - y0);
        let (sx, sy) = (tx * tx * (3.0 - 2.0 * tx), ty * ty * (3.0 - 2.0 * ty));
        let (ix, iy) = (x0 as i64, y0 as i64);
        let top = mix(self.lattice(ix, iy, 0), self.lattice(ix + 1, iy, 0), sx);
        let bottom = mix(self.lattice(ix, iy + 1, 0), self.lattice(ix + 1, iy + 1, 0), sx);
        mix(top, bottom, sy)
    }

    /// Fractal sum of `octaves` octaves, normalised to 0..1.
    fn fbm(&self, x: f32, y: f32, octaves: u32) -> f32 {
        let (mut sum, mut amplitude, mut total, mut frequency) = (0.0, 1.0, 0.0, 1.0);
        for octave in 0..octaves {
            let shift = octave as f32 * 17.31;
            sum += amplitude * self.value(x * frequency + shift, y * frequency - shift);
            total += amplitude;
            amplitude *= 0.5;
            frequency *= 2.0;
        }
        sum / total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_cover_roughly_the_intended_fraction() {
        for (kind, expected) in [
            (MaskKind::ScatteredBlobs, 0.05),
            (MaskKind::LargeBlob, 0.15),
            (MaskKind::Stroke, 0.08),
        ] {
            let fraction = hole_fraction(&mask(kind, 256, 256, 3));
            assert!((fraction - expected).abs() < 0.01, "{kind:?} covered {fraction}");
        }
    }

    #[test]
    fn generators_are_deterministic_and_not_flat() {
        for kind in TextureKind::ALL {
            let first = texture(kind, 96, 64, 11);
            assert_eq!(first, texture(kind, 96, 64, 11));
            let lumas: Vec<u8> = first.pixels().map(|p| p[1]).collect();
            let (low, high) = (lumas.iter().min(), lumas.iter().max());
            assert!(high.zip(low).is_some_and(|(h, l)| h - l > 40), "{kind:?} is too flat");
        }
    }
}
