//! Normal and roughness maps derived from a colour texture.
//!
//! Height is the texture's luminance (Rec. 709 weights, 0..1). The normal map is tangent-space
//! with the OpenGL convention (+Y up, green brighter on slopes facing the top of the image),
//! slopes from a Sobel operator with clamped edges. The roughness map is a heuristic, not
//! measured material data: darker and busier areas read as rougher, in 0.25..1.0.

use image::RgbaImage;
use rayon::prelude::*;

/// Luminance of each pixel in 0..1.
pub fn height_field(image: &RgbaImage) -> Vec<f32> {
    let mut height = vec![0.0f32; image.width() as usize * image.height() as usize];
    height
        .par_chunks_mut(image.width() as usize)
        .zip(image.as_raw().par_chunks(image.width() as usize * 4))
        .for_each(|(out, row)| {
            for (h, pixel) in out.iter_mut().zip(row.chunks_exact(4)) {
                *h = (0.2126 * f32::from(pixel[0]) + 0.7152 * f32::from(pixel[1]) + 0.0722 * f32::from(pixel[2]))
                    / 255.0;
            }
        });
    height
}

/// Sobel slopes at one pixel: (dh/dx, dh/dy) with y growing downwards, in height units per pixel.
#[inline]
fn sobel(height: &[f32], width: usize, rows: [usize; 3], x: usize) -> (f32, f32) {
    let left = x.saturating_sub(1);
    let right = (x + 1).min(width - 1);
    let h = |row: usize, col: usize| height[row * width + col];
    let [above, here, below] = rows;
    let dx = (h(above, right) + 2.0 * h(here, right) + h(below, right))
        - (h(above, left) + 2.0 * h(here, left) + h(below, left));
    let dy =
        (h(below, left) + 2.0 * h(below, x) + h(below, right)) - (h(above, left) + 2.0 * h(above, x) + h(above, right));
    (dx / 8.0, dy / 8.0)
}

fn neighbour_rows(y: usize, height: usize) -> [usize; 3] {
    [y.saturating_sub(1), y, (y + 1).min(height - 1)]
}

/// RGB8 tangent-space normal map (OpenGL, +Y up).
pub fn normal_map(height: &[f32], width: u32, rows: u32, strength: f32) -> Vec<u8> {
    let (width, rows) = (width as usize, rows as usize);
    let mut out = vec![0u8; width * rows * 3];
    out.par_chunks_mut(width * 3).enumerate().for_each(|(y, line)| {
        let neighbours = neighbour_rows(y, rows);
        for (x, pixel) in line.chunks_exact_mut(3).enumerate() {
            let (dx, dy) = sobel(height, width, neighbours, x);
            // Surface z = h(x, Y) with Y = -y, so the normal is (-dh/dx, +dh/dy, 1), scaled.
            let (nx, ny, nz) = (-dx * strength, dy * strength, 1.0f32);
            let inverse_length = (nx * nx + ny * ny + nz * nz).sqrt().recip();
            for (channel, component) in pixel.iter_mut().zip([nx, ny, nz]) {
                *channel = ((component * inverse_length * 0.5 + 0.5) * 255.0).round() as u8;
            }
        }
    });
    out
}

/// 8-bit grayscale roughness map.
pub fn roughness_map(height: &[f32], width: u32, rows: u32) -> Vec<u8> {
    let (width, rows) = (width as usize, rows as usize);
    let mut out = vec![0u8; width * rows];
    out.par_chunks_mut(width).enumerate().for_each(|(y, line)| {
        let neighbours = neighbour_rows(y, rows);
        for (x, value) in line.iter_mut().enumerate() {
            let (dx, dy) = sobel(height, width, neighbours, x);
            let detail = ((dx * dx + dy * dy).sqrt() * 4.0).min(1.0);
            let darkness = 1.0 - height[y * width + x];
            let roughness = (0.25 + 0.5 * darkness + 0.25 * detail).clamp(0.0, 1.0);
            *value = (roughness * 255.0).round() as u8;
        }
    });
    out
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
        let height = height_field(&image);
        assert!((height[0] - 0.2126).abs() < 1e-4);
        assert!((height[1] - 0.7152).abs() < 1e-4);
        assert!((height[2] - 1.0).abs() < 1e-4);
    }
}
