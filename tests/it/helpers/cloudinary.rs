//! A loopback Cloudinary that behaves like the Upload API of `reference/cloudinary-upload.md`:
//! it parses the multipart body, recomputes the signature from the received fields with the
//! test secret (401 `Invalid Signature …` when it differs), refuses a timestamp more than an
//! hour old (400 `Stale request …`), keeps each uploaded file under its resource type (`image`
//! or `raw`) and public id, answers the documented success body with a `secure_url` that it
//! also serves (GET, with or without the version segment, as the delivery host does), and
//! destroys on request. It can be told to answer the next requests with an error status.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use design_render::config::{CloudinaryConfig, Secret, SignatureAlgorithm};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

pub const CLOUD: &str = "acme-test";
pub const API_KEY: &str = "614335564976464";
pub const API_SECRET: &str = "cl0ud-s3cret-for-tests";

/// What the mock received and holds.
#[derive(Default)]
struct State {
    /// `<resource type>/<public id>` → (bytes, version).
    assets: HashMap<String, (Vec<u8>, u64)>,
    next_version: u64,
    /// Statuses to answer the next upload requests with, before any check.
    planned: VecDeque<u16>,
    /// Every upload request: its signed fields (no file, no secret) and what was answered.
    uploads: Vec<(HashMap<String, String>, u16)>,
    /// Seconds added to the mock's clock (to make every timestamp look stale).
    clock_skew: i64,
}

#[derive(Clone)]
pub struct CloudinaryMock {
    pub server: Arc<MockServer>,
    state: Arc<Mutex<State>>,
}

impl CloudinaryMock {
    pub async fn start() -> Self {
        let server = Arc::new(MockServer::start().await);
        let state = Arc::new(Mutex::new(State {
            next_version: 1_700_000_000,
            ..State::default()
        }));
        let mock = Self { server, state };
        Mock::given(wiremock::matchers::any())
            .respond_with(Responder {
                state: Arc::clone(&mock.state),
                base: mock.server.uri(),
            })
            .mount(&mock.server)
            .await;
        mock
    }

    /// The upload prefix (`CLOUDINARY_UPLOAD_PREFIX`), which is also the delivery prefix
    /// (`CLOUDINARY_DELIVERY_PREFIX`).
    pub fn prefix(&self) -> String {
        self.server.uri()
    }

    /// Storage settings that sign with `secret` and upload to (and read from) this mock.
    pub fn storage(&self, secret: &str) -> CloudinaryConfig {
        let prefix = url::Url::parse(&self.prefix()).expect("mock URL");
        CloudinaryConfig {
            cloud_name: CLOUD.into(),
            api_key: API_KEY.into(),
            api_secret: Secret::new(secret),
            upload_prefix: prefix.clone(),
            delivery_prefix: prefix,
            folder: None,
            signature: SignatureAlgorithm::Sha1,
        }
    }

    /// Answers the next uploads with these statuses (a documented error body each), in order.
    pub fn fail_next(&self, statuses: &[u16]) {
        self.lock().planned.extend(statuses);
    }

    /// Moves the mock's clock two hours ahead: every request's timestamp is then stale.
    pub fn skew_clock_two_hours(&self) {
        self.lock().clock_skew = 7200;
    }

    /// The bytes of the asset of `resource_type` (`image`, `raw`) held under `public_id`.
    pub fn held(&self, resource_type: &str, public_id: &str) -> Option<Vec<u8>> {
        let id = format!("{resource_type}/{public_id}");
        self.lock().assets.get(&id).map(|(bytes, _)| bytes.clone())
    }

    /// The status of every upload answered so far, in order.
    pub fn upload_statuses(&self) -> Vec<u16> {
        self.lock().uploads.iter().map(|(_, status)| *status).collect()
    }

    /// The fields of every upload request (the file excluded).
    pub fn upload_fields(&self) -> Vec<HashMap<String, String>> {
        self.lock().uploads.iter().map(|(fields, _)| fields.clone()).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

struct Responder {
    state: Arc<Mutex<State>>,
    base: String,
}

fn error(status: u16, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(serde_json::json!({"error": {"message": message}}))
}

impl Respond for Responder {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let path = request.url.path().to_owned();
        if request.method == wiremock::http::Method::GET {
            return deliver(&state, &path);
        }
        // /v1_1/<cloud>/<resource type>/<action>
        let Some((resource_type, action)) = path
            .strip_prefix(&format!("/v1_1/{CLOUD}/"))
            .and_then(|rest| rest.split_once('/'))
            .filter(|(resource_type, action)| {
                matches!(*resource_type, "image" | "raw") && matches!(*action, "upload" | "destroy")
            })
        else {
            return error(404, "Resource not found");
        };
        let upload = action == "upload";
        let Some((mut fields, file)) = parse_multipart(request) else {
            return error(400, "Invalid request: expected multipart/form-data");
        };
        let answer = |fields: &HashMap<String, String>, status: u16, state: &mut State| {
            if upload {
                state.uploads.push((fields.clone(), status));
            }
        };
        if upload && let Some(status) = state.planned.pop_front() {
            answer(&fields, status, &mut state);
            return error(status, "General Error");
        }
        if fields.get("api_key").map(String::as_str) != Some(API_KEY) {
            answer(&fields, 401, &mut state);
            return error(401, "Invalid api_key");
        }
        let string_to_sign = string_to_sign(&fields);
        let expected = {
            use sha1::Digest;
            hex::encode(sha1::Sha1::digest(format!("{string_to_sign}{API_SECRET}").as_bytes()))
        };
        let received = fields.remove("signature").unwrap_or_default();
        if received != expected {
            answer(&fields, 401, &mut state);
            return error(
                401,
                &format!("Invalid Signature {received}. String to sign - '{string_to_sign}'."),
            );
        }
        let now = chrono::Utc::now().timestamp() + state.clock_skew;
        let timestamp: i64 = fields.get("timestamp").and_then(|t| t.parse().ok()).unwrap_or_default();
        if now - timestamp > 3600 {
            answer(&fields, 400, &mut state);
            return error(
                400,
                &format!("Stale request - reported time is {timestamp} which is more than 1 hour ago"),
            );
        }
        let public_id = fields.get("public_id").cloned().unwrap_or_default();
        let id = format!("{resource_type}/{public_id}");
        if !upload {
            let result = if state.assets.remove(&id).is_some() {
                "ok"
            } else {
                "not found"
            };
            return ResponseTemplate::new(200).set_body_json(serde_json::json!({ "result": result }));
        }
        let Some(file) = file else {
            answer(&fields, 400, &mut state);
            return error(400, "Missing required parameter - file");
        };
        let asset = Uploaded {
            resource_type,
            public_id: &public_id,
        };
        if fields.get("overwrite").map(String::as_str) != Some("1") && state.assets.contains_key(&id) {
            answer(&fields, 200, &mut state);
            let (bytes, version) = &state.assets[&id];
            return success(&self.base, &asset, *version, bytes.len());
        }
        state.next_version += 1;
        let version = state.next_version;
        let size = file.len();
        state.assets.insert(id, (file, version));
        answer(&fields, 200, &mut state);
        success(&self.base, &asset, version, size)
    }
}

/// A GET of a delivery URL, `/<cloud>/<resource type>/upload/[v<version>/]<public id>`, with
/// `.png` after an image's public id.
fn deliver(state: &State, path: &str) -> ResponseTemplate {
    let Some((resource_type, rest)) = path
        .strip_prefix(&format!("/{CLOUD}/"))
        .and_then(|rest| rest.split_once("/upload/"))
    else {
        return ResponseTemplate::new(404);
    };
    let rest = match rest.split_once('/') {
        Some((version, id))
            if version
                .strip_prefix('v')
                .is_some_and(|digits| digits.bytes().all(|b| b.is_ascii_digit())) =>
        {
            id
        }
        _ => rest,
    };
    let public_id = match resource_type {
        "image" => rest.strip_suffix(".png"),
        "raw" => Some(rest),
        _ => None,
    };
    let content_type = if resource_type == "image" {
        "image/png"
    } else {
        "application/octet-stream"
    };
    match public_id.and_then(|id| state.assets.get(&format!("{resource_type}/{id}"))) {
        Some((bytes, _)) => ResponseTemplate::new(200).set_body_raw(bytes.clone(), content_type),
        None => ResponseTemplate::new(404),
    }
}

/// The asset an upload stored.
struct Uploaded<'a> {
    resource_type: &'a str,
    public_id: &'a str,
}

fn success(base: &str, asset: &Uploaded<'_>, version: u64, bytes: usize) -> ResponseTemplate {
    let Uploaded {
        resource_type,
        public_id,
    } = asset;
    // Cloudinary adds an image's format to its URL; a raw file's public id has its extension.
    let extension = if *resource_type == "image" { ".png" } else { "" };
    let url = format!("{base}/{CLOUD}/{resource_type}/upload/v{version}/{public_id}{extension}");
    let mut body = serde_json::json!({
        "asset_id": format!("{:032x}", version),
        "public_id": public_id,
        "version": version,
        "version_id": format!("{:032x}", version ^ 0xabcdef),
        "signature": "0".repeat(40),
        "width": 64, "height": 64, "format": "png",
        "resource_type": resource_type,
        "created_at": "2026-12-07T12:00:00Z",
        "tags": [],
        "pages": 1,
        "bytes": bytes,
        "type": "upload",
        "etag": "3f1c0a1b2c3d4e5f60718293a4b5c6d7",
        "placeholder": false,
        "url": url.replacen("https://", "http://", 1),
        "secure_url": url,
        "original_filename": "file",
        "api_key": API_KEY,
    });
    if *resource_type != "image"
        && let Some(fields) = body.as_object_mut()
    {
        // A raw file has no dimensions, format or pages.
        for image_only in ["width", "height", "format", "pages"] {
            fields.remove(image_only);
        }
    }
    ResponseTemplate::new(200).set_body_json(body)
}

/// The signed string: every field except `file`, `api_key`, `signature` (and empty ones),
/// sorted, `&` inside a pair as `%26`, joined with `&`.
fn string_to_sign(fields: &HashMap<String, String>) -> String {
    let mut pairs: Vec<String> = fields
        .iter()
        .filter(|(name, value)| !value.is_empty() && !matches!(name.as_str(), "file" | "api_key" | "signature"))
        .map(|(name, value)| format!("{name}={value}").replace('&', "%26"))
        .collect();
    pairs.sort();
    pairs.join("&")
}

/// The text fields of a multipart/form-data body, and its `file` part.
type Multipart = (HashMap<String, String>, Option<Vec<u8>>);

fn parse_multipart(request: &Request) -> Option<Multipart> {
    let content_type = request.headers.get("content-type")?.to_str().ok()?;
    let boundary = content_type.split("boundary=").nth(1)?.trim_matches('"');
    let delimiter = format!("--{boundary}");
    let body = &request.body;
    let mut fields = HashMap::new();
    let mut file = None;
    let mut rest = body.as_slice();
    // Skip the preamble up to the first delimiter.
    let start = find(rest, delimiter.as_bytes())?;
    rest = &rest[start + delimiter.len()..];
    loop {
        if rest.starts_with(b"--") {
            break;
        }
        rest = rest.strip_prefix(b"\r\n")?;
        let end = find(rest, delimiter.as_bytes())?;
        let part = &rest[..end];
        let part = part.strip_suffix(b"\r\n").unwrap_or(part);
        let split = find(part, b"\r\n\r\n")?;
        let headers = std::str::from_utf8(&part[..split]).ok()?;
        let data = &part[split + 4..];
        let name = headers
            .split(';')
            .find_map(|item| item.trim().strip_prefix("name="))?
            .trim_matches('"')
            .to_owned();
        if name == "file" {
            file = Some(data.to_vec());
        } else {
            fields.insert(name, String::from_utf8(data.to_vec()).ok()?);
        }
        rest = &rest[end + delimiter.len()..];
    }
    Some((fields, file))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}
