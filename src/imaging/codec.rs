//! Decoding untrusted image bytes under limits, and encoding our PNG outputs.
//!
//! The format is sniffed from the bytes, never taken from a URL or a header. Dimensions are read
//! from the image header and checked against the limits *before* the pixel buffer is allocated,
//! so a decompression bomb costs a few hundred bytes of parsing, not gigabytes of memory.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, RgbaImage};

/// Limits applied to every decoded image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    pub max_dimension: u32,
    pub max_pixels: u64,
}

/// Accepted input formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SniffedFormat {
    Png,
    Jpeg,
    WebP,
}

impl SniffedFormat {
    /// Recognises PNG, JPEG and WebP by their signatures.
    fn sniff(bytes: &[u8]) -> Option<Self> {
        if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(Self::Png)
        } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
            Some(Self::Jpeg)
        } else if bytes.len() >= 12 && &bytes[0..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
            Some(Self::WebP)
        } else {
            None
        }
    }

    fn image_format(self) -> ImageFormat {
        match self {
            Self::Png => ImageFormat::Png,
            Self::Jpeg => ImageFormat::Jpeg,
            Self::WebP => ImageFormat::WebP,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("is not a PNG, JPEG or WebP image")]
    UnknownFormat,
    #[error("is {width}x{height}, larger than the limit of {limit} pixels per side")]
    TooWide { width: u32, height: u32, limit: u32 },
    #[error("is {width}x{height} = {pixels} pixels, more than the limit of {limit}")]
    TooManyPixels {
        width: u32,
        height: u32,
        pixels: u64,
        limit: u64,
    },
    #[error("has an empty (0-pixel) dimension")]
    Empty,
    #[error("could not be decoded: {0}")]
    Corrupt(String),
}

/// An image's format and size as read from its header alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageHeader {
    pub format: SniffedFormat,
    pub width: u32,
    pub height: u32,
}

/// Reads only the header and checks it against the limits.
pub fn probe(bytes: &[u8], limits: DecodeLimits) -> Result<ImageHeader, DecodeError> {
    let format = SniffedFormat::sniff(bytes).ok_or(DecodeError::UnknownFormat)?;
    let decoder = open_decoder(bytes, format, limits)?;
    let (width, height) = decoder.dimensions();
    check_dimensions(width, height, limits)?;
    Ok(ImageHeader { format, width, height })
}

/// Decodes to RGBA8, applying the JPEG/WebP EXIF orientation.
pub fn decode_rgba(bytes: &[u8], limits: DecodeLimits) -> Result<RgbaImage, DecodeError> {
    let format = SniffedFormat::sniff(bytes).ok_or(DecodeError::UnknownFormat)?;
    let mut decoder = open_decoder(bytes, format, limits)?;
    let (width, height) = decoder.dimensions();
    check_dimensions(width, height, limits)?;
    // A broken EXIF block is not worth failing a render over; it just means "as stored".
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut image = DynamicImage::from_decoder(decoder).map_err(corrupt)?;
    image.apply_orientation(orientation);
    // For RGBA8 sources this moves the buffer without copying.
    Ok(image.into_rgba8())
}

fn open_decoder(
    bytes: &[u8],
    format: SniffedFormat,
    limits: DecodeLimits,
) -> Result<impl ImageDecoder + '_, DecodeError> {
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format.image_format());
    let mut decoder_limits = image::Limits::default();
    decoder_limits.max_image_width = Some(limits.max_dimension);
    decoder_limits.max_image_height = Some(limits.max_dimension);
    decoder_limits.max_alloc = Some(allocation_backstop(limits));
    reader.limits(decoder_limits);
    reader.into_decoder().map_err(|error| match error {
        image::ImageError::Limits(refusal) => refused_by_limits(bytes, format, limits, &refusal),
        other => corrupt(other),
    })
}

/// Backstop for decoders that allocate before we see the header: the output buffer in RGBA16
/// plus generous room for the decoder's own state.
fn allocation_backstop(limits: DecodeLimits) -> u64 {
    limits.max_pixels.saturating_mul(8).saturating_add(64 << 20)
}

/// The error for an image whose decoder refused it under our limits, naming the header's real
/// dimensions: the header is read again with only the allocation backstop (no side limits),
/// which still allocates no pixels.
fn refused_by_limits(
    bytes: &[u8],
    format: SniffedFormat,
    limits: DecodeLimits,
    refusal: &image::error::LimitError,
) -> DecodeError {
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format.image_format());
    let mut header_limits = image::Limits::no_limits();
    header_limits.max_alloc = Some(allocation_backstop(limits));
    reader.limits(header_limits);
    match reader
        .into_dimensions()
        .map(|(width, height)| check_dimensions(width, height, limits))
    {
        Ok(Err(too_large)) => too_large,
        // Within our limits, so the decoder refused something else (its own allocation).
        Ok(Ok(())) | Err(_) => DecodeError::Corrupt(format!("needs more memory to decode than allowed ({refusal})")),
    }
}

fn check_dimensions(width: u32, height: u32, limits: DecodeLimits) -> Result<(), DecodeError> {
    if width == 0 || height == 0 {
        return Err(DecodeError::Empty);
    }
    if width > limits.max_dimension || height > limits.max_dimension {
        return Err(DecodeError::TooWide {
            width,
            height,
            limit: limits.max_dimension,
        });
    }
    let pixels = u64::from(width) * u64::from(height);
    if pixels > limits.max_pixels {
        return Err(DecodeError::TooManyPixels {
            width,
            height,
            pixels,
            limit: limits.max_pixels,
        });
    }
    Ok(())
}

fn corrupt(error: image::ImageError) -> DecodeError {
    DecodeError::Corrupt(error.to_string())
}

/// Pixel layouts we write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PngLayout {
    Rgba,
    Rgb,
    Gray,
}

impl PngLayout {
    fn channels(self) -> usize {
        match self {
            Self::Rgba => 4,
            Self::Rgb => 3,
            Self::Gray => 1,
        }
    }

    fn color(self) -> png::ColorType {
        match self {
            Self::Rgba => png::ColorType::Rgba,
            Self::Rgb => png::ColorType::Rgb,
            Self::Gray => png::ColorType::Grayscale,
        }
    }
}

/// zlib level of PNGs unless `PNG_COMPRESSION_LEVEL` says otherwise. With per-row filters,
/// level 3 of zlib-rs writes texture PNGs a fifth smaller than libvips' default (level 6, no
/// filter) in a fraction of its time; levels 4 to 6 save another 1-4% for 20-150% more time,
/// level 1 is cheaper but larger than libvips'. See BENCHMARKS.md.
pub const DEFAULT_PNG_LEVEL: u32 = 3;

/// Encodes raw 8-bit samples laid out as `layout` as PNG at zlib `level` (1..=9).
pub fn encode_png(
    samples: &[u8],
    width: u32,
    height: u32,
    layout: PngLayout,
    level: u32,
) -> Result<Vec<u8>, png::EncodingError> {
    encode_rows(samples, (width, height), layout.channels(), layout, level)
}

/// Encodes an RGBA image at the default level; see [`encode_rgba_png_at`].
pub fn encode_rgba_png(image: &RgbaImage) -> Result<Vec<u8>, png::EncodingError> {
    encode_rgba_png_at(image, DEFAULT_PNG_LEVEL)
}

/// Encodes an RGBA image at zlib `level`, dropping the alpha channel (while filtering, without
/// a copy) when it carries no information: RGB output is a quarter smaller.
pub fn encode_rgba_png_at(image: &RgbaImage, level: u32) -> Result<Vec<u8>, png::EncodingError> {
    let layout = if is_opaque(image) {
        PngLayout::Rgb
    } else {
        PngLayout::Rgba
    };
    encode_rows(image.as_raw(), image.dimensions(), 4, layout, level)
}

/// Whether every alpha sample is 255.
pub fn is_opaque(image: &RgbaImage) -> bool {
    image.as_raw().chunks_exact(4).all(|pixel| pixel[3] == 255)
}

/// The PNG of `samples` (`source_channels` bytes per pixel, of which `layout` keeps the
/// first): the header from the `png` crate, the image data from the banded parallel encoder
/// of [`super::png_bands`].
fn encode_rows(
    samples: &[u8],
    (width, height): (u32, u32),
    source_channels: usize,
    layout: PngLayout,
    level: u32,
) -> Result<Vec<u8>, png::EncodingError> {
    let rows = super::png_bands::Rows {
        samples,
        width: width as usize,
        height: height as usize,
        source_channels,
        channels: layout.channels(),
    };
    if samples.len() != rows.width * rows.height * source_channels {
        return Err(png::EncodingError::IoError(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "{} samples do not make a {width}x{height} image of {source_channels} channels",
                samples.len()
            ),
        )));
    }
    let data = super::png_bands::zlib_stream(rows, level)?;
    let mut out = Vec::with_capacity(data.len() + 128);
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(layout.color());
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    // IDAT chunks of at most 1 MiB: any decoder joins them, and no chunk nears the format's
    // 2^31 - 1 byte limit, whatever the image's size.
    for chunk in data.chunks(1 << 20) {
        writer.write_chunk(png::chunk::IDAT, chunk)?;
    }
    writer.finish()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: DecodeLimits = DecodeLimits {
        max_dimension: 4096,
        max_pixels: 4_000_000,
    };

    /// A valid PNG header (signature + IHDR) claiming the given size, with no pixel data.
    pub(crate) fn png_header_only(width: u32, height: u32) -> Vec<u8> {
        let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(b"IHDR");
        ihdr.extend_from_slice(&width.to_be_bytes());
        ihdr.extend_from_slice(&height.to_be_bytes());
        ihdr.extend_from_slice(&[8, 6, 0, 0, 0]);
        bytes.extend_from_slice(&13u32.to_be_bytes());
        bytes.extend_from_slice(&ihdr);
        bytes.extend_from_slice(&crc32(&ihdr).to_be_bytes());
        // An empty IDAT chunk: decoders read up to the first image data before reporting the size.
        bytes.extend_from_slice(&0u32.to_be_bytes());
        bytes.extend_from_slice(b"IDAT");
        bytes.extend_from_slice(&crc32(b"IDAT").to_be_bytes());
        bytes
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for byte in data {
            crc ^= u32::from(*byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    /// A noisy image big enough for many bands and several IDAT chunks decodes back to the
    /// same pixels, with and without its alpha channel.
    #[test]
    fn large_outputs_decode_to_the_pixels_encoded() {
        let mut state = 0x9e37_79b9u32;
        let mut noise = || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state >> 24) as u8
        };
        let opaque = RgbaImage::from_fn(1200, 1000, |_, _| image::Rgba([noise(), noise(), noise(), 255]));
        let mut translucent = opaque.clone();
        translucent.put_pixel(3, 4, image::Rgba([1, 2, 3, 4]));
        for (name, image, color) in [
            ("opaque", &opaque, image::ColorType::Rgb8),
            ("translucent", &translucent, image::ColorType::Rgba8),
        ] {
            let png = encode_rgba_png(image).unwrap();
            let idat_chunks = png.windows(4).filter(|window| window == b"IDAT").count();
            assert!(
                idat_chunks >= 3,
                "{name}: {idat_chunks} IDAT chunks in {} bytes",
                png.len()
            );
            let decoded = image::load_from_memory(&png).unwrap();
            assert_eq!(decoded.color(), color, "{name}");
            assert_eq!(&decoded.to_rgba8(), image, "{name}");
        }
    }

    #[test]
    fn sniffing_uses_signatures_only() {
        assert_eq!(SniffedFormat::sniff(b"\x89PNG\r\n\x1a\nrest"), Some(SniffedFormat::Png));
        assert_eq!(
            SniffedFormat::sniff(&[0xFF, 0xD8, 0xFF, 0xE0]),
            Some(SniffedFormat::Jpeg)
        );
        assert_eq!(SniffedFormat::sniff(b"RIFF\0\0\0\0WEBPVP8 "), Some(SniffedFormat::WebP));
        assert_eq!(SniffedFormat::sniff(b"GIF89a"), None);
        assert_eq!(SniffedFormat::sniff(b"<svg"), None);
        assert!(matches!(
            decode_rgba(b"<html>", LIMITS),
            Err(DecodeError::UnknownFormat)
        ));
    }

    #[test]
    fn header_limits_refuse_bombs_from_the_header_alone() {
        // 100000x100000 would need 40 GB as RGBA; the header is 33 bytes and holds no pixels.
        let bomb = png_header_only(60_000, 60_000);
        assert!(
            matches!(probe(&bomb, LIMITS), Err(DecodeError::TooWide { .. })),
            "{:?}",
            probe(&bomb, LIMITS)
        );
        assert!(matches!(decode_rgba(&bomb, LIMITS), Err(DecodeError::TooWide { .. })));
        let too_many = png_header_only(4000, 4000);
        let result = decode_rgba(&too_many, LIMITS);
        assert!(
            matches!(result, Err(DecodeError::TooManyPixels { pixels: 16_000_000, .. })),
            "{result:?}"
        );
        let fine = png_header_only(64, 32);
        assert_eq!(
            probe(&fine, LIMITS).unwrap(),
            ImageHeader {
                format: SniffedFormat::Png,
                width: 64,
                height: 32
            }
        );
        // The header alone is fine, but there are no pixels: decoding must fail cleanly.
        assert!(matches!(decode_rgba(&fine, LIMITS), Err(DecodeError::Corrupt(_))));
    }

    /// A header over the limits is reported with its real size, never `0x0`.
    #[test]
    fn oversized_headers_report_their_real_dimensions() {
        let png = png_header_only(60_000, 50_000);
        let jpeg = jpeg_declaring(60_000, 50_000);
        let webp = webp_lossless_header(16_000, 12_000);
        for (name, bytes, width, height) in [
            ("png", png, 60_000, 50_000),
            ("jpeg", jpeg, 60_000, 50_000),
            ("webp", webp, 16_000, 12_000),
        ] {
            for result in [probe(&bytes, LIMITS).map(drop), decode_rgba(&bytes, LIMITS).map(drop)] {
                let error = result.expect_err(name);
                assert_eq!(
                    error.to_string(),
                    format!("is {width}x{height}, larger than the limit of 4096 pixels per side"),
                    "{name}"
                );
            }
        }
    }

    /// A real 8x8 baseline JPEG whose SOF0 frame header is patched to declare another size.
    fn jpeg_declaring(width: u16, height: u16) -> Vec<u8> {
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new(&mut jpeg)
            .encode(&[128u8; 8 * 8 * 3], 8, 8, image::ExtendedColorType::Rgb8)
            .expect("encode jpeg");
        let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).expect("SOF0 marker");
        // Marker (2), length (2), precision (1), then height and width, big-endian.
        jpeg[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
        jpeg[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
        jpeg
    }

    /// A lossless WebP (VP8L) header declaring the given size (at most 16384 per side).
    fn webp_lossless_header(width: u32, height: u32) -> Vec<u8> {
        let bits = (width - 1) | ((height - 1) << 14);
        let mut chunk = vec![0x2F];
        chunk.extend_from_slice(&bits.to_le_bytes());
        chunk.extend_from_slice(&[0; 5]);
        let mut bytes = b"RIFF".to_vec();
        bytes.extend_from_slice(&(4 + 8 + chunk.len() as u32).to_le_bytes());
        bytes.extend_from_slice(b"WEBPVP8L");
        bytes.extend_from_slice(&(chunk.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&chunk);
        bytes
    }

    #[test]
    fn png_round_trip_and_opaque_images_drop_alpha() {
        let image = RgbaImage::from_fn(37, 11, |x, y| image::Rgba([x as u8, y as u8, 7, 255]));
        let bytes = encode_rgba_png(&image).unwrap();
        let header = probe(&bytes, LIMITS).unwrap();
        assert_eq!((header.width, header.height), (37, 11));
        let decoded = decode_rgba(&bytes, LIMITS).unwrap();
        assert_eq!(decoded, image);
        let reader = png::Decoder::new(Cursor::new(&bytes)).read_info().unwrap();
        assert_eq!(reader.info().color_type, png::ColorType::Rgb);
    }

    #[test]
    fn jpeg_exif_orientation_is_applied() {
        // A 2x1 JPEG (left red, right blue) tagged "rotate 90° clockwise" must decode as 1x2.
        let source = image::RgbImage::from_fn(16, 8, |x, _| {
            if x < 8 {
                image::Rgb([255, 0, 0])
            } else {
                image::Rgb([0, 0, 255])
            }
        });
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95)
            .encode_image(&source)
            .unwrap();
        let tagged = insert_exif_orientation(&jpeg, 6);
        let decoded = decode_rgba(&tagged, LIMITS).unwrap();
        assert_eq!(decoded.dimensions(), (8, 16));
        // After a clockwise quarter turn the left (red) half is on top.
        let top = decoded.get_pixel(4, 2);
        let bottom = decoded.get_pixel(4, 13);
        assert!(top[0] > 200 && top[2] < 60, "top {top:?}");
        assert!(bottom[2] > 200 && bottom[0] < 60, "bottom {bottom:?}");
    }

    /// Inserts an APP1 EXIF segment with one Orientation tag right after SOI.
    fn insert_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
        let mut tiff = Vec::new();
        tiff.extend_from_slice(b"MM\0\x2a\0\0\0\x08"); // big-endian TIFF, IFD at offset 8
        tiff.extend_from_slice(&1u16.to_be_bytes()); // one entry
        tiff.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation
        tiff.extend_from_slice(&3u16.to_be_bytes()); // SHORT
        tiff.extend_from_slice(&1u32.to_be_bytes()); // count
        tiff.extend_from_slice(&orientation.to_be_bytes());
        tiff.extend_from_slice(&[0, 0]);
        tiff.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
        let mut app1 = b"Exif\0\0".to_vec();
        app1.extend_from_slice(&tiff);
        let mut out = jpeg[..2].to_vec();
        out.extend_from_slice(&[0xFF, 0xE1]);
        out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
        out.extend_from_slice(&app1);
        out.extend_from_slice(&jpeg[2..]);
        out
    }
}
