//! The post-processing benchmark of one 2048² render, shared by the criterion bench
//! (`benches/postprocess.rs`) and `design-render bench-postprocess`, which
//! `scripts/bench-postprocess.sh` runs interleaved with libvips (`benches/sharp/bench.js`) on
//! the same input files. Only in builds with the `eval` feature.

use image::{GrayImage, RgbaImage};

use super::inpaint::textures::{MaskKind, TextureKind, mask, texture};
use super::{AssetSpec, EncodeError, Fit, RenderedAssets};

/// Side of the base, the composite and every 2048² output.
const SIDE: u32 = 2048;

/// What the worker makes of a 2048² base by default, with both maps: the high-res image is
/// the composite itself, a 512² preview, normal and roughness maps at 2048².
pub const SPEC: AssetSpec = AssetSpec {
    high_res: (SIDE, SIDE),
    preview: 512,
    fit: Fit::Inside,
    normal_map: true,
    roughness_map: true,
    normal_strength: 2.0,
    png_level: super::codec::DEFAULT_PNG_LEVEL,
};

/// The worker's default feather radius.
pub const FEATHER_RADIUS: u32 = 4;

/// A 2048² brick base, a 1024² wood image standing for the provider's answer and a 15% blob
/// mask, all from seeded generators.
pub struct Inputs {
    pub base: RgbaImage,
    pub generated: RgbaImage,
    pub hole: GrayImage,
}

impl Inputs {
    pub fn generate() -> Self {
        Self {
            base: texture(TextureKind::Brick, SIDE, SIDE, 7),
            generated: texture(TextureKind::Wood, SIDE / 2, SIDE / 2, 9),
            hole: mask(MaskKind::LargeBlob, SIDE, SIDE, 7),
        }
    }

    /// Every post-processing step of one render, as the pipeline runs them: upscale, feather,
    /// blend, then [`super::render_assets`] with `spec` (normally [`SPEC`]).
    pub fn postprocess(&self, spec: &AssetSpec) -> Result<RenderedAssets, EncodeError> {
        let composite = super::composite::compose(&self.base, self.generated.clone(), Some(&self.hole), FEATHER_RADIUS);
        super::render_assets(&composite, spec)
    }
}
