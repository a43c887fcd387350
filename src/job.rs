//! Domain values of one render job: the wire payload, its validated form and the result.
//!
//! This module owns the job contract shared with the Node.js backend (the camelCase JSON that
//! BullMQ carries) and turns it, once, into types that cannot hold an invalid value.
//! It performs no IO and knows nothing about queues, databases or HTTP.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest accepted identifier (design, tenant, user).
pub const MAX_ID_LEN: usize = 128;
/// Smallest and largest side accepted in `renderOptions.size`.
const MIN_SIDE: u32 = 64;
const MAX_SIDE: u32 = 4096;
/// Longest accepted raw prompt, before sanitisation trims it to a provider's own limit.
const MAX_RAW_PROMPT_CHARS: usize = 32_000;
/// Longest accepted asset reference.
const MAX_URL_LEN: usize = 4096;

/// The job payload exactly as the backend enqueues it. Unknown fields are ignored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct JobPayload {
    pub design_id: String,
    pub prompt: String,
    pub base_texture_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask_url: Option<String>,
    pub tenant_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default)]
    pub render_options: RenderOptionsPayload,
}

/// `renderOptions` as it appears on the wire.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RenderOptionsPayload {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generate_normal_map: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generate_roughness_map: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
}

/// A rejected payload: the offending field (JSON path) and the rule it broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid job payload: `{field}` {rule}")]
pub struct PayloadError {
    pub field: &'static str,
    pub rule: String,
}

impl PayloadError {
    fn new(field: &'static str, rule: impl Into<String>) -> Self {
        Self {
            field,
            rule: rule.into(),
        }
    }
}

/// A validated render request. Built only by [`RenderRequest::parse`] or [`RenderRequest::from_json`].
#[derive(Debug, Clone, PartialEq)]
pub struct RenderRequest {
    pub design_id: DesignId,
    pub tenant_id: TenantId,
    pub user_id: Option<UserId>,
    pub prompt: RawPrompt,
    pub base_texture: AssetRef,
    pub mask: Option<AssetRef>,
    pub options: RenderOptions,
}

impl RenderRequest {
    /// Parses the JSON text of a job payload, naming the field of the first problem.
    pub fn from_json(text: &[u8]) -> Result<Self, PayloadError> {
        let payload: JobPayload = serde_json::from_slice(text)
            .map_err(|error| PayloadError::new("payload", format!("is not a valid job object: {error}")))?;
        Self::parse(payload)
    }

    /// Validates a decoded payload.
    pub fn parse(payload: JobPayload) -> Result<Self, PayloadError> {
        Ok(Self {
            design_id: DesignId::parse(&payload.design_id).map_err(|rule| PayloadError::new("designId", rule))?,
            tenant_id: TenantId::parse(&payload.tenant_id).map_err(|rule| PayloadError::new("tenantId", rule))?,
            user_id: payload
                .user_id
                .as_deref()
                .map(UserId::parse)
                .transpose()
                .map_err(|rule| PayloadError::new("userId", rule))?,
            prompt: RawPrompt::parse(&payload.prompt).map_err(|rule| PayloadError::new("prompt", rule))?,
            base_texture: AssetRef::parse(&payload.base_texture_url)
                .map_err(|rule| PayloadError::new("baseTextureUrl", rule))?,
            mask: payload
                .mask_url
                .as_deref()
                .filter(|text| !text.trim().is_empty())
                .map(AssetRef::parse)
                .transpose()
                .map_err(|rule| PayloadError::new("maskUrl", rule))?,
            options: RenderOptions::parse(&payload.render_options)?,
        })
    }

    /// The payload this request was parsed from, for re-enqueueing and echoing back.
    pub fn to_payload(&self) -> JobPayload {
        JobPayload {
            design_id: self.design_id.to_string(),
            prompt: self.prompt.as_str().to_owned(),
            base_texture_url: self.base_texture.as_str().to_owned(),
            mask_url: self.mask.as_ref().map(|mask| mask.as_str().to_owned()),
            tenant_id: self.tenant_id.to_string(),
            user_id: self.user_id.as_ref().map(ToString::to_string),
            render_options: RenderOptionsPayload {
                generate_normal_map: Some(self.options.normal_map),
                generate_roughness_map: Some(self.options.roughness_map),
                quality: Some(self.options.quality.as_str().to_owned()),
                size: Some(self.options.size.to_string()),
            },
        }
    }
}

fn parse_identifier(text: &str) -> Result<String, String> {
    if text.is_empty() {
        return Err("must not be empty".into());
    }
    if text.len() > MAX_ID_LEN {
        return Err(format!("must be at most {MAX_ID_LEN} characters"));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if !text.chars().all(allowed) {
        return Err("may contain only ASCII letters, digits, '-', '_' and '.'".into());
    }
    if !text.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err("must start with a letter or digit".into());
    }
    Ok(text.to_owned())
}

macro_rules! identifier {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Accepts 1..=128 characters of `[A-Za-z0-9._-]`, starting with a letter or digit,
            /// so the value is safe in storage keys, Redis keys and log lines.
            pub fn parse(text: &str) -> Result<Self, String> {
                parse_identifier(text).map(Self)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

identifier!(
    /// The primary key of a Design row.
    DesignId
);
identifier!(
    /// The tenant that owns a design; the unit of concurrency limits.
    TenantId
);
identifier!(
    /// The user who asked for the render, carried into events only.
    UserId
);

/// The prompt as received: bounded in size, not yet sanitised. Only the safety module turns it
/// into something a provider accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawPrompt(String);

impl RawPrompt {
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Err("must not be empty".into());
        }
        if text.chars().count() > MAX_RAW_PROMPT_CHARS {
            return Err(format!("must be at most {MAX_RAW_PROMPT_CHARS} characters"));
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Where an input image comes from. Whether a given kind is allowed is the asset loader's call:
/// the CLI accepts local files, the queue worker refuses them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AssetRef {
    /// An `http://` or `https://` URL.
    Remote(url::Url),
    /// A local path, given directly or as a `file://` URL.
    Local { path: std::path::PathBuf, original: String },
}

impl AssetRef {
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("must not be empty".into());
        }
        if text.len() > MAX_URL_LEN {
            return Err(format!("must be at most {MAX_URL_LEN} characters"));
        }
        if text.contains('\0') {
            return Err("must not contain NUL characters".into());
        }
        let looks_like_url = text.contains("://");
        if !looks_like_url {
            return Ok(Self::Local {
                path: text.into(),
                original: text.to_owned(),
            });
        }
        let url = url::Url::parse(text).map_err(|error| format!("is not a valid URL ({error})"))?;
        match url.scheme() {
            "http" | "https" => {
                if url.host().is_none() {
                    return Err("must name a host".into());
                }
                if !url.username().is_empty() || url.password().is_some() {
                    return Err("must not carry credentials".into());
                }
                Ok(Self::Remote(url))
            }
            "file" => {
                let path = url
                    .to_file_path()
                    .map_err(|()| "is not a usable file:// URL".to_owned())?;
                Ok(Self::Local {
                    path,
                    original: text.to_owned(),
                })
            }
            other => Err(format!("has unsupported scheme `{other}` (use http, https or file)")),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Remote(url) => url.as_str(),
            Self::Local { original, .. } => original,
        }
    }
}

/// Validated `renderOptions`, with defaults applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenderOptions {
    pub normal_map: bool,
    pub roughness_map: bool,
    pub quality: Quality,
    pub size: RenderSize,
}

impl Default for RenderOptions {
    fn default() -> Self {
        Self {
            normal_map: false,
            roughness_map: false,
            quality: Quality::Auto,
            size: RenderSize::DEFAULT,
        }
    }
}

impl RenderOptions {
    fn parse(payload: &RenderOptionsPayload) -> Result<Self, PayloadError> {
        let quality = match payload.quality.as_deref() {
            None => Quality::Auto,
            Some(text) => Quality::parse(text).map_err(|rule| PayloadError::new("renderOptions.quality", rule))?,
        };
        let size = match payload.size.as_deref() {
            None => RenderSize::DEFAULT,
            Some(text) => RenderSize::parse(text).map_err(|rule| PayloadError::new("renderOptions.size", rule))?,
        };
        Ok(Self {
            normal_map: payload.generate_normal_map.unwrap_or(false),
            roughness_map: payload.generate_roughness_map.unwrap_or(false),
            quality,
            size,
        })
    }
}

/// Requested quality. `standard` and `hd` are the spec's (DALL·E era) names; the rest are the
/// GPT image models' names. Providers map them to what they support.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Quality {
    Standard,
    Hd,
    Low,
    Medium,
    High,
    Auto,
}

impl Quality {
    pub fn parse(text: &str) -> Result<Self, String> {
        Ok(match text {
            "standard" => Self::Standard,
            "hd" => Self::Hd,
            "low" => Self::Low,
            "medium" => Self::Medium,
            "high" => Self::High,
            "auto" => Self::Auto,
            _ => {
                return Err(format!(
                    "must be one of standard, hd, low, medium, high, auto (got `{}`)",
                    truncate_for_message(text)
                ));
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Standard => "standard",
            Self::Hd => "hd",
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Auto => "auto",
        }
    }
}

/// Output size of the high-resolution asset, `WxH` with each side in 64..=4096.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RenderSize {
    width: u32,
    height: u32,
}

impl RenderSize {
    pub const DEFAULT: Self = Self {
        width: 2048,
        height: 2048,
    };

    pub fn new(width: u32, height: u32) -> Result<Self, String> {
        for (name, side) in [("width", width), ("height", height)] {
            if !(MIN_SIDE..=MAX_SIDE).contains(&side) {
                return Err(format!("{name} {side} is outside {MIN_SIDE}..={MAX_SIDE}"));
            }
        }
        Ok(Self { width, height })
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let rule = || format!("must look like `2048x2048` (got `{}`)", truncate_for_message(text));
        let (width, height) = text.trim().split_once(['x', 'X']).ok_or_else(rule)?;
        let side = |part: &str| -> Result<u32, String> {
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) || part.len() > 5 {
                return Err(rule());
            }
            part.parse::<u32>().map_err(|_| rule())
        };
        Self::new(side(width)?, side(height)?)
    }

    pub fn width(self) -> u32 {
        self.width
    }

    pub fn height(self) -> u32 {
        self.height
    }
}

impl fmt::Display for RenderSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", self.width, self.height)
    }
}

/// Bounds user text quoted in an error message, so a huge field cannot flood a log line.
fn truncate_for_message(text: &str) -> String {
    const LIMIT: usize = 40;
    if text.chars().count() <= LIMIT {
        text.to_owned()
    } else {
        let head: String = text.chars().take(LIMIT).collect();
        format!("{head}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload() -> serde_json::Value {
        serde_json::json!({
            "designId": "design-123",
            "prompt": "A beautiful landscape with mountains",
            "baseTextureUrl": "https://example.com/base.png",
            "maskUrl": "https://example.com/mask.png",
            "tenantId": "tenant-123",
            "userId": "user-123",
            "renderOptions": {
                "generateNormalMap": true,
                "generateRoughnessMap": true,
                "quality": "hd",
                "size": "2048x2048"
            }
        })
    }

    fn parse(value: &serde_json::Value) -> Result<RenderRequest, PayloadError> {
        RenderRequest::from_json(value.to_string().as_bytes())
    }

    fn rejected_field(mutate: impl FnOnce(&mut serde_json::Value)) -> &'static str {
        let mut value = payload();
        mutate(&mut value);
        match parse(&value) {
            Err(error) => error.field,
            Ok(request) => panic!("payload unexpectedly accepted: {request:?}"),
        }
    }

    #[test]
    fn spec_payload_parses_with_all_options() {
        let request = parse(&payload()).expect("spec payload is valid");
        assert_eq!(request.design_id.as_str(), "design-123");
        assert_eq!(request.tenant_id.as_str(), "tenant-123");
        assert_eq!(request.user_id.as_ref().map(UserId::as_str), Some("user-123"));
        assert!(request.options.normal_map && request.options.roughness_map);
        assert_eq!(request.options.quality, Quality::Hd);
        assert_eq!(request.options.size, RenderSize::new(2048, 2048).unwrap());
        assert!(matches!(request.mask, Some(AssetRef::Remote(_))));
    }

    #[test]
    fn optional_fields_take_defaults_and_unknown_fields_are_ignored() {
        let value = serde_json::json!({
            "designId": "d1", "prompt": "p", "baseTextureUrl": "https://x.test/a.png",
            "tenantId": "t1", "somethingNew": {"nested": true}
        });
        let request = parse(&value).expect("minimal payload is valid");
        assert_eq!(request.options, RenderOptions::default());
        assert_eq!(request.options.size.to_string(), "2048x2048");
        assert!(request.mask.is_none() && request.user_id.is_none());
    }

    #[test]
    fn each_rejection_names_its_field() {
        assert_eq!(rejected_field(|v| v["designId"] = "../etc".into()), "designId");
        assert_eq!(rejected_field(|v| v["designId"] = "".into()), "designId");
        assert_eq!(rejected_field(|v| v["designId"] = "x".repeat(129).into()), "designId");
        assert_eq!(rejected_field(|v| v["tenantId"] = "a b".into()), "tenantId");
        assert_eq!(rejected_field(|v| v["userId"] = "u/1".into()), "userId");
        assert_eq!(rejected_field(|v| v["prompt"] = "   ".into()), "prompt");
        assert_eq!(
            rejected_field(|v| v["baseTextureUrl"] = "ftp://x/y.png".into()),
            "baseTextureUrl"
        );
        assert_eq!(
            rejected_field(|v| v["baseTextureUrl"] = "https://user:pw@x/y.png".into()),
            "baseTextureUrl"
        );
        assert_eq!(rejected_field(|v| v["maskUrl"] = "gopher://x".into()), "maskUrl");
        assert_eq!(
            rejected_field(|v| v["renderOptions"]["quality"] = "ultra".into()),
            "renderOptions.quality"
        );
        assert_eq!(
            rejected_field(|v| v["renderOptions"]["size"] = "4097x10".into()),
            "renderOptions.size"
        );
        assert_eq!(
            rejected_field(|v| v.as_object_mut().unwrap().remove("tenantId").map(drop).unwrap()),
            "payload"
        );
        assert_eq!(rejected_field(|v| v["designId"] = 5.into()), "payload");
    }

    #[test]
    fn rejection_message_names_field_and_rule() {
        let mut value = payload();
        value["renderOptions"]["size"] = "big".into();
        let message = parse(&value).unwrap_err().to_string();
        assert!(message.contains("`renderOptions.size`"), "{message}");
        assert!(message.contains("2048x2048"), "{message}");
    }

    #[test]
    fn size_parsing_accepts_bounds_and_rejects_the_rest() {
        assert_eq!(RenderSize::parse("64x64").unwrap().width(), 64);
        assert_eq!(RenderSize::parse("4096X1024").unwrap().height(), 1024);
        assert_eq!(RenderSize::parse(" 512x256 ").unwrap().to_string(), "512x256");
        for bad in [
            "63x64",
            "64x4097",
            "0x0",
            "x512",
            "512x",
            "512",
            "-512x512",
            "+512x512",
            "5 12x512",
            "1e3x512",
            "99999999999x1",
            "512x512x512",
        ] {
            assert!(RenderSize::parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn quality_accepts_exactly_the_documented_names() {
        for name in ["standard", "hd", "low", "medium", "high", "auto"] {
            assert_eq!(Quality::parse(name).unwrap().as_str(), name);
        }
        assert!(Quality::parse("HD").is_err());
        assert!(Quality::parse("").is_err());
    }

    #[test]
    fn local_paths_and_file_urls_become_local_refs() {
        assert!(matches!(
            AssetRef::parse("examples/base.png"),
            Ok(AssetRef::Local { .. })
        ));
        match AssetRef::parse("file:///tmp/base.png") {
            Ok(AssetRef::Local { path, .. }) => assert_eq!(path, std::path::PathBuf::from("/tmp/base.png")),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn payload_round_trips_through_to_payload() {
        let request = parse(&payload()).unwrap();
        let again = RenderRequest::parse(request.to_payload()).unwrap();
        assert_eq!(request, again);
    }
}
