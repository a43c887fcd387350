//! Quality evaluation of the fill engines on procedural ground truth.
//!
//! This module owns the metrics and the report: for every texture and mask kind from
//! `textures` it punches a hole, fills it with each engine and compares the fill with the
//! original pixels. It measures PSNR and SSIM over the hole's bounding box, a texture
//! statistics distance (half the L1 distance between gradient-magnitude histograms of the
//! filled and original hole, so 0 is identical and 1 is disjoint) and a detail ratio
//! (Laplacian energy of the fill over that of the original inside the hole).
//! It must not do IO; callers print or store the Markdown it renders.

use std::fmt::Write as _;
use std::time::Instant;

use image::{GrayImage, RgbaImage};

use super::textures::{MaskKind, TextureKind, mask, texture};
use super::{PatchMatchParams, patchmatch_fill, telea_fill};

/// Neighbourhood radius used for the Telea baseline.
const TELEA_RADIUS: u32 = 5;

/// One texture with one hole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvalCase {
    pub texture: TextureKind,
    pub mask: MaskKind,
}

/// The engines under evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Telea,
    PatchMatch,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Telea => "telea",
            Algorithm::PatchMatch => "patchmatch",
        }
    }
}

/// The measurements of one engine on one case.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalRow {
    pub case: EvalCase,
    pub algorithm: Algorithm,
    /// Fraction of the image inside the hole.
    pub hole_fraction: f64,
    /// PSNR in dB over the RGB channels of the hole's bounding box; 99 when identical.
    pub psnr: f64,
    /// Mean SSIM of luma over the hole's bounding box.
    pub ssim: f64,
    /// Half the L1 distance of gradient-magnitude histograms inside the hole, in 0..=1.
    pub texture_distance: f64,
    /// Laplacian energy of the fill divided by that of the original, inside the hole.
    pub detail_ratio: f64,
    /// Wall-clock time of the fill in milliseconds; the only non-deterministic figure.
    pub millis: f64,
    /// `None` when the engine refused the case; then the metrics above are zero.
    pub error: Option<String>,
}

/// PatchMatch judged against Telea on one case, with the targets the engine must meet.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalComparison {
    pub case: EvalCase,
    /// PatchMatch texture distance over Telea's; the target is at most 1/3.
    pub texture_ratio: f64,
    /// PatchMatch detail ratio; the target is 0.8..=1.2.
    pub detail_ratio: f64,
    /// PatchMatch SSIM minus Telea's; the target is at least -0.03.
    pub ssim_delta: f64,
    pub meets_targets: bool,
}

/// Every row of one evaluation run.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalReport {
    pub size: u32,
    pub seed: u64,
    pub rows: Vec<EvalRow>,
}

impl EvalReport {
    /// Pairs the PatchMatch and Telea rows of each case.
    pub fn comparisons(&self) -> Vec<EvalComparison> {
        let mut comparisons = Vec::new();
        for patchmatch in self.rows.iter().filter(|row| row.algorithm == Algorithm::PatchMatch) {
            let telea = self
                .rows
                .iter()
                .find(|row| row.algorithm == Algorithm::Telea && row.case == patchmatch.case);
            let Some(telea) = telea else { continue };
            let texture_ratio = patchmatch.texture_distance / telea.texture_distance.max(1e-9);
            let ssim_delta = patchmatch.ssim - telea.ssim;
            let meets_targets = patchmatch.error.is_none()
                && texture_ratio <= 1.0 / 3.0
                && (0.8..=1.2).contains(&patchmatch.detail_ratio)
                && ssim_delta >= -0.03;
            comparisons.push(EvalComparison {
                case: patchmatch.case,
                texture_ratio,
                detail_ratio: patchmatch.detail_ratio,
                ssim_delta,
                meets_targets,
            });
        }
        comparisons
    }

    /// Renders the measurements and the target check as two Markdown tables.
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "Inpainting evaluation, {0}x{0}, seed {1}\n", self.size, self.seed);
        out.push_str("| texture | mask | hole % | algorithm | PSNR dB | SSIM | texture dist | detail ratio | ms |\n");
        out.push_str("|---|---|---:|---|---:|---:|---:|---:|---:|\n");
        for row in &self.rows {
            let _ = writeln!(
                out,
                "| {} | {} | {:.1} | {} | {:.2} | {:.3} | {:.3} | {:.2} | {:.0} |{}",
                row.case.texture.name(),
                row.case.mask.name(),
                row.hole_fraction * 100.0,
                row.algorithm.name(),
                row.psnr,
                row.ssim,
                row.texture_distance,
                row.detail_ratio,
                row.millis,
                row.error.as_deref().map(|e| format!(" error: {e}")).unwrap_or_default(),
            );
        }
        out.push_str(
            "\n| texture | mask | tex dist PM/Telea (<= 0.333) | detail PM (0.8..1.2) | SSIM PM - Telea (>= -0.03) | met |\n",
        );
        out.push_str("|---|---|---:|---:|---:|---|\n");
        for comparison in self.comparisons() {
            let _ = writeln!(
                out,
                "| {} | {} | {:.3} | {:.2} | {:+.3} | {} |",
                comparison.case.texture.name(),
                comparison.case.mask.name(),
                comparison.texture_ratio,
                comparison.detail_ratio,
                comparison.ssim_delta,
                if comparison.meets_targets { "yes" } else { "NO" },
            );
        }
        out
    }
}

/// Runs both engines on every texture and mask kind at `size` x `size`.
pub fn run_eval(size: u32, seed: u64) -> EvalReport {
    let params = PatchMatchParams {
        seed,
        ..PatchMatchParams::default()
    };
    let mut rows = Vec::new();
    for texture_kind in TextureKind::ALL {
        let original = texture(texture_kind, size, size, seed);
        for mask_kind in MaskKind::ALL {
            let hole = mask(mask_kind, size, size, seed);
            let case = EvalCase {
                texture: texture_kind,
                mask: mask_kind,
            };
            for algorithm in [Algorithm::Telea, Algorithm::PatchMatch] {
                let started = Instant::now();
                let result = match algorithm {
                    Algorithm::Telea => telea_fill(&original, &hole, TELEA_RADIUS),
                    Algorithm::PatchMatch => patchmatch_fill(&original, &hole, &params),
                };
                let millis = started.elapsed().as_secs_f64() * 1000.0;
                let row = match result {
                    Ok(outcome) => measure(case, algorithm, &original, &outcome.image, &hole, millis),
                    Err(error) => EvalRow {
                        case,
                        algorithm,
                        hole_fraction: super::textures::hole_fraction(&hole),
                        psnr: 0.0,
                        ssim: 0.0,
                        texture_distance: 0.0,
                        detail_ratio: 0.0,
                        millis,
                        error: Some(error.to_string()),
                    },
                };
                rows.push(row);
            }
        }
    }
    EvalReport { size, seed, rows }
}

/// Computes every metric of one fill against the original.
fn measure(
    case: EvalCase,
    algorithm: Algorithm,
    original: &RgbaImage,
    filled: &RgbaImage,
    hole: &GrayImage,
    millis: f64,
) -> EvalRow {
    let metrics = Metrics::new(original, filled, hole);
    EvalRow {
        case,
        algorithm,
        hole_fraction: super::textures::hole_fraction(hole),
        psnr: metrics.psnr(),
        ssim: metrics.ssim(),
        texture_distance: metrics.texture_distance(),
        detail_ratio: metrics.detail_ratio(),
        millis,
        error: None,
    }
}

/// Luma planes and the hole, shared by the metrics.
struct Metrics<'a> {
    original: &'a RgbaImage,
    filled: &'a RgbaImage,
    width: usize,
    height: usize,
    original_luma: Vec<f64>,
    filled_luma: Vec<f64>,
    hole: Vec<bool>,
    /// Inclusive bounding box of the hole: (x0, y0, x1, y1); `None` for an empty hole.
    bounds: Option<(usize, usize, usize, usize)>,
}

impl<'a> Metrics<'a> {
    fn new(original: &'a RgbaImage, filled: &'a RgbaImage, hole: &GrayImage) -> Metrics<'a> {
        let (width, height) = (original.width() as usize, original.height() as usize);
        let luma = |image: &RgbaImage| -> Vec<f64> {
            image
                .pixels()
                .map(|p| 0.299 * f64::from(p[0]) + 0.587 * f64::from(p[1]) + 0.114 * f64::from(p[2]))
                .collect()
        };
        let flags: Vec<bool> = hole.as_raw().iter().map(|&value| value >= 128).collect();
        let mut bounds: Option<(usize, usize, usize, usize)> = None;
        for (index, _) in flags.iter().enumerate().filter(|(_, inside)| **inside) {
            let (x, y) = (index % width, index / width);
            bounds = Some(match bounds {
                None => (x, y, x, y),
                Some((x0, y0, x1, y1)) => (x0.min(x), y0.min(y), x1.max(x), y1.max(y)),
            });
        }
        Metrics {
            original,
            filled,
            width,
            height,
            original_luma: luma(original),
            filled_luma: luma(filled),
            hole: flags,
            bounds,
        }
    }

    fn psnr(&self) -> f64 {
        let Some((x0, y0, x1, y1)) = self.bounds else {
            return 99.0;
        };
        let mut squared = 0.0;
        let mut count = 0.0;
        for y in y0..=y1 {
            for x in x0..=x1 {
                let a = self.original.get_pixel(x as u32, y as u32);
                let b = self.filled.get_pixel(x as u32, y as u32);
                for channel in 0..3 {
                    let d = f64::from(a[channel]) - f64::from(b[channel]);
                    squared += d * d;
                    count += 1.0;
                }
            }
        }
        let mse = squared / count;
        if mse <= 0.0 {
            99.0
        } else {
            (10.0 * (255.0 * 255.0 / mse).log10()).min(99.0)
        }
    }

    /// Mean SSIM over 8x8 luma windows with stride 4 inside the bounding box. Boxes smaller
    /// than a window are measured as one window.
    fn ssim(&self) -> f64 {
        let Some((x0, y0, x1, y1)) = self.bounds else {
            return 1.0;
        };
        let (c1, c2) = ((0.01f64 * 255.0).powi(2), (0.03f64 * 255.0).powi(2));
        let window = 8usize;
        let starts = |low: usize, high: usize| -> Vec<usize> {
            let span = high - low + 1;
            if span <= window {
                vec![low]
            } else {
                (low..=high + 1 - window).step_by(4).collect()
            }
        };
        let mut total = 0.0;
        let mut windows = 0.0;
        for &wy in &starts(y0, y1) {
            for &wx in &starts(x0, x1) {
                let (mut sa, mut sb, mut saa, mut sbb, mut sab, mut n) = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
                for y in wy..(wy + window).min(self.height) {
                    for x in wx..(wx + window).min(self.width) {
                        let a = self.original_luma[y * self.width + x];
                        let b = self.filled_luma[y * self.width + x];
                        sa += a;
                        sb += b;
                        saa += a * a;
                        sbb += b * b;
                        sab += a * b;
                        n += 1.0;
                    }
                }
                let (ma, mb) = (sa / n, sb / n);
                let (va, vb) = (saa / n - ma * ma, sbb / n - mb * mb);
                let cov = sab / n - ma * mb;
                total += ((2.0 * ma * mb + c1) * (2.0 * cov + c2)) / ((ma * ma + mb * mb + c1) * (va + vb + c2));
                windows += 1.0;
            }
        }
        total / windows
    }

    /// Central-difference gradient magnitude of a luma plane at (x, y), clamped at borders.
    fn gradient(&self, luma: &[f64], x: usize, y: usize) -> f64 {
        let at = |x: usize, y: usize| luma[y * self.width + x];
        let gx = at((x + 1).min(self.width - 1), y) - at(x.saturating_sub(1), y);
        let gy = at(x, (y + 1).min(self.height - 1)) - at(x, y.saturating_sub(1));
        0.5 * (gx * gx + gy * gy).sqrt()
    }

    fn texture_distance(&self) -> f64 {
        const BINS: usize = 32;
        const TOP: f64 = 64.0;
        let histogram = |luma: &[f64]| -> Vec<f64> {
            let mut bins = vec![0.0; BINS];
            let mut count = 0.0;
            for (index, _) in self.hole.iter().enumerate().filter(|(_, inside)| **inside) {
                let magnitude = self.gradient(luma, index % self.width, index / self.width);
                let bin = ((magnitude / TOP * BINS as f64) as usize).min(BINS - 1);
                bins[bin] += 1.0;
                count += 1.0;
            }
            bins.iter().map(|&b| b / f64::max(count, 1.0)).collect()
        };
        let a = histogram(&self.original_luma);
        let b = histogram(&self.filled_luma);
        0.5 * a.iter().zip(&b).map(|(p, q)| (p - q).abs()).sum::<f64>()
    }

    fn detail_ratio(&self) -> f64 {
        let energy = |luma: &[f64]| -> f64 {
            let at = |x: usize, y: usize| luma[y * self.width + x];
            let mut sum = 0.0;
            for (index, _) in self.hole.iter().enumerate().filter(|(_, inside)| **inside) {
                let (x, y) = (index % self.width, index / self.width);
                let laplacian = at((x + 1).min(self.width - 1), y)
                    + at(x.saturating_sub(1), y)
                    + at(x, (y + 1).min(self.height - 1))
                    + at(x, y.saturating_sub(1))
                    - 4.0 * at(x, y);
                sum += laplacian * laplacian;
            }
            sum
        };
        energy(&self.filled_luma) / energy(&self.original_luma).max(1e-9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patchmatch_beats_telea_on_texture_statistics_in_every_case() {
        let report = run_eval(256, 7);
        assert_eq!(report.rows.len(), TextureKind::ALL.len() * MaskKind::ALL.len() * 2);
        assert!(report.rows.iter().all(|row| row.error.is_none()));
        let comparisons = report.comparisons();
        assert_eq!(comparisons.len(), 12);
        for comparison in &comparisons {
            let label = format!("{} / {}", comparison.case.texture.name(), comparison.case.mask.name());
            assert!(
                comparison.texture_ratio < 0.75,
                "{label}: texture ratio {:.3}",
                comparison.texture_ratio
            );
            assert!(
                (0.5..=1.5).contains(&comparison.detail_ratio),
                "{label}: detail ratio {:.2}",
                comparison.detail_ratio
            );
            assert!(
                comparison.ssim_delta > -0.05,
                "{label}: SSIM delta {:.3}",
                comparison.ssim_delta
            );
        }
        // The regular textures are where exemplar fill must clearly win.
        let regular_met = comparisons
            .iter()
            .filter(|c| c.case.texture == TextureKind::Fabric || c.case.texture == TextureKind::Wood)
            .all(|c| c.meets_targets);
        assert!(regular_met, "{}", report.to_markdown());
    }

    /// Issue 3: the thin veins of marble washed out of the fill on small and thin holes,
    /// which missed the texture and detail targets at the size and seed of the report.
    #[test]
    fn issue_3_marble_meets_the_targets_at_512_with_seed_7() {
        let (size, seed) = (512, 7);
        let original = texture(TextureKind::Marble, size, size, seed);
        let params = PatchMatchParams {
            seed,
            ..PatchMatchParams::default()
        };
        let mut rows = Vec::new();
        for mask_kind in MaskKind::ALL {
            let hole = mask(mask_kind, size, size, seed);
            let case = EvalCase {
                texture: TextureKind::Marble,
                mask: mask_kind,
            };
            let telea = telea_fill(&original, &hole, TELEA_RADIUS).expect("telea fills");
            let patchmatch = patchmatch_fill(&original, &hole, &params).expect("patchmatch fills");
            rows.push(measure(case, Algorithm::Telea, &original, &telea.image, &hole, 0.0));
            rows.push(measure(
                case,
                Algorithm::PatchMatch,
                &original,
                &patchmatch.image,
                &hole,
                0.0,
            ));
        }
        let report = EvalReport { size, seed, rows };
        assert!(
            report.comparisons().iter().all(|comparison| comparison.meets_targets),
            "{}",
            report.to_markdown()
        );
    }

    #[test]
    fn metrics_of_a_perfect_fill_are_ideal() {
        let original = texture(TextureKind::Brick, 64, 64, 1);
        let hole = mask(MaskKind::LargeBlob, 64, 64, 1);
        let case = EvalCase {
            texture: TextureKind::Brick,
            mask: MaskKind::LargeBlob,
        };
        let row = measure(case, Algorithm::Telea, &original, &original, &hole, 0.0);
        assert_eq!(row.psnr, 99.0);
        assert!((row.ssim - 1.0).abs() < 1e-9);
        assert_eq!(row.texture_distance, 0.0);
        assert!((row.detail_ratio - 1.0).abs() < 1e-9);
    }

    #[test]
    fn markdown_has_a_row_per_measurement_and_per_case() {
        let report = run_eval(64, 2);
        let markdown = report.to_markdown();
        let table_rows = markdown
            .lines()
            .filter(|line| line.starts_with("| ") && !line.starts_with("| texture"))
            .count();
        assert_eq!(table_rows, report.rows.len() + report.comparisons().len());
        assert!(markdown.contains("| fabric | stroke 8% |"));
    }
}
