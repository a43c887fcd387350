//! HTTP plumbing shared by the provider adapters that call a server (`openai`,
//! `local_diffusion`): building their client, joining endpoint paths, sending a request and
//! reading its answer, and the failure classes every HTTP provider has in common.
//!
//! Owns the shared rules: every provider request has a connect timeout and a total timeout;
//! a transport failure (connect, timeout, a body cut off) is transient; 429 and 5xx are
//! transient and carry the server's `Retry-After`. It must not read an adapter's error bodies
//! or decide what another status means for a given API: each adapter maps those itself. It
//! never puts request headers into a message, because they carry credentials.

use std::time::Duration;

use reqwest::header::HeaderMap;

use super::ProviderError;
use crate::http::Traced;

/// A provider's answer: its status, headers and whole body as text. Judging the status is the
/// adapter's job.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// A client for one provider. Unlike the asset downloader's, the timeout is a total one on
/// every request (`timeout`), not just between reads: a provider call that drags on holds a
/// job and, for paid providers, possibly a bill.
pub fn client(connect_timeout: Duration, timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    crate::http::client_builder(connect_timeout, timeout)
        .timeout(timeout)
        .build()
}

/// `path` appended to `base`'s path, so a base such as `https://host/v1/` keeps its `/v1`
/// (`Url::join` would drop the last segment of a base without a trailing slash).
pub fn endpoint(base: &url::Url, path: &str) -> url::Url {
    let mut url = base.clone();
    let joined = format!("{}/{path}", url.path().trim_end_matches('/'));
    url.set_path(&joined);
    url
}

/// Sends `request` and reads the whole answer. Only transport failures are errors here.
pub async fn send(provider: &'static str, request: reqwest::RequestBuilder) -> Result<Reply, ProviderError> {
    let response = request
        .traced()
        .send()
        .await
        .map_err(|error| transport_error(provider, &error))?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .text()
        .await
        .map_err(|error| transport_error(provider, &error))?;
    Ok(Reply { status, headers, body })
}

/// A request that failed on the way (no usable answer): always transient.
fn transport_error(provider: &'static str, error: &reqwest::Error) -> ProviderError {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    ProviderError::Unavailable {
        provider,
        reason: format!("{kind}: {error}"),
        retry_after: None,
    }
}

/// Statuses that say "not now" for every HTTP API we call: rate limited, or a server fault.
pub fn is_transient_status(status: u16) -> bool {
    status == 429 || (500..=599).contains(&status)
}

/// A transient failure, with the server's `Retry-After` when it sent one.
pub fn unavailable(provider: &'static str, reason: String, headers: &HeaderMap) -> ProviderError {
    ProviderError::Unavailable {
        provider,
        reason,
        retry_after: retry_after(headers),
    }
}

/// `Retry-After` in whole seconds. HTTP dates are not used by the providers we call, and a
/// value we cannot read is treated as absent rather than guessed at.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderValue, RETRY_AFTER};

    #[test]
    fn endpoints_keep_the_base_path_with_or_without_a_trailing_slash() {
        for base in ["http://127.0.0.1:9/v1", "http://127.0.0.1:9/v1/"] {
            let base = url::Url::parse(base).unwrap();
            assert_eq!(
                endpoint(&base, "images/edits").as_str(),
                "http://127.0.0.1:9/v1/images/edits"
            );
        }
        let root = url::Url::parse("http://127.0.0.1:7860").unwrap();
        assert_eq!(
            endpoint(&root, "sdapi/v1/img2img").as_str(),
            "http://127.0.0.1:7860/sdapi/v1/img2img"
        );
    }

    #[test]
    fn retry_after_is_read_in_seconds_and_ignored_when_unreadable() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(RETRY_AFTER, HeaderValue::from_static(" 7 "));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"));
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn rate_limits_and_server_faults_are_transient_and_other_statuses_are_not() {
        for status in [429, 500, 502, 503, 599] {
            assert!(is_transient_status(status), "{status}");
        }
        for status in [200, 301, 400, 401, 403, 404, 422, 600] {
            assert!(!is_transient_status(status), "{status}");
        }
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("3"));
        let error = unavailable("local-diffusion", "HTTP 503".into(), &headers);
        assert!(error.is_retryable());
        assert_eq!(error.retry_after(), Some(Duration::from_secs(3)));
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_transient_transport_failure() {
        // Bind and drop a listener: nothing accepts on that port afterwards.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = client(Duration::from_secs(1), Duration::from_secs(1)).unwrap();
        let error = send("openai", client.get(format!("http://127.0.0.1:{port}/")))
            .await
            .unwrap_err();
        assert!(error.is_retryable());
        assert!(error.to_string().contains("connection failed"), "{error}");
    }
}
