//! Normal and roughness maps derived from a colour texture.
//!
//! Height is the texture's luminance (Rec. 709 weights, 0..1). The normal map is tangent-space
//! with the OpenGL convention (+Y up, green brighter on slopes facing the top of the image),
//! slopes from a Sobel operator with clamped edges. The roughness map is a heuristic, not
//! measured material data: darker and busier areas read as rougher, in 0.25..1.0.
//!
//! Both maps come from one pass over the image in bands of rows: each band computes the
//! luminance of its rows (and one row either side) into a small buffer, takes the Sobel slopes
//! once per pixel and writes both maps. No full-size height field is ever allocated.

use image::RgbaImage;
use rayon::prelude::*;

/// Rows per band: enough work per task, and a luminance buffer of a few hundred KiB.
const BAND_ROWS: usize = 32;

/// The maps asked for, as raw samples: RGB8 normals, 8-bit grey roughness.
#[derive(Debug, Default)]
pub struct Maps {
    pub normal: Option<Vec<u8>>,
    pub roughness: Option<Vec<u8>>,
}

/// Which maps to derive, and the normal map's slope gain.
#[derive(Debug, Clone, Copy)]
pub struct MapSpec {
    pub normal: bool,
    pub roughness: bool,
    pub normal_strength: f32,
}

/// The maps of `image` that `spec` asks for.
pub fn derive(image: &RgbaImage, spec: MapSpec) -> Maps {
    let width = image.width() as usize;
    let raw = image.as_raw();
    derive_from(width, image.height() as usize, spec, |y, out| {
        luminance(&raw[y * width * 4..(y + 1) * width * 4], out);
    })
}

/// Luminance in 0..1 of one row of RGBA pixels.
fn luminance(row: &[u8], out: &mut [f32]) {
    for (h, pixel) in out.iter_mut().zip(row.chunks_exact(4)) {
        *h = (0.2126 * f32::from(pixel[0]) + 0.7152 * f32::from(pixel[1]) + 0.0722 * f32::from(pixel[2])) / 255.0;
    }
}

/// The maps of a height field whose row `y` `height_row` writes into its buffer.
fn derive_from(width: usize, rows: usize, spec: MapSpec, height_row: impl Fn(usize, &mut [f32]) + Sync) -> Maps {
    let mut maps = Maps {
        normal: spec.normal.then(|| vec![0u8; width * rows * 3]),
        roughness: spec.roughness.then(|| vec![0u8; width * rows]),
    };
    if width == 0 || rows == 0 || !(spec.normal || spec.roughness) {
        return maps;
    }
    let bands = rows.div_ceil(BAND_ROWS);
    let normal_bands = split_bands(maps.normal.as_deref_mut(), width * 3 * BAND_ROWS, bands);
    let roughness_bands = split_bands(maps.roughness.as_deref_mut(), width * BAND_ROWS, bands);
    normal_bands
        .into_par_iter()
        .zip(roughness_bands)
        .enumerate()
        .for_each(|(band, (mut normal, mut roughness))| {
            let first = band * BAND_ROWS;
            let last = (first + BAND_ROWS).min(rows);
            // Heights of rows first-1 ..= last, clamped at the image's edges.
            let mut heights = vec![0.0f32; (last - first + 2) * width];
            for (index, line) in heights.chunks_exact_mut(width).enumerate() {
                height_row((first + index).saturating_sub(1).min(rows - 1), line);
            }
            for y in first..last {
                let local = y - first + 1;
                let line = |offset: usize| &heights[(local + offset - 1) * width..(local + offset) * width];
                let slopes = RowSlopes {
                    above: line(0),
                    here: line(1),
                    below: line(2),
                };
                let row = y - first;
                if let Some(normal) = normal.as_deref_mut() {
                    slopes.normals(
                        &mut normal[row * width * 3..(row + 1) * width * 3],
                        spec.normal_strength,
                    );
                }
                if let Some(roughness) = roughness.as_deref_mut() {
                    slopes.roughness(&mut roughness[row * width..(row + 1) * width]);
                }
            }
        });
    maps
}

/// A map cut into bands of `band` bytes, or `bands` empty slots for a map not asked for.
fn split_bands(map: Option<&mut [u8]>, band: usize, bands: usize) -> Vec<Option<&mut [u8]>> {
    match map {
        Some(map) => map.chunks_mut(band).map(Some).collect(),
        None => (0..bands).map(|_| None).collect(),
    }
}

/// One row's heights and its neighbours' (the row itself at the image's top and bottom).
struct RowSlopes<'a> {
    above: &'a [f32],
    here: &'a [f32],
    below: &'a [f32],
}

impl RowSlopes<'_> {
    /// Sobel slopes at `x`: (dh/dx, dh/dy) with y growing downwards, in height units per
    /// pixel; columns clamp at the edges.
    #[inline]
    fn at(&self, x: usize) -> (f32, f32) {
        let width = self.here.len();
        let (left, right) = (x.saturating_sub(1), (x + 1).min(width - 1));
        let (above, here, below) = (self.above, self.here, self.below);
        let dx = (above[right] + 2.0 * here[right] + below[right]) - (above[left] + 2.0 * here[left] + below[left]);
        let dy = (below[left] + 2.0 * below[x] + below[right]) - (above[left] + 2.0 * above[x] + above[right]);
        (dx / 8.0, dy / 8.0)
    }

    /// RGB8 tangent-space normals (OpenGL, +Y up).
    fn normals(&self, out: &mut [u8], strength: f32) {
        for (x, pixel) in out.chunks_exact_mut(3).enumerate() {
            let (dx, dy) = self.at(x);
            // Surface z = h(x, Y) with Y = -y, so the normal is (-dh/dx, +dh/dy, 1), scaled.
            let (nx, ny, nz) = (-dx * strength, dy * strength, 1.0f32);
            let inverse_length = (nx * nx + ny * ny + nz * nz).sqrt().recip();
            for (channel, component) in pixel.iter_mut().zip([nx, ny, nz]) {
                *channel = to_byte(component * inverse_length * 0.5 + 0.5);
            }
        }
    }

    /// 8-bit roughness: 0.25 + half the darkness + a quarter of the detail.
    fn roughness(&self, out: &mut [u8]) {
        for (x, value) in out.iter_mut().enumerate() {
            let (dx, dy) = self.at(x);
            let detail = ((dx * dx + dy * dy).sqrt() * 4.0).min(1.0);
            let darkness = 1.0 - self.here[x];
            *value = to_byte((0.25 + 0.5 * darkness + 0.25 * detail).clamp(0.0, 1.0));
        }
    }
}

/// A value in 0..=1 as the nearest byte (halves round up), without a call to `round`.
#[inline]
fn to_byte(value: f32) -> u8 {
    // `as` saturates, so anything outside 0..=1 still lands on 0 or 255.
    (value * 255.0 + 0.5) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_height(width: u32, rows: u32, f: impl Fn(u32, u32) -> f32) -> Vec<f32> {
        (0..rows)
            .flat_map(|y| (0..width).map(move |x| (x, y)))
            .map(|(x, y)| f(x, y))
            .collect()
    }

    fn maps_of(height: &[f32], width: u32, rows: u32, strength: f32) -> Maps {
        let width = width as usize;
        let spec = MapSpec {
            normal: true,
            roughness: true,
            normal_strength: strength,
        };
        derive_from(width, rows as usize, spec, |y, out| {
            out.copy_from_slice(&height[y * width..(y + 1) * width]);
        })
    }

    fn normal_map(height: &[f32], width: u32, rows: u32, strength: f32) -> Vec<u8> {
        maps_of(height, width, rows, strength).normal.unwrap()
    }

    fn roughness_map(height: &[f32], width: u32, rows: u32) -> Vec<u8> {
        maps_of(height, width, rows, 1.0).roughness.unwrap()
    }

    fn pixel(map: &[u8], width: u32, x: u32, y: u32) -> [u8; 3] {
        let i = ((y * width + x) * 3) as usize;
        [map[i], map[i + 1], map[i + 2]]
    }

    #[test]
    fn flat_plane_points_straight_up() {
        let height = from_height(16, 16, |_, _| 0.5);
        let map = normal_map(&height, 16, 16, 3.0);
        assert!(map.chunks_exact(3).all(|p| p == [128, 128, 255]));
    }

    #[test]
    fn ramp_rising_to_the_right_tilts_normals_left() {
        let slope = 0.01;
        let height = from_height(32, 32, |x, _| x as f32 * slope);
        let strength = 10.0;
        let map = normal_map(&height, 32, 32, strength);
        let [r, g, b] = pixel(&map, 32, 16, 16);
        // Expected normal: normalize(-slope*strength, 0, 1).
        let nx = -slope * strength;
        let length = (nx * nx + 1.0f32).sqrt();
        let expected_r = ((nx / length * 0.5 + 0.5) * 255.0).round() as u8;
        let expected_b = ((1.0 / length * 0.5 + 0.5) * 255.0).round() as u8;
        assert_eq!((r, g, b), (expected_r, 128, expected_b));
        assert!(r < 128);
    }

    #[test]
    fn height_growing_down_the_image_faces_up_in_opengl_convention() {
        let height = from_height(32, 32, |_, y| y as f32 * 0.02);
        let map = normal_map(&height, 32, 32, 5.0);
        let [r, g, _] = pixel(&map, 32, 10, 10);
        assert_eq!(r, 128);
        assert!(g > 128, "green {g} should point to +Y (up)");
    }

    #[test]
    fn roughness_is_higher_for_dark_and_busy_areas() {
        let dark = roughness_map(&from_height(8, 8, |_, _| 0.1), 8, 8);
        let light = roughness_map(&from_height(8, 8, |_, _| 0.9), 8, 8);
        // Stripes two pixels wide: (4, 3) is a light pixel on an edge.
        let busy = roughness_map(
            &from_height(8, 8, |x, _| if (x / 2) % 2 == 0 { 0.9 } else { 0.1 }),
            8,
            8,
        );
        assert!(dark[27] > light[27]);
        assert!(busy[28] > light[28], "busy {} light {}", busy[28], light[28]);
        assert!(dark.iter().chain(&light).all(|v| *v >= 63));
    }

    #[test]
    fn height_field_uses_rec709_luminance() {
        let image = RgbaImage::from_fn(3, 1, |x, _| match x {
            0 => image::Rgba([255, 0, 0, 255]),
            1 => image::Rgba([0, 255, 0, 255]),
            _ => image::Rgba([255, 255, 255, 255]),
        });
        let mut height = [0.0f32; 3];
        luminance(image.as_raw(), &mut height);
        assert!((height[0] - 0.2126).abs() < 1e-4);
        assert!((height[1] - 0.7152).abs() < 1e-4);
        assert!((height[2] - 1.0).abs() < 1e-4);
    }

    /// Band edges are invisible: every pixel equals a whole-image Sobel over the full field.
    #[test]
    fn bands_join_without_seams() {
        let (width, rows) = (37u32, 3 * BAND_ROWS as u32 + 5);
        let height = from_height(width, rows, |x, y| {
            ((x * 7 + y * 13) % 23) as f32 / 23.0 + y as f32 * 0.004
        });
        let maps = maps_of(&height, width, rows, 2.5);
        let (w, r) = (width as usize, rows as usize);
        let h = |x: usize, y: usize| height[y.min(r - 1) * w + x.min(w - 1)];
        for y in 0..r {
            for x in 0..w {
                let (up, down, left, right) = (y.saturating_sub(1), y + 1, x.saturating_sub(1), x + 1);
                let dx = ((h(right, up) + 2.0 * h(right, y) + h(right, down))
                    - (h(left, up) + 2.0 * h(left, y) + h(left, down)))
                    / 8.0;
                let dy = ((h(left, down) + 2.0 * h(x, down) + h(right, down))
                    - (h(left, up) + 2.0 * h(x, up) + h(right, up)))
                    / 8.0;
                let (nx, ny) = (-dx * 2.5, dy * 2.5);
                let length = (nx * nx + ny * ny + 1.0).sqrt();
                let expected =
                    [nx / length, ny / length, 1.0 / length].map(|c| ((c * 0.5 + 0.5) * 255.0).round() as u8);
                let at = (y * w + x) * 3;
                assert_eq!(
                    maps.normal.as_ref().unwrap()[at..at + 3],
                    expected,
                    "normal at ({x}, {y})"
                );
                let detail = ((dx * dx + dy * dy).sqrt() * 4.0).min(1.0);
                let rough = ((0.25 + 0.5 * (1.0 - h(x, y)) + 0.25 * detail).clamp(0.0, 1.0) * 255.0).round() as u8;
                assert_eq!(
                    maps.roughness.as_ref().unwrap()[y * w + x],
                    rough,
                    "roughness at ({x}, {y})"
                );
            }
        }
    }
}
