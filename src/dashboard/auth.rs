//! Who may see the dashboard: the `DASHBOARD_TOKEN` (as a bearer token, or typed into the login
//! form once, which then sets a signed session cookie) and a CSRF token per session for every
//! action.
//!
//! Nothing here is stored server-side: a session cookie is `<nonce>.<issued>.<mac>`, signed with a
//! key derived from the token, so every worker of a fleet accepts the sessions of the others and
//! changing the token ends them all. The CSRF token of a session is a second MAC over its nonce.
//! Every comparison of secret-derived bytes is constant-time.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::Secret;

/// The session cookie's name.
pub const COOKIE: &str = "design_render_dashboard";

/// How long a login lasts.
pub const SESSION_SECONDS: i64 = 12 * 3600;

/// The CSRF subject of callers that sent the token itself (scripts): they have no session.
const BEARER: &str = "bearer";

/// The keys derived from the dashboard token.
pub struct Access {
    token_digest: [u8; 32],
    key: [u8; 32],
}

/// Who a request comes from, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A browser with a session cookie (the nonce of its session).
    Session(String),
    /// A client that sent `Authorization: Bearer <token>`.
    Bearer,
}

impl Caller {
    fn subject(&self) -> &str {
        match self {
            Self::Session(nonce) => nonce,
            Self::Bearer => BEARER,
        }
    }
}

impl Access {
    pub fn new(token: &Secret) -> Self {
        let token = token.expose().as_bytes();
        let mut key = Sha256::new();
        key.update(b"design-render dashboard session key\0");
        key.update(token);
        Self {
            token_digest: Sha256::digest(token).into(),
            key: key.finalize().into(),
        }
    }

    /// Whether `offered` is the token (digests compared in constant time, so neither the
    /// token's length nor a matching prefix shows in the timing).
    pub fn token_matches(&self, offered: &str) -> bool {
        let offered: [u8; 32] = Sha256::digest(offered.trim().as_bytes()).into();
        offered.ct_eq(&self.token_digest).into()
    }

    fn mac(&self, parts: &[&str]) -> String {
        let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key) else {
            unreachable!("HMAC takes keys of any length")
        };
        for part in parts {
            mac.update(part.as_bytes());
            mac.update(b"\0");
        }
        hex::encode(mac.finalize().into_bytes())
    }

    /// A new session cookie value issued at `now` (seconds since the epoch).
    pub fn new_session(&self, now: i64) -> Result<String, getrandom::Error> {
        let mut nonce = [0u8; 16];
        getrandom::fill(&mut nonce)?;
        let nonce = hex::encode(nonce);
        let issued = now.to_string();
        let mac = self.mac(&["session", &nonce, &issued]);
        Ok(format!("{nonce}.{issued}.{mac}"))
    }

    /// The caller of a session cookie value, when its signature holds and it has not expired.
    pub fn session(&self, value: &str, now: i64) -> Option<Caller> {
        let mut parts = value.split('.');
        let (Some(nonce), Some(issued), Some(mac), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let expected = self.mac(&["session", nonce, issued]);
        if !bool::from(expected.as_bytes().ct_eq(mac.as_bytes())) {
            return None;
        }
        let issued: i64 = issued.parse().ok()?;
        // A small allowance for clocks of the workers that issued it.
        (issued <= now + 60 && now - issued < SESSION_SECONDS).then(|| Caller::Session(nonce.to_owned()))
    }

    /// The CSRF token the caller's forms carry.
    pub fn csrf(&self, caller: &Caller) -> String {
        self.mac(&["csrf", caller.subject()])
    }

    /// Whether `offered` is the caller's CSRF token.
    pub fn csrf_matches(&self, caller: &Caller, offered: &str) -> bool {
        self.csrf(caller).as_bytes().ct_eq(offered.as_bytes()).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access() -> Access {
        Access::new(&Secret::new("0123456789abcdef0123"))
    }

    #[test]
    fn only_the_token_matches() {
        let access = access();
        assert!(access.token_matches("0123456789abcdef0123"));
        assert!(access.token_matches(" 0123456789abcdef0123\n"));
        assert!(!access.token_matches("0123456789abcdef012"));
        assert!(!access.token_matches(""));
    }

    #[test]
    fn a_session_holds_until_it_expires_and_a_changed_byte_breaks_it() {
        let access = access();
        let now = 1_765_000_000;
        let session = access.new_session(now).unwrap();
        let Some(Caller::Session(nonce)) = access.session(&session, now + 10) else {
            panic!("a fresh session is valid");
        };
        assert_eq!(nonce.len(), 32);
        assert_eq!(access.session(&session, now + SESSION_SECONDS), None, "expired");
        let mut forged = session.clone().into_bytes();
        let last = forged.len() - 1;
        forged[last] = if forged[last] == b'0' { b'1' } else { b'0' };
        assert_eq!(access.session(&String::from_utf8(forged).unwrap(), now), None);
        // Another token's sessions are not accepted.
        let other = Access::new(&Secret::new("another-token-of-16-chars"));
        assert_eq!(other.session(&session, now), None);
        assert_eq!(access.session("no-dots", now), None);
    }

    #[test]
    fn csrf_tokens_belong_to_their_session() {
        let access = access();
        let first = access.session(&access.new_session(0).unwrap(), 0).unwrap();
        let second = access.session(&access.new_session(0).unwrap(), 0).unwrap();
        let token = access.csrf(&first);
        assert!(access.csrf_matches(&first, &token));
        assert!(!access.csrf_matches(&second, &token));
        assert!(!access.csrf_matches(&Caller::Bearer, &token));
        assert!(!access.csrf_matches(&first, ""));
    }
}
