//! PNG encoding in independent row bands, on every core.
//!
//! A PNG's pixel data is one zlib stream, but a deflate stream may be cut anywhere a block ends
//! on a byte boundary. So the rows are split into bands of about [`BAND_BYTES`] of filtered
//! data; each band is filtered and deflated on its own (the last one finishes the stream, the
//! others end with a sync flush), and the pieces are joined behind one zlib header, with an
//! Adler-32 combined from the bands' own. A band only loses the matches it could have found in
//! the previous band's last 32 KiB, a fraction of a percent of the output.
//!
//! Each row gets the filter whose output has the smallest sum of absolute values (as signed
//! bytes), the heuristic libpng and the `png` crate use. Rows are read straight from the
//! source samples: an RGBA source encoded as RGB drops its alpha while it is filtered, with no
//! intermediate copy of the image.

use flate2::{Compress, Compression, FlushCompress, Status};
use rayon::prelude::*;

/// Filtered bytes per band: large enough that the lost look-back does not matter, small
/// enough that a 2048² image gives both cores a dozen bands each.
const BAND_BYTES: usize = 512 * 1024;

/// The samples to encode: `source_channels` bytes per pixel in the buffer, of which the first
/// `channels` are written (4 → 3 drops alpha).
#[derive(Debug, Clone, Copy)]
pub struct Rows<'a> {
    pub samples: &'a [u8],
    pub width: usize,
    pub height: usize,
    pub source_channels: usize,
    pub channels: usize,
}

impl Rows<'_> {
    fn row_bytes(&self) -> usize {
        self.width * self.channels
    }

    /// Row `y` with only the written channels, into `out`.
    fn copy_row(&self, y: usize, out: &mut [u8]) {
        let stride = self.width * self.source_channels;
        let row = &self.samples[y * stride..(y + 1) * stride];
        if self.source_channels == self.channels {
            out.copy_from_slice(row);
        } else {
            for (to, from) in out
                .chunks_exact_mut(self.channels)
                .zip(row.chunks_exact(self.source_channels))
            {
                to.copy_from_slice(&from[..self.channels]);
            }
        }
    }
}

/// The zlib stream of the PNG's image data (the content of its IDAT chunks).
pub fn zlib_stream(rows: Rows<'_>, level: u32) -> std::io::Result<Vec<u8>> {
    let row_bytes = rows.row_bytes();
    let rows_per_band = (BAND_BYTES / (row_bytes + 1)).clamp(1, rows.height.max(1));
    let bands: Vec<(usize, usize)> = (0..rows.height)
        .step_by(rows_per_band)
        .map(|start| (start, (start + rows_per_band).min(rows.height)))
        .collect();
    let last = bands.len().saturating_sub(1);
    let pieces: Vec<(Vec<u8>, u32, usize)> = bands
        .par_iter()
        .enumerate()
        .map(|(index, &(start, end))| {
            let filtered = filter_band(rows, start, end);
            let adler = simd_adler32::adler32(&filtered.as_slice());
            let deflated = deflate(&filtered, level, index == last)?;
            Ok((deflated, adler, filtered.len()))
        })
        .collect::<std::io::Result<_>>()?;

    let total: usize = pieces.iter().map(|(deflated, ..)| deflated.len()).sum();
    let mut stream = Vec::with_capacity(total + 6);
    // CMF: deflate with a 32 KiB window; FLG: default compression, FCHECK making it a
    // multiple of 31.
    stream.extend_from_slice(&[0x78, 0x9c]);
    let mut adler = 1;
    for (deflated, band_adler, length) in &pieces {
        stream.extend_from_slice(deflated);
        adler = adler32_combine(adler, *band_adler, *length);
    }
    if pieces.is_empty() {
        // No rows: still a valid (empty) stream.
        stream.extend_from_slice(&deflate(&[], level, true)?);
    }
    stream.extend_from_slice(&adler.to_be_bytes());
    Ok(stream)
}

/// Rows `start..end`, each behind its filter type byte.
fn filter_band(rows: Rows<'_>, start: usize, end: usize) -> Vec<u8> {
    let row_bytes = rows.row_bytes();
    let bpp = rows.channels;
    let mut out = Vec::with_capacity((end - start) * (row_bytes + 1));
    let mut previous = vec![0u8; row_bytes];
    let mut current = vec![0u8; row_bytes];
    if start > 0 {
        rows.copy_row(start - 1, &mut previous);
    }
    // One scratch row per filter type: None, Sub, Up, Average, Paeth.
    let mut candidates = vec![0u8; 5 * row_bytes];
    for y in start..end {
        rows.copy_row(y, &mut current);
        let (kind, best) = best_filter(&current, &previous, bpp, &mut candidates);
        out.push(kind);
        out.extend_from_slice(best);
        std::mem::swap(&mut previous, &mut current);
    }
    out
}

/// Filters `row` every way and returns the type and bytes with the least sum of magnitudes.
/// The first pixel has no left neighbour (its left and upper-left are 0); past it the loops
/// are branch-free, so the compiler vectorises them.
fn best_filter<'a>(row: &[u8], above: &[u8], bpp: usize, candidates: &'a mut [u8]) -> (u8, &'a [u8]) {
    let n = row.len();
    let (none, rest) = candidates.split_at_mut(n);
    let (sub, rest) = rest.split_at_mut(n);
    let (up, rest) = rest.split_at_mut(n);
    let (average, paeth) = rest.split_at_mut(n);
    none.copy_from_slice(row);
    let head = bpp.min(n);
    for i in 0..head {
        sub[i] = row[i];
        up[i] = row[i].wrapping_sub(above[i]);
        average[i] = row[i].wrapping_sub(above[i] / 2);
        // Paeth with left = upper-left = 0 predicts `above`.
        paeth[i] = row[i].wrapping_sub(above[i]);
    }
    let (current, left) = (&row[head..], &row[..n - head]);
    let (upper, upper_left) = (&above[head..], &above[..n - head]);
    for (i, (((&x, &a), &b), &c)) in current.iter().zip(left).zip(upper).zip(upper_left).enumerate() {
        sub[head + i] = x.wrapping_sub(a);
        up[head + i] = x.wrapping_sub(b);
        average[head + i] = x.wrapping_sub(((u16::from(a) + u16::from(b)) >> 1) as u8);
        paeth[head + i] = x.wrapping_sub(paeth_predictor(a, b, c));
    }
    let mut best = (0u8, u64::MAX);
    for kind in 0..5u8 {
        let value = magnitude(candidates_of(candidates, n, usize::from(kind)));
        if value < best.1 {
            best = (kind, value);
        }
    }
    (best.0, candidates_of(candidates, n, usize::from(best.0)))
}

/// The sum of the bytes' magnitudes read as signed (0 and 255 both cost little).
fn magnitude(bytes: &[u8]) -> u64 {
    // Sums of 256 magnitudes fit in u16 lanes (256 * 128 = 32768); the chunks vectorise.
    bytes
        .chunks(256)
        .map(|chunk| {
            let sum: u16 = chunk.iter().map(|b| u16::from((*b as i8).unsigned_abs())).sum();
            u64::from(sum)
        })
        .sum()
}

fn candidates_of(candidates: &[u8], n: usize, kind: usize) -> &[u8] {
    &candidates[kind * n..(kind + 1) * n]
}

/// The PNG Paeth predictor: whichever of left, above and upper-left is closest to
/// left + above - upper-left (ties in that order). Written as selects, which vectorise.
#[inline]
fn paeth_predictor(left: u8, above: u8, upper_left: u8) -> u8 {
    let (a, b, c) = (i16::from(left), i16::from(above), i16::from(upper_left));
    // p - a = b - c, p - b = a - c, p - c = a + b - 2c.
    let (pa, pb, pc) = ((b - c).abs(), (a - c).abs(), (a + b - 2 * c).abs());
    let not_left = if pb <= pc { above } else { upper_left };
    if pa <= pb && pa <= pc { left } else { not_left }
}

/// Raw deflate of one band: a finished stream for the last band, else ending on a byte
/// boundary after a sync flush so the next band's blocks can follow.
fn deflate(data: &[u8], level: u32, last: bool) -> std::io::Result<Vec<u8>> {
    let mut compress = Compress::new(Compression::new(level), false);
    let mut out = Vec::with_capacity(data.len() / 2 + 1024);
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    loop {
        let consumed = usize::try_from(compress.total_in())
            .unwrap_or(usize::MAX)
            .min(data.len());
        let status = compress
            .compress_vec(&data[consumed..], &mut out, flush)
            .map_err(std::io::Error::other)?;
        let all_in = usize::try_from(compress.total_in()).is_ok_and(|total| total == data.len());
        let done = match status {
            Status::StreamEnd => true,
            // A flush is complete once it left spare room in the output.
            Status::Ok | Status::BufError => !last && all_in && out.len() < out.capacity(),
        };
        if done {
            return Ok(out);
        }
        out.reserve(out.capacity().max(64 * 1024));
    }
}

/// The Adler-32 of two pieces joined, from each piece's own checksum and the second's length.
fn adler32_combine(first: u32, second: u32, second_len: usize) -> u32 {
    const MOD: u64 = 65_521;
    let (a1, b1) = (u64::from(first & 0xffff), u64::from(first >> 16));
    let (a2, b2) = (u64::from(second & 0xffff), u64::from(second >> 16));
    let length = second_len as u64 % MOD;
    // a = a1 + a2 - 1; b = b1 + b2 + length * (a1 - 1), all mod 65521.
    let a = (a1 + a2 + MOD - 1) % MOD;
    let b = (b1 + b2 + length * ((a1 + MOD - 1) % MOD)) % MOD;
    ((b << 16) | a) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(len: usize, seed: u32) -> Vec<u8> {
        let mut state = seed.wrapping_mul(2_654_435_761).max(1);
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn the_combined_checksum_is_the_checksum_of_the_whole() {
        let data = noise(300_000, 7);
        for cut in [0, 1, 5552, 65_521, 123_457, 300_000] {
            let (head, tail) = data.split_at(cut);
            assert_eq!(
                adler32_combine(simd_adler32::adler32(&head), simd_adler32::adler32(&tail), tail.len()),
                simd_adler32::adler32(&data.as_slice()),
                "cut at {cut}"
            );
        }
    }

    /// The select form agrees with the PNG specification's predictor on every input.
    #[test]
    fn the_paeth_predictor_matches_the_specification_everywhere() {
        let specification = |a: u8, b: u8, c: u8| {
            let p = i16::from(a) + i16::from(b) - i16::from(c);
            let (pa, pb, pc) = (
                (p - i16::from(a)).abs(),
                (p - i16::from(b)).abs(),
                (p - i16::from(c)).abs(),
            );
            if pa <= pb && pa <= pc {
                a
            } else if pb <= pc {
                b
            } else {
                c
            }
        };
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                for c in 0..=255u8 {
                    assert_eq!(paeth_predictor(a, b, c), specification(a, b, c), "({a}, {b}, {c})");
                }
            }
        }
        assert_eq!(paeth_predictor(101, 50, 67), 101, "pa = pc < pb: left wins");
        assert_eq!(paeth_predictor(50, 101, 67), 101, "pb = pc < pa: above wins");
    }

    /// Many bands, every filter type and a dropped alpha: a stock zlib decoder reads back the
    /// filtered rows exactly, and the bands' joined checksum is the one zlib checks.
    #[test]
    fn banded_streams_inflate_to_the_filtered_rows() {
        use std::io::Read;
        let (width, height) = (300, 2000);
        let mut samples = noise(width * height * 4, 3);
        // Smooth top half (Sub/Up/Paeth win), noisy bottom half (None wins).
        for (index, sample) in samples.iter_mut().take(width * height * 2).enumerate() {
            *sample = ((index / 4) % width) as u8 ^ ((index / 4 / width) as u8 / 3);
        }
        let rows = Rows {
            samples: &samples,
            width,
            height,
            source_channels: 4,
            channels: 3,
        };
        let stream = zlib_stream(rows, 3).unwrap();
        let mut inflated = Vec::new();
        flate2::read::ZlibDecoder::new(stream.as_slice())
            .read_to_end(&mut inflated)
            .expect("a valid zlib stream with a correct checksum");
        assert_eq!(inflated, filter_band(rows, 0, height));
        let kinds: std::collections::BTreeSet<u8> = inflated.chunks_exact(width * 3 + 1).map(|row| row[0]).collect();
        assert!(kinds.len() >= 3, "only filters {kinds:?} were chosen");
    }
}
