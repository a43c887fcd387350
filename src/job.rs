//! Domain values of one render job: the wire payload, its validated form and the result.
//!
//! This module owns the job contract shared with the Node.js backend (the camelCase JSON that
//! BullMQ carries) and turns it, once, into types that cannot hold an invalid value.
//! It performs no IO and knows nothing about queues, databases or HTTP.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::imaging::Fit;

/// Longest accepted identifier (design, tenant).
pub const MAX_ID_LEN: usize = 128;
/// Longest accepted `userId`, in characters.
pub const MAX_USER_ID_CHARS: usize = 256;
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fit: Option<String>,
    /// `false` opts this job out of the result cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<bool>,
}

/// A rejected payload: the offending field (its JSON path, such as `renderOptions.size`, or
/// `payload` when the document itself is wrong) and the rule it broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid job payload: `{field}` {rule}")]
pub struct PayloadError {
    pub field: String,
    pub rule: String,
}

/// The path [`PayloadError::field`] names when the problem is the whole document (not UTF-8,
/// not JSON, not an object).
const WHOLE_PAYLOAD: &str = "payload";

impl PayloadError {
    fn new(field: &str, rule: impl Into<String>) -> Self {
        Self {
            field: field.to_owned(),
            rule: rule.into(),
        }
    }

    fn whole(rule: impl Into<String>) -> Self {
        Self::new(WHOLE_PAYLOAD, rule)
    }
}

/// Job data as a queue delivered it, not yet validated.
#[derive(Debug, Clone, PartialEq)]
pub enum JobData {
    /// JSON as the queue library decoded it.
    Json(serde_json::Value),
    /// The bytes as stored, when the library's decoding could not be trusted (it may have
    /// repaired invalid UTF-8 or given up on text that is not JSON); validated by
    /// [`RenderRequest::from_json`], so those problems are named instead of hidden.
    Raw(Vec<u8>),
}

impl From<serde_json::Value> for JobData {
    fn from(value: serde_json::Value) -> Self {
        Self::Json(value)
    }
}

impl JobData {
    /// A top-level string member, to describe a job whose data did not validate. Raw data that
    /// is not UTF-8 JSON has none.
    pub fn text_member(&self, name: &str) -> Option<String> {
        let member = |value: &serde_json::Value| value.get(name).and_then(serde_json::Value::as_str).map(str::to_owned);
        match self {
            Self::Json(value) => member(value),
            Self::Raw(bytes) => serde_json::from_slice::<serde_json::Value>(bytes)
                .ok()
                .as_ref()
                .and_then(member),
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
    /// Parses the raw bytes of a job payload (a `--job` file, or job data read from Redis),
    /// naming the field of the first problem. Bytes that are not UTF-8 are refused, never
    /// repaired, and text that is not JSON is refused with the line, column and reason.
    pub fn from_json(bytes: &[u8]) -> Result<Self, PayloadError> {
        Self::from_value(&decode_json(bytes)?)
    }

    /// Validates job data as a queue delivered it.
    pub fn from_data(data: &JobData) -> Result<Self, PayloadError> {
        match data {
            JobData::Json(value) => Self::from_value(value),
            JobData::Raw(bytes) => Self::from_json(bytes),
        }
    }

    /// Validates decoded JSON. Every field is type-checked by hand rather than by serde, so a
    /// wrong type names its JSON path and says what was expected and what was found. `null` in
    /// an optional field (`userId`, `maskUrl`, `renderOptions` and each of its members) means
    /// absent, as JavaScript producers send it; `null` in a required field is an error.
    /// Unknown fields are ignored.
    fn from_value(value: &serde_json::Value) -> Result<Self, PayloadError> {
        let fields = Fields::of(value, WHOLE_PAYLOAD, "a JSON object (the job payload)")?;
        let payload = JobPayload {
            design_id: fields.required_string("designId", "a string like \"design-123\"")?,
            tenant_id: fields.required_string("tenantId", "a string like \"tenant-123\"")?,
            user_id: fields.optional_string("userId", "a string like \"ana@example.com\"")?,
            prompt: fields.required_string("prompt", "a string")?,
            base_texture_url: fields
                .required_string("baseTextureUrl", "a URL string like \"https://example.com/base.png\"")?,
            mask_url: fields.optional_string("maskUrl", "a URL string like \"https://example.com/mask.png\"")?,
            render_options: match fields.optional("renderOptions") {
                None => RenderOptionsPayload::default(),
                Some(value) => {
                    let options = Fields::of(value, "renderOptions", "an object like {\"size\": \"2048x2048\"}")?;
                    RenderOptionsPayload {
                        generate_normal_map: options.optional_bool("generateNormalMap")?,
                        generate_roughness_map: options.optional_bool("generateRoughnessMap")?,
                        quality: options.optional_string("quality", "a string like \"hd\"")?,
                        size: options.optional_string("size", "a string like \"2048x2048\"")?,
                        fit: options.optional_string("fit", "a string like \"inside\"")?,
                        cache: options.optional_bool("cache")?,
                    }
                }
            },
        };
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
            user_id: self.user_id.as_ref().map(|user| user.as_str().to_owned()),
            render_options: RenderOptionsPayload {
                generate_normal_map: Some(self.options.normal_map),
                generate_roughness_map: Some(self.options.roughness_map),
                quality: Some(self.options.quality.as_str().to_owned()),
                size: Some(self.options.size.to_string()),
                fit: Some(self.options.fit.as_str().to_owned()),
                // Only an opt-out is written: `true` is the default.
                cache: (!self.options.cache).then_some(false),
            },
        }
    }
}

/// The members of one JSON object of the payload, read with their JSON path in every error.
struct Fields<'a> {
    path: &'a str,
    object: &'a serde_json::Map<String, serde_json::Value>,
}

impl<'a> Fields<'a> {
    fn of(value: &'a serde_json::Value, path: &'a str, expected: &str) -> Result<Self, PayloadError> {
        match value {
            serde_json::Value::Object(object) => Ok(Self { path, object }),
            other => Err(PayloadError::new(
                path,
                format!("must be {expected}, got {}", kind_of(other)),
            )),
        }
    }

    fn path_of(&self, name: &str) -> String {
        if self.path == WHOLE_PAYLOAD {
            name.to_owned()
        } else {
            format!("{}.{name}", self.path)
        }
    }

    /// The member's value, with `null` read as absent.
    fn optional(&self, name: &str) -> Option<&'a serde_json::Value> {
        self.object.get(name).filter(|value| !value.is_null())
    }

    fn required_string(&self, name: &str, expected: &str) -> Result<String, PayloadError> {
        match self.object.get(name) {
            None => Err(PayloadError::new(
                &self.path_of(name),
                format!("is missing; it must be {expected}"),
            )),
            Some(value) => self.string(name, value, expected),
        }
    }

    fn optional_string(&self, name: &str, expected: &str) -> Result<Option<String>, PayloadError> {
        self.optional(name)
            .map(|value| self.string(name, value, expected))
            .transpose()
    }

    fn optional_bool(&self, name: &str) -> Result<Option<bool>, PayloadError> {
        match self.optional(name) {
            None => Ok(None),
            Some(serde_json::Value::Bool(flag)) => Ok(Some(*flag)),
            Some(other) => Err(PayloadError::new(
                &self.path_of(name),
                format!("must be a boolean (true or false), got {}", kind_of(other)),
            )),
        }
    }

    fn string(&self, name: &str, value: &serde_json::Value, expected: &str) -> Result<String, PayloadError> {
        match value {
            serde_json::Value::String(text) => Ok(text.clone()),
            other => Err(PayloadError::new(
                &self.path_of(name),
                format!("must be {expected}, got {}", kind_of(other)),
            )),
        }
    }
}

/// "got …" wording for a JSON value's type.
fn kind_of(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// The job data as JSON, refusing what is not UTF-8 (never repaired with U+FFFD) and saying
/// where and why text is not JSON.
fn decode_json(bytes: &[u8]) -> Result<serde_json::Value, PayloadError> {
    let text = std::str::from_utf8(bytes).map_err(|error| PayloadError::whole(describe_utf8_error(bytes, error)))?;
    if text.starts_with('\u{feff}') {
        return Err(PayloadError::whole(
            "starts with a byte-order mark (U+FEFF); send UTF-8 JSON without a BOM",
        ));
    }
    if text.trim().is_empty() {
        return Err(PayloadError::whole("is empty; expected a JSON object"));
    }
    serde_json::from_str(text).map_err(|error| PayloadError::whole(describe_json_error(&error)))
}

fn describe_utf8_error(bytes: &[u8], error: std::str::Utf8Error) -> String {
    let offset = error.valid_up_to();
    let before = &bytes[..offset];
    let line = before.iter().filter(|&&byte| byte == b'\n').count() + 1;
    let line_start = before.iter().rposition(|&byte| byte == b'\n').map_or(0, |at| at + 1);
    // Columns count characters, as serde_json's do; the prefix is valid UTF-8 by definition.
    let column = String::from_utf8_lossy(&before[line_start..]).chars().count() + 1;
    let what = match (error.error_len(), bytes.get(offset)) {
        (Some(_), Some(byte)) => format!("byte 0x{byte:02X} does not belong to a UTF-8 sequence"),
        _ => "the data ends inside a multi-byte UTF-8 sequence".to_owned(),
    };
    format!("is not valid UTF-8: {what} at line {line} column {column} (byte offset {offset})")
}

fn describe_json_error(error: &serde_json::Error) -> String {
    let at = format!("line {} column {}", error.line(), error.column());
    let message = error.to_string();
    let detail = message.strip_suffix(&format!(" at {at}")).unwrap_or(&message);
    // serde_json says "lone leading surrogate", "unexpected end of hex escape" (a leading
    // surrogate not followed by a trailing one) or "invalid unicode code point".
    let lone_surrogate = [
        "surrogate",
        "unexpected end of hex escape",
        "invalid unicode code point",
    ]
    .iter()
    .any(|phrase| detail.contains(phrase));
    let why = if lone_surrogate {
        "has a lone UTF-16 surrogate escape (like \"\\ud800\"), which is not a Unicode character".to_owned()
    } else if detail.contains("number out of range") {
        "has a number out of range (too large for a 64-bit float)".to_owned()
    } else if detail.contains("recursion limit exceeded") {
        "is nested too deeply (more than 128 levels of arrays or objects)".to_owned()
    } else if error.classify() == serde_json::error::Category::Eof {
        format!("ends before the JSON value is complete ({detail})")
    } else {
        format!("is not valid JSON ({detail})")
    };
    format!("{why} at {at}")
}

/// Whether `c` must not appear in free text that reaches log lines: C0 and C1 controls, DEL,
/// the line and paragraph separators, and the bidirectional overrides and isolates (which can
/// make a log line read differently from what it holds).
fn is_control_like(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
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

/// The user who asked for the render, carried into events only. The backend's user ids are free
/// text (e-mail addresses, display names), so the rule is loose: 1..=256 characters, no control
/// characters. It has no `Display` on purpose: code prints it through `Debug`, which quotes and
/// escapes it, so a user id can never forge a log line.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserId(String);

impl UserId {
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("must not be empty".into());
        }
        if text.chars().count() > MAX_USER_ID_CHARS {
            return Err(format!("must be at most {MAX_USER_ID_CHARS} characters"));
        }
        if let Some(bad) = text.chars().find(|&c| is_control_like(c)) {
            return Err(format!(
                "must not contain control characters (found U+{:04X})",
                u32::from(bad)
            ));
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

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
    /// Bounding box of the high-res image.
    pub size: RenderSize,
    /// How the high-res image and the preview are sized against their boxes.
    pub fit: Fit,
    /// Whether the result cache may serve and keep this render (`renderOptions.cache`,
    /// default true; it only opts out, it never turns on a cache that is off).
    pub cache: bool,
}

impl Default for RenderOptions {
    fn default() -> Self {
        Self {
            normal_map: false,
            roughness_map: false,
            quality: Quality::Auto,
            size: RenderSize::DEFAULT,
            fit: Fit::Inside,
            cache: true,
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
        let fit = match payload.fit.as_deref() {
            None => Fit::Inside,
            Some(text) => Fit::parse(text).ok_or_else(|| {
                PayloadError::new(
                    "renderOptions.fit",
                    format!(
                        "must be one of inside, cover, fill (got `{}`)",
                        truncate_for_message(text)
                    ),
                )
            })?,
        };
        Ok(Self {
            normal_map: payload.generate_normal_map.unwrap_or(false),
            roughness_map: payload.generate_roughness_map.unwrap_or(false),
            quality,
            size,
            fit,
            cache: payload.cache.unwrap_or(true),
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

    fn rejected(mutate: impl FnOnce(&mut serde_json::Value)) -> PayloadError {
        let mut value = payload();
        mutate(&mut value);
        match parse(&value) {
            Err(error) => error,
            Ok(request) => panic!("payload unexpectedly accepted: {request:?}"),
        }
    }

    fn rejected_field(mutate: impl FnOnce(&mut serde_json::Value)) -> String {
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
        assert_eq!(rejected_field(|v| v["userId"] = "u\t1".into()), "userId");
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
            "tenantId"
        );
        assert_eq!(rejected_field(|v| v["designId"] = 5.into()), "designId");
    }

    /// A wrong JSON type or `null` names the field by its path, what was expected and
    /// what was found (serde's own message named only "payload").
    #[test]
    fn every_wrong_type_names_its_path_the_expectation_and_what_was_found() {
        use serde_json::json;
        let cases: &[(&str, &str, serde_json::Value, &str)] = &[
            (
                "designId",
                "",
                json!(5),
                "`designId` must be a string like \"design-123\", got a number",
            ),
            (
                "designId",
                "",
                json!(null),
                "`designId` must be a string like \"design-123\", got null",
            ),
            (
                "tenantId",
                "",
                json!(["t"]),
                "`tenantId` must be a string like \"tenant-123\", got an array",
            ),
            (
                "tenantId",
                "",
                json!(null),
                "`tenantId` must be a string like \"tenant-123\", got null",
            ),
            (
                "userId",
                "",
                json!(42),
                "`userId` must be a string like \"ana@example.com\", got a number",
            ),
            (
                "prompt",
                "",
                json!({"text": "x"}),
                "`prompt` must be a string, got an object",
            ),
            ("prompt", "", json!(null), "`prompt` must be a string, got null"),
            (
                "baseTextureUrl",
                "",
                json!(true),
                "`baseTextureUrl` must be a URL string like \"https://example.com/base.png\", got a boolean",
            ),
            (
                "baseTextureUrl",
                "",
                json!(null),
                "`baseTextureUrl` must be a URL string like \"https://example.com/base.png\", got null",
            ),
            (
                "maskUrl",
                "",
                json!(1),
                "`maskUrl` must be a URL string like \"https://example.com/mask.png\", got a number",
            ),
            (
                "renderOptions",
                "",
                json!("hd"),
                "`renderOptions` must be an object like {\"size\": \"2048x2048\"}, got a string",
            ),
            (
                "renderOptions",
                "size",
                json!(2048),
                "`renderOptions.size` must be a string like \"2048x2048\", got a number",
            ),
            (
                "renderOptions",
                "quality",
                json!(1),
                "`renderOptions.quality` must be a string like \"hd\", got a number",
            ),
            (
                "renderOptions",
                "generateNormalMap",
                json!("true"),
                "`renderOptions.generateNormalMap` must be a boolean (true or false), got a string",
            ),
            (
                "renderOptions",
                "generateRoughnessMap",
                json!(1),
                "`renderOptions.generateRoughnessMap` must be a boolean (true or false), got a number",
            ),
        ];
        for (field, member, value, expected) in cases {
            let error = rejected(|v| {
                if member.is_empty() {
                    v[*field] = value.clone();
                } else {
                    v[*field][*member] = value.clone();
                }
            });
            let path = if member.is_empty() {
                (*field).to_owned()
            } else {
                format!("{field}.{member}")
            };
            assert_eq!(error.field, path);
            assert_eq!(error.to_string(), format!("invalid job payload: {expected}"));
        }
    }

    #[test]
    fn a_missing_required_field_is_named() {
        for field in ["designId", "tenantId", "prompt", "baseTextureUrl"] {
            let error = rejected(|v| drop(v.as_object_mut().unwrap().remove(field)));
            assert_eq!(error.field, field);
            assert!(error.rule.starts_with("is missing; it must be a"), "{error}");
        }
    }

    /// JavaScript producers send `null` for "none"; in an optional field it means absent.
    #[test]
    fn null_in_an_optional_field_means_absent() {
        let mut value = payload();
        value["userId"] = serde_json::Value::Null;
        value["maskUrl"] = serde_json::Value::Null;
        value["renderOptions"] = serde_json::json!({
            "size": null, "quality": null, "generateNormalMap": null, "generateRoughnessMap": null
        });
        let request = parse(&value).expect("nulls in optional fields are accepted");
        assert!(request.user_id.is_none() && request.mask.is_none());
        assert_eq!(request.options, RenderOptions::default());
        value["renderOptions"] = serde_json::Value::Null;
        assert_eq!(
            parse(&value).expect("null renderOptions").options,
            RenderOptions::default()
        );
    }

    #[test]
    fn a_payload_that_is_not_an_object_names_the_whole_payload() {
        let error = RenderRequest::from_value(&serde_json::json!(["not", "an", "object"])).unwrap_err();
        assert_eq!(error.field, WHOLE_PAYLOAD);
        assert_eq!(error.rule, "must be a JSON object (the job payload), got an array");
        let error = RenderRequest::from_value(&serde_json::Value::Null).unwrap_err();
        assert_eq!(error.rule, "must be a JSON object (the job payload), got null");
    }

    fn raw_rejection(bytes: &[u8]) -> PayloadError {
        match RenderRequest::from_json(bytes) {
            Err(error) => error,
            Ok(request) => panic!("raw payload unexpectedly accepted: {request:?}"),
        }
    }

    /// Data that is not UTF-8 is refused, never repaired with U+FFFD.
    #[test]
    fn bytes_that_are_not_utf8_are_refused_with_their_position() {
        let mut bytes = payload().to_string().into_bytes();
        let at = bytes.windows(9).position(|w| w == b"landscape").unwrap();
        bytes[at] = 0xFF;
        let error = raw_rejection(&bytes);
        assert_eq!(error.field, WHOLE_PAYLOAD);
        assert_eq!(
            error.rule,
            format!(
                "is not valid UTF-8: byte 0xFF does not belong to a UTF-8 sequence at line 1 column {} (byte offset {at})",
                at + 1
            )
        );
        let error = raw_rejection(b"{\"designId\": \"d\xC3");
        assert!(
            error.rule.contains("ends inside a multi-byte UTF-8 sequence"),
            "{error}"
        );
    }

    /// Text that is not JSON says where and why.
    #[test]
    fn text_that_is_not_json_says_where_and_why() {
        let with_bom = [b"\xEF\xBB\xBF".as_slice(), payload().to_string().as_bytes()].concat();
        assert_eq!(
            raw_rejection(&with_bom).rule,
            "starts with a byte-order mark (U+FEFF); send UTF-8 JSON without a BOM"
        );
        assert_eq!(
            raw_rejection(br#"{"designId": "d\ud800", "tenantId": "t"}"#).rule,
            "has a lone UTF-16 surrogate escape (like \"\\ud800\"), which is not a Unicode character at line 1 column 22"
        );
        assert_eq!(
            raw_rejection(b"{\n  \"designId\": 1e400\n}").rule,
            "has a number out of range (too large for a 64-bit float) at line 2 column 19"
        );
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(
            raw_rejection(deep.as_bytes())
                .rule
                .starts_with("is nested too deeply (more than 128 levels of arrays or objects) at line 1 column 12"),
        );
        assert_eq!(
            raw_rejection(br#"{"designId": "d",}"#).rule,
            "is not valid JSON (trailing comma) at line 1 column 18"
        );
        assert_eq!(
            raw_rejection(br#"{"designId": "d""#).rule,
            "ends before the JSON value is complete (EOF while parsing an object) at line 1 column 16"
        );
        assert_eq!(raw_rejection(b"  ").rule, "is empty; expected a JSON object");
    }

    /// `userId` is free text carried into events, unlike the strict ids.
    #[test]
    fn user_ids_are_loose_text_without_control_characters() {
        for good in ["ana@example.com", "Ana María López", "user-123", &"u".repeat(256)] {
            assert_eq!(UserId::parse(good).map(|u| u.as_str().to_owned()), Ok(good.to_owned()));
        }
        assert_eq!(UserId::parse(""), Err("must not be empty".to_owned()));
        assert_eq!(
            UserId::parse(&"u".repeat(257)),
            Err("must be at most 256 characters".to_owned())
        );
        for bad in [
            "ana\nINFO forged line",
            "a\u{1b}[31m",
            "a\u{7f}",
            "a\u{85}",
            "a\u{202e}b",
            "a\u{2028}",
        ] {
            assert!(
                UserId::parse(bad).is_err_and(|rule| rule.starts_with("must not contain control characters")),
                "{bad:?}"
            );
        }
        // The strict ids keep their rule.
        assert!(DesignId::parse("ana@example.com").is_err());
        assert!(TenantId::parse("a b").is_err());
        let request = parse(&{
            let mut value = payload();
            value["userId"] = "ana@example.com".into();
            value
        })
        .unwrap();
        assert_eq!(format!("{:?}", request.user_id), "Some(UserId(\"ana@example.com\"))");
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
