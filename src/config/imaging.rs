//! The imaging section: preview size, normal-map strength and the composite's feather radius.
//!
//! This file owns [`ImagingConfig`] and its parsing; the imaging steps receive it as a value.

use super::{ConfigError, Vars};

/// Output settings of the imaging steps.
#[derive(Debug, Clone, PartialEq)]
pub struct ImagingConfig {
    /// Side of the square preview (`PREVIEW_SIZE`, default 512).
    pub preview_size: u32,
    /// Strength of the normal map's slopes (`NORMAL_MAP_STRENGTH`, default 2.0).
    pub normal_strength: f32,
    /// Feather radius of the composite seam in pixels of the base (`FEATHER_RADIUS`, default 4).
    pub feather_radius: u32,
    /// zlib level of the output PNGs (`PNG_COMPRESSION_LEVEL`, 1..=9, default 3): lower spends
    /// CDN bytes to save CPU, higher the reverse. Pixels are the same at every level.
    pub png_level: u32,
}

impl Default for ImagingConfig {
    fn default() -> Self {
        Self {
            preview_size: 512,
            normal_strength: 2.0,
            feather_radius: 4,
            png_level: crate::imaging::codec::DEFAULT_PNG_LEVEL,
        }
    }
}

impl ImagingConfig {
    pub(super) fn from_vars(vars: &Vars<'_>) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        Ok(Self {
            preview_size: vars.parse_or("PREVIEW_SIZE", defaults.preview_size, |v| (16..=4096).contains(v))?,
            normal_strength: vars.parse_or("NORMAL_MAP_STRENGTH", defaults.normal_strength, |v| {
                v.is_finite() && *v > 0.0 && *v <= 100.0
            })?,
            feather_radius: vars.parse_or("FEATHER_RADIUS", defaults.feather_radius, |v| *v <= 256)?,
            png_level: vars.parse_or("PNG_COMPRESSION_LEVEL", defaults.png_level, |v| (1..=9).contains(v))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::config;

    #[test]
    fn the_png_level_defaults_to_3_and_must_be_a_zlib_level() {
        assert_eq!(config(&[]).unwrap().imaging.png_level, 3);
        assert_eq!(config(&[("PNG_COMPRESSION_LEVEL", "1")]).unwrap().imaging.png_level, 1);
        for bad in ["0", "10", "fast"] {
            let error = config(&[("PNG_COMPRESSION_LEVEL", bad)]).unwrap_err();
            assert_eq!(error.var, "PNG_COMPRESSION_LEVEL", "{bad}");
        }
    }
}
