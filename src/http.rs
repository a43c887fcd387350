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
