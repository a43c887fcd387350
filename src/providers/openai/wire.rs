//! The OpenAI wire format: the multipart body of `POST /images/edits`, the JSON of
//! `/moderations`, and the shapes of the answers (images, moderation results, error envelopes).
//!
//! It owns field names and encodings only: which form fields a model takes, our mask in
//! OpenAI's convention, and turning `data[0].b64_json` into pixels. It must not decide sizes or
//! prices (`plan.rs`), map statuses onto errors (`errors.rs`) or send anything (`mod.rs`).

use base64::Engine as _;
use image::{GrayImage, RgbaImage};
use serde::Deserialize;

use super::NAME;
use super::plan::{RequestPlan, is_dall_e_2};
use crate::budget::TokenUsage;
use crate::error_code::ErrorCode;
use crate::providers::ProviderError;

/// The moderation model named in reference §6.
const MODERATION_MODEL: &str = "omni-moderation-latest";

/// A successful `/images/edits` answer, decoded.
pub(super) struct EditedImage {
    pub(super) image: RgbaImage,
    pub(super) created: Option<i64>,
    /// `None` for models that report no usage (dall-e-2).
    pub(super) usage: Option<TokenUsage>,
}

/// Our mask is a coverage plane (255 = regenerate); OpenAI repaints pixels whose alpha is 0
/// (reference §1). Returns an RGBA mask of the image's dimensions: transparent where we
/// regenerate, opaque black elsewhere.
pub fn to_openai_mask(mask: &GrayImage, width: u32, height: u32) -> RgbaImage {
    let mask = if mask.dimensions() == (width, height) {
        mask.clone()
    } else {
        image::imageops::resize(mask, width, height, image::imageops::FilterType::Nearest)
    };
    RgbaImage::from_fn(width, height, |x, y| {
        let regenerate = mask.get_pixel(x, y).0[0] >= 128;
        image::Rgba([0, 0, 0, if regenerate { 0 } else { 255 }])
    })
}

/// The JSON body of a moderation pre-check.
pub(super) fn moderation_body(prompt: &str) -> serde_json::Value {
    serde_json::json!({ "model": MODERATION_MODEL, "input": prompt })
}

pub(super) fn build_form(
    model: &str,
    plan: &RequestPlan,
    image: &RgbaImage,
    mask: Option<&GrayImage>,
    prompt: &str,
) -> Result<reqwest::multipart::Form, ProviderError> {
    let image = match plan.resize_input_to {
        Some((width, height)) if image.dimensions() != (width, height) => {
            crate::imaging::resize::resize_rgba(image, width, height)
        }
        _ => image.clone(),
    };
    let (width, height) = image.dimensions();
    let mask = match (mask, is_dall_e_2(model)) {
        (Some(mask), _) => Some(to_openai_mask(mask, width, height)),
        // dall-e-2 without a mask edits the image's transparent area; ours are opaque, so the
        // whole image is marked editable explicitly.
        (None, true) => Some(RgbaImage::from_pixel(width, height, image::Rgba([0, 0, 0, 0]))),
        // GPT image models without a mask may change the whole image.
        (None, false) => None,
    };
    let png = |image: &RgbaImage, name: &'static str| -> Result<reqwest::multipart::Part, ProviderError> {
        let bytes = crate::imaging::codec::encode_rgba_png(image).map_err(|error| ProviderError::Rejected {
            provider: NAME,
            code: ErrorCode::ImageEncodeFailed,
            reason: error.to_string(),
        })?;
        reqwest::multipart::Part::bytes(bytes)
            .file_name(name)
            .mime_str("image/png")
            .map_err(|error| ProviderError::Rejected {
                provider: NAME,
                code: ErrorCode::ImageEncodeFailed,
                reason: error.to_string(),
            })
    };
    // dall-e-2 takes exactly one part named `image`; the GPT models' documented form is
    // `image[]` (reference §1).
    let image_field = if is_dall_e_2(model) { "image" } else { "image[]" };
    let mut form = reqwest::multipart::Form::new()
        .text("model", model.to_owned())
        .text("prompt", prompt.to_owned())
        .text("n", "1")
        .text("size", format!("{}x{}", plan.size.0, plan.size.1))
        .part(image_field, png(&image, "image.png")?);
    if let Some(mask) = mask {
        form = form.part("mask", png(&mask, "mask.png")?);
    }
    if let Some(quality) = plan.quality {
        form = form.text("quality", quality.as_api_str());
    }
    if is_dall_e_2(model) {
        form = form.text("response_format", "b64_json");
    }
    Ok(form)
}

/// Decodes a 200 answer of `/images/edits`. An answer without a usable image is a server fault
/// (transient), with a message saying what was wrong.
pub(super) fn parse_edit(body: &str) -> Result<EditedImage, ProviderError> {
    let garbage = |reason: String| ProviderError::Unavailable {
        provider: NAME,
        reason: format!("unusable response: {reason}"),
        retry_after: None,
    };
    let parsed: ImagesResponse = serde_json::from_str(body).map_err(|error| garbage(error.to_string()))?;
    let b64 = parsed
        .data
        .first()
        .and_then(|item| item.b64_json.as_deref())
        .ok_or_else(|| garbage("no data[0].b64_json".into()))?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|error| garbage(format!("b64_json does not decode: {error}")))?;
    let image = image::load_from_memory(&bytes)
        .map_err(|error| garbage(format!("b64_json is not an image: {error}")))?
        .to_rgba8();
    Ok(EditedImage {
        image,
        created: parsed.created,
        usage: parsed.usage,
    })
}

#[derive(Deserialize)]
struct ImagesResponse {
    #[serde(default)]
    created: Option<i64>,
    #[serde(default)]
    data: Vec<ImageData>,
    #[serde(default)]
    usage: Option<TokenUsage>,
}

#[derive(Deserialize)]
struct ImageData {
    #[serde(default)]
    b64_json: Option<String>,
}

/// The body of every OpenAI error answer (reference §4).
#[derive(Deserialize)]
pub(super) struct ErrorEnvelope {
    pub(super) error: ApiError,
}

#[derive(Deserialize)]
pub(super) struct ApiError {
    #[serde(default)]
    pub(super) message: Option<String>,
    #[serde(default, rename = "type")]
    pub(super) kind: Option<String>,
    #[serde(default)]
    pub(super) code: Option<String>,
    #[serde(default)]
    pub(super) moderation_details: Option<ModerationDetails>,
}

#[derive(Deserialize)]
pub(super) struct ModerationDetails {
    #[serde(default)]
    pub(super) categories: Vec<String>,
}

#[derive(Deserialize)]
pub(super) struct ModerationResponse {
    pub(super) results: Vec<ModerationResult>,
}

#[derive(Deserialize)]
pub(super) struct ModerationResult {
    pub(super) flagged: bool,
    #[serde(default)]
    pub(super) categories: std::collections::BTreeMap<String, Option<bool>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_becomes_transparent_where_we_regenerate() {
        let mut mask = GrayImage::new(4, 2);
        mask.put_pixel(1, 0, image::Luma([255]));
        let converted = to_openai_mask(&mask, 4, 2);
        assert_eq!(converted.dimensions(), (4, 2));
        assert_eq!(converted.get_pixel(1, 0).0[3], 0);
        assert_eq!(converted.get_pixel(0, 0).0[3], 255);
        assert_eq!(to_openai_mask(&mask, 8, 4).get_pixel(2, 0).0[3], 0);
    }

    #[test]
    fn an_answer_without_a_usable_image_is_transient_and_says_why() {
        for (body, why) in [
            ("not json", "unusable response"),
            (r#"{"data": []}"#, "no data[0].b64_json"),
            (r#"{"data": [{"b64_json": "%%%"}]}"#, "does not decode"),
            (r#"{"data": [{"b64_json": "aGVsbG8="}]}"#, "is not an image"),
        ] {
            let error = match parse_edit(body) {
                Ok(_) => panic!("{body} parsed"),
                Err(error) => error,
            };
            assert!(error.is_retryable(), "{body}");
            assert!(error.to_string().contains(why), "{body}: {error}");
        }
    }
}
