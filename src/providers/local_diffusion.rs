//! The local diffusion adapter: an Automatic1111 / Forge server's `POST /sdapi/v1/img2img`
//! used for inpainting, as described in `reference/local-diffusion.md`.
//!
//! It owns the request body (init image, mask in A1111's convention, inpainting parameters,
//! prompt, size), decoding `images[0]`, and the mapping of A1111's error statuses onto
//! [`ProviderError`]; client, timeouts and transport failures are the shared `providers::http`'s.
//! Local generation is free: usage and cost are zero. It must not retry or fall back.
//!
//! Inpainting defaults (each overridable through `LOCAL_DIFFUSION_*`, see
//! [`crate::config::InpaintOverrides`]): `denoising_strength` 0.75, `inpainting_fill` 1
//! (start from the original pixels), `inpaint_full_res` false (whole picture, so the result
//! lines up with the base), `inpaint_full_res_padding` 32, `mask_blur` 4, `steps` 30,
//! `cfg_scale` 7, `sampler_name` "Euler a", `negative_prompt` "" — the reference's minimal
//! inpaint body.

use std::time::{Duration, Instant};

use base64::Engine as _;
use image::{GrayImage, RgbaImage};
use serde::Deserialize;

use super::{Accounting, EditRequest, EditResponse, ImageEditor, ProviderError, Usage, http};
use crate::config::InpaintOverrides;
use crate::error_code::ErrorCode;

pub const NAME: &str = "local-diffusion";

/// Settings of the local diffusion adapter.
#[derive(Debug, Clone)]
pub struct LocalDiffusionSettings {
    /// The server root, e.g. `http://127.0.0.1:7860`.
    pub base_url: url::Url,
    pub connect_timeout: Duration,
    /// Generation holds a global lock on the server, so this is minutes, not seconds.
    pub timeout: Duration,
    pub overrides: InpaintOverrides,
}

/// The effective inpainting parameters.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct InpaintParams {
    pub denoising_strength: f32,
    pub inpainting_fill: u8,
    pub inpaint_full_res: bool,
    pub inpaint_full_res_padding: u32,
    pub mask_blur: u32,
    pub steps: u32,
    pub cfg_scale: f32,
    pub sampler_name: String,
    pub negative_prompt: String,
}

impl Default for InpaintParams {
    fn default() -> Self {
        Self {
            denoising_strength: 0.75,
            inpainting_fill: 1,
            inpaint_full_res: false,
            inpaint_full_res_padding: 32,
            mask_blur: 4,
            steps: 30,
            cfg_scale: 7.0,
            sampler_name: "Euler a".into(),
            negative_prompt: String::new(),
        }
    }
}

impl InpaintParams {
    pub fn with_overrides(overrides: &InpaintOverrides) -> Self {
        let defaults = Self::default();
        Self {
            denoising_strength: overrides.denoising_strength.unwrap_or(defaults.denoising_strength),
            inpainting_fill: overrides.inpainting_fill.unwrap_or(defaults.inpainting_fill),
            inpaint_full_res: overrides.inpaint_full_res.unwrap_or(defaults.inpaint_full_res),
            inpaint_full_res_padding: overrides
                .inpaint_full_res_padding
                .unwrap_or(defaults.inpaint_full_res_padding),
            mask_blur: overrides.mask_blur.unwrap_or(defaults.mask_blur),
            steps: overrides.steps.unwrap_or(defaults.steps),
            cfg_scale: overrides.cfg_scale.unwrap_or(defaults.cfg_scale),
            sampler_name: overrides.sampler_name.clone().unwrap_or(defaults.sampler_name),
            negative_prompt: overrides.negative_prompt.clone().unwrap_or(defaults.negative_prompt),
        }
    }
}

#[derive(Debug)]
pub struct LocalDiffusionEditor {
    client: reqwest::Client,
    endpoint: url::Url,
    params: InpaintParams,
}

impl LocalDiffusionEditor {
    pub fn new(settings: LocalDiffusionSettings) -> Result<Self, reqwest::Error> {
        Ok(Self {
            client: http::client(settings.connect_timeout, settings.timeout)?,
            endpoint: http::endpoint(&settings.base_url, "sdapi/v1/img2img"),
            params: InpaintParams::with_overrides(&settings.overrides),
        })
    }

    pub fn params(&self) -> &InpaintParams {
        &self.params
    }
}

#[async_trait::async_trait]
impl ImageEditor for LocalDiffusionEditor {
    fn name(&self) -> &'static str {
        NAME
    }

    fn identity(&self) -> Option<super::EditorIdentity> {
        Some(super::EditorIdentity {
            provider: NAME,
            // The server decides the checkpoint; its address stands for it.
            model: self.endpoint.to_string(),
            settings: format!("{:?}", self.params),
            deterministic: false,
        })
    }

    async fn edit(&self, request: EditRequest<'_>) -> Result<EditResponse, ProviderError> {
        let (width, height) = working_size(request.image.dimensions());
        let body = build_body(
            &self.params,
            request.image,
            request.mask,
            request.prompt.as_str(),
            (width, height),
        )?;
        let started = Instant::now();
        let reply = http::send(NAME, self.client.post(self.endpoint.clone()).json(&body)).await?;
        if !reply.is_success() {
            return Err(status_error(reply.status, &reply.headers, &reply.body));
        }
        let image = decode_images(&reply.body)?;
        let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        Ok(EditResponse {
            image,
            provider: NAME,
            prompt_used: true,
            usage: Usage::default(),
            cost_micro_usd: 0,
            details: serde_json::json!({
                "width": width,
                "height": height,
                "params": self.params,
                "elapsedMs": elapsed_ms,
            }),
            accounting: Accounting::default(),
            attempts: Vec::new(),
        })
    }
}

/// A1111 works in multiples of 8 (64 is safest); the base's size rounded up to 64, between 64
/// and 2048 per side.
fn working_size((width, height): (u32, u32)) -> (u32, u32) {
    let round = |side: u32| side.clamp(64, 2048).div_ceil(64) * 64;
    (round(width), round(height))
}

fn png_base64(image: &image::DynamicImage) -> Result<String, ProviderError> {
    let mut bytes = Vec::new();
    image
        .write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)
        .map_err(|error| ProviderError::Rejected {
            provider: NAME,
            code: ErrorCode::ImageEncodeFailed,
            reason: error.to_string(),
        })?;
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// The img2img body. The mask is sent as an opaque grayscale PNG, white = repaint (reference §4,
/// "safe choice"), the size of the init image.
fn build_body(
    params: &InpaintParams,
    image: &RgbaImage,
    mask: Option<&GrayImage>,
    prompt: &str,
    (width, height): (u32, u32),
) -> Result<serde_json::Value, ProviderError> {
    let (image_width, image_height) = image.dimensions();
    let mask = match mask {
        Some(mask) if mask.dimensions() == (image_width, image_height) => mask.clone(),
        Some(mask) => image::imageops::resize(mask, image_width, image_height, image::imageops::FilterType::Nearest),
        // No mask: the whole image may change.
        None => GrayImage::from_pixel(image_width, image_height, image::Luma([255])),
    };
    let init = png_base64(&image::DynamicImage::ImageRgba8(image.clone()))?;
    let mask = png_base64(&image::DynamicImage::ImageLuma8(mask))?;
    Ok(serde_json::json!({
        "init_images": [init],
        "mask": mask,
        "prompt": prompt,
        "negative_prompt": params.negative_prompt,
        "denoising_strength": params.denoising_strength,
        "inpainting_fill": params.inpainting_fill,
        "inpaint_full_res": params.inpaint_full_res,
        "inpaint_full_res_padding": params.inpaint_full_res_padding,
        "mask_blur": params.mask_blur,
        "inpainting_mask_invert": 0,
        "steps": params.steps,
        "cfg_scale": params.cfg_scale,
        "sampler_name": params.sampler_name,
        "seed": -1,
        "width": width,
        "height": height,
        "batch_size": 1,
        "n_iter": 1,
        "send_images": true,
        "save_images": false,
    }))
}

/// Reference §6: 400 sampler, 401 auth, 404 init image, 422 schema/script errors are our
/// request or configuration; 5xx (OOM) and anything else may pass, so they are transient.
fn status_error(status: u16, headers: &reqwest::header::HeaderMap, body: &str) -> ProviderError {
    let detail = serde_json::from_str::<A1111Error>(body)
        .ok()
        .map(|error| {
            let parts: Vec<String> = [error.error, error.detail, error.errors]
                .into_iter()
                .flatten()
                .filter(|part| !part.is_empty())
                .collect();
            parts.join(": ")
        })
        .filter(|detail| !detail.is_empty())
        .unwrap_or_else(|| body.chars().take(200).collect());
    match status {
        401 | 403 => ProviderError::Misconfigured {
            provider: NAME,
            reason: format!("HTTP {status}: {detail} (is --api-auth set on the server?)"),
        },
        400 | 404 | 422 => ProviderError::Misconfigured {
            provider: NAME,
            reason: format!("HTTP {status}: {detail}"),
        },
        // 5xx (an out-of-memory GPU), 429 and any unexpected status: a local server in such a
        // state may recover, so these are transient.
        _ => http::unavailable(NAME, format!("HTTP {status}: {detail}"), headers),
    }
}

/// Decodes `images[0]` (plain base64, reference §3/§5). A 200 that does not carry an image is
/// treated as a server fault (transient), with a message saying what was wrong.
fn decode_images(text: &str) -> Result<RgbaImage, ProviderError> {
    let garbage = |reason: String| ProviderError::Unavailable {
        provider: NAME,
        reason: format!("unusable img2img response: {reason}"),
        retry_after: None,
    };
    let parsed: Img2ImgResponse = serde_json::from_str(text).map_err(|error| garbage(error.to_string()))?;
    let first = parsed
        .images
        .first()
        .ok_or_else(|| garbage("`images` is empty".into()))?;
    let payload = match first.split_once(',') {
        Some((prefix, data)) if prefix.starts_with("data:") => data,
        _ => first.as_str(),
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(payload.trim())
        .map_err(|error| garbage(format!("images[0] is not base64: {error}")))?;
    Ok(image::load_from_memory(&bytes)
        .map_err(|error| garbage(format!("images[0] is not an image: {error}")))?
        .to_rgba8())
}

#[derive(Deserialize)]
struct Img2ImgResponse {
    images: Vec<String>,
}

#[derive(Deserialize)]
struct A1111Error {
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    detail: Option<String>,
    #[serde(default)]
    errors: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_round_to_multiples_of_64() {
        assert_eq!(working_size((100, 64)), (128, 64));
        assert_eq!(working_size((10, 5000)), (64, 2048));
    }

    #[test]
    fn overrides_replace_defaults() {
        let params = InpaintParams::with_overrides(&InpaintOverrides {
            steps: Some(12),
            sampler_name: Some("DPM++ 2M".into()),
            ..InpaintOverrides::default()
        });
        assert_eq!(params.steps, 12);
        assert_eq!(params.sampler_name, "DPM++ 2M");
        assert_eq!(params.denoising_strength, 0.75);
    }

    #[test]
    fn garbage_is_a_clear_transient_error() {
        for body in [
            "not json",
            r#"{"images": []}"#,
            r#"{"images": ["%%%"]}"#,
            r#"{"images": ["aGVsbG8="]}"#,
        ] {
            let error = decode_images(body).unwrap_err();
            assert!(error.is_retryable(), "{body}");
            assert!(error.to_string().contains("unusable img2img response"), "{error}");
        }
        let headers = reqwest::header::HeaderMap::new();
        let missing = status_error(
            404,
            &headers,
            r#"{"error":"HTTPException","detail":"Init image not found"}"#,
        );
        assert!(!missing.is_retryable());
        assert!(
            missing.to_string().contains("HTTPException: Init image not found"),
            "{missing}"
        );
        assert!(status_error(500, &headers, "{}").is_retryable());
    }
}
