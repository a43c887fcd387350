//! Pure, synchronous image work: decoding, masks, compositing, resampling, texture maps and
//! PNG encoding.
//!
//! Nothing here does IO or knows about jobs, providers or storage. Functions take decoded
//! buffers and return new ones; the pipeline runs them on the blocking pool. Multi-core work
//! goes through rayon.

pub mod codec;
pub mod composite;
pub mod inpaint;
pub mod maps;
pub mod resize;

use image::{GrayImage, RgbaImage};

/// Mask values at or above this count as "regenerate" where a binary decision is needed.
const MASK_THRESHOLD: u8 = 128;

/// Turns a decoded mask image into a coverage plane the size of the base: white means
/// "regenerate", black means "keep". Transparent pixels count as black, so a mask drawn on a
/// transparent layer works too. A mask of another size is resized (bilinear) to the base.
pub fn mask_plane(mask: &RgbaImage, width: u32, height: u32) -> GrayImage {
    let coverage: Vec<u8> = mask
        .as_raw()
        .chunks_exact(4)
        .map(|p| {
            let luma = (2126 * u32::from(p[0]) + 7152 * u32::from(p[1]) + 722 * u32::from(p[2]) + 5000) / 10_000;
            ((luma * u32::from(p[3]) + 127) / 255) as u8
        })
        .collect();
    let plane = GrayImage::from_raw(mask.width(), mask.height(), coverage)
        .unwrap_or_else(|| GrayImage::new(mask.width(), mask.height()));
    resize::resize_gray(&plane, width, height)
}

/// Thresholds a coverage plane into a hole mask (255 = fill, 0 = keep).
pub fn binary_hole(mask: &GrayImage) -> GrayImage {
    let mut hole = mask.clone();
    for value in hole.iter_mut() {
        *value = if *value >= MASK_THRESHOLD { 255 } else { 0 };
    }
    hole
}

/// Fraction of the plane marked for regeneration.
pub fn coverage(mask: &GrayImage) -> f64 {
    let marked = mask.iter().filter(|v| **v >= MASK_THRESHOLD).count();
    marked as f64 / mask.len().max(1) as f64
}

/// What the post-processing step should produce.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AssetSpec {
    pub high_res: (u32, u32),
    pub preview: u32,
    pub normal_map: bool,
    pub roughness_map: bool,
    pub normal_strength: f32,
}

/// Encoded outputs of one render.
#[derive(Debug, Clone)]
pub struct RenderedAssets {
    pub composite: EncodedImage,
    pub high_res: EncodedImage,
    pub preview: EncodedImage,
    pub normal_map: Option<EncodedImage>,
    pub roughness_map: Option<EncodedImage>,
    pub timings: PostprocessTimings,
}

#[derive(Debug, Clone)]
pub struct EncodedImage {
    pub png: Vec<u8>,
    pub width: u32,
    pub height: u32,
}

/// Milliseconds spent in each post-processing stage (stages overlap on multiple cores).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PostprocessTimings {
    pub resize_ms: u64,
    pub maps_ms: u64,
    pub encode_ms: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("PNG encoding of the {asset} failed: {source}")]
pub struct EncodeError {
    pub asset: &'static str,
    pub source: png::EncodingError,
}

/// Produces every output asset from the composite: high-res, preview, optional maps (derived
/// from the high-res image so they line up with it) and their PNG encodings. Independent work
/// runs concurrently on the rayon pool.
pub fn render_assets(composite: &RgbaImage, spec: &AssetSpec) -> Result<RenderedAssets, EncodeError> {
    let started = std::time::Instant::now();
    // When the high-res size is the composite's own (a 2048² base at the default size), the
    // high-res asset *is* the composite: no resample, no second encode. The same holds for a
    // preview of a base that is already preview-sized.
    let same_size = composite.dimensions() == spec.high_res;
    let preview_is_composite = composite.dimensions() == (spec.preview, spec.preview);
    let (high_res, preview) = rayon::join(
        || (!same_size).then(|| resize::resize_rgba(composite, spec.high_res.0, spec.high_res.1)),
        || (!preview_is_composite).then(|| resize::resize_rgba(composite, spec.preview, spec.preview)),
    );
    let high_res_image = high_res.as_ref().unwrap_or(composite);
    let resize_ms = elapsed_ms(started);

    let maps_started = std::time::Instant::now();
    let (width, height) = high_res_image.dimensions();
    let (normal, roughness) = if spec.normal_map || spec.roughness_map {
        let field = maps::height_field(high_res_image);
        rayon::join(
            || {
                spec.normal_map
                    .then(|| maps::normal_map(&field, width, height, spec.normal_strength))
            },
            || spec.roughness_map.then(|| maps::roughness_map(&field, width, height)),
        )
    } else {
        (None, None)
    };
    let maps_ms = elapsed_ms(maps_started);

    let encode_started = std::time::Instant::now();
    let encode = |asset: &'static str, image: &RgbaImage| -> Result<EncodedImage, EncodeError> {
        Ok(EncodedImage {
            png: codec::encode_rgba_png(image).map_err(|source| EncodeError { asset, source })?,
            width: image.width(),
            height: image.height(),
        })
    };
    let encode_plane =
        |asset: &'static str, samples: Option<Vec<u8>>, layout| -> Result<Option<EncodedImage>, EncodeError> {
            samples
                .map(|samples| {
                    Ok(EncodedImage {
                        png: codec::encode_png(&samples, width, height, layout)
                            .map_err(|source| EncodeError { asset, source })?,
                        width,
                        height,
                    })
                })
                .transpose()
        };
    let ((composite_png, high_res_png), (preview_png, (normal_png, roughness_png))) = rayon::join(
        || {
            rayon::join(
                || encode("composite", composite),
                || {
                    high_res
                        .as_ref()
                        .map(|image| encode("high-res image", image))
                        .transpose()
                },
            )
        },
        || {
            rayon::join(
                || preview.as_ref().map(|image| encode("preview", image)).transpose(),
                || {
                    rayon::join(
                        || encode_plane("normal map", normal, codec::PngLayout::Rgb),
                        || encode_plane("roughness map", roughness, codec::PngLayout::Gray),
                    )
                },
            )
        },
    );
    let encode_ms = elapsed_ms(encode_started);
    let composite = composite_png?;
    let high_res = match high_res_png? {
        Some(encoded) => encoded,
        None => composite.clone(),
    };
    let preview = match preview_png? {
        Some(encoded) => encoded,
        None => composite.clone(),
    };
    Ok(RenderedAssets {
        composite,
        high_res,
        preview,
        normal_map: normal_png?,
        roughness_map: roughness_png?,
        timings: PostprocessTimings {
            resize_ms,
            maps_ms,
            encode_ms,
        },
    })
}

fn elapsed_ms(since: std::time::Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_plane_treats_white_as_regenerate_and_transparent_as_keep() {
        let mask = RgbaImage::from_fn(4, 1, |x, _| match x {
            0 => image::Rgba([255, 255, 255, 255]),
            1 => image::Rgba([0, 0, 0, 255]),
            2 => image::Rgba([255, 255, 255, 0]),
            _ => image::Rgba([128, 128, 128, 255]),
        });
        let plane = mask_plane(&mask, 4, 1);
        assert_eq!(plane.as_raw(), &vec![255, 0, 0, 128]);
        assert_eq!(binary_hole(&plane).as_raw(), &vec![255, 0, 0, 255]);
    }

    #[test]
    fn mask_of_another_size_is_resized_to_the_base() {
        let mask = RgbaImage::from_pixel(10, 10, image::Rgba([255, 255, 255, 255]));
        let plane = mask_plane(&mask, 64, 32);
        assert_eq!(plane.dimensions(), (64, 32));
        assert!((coverage(&plane) - 1.0).abs() < 1e-9);
    }

    #[test]
    fn render_assets_produces_every_requested_output_at_its_size() {
        let composite = RgbaImage::from_fn(200, 120, |x, y| image::Rgba([x as u8, y as u8, 90, 255]));
        let spec = AssetSpec {
            high_res: (256, 128),
            preview: 64,
            normal_map: true,
            roughness_map: false,
            normal_strength: 2.0,
        };
        let assets = render_assets(&composite, &spec).unwrap();
        let limits = codec::DecodeLimits {
            max_dimension: 4096,
            max_pixels: 1 << 24,
        };
        let size = |png: &[u8]| {
            let header = codec::probe(png, limits).unwrap();
            (header.width, header.height)
        };
        assert_eq!(size(&assets.composite.png), (200, 120));
        assert_eq!(size(&assets.high_res.png), (256, 128));
        assert_eq!(size(&assets.preview.png), (64, 64));
        assert_eq!(size(&assets.normal_map.as_ref().unwrap().png), (256, 128));
        assert!(assets.roughness_map.is_none());
    }

    #[test]
    fn outputs_the_size_of_the_composite_reuse_its_encoding() {
        let composite = RgbaImage::from_fn(64, 64, |x, y| image::Rgba([x as u8 * 4, y as u8 * 4, 7, 255]));
        let spec = AssetSpec {
            high_res: (64, 64),
            preview: 64,
            normal_map: false,
            roughness_map: false,
            normal_strength: 2.0,
        };
        let assets = render_assets(&composite, &spec).unwrap();
        assert_eq!(assets.high_res.png, assets.composite.png);
        assert_eq!(assets.preview.png, assets.composite.png);
        let decoded = image::load_from_memory(&assets.preview.png).unwrap().to_rgba8();
        assert_eq!(decoded, composite, "the preview is the composite, pixel for pixel");
    }
}
