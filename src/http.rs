//! The one place that builds HTTP clients, so every outbound call shares the TLS set-up, the
//! user agent and the rule that no client is built without timeouts.

use std::time::Duration;

/// Installs the ring TLS provider for the process if none is installed yet. reqwest is built
/// without a default provider (to keep aws-lc out of the build) and panics without one.
pub fn ensure_tls_provider() {
    // Err means another provider was installed first, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A client builder with our user agent, no proxy from the environment, and the given timeouts.
pub fn client_builder(connect_timeout: Duration, timeout: Duration) -> reqwest::ClientBuilder {
    ensure_tls_provider();
    reqwest::Client::builder()
        .user_agent(concat!("design-render/", env!("CARGO_PKG_VERSION")))
        .no_proxy()
        .connect_timeout(connect_timeout)
        .read_timeout(timeout)
}

/// Outgoing requests carry the W3C trace context of the current span (when spans are
/// exported), so the provider's, the storage's or the receiver's own traces can join ours.
pub trait Traced {
    fn traced(self) -> Self;
}

impl Traced for reqwest::RequestBuilder {
    fn traced(self) -> Self {
        crate::telemetry::trace_headers()
            .into_iter()
            .fold(self, |request, (name, value)| request.header(name, value))
    }
}
