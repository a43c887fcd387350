//! Trace export (OpenTelemetry over OTLP/HTTP with protobuf bodies), configured by the standard
//! `OTEL_*` variables so the worker fits any collector set-up unchanged.
//!
//! Only whether traces are on and the service name are decided here. The exporter and the SDK
//! read their own variables when the exporter is built (endpoint and path, headers, timeout,
//! sampler and its argument, batch settings, resource attributes), which the SDK documents.

use super::{ConfigError, Vars};

/// The service name reported when neither `OTEL_SERVICE_NAME` nor a `service.name` in
/// `OTEL_RESOURCE_ATTRIBUTES` names one.
const DEFAULT_SERVICE_NAME: &str = "design-render";

/// Trace export is on: spans go to `endpoint`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TracesConfig {
    /// The URL spans are posted to, for the start-up summary: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`
    /// as given, else `OTEL_EXPORTER_OTLP_ENDPOINT` + `/v1/traces` (the exporter resolves the
    /// same way).
    pub endpoint: String,
    pub service_name: String,
}

impl TracesConfig {
    /// `None` when no OTLP endpoint is set, or when `OTEL_SDK_DISABLED=true` or
    /// `OTEL_TRACES_EXPORTER=none` turn export off.
    pub(super) fn from_vars(vars: &Vars<'_>) -> Result<Option<Self>, ConfigError> {
        let endpoint = match (
            vars.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            vars.get("OTEL_EXPORTER_OTLP_ENDPOINT"),
        ) {
            (Some(traces), _) => checked_url("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", traces.trim())?,
            (None, Some(base)) => {
                let base = checked_url("OTEL_EXPORTER_OTLP_ENDPOINT", base.trim())?;
                format!("{}/v1/traces", base.trim_end_matches('/'))
            }
            (None, None) => return Ok(None),
        };
        if vars.bool_or("OTEL_SDK_DISABLED", false)? {
            return Ok(None);
        }
        match vars.get("OTEL_TRACES_EXPORTER").as_deref().map(str::trim) {
            None | Some("otlp") => {}
            Some("none") => return Ok(None),
            Some(_) => {
                return Err(ConfigError::new(
                    "OTEL_TRACES_EXPORTER",
                    "must be `otlp` or `none` (spans are exported over OTLP/HTTP only)",
                ));
            }
        }
        for var in ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"] {
            match vars.get(var).as_deref().map(str::trim) {
                None | Some("http/protobuf") => {}
                Some(_) => {
                    return Err(ConfigError::new(
                        var,
                        "must be `http/protobuf`: this build exports OTLP over HTTP with protobuf \
                         bodies (point it at the collector's HTTP port, usually 4318)",
                    ));
                }
            }
        }
        Ok(Some(Self {
            endpoint,
            service_name: service_name(vars),
        }))
    }
}

/// `OTEL_SERVICE_NAME`, else `service.name` from `OTEL_RESOURCE_ATTRIBUTES`, else ours.
fn service_name(vars: &Vars<'_>) -> String {
    if let Some(name) = vars.get("OTEL_SERVICE_NAME") {
        return name.trim().to_owned();
    }
    vars.get("OTEL_RESOURCE_ATTRIBUTES")
        .and_then(|attributes| {
            attributes.split(',').find_map(|pair| {
                let (key, value) = pair.split_once('=')?;
                (key.trim() == "service.name" && !value.trim().is_empty()).then(|| value.trim().to_owned())
            })
        })
        .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_owned())
}

fn checked_url(var: &'static str, text: &str) -> Result<String, ConfigError> {
    let url = url::Url::parse(text).map_err(|error| ConfigError::new(var, format!("is not a URL ({error})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ConfigError::new(var, "must be an http(s) URL"));
    }
    Ok(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn traces(pairs: &[(&str, &str)]) -> Result<Option<TracesConfig>, ConfigError> {
        crate::config::test_support::section(pairs, TracesConfig::from_vars)
    }

    #[test]
    fn traces_are_off_without_an_endpoint_and_when_disabled() {
        assert_eq!(traces(&[]).unwrap(), None);
        assert_eq!(traces(&[("OTEL_SERVICE_NAME", "renders")]).unwrap(), None);
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
        assert_eq!(traces(&[endpoint, ("OTEL_SDK_DISABLED", "true")]).unwrap(), None);
        assert_eq!(traces(&[endpoint, ("OTEL_TRACES_EXPORTER", "none")]).unwrap(), None);
    }

    #[test]
    fn the_endpoint_resolves_like_the_exporter_and_the_service_name_has_a_default() {
        let base = traces(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")])
            .unwrap()
            .unwrap();
        assert_eq!(base.endpoint, "http://collector:4318/v1/traces");
        assert_eq!(base.service_name, "design-render");
        let specific = traces(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://traces.example/ingest"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment=prod, service.name=renders-eu",
            ),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(specific.endpoint, "https://traces.example/ingest");
        assert_eq!(specific.service_name, "renders-eu");
        let named = traces(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_SERVICE_NAME", "renders"),
            ("OTEL_RESOURCE_ATTRIBUTES", "service.name=ignored"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(named.service_name, "renders");
    }

    #[test]
    fn grpc_bad_urls_and_unknown_exporters_are_refused_naming_the_variable() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317");
        let grpc = traces(&[endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]).unwrap_err();
        assert_eq!(grpc.var, "OTEL_EXPORTER_OTLP_PROTOCOL");
        assert!(grpc.problem.contains("http/protobuf"), "{}", grpc.problem);
        let url = traces(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")]).unwrap_err();
        assert_eq!(url.var, "OTEL_EXPORTER_OTLP_ENDPOINT");
        let exporter = traces(&[endpoint, ("OTEL_TRACES_EXPORTER", "zipkin")]).unwrap_err();
        assert_eq!(exporter.var, "OTEL_TRACES_EXPORTER");
    }
}
