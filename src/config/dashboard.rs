//! The operations dashboard served by the admin server (`DASHBOARD_*`).

use super::{ConfigError, Secret, Vars};

/// The shortest token accepted: a guessable token on an operations page is worse than none.
const MIN_TOKEN_CHARS: usize = 16;

/// `/dashboard` on the admin server: set exactly when `DASHBOARD_TOKEN` is set.
#[derive(Debug, Clone, PartialEq)]
pub struct DashboardConfig {
    /// Required to see the page: as `Authorization: Bearer <token>` or typed into its login
    /// form (`DASHBOARD_TOKEN`, at least 16 characters).
    pub token: Secret,
    /// Hide and refuse every action (retries) (`DASHBOARD_READ_ONLY`, default false).
    pub read_only: bool,
    /// How many designs the renders grid shows per page (`DASHBOARD_PAGE_SIZE`, default 24).
    pub page_size: usize,
}

impl DashboardConfig {
    pub(super) fn from_vars(vars: &Vars<'_>) -> Result<Option<Self>, ConfigError> {
        let Some(token) = vars.get("DASHBOARD_TOKEN") else {
            return Ok(None);
        };
        let token = token.trim().to_owned();
        if token.chars().count() < MIN_TOKEN_CHARS {
            return Err(ConfigError::new(
                "DASHBOARD_TOKEN",
                format!("must be at least {MIN_TOKEN_CHARS} characters (for example `openssl rand -hex 24`)"),
            ));
        }
        Ok(Some(Self {
            token: Secret::new(token),
            read_only: vars.bool_or("DASHBOARD_READ_ONLY", false)?,
            page_size: vars.parse_or("DASHBOARD_PAGE_SIZE", 24, |size| (1..=200).contains(size))?,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dashboard(pairs: &[(&str, &str)]) -> Result<Option<DashboardConfig>, ConfigError> {
        crate::config::test_support::section(pairs, DashboardConfig::from_vars)
    }

    #[test]
    fn the_dashboard_is_off_without_a_token_and_refuses_a_short_one() {
        assert_eq!(dashboard(&[("DASHBOARD_READ_ONLY", "true")]).unwrap(), None);
        let error = dashboard(&[("DASHBOARD_TOKEN", "short")]).unwrap_err().to_string();
        assert!(error.contains("DASHBOARD_TOKEN") && error.contains("16"), "{error}");
        assert!(!error.contains("short"), "the token must not be echoed: {error}");
    }

    #[test]
    fn a_token_enables_it_with_defaults() {
        let config = dashboard(&[("DASHBOARD_TOKEN", " 0123456789abcdef0123 ")])
            .unwrap()
            .unwrap();
        assert_eq!(config.token.expose(), "0123456789abcdef0123");
        assert!(!config.read_only);
        assert_eq!(config.page_size, 24);
        let read_only = dashboard(&[
            ("DASHBOARD_TOKEN", "0123456789abcdef0123"),
            ("DASHBOARD_READ_ONLY", "true"),
            ("DASHBOARD_PAGE_SIZE", "6"),
        ])
        .unwrap()
        .unwrap();
        assert!(read_only.read_only);
        assert_eq!(read_only.page_size, 6);
        assert!(
            dashboard(&[
                ("DASHBOARD_TOKEN", "0123456789abcdef0123"),
                ("DASHBOARD_PAGE_SIZE", "0")
            ])
            .is_err()
        );
    }
}
