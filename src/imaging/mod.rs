//! Pure, synchronous image work: decoding, masks, compositing, resampling, texture maps and
//! PNG encoding.
//!
//! Nothing here does IO or knows about jobs, providers or storage. Functions take decoded
//! buffers and return new ones; the pipeline runs them on the blocking pool. Multi-core work
//! goes through rayon.

#[cfg(feature = "eval")]
pub mod bench;
pub mod codec;
pub mod composite;
pub mod inpaint;
pub mod maps;
mod png_bands;
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

/// How an output is sized against its bounding box (`renderOptions.size` for the high-res
/// image, the preview square for the preview).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fit {
    /// The largest size with the composite's aspect ratio that fits in the box: nothing is cut
    /// or distorted, one side may be shorter than the box.
    #[default]
    Inside,
    /// Exactly the box: scaled to cover it, the overhang on the longer side cut off evenly.
    Cover,
    /// Exactly the box, stretched if the aspect ratios differ.
    Fill,
}

impl Fit {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "inside" => Some(Self::Inside),
            "cover" => Some(Self::Cover),
            "fill" => Some(Self::Fill),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inside => "inside",
            Self::Cover => "cover",
            Self::Fill => "fill",
        }
    }

    /// The output size for a source of `source` dimensions in a box of `bounds`. `Inside`
    /// rounds the shorter side to the nearest pixel and never below one.
    fn size_in(self, source: (u32, u32), bounds: (u32, u32)) -> (u32, u32) {
        let (width, height) = (u64::from(source.0.max(1)), u64::from(source.1.max(1)));
        let (box_width, box_height) = (u64::from(bounds.0), u64::from(bounds.1));
        match self {
            Self::Cover | Self::Fill => bounds,
            // Source relatively wider than the box (w/h >= W/H): the width binds.
            Self::Inside if width * box_height >= height * box_width => {
                let scaled = (2 * box_width * height + width) / (2 * width);
                (bounds.0, u32::try_from(scaled.max(1)).unwrap_or(bounds.1))
            }
            Self::Inside => {
                let scaled = (2 * box_height * width + height) / (2 * height);
                (u32::try_from(scaled.max(1)).unwrap_or(bounds.0), bounds.1)
            }
        }
    }
}

/// What the post-processing step should produce.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AssetSpec {
    /// Bounding box of the high-res image.
    pub high_res: (u32, u32),
    /// Side of the preview's bounding square.
    pub preview: u32,
    pub fit: Fit,
    pub normal_map: bool,
    pub roughness_map: bool,
    pub normal_strength: f32,
    /// zlib level of every PNG (1..=9).
    pub png_level: u32,
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

/// An encoded PNG. The buffer is shared, so an output that is the composite itself and every
/// upload retry use the same bytes.
#[derive(Debug, Clone)]
pub struct EncodedImage {
    pub png: bytes::Bytes,
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
    // The work runs on rayon's threads, which do not inherit the caller's span: each piece
    // names its parent.
    let parent = tracing::Span::current();
    // When the high-res size is the composite's own (a 2048² base at the default size), the
    // high-res asset *is* the composite: no resample, no second encode. The same holds for a
    // preview of a base that is already preview-sized.
    let high_res_size = spec.fit.size_in(composite.dimensions(), spec.high_res);
    let preview_size = spec.fit.size_in(composite.dimensions(), (spec.preview, spec.preview));
    let scale = |(width, height): (u32, u32)| match spec.fit {
        Fit::Cover => resize::resize_rgba_cover(composite, width, height),
        Fit::Inside | Fit::Fill => resize::resize_rgba(composite, width, height),
    };
    let same_size = composite.dimensions() == high_res_size;
    let preview_is_composite = composite.dimensions() == preview_size;
    let (high_res, preview) = rayon::join(
        || (!same_size).then(|| scale(high_res_size)),
        || (!preview_is_composite).then(|| scale(preview_size)),
    );
    let high_res_image = high_res.as_ref().unwrap_or(composite);
    let resize_ms = elapsed_ms(started);

    let maps_started = std::time::Instant::now();
    let (width, height) = high_res_image.dimensions();
    let maps::Maps { normal, roughness } = maps::derive(
        high_res_image,
        maps::MapSpec {
            normal: spec.normal_map,
            roughness: spec.roughness_map,
            normal_strength: spec.normal_strength,
        },
    );
    let maps_ms = elapsed_ms(maps_started);

    let encode_started = std::time::Instant::now();
    let output = |asset: &'static str, width: u32, height: u32| tracing::info_span!(parent: &parent, "output", asset, width, height, bytes = tracing::field::Empty);
    let encode = |asset: &'static str, image: &RgbaImage| -> Result<EncodedImage, EncodeError> {
        let span = output(asset, image.width(), image.height());
        let _entered = span.enter();
        let png: bytes::Bytes = codec::encode_rgba_png_at(image, spec.png_level)
            .map_err(|source| EncodeError { asset, source })?
            .into();
        span.record("bytes", png.len());
        Ok(EncodedImage {
            png,
            width: image.width(),
            height: image.height(),
        })
    };
    let encode_plane =
        |asset: &'static str, samples: Option<Vec<u8>>, layout| -> Result<Option<EncodedImage>, EncodeError> {
            samples
                .map(|samples| {
                    let span = output(asset, width, height);
                    let _entered = span.enter();
                    let png: bytes::Bytes = codec::encode_png(&samples, width, height, layout, spec.png_level)
                        .map_err(|source| EncodeError { asset, source })?
                        .into();
                    span.record("bytes", png.len());
                    Ok(EncodedImage { png, width, height })
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
            fit: Fit::Inside,
            normal_map: true,
            roughness_map: false,
            normal_strength: 2.0,
            png_level: codec::DEFAULT_PNG_LEVEL,
        };
        let size = |png: &[u8]| {
            let limits = codec::DecodeLimits {
                max_dimension: 4096,
                max_pixels: 1 << 24,
            };
            let header = codec::probe(png, limits).unwrap();
            (header.width, header.height)
        };
        // 5:3 in a 2:1 box: the height binds (128, and 128 * 5 / 3 = 213.3 wide); in the
        // preview square the width binds (64, and 64 * 3 / 5 = 38.4 high).
        let assets = render_assets(&composite, &spec).unwrap();
        assert_eq!(size(&assets.composite.png), (200, 120));
        assert_eq!(size(&assets.high_res.png), (213, 128));
        assert_eq!((assets.high_res.width, assets.high_res.height), (213, 128));
        assert_eq!(size(&assets.preview.png), (64, 38));
        assert_eq!(size(&assets.normal_map.as_ref().unwrap().png), (213, 128));
        assert!(assets.roughness_map.is_none());
        // Cover and fill give exactly the box; only fill distorts.
        for fit in [Fit::Cover, Fit::Fill] {
            let assets = render_assets(&composite, &AssetSpec { fit, ..spec }).unwrap();
            assert_eq!(size(&assets.high_res.png), (256, 128), "{fit:?}");
            assert_eq!(size(&assets.preview.png), (64, 64), "{fit:?}");
            assert_eq!(size(&assets.normal_map.as_ref().unwrap().png), (256, 128), "{fit:?}");
        }
    }

    #[test]
    fn inside_keeps_the_aspect_ratio_whichever_side_binds() {
        let inside = |source, bounds| Fit::Inside.size_in(source, bounds);
        assert_eq!(inside((1000, 500), (2048, 2048)), (2048, 1024));
        assert_eq!(inside((500, 1000), (2048, 2048)), (1024, 2048));
        assert_eq!(inside((1024, 1024), (2048, 2048)), (2048, 2048));
        assert_eq!(inside((1024, 1024), (1024, 512)), (512, 512));
        assert_eq!(inside((3000, 1), (512, 512)), (512, 1), "never below one pixel");
        assert_eq!(inside((1, 3000), (512, 512)), (1, 512));
        assert_eq!(Fit::Cover.size_in((1000, 500), (512, 512)), (512, 512));
        assert_eq!(Fit::Fill.size_in((1000, 500), (512, 256)), (512, 256));
        for fit in [Fit::Inside, Fit::Cover, Fit::Fill] {
            assert_eq!(Fit::parse(fit.as_str()), Some(fit));
        }
        assert_eq!(Fit::parse("contain"), None);
    }

    #[test]
    fn outputs_the_size_of_the_composite_reuse_its_encoding() {
        let composite = RgbaImage::from_fn(64, 64, |x, y| image::Rgba([x as u8 * 4, y as u8 * 4, 7, 255]));
        let spec = AssetSpec {
            high_res: (64, 64),
            preview: 64,
            fit: Fit::Inside,
            normal_map: false,
            roughness_map: false,
            normal_strength: 2.0,
            png_level: codec::DEFAULT_PNG_LEVEL,
        };
        let assets = render_assets(&composite, &spec).unwrap();
        assert_eq!(assets.high_res.png, assets.composite.png);
        assert_eq!(assets.preview.png, assets.composite.png);
        let decoded = image::load_from_memory(&assets.preview.png).unwrap().to_rgba8();
        assert_eq!(decoded, composite, "the preview is the composite, pixel for pixel");
    }
}
